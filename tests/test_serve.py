"""``python -m recjax serve``: the real server on 127.0.0.1, a real HTTP client.

Three tiny runs are trained once for the module: MF and pair on a synthetic dataset
(300 users x 400 items; a few items carry MovieLens titles so that README's curl
examples run verbatim), and a Mult-DAE on string ids ("u0".., "i0"..). One
in-process server (uvicorn in a thread, an ephemeral port) serves the three as
``mf``, ``pair`` and ``dae``; every answer is compared with the run's own methods
(``Run.recommend`` / ``similar_items`` / ``predict``) or with the ``predict``
command's output. Subprocess servers cover the command line, the JSON log and
SIGTERM with a request in flight.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from _subprocess_env import ROOT, subprocess_env

from recjax.cli import main

pytestmark = pytest.mark.usefixtures("persistent_compile_cache")

README = Path(ROOT) / "README.md"
JSONL = "application/jsonlines"
TITLES = {50: "Star Wars (1977)", 172: "Empire Strikes Back, The (1980)",
          181: "Return of the Jedi (1983)", 242: "Kolya (1996)", 302: "L.A. Confidential (1997)"}


# ----------------------------------------------------------------------------- runs
def _synthetic_splits():
    from recjax.data import split_ratings, synthetic_ratings

    data, _ = synthetic_ratings(n_users=300, n_items=400, n_ratings=9000, seed=3)
    info = data.item_info.copy()
    for item, title in TITLES.items():
        info.loc[info["item_id"] == item, "title"] = title
    data = dataclasses.replace(data, item_info=info)
    for user in (186, 196):
        assert user in data.users
    for item in TITLES:
        assert item in data.items
    return split_ratings(data, "random", seed=0)


def _string_splits():
    from recjax.data import Ratings, split_ratings

    rng = np.random.default_rng(0)
    pairs = rng.choice(60 * 40, size=1500, replace=False)
    frame = pd.DataFrame({"user": [f"u{k}" for k in pairs // 40],
                          "item": [f"i{k}" for k in pairs % 40],
                          "rating": rng.integers(1, 6, len(pairs))})
    return split_ratings(Ratings.from_pandas(frame, rating_scale=(1, 5)), "random", seed=0)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """{name: run folder}: mf, pair (synthetic, int ids, titles) and dae (string ids)."""
    from recjax.config import RunConfig
    from recjax.experiment import run
    from recjax.families import MODELS
    from recjax.models.mf import MFConfig
    from recjax.models.pair import PairConfig

    root = tmp_path_factory.mktemp("serve")
    splits, strings = _synthetic_splits(), _string_splits()
    specs = {
        "mf": (RunConfig(epochs=2), MFConfig(embedding_dim=8), splits),
        "pair": (RunConfig(model="pair", epochs=1),
                 PairConfig(enc0_token_embedding_dim=4, enc1_token_embedding_dim=4, enc_dim=6,
                            mlp_dim=8), splits),
        "dae": (RunConfig(model="dae", epochs=1), MODELS["dae"].config(), strings),
    }
    out = {}
    for name, (cfg, model_cfg, parts) in specs.items():
        out[name] = root / name
        run(dataclasses.replace(cfg, quiet=True, out=str(out[name])), model_cfg, splits=parts)
    return out


@pytest.fixture(scope="module")
def runs(folders):
    from recjax.runs import Run

    return {name: Run.open(path) for name, path in folders.items()}


# ----------------------------------------------------------------------------- servers
class LiveServer:
    """uvicorn in a thread on 127.0.0.1 (an ephemeral port), serving ``app``."""

    def __init__(self, app) -> None:
        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False,
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)
        self.thread.start()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/ping", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError("the server did not become ready")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


class LogRecords(logging.Handler):
    """The ``recjax.serve`` log records (the per-request dicts)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, dict):
            self.records.append(dict(record.msg))


