"""Raw ids through the server: every id is resolved by :meth:`recjax.data.Vocabulary.resolve`
and a bad one answers 400 naming its JSON field and position, read from the
:class:`~recjax.data.UnknownIdError` (no message parsing).

Two tiny MF runs are served: ``ints`` on gapped integer ids (user 1, then 500 and
7,000,000 + 1,000 k; items 3, 99, 10^12, 10^6 + 77 k) and ``strs`` on string ids
("u0".., "i0"..). Answers are compared with MF's parameters by hand.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from starlette.testclient import TestClient

pytestmark = pytest.mark.usefixtures("persistent_compile_cache")

USERS = np.array([1, 500, *(7_000_000 + 1_000 * k for k in range(18))])
ITEMS = np.array([3, 99, 10**12, *(1_000_000 + 77 * k for k in range(1, 13))])


def _frame(users: np.ndarray, items: np.ndarray, seed: int) -> pd.DataFrame:
    """60% of the user x item pairs, ratings 1..5."""
    rng = np.random.default_rng(seed)
    pairs = rng.choice(len(users) * len(items), size=int(0.6 * len(users) * len(items)), replace=False)
    return pd.DataFrame({"user": users[pairs // len(items)], "item": items[pairs % len(items)],
                         "rating": rng.integers(1, 6, len(pairs)).astype(float)})


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    strings = _frame(np.array([f"u{k}" for k in range(20)], object),
                     np.array([f"i{k}" for k in range(15)], object), seed=1)
    return {"ints": _frame(USERS, ITEMS, seed=0), "strs": strings}


@pytest.fixture(scope="module")
def runs(frames, tmp_path_factory):
    from recjax.config import RunConfig
    from recjax.data import Ratings, split_ratings
    from recjax.experiment import run
    from recjax.models.mf import MFConfig
    from recjax.runs import Run

    out = {}
    for name, frame in frames.items():
        folder = tmp_path_factory.mktemp("ids") / name
        splits = split_ratings(Ratings.from_pandas(frame), "random", seed=0)
        run(RunConfig(epochs=2, quiet=True, out=str(folder)), MFConfig(embedding_dim=4), splits=splits)
        out[name] = Run.open(folder)
    return out


@pytest.fixture(scope="module")
def client(runs):
    from recjax.serve import create_app

    app = create_app(runs, batch_window_ms=0, max_batch=1)
    with TestClient(app, raise_server_exceptions=False) as c:  # the lifespan loads and warms the runs
        deadline = time.monotonic() + 120
        while c.get("/ping").status_code != 200:
            assert time.monotonic() < deadline, c.get("/ping").text
            time.sleep(0.1)
        yield c


INTS = "this run's {} ids are integers"
STRS = "this run's {} ids are strings"


@pytest.mark.parametrize("path, body, field, error", [
    ("/models/strs/recommend", {"users": [7]}, "users[0]",
     f"users[0]: unknown user id 7 ({STRS.format('user')})"),
    ("/models/strs/recommend", {"users": ["u1", "u2", 7]}, "users[2]",
     f"users[2]: unknown user id 7 ({STRS.format('user')})"),
    ("/models/strs/predict", {"users": ["u1"], "items": [3]}, "items[0]",
     f"items[0]: unknown item id 3 ({STRS.format('item')})"),
    ("/models/strs/similar", {"items": ["i1", True]}, "items[1]",
     f"items[1]: unknown item id True ({STRS.format('item')})"),
    ("/models/strs/recommend", {"new_user_items": ["i1", 2]}, "new_user_items[1]",
     f"new_user_items[1]: unknown item id 2 ({STRS.format('item')})"),
    ("/models/ints/recommend", {"users": ["1"]}, "users[0]",
     f"users[0]: unknown user id '1' ({INTS.format('user')})"),
    ("/models/ints/recommend", {"users": [500, True]}, "users[1]",
     f"users[1]: unknown user id True ({INTS.format('user')})"),
    ("/models/ints/recommend", {"users": [1, 2]}, "users[1]",
     f"users[1]: unknown user id 2 (the run has {len(USERS)} users)"),
    ("/models/ints/recommend", {"users": [1], "items": [3, 99, 4]}, "items[2]",
     f"items[2]: unknown item id 4 (the run has {len(ITEMS)} items)"),
    ("/models/ints/predict", {"users": [1, 500], "items": [3, "99"]}, "items[1]",
     f"items[1]: unknown item id '99' ({INTS.format('item')})"),
    ("/models/ints/similar", {"items": [10**12, 10**12 + 1]}, "items[1]",
     f"items[1]: unknown item id {10**12 + 1} (the run has {len(ITEMS)} items)"),
    ("/models/ints/invocations", {"instances": [{"in0": [1], "in1": [3]}, {"in0": ["1"], "in1": [3]}]},
     "instances[1].in0", f"instances[1].in0: unknown user id '1' ({INTS.format('user')})"),
    ("/models/ints/invocations", {"instances": [{"in0": [7_000_000], "in1": [5]}]},
     "instances[0].in1", f"instances[0].in1: unknown item id 5 (the run has {len(ITEMS)} items)"),
])
def test_a_bad_id_is_a_400_naming_its_field_and_position(client, path, body, field, error):
    answer = client.post(path, json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json() == {"error": error, "field": field}


def test_gapped_ids_are_answered_from_their_own_rows(client, runs, frames):
    """/recommend over 3 unrated and 4 rated candidates with N=10 answers those 3, best
    first; /predict the rating; both equal MF's parameters by hand at each raw id's rank."""
    run, frame = runs["ints"], frames["ints"]
    m = run.model()
    U, V = np.asarray(m.user_embedding[...], np.float64), np.asarray(m.item_embedding[...], np.float64)
    bu, bi = np.asarray(m.user_bias[...], np.float64), np.asarray(m.item_bias[...], np.float64)
    row = {raw: k for k, raw in enumerate(sorted(USERS.tolist()))}
    col = {raw: k for k, raw in enumerate(sorted(ITEMS.tolist()))}
    for user in (1, 7_017_000):
        rated = set(frame.loc[frame["user"] == user, "item"].tolist())
        unrated = [i for i in ITEMS.tolist() if i not in rated][:3]
        asked = sorted(rated)[:4] + unrated
        body = {"users": [user], "N": 10, "items": asked}
        (got,) = client.post("/models/ints/recommend", json=body).json()["recommendations"]
        score = {i: bi[col[i]] + U[row[user]] @ V[col[i]] for i in unrated}
        want = sorted(unrated, key=lambda i: -score[i])
        assert got["user"] == user and got["items"] == want and len(want) == 3
        np.testing.assert_allclose(got["scores"], [score[i] for i in want], rtol=1e-5, atol=1e-5)
    pairs = [(7_000_000, 10**12), (500, 1_000_077), (1, 99)]
    got = client.post("/models/ints/predict", json={"users": [u for u, _ in pairs],
                                                    "items": [i for _, i in pairs]}).json()
    want = [float(m.offset) + bu[row[u]] + bi[col[i]] + U[row[u]] @ V[col[i]] for u, i in pairs]
    np.testing.assert_allclose([p["score"] for p in got["predictions"]], np.clip(want, 1, 5),
                               rtol=1e-5, atol=1e-5)


def test_field_of_reads_an_unknown_id_from_the_error():
    """A run's UnknownIdError names its field itself; other errors by the keys they name."""
    from recjax.data import UnknownIdError
    from recjax.serve.endpoints import RECOMMEND_KEYS, field_of

    assert field_of(UnknownIdError("...", "users", 3), RECOMMEND_KEYS) == "users[3]"
    assert field_of(UnknownIdError("...", "items"), RECOMMEND_KEYS) == "items"
    assert field_of(ValueError("new_user_items lists an item twice"), RECOMMEND_KEYS) == "new_user_items"
