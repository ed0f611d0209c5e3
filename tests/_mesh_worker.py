"""Sharded-training checks, run by tests/test_sharding.py in a subprocess with 8 virtual
CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=8``; the test process
itself has one device). Prints one JSON object.

Usage: ``python tests/_mesh_worker.py OUT_DIR``.

Data: a small synthetic set whose vocabularies (301 users, 157 items) divide by no
model axis, so tables are padded on every mesh with a model axis > 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import numpy as np

from recjax.config import RunConfig
from recjax.data import synthetic_ratings
from recjax.data.splits import holdout_split
from recjax.experiment import run
from recjax.families import MODELS
from recjax.models.dnn import DNNConfig
from recjax.models.mf import MFConfig
from recjax.models.pair import PairConfig
from recjax.models.softmax import SoftmaxConfig
from recjax.train.checkpoint import Checkpoints, param_shapes
from recjax.train.loop import initial_state
from recjax.train.optim import make_optimizer
from recjax.train.sharding import Layout, make_mesh
from recjax.train.step import Model

CONFIGS = {
    "mf": MFConfig(embedding_dim=8),
    "pair": PairConfig(enc0_token_embedding_dim=8, enc1_token_embedding_dim=8, enc_dim=8, mlp_dim=16,
                       dropout=0.2),
    "dnn": DNNConfig(embedding_dim=8, hidden_dims="16"),
    "softmax": SoftmaxConfig(embedding_dim=8, hidden_dims="16", targets_per_user=2),
}


def small_splits() -> dict:
    data, _ = synthetic_ratings(301, 157, 6_000, rank=4, noise_std=0.3, seed=3)
    train, test, _ = holdout_split(data, 0.1, seed=0)
    fit_part, val, _ = holdout_split(train, 0.1, seed=1)
    return {"train": fit_part, "val": val, "test": test}


def train(model: str, mesh: str, out: Path, splits: dict, *, epochs: int = 2, resume: bool = False):
    cfg = RunConfig(model=model, dataset="synthetic", split="random", epochs=epochs, batch_size=128,
                      learning_rate=0.01, patience=10, quiet=True, mesh=mesh, out=str(out))
    return run(cfg, CONFIGS[model], resume=resume, splits=splits)


def max_diff(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def stored_specs(run_dir: Path) -> dict[str, list]:
    """Partition specs the last checkpoint recorded for the MF tables (as written)."""
    manager = Checkpoints(run_dir / "checkpoints")._manager("last")
    tree = manager.item_metadata(manager.latest_step())["state"].tree["params"]
    return {name: list(tree[name].sharding.partition_spec) for name in ("user_embedding", "item_embedding")}


def restored_shards(run_dir: Path, result, mesh: tuple[int, int]) -> dict[str, list]:
    """Restore the run's last checkpoint onto ``mesh``; each table's per-device shape."""
    cfg, splits = RunConfig(batch_size=128, learning_rate=0.01), result.splits
    model = Model.split(MODELS["mf"].build(CONFIGS["mf"], splits["train"], task=cfg.task, seed=cfg.seed))
    layout = Layout(make_mesh(*mesh), model)
    template, _ = initial_state(model, make_optimizer(cfg, 1, frozenset(model.row_lookups)), 0, layout)
    # the unpadded shapes vouch that only mesh padding differs
    state, _, _ = Checkpoints(run_dir / "checkpoints").restore_last(
        template, {"param_shapes": param_shapes(model.params)})
    shapes = layout.shard_shapes(state.params)
    return {name: [list(state.params[name].shape), list(shapes[name]),
                   len(state.params[name].sharding.device_set)]
            for name in ("user_embedding", "item_embedding")}


def explored(run_dir: Path) -> float:
    """Train on a 1x8 mesh (500 items padded to 504), reload the run folder as the
    explore commands do (one device): max |difference| from the trained item table."""
    from recjax.explore import load_run

    cfg = RunConfig(dataset="synthetic", split="random", epochs=1, batch_size=2048, quiet=True,
                      mesh="1x8", out=str(run_dir))
    trained = run(cfg, CONFIGS["mf"])
    reloaded = load_run(run_dir).module()
    return max_diff(trained.fit.params["item_embedding"], reloaded.item_embedding[...])


def main(out: Path) -> dict:
    # the runs repeat programs (one per mesh and array shape): compile each once
    jax.config.update("jax_compilation_cache_dir", str(out / "jax-cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    splits = small_splits()
    report: dict = {"devices": jax.device_count(), "models": {}, "resume": {}}
    for model in CONFIGS:
        single = train(model, "", out / f"{model}-single", splits)
        meshes = ("8x1", "4x2", "2x4") if model == "mf" else ("4x2",)
        for mesh in meshes:
            sharded = train(model, mesh, out / f"{model}-{mesh}", splits)
            report["models"][f"{model}@{mesh}"] = {
                "param_diff": max_diff(single.fit.params, sharded.fit.params),
                "metric_diff": max(abs(single.metrics[k] - sharded.metrics[k])
                                   for k in single.metrics if k.startswith(("val_", "test_"))),
                "tables": sorted("/".join(map(str, p)) for p in Model.split(sharded.module).tables),
            }
    report["stored_specs"] = stored_specs(out / "mf-4x2")
    report["explored_on_one_device"] = explored(out / "mf-1x8-synthetic")
    report["restored_on_2x4"] = restored_shards(out / "mf-4x2", single, (2, 4))

    # A run interrupted after 2 epochs on one mesh continues on another (and on one device).
    three = train("mf", "", out / "mf-single-3", splits, epochs=3)
    for first, then in (("4x2", "2x4"), ("2x4", "")):
        folder = out / f"resume-{first or 'single'}-{then or 'single'}"
        train("mf", first, folder, splits, epochs=2)
        resumed = train("mf", then, folder, splits, epochs=3, resume=True)
        report["resume"][f"{first or 'single'}->{then or 'single'}"] = {
            "param_diff": max_diff(three.fit.params, resumed.fit.params),
            "epochs": len(resumed.fit.history)}
    return report


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
