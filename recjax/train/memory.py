"""Will a training run fit in memory? Checked from shapes, before anything is allocated.

A run that cannot fit should end with one line saying so, not with the operating
system's out-of-memory killer or an XLA allocation traceback minutes later.
:func:`recjax.train.loop.fit` checks twice:

1. before the training state exists: its exact size from ``jax.eval_shape`` (the
   parameters as laid out on the mesh, plus the optimiser state: adam and adamw
   keep two more copies of every parameter, adagrad one, sgd none) and the
   training data, against :func:`available_memory`;
2. after compiling the epoch, before running it: XLA's own account of the working
   memory one epoch needs beyond its inputs (gradients, activations of a batch,
   the shuffled order), from ``compiled.memory_analysis()``.

Model builders allocate their tables when called, so a caller that builds a model
from a configuration checks first with :func:`abstract_params` (the parameter
shapes of ``build()`` without running it) and :func:`check_training_memory`.

Example
-------
>>> import jax, jax.numpy as jnp
>>> from recjax.train.memory import check_training_memory, format_bytes
>>> params = {"user_embedding": jax.ShapeDtypeStruct((943, 100_000_000), jnp.float32)}
>>> format_bytes(943 * 100_000_000 * 4 * 3)
'1.0 TiB'
>>> check_training_memory(params, optimizer="adam", available=(22 << 30, "this machine"))
Traceback (most recent call last):
...
ValueError: training needs about 1.0 TiB for its parameters and adam state (94,300,000,000 float32 parameters x 3: the parameters and adam's 2 moment copies; the largest, user_embedding [943, 100000000]); this machine has 22.0 GiB available; lower --embedding-dim
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

__all__ = [
    "available_memory", "format_bytes", "abstract_params", "check_training_memory",
    "check_epoch_memory",
]

#: Extra copies of the parameters each optimiser keeps as state.
OPTIMIZER_COPIES = {"sgd": 0, "adagrad": 1, "adam": 2, "adamw": 2}


def format_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _meminfo_available(path: str = "/proc/meminfo") -> int | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_available(root: str = "/sys/fs/cgroup") -> int | None:
    """Room left under a cgroup v2 (or v1) memory limit: a container's real ceiling,
    which /proc/meminfo does not show."""
    for limit_file, usage_file in (("memory.max", "memory.current"),
                                   ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        try:
            limit = Path(root, limit_file).read_text().strip()
            usage = Path(root, usage_file).read_text().strip()
        except OSError:
            continue
        if limit == "max" or not limit.isdigit() or not usage.isdigit() or int(limit) >= 1 << 60:
            return None
        return max(int(limit) - int(usage), 0)
    return None


def host_available_memory() -> int | None:
    """Bytes the host can still give this process: ``MemAvailable`` (Linux), capped by a
    cgroup memory limit; else the physical memory (``sysconf``); None when unknown."""
    found = [m for m in (_meminfo_available(), _cgroup_available()) if m is not None]
    if found:
        return min(found)
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def available_memory(device: Any = None) -> tuple[int | None, str]:
    """(bytes free for new buffers on ``device``, how to name it in a message).

    CPU devices share the host's memory (:func:`host_available_memory`); an
    accelerator reports its own (``device.memory_stats()``: ``bytes_limit`` minus
    ``bytes_in_use``). None when the backend does not say.
    """
    device = device if device is not None else jax.devices()[0]
    if device.platform == "cpu":
        return host_available_memory(), "this machine"
    try:
        stats = device.memory_stats() or {}
    except Exception:  # backends without memory statistics
        stats = {}
    if "bytes_limit" not in stats:
        return None, f"device {device}"
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0)), f"device {device}"


def _itemsize(leaf: Any) -> int:
    try:
        return int(np.dtype(leaf.dtype).itemsize)
    except TypeError:  # PRNG key arrays: a key is two uint32 words
        return 8


def tree_bytes(tree: Any, shardings: Any = None) -> int:
    """Bytes of a pytree of arrays or ``jax.ShapeDtypeStruct`` leaves; with ``shardings``
    (a matching tree of ``jax.sharding.Sharding``) the bytes one device holds."""
    leaves = jax.tree.leaves(tree)
    if shardings is None:
        return sum(math.prod(np.shape(x)) * _itemsize(x) for x in leaves)
    specs = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
    if len(specs) != len(leaves):
        raise ValueError(f"shardings has {len(specs)} leaves, the tree {len(leaves)}")
    return sum(math.prod(s.shard_shape(np.shape(x))) * _itemsize(x) for x, s in zip(leaves, specs))


def abstract_params(build: Callable[[], Any]) -> dict:
    """The ``nnx.Param`` shapes and dtypes of the module ``build()`` makes, without
    allocating it (``nnx.eval_shape``): a nested dict of ``jax.ShapeDtypeStruct``."""
    from flax import nnx

    module = nnx.eval_shape(build)
    return nnx.to_pure_dict(nnx.state(module, nnx.Param))


def _largest(params: Any) -> tuple[str, tuple[int, ...], str]:
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    if not flat:
        return "", (), ""
    path, leaf = max(flat, key=lambda item: math.prod(np.shape(item[1])) * _itemsize(item[1]))
    name = "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)
    return name, tuple(np.shape(leaf)), str(np.dtype(leaf.dtype)) if hasattr(leaf, "dtype") else ""


def check_training_memory(params: Any, *, optimizer: str | None = None, opt_state: Any = None,
                          data_bytes: int = 0, state_bytes: int | None = None,
                          available: tuple[int | None, str] | None = None) -> int:
    """Refuse a training state that cannot fit, before it is allocated.

    Parameters
    ----------
    params : pytree of arrays or ``jax.ShapeDtypeStruct``
        The parameters (e.g. :func:`abstract_params`).
    optimizer : str, optional
        A key of :data:`OPTIMIZER_COPIES`, when ``opt_state`` is not given.
    opt_state : pytree, optional
        The optimiser state's shapes (``jax.eval_shape(tx.init, params)``): exact.
    data_bytes : int
        The training arrays that will live beside the state.
    state_bytes : int, optional
        The state's bytes where the caller measured them (e.g. per device of a mesh);
        default: the parameters plus the optimiser state.
    available : (bytes or None, name), optional
        Default :func:`available_memory`; None bytes skips the check.

    Returns
    -------
    int
        The bytes needed (state plus data).

    Raises
    ------
    ValueError
        The state and data need more than is available, naming the largest parameter.
    """
    n_params = sum(math.prod(np.shape(x)) for x in jax.tree.leaves(params))
    param_bytes = tree_bytes(params)
    if opt_state is not None:
        opt_bytes = tree_bytes(opt_state)
        copies = opt_bytes / max(param_bytes, 1)
    elif optimizer is not None:
        if optimizer not in OPTIMIZER_COPIES:
            raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZER_COPIES)}")
        copies = OPTIMIZER_COPIES[optimizer]
        opt_bytes = copies * param_bytes
    else:
        copies, opt_bytes = 0, 0
    state = param_bytes + opt_bytes if state_bytes is None else state_bytes
    need = state + int(data_bytes)
    free, where = available if available is not None else available_memory()
    if free is None or need <= free:
        return need
    name, shape, dtype = _largest(params)
    label = optimizer or "optimiser"
    factor = 1 + round(copies)
    extra = f"the parameters and {label}'s {round(copies)} moment copies" if round(copies) else "the parameters"
    data = f", plus {format_bytes(data_bytes)} of training data" if data_bytes else ""
    raise ValueError(
        f"training needs about {format_bytes(need)} for its parameters and {label} state "
        f"({n_params:,} {dtype} parameters x {factor}: {extra}; the largest, {name} "
        f"[{', '.join(map(str, shape))}]){data}; {where} has {format_bytes(free)} available; "
        f"lower --embedding-dim"
    )


def check_epoch_memory(compiled: Any, *, batch_size: int, n_examples: int, n_devices: int = 1,
                       available: tuple[int | None, str] | None = None) -> int | None:
    """Refuse a compiled epoch whose working memory cannot fit, before it runs.

    Parameters
    ----------
    compiled : jax.stages.Compiled
        The epoch (its ``memory_analysis()``: temporaries, and outputs that do not
        reuse a donated input, per device).
    batch_size, n_examples : int
        For the message: a batch larger than the data is padded up to ``batch_size``.
    n_devices : int
        Devices sharing ``available`` (CPU devices all draw on the host's memory).
    available : (bytes or None, name), optional
        Default :func:`available_memory`.

    Returns
    -------
    int or None
        The bytes needed, None where XLA does not report them.

    Raises
    ------
    ValueError
        Naming the batch size (and the number of examples when it exceeds them).
    """
    try:
        stats = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        stats = None
    if stats is None:
        return None
    per_device = int(stats.temp_size_in_bytes) + max(
        int(stats.output_size_in_bytes) - int(stats.alias_size_in_bytes), 0)
    need = per_device * n_devices
    free, where = available if available is not None else available_memory()
    if free is None or need <= free:
        return need
    if batch_size > n_examples:
        raise ValueError(
            f"batch_size={batch_size} exceeds the {n_examples} training examples; use at most "
            f"{n_examples} (or 0 for full batch): its padded batches need about {format_bytes(need)} "
            f"of working memory and {where} has {format_bytes(free)} available"
        )
    raise ValueError(
        f"one training epoch needs about {format_bytes(need)} of working memory (gradients and the "
        f"activations of batches of {batch_size}); {where} has {format_bytes(free)} available; "
        f"lower --batch-size (or --embedding-dim)"
    )
