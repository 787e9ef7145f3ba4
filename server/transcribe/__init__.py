"""Transcripts: each finalized voice transcribed on the server's CPU (Whisper base through
faster-whisper, from registry wheels), merged into speaker turns, written beside the
recording and kept searchable. See :mod:`storyroom.transcribe.jobs`."""
