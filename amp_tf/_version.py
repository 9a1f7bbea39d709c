"""The package version, in a module of its own so that code inside the package reads it
without importing the package `amp_tf` (the top layer: tests/test_import_graph.py)."""

__version__ = "0.1.0"
