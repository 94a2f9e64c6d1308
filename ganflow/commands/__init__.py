"""One module per CLI verb, each with `main(args) -> exit code`; `ganflow.cli` only parses."""
