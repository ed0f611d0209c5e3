"""recjax's version: a leaf every layer may import (the run folder records it;
``pyproject.toml`` reads it from here, so it is written once)."""

__version__ = "0.1.0"
