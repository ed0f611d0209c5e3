"""Rating data: MovieLens loaders, users' own data, the :class:`Ratings` type, splits and generators."""

from recjax.data.dataset import Ratings, UnknownIdError, Vocabulary
from recjax.data.download import (
    DATASETS,
    ChecksumError,
    DatasetNotFoundError,
    cache_dir,
    download,
    resolve,
)
from recjax.data.frame import ratings_from_pandas, read_ratings
from recjax.data.jsonlines import PAD, PairData, ratings_to_pairs, read_jsonlines, write_jsonlines
from recjax.data.movielens import MalformedFileError, genre_matrix, load_movielens, read_split
from recjax.data.splits import (
    PREDEFINED_SPLITS,
    SPLIT_METHODS,
    Split,
    Splits,
    carve_validation,
    holdout_split,
    kfold,
    per_user_split,
    predefined_split,
    split_ratings,
    temporal_split,
)
from recjax.data.synthetic import SyntheticTruth, synthetic_ratings

__all__ = [
    "DATASETS",
    "PAD",
    "PREDEFINED_SPLITS",
    "PairData",
    "SPLIT_METHODS",
    "Split",
    "Splits",
    "SyntheticTruth",
    "carve_validation",
    "holdout_split",
    "kfold",
    "per_user_split",
    "predefined_split",
    "ratings_from_pandas",
    "ratings_to_pairs",
    "read_jsonlines",
    "read_ratings",
    "split_ratings",
    "synthetic_ratings",
    "temporal_split",
    "write_jsonlines",
    "ChecksumError",
    "DatasetNotFoundError",
    "MalformedFileError",
    "Ratings",
    "UnknownIdError",
    "Vocabulary",
    "cache_dir",
    "download",
    "genre_matrix",
    "load_movielens",
    "read_split",
    "resolve",
]
