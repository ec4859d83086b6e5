"""The ``trainwright`` command-line application (being split into modules)."""
from .data import main

__all__ = ["main"]
