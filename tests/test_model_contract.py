"""The model contract, checked once for every registered family (implicit's
``RecommenderBaseTestMixin`` is the model): a family registered in
``recjax.families.MODELS`` gets all of these tests by registering.

For each family: what it declares (:class:`recjax.models.base.Capabilities`) it has
(the protocols of :mod:`recjax.models.base`); one short epoch on the synthetic
generator trains, saves and reopens (``recjax.runs.Run.open``) with identical
predictions and rankings; any trained module is ranked, blended and evaluated
through the same calls; its ranking vectors order items as its own scores do; a
planted checkerboard (two user groups x two item groups, each user liking only its
own group) is ranked right, own group first; a new user is folded in (or refused
with a clear ``ValueError`` where the family declares it cannot); and every
hyper-parameter of its config changes the output (Surprise's ``test_SVD_parameters``),
except those listed in :data:`UNCHANGED` with the reason.

Per-family settings live in the small tables below (a family without an entry runs
at its defaults; a config field of a type that cannot be varied automatically asks
for an entry in :data:`VARIANTS`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import pytest

from recjax.config import RunConfig
from recjax.data import Ratings, Vocabulary, split_ratings, synthetic_ratings
from recjax.data.bags import bags_from_csr, user_rows
from recjax.evaluation.compare import evaluate_run
from recjax.evaluation.ensemble import blend
from recjax.evaluation.experiment import Experiment
from recjax.evaluation.protocol import RankingTask, evaluate_ranking
from recjax.families import MODELS
from recjax.models.base import BagModel, Embedder, FoldIn, PairScorer, Ranker, fold_in_items
from recjax.models.capabilities import Capabilities, capabilities_of
from recjax.models.baselines import MostPopular
from recjax.scoring import EmbeddingScorer, FunctionScorer, as_scorer
from recjax.train.step import Model, TrainState, make_train_step

FAMILIES = sorted(MODELS)

# small shapes per family (the recommended ones are sized for ml-100k)
SMALL: dict[str, dict[str, Any]] = {
    "mf": dict(embedding_dim=8),
    "dnn": dict(embedding_dim=8, hidden_dims="8"),
    "pair": dict(enc_dim=8, enc0_token_embedding_dim=8, enc1_token_embedding_dim=8, mlp_dim=8),
    "softmax": dict(embedding_dim=8, hidden_dims="8"),
    "dae": dict(dims="8"),
    "ials": dict(embedding_dim=8),
    "als": dict(embedding_dim=8),
    "ease": dict(l2=10.0),
}

# the checkerboard: epochs, learning rate and batch size that learn it (adam)
CHECKERBOARD: dict[str, dict[str, Any]] = {
    "mf": dict(epochs=40, learning_rate=0.05, batch_size=64),
    "dnn": dict(epochs=40, learning_rate=0.02, batch_size=64),
    "pair": dict(epochs=40, learning_rate=0.02, batch_size=64),
    "softmax": dict(epochs=60, learning_rate=0.02, batch_size=8),
    "dae": dict(epochs=60, learning_rate=0.02, batch_size=8),
    "ease": dict(epochs=1),  # its closed form: one exact "sweep"
}
# families that learn from which items each user chose, whatever the rating: their
# checkerboard has no ratings of the other group (an interaction would be a positive)
IMPLICIT_FEEDBACK = {"ials", "ease"}
CHECKERBOARD_CONFIG: dict[str, dict[str, Any]] = {  # on top of SMALL
    "pair": dict(dropout=0.0), "dnn": dict(dropout=0.0, input_dropout=0.0), "dae": dict(dropout=0.3),
    "softmax": dict(targets_per_user=2), "ials": dict(embedding_dim=2), "ease": dict(l2=1.0),
}

# hyper-parameters: field -> changed value, or (changed value, {field: value} both
# configs share, e.g. the encoder the field belongs to; "task": the task they train)
VARIANTS: dict[str, dict[str, Any]] = {
    "mf": dict(num_negatives=(2, dict(task="binary")), gravity=(10.0, dict(init_std=0.3))),
    "dnn": dict(hidden_dims="8,8", dropout=0.25),
    "pair": dict(enc0_network="hcnn", enc1_network="hcnn", enc0_layers=2, enc1_layers=2, enc0_cnn_filter_width=(5, dict(enc0_network="hcnn")),
                 enc1_cnn_filter_width=(5, dict(enc1_network="hcnn")), comparator_list="hadamard",
                 mlp_activation="tanh", dropout=0.35, negative_sampling_rate=(2, dict(task="binary"))),
    "softmax": dict(hidden_dims="8,8", negatives="uniform", num_sampled=(8, dict(negatives="uniform")),
                    targets_per_user=2),
    "dae": dict(dims="8,4", dropout=0.3),
}
# hyper-parameters that cannot change the output of a model trained on given parts, and why
_SWEEP_ONLY = ("how a sweep solves its rows, which the two SGD steps of this test never run; "
               "tests/test_als.py checks it against the exact minimiser")
UNCHANGED: dict[str, dict[str, str]] = {
    "ials": {"solver": _SWEEP_ONLY, "cg_steps": _SWEEP_ONLY,
             "reg_exponent": "the frequency scaling of lambda in a sweep's row solves (" + _SWEEP_ONLY + ")"},
    "als": {"solver": _SWEEP_ONLY, "cg_steps": _SWEEP_ONLY,
            "reg_exponent": "the count scaling of lambda in a sweep's row solves (" + _SWEEP_ONLY + ")"},
    "pair": {
        "output_layer": "'auto' resolves to the task's output layer: naming it builds the same model, "
                        "and the other layer contradicts the task and is refused",
        "num_classes": "the softmax output layer trains as the binary task, which has 2 classes; "
                       "other values are refused",
        "jsonl_train": "chooses the data source (Object2Vec files read by ModelSpec.load), not the "
                       "model; tests/test_pair.py trains on such files",
        "jsonl_validation": "a data source, as jsonl_train",
        "jsonl_test": "a data source, as jsonl_train",
        "enc0_vocab_size": "a larger token table only adds rows no token looks up, and the rows "
                           "that are looked up draw the same initial values",
        "enc1_vocab_size": "as enc0_vocab_size",
    },
}


# ----------------------------------------------------------------------------- data
def _with_user_info(data: Ratings, seed: int) -> Ratings:
    """Age, sex and occupation per user (MovieLens' user metadata), for side features."""
    rng = np.random.default_rng(seed)
    n = data.n_users
    info = pd.DataFrame({"age": rng.integers(15, 70, n).astype(float), "sex": rng.choice(["F", "M"], n),
                         "occupation": rng.choice(["artist", "doctor", "engineer"], n)})
    return dataclasses.replace(data, user_info=info)


@pytest.fixture(scope="module")
def tiny() -> dict[str, Ratings]:
    """The synthetic generator's ratings (item genres and years, user metadata added),
    split at random into train / val / test."""
    data, _ = synthetic_ratings(30, 24, 300, seed=1)
    return split_ratings(_with_user_info(data, 1), "random", seed=0)._asdict()


def _checkerboard(implicit: bool, users_per_group: int = 10, items_per_group: int = 12,
                  seed: int = 0) -> dict[str, Ratings]:
    """Two user groups x two item groups. Each user rates 8 of its own group's items 5
    and (unless ``implicit``: then it rates nothing else) 8 of the other group's 1; per
    user one rating of each kind is validation and two of each are test."""
    rng = np.random.default_rng(seed)
    rows = []
    n_users, n_items = 2 * users_per_group, 2 * items_per_group
    for u in range(n_users):
        group = u // users_per_group
        for own, rating in ((True, 5.0), (False, 1.0)):
            if implicit and not own:
                continue
            first = (group if own else 1 - group) * items_per_group
            items = first + rng.permutation(items_per_group)[:8]
            for n, i in enumerate(items):
                rows.append((u, i, rating, "test" if n < 2 else "val" if n == 2 else "train"))
    user, item, rating, part = (np.array(c) for c in zip(*rows))
    data = Ratings.from_raw(user, item, rating.astype(float), np.arange(len(user)),
                            users=Vocabulary.from_ids(np.arange(n_users), "user"),
                            items=Vocabulary.from_ids(np.arange(n_items), "item"))
    return {name: data.subset(part == name) for name in ("train", "val", "test")}


def _group(index: np.ndarray, per_group: int) -> np.ndarray:
    return np.asarray(index) // per_group


# ----------------------------------------------------------------------------- declaration
@pytest.mark.parametrize("family", FAMILIES)
def test_the_family_declares_what_it_can_do(family, tiny):
    spec = MODELS[family]
    caps = spec.capabilities
    assert isinstance(caps, Capabilities) and spec.module is not None
    assert caps.pairs or caps.bag, "a model scores pairs or takes bags of items"
    assert caps.pairs or caps.ranks, "every model can be ranked: by ranking vectors or dense scores"
    module = spec.build(spec.config(**SMALL.get(family, {})), tiny["train"], task=spec.tasks[0], seed=0)
    assert isinstance(module, spec.module) and capabilities_of(module) == caps
    # what it declares, it has (protocols are structural: the declaration is what callers ask)
    protocols = {"pairs": PairScorer, "bag": BagModel, "fold_in": FoldIn}
    if not caps.bag:
        protocols.update(ranks=Ranker, embeds=Embedder)
    for name, protocol in protocols.items():
        if getattr(caps, name):
            assert isinstance(module, protocol), f"{family} declares {name} but is no {protocol.__name__}"
    if caps.bag:
        assert caps.embeds and caps.ranks, "a bag model embeds and ranks the bags it is given"


# ----------------------------------------------------------------------------- one short epoch
@pytest.fixture(scope="module", params=FAMILIES)
def short_run(request, tiny, tmp_path_factory):
    """One epoch of each family on the synthetic generator's ratings, written as a run
    folder: (family, RunResult, Run.open of the folder)."""
    from recjax.experiment import run
    from recjax.runs import Run

    family = request.param
    spec = MODELS[family]
    out = tmp_path_factory.mktemp(family) / "run"
    cfg = RunConfig(model=family, task=spec.tasks[0], epochs=1, batch_size=64, optimizer="adam",
                      learning_rate=0.01, quiet=True, out=str(out))
    result = run(cfg, spec.config(**SMALL.get(family, {})), splits=tiny)
    return family, result, Run.open(out)


def _bags(run) -> np.ndarray | None:
    """The bags a run ranks its test users with (train + validation movies), for bag models."""
    spec = MODELS[run.train_config.model]
    return spec.prepare(run.model_config, run.splits)["test"]["bag"] if spec.capabilities.bag else None


def test_one_epoch_trains_saves_and_reopens_identically(short_run):
    family, result, opened = short_run
    caps = MODELS[family].capabilities
    assert result.metrics["epochs_run"] == 1
    assert all(np.isfinite(v) for k, v in result.metrics.items() if k.startswith(("val_", "test_")))
    reopened = opened.model()
    assert capabilities_of(reopened) == caps
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)),
                 Model.split(result.module).params, Model.split(reopened).params)
    users = np.arange(opened.data.n_users)
    bags = _bags(opened)
    fresh = as_scorer(result.module, bags=bags).topk(users, 10, opened.rated)
    saved = opened.scorer("dot").topk(users, 10, opened.rated)
    assert np.array_equal(fresh.ids, saved.ids) and np.array_equal(fresh.scores, saved.scores)
    if caps.pairs:
        from recjax.scoring import module_predictions

        spec = MODELS[family]
        inputs = spec.inputs(opened.splits["test"], task=opened.train_config.task)
        predicted, _ = opened.rating_predictions("test")
        np.testing.assert_array_equal(predicted, module_predictions(result.module, inputs))
    if caps.embeds:  # the vectors in embeddings.npz are the model's
        train_inputs = MODELS[family].examples(opened.model_config, opened.splits)["train"]
        users_v, items_v = (reopened.embeddings(train_inputs) if caps.bag else reopened.embeddings())
        np.testing.assert_array_equal(opened.user_embeddings, np.asarray(users_v, np.float32))
        np.testing.assert_array_equal(opened.item_embeddings, np.asarray(items_v, np.float32))


