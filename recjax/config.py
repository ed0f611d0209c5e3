"""Run configuration: frozen dataclasses with one recommended default each.

A run is a :class:`TrainConfig` (data, optimisation, early stopping, output) plus
the model's own config (e.g. :class:`recjax.models.mf.MFConfig`). Variants
override only what differs (``dataclasses.replace``); the CLI and TOML files build
them; the resolved pair is written to the run folder as ``config.json``.

Example
-------
>>> from recjax.config import TrainConfig
>>> cfg = TrainConfig(epochs=5)
>>> cfg.optimizer, cfg.split
('adam', 'ua')
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["TrainConfig", "OPTIMIZERS", "SCHEDULES", "from_dict"]

OPTIMIZERS = ("sgd", "adam", "adagrad", "adamw")
SCHEDULES = ("constant", "cosine", "exponential", "warmup_cosine")


@dataclass(frozen=True)
class TrainConfig:
    """Everything about a run except the model's architecture."""

    model: str = "mf"  # model family: a key of recjax.models.MODELS
    dataset: str = "ml-100k"  # a MovieLens release, or "synthetic"
    data_dir: str | None = None  # folder holding the dataset (default: RECJAX_DATA, then cache)
    data: str | None = None  # your own ratings file (CSV with a header, or Parquet) instead of --dataset
    columns: str = "user,item,rating"  # --data's user, item, rating[, timestamp] column names
    rating_scale: str = ""  # --data's LOW,HIGH rating scale, e.g. 1,10; "" = its smallest and largest rating
    split: str = "ua"  # ml-100k: ua, ub, u1..u5; any data: random, per_user (test_fraction, seed), temporal
    test_fraction: float = 0.1  # test share for split="random"
    val_fraction: float = 0.05  # validation share carved at random from the training part
    task: str = "regression"  # "regression" (ratings) or "binary" (rating > binary_threshold)
    binary_threshold: float = 3.0  # ratings above this are the positive class
    epochs: int = 40  # upper bound; early stopping usually ends sooner
    batch_size: int = 1024  # examples per step; 0 = full batch (one step per epoch)
    optimizer: str = "adam"  # one of OPTIMIZERS
    learning_rate: float = 3e-3  # peak learning rate
    schedule: str = "constant"  # one of SCHEDULES (decay over all planned steps)
    warmup_epochs: float = 0.0  # linear warm-up length for warmup_cosine
    weight_decay: float = 0.0  # decoupled weight decay (adamw only)
    grad_clip: float = 0.0  # clip the global gradient norm to this; 0 = off
    patience: int = 3  # epochs without improvement before stopping (Object2Vec's default)
    tolerance: float = 0.001  # smallest validation improvement that counts
    refit: bool = False  # after early stopping, retrain on train + validation for the best epoch count
    seed: int = 0  # all randomness (init, shuffling, splits, negatives) derives from it
    mesh: str = ""  # device mesh DATAxMODEL, e.g. 4x2: batches split over DATA, tables by rows over MODEL; "" = one device
    out: str | None = None  # run folder; default runs/<model>-<dataset>-<split>-<time>
    quiet: bool = False  # no progress bar or table

    def __post_init__(self) -> None:
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("task", self.task, ("regression", "binary"))
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 0,
            "learning_rate": self.learning_rate > 0,
            "val_fraction": 0 < self.val_fraction < 1,
            "test_fraction": 0 < self.test_fraction < 1,
            "patience": self.patience >= 1,
            "tolerance": self.tolerance >= 0,
            "weight_decay": self.weight_decay >= 0,
            "grad_clip": self.grad_clip >= 0,
            "warmup_epochs": 0 <= self.warmup_epochs <= self.epochs,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"invalid {name}={getattr(self, name)!r} (see --help)")
        if self.mesh:
            from recjax.train.sharding import parse_mesh

            parse_mesh(self.mesh)
        if self.weight_decay and self.optimizer != "adamw":
            raise ValueError("weight_decay needs optimizer='adamw' (use the model's L2 terms otherwise)")


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")


def from_dict(cls: type, values: dict[str, Any]) -> Any:
    """Build dataclass ``cls`` from a dict; unknown keys and wrongly typed values are errors."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} setting(s): {', '.join(unknown)}")
    return cls(**{name: _typed(cls, fields[name], value) for name, value in values.items()})


def _typed(cls: type, field: dataclasses.Field, value: Any) -> Any:
    """``value`` checked against the type of the field's default (a TOML or JSON file
    can hold any type): bool, int, float (an int is accepted) or str."""
    kind = type(field.default)
    if kind not in (bool, int, float, str):
        return value
    ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise ValueError(
            f"{cls.__name__} setting {field.name} must be {kind.__name__}, got {value!r}"
        )
    return value
