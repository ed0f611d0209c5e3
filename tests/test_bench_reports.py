"""The benchmark report scripts turn pytest-benchmark JSON into the README tables;
the training benchmark refuses sizes it does not know."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bench(median: float, **info) -> dict:
    return {"stats": {"median": median}, "extra_info": info}


@pytest.fixture
def combined_json(tmp_path) -> Path:
    """A retrieval run and a training run in one file, as `--benchmark-only` writes it."""
    flops = 2.0 * 100 * 1000 * 64
    data = {"machine_info": {"cpu": {"brand_raw": "Test CPU", "count": 2}, "python_version": "3.11"},
            "benchmarks": [
                _bench(0.5, contender="recjax", size="1kx64", k=10, metric="dot", queries=100,
                       flops=flops, peak_mib=1.0),
                _bench(1.0, contender="faiss", size="1kx64", k=10, metric="dot", queries=100,
                       flops=flops, peak_mib=2.0),
                _bench(0.001, d=64, flops=1e9),  # sgemm ceiling: 1000 GFLOP/s
                _bench(0.002, model="mf", shape="ml100k", kind="step", examples=128,
                       compile_s=0.5, peak_mib=0.0, backend="cpu", device="cpu"),
                _bench(2.0, model="mf", shape="ml100k", kind="epoch", examples=1000,
                       compile_s=0.7, peak_mib=12.0, backend="cpu", device="cpu"),
            ]}
    path = tmp_path / "all.json"
    path.write_text(json.dumps(data))
    return path


def test_retrieval_report_rates_ratios_and_ceiling_fraction(combined_json, capsys):
    report = _script("retrieval_report")
    results, ceiling, machine = report.load(str(combined_json))
    assert ceiling == {64: pytest.approx(1000.0)}
    row = results[("1kx64", 10, "dot")]
    assert row["recjax"]["qps"] == pytest.approx(200.0) and row["faiss"]["qps"] == pytest.approx(100.0)
    report.main(str(combined_json))
    out = capsys.readouterr().out
    # 12.8 MFLOP in 0.5 s = 0.0256 GFLOP/s = 0.00256% of the ceiling -> "0%"; ratio 2x
    assert "Test CPU, 2 cores" in out
    assert "| 1kx64, 100 | 10 | dot | 200 (0%) | - | - | 100 (0%) | 2.00x |" in out


def test_training_report_rows(combined_json, capsys):
    report = _script("training_report")
    rows, _ = report.load([str(combined_json)])
    assert set(rows) == {("ml100k", "mf")}
    report.main([str(combined_json)])
    out = capsys.readouterr().out
    assert "JAX on cpu (cpu)" in out
    assert "| ml100k | mf | 2.00 ms (128) | 64,000 | 2.00 s (1,000) | 500 | 0.7 s | 12 |" in out


def test_training_benchmark_rejects_unknown_sizes(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    bench = _script("test_bench_training")

    class FullConfig:  # what pytest's config answers under --benchmark-only
        def getoption(self, name):
            return name == "benchmark_only"

    monkeypatch.setenv("RECJAX_BENCH_SIZES", "ml100k")
    assert bench.shapes(FullConfig()) == ["ml100k"]
    monkeypatch.setenv("RECJAX_BENCH_SIZES", "ml100k,ml1b")
    with pytest.raises(ValueError, match=r"RECJAX_BENCH_SIZES: unknown \['ml1b'\]"):
        bench.shapes(FullConfig())


def test_main_job_report_judges_each_jobs_target():
    report = _script("main_job_report")
    rows = {"recjax": {"median": 20.0, "test_rmse": 0.9267, "command": "train --quiet", "rounds": 3},
            "recjax als": {"median": 6.0, "test_rmse": 0.9287, "command": "train --model als", "rounds": 3},
            "surprise": {"median": 2.0, "test_rmse": 0.9288, "command": "SVD", "rounds": 5}}
    lines = report.table(rows).splitlines()
    assert lines[2].startswith("| recjax |") and lines[2].endswith("| 10.00x |")
    assert "| recjax als | `train --model als` | 6.00 s (3) | 0.9287 | 3.00x |" in lines
    assert report.target(rows) == ("Target (recjax <= 5x Surprise at test RMSE <= 0.9267): "
                                   "not met (10.00x, 0.9267).")
    # 3x exactly is within the target, but the RMSE is not
    assert report.target(rows, "recjax als").endswith("not met (3.00x, 0.9287).")
    rows["recjax als"]["test_rmse"] = 0.925
    assert report.target(rows, "recjax als").endswith(": met (3.00x, 0.9250).")
    del rows["surprise"]
    assert report.target(rows).endswith("needs both benchmarks in one run.")
