"""Request bodies that Python's own parser cannot take: every POST endpoint of the
server answers 400 with ``{"error": ..., "field": ...}``, never a 500.

JSON nested deeper than the interpreter's recursion limit (``[`` x 100,000, a few KB)
makes :func:`json.loads` raise RecursionError, which is not a ValueError; it used to
reach the server's catch-all and answer 500 "internal server error".
"""

from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from _tiny_run import tiny_run
from starlette.testclient import TestClient

pytestmark = pytest.mark.usefixtures("persistent_compile_cache")

POSTS = ["/invocations", "/recommend", "/similar", "/predict", "/models/run/recommend",
         "/models/run/invocations"]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from recjax.serve import create_app

    app = create_app({"run": tiny_run(tmp_path_factory)}, batch_window_ms=0, max_batch=1)
    with TestClient(app, raise_server_exceptions=False) as c:  # the lifespan loads and warms the run
        deadline = time.monotonic() + 120
        while c.get("/ping").status_code != 200:
            assert time.monotonic() < deadline, c.get("/ping").text
            time.sleep(0.1)
        yield c


@pytest.mark.parametrize("path", POSTS)
@pytest.mark.parametrize("depth", [100_000, 3_000])
def test_deeply_nested_json_is_a_400_naming_the_body(client, path, depth):
    body = "[" * depth + "]" * depth
    response = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    answer = response.json()
    assert set(answer) == {"error", "field"} and answer["field"] == "body", answer
    assert "nested" in answer["error"], answer


@pytest.mark.parametrize("depth", [100_000, 3_000])
def test_deeply_nested_json_lines_are_a_400_naming_the_line(client, depth):
    body = '{"in0": [1], "in1": [7]}\n' + "[" * depth + "]" * depth + "\n"
    response = client.post("/invocations", content=body, headers={"Content-Type": "application/jsonlines"})
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["field"] == "instances[1]" and "line 2" in answer["error"], answer


def test_the_server_still_answers_after_them(client):
    body = json.dumps({"instances": [{"in0": [1], "in1": [7]}]})
    response = client.post("/invocations", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1


@pytest.mark.parametrize("path, key", [("/recommend", "users"), ("/similar", "items"), ("/predict", "users"),
                                       ("/invocations", "instances")])
def test_json_nested_within_the_parser_limit_is_a_400_too(client, path, key):
    """900 levels parse; the endpoint then refuses the nested value (4xx naming a field), no 500."""
    body = '{"%s": %s}' % (key, "[" * 900 + "1" + "]" * 900)
    response = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    assert set(response.json()) == {"error", "field"}, response.text
