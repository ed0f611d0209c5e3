"""Compiled extension modules built by setup.py from ``csrc/*.pyx``."""
