"""CLI subcommands: each module parses arguments into a stage config and calls one function."""
