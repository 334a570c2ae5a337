"""Public test helpers: table assertions and fixtures that start real servers."""
