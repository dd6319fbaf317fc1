"""Allows `python -m audiovae`."""

from audiovae.cli import main

main()