def test_any_trained_model_is_ranked_blended_and_evaluated_alike(short_run):
    family, _, opened = short_run
    caps = MODELS[family].capabilities
    task = RankingTask.from_run(opened)
    module = opened.model()
    scorer = as_scorer(module, bags=task.train)
    assert isinstance(scorer, (EmbeddingScorer, FunctionScorer)) and scorer.n_items == task.n_items
    metrics = evaluate_ranking(module, task, 5)
    assert {"precision@5", "ndcg@5", "coverage@5"} <= set(metrics)
    assert all(np.isfinite(v) for v in metrics.values())
    models = {family: module, "most popular": MostPopular().fit(opened.splits["train"])}
    table = Experiment(task, models, k=5).run().table
    assert table[family] == metrics
    mixed = evaluate_ranking(blend([opened.scorer("dot"), MostPopular().fit(opened.splits["train"])]), task, 5)
    assert np.isfinite(mixed["ndcg@5"])
    if caps.bag:
        with pytest.raises(TypeError, match="bags of items"):
            as_scorer(module)
    else:
        top = task.rank(module, 5)
        assert np.array_equal(top.ids, as_scorer(module).topk(task.users, 5, task.train).ids)
    assert np.isfinite(evaluate_run(opened, k=5, baselines=False)[opened.name]["ndcg@5"])


