"""Applications, matching, scheduling, invitations and the outbox."""
