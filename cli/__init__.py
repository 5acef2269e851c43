"""Subcommands of the `moleclip` command line, one module each (see `moleclip.training.cli`)."""
