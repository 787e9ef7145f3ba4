"""Recording as it happens: the recorder, timing logs, Ogg pages on disk."""
