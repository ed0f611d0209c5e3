"""recjax: recommender systems for researchers.

A JAX/Flax numerical core (models, optax optimisers, jit-compiled epochs) and a
C-accelerated exact top-k retrieval kernel, over MovieLens-style rating data.

This namespace holds what research code needs, each name imported from its
module only when first used: ``import recjax`` imports neither JAX nor the
compiled kernel (the data names need neither; a model config, :func:`run` or
:func:`topk` bring them in). Everything else lives in the submodules
(``recjax.data``, ``recjax.models``, ``recjax.train``, ``recjax.retrieval``, ...).

Data
    :class:`Ratings` (ratings with contiguous indices), :class:`Vocabulary`,
    :class:`UnknownIdError`; :func:`load_movielens`, :func:`read_ratings` (a CSV or
    Parquet file; a DataFrame: ``Ratings.from_pandas``), :func:`synthetic_ratings`;
    :func:`split_ratings` (train / val / test as :class:`Splits`),
    :func:`predefined_split` (ml-100k's published splits, named in
    :data:`PREDEFINED_SPLITS`).
Training
    :class:`RunConfig` and one config per model family (:class:`MFConfig`,
    :class:`PairConfig`, :class:`DNNConfig`, :class:`SoftmaxConfig`,
    :class:`DAEConfig`, :class:`ALSConfig`, :class:`IALSConfig`, :class:`EASEConfig`);
    :data:`MODELS` (the families by ``--model`` name); :func:`run` trains into a run
    folder (a family's defaults unless a model config is given) and returns a
    :class:`RunResult`; :class:`Run` opens a folder (:class:`RunFolderError` if it is
    unusable) and answers queries with raw ids; :class:`Embeddings`.
Retrieval
    :func:`topk` (exact, blocked, the compiled kernel on CPU) returning
    :class:`TopK`, and :func:`similar_items`.
Evaluation
    The ranking protocol (:class:`RankingTask`, :func:`evaluate_ranking`), strong
    generalisation (:func:`strong_generalization`), paired significance
    (:func:`paired_bootstrap`); :class:`Experiment` (a protocol, named models, metrics:
    their table and paired bootstrap); :func:`evaluate_run` (a run folder under its
    split's protocol, with baselines); ensembles (:func:`blend`,
    :func:`average_predictions`); baselines (:class:`EASE`, :class:`MostPopular`). The
    metric functions (rmse, ndcg_at_k, diversity, ...) are in :mod:`recjax.metrics`.
Search
    :func:`tune`: a fair hyper-parameter search (Optuna, the ``tune`` extra) on the
    validation carve, every trial a run folder, returning a :class:`TuneResult`.

Example
-------
>>> import numpy as np
>>> import recjax
>>> data, _ = recjax.synthetic_ratings(n_users=60, n_items=40, n_ratings=1200, seed=0)
>>> parts = recjax.split_ratings(data, "random", test_fraction=0.2, val_fraction=0.0, seed=0)
>>> len(parts.train), len(parts.test)
(960, 240)
>>> task = recjax.RankingTask.from_ratings(parts.train, parts.test)
>>> scores = recjax.evaluate_ranking(recjax.EASE(l2=10.0).fit(parts.train), task, k=5)
>>> 0.0 <= scores["ndcg@5"] <= 1.0
True
>>> items = np.eye(3, dtype=np.float32)
>>> recjax.topk(np.array([[0.2, 0.9, 0.5]], np.float32), items, 2).ids.tolist()
[[1, 2]]
>>> from recjax.metrics import rmse
>>> float(rmse(np.array([3.0, 4.0]), np.array([3.0, 2.0])))
1.4142135623730951
"""

from recjax._lazy import lazy_getattr as _lazy_getattr
from recjax._version import __version__

# The public names, declared once: each with the module it is imported from on first use.
_MODULES: dict[str, tuple[str, ...]] = {
    "recjax.data": (
        "Ratings", "Vocabulary", "UnknownIdError", "Splits", "split_ratings", "read_ratings",
        "load_movielens", "predefined_split", "synthetic_ratings", "PREDEFINED_SPLITS",
    ),
    "recjax.config": ("RunConfig",),
    "recjax.models.mf": ("MFConfig",),
    "recjax.models.pair": ("PairConfig",),
    "recjax.models.dnn": ("DNNConfig",),
    "recjax.models.softmax": ("SoftmaxConfig",),
    "recjax.models.dae": ("DAEConfig",),
    "recjax.models.als": ("ALSConfig", "IALSConfig"),
    "recjax.models.ease": ("EASEConfig",),
    "recjax.families": ("MODELS",),
    "recjax.experiment": ("run", "RunResult"),
    "recjax.runs": ("Run", "Embeddings", "RunFolderError"),
    "recjax.retrieval": ("topk", "TopK", "similar_items"),
    "recjax.evaluation.protocol": ("RankingTask", "evaluate_ranking"),
    "recjax.evaluation.strong": ("strong_generalization",),
    "recjax.evaluation.significance": ("paired_bootstrap",),
    "recjax.evaluation.experiment": ("Experiment",),
    "recjax.evaluation.compare": ("evaluate_run",),
    "recjax.evaluation.ensemble": ("blend", "average_predictions"),
    "recjax.models.baselines": ("EASE", "MostPopular"),
    "recjax.tuning.study": ("tune", "TuneResult"),
}
_MODULE_OF = {name: module for module, names in _MODULES.items() for name in names}
__all__ = list(_MODULE_OF)

#: Import a public name from its module on first use (PEP 562), then keep it here.
__getattr__ = _lazy_getattr(__name__, _MODULE_OF, globals())


def __dir__() -> list[str]:
    """The public names (loaded or not) and ``__version__``."""
    return sorted([*__all__, "__version__"])
