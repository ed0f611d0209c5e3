"""Fold-in speed: ``Run.recommend(new_user_items=...)`` for one new user and for many in one call.

For each run folder given, new users are drawn from the run's own training part
(each user's first ``--items`` ratings, their items and ratings, seeded), then

* one user per call: the median of ``--repeats`` calls (after one warm-up call that
  compiles), and
* ``--users`` users in one call: the median of three calls (after a warm-up),

each answer checked against the same users folded in one at a time (the same
top-N items). Printed: milliseconds per call and users per second, with the
machine.

::

    python -m recjax train --model als --embedding-dim 128 --refit --out /tmp/fold/als
    python -m recjax train --model ials --refit --out /tmp/fold/ials
    python benchmarks/fold_in_bench.py /tmp/fold/als /tmp/fold/ials
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np


def new_users(run, n_users: int, n_items: int, seed: int = 0) -> tuple[list, list]:
    """``n_users`` (items, ratings) lists of ``n_items`` raw ids each, from the training
    part's users with that many ratings (drawn with replacement)."""
    test = run.splits["train"]
    counts = np.bincount(test.user, minlength=run.data.n_users)
    eligible = np.flatnonzero(counts >= n_items)
    rng = np.random.default_rng(seed)
    items, ratings = [], []
    for u in rng.choice(eligible, n_users):
        mine = np.flatnonzero(test.user == u)[:n_items]
        items.append(run.data.items.ids[test.item[mine]])
        ratings.append(test.rating[mine].astype(float))
    return items, ratings


def _median_seconds(call, repeats: int) -> float:
    call()  # compiles
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        call()
        times.append(time.perf_counter() - tic)
    return float(np.median(times))


def bench(path: str, n_users: int, n_items: int, repeats: int, N: int = 10) -> dict:
    from recjax.runs import Run

    run = Run.open(path)
    items, ratings = new_users(run, n_users, n_items)
    one = _median_seconds(lambda: run.recommend(new_user_items=items[0], new_user_ratings=ratings[0], N=N),
                          repeats)
    many = _median_seconds(lambda: run.recommend(new_user_items=items, new_user_ratings=ratings, N=N), 3)
    batch = run.recommend(new_user_items=items, new_user_ratings=ratings, N=N)
    for u in range(0, n_users, max(n_users // 20, 1)):  # a sample, against one at a time
        alone = run.recommend(new_user_items=items[u], new_user_ratings=ratings[u], N=N)
        assert list(batch.ids[u]) == list(alone.ids), (path, u)
        np.testing.assert_allclose(batch.scores[u], alone.scores, rtol=1e-4, atol=1e-5)
    dims = run.model_config.embedding_dim
    return {"run": path, "model": run.train_config.model, "factors": dims, "one_ms": one * 1e3,
            "many_s": many, "users_per_s": n_users / many}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders of families that fold users in")
    parser.add_argument("--users", type=int, default=1000, help="users in the batched call")
    parser.add_argument("--items", type=int, default=20, help="rated items per new user")
    parser.add_argument("--repeats", type=int, default=200, help="single-user calls timed")
    args = parser.parse_args(argv)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.2f}")
    print("| run | model | factors | one user (ms) | 1 call of users (s) | users/s |")
    print("|---|---|---|---|---|---|")
    for path in args.runs:
        r = bench(path, args.users, args.items, args.repeats)
        print(f"| {r['run']} | {r['model']} | {r['factors']} | {r['one_ms']:.2f} | {r['many_s']:.3f} "
              f"({args.users}) | {r['users_per_s']:,.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
