"""Object2Vec-style inference: functions, the JSON format, the ``predict`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recjax.config import RunConfig
from recjax.data.dataset import UnknownIdError
from recjax.data.jsonlines import ratings_to_pairs, write_jsonlines
from recjax.experiment import run
from recjax.models.pair import PairConfig
from recjax.predict import embed, load_trained, predict_pairs, read_requests, respond

SMALL = dict(enc0_token_embedding_dim=4, enc1_token_embedding_dim=4, enc_dim=6, mlp_dim=8, side_features=False)


def _train(out, task="regression", **model):
    return run(RunConfig(model="pair", dataset="synthetic", split="random", epochs=1, quiet=True,
                           task=task, out=str(out)), PairConfig(**{**SMALL, **model}))


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("pred") / "reg")


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("pred") / "bin", task="binary", side_features=True)


def test_regression_response_format_and_values(regression_run):
    trained = load_trained(regression_run.run_dir)
    answer = respond(trained, {"instances": [{"in0": [1], "in1": [7]}, {"in0": [30], "in1": [2]}]})
    assert list(answer) == ["predictions"] and len(answer["predictions"]) == 2
    for row in answer["predictions"]:
        assert list(row) == ["scores"] and len(row["scores"]) == 1 and isinstance(row["scores"][0], float)
    # the same numbers as the trained module on index batches
    data = trained.data
    batch = {"user": data.users.index([1, 30]), "item": data.items.index([7, 2])}
    expected = np.asarray(regression_run.module(batch))
    np.testing.assert_allclose([r["scores"][0] for r in answer["predictions"]], expected, rtol=1e-5)
    assert json.loads(json.dumps(answer)) == answer


def test_binary_response_has_class_probabilities(binary_run):
    trained = load_trained(binary_run.run_dir)
    answer = respond(trained, {"instances": [{"in0": [5], "in1": [9]}]})
    (row,) = answer["predictions"]
    assert list(row) == ["scores", "predicted_label"]
    assert len(row["scores"]) == 2 and abs(sum(row["scores"]) - 1) < 1e-9
    assert row["predicted_label"] == int(row["scores"][1] > row["scores"][0])
    scores = predict_pairs(trained, [[5]], [[9]])
    np.testing.assert_allclose(scores[0], row["scores"])


def test_one_side_embeddings_match_the_saved_ones(binary_run):
    trained = load_trained(binary_run.run_dir)
    users = respond(trained, {"instances": [{"in0": [3]}, {"in0": [1]}]})
    movies = respond(trained, {"instances": [{"in1": [4]}]})
    assert all(list(row) == ["embeddings"] for row in users["predictions"] + movies["predictions"])
    saved = np.load(binary_run.run_dir / "embeddings.npz")
    np.testing.assert_allclose(users["predictions"][0]["embeddings"],
                               saved["user_embeddings"][list(saved["user_ids"]).index(3)], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(movies["predictions"][0]["embeddings"],
                               saved["item_embeddings"][list(saved["item_ids"]).index(4)], rtol=1e-5, atol=1e-6)
    assert len(users["predictions"][0]["embeddings"]) == 6


@pytest.mark.parametrize("request_, message", [
    ({"instances": [{"in0": [1], "in1": [2]}, {"in0": [1]}]}, "pairs only"),
    ({"instances": [{"in2": [1]}]}, "'in0' and/or 'in1'"),
    ({"instances": [{"in0": [], "in1": [2]}]}, "a list of one raw id"),
    ({"instances": [{"in0": [1, 2], "in1": [2]}]}, "a list of one raw id"),
    ({"instances": [{"in0": [True], "in1": [2]}]}, "a list of one raw id"),
    ({"instances": [{"in0": ["1"], "in1": [2]}]}, "user ids are integers"),
    ({"rows": []}, "instances"),
])
def test_bad_requests_fail_clearly(regression_run, request_, message):
    with pytest.raises(ValueError, match=message):
        respond(load_trained(regression_run.run_dir), request_)


def test_unknown_ids_fail_clearly(regression_run):
    with pytest.raises(UnknownIdError, match="unknown user id"):
        respond(load_trained(regression_run.run_dir), {"instances": [{"in0": [99999], "in1": [1]}]})


def test_command_line_writes_the_documented_json(regression_run, tmp_path, capsys):
    from recjax.cli import main

    lines = tmp_path / "requests.jsonl"
    lines.write_text('{"in0": [1], "in1": [7]}\n\n{"in0": [30], "in1": [2]}\n')
    whole = tmp_path / "requests.json"
    whole.write_text(json.dumps({"instances": [{"in0": [1], "in1": [7]}, {"in0": [30], "in1": [2]}]}))
    assert read_requests(lines) == read_requests(whole)
    assert main(["predict", str(regression_run.run_dir), "--input", str(lines)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == respond(load_trained(regression_run.run_dir), read_requests(whole))
    out = tmp_path / "answer.json"
    assert main(["predict", str(regression_run.run_dir), "--input", str(whole), "--output", str(out)]) == 0
    assert json.loads(out.read_text()) == printed
    assert main(["predict", str(tmp_path), "--input", str(lines)]) == 2
    assert "not a recjax run folder" in capsys.readouterr().err


def test_token_runs_take_token_ids(tmp_path, small_synthetic):
    data, _ = small_synthetic
    write_jsonlines(tmp_path / "train.jsonl", ratings_to_pairs(data))
    result = run(RunConfig(model="pair", epochs=1, quiet=True, out=str(tmp_path / "run")),
                 PairConfig(**SMALL, jsonl_train=str(tmp_path / "train.jsonl")))
    trained = load_trained(result.run_dir)
    answer = respond(trained, {"instances": [{"in0": [0, 5], "in1": [3]}]})
    assert len(answer["predictions"][0]["scores"]) == 1
    vectors = embed(trained, 0, [[0, 5], [5]])
    assert vectors.shape == (2, 6)
    with pytest.raises(ValueError, match="in1 token 999 is outside the model's vocabulary"):
        respond(trained, {"instances": [{"in0": [1], "in1": [999]}]})


@pytest.mark.slow
def test_other_models_answer_too(tmp_path):
    from recjax.models.dnn import DNNConfig

    result = run(RunConfig(model="dnn", dataset="synthetic", split="random", epochs=1, quiet=True,
                             out=str(tmp_path / "dnn")), DNNConfig(embedding_dim=4, hidden_dims="4"))
    trained = load_trained(result.run_dir)
    assert len(respond(trained, {"instances": [{"in0": [1], "in1": [2]}]})["predictions"][0]["scores"]) == 1
    assert len(respond(trained, {"instances": [{"in1": [2]}]})["predictions"][0]["embeddings"]) == 4
