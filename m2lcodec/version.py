"""The package version, in one place below every other module (pyproject.toml reads it from here too)."""

__version__ = "0.1.0"
