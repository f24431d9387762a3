"""`python -m m2lcodec` runs the command-line interface (same as the `m2lcodec` script)."""

from m2lcodec.cli import app

app()
