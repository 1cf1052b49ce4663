"""End-to-end tests: isorunner against a fake forge HTTP server on 127.0.0.1."""
