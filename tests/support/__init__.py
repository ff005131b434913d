"""Helpers the test fixtures are built from: ports, waiting, child processes, a fake job queue."""
