"""Orbax checkpoints of a run: the training state to resume from, and the best parameters.

Layout under ``run/checkpoints/``: ``last/<epoch>/`` (TrainState, the best parameters
so far, JSON metadata: all a resumed run needs) and ``best/<epoch>/`` (the best
parameters and metadata, for readers of the finished run). Orbax writes each step
into a temporary folder and renames it when complete; then a manifest
(``<epoch>/recjax-manifest.json``: every file's size and sha256) is written
atomically, and only then are older steps deleted. A step without a manifest is
an interrupted write and is ignored (the previous step is still there); a step
whose files do not match their manifest is damaged and gives
:class:`CheckpointError`, as does a checkpoint of another format, model or size:
never silent garbage. A step that the disk has no room for is refused before orbax
writes any of it; a write that fails all the same (the disk filled meanwhile:
:func:`disk_full`) leaves no partial step behind and no orbax log on the console.

:class:`CheckpointSchedule` decides when the training loop writes: at most every
so many seconds and at the end, so that checkpoints do not stall training (a run
killed in between repeats at most that much training, to bitwise the same result).

Sharded state (on a device mesh) is written shard by shard, each process writing
its own. A checkpoint restores onto any mesh: arrays take the template's shardings,
and embedding tables, stored with zero padding rows up to a multiple of the model
axis, are re-padded (or cut back) to the new mesh's multiple; nothing else may
differ in shape.

Example
-------
>>> from recjax.train.checkpoint import Checkpoints, CheckpointSchedule
>>> Checkpoints("/tmp/nonexistent-run/checkpoints").has_last()
False
>>> clock = iter([0.0, 10.0, 70.0]).__next__  # seconds: start, after epoch 1, after epoch 2
>>> schedule = CheckpointSchedule(60.0, clock=clock)
>>> schedule.due(final=False), schedule.due(final=False)
(False, True)
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp

from recjax.train.step import TrainState

__all__ = ["Checkpoints", "CheckpointError", "CheckpointSchedule", "disk_full"]

FORMAT = "recjax-checkpoint/2"
MANIFEST = "recjax-manifest.json"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, truncated, or from another model or format."""


def _to_tree(state: TrainState, best: dict) -> dict[str, Any]:
    """What ``last`` holds: the state and the best parameters so far (one atomic step,
    so that a resumed run never pairs a state with another moment's best)."""
    return {
        "params": state.params,
        "opt_state": state.opt_state,
        "step": state.step,
        "key": jax.random.key_data(state.key),
        "best": best,
    }


def disk_full(err: BaseException | None) -> bool:
    """Whether ``err``, or an error it was raised from, is the disk filling up: an OSError
    ENOSPC, or tensorstore's report of one inside orbax's errors (a ValueError)."""
    while err is not None:
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return True
        text = str(err)
        if os.strerror(errno.ENOSPC) in text or f"os_error_code='{errno.ENOSPC}'" in text:
            return True
        err = err.__cause__ or err.__context__
    return False