@pytest.fixture(scope="module")
def logs():
    logger = logging.getLogger("recjax.serve")
    handler, level = LogRecords(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture(scope="module")
def live(runs, logs):
    from recjax.serve import create_app

    app = create_app(runs, batch_window_ms=5, max_batch=64, max_body_bytes=64 * 1024,
                     max_instances=50)
    server = LiveServer(app)
    server.wait_ready()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(live):
    with httpx.Client(base_url=live.url, timeout=30) as c:
        yield c


def post(client, path: str, body, **headers) -> httpx.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(path, content=data, headers={"Content-Type": "application/json", **headers})


class SubprocessServer:
    """``python -m recjax serve ARGS --port 0``; stderr (the JSON log) kept in a file.
    It shares this module's persistent JAX compilation cache (its warm-up compiles
    what the in-process server already compiled)."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        import jax

        self.log = tmp_path / "server.log"
        self._file = open(self.log, "w")
        cache = jax.config.jax_compilation_cache_dir
        env = subprocess_env(**({"JAX_COMPILATION_CACHE_DIR": cache,
                       "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"} if cache else {}))
        self.process = subprocess.Popen([sys.executable, "-m", "recjax", "serve", *args, "--port", "0"],
                                        stdout=subprocess.PIPE, stderr=self._file, env=env)
        deadline, self.url = time.monotonic() + 120, None
        while time.monotonic() < deadline and self.process.poll() is None:
            found = re.search(r'"event": "listening".*"port": (\d+)', self.log.read_text())
            if found:
                self.url = f"http://127.0.0.1:{found.group(1)}"
                try:
                    if httpx.get(self.url + "/ping", timeout=2).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"the server did not start: {self.log.read_text()[-3000:]}")

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self._file.close()


# ----------------------------------------------------------------------------- readiness
def test_ping_and_models(client):
    assert client.get("/ping").json() == {"status": "ready", "models": ["mf", "pair", "dae"]}
    listed = client.get("/models").json()
    assert listed["default"] == "mf"
    ends = {m["name"]: m["endpoints"] for m in listed["models"]}
    assert all(v == "ok" for v in ends["mf"].values())
    refused = {name: {kind for kind, v in kinds.items() if v != "ok"}
               for name, kinds in ends.items()}
    # what each family declares (recjax.models.capabilities.Capabilities): pair runs fold in
    # no user, Mult-DAE scores no (user, item) pair nor answers /invocations
    # (recjax.predict.PAIR_MODELS)
    assert refused == {"mf": set(), "pair": {"fold_in"},
                       "dae": {"predict", "invocations", "embeddings"}}
    assert "cannot fold in" in ends["pair"]["fold_in"]
    assert "not (user, item) pairs" in ends["dae"]["predict"]
    assert client.get("/models/dae").json()["users"] == 60


def _query(run, query: str):
    """Call one of the run's queries (recjax.runs.QUERIES) on its first user and item."""
    user, item = run.data.users.ids[0], run.data.items.ids[0]
    if query == "recommend":
        return run.recommend(user, N=1)
    if query == "fold_in":
        high = run.data.rating_scale[1]
        return run.recommend(new_user_items=[item], new_user_ratings=[high], N=1)
    if query == "similar_items":
        return run.similar_items(item, N=1)
    return run.predict(user, item)


def test_declared_refusals_are_what_the_queries_do(runs):
    """Run.refusal (what the server lists, read from the family's declared capabilities)
    names exactly the queries that refuse when called, with their own message."""
    from recjax.runs import QUERIES

    for name, run in runs.items():
        for query in QUERIES:
            reason = run.refusal(query)
            if reason is None:
                _query(run, query)
            else:
                with pytest.raises(ValueError) as refused:
                    _query(run, query)
                assert str(refused.value) == reason, (name, query)
    assert [q for q in QUERIES if runs["pair"].refusal(q)] == ["fold_in"]
    assert [q for q in QUERIES if runs["dae"].refusal(q)] == ["predict"]


def test_ping_is_503_until_the_runs_are_warm(folders, monkeypatch):
    from recjax.serve import create_app
    from recjax.serve.endpoints import ServedRun

    release, original = threading.Event(), ServedRun.warm

    def slow_warm(self):
        release.wait(30)
        original(self)

    monkeypatch.setattr(ServedRun, "warm", slow_warm)
    server = LiveServer(create_app([folders["mf"]]))  # a path: opened with Run.open at start-up
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                ping = httpx.get(server.url + "/ping", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert ping.status_code == 503 and ping.json() == {"status": "loading"}
        early = httpx.post(server.url + "/recommend", json={"users": [1]})
        assert early.status_code == 503 and "loading" in early.json()["error"]
        release.set()
        server.wait_ready()
        answer = httpx.post(server.url + "/models/mf/recommend", json={"users": [1], "N": 2})
        assert answer.status_code == 200 and len(answer.json()["recommendations"][0]["items"]) == 2
    finally:
        release.set()
        server.stop()


# ----------------------------------------------------------------------------- answers
def _same_top(entry: dict, ids: np.ndarray, scores: np.ndarray) -> None:
    keep = np.isfinite(scores)
    assert entry["items"] == ids[keep].tolist()
    np.testing.assert_allclose(entry["scores"], scores[keep], rtol=1e-6)


def test_recommend_equals_run_recommend(client, runs):
    mf = runs["mf"]
    users = [196, 186, 7, 196]
    got = post(client, "/recommend", {"users": users, "N": 4}).json()["recommendations"]
    want = mf.recommend(np.asarray(users), N=4)
    assert [g["user"] for g in got] == users
    for entry, ids, scores in zip(got, want.ids, want.scores):
        _same_top(entry, ids, scores)
        assert entry["titles"] == [mf.data.item_titles(mf.data.items.index([i]))[0] for i in ids]
    # rated items allowed; candidates restricted (fewer candidates than N: only real ones)
    got = post(client, "/models/mf/recommend", {"users": [7], "N": 5, "filter_already_liked_items": False,
                                                "items": [50, 172, 181]}).json()["recommendations"]
    want = mf.recommend(np.asarray([7]), N=5, filter_already_liked_items=False, items=[50, 172, 181])
    _same_top(got[0], want.ids[0], want.scores[0])
    assert len(got[0]["items"]) == 3
    # string ids, a bag model
    dae = runs["dae"]
    got = post(client, "/models/dae/recommend", {"users": ["u3", "u0"], "N": 3}).json()
    want = dae.recommend(np.asarray(["u3", "u0"], object), N=3)
    for entry, ids, scores in zip(got["recommendations"], want.ids, want.scores):
        _same_top(entry, ids, scores)


def test_fold_in_a_new_user(client, runs):
    body = {"new_user_items": [50, 172, 181], "new_user_ratings": [5, 5, 4], "N": 3}
    (got,) = post(client, "/recommend", body).json()["recommendations"]
    want = runs["mf"].recommend(new_user_items=[50, 172, 181], new_user_ratings=[5, 5, 4], N=3)
    assert got["user"] is None
    _same_top(got, want.ids, want.scores)
    (got,) = post(client, "/models/dae/recommend", {"new_user_items": ["i1", "i2"], "N": 4}).json()[
        "recommendations"]
    want = runs["dae"].recommend(new_user_items=["i1", "i2"], N=4)
    _same_top(got, want.ids, want.scores)
    refused = post(client, "/models/pair/recommend", {"new_user_items": [50]})
    assert refused.status_code == 422 and refused.json()["field"] == "new_user_items"
    assert "cannot fold in a new user" in refused.json()["error"]


def test_similar_items_and_titles(client, runs):
    mf = runs["mf"]
    got = post(client, "/similar", {"items": [50, 181], "N": 3}).json()["similar"]
    want = mf.similar_items(np.asarray([50, 181]), N=3)
    for entry, item, ids, scores in zip(got, [50, 181], want.ids, want.scores):
        assert entry["item"] == item and entry["title"] == TITLES[item]
        assert entry["similar"] == ids.tolist()
        np.testing.assert_allclose(entry["scores"], scores, rtol=1e-6)
    by_title = post(client, "/similar", {"title": "star wars", "N": 3, "measure": "dot"}).json()
    assert by_title["query"] == "star wars" and by_title["similar"][0]["item"] == 50
    assert by_title["similar"][0]["similar"] == mf.similar_items(50, N=3, measure="dot").ids.tolist()
    missing = post(client, "/similar", {"title": "no such movie"})
    assert missing.status_code == 400 and missing.json()["field"] == "title"


def test_predict_equals_run_predict(client, runs):
    users, items = [196, 186, 7], [242, 302, 50]
    for name in ("mf", "pair"):
        got = post(client, f"/models/{name}/predict", {"users": users, "items": items}).json()
        want = runs[name].predict(np.asarray(users), np.asarray(items))
        np.testing.assert_allclose([p["score"] for p in got["predictions"]], want, rtol=1e-5)
        assert [(p["user"], p["item"], p["title"]) for p in got["predictions"]] == [
            (196, 242, TITLES[242]), (186, 302, TITLES[302]), (7, 50, TITLES[50])]
    refused = post(client, "/models/dae/predict", {"users": ["u1"], "items": ["i1"]})
    assert refused.status_code == 422 and "use recommend" in refused.json()["error"]


# ----------------------------------------------------------------------------- Object2Vec
def _predict_command(tmp_path, capsys, folder, request: str) -> dict:
    path = tmp_path / "request.json"
    path.write_text(request)
    assert main(["predict", str(folder), "--input", str(path)]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("name", ["pair", "mf"])
def test_invocations_in_every_format_equal_the_predict_command(client, folders, tmp_path, capsys, name):
    instances = [{"in0": [196], "in1": [242]}, {"in0": [186], "in1": [302]}, {"in0": [7], "in1": [50]}]
    want = _predict_command(tmp_path, capsys, folders[name], json.dumps({"instances": instances}))
    lines = "".join(json.dumps(i) + "\n" for i in instances)
    path = f"/models/{name}/invocations"

    def scores(rows):
        return [r["scores"] for r in rows]

    for content_type, body in (("application/json", json.dumps({"instances": instances})),
                               (JSONL, lines), (f"{JSONL}; charset=utf-8", lines)):
        as_json = client.post(path, content=body, headers={"Content-Type": content_type})
        assert as_json.status_code == 200 and as_json.headers["content-type"] == "application/json"
        np.testing.assert_allclose(scores(as_json.json()["predictions"]), scores(want["predictions"]),
                                   rtol=1e-5)
        as_lines = client.post(path, content=body, headers={"Content-Type": content_type,
                                                            "Accept": JSONL})
        assert as_lines.headers["content-type"] == JSONL
        rows = [json.loads(line) for line in as_lines.text.splitlines()]
        assert len(rows) == 3 and all(list(r) == ["scores"] for r in rows)
        np.testing.assert_allclose(scores(rows), scores(want["predictions"]), rtol=1e-5)
    # Accept with q-values: the preferred acceptable type wins; */* is JSON
    prefer = client.post(path, content=lines, headers={
        "Content-Type": JSONL, "Accept": "text/html;q=1, application/json;q=0.2, application/jsonlines;q=0.9"})
    assert prefer.headers["content-type"] == JSONL
    anything = client.post(path, content=lines, headers={"Content-Type": JSONL, "Accept": "*/*"})
    assert anything.headers["content-type"] == "application/json"


def test_encoder_embeddings(client, folders, tmp_path, capsys):
    for side, ids in (("in0", [196, 7]), ("in1", [50, 242])):
        instances = [{side: [i]} for i in ids]
        want = _predict_command(tmp_path, capsys, folders["pair"], json.dumps({"instances": instances}))
        got = client.post("/models/pair/invocations", content=json.dumps({"instances": instances}),
                          headers={"Content-Type": "application/json; infer_max_seqlens=1,1"})
        assert got.status_code == 200
        np.testing.assert_allclose([p["embeddings"] for p in got.json()["predictions"]],
                                   [p["embeddings"] for p in want["predictions"]], rtol=1e-5)
        lines = client.post("/models/pair/invocations",
                            content="".join(json.dumps(i) + "\n" for i in instances),
                            headers={"Content-Type": f"{JSONL}; infer_max_seqlens=5000,1",
                                     "Accept": JSONL})
        assert [list(json.loads(line)) for line in lines.text.splitlines()] == [["embeddings"]] * 2


@pytest.mark.parametrize("content_type, accept, body, status, field", [
    ("text/csv", None, "196,242", 415, "Content-Type"),
    (None, None, '{"instances": [{"in0": [196], "in1": [242]}]}', 415, "Content-Type"),
    ("application/json; charset=latin-1", None, '{"instances": []}', 415, "Content-Type"),
    ("application/json", "text/html", '{"instances": [{"in0": [196], "in1": [242]}]}', 406, "Accept"),
    ("application/json; infer_max_seqlens=0,5", None, '{"instances": [{"in0": [196]}]}', 400,
     "infer_max_seqlens"),
    ("application/json; infer_max_seqlens=5001,5", None, '{"instances": [{"in0": [196]}]}', 400,
     "infer_max_seqlens"),
    ("application/json; infer_max_seqlens=a", None, '{"instances": [{"in0": [196]}]}', 400,
     "infer_max_seqlens"),
    ("application/json", None, '{"instances": []}', 400, "instances"),
    ("application/json", None, '{"instance": []}', 400, "instances"),
    ("application/json", None, '{"instances": [], "extra": 1}', 400, "extra"),
    ("application/json", None, '{"instances": [{"in0": [196], "in2": [1]}]}', 400, "instances[0].in2"),
    ("application/json", None, '{"instances": [{}]}', 400, "instances[0]"),
    ("application/json", None, ('{"instances": [{"in0": [196], "in1": [242]}, {"in0": [99999], '
                                '"in1": [242]}]}'), 400, "instances[1].in0"),
    ("application/json", None, '{"instances": [{"in0": ["196"], "in1": [242]}]}', 400, "instances[0].in0"),
    ("application/json", None, '{"instances": [{"in0": [196, 7], "in1": [242]}]}', 400, "instances[0].in0"),
    ("application/json", None, '{"instances": [{"in0": [196], "in1": []}]}', 400, "instances[0].in1"),
    ("application/json", None, '{"instances": [{"in0": [196]}, {"in1": [242]}]}', 400, "instances"),
    (JSONL, None, '{"in0": [196], "in1": [242]}\n{"in0": [196]', 400, "instances[1]"),
    (JSONL, None, "\n\n", 400, "instances"),
])
def test_invocations_bad_requests(client, content_type, accept, body, status, field):
    headers = {k: v for k, v in (("Content-Type", content_type), ("Accept", accept)) if v}
    answer = client.post("/models/pair/invocations", content=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert answer.json()["field"] == field and answer.json()["error"]


def test_invocations_need_a_pair_scoring_model(client):
    answer = post(client, "/models/dae/invocations", {"instances": [{"in0": ["u1"], "in1": ["i1"]}]})
    assert answer.status_code == 422 and "use /recommend" in answer.json()["error"]


# ----------------------------------------------------------------------------- bad requests
@pytest.mark.parametrize("path, body, status, field", [
    ("/recommend", b'{"users": [196', 400, "body"),
    ("/recommend", b"", 400, "body"),
    ("/recommend", b"\xff\xfe", 400, "body"),
    ("/recommend", [196], 400, "body"),
    ("/recommend", {}, 400, "users"),
    ("/recommend", {"users": [196], "new_user_items": [50]}, 400, "users"),
    ("/recommend", {"users": [196], "n": 5}, 400, "n"),
    ("/recommend", {"users": 196}, 400, "users"),
    ("/recommend", {"users": []}, 400, "users"),
    ("/recommend", {"users": list(range(1, 52))}, 400, "users"),
    ("/recommend", {"users": [196, 99999]}, 400, "users[1]"),
    ("/recommend", {"users": ["196"]}, 400, "users[0]"),
    ("/recommend", {"users": [True]}, 400, "users[0]"),
    ("/recommend", {"users": [1.5]}, 400, "users[0]"),
    ("/recommend", {"users": [2**70]}, 400, "users[0]"),
    ("/recommend", {"users": [196], "N": 0}, 400, "N"),
    ("/recommend", {"users": [196], "N": 1001}, 400, "N"),
    ("/recommend", {"users": [196], "N": "5"}, 400, "N"),
    ("/recommend", {"users": [196], "N": 2.5}, 400, "N"),
    ("/recommend", {"users": [196], "filter_already_liked_items": "yes"}, 400,
     "filter_already_liked_items"),
    ("/recommend", {"users": [196], "items": [50, 4000]}, 400, "items[1]"),
    ("/recommend", {"new_user_items": [50, 50], "new_user_ratings": [4, 4]}, 400, "new_user_items"),
    ("/recommend", {"new_user_items": [50], "new_user_ratings": [9]}, 400, "new_user_ratings"),
    ("/recommend", {"new_user_items": [50], "new_user_ratings": ["5"]}, 400, "new_user_ratings[0]"),
    ("/recommend", {"new_user_items": [50, 172], "new_user_ratings": [5]}, 400, "new_user_ratings"),
    ("/recommend", {"users": [196], "new_user_ratings": [5]}, 400, "new_user_ratings"),
    ("/similar", {"items": [50], "title": "Star"}, 400, "items"),
    ("/similar", {"title": ""}, 400, "title"),
    ("/similar", {"items": [50], "measure": "manhattan"}, 400, "measure"),
    ("/similar", {"items": [0]}, 400, "items[0]"),
    ("/predict", {"users": [196]}, 400, "items"),
    ("/predict", {"users": [196, 186], "items": [50]}, 400, "items"),
    ("/predict", {"users": [196], "items": [50], "ratings": [1]}, 400, "ratings"),
    ("/models/dae/recommend", {"users": [3]}, 400, "users[0]"),
    ("/models/nobody/recommend", {"users": [196]}, 404, "name"),
])
def test_bad_requests_name_the_field(client, path, body, status, field):
    answer = post(client, path, body)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["field"] == field and answer.json()["error"], answer.json()


def test_protocol_errors_and_the_server_keeps_serving(client, live):
    too_big = b'{"users": [' + b"196, " * 20000 + b"196]}"  # over max_body_bytes = 64 KiB
    assert post(client, "/recommend", too_big).status_code == 413
    chunked = client.post("/recommend", content=iter([too_big[:40000], too_big[40000:]]),
                          headers={"Content-Type": "application/json"})  # no Content-Length
    assert chunked.status_code == 413 and chunked.json()["field"] == "body"
    assert client.post("/recommend", content=b'{"users": [196]}').status_code == 415
    assert client.post("/recommend", content=b'{"users": [196]}',
                       headers={"Content-Type": "text/plain"}).json()["field"] == "Content-Type"
    assert post(client, "/recommend", {"users": [196]}, Accept="text/csv").status_code == 406
    assert post(client, "/recommend", {"users": [196]}, Accept="text/csv, */*;q=0.1").status_code == 200
    missing = client.get("/nowhere")
    assert missing.status_code == 404 and missing.json() == {
        "error": "no route GET /nowhere; see GET /models", "field": None}
    assert client.get("/recommend").status_code == 405
    assert post(client, "/recommend", {"users": [196], "N": 2}).status_code == 200


def test_a_server_error_is_a_bare_500_and_a_logged_traceback(client, runs, logs, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(runs["mf"], "predict", broken)
    answer = post(client, "/predict", {"users": [196], "items": [50]})
    assert answer.status_code == 500
    assert answer.json() == {"error": "internal server error (the server log has the details)",
                             "field": None}
    assert "secret" not in answer.text and "Traceback" not in answer.text
    logged = [r for r in logs.records if r.get("event") == "error"]
    assert logged and "secret internal detail" in logged[-1]["traceback"]
    monkeypatch.undo()
    assert post(client, "/predict", {"users": [196], "items": [50]}).status_code == 200


# ----------------------------------------------------------------------------- batching
def test_concurrent_clients_get_their_own_answers(live, runs, logs):
    """96 requests at once (different users, N, flags, endpoints, one bad request):
    each answer must be its own request's, as the run answers it alone."""
    rng = np.random.default_rng(5)
    mf = runs["mf"]
    user_ids = mf.data.users.ids
    requests = []
    for k in range(96):
        kind = k % 4
        if kind in (0, 1):
            body = {"users": rng.choice(user_ids, int(rng.integers(1, 4))).tolist(),
                    "N": int(rng.integers(1, 12)), "filter_already_liked_items": bool(kind == 0)}
            requests.append(("/recommend", body))
        elif kind == 2:
            n = int(rng.integers(1, 4))
            requests.append(("/predict", {"users": rng.choice(user_ids, n).tolist(),
                                          "items": rng.choice(mf.data.items.ids, n).tolist()}))
        else:
            requests.append(("/similar", {"items": rng.choice(mf.data.items.ids, 2).tolist(),
                                          "N": int(rng.integers(1, 8))}))
    requests[17] = ("/recommend", {"users": [196, 99999]})  # a bad one among them
    start = len(logs.records)

    async def go():
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=live.url, timeout=30, limits=limits) as c:
            return await asyncio.gather(*(c.post(path, json=body) for path, body in requests))

    answers = asyncio.run(go())
    for (path, body), answer in zip(requests, answers):
        if body.get("users") == [196, 99999]:
            assert answer.status_code == 400 and answer.json()["field"] == "users[1]"
            continue
        assert answer.status_code == 200, answer.text
        got = answer.json()
        if path == "/recommend":
            want = mf.recommend(np.asarray(body["users"]), N=body["N"],
                                filter_already_liked_items=body["filter_already_liked_items"])
            assert [e["user"] for e in got["recommendations"]] == body["users"]
            for entry, ids, scores in zip(got["recommendations"], want.ids, want.scores):
                _same_top(entry, ids, scores)
        elif path == "/predict":
            want = mf.predict(np.asarray(body["users"]), np.asarray(body["items"]))
            np.testing.assert_allclose([p["score"] for p in got["predictions"]], want, rtol=1e-5)
        else:
            want = mf.similar_items(np.asarray(body["items"]), N=body["N"])
            assert [e["similar"] for e in got["similar"]] == want.ids.tolist()
    batched = [r["batch_requests"] for r in logs.records[start:] if "batch_requests" in r]
    assert len(batched) == 95 and max(batched) > 1  # requests did share model calls


def test_concurrent_new_users_share_one_fold_in_and_get_their_own_answers(live, runs, logs):
    """48 new users at once (different items, ratings and N, one with an out-of-scale
    rating): they are folded in together, and each answer is what the run gives that
    user alone; the bad one alone is refused."""
    rng = np.random.default_rng(7)
    mf = runs["mf"]
    item_ids = mf.data.items.ids
    requests = []
    for k in range(48):
        items = rng.choice(item_ids, int(rng.integers(1, 12)), replace=False).tolist()
        requests.append({"new_user_items": items, "N": int(rng.integers(1, 8)),
                         "new_user_ratings": rng.integers(1, 6, len(items)).tolist()})
    requests[9]["new_user_ratings"][0] = 9  # outside the 1-5 scale
    start = len(logs.records)

    async def go():
        async with httpx.AsyncClient(base_url=live.url, timeout=30, limits=httpx.Limits(max_connections=64)) as c:
            return await asyncio.gather(*(c.post("/recommend", json=body) for body in requests))

    answers = asyncio.run(go())
    for k, (body, answer) in enumerate(zip(requests, answers)):
        if k == 9:
            assert answer.status_code == 400 and answer.json()["field"] == "new_user_ratings"
            continue
        assert answer.status_code == 200, answer.text
        (got,) = answer.json()["recommendations"]
        want = mf.recommend(new_user_items=body["new_user_items"], new_user_ratings=body["new_user_ratings"],
                            N=body["N"])
        _same_top(got, want.ids, want.scores)
    batched = [r["batch_requests"] for r in logs.records[start:] if "batch_requests" in r]
    assert max(batched) > 1  # new users did share model calls


def test_unbatched_server_answers_alike(runs):
    from recjax.serve import create_app

    server = LiveServer(create_app({"mf": runs["mf"]}, batch_window_ms=0, max_batch=1))
    try:
        server.wait_ready()

        async def go():
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
                return await asyncio.gather(*(c.post("/recommend", json={"users": [u], "N": 3})
                                              for u in range(1, 17)))

        for u, answer in zip(range(1, 17), asyncio.run(go())):
            want = runs["mf"].recommend(np.asarray([u]), N=3)
            _same_top(answer.json()["recommendations"][0], want.ids[0], want.scores[0])
    finally:
        server.stop()


# ----------------------------------------------------------------------------- README
def _readme_examples() -> list[tuple[str, str]]:
    """(curl command, documented answer) of each ``<!-- serve-example -->`` in README."""
    text = README.read_text().split("## Serving", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"<!-- serve-example -->\n```bash\n(.*?)```\n```json\n(.*?)```", text, re.DOTALL)
    assert len(blocks) >= 8, "README's Serving section lost its examples"
    return blocks


def _same_shape(got, documented, where="") -> None:
    """Keys, nesting and value types as documented (lists: their first element)."""
    if isinstance(documented, dict):
        assert isinstance(got, dict) and list(got) == list(documented), (where, got, documented)
        for key in documented:
            _same_shape(got[key], documented[key], f"{where}.{key}")
    elif isinstance(documented, list):
        assert isinstance(got, list), (where, got)
        if documented and got:
            _same_shape(got[0], documented[0], f"{where}[0]")
    elif documented is None:
        assert got is None, (where, got)
    else:
        kind = (int, float) if isinstance(documented, (int, float)) else type(documented)
        assert isinstance(got, kind) and not isinstance(got, bool), (where, got, documented)


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README examples are curl commands")
def test_readme_curl_examples(live):
    for command, documented in _readme_examples():
        assert "localhost:8080" in command
        run = subprocess.run(["bash", "-c", command.replace("localhost:8080", f"127.0.0.1:{live.port}")],
                             capture_output=True, text=True, timeout=30, check=False)
        assert run.returncode == 0, (command, run.stderr)
        got = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
        want = [json.loads(line) for line in documented.splitlines() if line.strip()]
        assert len(got) == len(want), (command, run.stdout)
        for g, w in zip(got, want):
            _same_shape(g, w, command.split()[2])


# ----------------------------------------------------------------------------- command line
def test_cli_serve_logs_json_and_stops_gracefully_on_sigterm(folders, tmp_path):
    """A request waiting in a 1 s batch window when SIGTERM arrives is answered, then the
    process exits 0; every log line is one JSON object."""
    server = SubprocessServer(tmp_path, str(folders["mf"]), "--batch-window-ms", "1000")
    try:
        result = {}

        def ask():
            result["answer"] = httpx.post(server.url + "/recommend", json={"users": [196], "N": 3},
                                          timeout=30)

        thread = threading.Thread(target=ask)
        tic = time.monotonic()
        thread.start()
        time.sleep(0.3)
        server.process.send_signal(signal.SIGTERM)
        thread.join(30)
        assert server.process.wait(timeout=30) == 0
        answer = result["answer"]
        assert answer.status_code == 200 and time.monotonic() - tic >= 0.9  # it did wait its window
        from recjax.runs import Run

        want = Run.open(folders["mf"]).recommend(196, N=3)
        assert answer.json()["recommendations"][0]["items"] == want.ids.tolist()
        with pytest.raises(httpx.TransportError):
            httpx.get(server.url + "/ping", timeout=2)
        lines = server.lines()  # each line is JSON (or json.loads raised)
        requests = [line for line in lines if line.get("path") == "/recommend"]
        assert len(requests) == 1
        assert {"method", "status", "latency_ms", "batch_requests", "batch_rows"} <= set(requests[0])
        assert requests[0]["status"] == 200 and requests[0]["latency_ms"] >= 900
        assert [line["event"] for line in lines if "event" in line] == ["listening", "ready", "stopped"]
    finally:
        server.kill()


def test_cli_errors_are_one_line(folders, tmp_path, capsys, monkeypatch):
    def one_line(*argv) -> str:
        status = main(["serve", *map(str, argv)])
        err = capsys.readouterr().err.strip().splitlines()
        assert status == 2 and len(err) == 1 and err[0].startswith("recjax: error:"), err
        return err[0]

    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # what serve() would set for itself
    assert "no such run folder" in one_line(tmp_path / "missing")
    copy = tmp_path / "other" / "mf"
    shutil.copytree(folders["mf"], copy)
    assert "two runs are named 'mf'" in one_line(folders["mf"], copy)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        assert "cannot listen on" in one_line(folders["mf"], "--port", busy.getsockname()[1])
    finally:
        busy.close()
    # without the serve extra: the hint, in one line (as in a fresh process: recjax.serve
    # keeps what it has once imported, so that goes too)
    import recjax.serve

    monkeypatch.delattr(recjax.serve, "serve", raising=False)
    monkeypatch.delitem(sys.modules, "recjax.serve.server", raising=False)
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    assert "pip install 'recjax[serve]'" in one_line(folders["mf"])


def test_import_recjax_needs_no_server_packages(monkeypatch):
    import importlib

    for name in [m for m in sys.modules if m.startswith("recjax.serve")]:
        monkeypatch.delitem(sys.modules, name)
    for name in [m for m in sys.modules if m.split(".")[0] in ("starlette", "uvicorn")] + [
            "starlette", "uvicorn"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    for name in ("recjax.serve", "recjax.serve.batching", "recjax.serve.endpoints"):
        importlib.import_module(name)
    assert main.__module__ == "recjax.cli"
    from recjax.cli import build_parser

    assert build_parser().parse_args(["serve", "RUN"]).batch_window_ms == 2.0
    with pytest.raises(ImportError):
        importlib.import_module("recjax.serve.app")