def test_ranking_vectors_order_items_as_the_model_scores_them(short_run):
    family, _, opened = short_run
    caps = MODELS[family].capabilities
    module = opened.model()
    n_users, n_items = opened.data.n_users, opened.data.n_items
    if caps.bag:
        bags = bags_from_csr(RankingTask.from_run(opened).train)
        users, items = module.ranking_vectors(bags)
        own = np.asarray(module({"bag": jnp.asarray(bags)}))
    elif caps.ranks and module.ranking_vectors() is not None:
        users, items = module.ranking_vectors()
        u, i = np.meshgrid(np.arange(n_users), np.arange(n_items), indexing="ij")
        own = np.asarray(module({"user": jnp.asarray(u.ravel()), "item": jnp.asarray(i.ravel())}))
        own = own.reshape(n_users, n_items)
    else:
        pytest.skip(f"{family} is ranked by its own dense scores (no ranking vectors to check)")
    dot = users @ items.T
    order = np.argsort(-dot, axis=1, kind="stable")
    ranked = np.take_along_axis(own, order, 1)
    assert (np.diff(ranked, axis=1) <= 1e-4 * (1 + np.abs(ranked[:, :-1]))).all()


def test_a_new_user_is_folded_in_or_refused(short_run):
    family, _, opened = short_run
    caps = MODELS[family].capabilities
    items = opened.data.items.ids[[0, 3, 5]]
    if not caps.fold_in:
        with pytest.raises(ValueError, match=f"a {family} run cannot fold in a new user"):
            opened.recommend(new_user_items=items, new_user_ratings=[5.0, 4.0, 2.0], N=3)
        assert not isinstance(opened.model(), FoldIn)
        return
    top = opened.recommend(new_user_items=items, new_user_ratings=[5.0, 4.0, 2.0], N=4)
    assert top.ids.shape == (4,) and not set(top.ids.tolist()) & set(items.tolist())
    users, own = opened.fold_in(items, [5.0, 4.0, 2.0])
    index = own.indices
    scores = fold_in_items(opened.model()) @ users[0]
    assert np.allclose(np.sort(scores[np.setdiff1d(np.arange(len(scores)), index)])[::-1][:4], top.scores,
                       rtol=1e-5, atol=1e-6)
    many = opened.recommend(new_user_items=[items, items[:2]], new_user_ratings=[[5.0, 4.0, 2.0], [5.0, 4.0]],
                            N=4)  # two new users in one call: the first answers as alone
    assert len(many.ids) == 2 and many.ids[0].tolist() == top.ids.tolist() and len(many.ids[1]) == 4


