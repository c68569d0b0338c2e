"""The package version, in a module of its own so that any part can read it without
importing the whole package (skiplab.provenance stores it with every run)."""

__version__ = "0.1.0"  # keep equal to pyproject.toml's version
