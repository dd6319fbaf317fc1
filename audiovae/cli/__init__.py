"""The audiovae command line: thin commands that parse options, call one library function and print what was written."""

from audiovae.cli.main import main

__all__ = ["main"]
