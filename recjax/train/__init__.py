"""The training core: pure steps, compiled epochs, the loop, optimisers and checkpoints."""

from recjax.train.checkpoint import CheckpointError, Checkpoints
from recjax.train.loop import EarlyStopping, FitResult, fit
from recjax.train.losses import (
    masked_mean,
    sigmoid_binary_cross_entropy,
    softmax_cross_entropy_with_integer_labels,
    squared_error,
)
from recjax.train.optim import make_optimizer, make_schedule
from recjax.train.step import Model, TrainState, make_epoch, make_predict, make_train_step

__all__ = [
    "CheckpointError",
    "Checkpoints",
    "EarlyStopping",
    "FitResult",
    "Model",
    "TrainState",
    "fit",
    "make_epoch",
    "make_optimizer",
    "make_predict",
    "make_schedule",
    "make_train_step",
    "masked_mean",
    "sigmoid_binary_cross_entropy",
    "softmax_cross_entropy_with_integer_labels",
    "squared_error",
]
