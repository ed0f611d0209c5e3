"""The Object2Vec pair model: encoders, masking, comparator, options, data sources, validation, learning."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from recjax.config import RunConfig
from recjax.data.jsonlines import PAD, PairData, ratings_to_pairs, write_jsonlines
from recjax.data.tokens import movielens_tokens
from recjax.metrics import auc
from recjax.models.pair import (
    PairConfig,
    PairModel,
    TokenEncoder,
    _compare,
    build_pair,
    load_pair_parts,
    pair_inputs,
)
from recjax.train.loop import fit
from recjax.train.step import Model, make_predict

SMALL = dict(enc0_token_embedding_dim=6, enc1_token_embedding_dim=6, enc_dim=8, mlp_dim=8, dropout=0.0,
             side_features=False)
NETWORKS = ("pooled_embedding", "hcnn", "bilstm")


def small(**kw) -> PairConfig:
    return PairConfig(**{**SMALL, **kw})


def encoder(network: str, layers: int = 0, width: int = 3):
    """A jitted encoder (eager LSTM steps are slow)."""
    graphdef, state = nnx.split(TokenEncoder(network, 12, 5, layers, width, 7, rngs=nnx.Rngs(0)))
    run = jax.jit(lambda state, tokens: nnx.merge(graphdef, state)(tokens))
    return lambda tokens: run(state, tokens)


# ----------------------------------------------------------------------------- encoders
@pytest.mark.parametrize("network", NETWORKS)
def test_encoder_shape_and_padding_invariance(network):
    enc = encoder(network, layers=2)  # two layers: padding is re-masked between them
    base = jnp.array([[1, 2, 3], [4, 5, PAD], [7, PAD, PAD]])
    out = enc(base)
    assert out.shape == (3, 7)
    # trailing padding, and padding in the middle, change nothing
    padded = jnp.array([[1, 2, 3, PAD, PAD], [4, PAD, 5, PAD, PAD], [PAD, PAD, 7, PAD, PAD]])
    np.testing.assert_allclose(enc(padded), out, rtol=1e-5, atol=1e-6)
    # a row's output does not depend on the other rows' lengths
    np.testing.assert_allclose(enc(jnp.array([[7]])), out[2:], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("network", NETWORKS)
def test_all_padding_encodes_like_an_empty_sequence(network):
    enc = encoder(network)
    out = enc(jnp.array([[PAD, PAD], [PAD, PAD]]))
    assert np.isfinite(np.asarray(out)).all()
    np.testing.assert_allclose(out[0], out[1])


def test_pooled_embedding_ignores_token_order_sequence_encoders_do_not():
    tokens, permuted = jnp.array([[1, 2, 3, 9]]), jnp.array([[9, 3, 1, 2]])
    np.testing.assert_allclose(encoder("pooled_embedding")(tokens), encoder("pooled_embedding")(permuted),
                               rtol=1e-5, atol=1e-6)
    for network in ("hcnn", "bilstm"):
        assert not np.allclose(encoder(network)(tokens), encoder(network)(permuted), atol=1e-6)


def test_max_seq_len_cuts_long_sequences():
    enc = TokenEncoder("pooled_embedding", 12, 5, 0, 3, 7, max_seq_len=2, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(enc(jnp.array([[1, 2, 3, 4]])), enc(jnp.array([[1, 2]])), rtol=1e-6)


def test_pooled_embedding_is_the_masked_mean_then_projection():
    enc = TokenEncoder("pooled_embedding", 12, 5, 0, 3, 7, rngs=nnx.Rngs(0))
    table = enc.table.embedding[...]
    expected = enc.project((table[1] + table[4]) / 2)
    np.testing.assert_allclose(enc(jnp.array([[1, PAD, 4]]))[0], expected, rtol=1e-5)


# ----------------------------------------------------------------------------- comparator
def test_comparator_layout():
    e0, e1 = jnp.array([[1.0, -2.0]]), jnp.array([[3.0, 5.0]])
    out = _compare(e0, e1, ("hadamard", "concat", "abs_diff"))
    np.testing.assert_allclose(out, [[3.0, -10.0, 1.0, -2.0, 3.0, 5.0, 2.0, 7.0]])
    np.testing.assert_allclose(_compare(e0, e1, ("abs_diff", "hadamard")), [[2.0, 7.0, 3.0, -10.0]])
    assert PairConfig(comparator_list=" concat , hadamard").comparators == ("concat", "hadamard")


# ----------------------------------------------------------------------------- the model
BATCH = {"in0": jnp.array([[1, 2, PAD], [3, PAD, PAD], [0, 5, 7]]),
         "in1": jnp.array([[4, PAD], [9, 8], [2, PAD]]),
         "label": jnp.array([1.0, 0.0, 1.0]), "weight": jnp.ones(3)}


def outputs(cfg: PairConfig, task: str = "regression", train: bool = False, vocab=(10, 12),
            batch=BATCH) -> np.ndarray:
    model = Model.split(PairModel(cfg, vocab, task=task, global_mean=3.5, rngs=nnx.Rngs(0)))
    if cfg.enc0_network == "bilstm" or cfg.enc1_network == "bilstm":  # eager LSTM steps are slow
        run = jax.jit(lambda params, b: model.bind(params)(b, train=train, rngs=nnx.Rngs(dropout=1)))
        return np.asarray(run(model.params, batch))
    return np.asarray(model.bind(model.params)(batch, train=train, rngs=nnx.Rngs(dropout=1)))


def test_model_padding_invariance_and_shapes():
    cfg = small(enc0_network="hcnn", enc1_network="pooled_embedding")  # bilstm: the encoder tests
    wider = {"in0": jnp.pad(BATCH["in0"], ((0, 0), (0, 3)), constant_values=PAD),
             "in1": jnp.pad(BATCH["in1"], ((0, 0), (0, 2)), constant_values=PAD)}
    out = outputs(cfg)
    assert out.shape == (3,)
    np.testing.assert_allclose(outputs(cfg, batch=wider), out, rtol=1e-5, atol=1e-6)
    assert PairModel(small(), (10, 12), rngs=nnx.Rngs(0)).logits(BATCH).shape == (3, 1)


def test_every_hyper_parameter_changes_the_result():
    base = small()
    reference = outputs(base)
    changes = {
        "enc0_network": "hcnn", "enc0_max_seq_len": 1, "enc0_token_embedding_dim": 4, "enc0_layers": 2,
        "enc1_network": "hcnn", "enc1_max_seq_len": 1, "enc1_token_embedding_dim": 4, "enc1_layers": 2,
        "tied_token_embedding_weight": True, "enc_dim": 6, "comparator_list": "hadamard,abs_diff",
        "mlp_layers": 2, "mlp_dim": 5, "mlp_activation": "tanh",
    }
    for name, value in changes.items():
        assert not np.allclose(outputs(dataclasses.replace(base, **{name: value})), reference, atol=1e-6), name
    # vocabulary sizes set the tables (the rows the data uses keep their values)
    assert PairModel(base, (11, 13), rngs=nnx.Rngs(0)).encoder1.table.embedding.shape == (13, 6)
    # enc1_network="enc0": one encoder for both sides
    shared = PairModel(small(enc1_network="enc0"), (10, 12), rngs=nnx.Rngs(0))
    assert shared.encoder1 is shared.encoder0 and shared.vocab_sizes == (12, 12)
    # the training-time settings
    assert not np.allclose(outputs(small(dropout=0.5), train=True), outputs(small(), train=True))
    # side features: more tokens per user and movie
    assert build_pair(small(side_features=True), ml_like(), "regression", 0).in1_tokens.shape[1] > 1
    assert float(PairModel(small(l2=0.1), (10, 12), rngs=nnx.Rngs(0)).penalty(BATCH)) > 0
    assert float(PairModel(small(), (10, 12), rngs=nnx.Rngs(0)).penalty(BATCH)) == 0
    # token_bias: zero at the start, then a per-token term added to the output
    biased = PairModel(small(token_bias=True), (10, 12), global_mean=3.5, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(biased(BATCH), outputs(small()), rtol=1e-5, atol=1e-6)
    biased.biases[0].embedding[...] = biased.biases[0].embedding[...] + 1.0
    assert not np.allclose(biased(BATCH), outputs(small()), atol=1e-6)
    neg = PairModel(small(negative_sampling_rate=2), (10, 12), task="binary", rngs=nnx.Rngs(0))
    augmented = neg.augment(BATCH, jax.random.key(0))
    assert augmented["in0"].shape[0] == 9 and augmented["label"].tolist() == [1, 0, 1] + [0] * 6
    # output layers
    softmax = PairModel(small(output_layer="softmax"), (10, 12), task="binary", rngs=nnx.Rngs(0))
    logits = softmax.logits(BATCH)
    assert logits.shape == (3, 2)
    np.testing.assert_allclose(softmax(BATCH), logits[:, 1] - logits[:, 0], rtol=1e-6)


@pytest.mark.slow
def test_hcnn_settings_change_the_result():
    """Filter widths and depth matter for hcnn encoders."""
    hcnn = small(enc0_network="hcnn", enc1_network="hcnn")
    reference = outputs(hcnn)
    for name, value in (("enc0_cnn_filter_width", 2), ("enc1_cnn_filter_width", 1), ("enc0_layers", 1)):
        assert not np.allclose(outputs(dataclasses.replace(hcnn, **{name: value})), reference), name


def ml_like():
    from recjax.data import synthetic_ratings

    data, _ = synthetic_ratings(20, 10, 50, seed=0)  # synthetic data has movie genres and years
    return data


def test_tied_token_table_is_shared():
    model = PairModel(small(tied_token_embedding_weight=True), (10, 12), rngs=nnx.Rngs(0))
    assert model.encoder0.table is model.encoder1.table
    assert model.encoder0.table.embedding.shape == (12, 6)
    params = Model.split(model).params
    assert "table" not in params["encoder1"]  # stored once


def test_regression_output_starts_at_the_mean():
    model = PairModel(small(), (10, 12), global_mean=3.5, rngs=nnx.Rngs(0))
    assert float(model.head.bias[0]) == 3.5


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("kwargs, message", [
    (dict(enc0_network="transformer"), "unknown enc0_network"),
    (dict(enc1_network="rnn"), "unknown enc1_network"),
    (dict(output_layer="softmax", num_classes=1), "num_classes >= 2"),
    (dict(comparator_list="hadamard,dot"), "comparator_list"),
    (dict(comparator_list=""), "comparator_list"),
    (dict(mlp_activation="gelu"), "mlp_activation"),
    (dict(dropout=1.0), "dropout"),
    (dict(enc0_token_embedding_dim=0), "enc0_token_embedding_dim"),
    (dict(output_layer="logistic"), "output_layer"),
])
def test_invalid_config_fails_early(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PairConfig(**kwargs)


def test_output_layer_must_fit_the_task():
    with pytest.raises(ValueError, match="does not fit --task regression"):
        PairModel(PairConfig(output_layer="softmax"), (3, 3), task="regression", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="num_classes=3"):
        PairModel(PairConfig(output_layer="softmax", num_classes=3), (3, 3), task="binary", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="negative_sampling_rate"):
        PairModel(PairConfig(negative_sampling_rate=1), (3, 3), task="regression", rngs=nnx.Rngs(0))


def test_vocab_smaller_than_the_data_fails(small_synthetic):
    data, _ = small_synthetic
    with pytest.raises(ValueError, match="enc1_vocab_size=10 is smaller than the largest in1 token id"):
        build_pair(PairConfig(enc1_vocab_size=10), data, "regression", 0)
    pairs = ratings_to_pairs(data)
    with pytest.raises(ValueError, match="enc0_vocab_size=5 is smaller"):
        build_pair(PairConfig(enc0_vocab_size=5), pairs, "regression", 0)


# ----------------------------------------------------------------------------- MovieLens tokens
def test_movielens_tokens_with_side_features(ml100k):
    in0, in1, v0, v1 = movielens_tokens(ml100k, side_features=False)
    assert in0.shape == (943, 1) and in1.shape == (1682, 1) and (v0, v1) == (943, 1682)
    in0, in1, v0, v1 = movielens_tokens(ml100k, side_features=True)
    assert in0.shape == (943, 4)  # user, age group, sex, occupation
    assert (in0[:, 0] == np.arange(943)).all() and in0[:, 1:].min() >= 943 and in0.max() < v0
    assert v0 == 943 + 7 + 2 + 21
    assert (in1[:, 0] == np.arange(1682)).all() and in1.max() < v1
    genres = in1[:, 1:-1]
    assert ((genres == PAD) | (genres >= 1682)).all()


def test_joint_table_offsets_movie_tokens(small_synthetic):
    data, _ = small_synthetic
    model = build_pair(small(tied_token_embedding_weight=True), data, "regression", 0)
    assert model.vocab_sizes == (data.n_users + data.n_items,) * 2
    assert int(model.in1_tokens[...].min()) == data.n_users


# ----------------------------------------------------------------------------- learning
def _fit(cfg: PairConfig, train, val, task: str, **train_kw):
    module = build_pair(cfg, train, task, 0)
    run = RunConfig(model="pair", patience=3, task=task, quiet=True, **{"epochs": 15, "batch_size": 256, "learning_rate": 3e-3,
                                                 **train_kw})
    model = Model.split(module)
    predict = make_predict(model, chunk=4096)
    val_in = {k: jnp.asarray(v) for k, v in pair_inputs(val, task=task).items()}

    def validate(params):
        p = np.asarray(predict(params, val_in))
        y = np.asarray(val_in["label"])
        if task == "regression":
            return {"val_rmse": float(np.sqrt(np.mean((p - y) ** 2)))}
        return {"val_accuracy": float(np.mean((p > 0) == (y > 0.5))),
                "val_log_loss": float(np.mean(np.logaddexp(0, p) - y * p))}

    monitor = "val_rmse" if task == "regression" else "val_log_loss"
    result = fit(model, pair_inputs(train, task=task), run, task=task, validate=validate, monitor=monitor)
    return validate(result.params), model.bind(result.params)


@pytest.fixture(scope="module")
def synthetic_split(small_synthetic):
    from recjax.data.splits import holdout_split

    data, truth = small_synthetic
    split = holdout_split(data, 0.15, seed=0)
    return split.train, split.test, truth


def test_learns_the_planted_ratings(synthetic_split):
    train, test, truth = synthetic_split
    # hadamard + concat into a linear head is biased MF, the generator's own form
    cfg = small(enc_dim=16, comparator_list="hadamard,concat", mlp_layers=0)
    metrics, _ = _fit(cfg, train, test, "regression", learning_rate=1e-2, epochs=30)
    global_rmse = float(np.sqrt(np.mean((test.rating - train.rating.mean()) ** 2)))
    floor = truth.noise_floor_rmse(test)
    assert metrics["val_rmse"] < global_rmse - 0.5 * (global_rmse - floor)


def test_learns_the_planted_classes_from_jsonl(synthetic_split, tmp_path):
    train, test, _ = synthetic_split
    for name, part in (("train", train), ("test", test)):
        write_jsonlines(tmp_path / f"{name}.jsonl", ratings_to_pairs(part, binary_threshold=3.5))
    cfg = small(enc_dim=16, mlp_dim=32, output_layer="softmax", jsonl_train=str(tmp_path / "train.jsonl"),
                jsonl_validation=str(tmp_path / "test.jsonl"))
    parts = load_pair_parts(cfg, "binary", 0.05, 0)
    assert parts["test"] is parts["val"] and parts["train"].in0.shape == (len(train), 1)
    metrics, _ = _fit(cfg, parts["train"], parts["val"], "binary")
    majority = max(np.mean(parts["val"].label), 1 - np.mean(parts["val"].label))
    assert metrics["val_accuracy"] > majority + 0.08


def test_negative_sampling_learns_positive_only_pairs(synthetic_split):
    """Only liked pairs (label 1), plus random in1 as label 0: liked test pairs score above disliked ones."""
    train, test, _ = synthetic_split
    liked = train.rating > 3.5
    pos = PairData(train.user[liked, None], train.item[liked, None], np.ones(int(liked.sum()), np.float32))
    cfg = small(enc_dim=8, comparator_list="hadamard,concat", mlp_layers=0, output_layer="softmax",
                negative_sampling_rate=2, l2=0.01)
    module = build_pair(cfg, pos, "binary", 0)
    assert module.vocab_sizes[1] <= train.n_items
    run = RunConfig(model="pair", patience=3, task="binary", quiet=True, epochs=15, batch_size=256, learning_rate=1e-2)
    model = Model.split(module)
    epochs = iter(range(100, 0, -1))  # a validation value that always improves: keep the last epoch
    result = fit(model, pair_inputs(pos, task="binary"), run, task="binary", validate=lambda p: {"v": next(epochs)},
                 monitor="v")
    trained = model.bind(result.params)
    known = test.item < module.vocab_sizes[1]
    score = np.asarray(trained({"in0": jnp.asarray(test.user[known, None]),
                                "in1": jnp.asarray(test.item[known, None])}))
    # negatives follow the liked movies' popularity, so only user-movie affinity separates them
    assert auc(score, test.rating[known] > 3.5) > 0.6


# ----------------------------------------------------------------------------- JSON Lines
def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_jsonl_labels_outside_the_classes_fail(tmp_path):
    _write(tmp_path / "t.jsonl", [{"in0": [1], "in1": [2], "label": 1}, {"in0": [1], "in1": [3], "label": 2}])
    cfg = PairConfig(jsonl_train=str(tmp_path / "t.jsonl"))
    with pytest.raises(ValueError, match=r"t.jsonl: labels must be classes in \[0, 2\)"):
        load_pair_parts(cfg, "binary", 0.5, 0)


def test_jsonl_unseen_token_beyond_the_vocabulary_fails(tmp_path):
    _write(tmp_path / "t.jsonl", [{"in0": [1], "in1": [2], "label": 1}] * 3)
    _write(tmp_path / "v.jsonl", [{"in0": [7], "in1": [2], "label": 0}])
    cfg = PairConfig(jsonl_train=str(tmp_path / "t.jsonl"), jsonl_validation=str(tmp_path / "v.jsonl"))
    with pytest.raises(ValueError, match=r"v.jsonl: in0 token id 7 is outside .* at least 8"):
        load_pair_parts(cfg, "regression", 0.5, 0)
    cfg = dataclasses.replace(cfg, enc0_vocab_size=8)
    parts = load_pair_parts(cfg, "regression", 0.5, 0)
    assert build_pair(cfg, parts["train"], "regression", 0).vocab_sizes == (8, 3)


def test_jsonl_round_trip_through_the_experiment(tmp_path, small_synthetic):
    """Write ratings as Object2Vec JSON Lines, train on the files through experiment.run."""
    from recjax.data.splits import holdout_split
    from recjax.experiment import run
    from recjax.models.pair import PairConfig as Cfg

    data, _ = small_synthetic
    split = holdout_split(data, 0.1, seed=1)
    write_jsonlines(tmp_path / "train.jsonl", ratings_to_pairs(split.train))
    write_jsonlines(tmp_path / "test.jsonl", ratings_to_pairs(split.test))
    cfg = Cfg(**SMALL, jsonl_train=str(tmp_path / "train.jsonl"), jsonl_test=str(tmp_path / "test.jsonl"))
    result = run(RunConfig(model="pair", epochs=2, quiet=True, out=str(tmp_path / "run")), cfg)
    assert {"test_mse", "val_mse", "train_mse"} <= set(result.metrics)
    assert len(result.splits["test"]) == len(split.test)
    assert not (tmp_path / "run" / "embeddings.npz").exists()  # token models have no id vocabulary


def test_jsonl_files_need_a_training_file():
    with pytest.raises(ValueError, match="need jsonl_train"):
        PairConfig(jsonl_test="x.jsonl")


def test_pair_data_inputs_are_token_arrays():
    pairs = PairData.from_lists([[1], [2, 3]], [[4], [5]], [1.0, 0.0])
    arrays = pair_inputs(pairs)
    assert arrays["in0"].tolist() == [[1, PAD], [2, 3]] and arrays["label"].dtype == np.float32


@pytest.mark.slow
def test_refit_works_on_ratings_and_refuses_token_files(tmp_path, small_synthetic):
    from recjax.experiment import run

    cfg = PairConfig(**SMALL)
    result = run(RunConfig(model="pair", dataset="synthetic", split="random", epochs=1, refit=True, quiet=True,
                             out=str(tmp_path / "refit")), cfg)
    assert result.metrics["refit_epochs"] == 1
    data, _ = small_synthetic
    write_jsonlines(tmp_path / "train.jsonl", ratings_to_pairs(data))
    with pytest.raises(ValueError, match="refit is available for rating data only"):
        run(RunConfig(model="pair", epochs=1, refit=True, quiet=True, out=str(tmp_path / "tokens")),
            dataclasses.replace(cfg, jsonl_train=str(tmp_path / "train.jsonl")))
