"""Model families, each a Flax NNX module with a config dataclass, and rating baselines.

Each module declares its :class:`~recjax.models.base.Capabilities` (the contract of
:mod:`recjax.models.base`); :data:`recjax.families.MODELS` registers the families a run
trains.
"""

from __future__ import annotations

from recjax.models.als import ALS, IALS, ALSConfig, IALSConfig
from recjax.models.capabilities import Capabilities
from recjax.models.baselines import EASE, BiasModel, GlobalMean, ItemMean, MostPopular, UserMean
from recjax.models.dae import DAE, DAEConfig
from recjax.models.dnn import DNN, DNNConfig
from recjax.models.ease import EASEConfig, EASEModel
from recjax.models.mf import MF, MFConfig
from recjax.models.pair import PairConfig, PairModel
from recjax.models.softmax import SoftmaxConfig, SoftmaxModel

__all__ = ["Capabilities", "MF", "MFConfig", "PairModel",
           "PairConfig", "DNN", "DNNConfig", "SoftmaxModel", "SoftmaxConfig", "DAE", "DAEConfig", "GlobalMean",
           "UserMean", "ItemMean", "BiasModel", "MostPopular", "EASE", "IALS", "IALSConfig", "ALS", "ALSConfig",
           "EASEModel", "EASEConfig"]
