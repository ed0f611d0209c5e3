"""Search spaces of ``recjax tune`` (recjax.tuning.space): every family's default space
holds the CLI's defaults (as ``python -m recjax train --model F`` builds them), its trials
build, its grid covers the defaults; bad space files are refused, one line each, before
any trial."""

from __future__ import annotations

import math
import re
import warnings
from statistics import median

import pytest

from recjax.cli import build_parser, train_configs
from recjax.config import RunConfig
from recjax.families import MODELS
from recjax.tuning.space import GRID_POINTS, default_space_path, load_space

optuna = pytest.importorskip("optuna")  # the tune extra

FAMILIES = sorted(MODELS)


def _cli_configs(family: str) -> dict:
    """{table: config} that ``python -m recjax train --model FAMILY`` trains with."""
    args = build_parser(family).parse_args(["train", "--model", family])
    return dict(zip(("train", "model"), train_configs(args)))


def _inside(param, value) -> bool:
    if param.kind == "categorical":
        return value in param.choices and all(type(c) is type(value) for c in param.choices)
    return param.low <= value <= param.high


def _build(family: str, values: dict) -> None:
    """The configs of one trial, built as research code would."""
    RunConfig(model=family, **values["train"])
    MODELS[family].config(**values["model"])


@pytest.mark.parametrize("family", FAMILIES)
def test_default_space_holds_the_cli_defaults(family):
    space = load_space(family)
    configs = _cli_configs(family)
    assert space.family == family and space.params
    assert space.source == str(default_space_path() / f"{family}.toml")
    expected = {p.key: getattr(configs[p.table], p.name) for p in space.params}
    assert space.defaults() == expected
    for p in space.params:
        assert _inside(p, expected[p.key]), p.key
        assert p.name != "epochs"


def test_defaults_are_each_familys_own():
    """The training defaults are the family's recommended ones (recjax.config.FAMILY_SETTINGS),
    not RunConfig's generic ones: mf's SGD step is 0.5, dae's adam step 1e-3."""
    assert load_space("mf").defaults()["train.learning_rate"] == 0.5
    assert load_space("dae").defaults()["train.learning_rate"] == 1e-3
    assert load_space("softmax").defaults()["train.learning_rate"] == 3e-3


def test_alternating_families_search_no_optimiser():
    for family in ("als", "ials", "ease"):
        assert all(p.table == "model" for p in load_space(family).params)


@pytest.mark.parametrize("family", FAMILIES)
def test_suggest_builds_at_defaults_and_range_ends(family):
    space = load_space(family)
    defaults = space.defaults()
    fixed = optuna.trial.FixedTrial(defaults)
    values = space.suggest(fixed)
    assert set(values) == {"train", "model"}
    assert {f"{t}.{k}": v for t, kv in values.items() for k, v in kv.items()} == defaults
    _build(family, values)
    points = [{p.key: (p.choices[i % len(p.choices)] if p.kind == "categorical"
                       else (p.low, p.high)[i % 2]) for p in space.params} for i in range(6)]
    for point in points:  # every end and choice, mixed across settings
        values = space.suggest(optuna.trial.FixedTrial(point))
        _build(family, values)
        for p in space.params:
            assert values[p.table][p.name] == point[p.key]


@pytest.mark.parametrize("family", FAMILIES)
def test_grid_covers_the_default_and_suits_optuna(family):
    space = load_space(family)
    grid, defaults = space.grid(), space.defaults()
    assert set(grid) == {p.key for p in space.params}
    for p in space.params:
        values = grid[p.key]
        assert defaults[p.key] in values
        assert all(_inside(p, v) for v in values)
        if p.kind == "categorical":
            assert values == list(p.choices)
        else:
            assert values[0] == p.low and values[-1] == p.high and values == sorted(values)
            assert len(set(values)) == len(values) in (GRID_POINTS, GRID_POINTS + 1)
            # the spaced points: all of them, or all but the default added to them
            points = values if len(values) == GRID_POINTS else \
                [v for v in values if v != defaults[p.key]]
            steps = ([b / a for a, b in zip(points, points[1:])] if p.log
                     else [b - a for a, b in zip(points, points[1:])])
            assert max(steps) / min(steps) < 1.01, (p.key, values)  # 3 significant digits
    if math.prod(len(v) for v in grid.values()) <= 160:  # a whole grid study, in memory
        study = optuna.create_study(sampler=optuna.samplers.GridSampler(grid, seed=0))
        seen = []
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a grid value outside its distribution warns
            study.optimize(lambda trial: seen.append(space.suggest(trial)) or 0.0)
        assert len(seen) == math.prod(len(v) for v in grid.values())


