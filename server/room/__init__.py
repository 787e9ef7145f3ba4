"""Live rooms: seats, sessions, questions, the Socket.IO boundary and signaling."""
