"""Two ``tune`` processes on one study, one of them killed (SIGKILL) mid-trial and resumed (issue #24).

1. ``python -m recjax tune --model mf ... --trials N --out STUDY`` creates the study;
   once its storage holds the study (``tune.json`` alone is not enough: it is written
   before the study is created in ``study.db``), a second process joins it with the
   same flags and ``--resume``;
2. once at least ``--kill-after`` trials are finished and both processes are mid-trial
   (two RUNNING trials, each past its first reported epoch), one process gets
   ``kill -9``; it is started again at once with ``--resume``; both then run to the end;
3. the storage (``optuna.load_study`` on ``STUDY/study.db``) is checked: N finished
   (complete or pruned) trials or one more (each worker stops once N are finished; the
   other may be finishing one), one run folder per trial (``trials/trial-NNNN``, its own
   number), every complete trial's folder opens with ``recjax.runs.Run.open`` (verified
   against its sha256s), holds the trial's settings and its final ``val_rmse`` is the
   trial's value; the trials finished before the kill are unchanged; no two finished
   trials share settings; the killed trial is FAIL (its heartbeat went stale) and a later
   trial retried its settings; no trial is left RUNNING.

Printed: the machine, one line per check, PASS or FAIL; ``result.json`` in ``--out``;
exit status 1 on a failed check. Trials train on ml-100k's ub split with 64 factors
(the searched space is the mf default's less ``embedding_dim``), 15 epochs at most.

::

    RECJAX_DATA=... python benchmarks/tune_workers_bench.py --out /tmp/tune-workers
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna

ROOT = Path(__file__).resolve().parents[1]
SHARED = ["--dataset", "ml-100k", "--split", "ub", "--embedding-dim", "64", "--epochs", "15"]
# the mf default space (recjax/tuning/spaces/mf.toml) less embedding_dim, fixed at 64 by SHARED
SPACE = """[train]
learning_rate = { low = 0.05, high = 2.0, log = true }
[model]
l2 = { low = 0.003, high = 1.0, log = true }
init_std = { low = 0.001, high = 0.1, log = true }
"""
FINISHED = ("COMPLETE", "PRUNED")


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def _start(command: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as f:
        return subprocess.Popen(command, env=_env(), stdout=f, stderr=subprocess.STDOUT)


def _states(db: Path) -> list[tuple[int, str, int]]:
    """(number, state, epochs reported) of every trial in the storage, read-only; [] before
    the study exists."""
    if not db.is_file():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as con:
            return con.execute("select t.number, t.state, (select count(*) from trial_intermediate_values v "
                               "where v.trial_id = t.trial_id) from trials t order by t.number").fetchall()
    except sqlite3.OperationalError:  # the schema is being created
        return []


def _wait(what: str, until: Any, processes: list[subprocess.Popen], deadline: float) -> None:
    """Poll ``until()`` every 0.1 s; fail if a process ends first or the deadline passes."""
    while not until():
        ended = [p.pid for p in processes if p.poll() is not None]
        if ended:
            raise RuntimeError(f"a worker (pid {ended[0]}) ended before {what}; see its log in --out")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _final_val(folder: Path, key: str) -> float:
    """``key`` of metrics.jsonl's ``final`` record, read directly."""
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    finals = [r for r in map(json.loads, filter(str.strip, lines)) if r.get("event") == "final"]
    return float(finals[-1][key])


