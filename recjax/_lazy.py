"""Lazy package namespaces (PEP 562): a public name is imported from its module on
first use, so importing the package imports none of them.

Example
-------
>>> from recjax._lazy import lazy_getattr
>>> namespace = {}
>>> getter = lazy_getattr("pkg", {"sqrt": "math"}, namespace)
>>> getter("sqrt")(9.0), "sqrt" in namespace
(3.0, True)
>>> getter("nope")
Traceback (most recent call last):
...
AttributeError: module 'pkg' has no attribute 'nope'
"""

from __future__ import annotations

import importlib

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, module_of: dict[str, str], namespace: dict[str, object]):
    """A module ``__getattr__`` for ``package``: ``name`` is imported from
    ``module_of[name]`` and kept in ``namespace`` (the package's ``globals()``), so it is
    imported once; any other name is an ``AttributeError`` naming it. (No ``typing``
    import here: ``import recjax`` stays at a few milliseconds.)"""

    def __getattr__(name: str) -> object:
        module = module_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
