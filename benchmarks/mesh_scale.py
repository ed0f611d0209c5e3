"""MF epochs on a device mesh vs one device: time, peak memory, state per device.

Each configuration runs in a fresh process (peak memory is per process; the
virtual-device count must be set before JAX starts): one plain device, then
meshes over ``--devices`` virtual CPU devices (``XLA_FLAGS=
--xla_force_host_platform_device_count``). The data are the seeded synthetic
generator's, shaped like ml-20m (138,493 users x 26,744 items), trained with the
ml-20m benchmark's settings (batch 16,384, 64 dims, SGD). On a CPU the virtual
devices share the same cores, so expect no speed-up: the point is that results
match and each device holds 1/MODEL of every table.

Usage::

    python benchmarks/mesh_scale.py                       # 20M ratings, meshes 8x1 4x2 1x8
    python benchmarks/mesh_scale.py --ratings 1000000 --meshes 2x1 1x2 --devices 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

USERS, ITEMS = 138_493, 26_744


def child(mesh: str, n_ratings: int, epochs: int) -> dict:
    import jax
    import numpy as np

    from recjax.config import parse_mesh
    from recjax.data.synthetic import synthetic_ratings
    from recjax.families import MODELS, make_configs
    from recjax.train.loop import fit, initial_state
    from recjax.train.optim import make_optimizer
    from recjax.train.sharding import Layout, make_mesh
    from recjax.train.step import Model

    tic = time.perf_counter()
    data, _ = synthetic_ratings(USERS, ITEMS, n_ratings, seed=0)
    cfg, mf_cfg = make_configs("mf", {"batch_size": 16_384, "epochs": epochs, "quiet": True},
                                      {"embedding_dim": 64})
    inputs = MODELS["mf"].inputs(data, task=cfg.task, binary_threshold=cfg.binary_threshold)
    generate = time.perf_counter() - tic
    model = Model.split(MODELS["mf"].build(mf_cfg, data, task=cfg.task, seed=cfg.seed))
    layout = Layout(make_mesh(*parse_mesh(mesh or "1x1")), model)
    state = jax.eval_shape(lambda p: initial_state(model, make_optimizer(cfg, 1), 0, layout)[0], model.params)
    shapes = (state.params, state.opt_state)  # the arrays that grow with the tables
    shardings = layout.shardings(shapes)
    per_device = sum(int(np.prod(s.shard_shape(x.shape))) * np.dtype(x.dtype).itemsize
                     for x, s in zip(jax.tree.leaves(shapes), jax.tree.leaves(shardings)))
    total = sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(shapes))
    result = fit(model, inputs, cfg, task="regression", validate=None, monitor=None, layout=layout)
    seconds = [record["seconds"] for record in result.history]
    return {"mesh": mesh or "1 device", "devices": jax.device_count(), "ratings": n_ratings,
            "generate_seconds": generate, "compile_seconds": result.compile_seconds,
            "epoch_seconds": float(np.median(seconds)), "examples_per_second": n_ratings / float(np.median(seconds)),
            "state_mib": total / 2**20, "state_mib_per_device": per_device / 2**20,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "train_loss": result.history[-1]["train_loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ratings", type=int, default=20_000_000)
    parser.add_argument("--meshes", nargs="+", default=["8x1", "4x2", "1x8"])
    parser.add_argument("--devices", type=int, default=8, help="virtual CPU devices for the meshes")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs (median reported)")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.ratings, args.epochs)))
        return
    rows = []
    for mesh in ["", *args.meshes]:
        env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
        if mesh:
            env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
        done = subprocess.run([sys.executable, __file__, "--child", mesh, "--ratings", str(args.ratings),
                               "--epochs", str(args.epochs)], env=env, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"mesh {mesh or '1 device'} failed:\n{done.stderr[-3000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    print(f"\nMF, {args.ratings:,} synthetic ratings ({USERS:,} x {ITEMS:,}), batch 16,384, 64 dims\n")
    print("| mesh | devices | epoch s | ratings/s | compile s | state MiB / device | peak RSS GiB | final loss |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['mesh']} | {r['devices']} | {r['epoch_seconds']:.1f} | {r['examples_per_second']:,.0f} | "
              f"{r['compile_seconds']:.1f} | {r['state_mib_per_device']:.1f} of {r['state_mib']:.1f} | "
              f"{r['peak_rss_gib']:.2f} | {r['train_loss']:.4f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
