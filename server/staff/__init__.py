"""Staff: accounts, sign-in, credentials, the audit log."""
