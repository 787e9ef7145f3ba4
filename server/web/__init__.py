"""The HTTP edge: middleware, error translation, routes, pages, downloads."""
