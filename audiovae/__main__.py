"""Allows `python -m audiovae`."""

from audiovae.cli.main import main

main()
