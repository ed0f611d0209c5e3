"""Search spaces of ``python -m recjax tune``: which settings of a model family a study
searches, and over which ranges.

A space is a TOML file with at most two tables: ``[train]`` holds
:class:`recjax.config.RunConfig` fields, ``[model]`` the family's config fields (e.g.
:class:`recjax.models.mf.MFConfig`). Each entry is one searched setting, either a range
or a list of choices::

    # one table per config: [train] (RunConfig fields) and [model] (the family's config fields)
    [train]
    learning_rate = { low = 0.001, high = 1.0, log = true }   # float: log-uniform
    [model]
    embedding_dim = { choices = [32, 64, 128, 256, 512] }     # categorical
    l2 = { low = 1e-4, high = 1.0, log = true }
    unobserved_weight = { low = 0.1, high = 30, log = true }
    reg_exponent = { low = 0, high = 1 }                       # float: uniform

A range's kind follows the field's type: a float field is searched as a float (integer
bounds are accepted), an int field as an int (its bounds must be integers); ``log``
(default false) samples log-uniformly and needs ``low > 0``. String and bool fields take
``choices`` only. Dimensions are searched as powers of two by listing them as choices
(``kind="categorical"``): Optuna's parameter value is then the dimension itself, which
is what trial 0 (the defaults) is enqueued with. Settings the file does not name keep
the family's CLI defaults in every trial.

``load_space(family)`` reads the family's default space, one file per family in
:func:`default_space_path` (``recjax/tuning/spaces/<family>.toml``, shipped with the
package; each file's comments give its ranges' sources: this project's own searches,
the hand-written searches that chose the defaults (``benchmarks/als_tuning.py``, ``benchmarks/main_job_tuning.py``, replaced by tune studies; ``git show 479722b:benchmarks/als_tuning.py``) and the config help
texts, and the literature). ``load_space(family, path)`` reads the user's file
instead: it *replaces* the default space, it is not merged with it.

Never searched: ``epochs`` (early stopping on validation picks the epoch count of every
trial; ``patience`` and ``tolerance`` with it), and the settings every trial of a fair
study shares: the data, split and task (``model``, ``dataset``, ``data_dir``, ``data``,
``columns``, ``rating_scale``, ``duplicates``, ``split``, ``test_fraction``,
``val_fraction``, ``task``, ``binary_threshold``), ``seed``, ``refit`` (the study refits
its best trial once) and the run's bookkeeping (``mesh``, ``out``,
``checkpoint_seconds``, ``quiet``), in short every RunConfig field but
:data:`SEARCHABLE_TRAIN`; and the pair model's data-bound fields (``jsonl_*``,
``enc0_vocab_size``, ``enc1_vocab_size``, ``output_layer``, ``num_classes``). Families
trained by alternating exact solves (``als``, ``ials``, ``ease``) take no ``[train]``
entries: they use no optimiser.

Refused when the space is loaded, before any trial runs, each with a one-line
:class:`ValueError` naming the file, the table and the key: malformed TOML (tomllib's
line and column), an unknown table, an unknown setting (with the closest names), a
setting that cannot be searched (above), a wrong type (a string or a bool for a number,
a non-integer bound of an int field), an impossible range (``low >= high``, ``log``
with ``low <= 0``, empty, repeated or mixed-type choices), and a value the configs
themselves refuse: every range end and every choice is built into the configs
(``recjax.families.make_configs``), the other searched settings at their defaults. A
default outside its range is refused by :meth:`Space.defaults` (trial 0 trains the
defaults).

Example
-------
>>> from recjax.tuning.space import load_space
>>> space = load_space("ease")
>>> [(p.key, p.kind, p.low, p.high, p.log) for p in space.params]
[('model.l2', 'float', 10.0, 5000.0, True)]
>>> space.defaults()
{'model.l2': 250.0}
>>> space.grid()
{'model.l2': [10.0, 47.3, 224.0, 250.0, 1060.0, 5000.0]}
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Param", "Space", "load_space", "default_space_path", "SEARCHABLE_TRAIN",
           "GRID_POINTS"]

TABLES = ("train", "model")
#: RunConfig fields a study may search: the SGD trainer's optimisation settings.
SEARCHABLE_TRAIN = ("optimizer", "learning_rate", "batch_size", "schedule", "warmup_epochs",
                    "weight_decay", "grad_clip", "table_updates")
#: points of a float (or wide int) range in :meth:`Space.grid`, both ends included, plus the
#: default where it is none of them
GRID_POINTS = 5
_SHARED = ("every trial of a study shares the data, split, task and run bookkeeping; set it "
           "on the tune command line")
_TRAIN_REASONS = {
    "model": "the study's --model picks the family",
    "epochs": "early stopping on validation picks every trial's epochs",
    "patience": "it is early stopping's, which picks every trial's epochs",
    "tolerance": "it is early stopping's, which picks every trial's epochs",
    "seed": "every trial of a study shares one seed; vary it across studies",
    "refit": "the study refits its best trial once (--refit-best)",
}
_MODEL_REASONS = {
    **dict.fromkeys(("jsonl_train", "jsonl_validation", "jsonl_test"),
                    "it names the data every trial shares"),
    **dict.fromkeys(("enc0_vocab_size", "enc1_vocab_size"), "the data sizes the token tables"),
    **dict.fromkeys(("output_layer", "num_classes"), "it follows the task every trial shares"),
}
_ENTRY_KEYS = ("low", "high", "log", "choices")
_ENTRY_FORM = "{ low = ..., high = ...[, log = true] } or { choices = [...] }"


@dataclass(frozen=True)
class Param:
    """One searched setting.

    Attributes
    ----------
    name : str
        The config field, e.g. ``"learning_rate"``.
    table : str
        ``"train"`` (a RunConfig field) or ``"model"`` (a field of the family's config).
    kind : str
        ``"float"``, ``"int"`` (bounds are ints) or ``"categorical"`` (dimensions too,
        as a list of powers of two).
    low, high : float or int or None
        The range, both ends included (None for categorical).
    log : bool
        Log-uniform sampling of the range.
    choices : tuple or None
        The categorical values (None for a range).
    """

    name: str
    table: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple | None = None

    @property
    def key(self) -> str:
        """The Optuna parameter name, ``"<table>.<name>"``."""
        return f"{self.table}.{self.name}"

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one the space can give."""
        if self.kind == "categorical":
            return any(type(c) is type(value) and c == value for c in self.choices)
        return self.low <= value <= self.high

    def probes(self) -> tuple:
        """The values the configs must accept: both range ends, or every choice."""
        return self.choices if self.kind == "categorical" else (self.low, self.high)

    def suggest(self, trial: Any) -> Any:
        """This setting's value in ``trial`` (an ``optuna.Trial`` or ``FixedTrial``)."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, self.low, self.high, log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, log=self.log)

    def grid(self, default: Any) -> list:
        """Grid values: every choice; an int range of at most :data:`GRID_POINTS` values
        whole; else :data:`GRID_POINTS` points, log- or evenly spaced, both ends included
        (floats inside rounded to 3 significant digits); plus ``default``, sorted."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int" and self.high - self.low < GRID_POINTS:
            return list(range(self.low, self.high + 1))
        inner = []
        for i in range(1, GRID_POINTS - 1):
            t = i / (GRID_POINTS - 1)
            x = (self.low * (self.high / self.low) ** t if self.log
                 else self.low + (self.high - self.low) * t)
            inner.append(round(x) if self.kind == "int" else float(f"{x:.3g}"))
        return sorted({self.low, *inner, self.high, default})

    def span(self) -> str:
        """The range or choices, as the report shows them."""
        if self.kind == "categorical":
            return " | ".join(repr(c) for c in self.choices)
        return f"{self.low:g} .. {self.high:g}{' (log)' if self.log else ''}"


@dataclass(frozen=True)
class Space:
    """A model family's search space: its :class:`Param`\\ s, read from ``source``.

    Example
    -------
    >>> load_space("ials").defaults()
    {'model.embedding_dim': 128, 'model.unobserved_weight': 3.0, 'model.regularization': 0.003, \
'model.reg_exponent': 1.0}
    """

    family: str
    params: tuple[Param, ...]
    source: str = ""  # the TOML file it was read from, named in errors

    def suggest(self, trial: Any) -> dict[str, dict[str, Any]]:
        """``{"train": {field: value}, "model": {field: value}}`` of ``trial`` (an
        ``optuna.Trial``): the overrides of the family's defaults that the trial trains."""
        return _nest({p.key: p.suggest(trial) for p in self.params})

    def defaults(self) -> dict[str, Any]:
        """``{param.key: the value the CLI trains the family with}`` (trial 0).

        Raises
        ------
        ValueError
            A default outside its range, naming the file, the table and the key.
        """
        values = _default_values(self.family, self.params)
        for p in self.params:
            if not p.contains(values[p.key]):
                raise ValueError(
                    f"space {self.source}: [{p.table}] {p.name} ({p.span()}) leaves out the "
                    f"{self.family} default {values[p.key]!r}, which trial 0 trains; widen it "
                    f"to include the default")
        return values

    def grid(self) -> dict[str, list]:
        """``{param.key: values}`` for ``optuna.samplers.GridSampler``: every choice, or
        :data:`GRID_POINTS` points of a range (:meth:`Param.grid`), with the default."""
        defaults = self.defaults()
        return {p.key: p.grid(defaults[p.key]) for p in self.params}

    def describe(self) -> str:
        """A few lines for the report: each key, kind, range and default."""
        values = _default_values(self.family, self.params)
        lines = [f"{self.family} search space ({self.source}); epochs: not searched, early "
                 f"stopping picks them"]
        for p in self.params:
            outside = "" if p.contains(values[p.key]) else " (outside the range)"
            lines.append(f"  {p.key:<26} {p.kind:<11} {p.span():<44} "
                         f"default {values[p.key]!r}{outside}")
        return "\n".join(lines)


def default_space_path() -> Path:
    """The folder of the default spaces, one ``<family>.toml`` per registered family."""
    return Path(__file__).with_name("spaces")


def load_space(family: str, path: str | os.PathLike | None = None) -> Space:
    """The search space of model family ``family``: its default space (``path`` None),
    or the TOML file ``path``, which replaces it.

    Raises
    ------
    ValueError
        An unknown family, an unreadable or malformed file, or a refused entry (the
        module docstring lists them), naming the file, the table and the key.
    """
    classes = _classes(family)
    file = Path(path) if path is not None else default_space_path() / f"{family}.toml"
    try:
        raw = tomllib.loads(file.read_text())
    except OSError as err:
        what = "no default search space for" if path is None else "cannot read the space of"
        raise ValueError(f"{what} model {family!r}: {file}: {err.strerror}; pass a space file "
                         f"(--space FILE.toml)") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"space {file}: not valid TOML: {err}; fix it there") from None
    for table, entries in raw.items():
        if table in TABLES and isinstance(entries, dict):
            continue
        close = difflib.get_close_matches(table, TABLES, n=1)
        hint = f" (did you mean [{close[0]}]?)" if close and table not in TABLES else ""
        setting = not isinstance(entries, dict) or bool(entries) and set(entries) <= set(
            _ENTRY_KEYS)  # a setting written above any [table]
        where = f"{table} lies outside a table" if setting else f"unknown table [{table}]"
        raise ValueError(f"space {file}: {where}{hint}; use [train] (RunConfig settings) "
                         f"and [model] ({classes['model'].__name__} settings)")
    params = tuple(_param(file, family, classes, table, name, entry)
                   for table in TABLES for name, entry in raw.get(table, {}).items())
    if not params:
        raise ValueError(f"space {file} searches nothing; add entries under [train] or "
                         f"[model], e.g. learning_rate = {{ low = 1e-4, high = 1e-2, log = true }}")
    _check_configs(file, family, params)
    return Space(family, params, str(file))


