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
    Parquet file), :func:`ratings_from_pandas`, :func:`synthetic_ratings`;
    :func:`split_ratings` (train / val / test as :class:`Splits`),
    :func:`predefined_split` (ml-100k's published splits, named in
    :data:`PREDEFINED_SPLITS`).
Training
    :class:`RunConfig` and one config per model family (:class:`MFConfig`,
    :class:`PairConfig`, :class:`DNNConfig`, :class:`SoftmaxConfig`,
    :class:`DAEConfig`, :class:`ALSConfig`, :class:`IALSConfig`, :class:`EASEConfig`);
    :func:`run` trains into a run folder and returns a
    :class:`RunResult`; :class:`Run` opens a folder (:class:`RunFolderError` if it is
    unusable) and answers queries with raw ids; :class:`Embeddings`.
Retrieval
    :func:`topk` (exact, blocked, the compiled kernel on CPU) returning
    :class:`TopK`, and :func:`similar_items`.
Evaluation
    The ranking protocol (:class:`RankingTask`, :func:`evaluate_ranking`), strong
    generalisation (:func:`strong_generalization`), paired significance
    (:func:`paired_bootstrap`); rating
    metrics (:func:`rmse`, :func:`mae`, :func:`mse`); ranking metrics
    (:func:`precision_at_k`, :func:`recall_at_k`, :func:`ndcg_at_k`,
    :func:`map_at_k`, :func:`mrr`, :func:`hit_rate`); beyond accuracy
    (:func:`catalogue_coverage`, :func:`diversity`, :func:`novelty`); ensembles
    (:func:`blend`, :func:`average_predictions`); baselines (:class:`EASE`,
    :class:`MostPopular`).
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
>>> scores = recjax.evaluate_ranking(recjax.EASE(lam=10.0).fit(parts.train), task, k=5)
>>> 0.0 <= scores["ndcg@5"] <= 1.0
True
>>> items = np.eye(3, dtype=np.float32)
>>> recjax.topk(np.array([[0.2, 0.9, 0.5]], np.float32), items, 2).ids.tolist()
[[1, 2]]
>>> float(recjax.rmse(np.array([3.0, 4.0]), np.array([3.0, 2.0])))
1.4142135623730951
"""

from recjax._lazy import lazy_getattr as _lazy_getattr

TYPE_CHECKING = False  # as type checkers read it; importing typing would cost more than recjax

__version__ = "0.1.0"

# Each public name and the module it is imported from on first use.
_MODULES: dict[str, tuple[str, ...]] = {
    "recjax.data": (
        "Ratings", "Vocabulary", "UnknownIdError", "Splits", "split_ratings", "read_ratings",
        "ratings_from_pandas", "load_movielens", "predefined_split", "synthetic_ratings",
        "PREDEFINED_SPLITS",
    ),
    "recjax.config": ("RunConfig",),
    "recjax.models.mf": ("MFConfig",),
    "recjax.models.pair": ("PairConfig",),
    "recjax.models.dnn": ("DNNConfig",),
    "recjax.models.softmax": ("SoftmaxConfig",),
    "recjax.models.dae": ("DAEConfig",),
    "recjax.models.als": ("ALSConfig", "IALSConfig"),
    "recjax.models.ease": ("EASEConfig",),
    "recjax.experiment": ("run", "RunResult"),
    "recjax.runs": ("Run", "Embeddings", "RunFolderError"),
    "recjax.retrieval": ("topk", "TopK", "similar_items"),
    "recjax.evaluation.protocol": ("RankingTask", "evaluate_ranking"),
    "recjax.evaluation.strong": ("strong_generalization",),
    "recjax.evaluation.significance": ("paired_bootstrap",),
    "recjax.metrics": (
        "rmse", "mae", "mse", "precision_at_k", "recall_at_k", "ndcg_at_k", "map_at_k", "mrr",
        "hit_rate", "catalogue_coverage", "diversity", "novelty",
    ),
    "recjax.evaluation.ensemble": ("blend", "average_predictions"),
    "recjax.models.baselines": ("EASE", "MostPopular"),
    "recjax.tuning.study": ("tune", "TuneResult"),
}
_MODULE_OF = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [
    # data
    "Ratings", "Vocabulary", "UnknownIdError", "Splits", "split_ratings", "read_ratings",
    "ratings_from_pandas", "load_movielens", "predefined_split", "synthetic_ratings",
    "PREDEFINED_SPLITS",
    # configurations
    "RunConfig", "MFConfig", "PairConfig", "DNNConfig", "SoftmaxConfig", "DAEConfig", "ALSConfig",
    "IALSConfig", "EASEConfig",
    # running and run folders
    "run", "RunResult", "Run", "Embeddings", "RunFolderError",
    # retrieval
    "topk", "TopK", "similar_items",
    # the ranking protocols
    "RankingTask", "evaluate_ranking", "strong_generalization", "paired_bootstrap",
    # metrics
    "rmse", "mae", "mse", "precision_at_k", "recall_at_k", "ndcg_at_k", "map_at_k", "mrr",
    "hit_rate", "catalogue_coverage", "diversity", "novelty",
    # ensembles and baselines
    "blend", "average_predictions", "EASE", "MostPopular",
    # hyper-parameter search (the tune extra: Optuna)
    "tune", "TuneResult",
]


#: Import a public name from its module on first use (PEP 562), then keep it here.
__getattr__ = _lazy_getattr(__name__, _MODULE_OF, globals())


def __dir__() -> list[str]:
    """The public names (loaded or not) and ``__version__``."""
    return sorted([*__all__, "__version__"])


if TYPE_CHECKING:  # what static type checkers and IDEs see; nothing is imported at run time
    from recjax.config import RunConfig
    from recjax.data import (
        PREDEFINED_SPLITS,
        Ratings,
        Splits,
        UnknownIdError,
        Vocabulary,
        load_movielens,
        predefined_split,
        ratings_from_pandas,
        read_ratings,
        split_ratings,
        synthetic_ratings,
    )
    from recjax.evaluation.ensemble import average_predictions, blend
    from recjax.metrics import (
        catalogue_coverage,
        diversity,
        hit_rate,
        mae,
        map_at_k,
        mrr,
        mse,
        ndcg_at_k,
        novelty,
        precision_at_k,
        recall_at_k,
        rmse,
    )
    from recjax.evaluation.protocol import RankingTask, evaluate_ranking
    from recjax.evaluation.significance import paired_bootstrap
    from recjax.evaluation.strong import strong_generalization
    from recjax.experiment import RunResult, run
    from recjax.models.als import ALSConfig, IALSConfig
    from recjax.models.baselines import EASE, MostPopular
    from recjax.models.dae import DAEConfig
    from recjax.models.dnn import DNNConfig
    from recjax.models.ease import EASEConfig
    from recjax.models.mf import MFConfig
    from recjax.models.pair import PairConfig
    from recjax.models.softmax import SoftmaxConfig
    from recjax.retrieval import TopK, similar_items, topk
    from recjax.runs import Embeddings, Run, RunFolderError
    from recjax.tuning.study import TuneResult, tune
