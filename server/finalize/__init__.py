"""Finalization after stop: jobs and the stages that make the archival files."""
