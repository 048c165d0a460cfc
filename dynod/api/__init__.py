"""dynod's HTTP API: the h11 server, and the Platform API v3 routes over the platform."""