def test_random_trials_follow_the_ranges():
    """200 random-sampler trials: log ranges are log-uniform (ease's lambda 10..5000 has
    median sqrt(10 * 5000) = 224, a uniform one 2505; mf's learning rate 0.05..2 has
    median 0.316), linear ones uniform (ials's nu 0..1: median 0.5), choices kept as ints."""
    drawn: dict[str, list] = {}
    for family in ("ease", "mf", "ials"):
        space = load_space(family)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        study.optimize(lambda trial: drawn.setdefault(family, []).append(space.suggest(trial))
                       or 0.0, n_trials=200)
    l2 = [v["model"]["l2"] for v in drawn["ease"]]
    assert min(l2) >= 10.0 and max(l2) <= 5000.0 and 140 < median(l2) < 360
    lr = [v["train"]["learning_rate"] for v in drawn["mf"]]
    assert 0.05 <= min(lr) and max(lr) <= 2.0 and 0.2 < median(lr) < 0.5
    assert {v["model"]["embedding_dim"] for v in drawn["mf"]} == {64, 128, 256, 512, 1024, 2048}
    assert all(type(v["model"]["embedding_dim"]) is int for v in drawn["mf"])
    nu = [v["model"]["reg_exponent"] for v in drawn["ials"]]
    assert 0.4 < median(nu) < 0.6


def test_ease_grid_points_are_log_spaced():
    """ease: 10..5000, log: 5 points with ratio 500^(1/4) = 4.729, 3 significant digits,
    plus the default 250."""
    assert load_space("ease").grid() == {"model.l2": [10.0, 47.3, 224.0, 250.0, 1060.0, 5000.0]}


def test_describe_lists_each_setting():
    text = load_space("ials").describe()
    assert "model.unobserved_weight" in text and "0.3 .. 10 (log)" in text
    assert "default 3.0" in text and "64 | 128 | 256 | 512" in text
    assert len(text.splitlines()) == 1 + len(load_space("ials").params)


