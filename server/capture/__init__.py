"""The capture wing: each browser's own recording of its microphone, uploaded during the
take, stored beside the server's stems, and merged into them at finalization."""