def _classes(family: str) -> dict[str, type]:
    """{table: config class} of ``family``."""
    from recjax.config import RunConfig
    from recjax.families import MODELS

    if family not in MODELS:
        raise ValueError(f"unknown model {family!r}; choose one of {', '.join(MODELS)}")
    return {"train": RunConfig, "model": MODELS[family].config}


def _param(file: Path, family: str, classes: dict[str, type], table: str, name: str,
           entry: Any) -> Param:
    """The :class:`Param` of ``[table] name = entry``, or a one-line ValueError."""
    from recjax.config import describe

    where = f"space {file}: [{table}] {name}"
    fields = {f.name: f for f in dataclasses.fields(classes[table])}
    if name not in fields:
        other = next(t for t in TABLES if t != table)
        close = difflib.get_close_matches(name, fields, n=3)
        hint = (f"; it is a [{other}] setting" if name in
                {f.name for f in dataclasses.fields(classes[other])}
                else f"; did you mean {', '.join(close)}?" if close else "")
        raise ValueError(f"{where}: not a {classes[table].__name__} setting{hint} "
                         f"(python -m recjax train --model {family} --help lists them)")
    kind = describe(fields[name])[1]
    reason = _fixed_reason(family, table, name, kind)
    if reason:
        raise ValueError(f"{where} cannot be searched: {reason}")
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be {_ENTRY_FORM}, got {entry!r}")
    unknown = [k for k in entry if k not in _ENTRY_KEYS]
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; use {_ENTRY_FORM}")
    if "choices" in entry:
        if len(entry) > 1:
            raise ValueError(f"{where}: choices take no low, high or log; use {_ENTRY_FORM}")
        return Param(name, table, "categorical", choices=_choices(where, entry["choices"], kind))
    if kind not in (int, float):
        raise ValueError(f"{where} is a {kind.__name__} setting: give {{ choices = [...] }}")
    if "low" not in entry or "high" not in entry:
        raise ValueError(f"{where}: a range needs both low and high; use {_ENTRY_FORM}")
    low, high = (_number(where, key, entry[key], kind) for key in ("low", "high"))
    log = entry.get("log", False)
    if not isinstance(log, bool):
        raise ValueError(f"{where}: log must be true or false, got {log!r}")
    if low >= high:
        raise ValueError(f"{where}: low {low!r} must be below high {high!r}")
    if log and low <= 0:
        raise ValueError(f"{where}: log = true needs low > 0, got {low!r}; raise low or drop log")
    return Param(name, table, kind.__name__, low, high, log)