# ----------------------------------------------------------------------------- the checkerboard
@pytest.fixture(scope="module", params=FAMILIES)
def checkerboard(request):
    """Each family trained on the checkerboard (its own epochs and learning rate):
    (family, parts, trained module)."""
    family = request.param
    spec = MODELS[family]
    parts = _checkerboard(implicit=not spec.capabilities.pairs or family in IMPLICIT_FEEDBACK)
    cfg = RunConfig(model=family, task=spec.tasks[0], optimizer="adam", quiet=True,
                      **CHECKERBOARD.get(family, dict(epochs=40, learning_rate=0.01)))
    model_cfg = spec.config(**{**SMALL.get(family, {}), **CHECKERBOARD_CONFIG.get(family, {})})
    model = Model.split(spec.build(model_cfg, parts["train"], task=cfg.task, seed=0))
    inputs = spec.examples(model_cfg, parts, task=cfg.task)
    result = spec.fit(model, inputs["train"], cfg, task=spec.loss or cfg.task, validate=None, monitor=None)
    return family, parts, model.bind(result.params)


def test_the_checkerboard_is_ranked_own_group_first(checkerboard):
    family, parts, module = checkerboard
    task = RankingTask.from_ratings([parts["train"], parts["val"]], parts["test"])
    top = task.rank(module, 3, users=np.arange(task.n_users))
    users_group = _group(np.arange(task.n_users), 10)
    wrong = _group(top.ids, 12) != users_group[:, None]
    assert not wrong.any(), f"{family}: users ranked the other group's items in {wrong.sum()} of the top-3 slots"


