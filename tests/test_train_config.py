"""RunConfig validation and from_dict: every bad setting is a ValueError with its message."""

from __future__ import annotations

import dataclasses

import pytest

from recjax.config import FAMILY_SETTINGS, OPTIMIZERS, SCHEDULES, RunConfig, from_dict
from recjax.models.mf import MFConfig


def test_defaults_are_valid_and_frozen():
    cfg = RunConfig()
    assert (cfg.optimizer, cfg.schedule, cfg.task, cfg.split) == ("sgd", "constant", "regression", "ua")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 3  # type: ignore[misc]
    assert dataclasses.replace(cfg, epochs=3).epochs == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(epochs=0), "invalid epochs=0 (see --help)"),
        (dict(epochs=-2), "invalid epochs=-2"),
        (dict(batch_size=-1), "invalid batch_size=-1"),
        (dict(learning_rate=0.0), "invalid learning_rate=0.0"),
        (dict(learning_rate=-0.1), "invalid learning_rate=-0.1"),
        (dict(val_fraction=0.0), "invalid val_fraction=0.0"),
        (dict(val_fraction=1.0), "invalid val_fraction=1.0"),
        (dict(test_fraction=0.0), "invalid test_fraction=0.0"),
        (dict(test_fraction=1.5), "invalid test_fraction=1.5"),
        (dict(patience=0), "invalid patience=0"),
        (dict(tolerance=-0.01), "invalid tolerance=-0.01"),
        (dict(optimizer="adamw", weight_decay=-1.0), "invalid weight_decay=-1.0"),
        (dict(grad_clip=-1.0), "invalid grad_clip=-1.0"),
        (dict(warmup_epochs=-1.0), "invalid warmup_epochs=-1.0"),
        (dict(epochs=3, warmup_epochs=4.0), "invalid warmup_epochs=4.0"),
        (dict(optimizer="nesterov"), "unknown optimizer 'nesterov'; choose one of sgd, adam, adagrad, adamw"),
        (dict(schedule="linear"), "unknown schedule 'linear'; choose one of constant, cosine"),
        (dict(task="ranking"), "unknown task 'ranking'; choose one of regression, binary"),
        (dict(weight_decay=0.01), "weight_decay needs optimizer='adamw'"),
        (dict(optimizer="sgd", weight_decay=0.01), "weight_decay needs optimizer='adamw'"),
    ],
)
def test_invalid_settings(kwargs, message):
    with pytest.raises(ValueError) as info:
        RunConfig(**kwargs)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [dict(batch_size=0), dict(optimizer="adamw", weight_decay=0.01), dict(epochs=2, warmup_epochs=2.0),
     dict(tolerance=0.0), dict(grad_clip=0.0), dict(task="binary", binary_threshold=4.0)]
    + [dict(optimizer=o) for o in OPTIMIZERS] + [dict(schedule=s) for s in SCHEDULES],
)
def test_valid_edge_settings(kwargs):
    cfg = RunConfig(**kwargs)
    for key, value in kwargs.items():
        assert getattr(cfg, key) == value


def test_from_dict_builds_and_names_unknown_keys():
    cfg = from_dict(RunConfig, {"epochs": 3, "learning_rate": 0.1, "quiet": True})
    assert cfg == RunConfig(epochs=3, learning_rate=0.1, quiet=True)
    with pytest.raises(ValueError, match="unknown RunConfig setting\\(s\\): bogus, epoch$"):
        from_dict(RunConfig, {"epoch": 3, "bogus": 1})
    with pytest.raises(ValueError, match="unknown MFConfig setting\\(s\\): epochs"):
        from_dict(MFConfig, {"epochs": 3})


def test_from_dict_round_trips_asdict():
    cfg = RunConfig(epochs=7, optimizer="adamw", weight_decay=0.5, out="somewhere", data_dir=None)
    assert from_dict(RunConfig, dataclasses.asdict(cfg)) == cfg
    mf = MFConfig(embedding_dim=5, squash=True, gravity=0.25)
    assert from_dict(MFConfig, dataclasses.asdict(mf)) == mf


