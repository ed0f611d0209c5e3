"""Model families, each a Flax NNX module with a config dataclass, and rating baselines.

Each module declares its :class:`~recjax.models.capabilities.Capabilities` (the
contract of :mod:`recjax.models.base`); :data:`recjax.families.MODELS` registers the
families a run trains.

A lazy namespace (PEP 562): a name is imported from its module on first use, so
importing a submodule imports only what that module needs (``from
recjax.models.baselines import EASE`` imports neither JAX nor Flax).
"""

from recjax._lazy import lazy_getattr as _lazy_getattr

# Each public name and the module it is imported from on first use.
_MODULES: dict[str, tuple[str, ...]] = {
    "recjax.models.capabilities": ("Capabilities",),
    "recjax.models.mf": ("MF", "MFConfig"),
    "recjax.models.pair": ("PairModel", "PairConfig"),
    "recjax.models.dnn": ("DNN", "DNNConfig"),
    "recjax.models.softmax": ("SoftmaxModel", "SoftmaxConfig"),
    "recjax.models.dae": ("DAE", "DAEConfig"),
    "recjax.models.baselines": ("GlobalMean", "UserMean", "ItemMean", "BiasModel", "MostPopular", "EASE"),
    "recjax.models.als": ("IALS", "IALSConfig", "ALS", "ALSConfig"),
    "recjax.models.ease": ("EASEModel", "EASEConfig"),
}

__all__ = [name for names in _MODULES.values() for name in names]

#: Import a public name from its module on first use, then keep it here.
__getattr__ = _lazy_getattr(__name__, {name: module for module, names in _MODULES.items() for name in names},
                            globals())


def __dir__() -> list[str]:
    """The public names, loaded or not."""
    return sorted(__all__)