def test_user_space_replaces_the_default(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text("[model]\nl2 = { low = 0.01, high = 0.5, log = true }\n"
                    "embedding_dim = { choices = [256, 1024] }\n")
    space = load_space("mf", path)
    assert [p.key for p in space.params] == ["model.l2", "model.embedding_dim"]
    assert space.source == str(path)
    (l2, dim) = space.params
    assert (l2.kind, l2.low, l2.high, l2.log) == ("float", 0.01, 0.5, True)
    assert (dim.kind, dim.choices) == ("categorical", (256, 1024))
    assert space.defaults() == {"model.l2": 0.06, "model.embedding_dim": 1024}
    values = space.suggest(optuna.trial.FixedTrial({"model.l2": 0.1, "model.embedding_dim": 256}))
    assert values == {"train": {}, "model": {"l2": 0.1, "embedding_dim": 256}}


def test_int_ranges_and_float_choices(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text("[train]\nbatch_size = { low = 64, high = 1024, log = true }\n"
                    "[model]\nl2 = { choices = [0, 0.06, 1] }\n")
    batch, l2 = load_space("mf", path).params
    assert (batch.kind, batch.low, batch.high) == ("int", 64, 1024)
    assert l2.choices == (0.0, 0.06, 1.0) and all(type(c) is float for c in l2.choices)
    assert load_space("mf", path).grid()["train.batch_size"] == [64, 128, 256, 512, 1024]


def test_default_outside_a_user_range_is_named(tmp_path):
    path = tmp_path / "narrow.toml"
    path.write_text("[train]\nlearning_rate = { low = 0.01, high = 0.1, log = true }\n")
    space = load_space("mf", path)
    with pytest.raises(ValueError, match=r"narrow\.toml: \[train\] learning_rate .*default 0\.5"):
        space.defaults()
    with pytest.raises(ValueError, match="learning_rate"):
        space.grid()
    assert "(outside the range)" in space.describe()


REFUSED = [
    # (family, file text, what the one-line message must say)
    ("mf", "[train]\nlearning_rate = { low = 0.1 high = 1.0 }\n",
     r"not valid TOML: .*line 2, column \d+\); fix it there$"),
    ("mf", "[optim]\nlearning_rate = { low = 0.1, high = 1.0 }\n",
     r"unknown table \[optim\]; use \[train\]"),
    ("mf", "[modle]\nl2 = { low = 0.1, high = 1.0 }\n",
     r"unknown table \[modle\] \(did you mean \[model\]"),
    ("mf", "learning_rate = { low = 0.1, high = 1.0 }\n",
     r": learning_rate lies outside a table; use \[train\]"),
    ("mf", "lr = 0.1\n", r": lr lies outside a table"),
    ("mf", "train = 3\n", r": train lies outside a table; use \[train\]"),
    ("mf", "[model]\nembeding_dim = { choices = [64, 128] }\n",
     r"\[model\] embeding_dim: not a MFConfig setting; did you mean embedding_dim"),
    ("mf", "[train]\nl2 = { low = 0.1, high = 1.0 }\n",
     r"\[train\] l2: not a RunConfig setting; it is a \[model\]"),
    ("mf", "[model]\nl2 = { low = \"0.01\", high = 1.0 }\n",
     r"\[model\] l2: low must be a finite number, got '0.01'"),
    ("mf", "[model]\nl2 = { low = true, high = 1.0 }\n",
     r"\[model\] l2: low must be a finite number, got True"),
    ("mf", "[model]\nl2 = { low = 0.01, high = inf }\n",
     r"\[model\] l2: high must be a finite number"),
    ("mf", "[model]\nl2 = 0.1\n", r"\[model\] l2 must be \{ low = "),
    ("mf", "[model]\nl2 = { lo = 0.1, high = 1.0 }\n", r"\[model\] l2: unknown key\(s\) lo"),
    ("mf", "[model]\nl2 = { high = 1.0 }\n", r"\[model\] l2: a range needs both low and high"),
    ("mf", "[model]\nl2 = { low = 0.1, high = 1.0, log = \"yes\" }\n",
     r"\[model\] l2: log must be true or false"),
    ("mf", "[model]\nl2 = { low = 1.0, high = 1.0 }\n",
     r"\[model\] l2: low 1\.0 must be below high 1\.0"),
    ("mf", "[model]\nl2 = { low = 2.0, high = 1.0 }\n",
     r"\[model\] l2: low 2\.0 must be below high"),
    ("mf", "[model]\nl2 = { low = 0, high = 1.0, log = true }\n",
     r"\[model\] l2: log = true needs low > 0"),
    ("mf", "[model]\nembedding_dim = { choices = [] }\n",
     r"\[model\] embedding_dim: choices must be a non-empty"),
    ("mf", "[model]\nembedding_dim = { choices = [64, \"128\"] }\n",
     r"\[model\] embedding_dim: choices mix types \(number, str\)"),
    ("mf", "[model]\nembedding_dim = { choices = [64.0, 128.0] }\n",
     r"\[model\] embedding_dim: choices must be int values"),
    ("mf", "[model]\nembedding_dim = { choices = [64, 64] }\n",
     r"\[model\] embedding_dim: choices repeat"),
    ("mf", "[model]\nuser_bias = { choices = [true, 1] }\n",
     r"\[model\] user_bias: choices mix types"),
    ("mf", "[model]\nembedding_dim = { low = 16.5, high = 64 }\n",
     r"\[model\] embedding_dim: low must be an integer"),
    ("mf", "[model]\nembedding_dim = { choices = [64], low = 1 }\n",
     r"choices take no low, high or log"),
    ("dnn", "[model]\nhidden_dims = { low = 1, high = 2 }\n",
     r"\[model\] hidden_dims is a str setting: give \{ choices"),
    ("mf", "[train]\nepochs = { low = 5, high = 50 }\n",
     r"\[train\] epochs cannot be searched: early stopping"),
    ("mf", "[train]\nseed = { choices = [0, 1] }\n", r"\[train\] seed cannot be searched"),
    ("mf", "[train]\nout = { choices = [\"a\", \"b\"] }\n",
     r"\[train\] out cannot be searched: every trial"),
    ("mf", "[train]\nmodel = { choices = [\"mf\", \"dnn\"] }\n",
     r"\[train\] model cannot be searched"),
    ("mf", "[train]\ndataset = { choices = [\"ml-100k\", \"ml-1m\"] }\n",
     r"\[train\] dataset cannot be searched"),
    ("pair", "[model]\nnum_classes = { choices = [2, 3] }\n",
     r"\[model\] num_classes cannot be searched"),
    ("als", "[train]\nlearning_rate = { low = 0.001, high = 0.1 }\n",
     r"\[train\] learning_rate cannot be searched: als trains by exact alternating solves"),
    ("mf", "[model]\nl2 = { low = -1.0, high = 1.0 }\n",
     r"\[model\] l2 = -1\.0 is refused by the mf configs \(l2 must be >= 0"),
    ("dae", "[model]\ndropout = { low = 0.5, high = 1.0 }\n",
     r"\[model\] dropout = 1\.0 is refused by the dae configs \(dropout must be in \[0, 1\)"),
    ("mf", "[train]\noptimizer = { choices = [\"sgd\", \"nesterov\"] }\n",
     r"\[train\] optimizer = 'nesterov' is refused by the mf configs \(unknown optimizer"),
    ("mf", "[train]\nweight_decay = { low = 1e-4, high = 0.1, log = true }\n",
     r"\[train\] weight_decay = 0\.0001 is refused by the mf configs \(weight_decay needs"),
    ("ease", "[model]\nl2 = { choices = [0, 100] }\n",
     r"\[model\] l2 = 0\.0 is refused by the ease configs"),
    ("mf", "# nothing\n", r"searches nothing"),
]


@pytest.mark.parametrize("family, text, message", REFUSED)
def test_bad_space_is_refused_with_one_line(tmp_path, family, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        load_space(family, path)
    line = str(err.value)
    assert "\n" not in line
    assert line.startswith(f"space {path}") or line.startswith("cannot read")
    assert re.search(message, line), line


def test_weight_decay_with_adamw_only_is_accepted(tmp_path):
    """The configs are checked with the other searched settings in range: weight decay
    needs adamw, which the space's own optimizer choice supplies."""
    path = tmp_path / "adamw.toml"
    path.write_text("[train]\noptimizer = { choices = [\"adamw\"] }\n"
                    "weight_decay = { low = 1e-4, high = 0.1, log = true }\n")
    space = load_space("mf", path)
    _build("mf", space.suggest(optuna.trial.FixedTrial(
        {"train.optimizer": "adamw", "train.weight_decay": 0.01})))


def test_missing_file_and_unknown_family(tmp_path):
    with pytest.raises(ValueError, match=r"cannot read the space of model 'mf': .*nope\.toml"):
        load_space("mf", tmp_path / "nope.toml")
    with pytest.raises(ValueError, match=r"unknown model 'svd'; choose one of"):
        load_space("svd")


def test_every_family_ships_a_space():
    assert sorted(p.stem for p in default_space_path().glob("*.toml")) == FAMILIES