@pytest.mark.parametrize(
    "cls, values, message",
    [
        (RunConfig, {"epochs": "five"}, "RunConfig setting epochs must be int, got 'five'"),
        (RunConfig, {"epochs": 2.5}, "epochs must be int, got 2.5"),
        (RunConfig, {"epochs": True}, "epochs must be int, got True"),
        (RunConfig, {"learning_rate": "fast"}, "learning_rate must be float, got 'fast'"),
        (RunConfig, {"quiet": "yes"}, "quiet must be bool, got 'yes'"),
        (RunConfig, {"optimizer": 3}, "optimizer must be str, got 3"),
        (MFConfig, {"embedding_dim": 4.5}, "MFConfig setting embedding_dim must be int, got 4.5"),
        (MFConfig, {"user_bias": 1}, "user_bias must be bool, got 1"),
    ],
)
def test_from_dict_checks_types(cls, values, message):
    """A TOML or JSON file can hold any type: a wrong one is a clear ValueError, not a
    TypeError from deep inside the validation (or from JAX)."""
    with pytest.raises(ValueError) as info:
        from_dict(cls, values)
    assert message in str(info.value)


def test_from_dict_accepts_integers_for_floats():
    cfg = from_dict(RunConfig, {"learning_rate": 1, "warmup_epochs": 0})
    assert cfg.learning_rate == 1.0 and isinstance(cfg.learning_rate, float)
    assert from_dict(MFConfig, {"l2": 0}).l2 == 0.0


def test_model_dependent_settings_default_to_the_family_recommendation():
    """One source of defaults: what a family recommends is what RunConfig gives, unless
    set; what is set stays; every family has its entry, and only families have one."""
    from recjax.families import MODELS

    assert list(FAMILY_SETTINGS) == list(MODELS)
    for name, settings in FAMILY_SETTINGS.items():
        cfg = RunConfig(model=name)
        for key, value in settings.items():
            assert getattr(cfg, key) == value, (name, key)
    mf, ials = RunConfig(model="mf"), RunConfig(model="ials")
    assert (mf.optimizer, mf.learning_rate, mf.batch_size, mf.epochs, mf.patience) == ("sgd", 0.5, 128, 100, 5)
    # a family recommending no optimiser inherits the common ones
    assert (ials.optimizer, ials.learning_rate, ials.batch_size, ials.epochs) == ("adam", 3e-3, 1024, 16)
    assert RunConfig(model="pair", learning_rate=0.01).learning_rate == 0.01
    assert RunConfig(model="mf", optimizer="adam").optimizer == "adam"
    with pytest.raises(ValueError, match="unknown model 'nope'; choose one of mf"):
        RunConfig(model="nope")


def test_cli_and_library_defaults_are_the_same():
    from recjax.cli import build_parser, train_configs
    from recjax.families import MODELS

    for name in MODELS:
        args = build_parser(name).parse_args(["train", "--model", name])
        train_cfg, model_cfg = train_configs(args)
        assert train_cfg == RunConfig(model=name)
        assert model_cfg == MODELS[name].config()


def test_help_shows_the_chosen_model_defaults_and_choices(capsys):
    from recjax.cli import main

    for name, line in (("mf", "(default 'sgd')"), ("pair", "(default 'adam')")):
        with pytest.raises(SystemExit):
            main(["train", "--model", name, "--help"])
        out = capsys.readouterr().out
        assert "--optimizer {sgd,adam,adagrad,adamw}" in out and line in out
        assert f"{name} model settings" in out
    assert "(default 0.5)" in (main_help := _help(["train"], capsys)) and "mf model settings" in main_help


def _help(argv, capsys) -> str:
    from recjax.cli import main

    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return capsys.readouterr().out


def test_every_setting_documents_itself():
    """Help text lives with each field (its metadata), for RunConfig and every family."""
    from recjax.config import describe
    from recjax.families import MODELS

    for cls in [RunConfig] + [spec.config for spec in MODELS.values()]:
        for field in dataclasses.fields(cls):
            text, kind, choices = describe(field)
            assert text, f"{cls.__name__}.{field.name} has no help"
            assert choices is None or field.default is None or field.default in choices, field.name