def _verify(study_dir: Path, trials: int, killed: int | None,
            before: dict[int, tuple]) -> list[tuple[str, bool, str]]:
    """The checks on the storage and the run folders: [(name, passed, detail)]."""
    from recjax.runs import Run

    study = optuna.load_study(study_name="recjax-mf", storage=f"sqlite:///{study_dir / 'study.db'}")
    key = json.loads((study_dir / "tune.json").read_text())["metric"]
    all_trials = study.get_trials(deepcopy=False)
    by_state: dict[str, list[Any]] = {}
    for t in all_trials:
        by_state.setdefault(t.state.name, []).append(t)
    finished = [t for t in all_trials if t.state.name in FINISHED]
    checks = []
    counts = ", ".join(f"{len(v)} {k}" for k, v in sorted(by_state.items()))
    checks.append(("finished trials", trials <= len(finished) <= trials + 1,
                   f"{len(finished)} complete or pruned for --trials {trials} (N or N+1: a worker stops once "
                   f"N are finished, the other may be finishing one); all {len(all_trials)}: {counts}"))
    runs = [t.user_attrs.get("run") for t in finished]
    own = all(r == f"trials/trial-{t.number:04d}" for r, t in zip(runs, finished))
    checks.append(("one run folder per trial", len(set(runs)) == len(runs) and own
                   and len({t.number for t in all_trials}) == len(all_trials),
                   f"{len(set(runs))} distinct run folders for {len(runs)} finished trials, each named by its own "
                   f"trial number: {own}; trial numbers unique"))
    folders = sorted(p.name for p in (study_dir / "trials").iterdir())
    started = sorted(f"trial-{t.number:04d}" for t in all_trials if t.state.name != "WAITING")
    checks.append(("no stray run folder", folders == started,
                   f"{len(folders)} folders under trials/ = the {len(started)} trials that started"))
    bad, worst = [], 0.0
    for t in by_state.get("COMPLETE", []):
        folder = study_dir / t.user_attrs["run"]
        try:
            run = Run.open(folder)
        except Exception as err:  # noqa: BLE001 - any refusal is the finding
            bad.append(f"trial {t.number}: {err}")
            continue
        configs = {"train": run.train_config, "model": run.model_config}
        settings = {k: getattr(configs[k.split(".")[0]], k.split(".", 1)[1]) for k in t.params}
        if settings != t.params:
            bad.append(f"trial {t.number}: run settings {settings} != trial params {t.params}")
        value = _final_val(folder, key)
        worst = max(worst, abs(value - t.value))
        if not math.isclose(value, t.value, rel_tol=1e-12):
            bad.append(f"trial {t.number}: {key} {value} in metrics.jsonl, {t.value} in the storage")
    checks.append(("complete runs open, match", not bad,
                   f"{len(by_state.get('COMPLETE', []))} complete trials: Run.open verified, settings = params, "
                   f"value = metrics.jsonl final {key} (largest difference {worst:.3g})" + "; ".join([""] + bad)))
    changed = [n for n, old in before.items() if _snapshot(study.trials[n]) != old]
    checks.append(("finished before the kill unchanged", not changed and len(before) > 0,
                   f"{len(before)} trials finished at the kill, {len(changed)} changed since {changed or ''}"))
    by_params: dict[tuple, list[int]] = {}
    for t in finished:
        by_params.setdefault(tuple(sorted(t.params.items())), []).append(t.number)
    twice = ", ".join("/".join(map(str, n)) for n in by_params.values() if len(n) > 1)
    checks.append(("no settings run twice", not twice,
                   f"{len(by_params)} distinct settings among {len(finished)} finished trials"
                   + (f"; the same settings in trials {twice}" if twice else "")))
    left = [t.number for t in all_trials if t.state.name == "RUNNING"]
    checks.append(("none left running", not left, f"RUNNING at the end: {left or 'none'}"))
    if killed is None:
        checks.append(("killed trial failed and retried", False, "no killed trial identified"))
    else:
        dead = study.trials[killed]
        retries = [t for t in all_trials if t.system_attrs.get("failed_trial") == killed]
        same = [t for t in retries if t.params == dead.params]
        detail = (f"trial {killed} (running in the killed process) is {dead.state.name}; retried as "
                  + (", ".join(f"trial {t.number} ({t.state.name}, same params: {t.params == dead.params})"
                               for t in retries) or "no trial"))
        checks.append(("killed trial failed and retried", dead.state.name == "FAIL" and len(same) == 1
                       and same[0].state.name in FINISHED, detail))
    return checks


