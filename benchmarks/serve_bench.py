"""Serving throughput and latency: ``python -m recjax serve`` under concurrent clients.

For batching on (the defaults: 2 ms window, 256 rows) and off (``--batch-window-ms 0
--max-batch 1``: one model call per request), a server process is started on
127.0.0.1 (an ephemeral port) with an MF run and a pair run; closed-loop clients
(each one keep-alive connection, sending its next request when the last answer
arrives) then drive

* ``POST /recommend`` on the MF run, one user per request, ``N`` = 10;
* ``POST /models/pair/invocations``: Object2Vec pair scores, one (user, movie) pair
  per request;
* ``POST /recommend`` with ``new_user_items`` (``fold_in``): a new user per request,
  ``--fold-in-items`` (20) rated movies each, folded into the MF run and (``--als``)
  an ALS run;
* ``mixed``: half the clients ask plain ``/recommend``, half fold-in requests, at
  once; each half's latencies reported apart (does fold-in slow plain requests?);

at concurrency 1, 8 and 64, each case for at most ``--seconds`` seconds and
``--requests`` requests after a short warm-up. Reported: requests/s (= users/s for
/recommend), p50 / p99 latency, and the
CPU seconds used by the server and by the clients. Every answer is checked for
status 200, and a sample of them against ``Run.recommend`` / ``predict.respond``
called directly: a fast wrong answer fails the benchmark.

The clients speak HTTP/1.1 over asyncio streams directly (a few microseconds per
request) so that on a 2-core machine they leave the server as much CPU as
possible; they share the machine with it all the same.

::

    python -m recjax train --epochs 3 --out /tmp/bench/mf            # README's main job
    python -m recjax train --model pair --epochs 3 --out /tmp/bench/pair
    python -m recjax train --model als --embedding-dim 128 --refit --out /tmp/bench/als
    python benchmarks/serve_bench.py --mf /tmp/bench/mf --pair /tmp/bench/pair --als /tmp/bench/als \
        --json /tmp/serve.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- server
class Server:
    """``python -m recjax serve ...`` in a subprocess; its JSON log on a file."""

    def __init__(self, runs: list[str], *flags: str, log: Path, timeout: float = 180) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
        env.setdefault("JAX_PLATFORMS", "cpu")
        self.log_path = log
        self._log = open(log, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "recjax", "serve", *runs, "--port", "0", *flags],
            stdout=subprocess.DEVNULL, stderr=self._log, env=env)
        self.port = self._wait(timeout)

    def _wait(self, timeout: float) -> int:
        import urllib.request

        deadline, port = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log_path.read_text()[-3000:]}")
            if port is None:
                found = re.search(r'"event": "listening".*?"port": (\d+)', self.log_path.read_text())
                port = int(found.group(1)) if found else None
            if port is not None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                        if r.status == 200:
                            return port
                except OSError:
                    pass
            time.sleep(0.2)
        raise TimeoutError(f"the server was not ready within {timeout} s")

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
        self._log.close()


# ----------------------------------------------------------------------------- clients
async def _client(port: int, path: str, bodies: list[bytes], start: int, step: int,
                  stop_at: float, budget: list[int], latencies: list[float],
                  answers: dict[int, bytes], sample_every: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Accept: application/json\r\n").encode()
    k = start
    try:
        while time.monotonic() < stop_at and budget[0] > 0:
            budget[0] -= 1
            body = bodies[k % len(bodies)]
            tic = time.perf_counter()
            writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            answer = await reader.readexactly(length)
            latencies.append(time.perf_counter() - tic)
            if not status_line.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"{path}: {status_line!r} {answer[:300]!r}")
            if k % sample_every == 0:
                answers[k % len(bodies)] = answer
            k += step
    finally:
        writer.close()


async def load(port: int, path: str, bodies: list[bytes], concurrency: int, seconds: float,
               requests: int, warmup: float = 0.5) -> dict[str, Any]:
    """Closed-loop load: ``concurrency`` clients for ``seconds`` or ``requests`` in all."""
    scratch: list[float] = []
    stop = time.monotonic() + warmup
    await asyncio.gather(*(_client(port, path, bodies, c, concurrency, stop, [10**9], scratch, {}, 10**9)
                           for c in range(concurrency)))
    latencies: list[float] = []
    answers: dict[int, bytes] = {}
    budget = [requests]
    tic = time.perf_counter()
    stop = time.monotonic() + seconds
    await asyncio.gather(*(_client(port, path, bodies, c, concurrency, stop, budget, latencies,
                                   answers, 7) for c in range(concurrency)))
    wall = time.perf_counter() - tic
    lat = np.asarray(latencies) * 1000
    return {"requests": len(lat), "seconds": wall, "rps": len(lat) / wall,
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "answers": answers}


async def load_mixed(port: int, halves: list[tuple[str, list[bytes]]], concurrency: int, seconds: float,
                     requests: int, warmup: float = 0.5) -> list[dict[str, Any]]:
    """Closed-loop load from two groups of ``concurrency // 2`` clients at once, each group on
    its own (path, bodies); one result per group."""
    half = max(concurrency // 2, 1)
    scratch: list[float] = []
    stop = time.monotonic() + warmup
    await asyncio.gather(*(_client(port, path, bodies, c, half, stop, [10**9], scratch, {}, 10**9)
                           for path, bodies in halves for c in range(half)))
    latencies: list[list[float]] = [[] for _ in halves]
    answers: list[dict[int, bytes]] = [{} for _ in halves]
    budgets = [[requests // 2] for _ in halves]
    tic = time.perf_counter()
    stop = time.monotonic() + seconds
    await asyncio.gather(*(_client(port, path, bodies, c, half, stop, budgets[g], latencies[g], answers[g], 7)
                           for g, (path, bodies) in enumerate(halves) for c in range(half)))
    wall = time.perf_counter() - tic
    out = []
    for lat, ans in zip(latencies, answers):
        lat_ms = np.asarray(lat) * 1000
        out.append({"requests": len(lat_ms), "seconds": wall, "rps": len(lat_ms) / wall,
                    "p50_ms": float(np.percentile(lat_ms, 50)), "p99_ms": float(np.percentile(lat_ms, 99)),
                    "answers": ans})
    return out


def fold_in_bodies(run: Any, n: int, n_items: int, seed: int = 0) -> list[tuple[list, list]]:
    """``n`` new users, each ``n_items`` (raw movie id, rating) pairs of a training user
    with that many ratings (seeded)."""
    train = run.splits["train"]
    counts = np.bincount(train.user, minlength=run.data.n_users)
    rng = np.random.default_rng(seed)
    out = []
    for u in rng.choice(np.flatnonzero(counts >= n_items), n):
        mine = np.flatnonzero(train.user == u)[:n_items]
        out.append(([int(i) for i in run.data.items.ids[train.item[mine]]],
                    [float(r) for r in train.rating[mine]]))
    return out


# ----------------------------------------------------------------------------- checks
def check_recommend(run: Any, users: np.ndarray, answers: dict[int, bytes]) -> int:
    for k, raw in answers.items():
        (got,) = json.loads(raw)["recommendations"]
        want = run.recommend(users[k : k + 1], N=10)
        assert got["user"] == int(users[k])
        assert got["items"] == want.ids[0].tolist(), (got, want)
        np.testing.assert_allclose(got["scores"], want.scores[0], rtol=1e-6)
    return len(answers)


def check_fold_in(run: Any, users: list[tuple[list, list]], answers: dict[int, bytes]) -> int:
    for k, raw in answers.items():
        (got,) = json.loads(raw)["recommendations"]
        items, ratings = users[k]
        want = run.recommend(new_user_items=items, new_user_ratings=ratings, N=10)
        assert got["items"] == want.ids.tolist(), (got, want)
        np.testing.assert_allclose(got["scores"], want.scores, rtol=1e-4, atol=1e-5)
    return len(answers)


def check_invocations(trained: Any, pairs: list[tuple[int, int]], answers: dict[int, bytes]) -> int:
    from recjax.predict import respond

    keys = sorted(answers)
    want = respond(trained, {"instances": [{"in0": [pairs[k][0]], "in1": [pairs[k][1]]} for k in keys]})
    for k, row in zip(keys, want["predictions"]):
        (got,) = json.loads(answers[k])["predictions"]
        np.testing.assert_allclose(got["scores"], row["scores"], rtol=1e-5)
    return len(keys)


# ----------------------------------------------------------------------------- main
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mf", required=True, help="MF run folder (/recommend)")
    parser.add_argument("--pair", required=True, help="pair run folder (/invocations)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--seconds", type=float, default=5.0, help="longest measurement per case")
    parser.add_argument("--requests", type=int, default=20000, help="most requests per case")
    parser.add_argument("--modes", nargs="+", default=["on", "off"], choices=["on", "off"])
    parser.add_argument("--als", help="ALS run folder (/models/NAME/recommend with new users)")
    parser.add_argument("--endpoints", nargs="+", default=["recommend", "invocations", "fold_in", "mixed"],
                        choices=["recommend", "invocations", "fold_in", "mixed"])
    parser.add_argument("--fold-in-items", type=int, default=20, help="rated movies per new user")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--log-dir", default="/tmp", help="where the servers' logs go")
    args = parser.parse_args(argv)

    from recjax.predict import load_trained
    from recjax.runs import Run

    mf, trained = Run.open(args.mf), load_trained(args.pair)
    rng = np.random.default_rng(0)
    users = rng.permutation(mf.data.users.ids)
    rec_bodies = [json.dumps({"users": [int(u)], "N": 10}).encode() for u in users]
    pair_users = rng.choice(trained.data.users.ids, 2000)
    pair_items = rng.choice(trained.data.items.ids, 2000)
    pairs = [(int(u), int(i)) for u, i in zip(pair_users, pair_items)]
    inv_bodies = [json.dumps({"instances": [{"in0": [u], "in1": [i]}]}).encode() for u, i in pairs]
    flags = {"on": [], "off": ["--batch-window-ms", "0", "--max-batch", "1"]}
    folding = [("mf", mf, "/recommend")]
    if args.als:
        als = Run.open(args.als)
        folding.append(("als", als, f"/models/{Path(args.als).name}/recommend"))
    new_users = {name: fold_in_bodies(run, 2000, args.fold_in_items) for name, run, _ in folding}
    fold_bodies = {name: [json.dumps({"new_user_items": i, "new_user_ratings": r, "N": 10}).encode()
                          for i, r in new_users[name]] for name, _, _ in folding}
    checks = {"/recommend": lambda a: check_recommend(mf, users, a),
              "invocations": lambda a: check_invocations(trained, pairs, a)}
    # (label, [(path, bodies, check)]): one group of clients, or two at once (mixed)
    cases = [("recommend", [("/recommend", rec_bodies, checks["/recommend"])])] * ("recommend" in args.endpoints)
    cases += [("invocations", [(f"/models/{Path(args.pair).name}/invocations", inv_bodies,
                                checks["invocations"])])] * ("invocations" in args.endpoints)
    for name, run, path in folding:
        fold = (path, fold_bodies[name], lambda a, run=run, name=name: check_fold_in(run, new_users[name], a))
        cases += [(f"fold_in {name}", [fold])] * ("fold_in" in args.endpoints)
        cases += [(f"mixed {name}", [("/recommend", rec_bodies, checks["/recommend"]), fold])] * (
            "mixed" in args.endpoints)
    served = [args.mf, args.pair] + ([args.als] if args.als else [])
    results = []
    load_before = os.getloadavg()[0]
    for mode in args.modes:
        server = Server(served, *flags[mode], log=Path(args.log_dir) / f"serve_bench_{mode}.log")
        try:
            for label, groups in cases:
                for conc in args.concurrency:
                    cpu0, own0 = server.cpu_seconds(), resource.getrusage(resource.RUSAGE_SELF)
                    if len(groups) == 1:
                        outs = [asyncio.run(load(server.port, groups[0][0], groups[0][1], conc, args.seconds,
                                                 args.requests))]
                    else:
                        outs = asyncio.run(load_mixed(server.port, [g[:2] for g in groups], conc, args.seconds,
                                                      args.requests))
                    cpu1, own1 = server.cpu_seconds(), resource.getrusage(resource.RUSAGE_SELF)
                    for (path, _, check), out in zip(groups, outs):
                        checked = check(out.pop("answers"))
                        row = {"mode": mode, "case": label, "path": path, "concurrency": conc, **out,
                               "server_cpu_s": cpu1 - cpu0,
                               "client_cpu_s": (own1.ru_utime + own1.ru_stime) - (own0.ru_utime + own0.ru_stime),
                               "checked": checked}
                        results.append(row)
                        print(f"{mode:>3} {label:<12} {path:<26} c={conc:<3} {row['rps']:8.0f} req/s  p50 "
                              f"{row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:8.1f} ms  server cpu "
                              f"{row['server_cpu_s']:.1f} s / {row['seconds']:.1f} s  ({checked} answers "
                              f"checked)", flush=True)
        finally:
            server.stop()
    import importlib.util

    import uvicorn

    parser_name = "httptools" if importlib.util.find_spec("httptools") else "h11"
    machine = (f"{_cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
               f"uvicorn {uvicorn.__version__} with {parser_name}, load average before "
               f"{load_before:.2f}")
    print(f"\n{machine}\n")
    print("| case | endpoint | batching | concurrency | requests/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['case']} | `{r['path']}` | {r['mode']} | {r['concurrency']} | {r['rps']:,.1f} | "
              f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "argv": sys.argv,
                                               "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    sys.exit(main())
