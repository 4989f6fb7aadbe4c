"""The `run` command line."""
