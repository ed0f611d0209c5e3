"""SageMaker Object2Vec's JSON Lines format: ``{"in0": [ids], "in1": [ids], "label": x}``.

Token lists may have any length >= 1; in memory they are padded to the longest
with :data:`PAD` (-1), which every model masks out.

Example
-------
>>> import numpy as np, tempfile, os
>>> from recjax.data.jsonlines import PairData, read_jsonlines, write_jsonlines
>>> pairs = PairData.from_lists([[1], [2, 3]], [[7], [8]], [4.0, 1.0])
>>> path = os.path.join(tempfile.mkdtemp(), "train.jsonl")
>>> write_jsonlines(path, pairs)
>>> read_jsonlines(path).in0.tolist()
[[1, -1], [2, 3]]
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from recjax.data.dataset import Ratings
from recjax.data.movielens import MalformedFileError

__all__ = ["PAD", "PairData", "read_jsonlines", "write_jsonlines", "ratings_to_pairs"]

PAD = -1


def _pad(rows: Sequence[Sequence[int]]) -> np.ndarray:
    width = max((len(r) for r in rows), default=1)
    out = np.full((len(rows), width), PAD, np.int32)
    for n, row in enumerate(rows):
        out[n, : len(row)] = row
    return out


class PairData(NamedTuple):
    """Pairs of token sequences with labels.

    Attributes
    ----------
    in0 : int32 [n, L0]
        Left tokens, padded with ``PAD``.
    in1 : int32 [n, L1]
        Right tokens, padded with ``PAD``.
    label : float32 [n] or None
        Rating or class label; ``None`` for inference requests.
    """

    in0: np.ndarray
    in1: np.ndarray
    label: np.ndarray | None

    @classmethod
    def from_lists(cls, in0, in1, label=None) -> "PairData":
        return cls(_pad(in0), _pad(in1), None if label is None else np.asarray(label, np.float32))

    def __len__(self) -> int:
        return len(self.in0)


def _tokens(value, path: Path, line: int, key: str) -> list[int]:
    if not isinstance(value, list) or not value:
        raise MalformedFileError(f"{path}:{line}: {key!r} must be a non-empty list of integer ids")
    if not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value):
        raise MalformedFileError(f"{path}:{line}: {key!r} must hold non-negative integer ids")
    return value


def read_jsonlines(path: str | os.PathLike, *, require_label: bool = True) -> PairData:
    """Read an Object2Vec JSON Lines file (blank lines are skipped).

    Raises
    ------
    MalformedFileError
        Invalid JSON, a missing key, an empty or non-integer token list, or a
        non-numeric label, naming the file and line.
    """
    path = Path(path)
    in0, in1, labels = [], [], []
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise MalformedFileError(f"{path}:{line_no}: invalid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise MalformedFileError(f"{path}:{line_no}: expected a JSON object")
            in0.append(_tokens(row.get("in0"), path, line_no, "in0"))
            in1.append(_tokens(row.get("in1"), path, line_no, "in1"))
            if require_label:
                label = row.get("label")
                if not isinstance(label, (int, float)) or isinstance(label, bool) or label != label:
                    raise MalformedFileError(f"{path}:{line_no}: 'label' must be a number")
                labels.append(label)
    return PairData.from_lists(in0, in1, labels if require_label else None)


def write_jsonlines(path: str | os.PathLike, pairs: PairData) -> None:
    """Write ``pairs`` as Object2Vec JSON Lines (padding dropped; integral labels as ints)."""
    with Path(path).open("w", encoding="utf-8") as fh:
        for n in range(len(pairs)):
            row: dict = {
                "in0": [int(t) for t in pairs.in0[n] if t != PAD],
                "in1": [int(t) for t in pairs.in1[n] if t != PAD],
            }
            if pairs.label is not None:
                value = float(pairs.label[n])
                row["label"] = int(value) if value.is_integer() else value
            fh.write(json.dumps(row) + "\n")


def ratings_to_pairs(data: Ratings, *, binary_threshold: float | None = None) -> PairData:
    """MovieLens ratings as Object2Vec pairs: in0 = [user index], in1 = [item index].

    ``binary_threshold`` turns labels into the "recommend" classes ``rating > threshold``.
    """
    label = data.rating if binary_threshold is None else data.binary_labels(binary_threshold)
    return PairData(
        data.user[:, None].astype(np.int32), data.item[:, None].astype(np.int32),
        label.astype(np.float32),
    )
