"""What the tests share: servers, seats, browsers, recordings, engines on loopback."""
