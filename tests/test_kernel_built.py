"""The compiled top-k kernel is built, and it is what recjax's retrieval runs.

Without ``recjax._ext.topk``, :func:`recjax.retrieval.topk` falls back to the NumPy
reference (a ``RuntimeWarning``, the same answers, much slower), so a broken build
would leave every other retrieval test green. These tests fail instead: the kernel
is part of the package (``pip install`` builds it from ``csrc/``), so they never skip.
"""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest

from recjax.retrieval import kernel_available, recommend, similar_items, topk
from recjax.scoring import EmbeddingScorer


def _kernel():
    try:
        return importlib.import_module("recjax._ext.topk")
    except ImportError as e:
        pytest.fail(f"the compiled kernel recjax._ext.topk is not built ({e}); build it with "
                    f"`pip install -e .` or `python setup.py build_ext --inplace`")


def test_the_extension_is_built():
    kernel = _kernel()
    assert kernel_available()
    assert callable(kernel.search) and kernel.cpu_isa() in ("portable", "avx2", "avx512")


def test_every_entry_point_runs_the_kernel(monkeypatch):
    """topk, recommend, similar_items and the ranking protocol's EmbeddingScorer reach
    ``recjax._ext.topk.search`` (not the NumPy fallback, which would warn)."""
    kernel = _kernel()
    calls = []
    search = kernel.search

    def spy(*args, **kwargs):
        calls.append(args[3])  # the metric
        return search(*args, **kwargs)

    monkeypatch.setattr(kernel, "search", spy)
    rng = np.random.default_rng(0)
    users = rng.standard_normal((6, 4)).astype(np.float32)
    items = rng.standard_normal((30, 4)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fallback's "not built" RuntimeWarning fails here
        res = topk(users, items, 5)
        recommend(users, items, [0, 2], 5, metric="cosine")
        similar_items(items, [1, 3], 5, metric="l2")
        EmbeddingScorer(users, items).topk(np.arange(6), 5, None)
    assert calls == ["dot", "cosine", "l2", "dot"]
    want = np.argsort(-(users.astype(np.float64) @ items.T.astype(np.float64)), axis=1,
                      kind="stable")[:, :5]
    np.testing.assert_array_equal(res.ids, want)