def _snapshot(trial: Any) -> tuple:
    return trial.state.name, trial.value, tuple(sorted(trial.params.items())), trial.user_attrs.get("run")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--kill", choices=("first", "second"), default="first",
                        help="which process gets kill -9: the study's creator or the one that joined it")
    parser.add_argument("--kill-after", type=int, default=3, help="finished trials before the kill")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds for the whole run")
    parser.add_argument("--out", required=True, help="scratch folder (emptied)")
    parser.add_argument("shared", nargs=argparse.REMAINDER,
                        help=f"-- then flags every trial shares (default: {' '.join(SHARED)})")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    shared = [f for f in args.shared if f != "--"] or SHARED
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    study_dir, db = out / "study", out / "study" / "study.db"
    (out / "space.toml").write_text(SPACE)
    command = [sys.executable, "-m", "recjax", "tune", "--model", "mf", "--trials", str(args.trials),
               "--space", str(out / "space.toml"), "--out", str(study_dir), *shared]
    load = os.getloadavg()
    deadline = time.monotonic() + args.timeout
    tic = time.perf_counter()
    first = _start(command, out / "first.log")
    _wait("the study is in its storage", lambda: len(_states(db)) >= 1, [first], deadline)
    joined = time.perf_counter() - tic
    second = _start(command + ["--resume"], out / "second.log")
    workers = {"first": first, "second": second}

    def mid_trial() -> bool:
        states = _states(db)
        running = [r for r in states if r[1] == "RUNNING"]
        return (sum(r[1] in FINISHED for r in states) >= args.kill_after and len(running) == 2
                and all(r[2] >= 1 for r in running))

    _wait("both workers mid-trial", mid_trial, list(workers.values()), deadline)
    states = _states(db)
    victim = workers[args.kill]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = time.perf_counter() - tic
    running = [n for n, s, _ in states if s == "RUNNING"]
    workers[args.kill] = _start(command + ["--resume"], out / f"{args.kill}-resumed.log")
    study = optuna.load_study(study_name="recjax-mf", storage=f"sqlite:///{db}")
    before = {n: _snapshot(study.trials[n]) for n, s, _ in states if s in FINISHED}
    codes = {}
    for name, process in workers.items():
        try:
            codes[name] = process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            codes[name] = process.wait()
    seconds = time.perf_counter() - tic
    # the killed process's trial: of the two running at the kill, the one its survivor did not finish
    final = {t.number: t.state.name for t in study.get_trials(deepcopy=False)}
    candidates = [n for n in running if final[n] == "FAIL"]
    killed = candidates[0] if len(candidates) == 1 else None
    checks = [("workers exit 0", all(c == 0 for c in codes.values()),
               f"killed one {victim.returncode} (SIGKILL), then exit codes {codes}")]
    checks += _verify(study_dir, args.trials, killed, before)
    passed = all(ok for _, ok, _ in checks)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average before "
          f"{load[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    print(f"second worker joined at {joined:.1f} s; kill -9 of the {args.kill} at {killed_at:.1f} s "
          f"(trials {running} running, {len(before)} finished); all done at {seconds:.1f} s")
    for name, ok, detail in checks:
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
    print("PASS" if passed else "FAIL")
    (out / "result.json").write_text(json.dumps({
        "passed": passed, "trials": args.trials, "kill": args.kill, "killed_trial": killed,
        "running_at_kill": running, "finished_at_kill": len(before), "joined_seconds": joined,
        "killed_seconds": killed_at, "seconds": seconds, "exit_codes": codes, "load_before": load[0],
        "checks": [{"name": n, "passed": ok, "detail": d} for n, ok, d in checks], "argv": sys.argv},
        indent=2) + "\n")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
