"""The aiortc plane: forwarding, aiortc/aioice internals, SDP, TURN, media metrics."""
