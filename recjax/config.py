"""Run configuration: frozen dataclasses, one source of defaults.

A run is a :class:`RunConfig` (data, optimisation, early stopping, output) plus
the model's own config (e.g. :class:`recjax.models.mf.MFConfig`). The settings
whose best value depends on the model family (optimizer, learning rate, batch size,
epochs, patience) default to that family's recommended ones, so
``RunConfig(model="mf")`` here and ``python -m recjax train`` on the command line
train the same thing, and ``train --model X --help`` shows what a run of X uses.
Variants override only what differs (``dataclasses.replace``); the CLI and TOML
files build them; the resolved pair is written to the run folder as ``config.json``.
Each field's help text and choices live with the field (its ``metadata``).

Example
-------
>>> from recjax.config import RunConfig
>>> cfg = RunConfig(epochs=5)
>>> cfg.model, cfg.optimizer, cfg.learning_rate, cfg.batch_size, cfg.epochs
('mf', 'sgd', 0.5, 128, 5)
>>> RunConfig(model="pair").optimizer
'adam'
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from recjax.data.download import DATASETS as _DOWNLOADS
from recjax.data.frame import DUPLICATE_RULES
from recjax.data.splits import RUN_SPLITS

__all__ = ["RunConfig", "OPTIMIZERS", "SCHEDULES", "TASKS", "DATASETS", "FAMILY_SETTINGS",
           "from_dict", "parse_mesh", "describe"]

OPTIMIZERS = ("sgd", "adam", "adagrad", "adamw")
TABLE_UPDATES = ("auto", "sparse", "dense")
SCHEDULES = ("constant", "cosine", "exponential", "warmup_cosine")
TASKS = ("regression", "binary")
DATASETS = (*_DOWNLOADS, "synthetic")  # a MovieLens release, or recjax.data.synthetic_ratings
# the settings every family inherits unless FAMILY_SETTINGS says otherwise
_COMMON_SETTINGS = {"epochs": 40, "batch_size": 1024, "optimizer": "adam", "learning_rate": 3e-3,
                    "patience": 3}

#: {model family: the RunConfig settings it recommends}, one entry per
#: :data:`recjax.families.MODELS` key, in the same order; a RunConfig fills the fields
#: left unset from them (then from ``_COMMON_SETTINGS``), the CLI puts them under any
#: value from a config file or a flag
FAMILY_SETTINGS: dict[str, dict[str, Any]] = {
    # Chosen on validation (5% of u1.base; dim 1024 also on u2.base): plain SGD beat
    # adam/adagrad/adamw; 1024 factors beat 512 (val RMSE 0.9037 vs 0.9060, 0.9000 vs 0.9004).
    "mf": dict(optimizer="sgd", learning_rate=0.5, batch_size=128, epochs=100, patience=5),
    # Object2Vec's adam at lr 1e-3
    "pair": dict(optimizer="adam", learning_rate=1e-3, batch_size=256, epochs=80, patience=4),
    "dnn": dict(optimizer="adam", learning_rate=1e-3, batch_size=256, epochs=60, patience=4),
    # examples are users: a batch of 64 users trains on 64 x targets_per_user held-out movies
    "softmax": dict(optimizer="adam", learning_rate=3e-3, batch_size=64, epochs=200, patience=10),
    # Mult-DAE: examples are users, each reconstructing its whole bag
    "dae": dict(optimizer="adam", learning_rate=1e-3, batch_size=64, epochs=200, patience=10),
    # an epoch is one alternating sweep (users, then items); no optimiser. 16 sweeps
    # (Rendle et al. 2021 run ~16): on ub the chosen setting's best sweep was the 4th
    "ials": dict(epochs=16, patience=3),
    # chosen on ub's validation (the search is in git history); its best sweep there was the 5th
    "als": dict(epochs=20, patience=3),
    # EASE's closed form is one "sweep": B solved exactly from the training pattern
    "ease": dict(epochs=1, patience=1),
}


def _setting(default: Any, help: str, *, kind: type | None = None,
             choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field with its help text, value type and choices in ``metadata``."""
    return dataclasses.field(default=default, metadata={
        "help": help, "type": kind or type(default), "choices": choices})


def describe(field: dataclasses.Field) -> tuple[str, type, tuple[str, ...] | None]:
    """(help text, value type, choices) of a config field."""
    meta = field.metadata
    return meta.get("help", ""), meta.get("type") or type(field.default), meta.get("choices")


