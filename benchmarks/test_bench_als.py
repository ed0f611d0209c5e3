"""iALS seconds per iteration: recjax (``--model ials``'s sweep, 64 factors, CG 3 steps)
against implicit 0.7's ``implicit.cpu.als.AlternatingLeastSquares`` (64 factors, CG,
2 threads, BLAS single-threaded inside them as implicit advises), the same number of
iterations on the same interactions.

Full run::

    RECJAX_DATA=/path/to/movielens python -m pytest benchmarks/test_bench_als.py \
        --benchmark-enable -q -s

Shapes: ml-latest-small (the real ratings, every rating an interaction) and the
synthetic generator at ml-20m's catalogue (138,493 users x 26,744 items) with
``RECJAX_BENCH_ALS_RATINGS`` interactions (default 2,000,000: a tenth of ml-20m's 20M,
so that generating the data and one iteration fit this 2-core machine; set 20000000
for the whole). Without ``--benchmark-enable`` (CI's ``--benchmark-disable``) both
libraries run one iteration on a tiny synthetic set, as a smoke test. recjax's compile
is outside the timer (``extra_info["compile_s"]``); each library runs ``ROUNDS`` rounds
of the iterations (implicit: a whole ``fit``, from a fresh start) and reports its
fastest round per iteration; each benchmark checks the factors
are finite and moved. The two objectives differ (recjax: Rendle et al.'s alpha0-weighted
iALS; implicit: Hu et al.'s confidence 1 + r): this times the iterations, not the models.
"""

from __future__ import annotations

import os
import time
from functools import cache

import jax
import numpy as np
import pytest
import scipy.sparse as sp
from _common import full_mode
from flax import nnx

from recjax.data.synthetic import synthetic_ratings
from recjax.models.als import IALS, IALSConfig

FACTORS, THREADS = 64, 2
ITERATIONS = {"ml-latest-small": 5, "ml20m": 3, "smoke": 1}
#: timed rounds of ``ITERATIONS`` per library: seconds per iteration is the fastest round's (on a
#: shared machine one round swings 2x with the other jobs' load)
ROUNDS = {"ml-latest-small": 3, "ml20m": 2, "smoke": 1}


@cache
def _interactions(shape: str) -> sp.csr_matrix:
    """users x items 0/1 CSR of a shape."""
    if shape == "ml-latest-small":
        from recjax.data.movielens import load_movielens

        try:
            data = load_movielens("ml-latest-small", allow_download=False)
        except (FileNotFoundError, OSError, ValueError) as err:
            pytest.skip(f"ml-latest-small not found ({err}); set RECJAX_DATA")
    elif shape == "ml20m":
        n = int(os.environ.get("RECJAX_BENCH_ALS_RATINGS", 2_000_000))
        data, _ = synthetic_ratings(138_493, 26_744, n, seed=0)
    else:
        data, _ = synthetic_ratings(120, 80, 2_000, seed=0)
    m = sp.csr_matrix((np.ones(len(data.user), np.float32), (data.user, data.item)),
                      shape=(data.n_users, data.n_items))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def _shapes(config) -> list[str]:
    return ["ml-latest-small", "ml20m"] if full_mode(config) else ["smoke"]


def pytest_generate_tests(metafunc):
    if "shape" in metafunc.fixturenames:
        metafunc.parametrize("shape", _shapes(metafunc.config))


def test_recjax_ials(benchmark, shape):
    x, n = _interactions(shape), ITERATIONS[shape]
    user, item = x.nonzero()
    module = IALS(IALSConfig(embedding_dim=FACTORS, solver="cg", cg_steps=3), x.shape[0], x.shape[1],
                  rngs=nnx.Rngs(0))
    params = nnx.to_pure_dict(nnx.state(module, nnx.Param))
    data = jax.device_put(module.sweep_data({"user": user, "item": item}))
    tic = time.perf_counter()
    sweep = jax.jit(module.sweep).lower(params, data).compile()
    benchmark.extra_info.update(compile_s=time.perf_counter() - tic, iterations=n, nnz=int(x.nnz))
    start = np.asarray(params["item_factors"])

    rounds = []

    def run():
        tic, p = time.perf_counter(), params
        for _ in range(n):
            p, metrics = sweep(p, data)
        p = jax.block_until_ready(p)
        rounds.append(time.perf_counter() - tic)
        return p

    out = benchmark.pedantic(run, rounds=ROUNDS[shape], iterations=1)
    benchmark.extra_info.update(seconds_per_iteration=min(rounds) / n, rounds=len(rounds))
    assert np.isfinite(np.asarray(out["item_factors"])).all()
    assert not np.allclose(np.asarray(out["item_factors"]), start)
    print(f"\nrecjax iALS {shape}: {benchmark.extra_info['seconds_per_iteration']:.3f} s/iteration "
          f"(best of {len(rounds)} rounds of {n} iterations, compile {benchmark.extra_info['compile_s']:.1f} s)")


def test_implicit_als(benchmark, shape):
    pytest.importorskip("implicit")
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    x, n = _interactions(shape), ITERATIONS[shape]
    rounds = []
    # implicit's own advice (the RuntimeWarning its constructor gives otherwise): BLAS
    # single-threaded inside its THREADS OpenMP threads; a 2-thread OpenBLAS under them made
    # its times swing 1.5x between runs
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(factors=FACTORS, iterations=n, use_cg=True, num_threads=THREADS,
                                        calculate_training_loss=False, random_state=0)

        def run():
            tic = time.perf_counter()
            model.fit(x, show_progress=False)
            rounds.append(time.perf_counter() - tic)
            return model

        benchmark.pedantic(run, rounds=ROUNDS[shape], iterations=1)
    benchmark.extra_info.update(seconds_per_iteration=min(rounds) / n, rounds=len(rounds), iterations=n,
                                nnz=int(x.nnz))
    assert np.isfinite(model.item_factors).all()
    print(f"\nimplicit ALS {shape}: {benchmark.extra_info['seconds_per_iteration']:.3f} s/iteration "
          f"(best of {len(rounds)} rounds of {n} iterations)")