def _local_bytes(tree: Any) -> int:
    """Bytes of ``tree``'s arrays that this process writes: its own shards, one replica each."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, jax.Array):
            total += sum(shard.data.nbytes for shard in leaf.addressable_shards if shard.replica_id == 0)
        else:
            total += np.asarray(leaf).nbytes
    return total


def _abstract(tree: Any) -> Any:
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def param_shapes(params: Any) -> list[list[int]]:
    """The shapes of a parameter tree's arrays, sorted: what a checkpoint's metadata
    records so that a restore into a model of other table sizes is refused (rows that
    differ only by mesh padding are accepted when these match)."""
    return sorted(list(np.shape(leaf)) for leaf in jax.tree.leaves(params))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _files(step_dir: Path) -> list[Path]:
    return sorted(p for p in step_dir.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(step_dir: Path) -> None:
    """Record every file of a completed step (size and sha256), atomically."""
    entries = {str(p.relative_to(step_dir)): {"size": p.stat().st_size, "sha256": sha256_file(p)}
               for p in _files(step_dir)}
    tmp = step_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps({"format": FORMAT, "files": entries}))
    os.replace(tmp, step_dir / MANIFEST)


def verify_manifest(step_dir: Path) -> None:
    """Raise :class:`CheckpointError` unless the step's files are exactly its manifest's."""
    try:
        manifest = json.loads((step_dir / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise CheckpointError(f"checkpoint {step_dir} is damaged: its manifest is unreadable; "
                              f"delete the folder to fall back to an older checkpoint") from None
    present = {str(p.relative_to(step_dir)): p for p in _files(step_dir)}
    for name in sorted(set(present) | set(manifest)):
        path, entry = present.get(name), manifest.get(name)
        if path is None or entry is None or path.stat().st_size != entry["size"] \
                or sha256_file(path) != entry["sha256"]:
            what = ("is missing" if path is None else "is not in its manifest" if entry is None
                    else "fails its sha256 check")
            raise CheckpointError(f"checkpoint {step_dir} is damaged: {name} {what}; "
                                  f"it cannot be used (retrain, or delete the folder to fall back "
                                  f"to an older checkpoint)")


class _QuietOrbax:
    """Silence orbax/absl/asyncio logging while reading possibly damaged files: the
    failure becomes one :class:`CheckpointError`, not kilobytes of tracebacks."""

    names = ("absl", "orbax", "asyncio", "jax._src.distributed")

    def __enter__(self) -> None:
        self.levels = {n: logging.getLogger(n).level for n in self.names}
        for n in self.names:
            logging.getLogger(n).setLevel(logging.CRITICAL + 1)

    def __exit__(self, *exc: Any) -> None:
        for n, level in self.levels.items():
            logging.getLogger(n).setLevel(level)


class Checkpoints:
    """The ``last`` and ``best`` checkpoints of one run folder.

    ``unchecked`` names metadata entries that :meth:`restore` does not compare with its
    ``expect`` (the settings, when a failed run is resumed with corrected ones)."""

    def __init__(self, directory: str | os.PathLike, *, unchecked: tuple[str, ...] = ()) -> None:
        self.directory = Path(directory).absolute()
        self.unchecked = unchecked
        self._managers: dict[str, ocp.CheckpointManager] = {}

    def _manager(self, which: str) -> ocp.CheckpointManager:
        if which not in self._managers:
            # Old steps are deleted here, after the new step's manifest (not by orbax).
            options = ocp.CheckpointManagerOptions(
                max_to_keep=None, create=True, enable_async_checkpointing=False
            )
            handlers = {"state": ocp.StandardCheckpointHandler(),
                        "meta": ocp.JsonCheckpointHandler()}
            self._managers[which] = ocp.CheckpointManager(
                self.directory / which, options=options, item_handlers=handlers
            )
        return self._managers[which]

    def _steps(self, which: str, complete: bool = True) -> list[int]:
        """Step numbers under ``which``: those with a manifest (``complete``), or the others."""
        folder = self.directory / which
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and p.is_dir()
                      and (p / MANIFEST).is_file() == complete)

    def has_last(self) -> bool:
        """Whether a complete ``last`` checkpoint exists (interrupted writes do not count)."""
        return bool(self._steps("last"))

    def verify(self) -> None:
        """Check the newest complete ``last`` and ``best`` steps against their manifests
        (:class:`CheckpointError` if damaged), without reading them as arrays."""
        for which in ("last", "best"):
            steps = self._steps(which)
            if steps:
                verify_manifest(self.directory / which / str(steps[-1]))

    def save(self, which: str, epoch: int, tree: Any, meta: dict[str, Any]) -> None:
        """Write ``tree`` (a pytree of arrays) and JSON ``meta`` as step ``epoch``, its
        manifest, then delete the older steps.

        Raises
        ------
        OSError
            ENOSPC when the disk has less room than the step's arrays take, before
            anything is written; or when the write fails for a full disk
            (:func:`disk_full`): the partial step is deleted, the older steps kept."""
        manager = self._manager(which)
        primary = jax.process_index() == 0  # several processes: process 0 tidies the folder
        if primary:
            for step in self._steps(which, complete=False) + [s for s in self._steps(which) if s == epoch]:
                shutil.rmtree(self.directory / which / str(step))  # an interrupted write, or a re-run
        self.directory.mkdir(parents=True, exist_ok=True)
        needed = int(_local_bytes(tree) * 1.05) + 2**22  # + the step's metadata, index and manifest
        free = shutil.disk_usage(self.directory).free
        if needed > free:  # orbax's writer threads would fail part-way, each logging it
            raise OSError(errno.ENOSPC, f"the {which} checkpoint of epoch {epoch} needs "
                                        f"{needed / 2**20:.1f} MiB, {free / 2**20:.1f} MiB are free "
                                        f"in {self.directory}")
        _sync(f"recjax-checkpoint-{which}-{epoch}-before")
        manager.reload()
        try:
            with _QuietOrbax():  # its writer threads log each failure with a traceback
                manager.save(
                    epoch,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave({"format": FORMAT, **meta})
                    ),
                    force=True,
                )
                manager.wait_until_finished()
        except Exception as err:
            if primary:  # the partial step (orbax's temporary folder) frees its space
                for partial in (self.directory / which).glob(f"{epoch}.orbax-checkpoint-tmp*"):
                    shutil.rmtree(partial, ignore_errors=True)
            if disk_full(err):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC),
                              str(self.directory / which / str(epoch))) from err
            raise
        if primary:
            write_manifest(self.directory / which / str(epoch))
            for step in self._steps(which):
                if step != epoch:
                    shutil.rmtree(self.directory / which / str(step), ignore_errors=True)
        _sync(f"recjax-checkpoint-{which}-{epoch}-after")
        manager.reload()

    def save_last(self, epoch: int, state: TrainState, best: dict, meta: dict[str, Any]) -> None:
        """The state after ``epoch`` and the best parameters so far (``best``, like
        ``state.params``)."""
        self.save("last", epoch, _to_tree(state, best), meta)

    def save_best(self, epoch: int, params: dict, meta: dict[str, Any]) -> None:
        self.save("best", epoch, params, meta)

    def restore(self, which: str, template: Any, expect: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Restore step ``which`` into the structure of ``template``.

        ``expect`` holds metadata entries that must match (e.g. the model config). With
        ``expect["param_shapes"]`` (:func:`param_shapes` of the unpadded parameters) the
        leading axis of arrays may differ from the template's (tables padded for another
        mesh); without it every shape must match exactly.
        """
        steps = self._steps(which)
        where = self.directory / which
        if not steps:
            raise CheckpointError(f"no {which} checkpoint in {where}")
        verify_manifest(where / str(steps[-1]))
        manager = self._manager(which)
        manager.reload()

        def read(load: Any) -> Any:
            try:
                with _QuietOrbax():
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
            if key not in self.unchecked and meta.get(key) != value:
                raise CheckpointError(
                    f"{where}/{steps[-1]} was written with a different {key}: "
                    f"{_short(meta.get(key))}, this run has {_short(value)}"
                )
        padded = "param_shapes" in expect
        read(lambda: _check_shapes(template, manager.item_metadata(steps[-1])["state"].tree, where,
                                   rows_may_differ=padded))
        # strict=False: tables take the template's padding (the checks above and the
        # metadata allow only the row count of arrays to differ)
        restored = items(state=ocp.args.StandardRestore(_abstract(template), strict=False))
        tree = restored["state"]
        _check_shapes(template, tree, where)
        return tree, meta

    def restore_last(self, template: TrainState,
                     expect: dict[str, Any]) -> tuple[TrainState, dict, dict[str, Any]]:
        """(state, best parameters so far, metadata) of the newest complete ``last``."""
        tree, meta = self.restore("last", _to_tree(template, template.params), expect)
        state = TrainState(tree["params"], tree["opt_state"], tree["step"],
                           jax.random.wrap_key_data(tree["key"]))
        return state, tree["best"], meta

    def restore_best(self, template: dict, expect: dict[str, Any]) -> tuple[dict, dict]:
        return self.restore("best", template, expect)