@dataclass(frozen=True)
class RunConfig:
    """Everything about a run except the model's architecture."""

    model: str = _setting("mf", "model family (a key of recjax.families.MODELS)")
    dataset: str = _setting("ml-100k", "a MovieLens release, or synthetic", choices=DATASETS)
    data_dir: str | None = _setting(None, "folder holding the dataset (default: RECJAX_DATA, then "
                                          "the cache)", kind=str)
    data: str | None = _setting(None, "your own ratings file (CSV with a header, or Parquet) "
                                      "instead of --dataset", kind=str)
    columns: str = _setting("user,item,rating", "--data's user, item, rating[, timestamp] columns")
    rating_scale: str = _setting("", "--data's LOW,HIGH rating scale, e.g. 1,10; empty: its "
                                     "smallest and largest rating")
    duplicates: str = _setting("error", "--data's repeated (user, item) pairs: error refuses them, "
                                        "last keeps each pair's latest rating, mean averages them",
                               choices=DUPLICATE_RULES)
    split: str = _setting("ua", "ml-100k's ua, ub, u1..u5; any data: random, per_user "
                                "(test_fraction of all / of each user's ratings, seeded), temporal "
                                "(each user's last rating)", choices=RUN_SPLITS)
    test_fraction: float = _setting(0.1, "test share for the random and per_user splits")
    val_fraction: float = _setting(0.05, "validation share carved at random from the training part")
    task: str = _setting("regression", "regression (ratings) or binary (rating > binary_threshold)",
                         choices=TASKS)
    binary_threshold: float = _setting(3.0, "ratings above this are the positive class")
    epochs: int | None = _setting(None, "upper bound; early stopping usually ends sooner", kind=int)
    batch_size: int | None = _setting(None, "examples per step; 0 = full batch (one step per epoch)",
                                      kind=int)
    optimizer: str | None = _setting(None, "the optimiser", kind=str, choices=OPTIMIZERS)
    learning_rate: float | None = _setting(None, "peak learning rate", kind=float)
    schedule: str = _setting("constant", "learning-rate decay over all planned steps",
                             choices=SCHEDULES)
    warmup_epochs: float = _setting(0.0, "linear warm-up length for warmup_cosine")
    weight_decay: float = _setting(0.0, "decoupled weight decay (adamw only)")
    grad_clip: float = _setting(0.0, "clip the global gradient norm to this; 0 = off")
    table_updates: str = _setting("auto", "embedding tables: sparse updates only the rows a batch "
                                  "looked up (lazy adam/adamw), dense the whole table; auto = "
                                  "sparse for sgd and adagrad (same result), dense otherwise",
                                  choices=TABLE_UPDATES)
    patience: int | None = _setting(None, "epochs without improvement before stopping", kind=int)
    tolerance: float = _setting(0.001, "smallest validation improvement that counts")
    val_users: int = _setting(10000, "validation users a ranking or bag family (ials, ease, dae, "
                                     "softmax) ranks after each epoch: a seeded sample, the same "
                                     "users every epoch; the run's final val_ metrics are over all; "
                                     "0 = all")
    val_every: int = _setting(1, "validate after every k-th epoch and after the last; patience "
                                 "then counts validations, not epochs")
    refit: bool = _setting(False, "after early stopping, retrain on train + validation for the "
                                  "best epoch count")
    seed: int = _setting(0, "all randomness (init, shuffling, splits, negatives) derives from it")
    mesh: str = _setting("", "device mesh DATAxMODEL, e.g. 4x2: batches split over DATA, tables "
                             "by rows over MODEL; empty = one device")
    out: str | None = _setting(None, "run folder; default runs/<model>-<dataset>-<split>-<time>",
                               kind=str)
    checkpoint_seconds: float = _setting(60.0, "least seconds between checkpoints (always one at "
                                               "the end); a killed run resumes from the last, "
                                               "repeating at most this much training to the same "
                                               "result; 0 = after every epoch")
    quiet: bool = _setting(False, "no progress bar or table")

    def __post_init__(self) -> None:
        _check_choice("model", self.model, tuple(FAMILY_SETTINGS))
        recommended = {**_COMMON_SETTINGS, **FAMILY_SETTINGS[self.model]}
        for name in recommended:
            if getattr(self, name) is None:
                object.__setattr__(self, name, recommended[name])
        _check_choice("dataset", self.dataset, DATASETS)
        _check_choice("duplicates", self.duplicates, DUPLICATE_RULES)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("table_updates", self.table_updates, TABLE_UPDATES)
        _check_choice("task", self.task, TASKS)
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 0,
            "learning_rate": self.learning_rate > 0,
            "val_fraction": 0 < self.val_fraction < 1,
            "test_fraction": 0 < self.test_fraction < 1,
            "patience": self.patience >= 1,
            "tolerance": self.tolerance >= 0,
            "val_users": self.val_users >= 0,
            "val_every": self.val_every >= 1,
            "weight_decay": self.weight_decay >= 0,
            "grad_clip": self.grad_clip >= 0,
            "checkpoint_seconds": self.checkpoint_seconds >= 0,
            "warmup_epochs": 0 <= self.warmup_epochs <= self.epochs,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"invalid {name}={getattr(self, name)!r} (see --help)")
        if self.mesh:
            parse_mesh(self.mesh)
        if self.weight_decay and self.optimizer != "adamw":
            raise ValueError("weight_decay needs optimizer='adamw' (use the model's L2 terms otherwise)")


def parse_mesh(spec: str) -> tuple[int, int]:
    """``"DATAxMODEL"`` (e.g. ``"4x2"``) -> (data axis size, model axis size)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", spec)
    if not match or min(int(match.group(1)), int(match.group(2))) < 1:
        raise ValueError(f"mesh {spec!r} must be DATAxMODEL with positive sizes, e.g. 4x2 or 8x1")
    return int(match.group(1)), int(match.group(2))


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
    kind = describe(field)[1]
    if value is None and field.default is None:
        return value
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