def test_a_folded_in_user_gets_their_group(checkerboard):
    family, _, module = checkerboard
    if not capabilities_of(module).fold_in:
        pytest.skip(f"{family} cannot fold in a new user (test_a_new_user_is_folded_in_or_refused)")
    liked = np.array([0, 2, 4, 6])  # group 0's items
    disliked = np.array([12, 14])  # group 1's
    if capabilities_of(module).pairs:  # a rating model learns from the ratings, 5 and 1
        items, ratings = np.concatenate([liked, disliked]), np.array([5.0, 5.0, 5.0, 5.0, 1.0, 1.0])
    else:  # a bag: the items the user chose
        items, ratings = liked, None
    users = module.fold_in(*user_rows([items], module.n_items, None if ratings is None else [ratings]))
    scores = fold_in_items(module) @ users[0]
    scores[items] = -np.inf
    best = np.argsort(-scores, kind="stable")[:3]
    assert (_group(best, 12) == 0).all(), (family, best, scores)


# ----------------------------------------------------------------------------- hyper-parameters
def _variants(family: str) -> dict[str, tuple[Any, dict[str, Any]]]:
    """field -> (changed value, shared settings) for every field not in UNCHANGED."""
    spec = MODELS[family]
    base = spec.config(**SMALL.get(family, {}))
    table = VARIANTS.get(family, {})
    out = {}
    for f in dataclasses.fields(spec.config):
        if f.name in UNCHANGED.get(family, {}):
            continue
        given = table.get(f.name)
        if given is not None:
            out[f.name] = given if isinstance(given, tuple) else (given, {})
            continue
        value = getattr(base, f.name)
        if isinstance(value, bool):
            out[f.name] = (not value, {})
        elif isinstance(value, int):
            out[f.name] = (value + 1, {})
        elif isinstance(value, float):
            out[f.name] = (value * 2 if value else 0.1, {})
        else:
            raise AssertionError(f"{family}.{f.name}: give a changed value in VARIANTS (or the reason "
                                 f"it cannot change the output in UNCHANGED)")
    return out