class CheckpointSchedule:
    """When the training loop writes its checkpoints: once ``seconds`` have passed since
    the last write (or since the start), and always at the end (``final``).

    Each write costs tens of milliseconds or more (orbax, the manifest's sha256); an epoch
    of a small model costs about as much, so writing after every epoch would stall
    training. A run killed between writes resumes from the last one and repeats at most
    ``seconds`` of training, to bitwise the same result. With several processes,
    process 0's clock decides for all (they must write together).

    Parameters
    ----------
    seconds : float
        Least time between writes; 0 writes after every epoch.
    clock : callable
        Seconds (monotonic); read at construction, at each :meth:`due` and at each
        :meth:`written`.
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not seconds >= 0:
            raise ValueError(f"checkpoint interval must be >= 0 seconds, got {seconds!r}")
        self.seconds = seconds
        self.clock = clock
        self.since = clock()

    def due(self, final: bool) -> bool:
        """Whether to write now (after an epoch; ``final``: the last epoch of the run)."""
        if final:
            return True
        due = self.clock() - self.since >= self.seconds
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            due = bool(multihost_utils.broadcast_one_to_all(np.asarray(due)))
        return due

    def written(self) -> None:
        """The checkpoints are written: the next interval starts now."""
        self.since = self.clock()


def _sync(name: str) -> None:
    """All processes wait here (nothing to do for one)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