def _fixed_reason(family: str, table: str, name: str, kind: type) -> str | None:
    """Why ``[table] name`` cannot be searched (None: it can)."""
    from recjax.families import MODELS, ModelSpec

    if kind not in (bool, int, float, str):
        return f"it is not a bool, int, float or str setting ({kind.__name__})"
    if table == "model":
        return _MODEL_REASONS.get(name)
    if name not in SEARCHABLE_TRAIN:
        return _TRAIN_REASONS.get(name, _SHARED)
    sgd = {f.name: f.default for f in dataclasses.fields(ModelSpec)}["trainer"]
    if MODELS[family].trainer != sgd:
        return f"{family} trains by exact alternating solves, which use no optimiser settings"
    return None


def _number(where: str, key: str, value: Any, kind: type) -> float | int:
    """A range end of an int or float field, checked."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: {key} must be a finite number, got {value!r}")
    if kind is int and not isinstance(value, int):
        raise ValueError(f"{where}: {key} must be an integer (an int setting), got {value!r}")
    return float(value) if kind is float else value


def _choices(where: str, choices: Any, kind: type) -> tuple:
    """The choices of a field of type ``kind``, checked (ints become floats for a float
    field)."""
    if not isinstance(choices, list) or not choices:
        raise ValueError(f"{where}: choices must be a non-empty list, got {choices!r}")
    numeric = (int, float) if kind is float else (kind,)
    groups = {"number" if type(c) in (int, float) else type(c).__name__ for c in choices}
    if len(groups) > 1:
        raise ValueError(f"{where}: choices mix types ({', '.join(sorted(groups))}); "
                         f"give {kind.__name__} values only")
    if not all(type(c) in numeric for c in choices):
        raise ValueError(f"{where}: choices must be {kind.__name__} values (a {kind.__name__} "
                         f"setting), got {choices!r}")
    values = tuple(float(c) if kind is float else c for c in choices)
    if kind is float and not all(math.isfinite(c) for c in values):
        raise ValueError(f"{where}: choices must be finite numbers, got {choices!r}")
    if len(set(values)) < len(values):
        raise ValueError(f"{where}: choices repeat a value: {choices!r}")
    return values


def _check_configs(file: Path, family: str, params: tuple[Param, ...]) -> None:
    """Build the configs at every range end and choice, the other searched settings at
    their defaults (or their first value when the default is outside), so that a value
    the configs refuse is an error before any trial."""
    from recjax.families import make_configs

    defaults = _default_values(family, params)
    base = {p.key: defaults[p.key] if p.contains(defaults[p.key]) else p.probes()[0]
            for p in params}
    for p in params:
        for value in p.probes():
            try:
                make_configs(family, *_nest({**base, p.key: value}).values())
            except (ValueError, TypeError) as err:
                raise ValueError(f"space {file}: [{p.table}] {p.name} = {value!r} is refused by "
                                 f"the {family} configs ({err}); narrow the range") from None


def _default_values(family: str, params: tuple[Param, ...]) -> dict[str, Any]:
    """{param.key: the family's CLI default}: ``recjax.families.make_configs(family)``, the one
    place that applies the family's recommended training settings."""
    from recjax.families import make_configs

    configs = dict(zip(TABLES, make_configs(family)))
    return {p.key: getattr(configs[p.table], p.name) for p in params}


def _nest(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"train.lr": 1, "model.l2": 2}`` -> ``{"train": {"lr": 1}, "model": {"l2": 2}}``."""
    nested: dict[str, dict[str, Any]] = {table: {} for table in TABLES}
    for key, value in values.items():
        table, name = key.split(".", 1)
        nested[table][name] = value
    return nested