_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _outputs(family: str, model_cfg: Any, task: str, parts: dict[str, Ratings], train: bool) -> np.ndarray:
    """The model's outputs on fixed probes: at initialisation, or after two SGD steps on
    the whole training part (same seed and data for every config)."""
    spec = MODELS[family]
    module = spec.build(model_cfg, parts["train"], task=task, seed=0)
    if train:
        model = Model.split(module)
        arrays = spec.examples(model_cfg, parts, task=task)["train"]
        batch = {k: jnp.asarray(v) for k, v in arrays.items()}
        batch.setdefault("weight", jnp.ones(len(arrays["label"]), jnp.float32))
        tx = optax.sgd(0.5)
        state = TrainState(model.params, tx.init(model.params), jnp.int32(0), jax.random.key(0))
        # compiled without XLA's slow optimisations: each config is its own program
        step = jax.jit(make_train_step(model, tx, spec.loss or task)).lower(state, batch).compile(_FAST_COMPILE)
        for _ in range(2):
            state, _ = step(state, batch)
        module = model.bind(state.params)
    if spec.capabilities.pairs:
        user, item = np.meshgrid(np.arange(parts["train"].n_users), np.arange(parts["train"].n_items))
        return np.asarray(module({"user": jnp.asarray(user.ravel()), "item": jnp.asarray(item.ravel())}))
    bags = spec.examples(model_cfg, parts)["test"]["bag"]
    return np.asarray(module({"bag": jnp.asarray(bags)}))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_hyper_parameter_changes_the_output(family, tiny):
    spec = MODELS[family]
    for name in UNCHANGED.get(family, {}):
        assert name in {f.name for f in dataclasses.fields(spec.config)}, f"UNCHANGED lists {name}"
    base = SMALL.get(family, {})
    cache: dict[tuple, np.ndarray] = {}

    def outputs(values: dict[str, Any], train: bool) -> np.ndarray:
        values = dict(values)
        task = values.pop("task", spec.tasks[0])
        key = (tuple(sorted(values.items())), task, train)
        if key not in cache:
            cache[key] = _outputs(family, spec.config(**{**base, **values}), task, tiny, train)
        return cache[key]

    same = []
    for name, (value, shared) in _variants(family).items():
        changed = {**shared, name: value}
        before, after = outputs(shared, False), outputs(changed, False)
        if before.shape != after.shape or not np.allclose(before, after, rtol=1e-6, atol=1e-7):
            continue  # visible at initialisation
        before, after = outputs(shared, True), outputs(changed, True)
        if before.shape == after.shape and np.allclose(before, after, rtol=1e-6, atol=1e-7):
            same.append(f"{name}={value!r}")
    assert not same, f"{family}: changing {', '.join(same)} leaves the output unchanged"


# ----------------------------------------------------------------------------- public names
MODEL_LAYER_MODULES = ["recjax.models", "recjax.models.base", "recjax.models.mf", "recjax.models.dnn",
                       "recjax.models.pair", "recjax.models.softmax", "recjax.models.dae",
                       "recjax.models.baselines", "recjax.scoring", "recjax.evaluation.protocol",
                       "recjax.evaluation.compare", "recjax.explore", "recjax.runs", "recjax.experiment",
                       "recjax.metrics"]


def test_public_names_are_public_and_one_name_means_one_thing():
    """The ``__all__`` of the model layers list resolvable public names, and a name public
    in two modules (here or in recjax.retrieval, recjax.evaluation, recjax.data) is the
    same object: no ranking.compare vs pair.compare, explore.recommend vs
    retrieval.recommend, softmax.ranking_metrics vs evaluation.ranking_metrics."""
    import importlib

    seen: dict[str, tuple[str, Any]] = {}
    for name in MODEL_LAYER_MODULES + ["recjax.retrieval", "recjax.evaluation", "recjax.data"]:
        module = importlib.import_module(name)
        for public in module.__all__:
            assert not public.startswith("_"), f"{name}.{public}"
            obj = getattr(module, public)
            if public in seen and seen[public][1] is not obj:
                raise AssertionError(f"{public} means one thing in {seen[public][0]} and another in {name}")
            seen.setdefault(public, (name, obj))


def test_only_families_that_predict_ratings_get_rating_metrics_and_a_rating_scale():
    """iALS's preferences and EASE's scores rank; an RMSE of them, or a clip to 1..5, would
    be a silent wrong answer (Run.predict and evaluate's table ask ModelSpec.predicts_ratings)."""
    predicts = {name: spec.predicts_ratings for name, spec in MODELS.items()}
    assert predicts == {"mf": True, "pair": True, "dnn": True, "softmax": False, "dae": False,
                        "ials": False, "als": True, "ease": False}
