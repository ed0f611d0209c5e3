"""Orbax checkpoints of a run: the last epoch's full state and the best parameters.

Layout under ``run/checkpoints/``: ``last/<epoch>/`` (TrainState + JSON metadata)
and ``best/<epoch>/`` (parameters + metadata). Orbax writes each step into a
temporary folder and renames it when complete, and keeps one step per manager,
so a crash mid-write leaves the previous checkpoint intact. The metadata carries
a format tag and the model's config, so a checkpoint of another model or a
damaged one gives :class:`CheckpointError` instead of silent garbage.

Sharded state (on a device mesh) is written shard by shard, each process writing
its own. A checkpoint restores onto any mesh: arrays take the template's shardings,
and embedding tables, stored with zero padding rows up to a multiple of the model
axis, are re-padded (or cut back) to the new mesh's multiple; nothing else may
differ in shape.

Example
-------
>>> from recjax.train.checkpoint import Checkpoints
>>> Checkpoints("/tmp/nonexistent-run/checkpoints").has_last()
False
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from recjax.train.step import TrainState

__all__ = ["Checkpoints", "CheckpointError", "FORMAT"]

FORMAT = "recjax-checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, truncated, or from another model or format."""


def _to_tree(state: TrainState) -> dict[str, Any]:
    return {
        "params": state.params,
        "opt_state": state.opt_state,
        "step": state.step,
        "key": jax.random.key_data(state.key),
    }


def _abstract(tree: Any) -> Any:
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpoints:
    """The ``last`` and ``best`` checkpoints of one run folder."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory).absolute()
        self._managers: dict[str, ocp.CheckpointManager] = {}

    def _manager(self, which: str) -> ocp.CheckpointManager:
        if which not in self._managers:
            options = ocp.CheckpointManagerOptions(
                max_to_keep=1, create=True, enable_async_checkpointing=False
            )
            handlers = {"state": ocp.StandardCheckpointHandler(),
                        "meta": ocp.JsonCheckpointHandler()}
            self._managers[which] = ocp.CheckpointManager(
                self.directory / which, options=options, item_handlers=handlers
            )
        return self._managers[which]

    def _steps(self, which: str) -> list[int]:
        folder = self.directory / which
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and p.is_dir())

    def has_last(self) -> bool:
        return bool(self._steps("last"))

    def save(self, which: str, epoch: int, tree: Any, meta: dict[str, Any]) -> None:
        """Write ``tree`` (a pytree of arrays) and JSON ``meta`` as step ``epoch``."""
        manager = self._manager(which)
        manager.save(
            epoch,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave({"format": FORMAT, **meta})
            ),
            force=True,
        )
        manager.wait_until_finished()

    def save_last(self, epoch: int, state: TrainState, meta: dict[str, Any]) -> None:
        self.save("last", epoch, _to_tree(state), meta)

    def save_best(self, epoch: int, params: dict, meta: dict[str, Any]) -> None:
        self.save("best", epoch, params, meta)

    def restore(self, which: str, template: Any, expect: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Restore step ``which`` into the structure of ``template``.

        ``expect`` holds metadata entries that must match (e.g. the model config).
        """
        steps = self._steps(which)
        where = self.directory / which
        if not steps:
            raise CheckpointError(f"no {which} checkpoint in {where}")
        manager = self._manager(which)

        def read(load: Any) -> Any:
            try:
                return load()
            except Exception as err:  # orbax raises many types for damaged folders
                raise CheckpointError(
                    f"cannot read the {which} checkpoint in {where}/{steps[-1]} (truncated, "
                    f"damaged or written by a different model): "
                    f"{type(err).__name__}: {_first_line(err)}"
                ) from err

        def items(**args: Any) -> Any:
            return read(lambda: manager.restore(steps[-1], args=ocp.args.Composite(**args)))

        # the metadata first: a foreign checkpoint is named as such, before any array is read
        meta = items(meta=ocp.args.JsonRestore())["meta"] or {}
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{where}/{steps[-1]} is not a recjax checkpoint ({FORMAT})")
        for key, value in expect.items():
            if meta.get(key) != value:
                raise CheckpointError(
                    f"{where}/{steps[-1]} was written with a different {key}: "
                    f"{meta.get(key)!r}, this run has {value!r}"
                )
        read(lambda: _check_shapes(template, manager.item_metadata(steps[-1])["state"].tree, where,
                                   rows_may_differ=True))
        # strict=False: tables take the template's padding (the checks above and the
        # metadata allow only the row count of arrays to differ)
        restored = items(state=ocp.args.StandardRestore(_abstract(template), strict=False))
        tree = restored["state"]
        _check_shapes(template, tree, where)
        return tree, meta

    def restore_last(self, template: TrainState, expect: dict[str, Any]) -> tuple[TrainState, dict]:
        tree, meta = self.restore("last", _to_tree(template), expect)
        state = TrainState(tree["params"], tree["opt_state"], tree["step"],
                           jax.random.wrap_key_data(tree["key"]))
        return state, meta

    def restore_best(self, template: dict, expect: dict[str, Any]) -> tuple[dict, dict]:
        return self.restore("best", template, expect)


def _first_line(err: BaseException, limit: int = 200) -> str:
    """The start of an error's message: orbax/tensorstore errors span many lines and
    kilobytes of spec; the full error stays chained as ``__cause__``."""
    lines = str(err).strip().splitlines()
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _check_shapes(template: Any, tree: Any, where: Path, rows_may_differ: bool = False) -> None:
    """The same arrays (shapes and dtypes, compared as a multiset: orbax's stored
    metadata keeps optax's named tuples as plain containers); with ``rows_may_differ``
    the leading axis of arrays may differ (padding of tables written on another mesh)."""
    def signature(x: Any) -> tuple:
        x = jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
        shape = tuple(np.shape(x) if not hasattr(x, "shape") else x.shape)
        return (shape[1:] if rows_may_differ and shape else shape, len(shape), np.dtype(x.dtype).name)

    if sorted(map(signature, jax.tree.leaves(template))) != sorted(map(signature, jax.tree.leaves(tree))):
        raise CheckpointError(f"{where}: array shapes or dtypes differ from this model's")
