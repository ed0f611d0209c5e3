"""The run folder format: its layout, atomic writes, the writer's lock, the data's
fingerprint and :class:`RunWriter`. :mod:`recjax.runs` reads folders (``Run.open``).

A run folder is a self-contained artifact: everything needed to use the trained
model without the original data, verified when read.

::

    RUN/
      run.json            format, status (training | finished | failed, with its error), the
                          data's fingerprint, and the sha256 of every file below except
                          checkpoints/
      config.json         the one resolved configuration ({"train": ..., "model": ...})
      data/users.parquet  raw user ids (int or str) and user metadata, one row per index
      data/items.parquet  raw item ids and item metadata (title, genres, year, ...)
      data/parts.npz      the train / val / test parts (indices, ratings, timestamps)
      metrics.jsonl       one line per epoch ({"phase": "refit"} for a refit), then "final"
      embeddings.npz      raw ids (str ids as unicode arrays, no pickle) and vectors
      checkpoints/        orbax, each step verified by its own manifest
      .lock               held (an OS file lock) while the run is being written

:class:`RunWriter` writes it (through :func:`recjax.experiment.run`): locked against a
second writer, every file written atomically (a temporary file renamed into place),
so an interruption at any point leaves a folder that ``--resume`` continues. A run
refused (before any checkpoint) or diverged is marked ``failed`` (:meth:`RunWriter.fail`):
a fresh run may start over in its folder, which a finished or unfinished run refuses.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from recjax._version import __version__
from recjax.data.dataset import Ratings, Vocabulary
from recjax.data.jsonlines import PairData
from recjax.data.splits import PARTS

__all__ = ["RunFolderError", "Embeddings", "RunWriter", "write_atomic", "fingerprint",
           "fingerprint_digest", "data_differences", "verify", "load_parts", "load_embeddings",
           "read_metrics"]

FORMAT = "recjax-run/2"
_RATING_FIELDS = ("user", "item", "rating", "timestamp")
_PAIR_FIELDS = ("in0", "in1", "label")


class RunFolderError(ValueError):
    """A folder that is not a usable recjax run: missing, damaged, unfinished, locked,
    or written by another version."""


class Embeddings(NamedTuple):
    """A run's vectors with their raw ids.

    Attributes
    ----------
    user_ids : [n_users] raw ids
    users : float32 [n_users, d]
    item_ids : [n_items] raw ids
    items : float32 [n_items, d]
    """

    user_ids: np.ndarray
    users: np.ndarray
    item_ids: np.ndarray
    items: np.ndarray


# ----------------------------------------------------------------------------- files
def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, synced
    and renamed into place: readers see the old file or the new one, never a part."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _save_parquet(path: Path, frame: pd.DataFrame) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    from recjax.train.checkpoint import sha256_file

    return sha256_file(path)


def _storable_ids(ids: np.ndarray) -> np.ndarray:
    """Raw ids as an array ``np.load(allow_pickle=False)`` reads: integers, or unicode."""
    return ids.astype(np.int64) if ids.dtype.kind in "iu" else ids.astype(str)


# ----------------------------------------------------------------------------- fingerprint
def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _ids_digest(ids: np.ndarray) -> str:
    if ids.dtype.kind in "iu":
        return "int:" + _digest(ids.astype("<i8"))
    return "str:" + hashlib.sha256("\0".join(map(str, ids)).encode()).hexdigest()


def fingerprint(parts: dict[str, Any]) -> dict[str, Any]:
    """sha256 digests and sizes of a run's exact data: each part's arrays and, for
    ratings, the user and item vocabularies and the rating scale.

    Two fingerprints are equal exactly when the train / val / test data are (indices,
    raw ids, ratings, timestamps, labels)."""
    train = parts["train"]
    out: dict[str, Any] = {"sizes": {p: len(parts[p]) for p in PARTS}}
    if isinstance(train, Ratings):
        out["sizes"].update(users=train.n_users, items=train.n_items)
        out["users"] = _ids_digest(train.users.ids)
        out["items"] = _ids_digest(train.items.ids)
        out["rating_scale"] = [float(x) for x in train.rating_scale]
        for p in PARTS:
            r = parts[p]
            out[p] = _digest(r.user.astype("<i4"), r.item.astype("<i4"), r.rating.astype("<f4"),
                             r.timestamp.astype("<i8"))
    else:
        for p in PARTS:
            d = parts[p]
            out[p] = _digest(d.in0.astype("<i4"), d.in1.astype("<i4"), d.label.astype("<f4"))
    return out


def data_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between two :func:`fingerprint` results, in words (empty if equal)."""
    sizes_a, sizes_b = saved.get("sizes", {}), current.get("sizes", {})
    words = {"users": "users", "items": "items", "train": "train ratings", "val": "val ratings",
             "test": "test ratings"}
    out = []
    for key in ("users", "items", *PARTS, "rating_scale"):
        if saved.get(key) == current.get(key):
            continue
        if key == "rating_scale":
            out.append(f"rating scale {saved.get(key)} -> {current.get(key)}")
        elif sizes_a.get(key) != sizes_b.get(key):
            out.append(f"{sizes_a.get(key)} -> {sizes_b.get(key)} {words[key]}")
        else:
            out.append(f"the {words[key]} ids or values" if key in ("users", "items")
                       else f"the {key} part's contents")
    return out


# ----------------------------------------------------------------------------- parts
def _save_data(folder: Path, parts: dict[str, Any]) -> dict[str, Any]:
    """Write the parts (and vocabularies with metadata) under ``folder``; returns the
    ``data`` entry of run.json."""
    folder.mkdir(parents=True, exist_ok=True)
    train = parts["train"]
    if isinstance(train, Ratings):
        arrays = {f"{p}.{f}": getattr(parts[p], f) for p in PARTS for f in _RATING_FIELDS}
        for side, vocab, info in (("users", train.users, train.user_info),
                                  ("items", train.items, train.item_info)):
            _save_parquet(folder / f"{side}.parquet", _vocab_frame(vocab, info))
        meta = {"kind": "ratings", "name": train.name,
                "rating_scale": [float(x) for x in train.rating_scale]}
    else:
        arrays = {f"{p}.{f}": getattr(parts[p], f) for p in PARTS for f in _PAIR_FIELDS}
        meta = {"kind": "pairs"}
    _save_npz(folder / "parts.npz", arrays)
    return meta


def _vocab_frame(vocab: Vocabulary, info: pd.DataFrame | None) -> pd.DataFrame:
    frame = pd.DataFrame({"id": _storable_ids(vocab.ids)})
    if info is not None:
        extra = info.reset_index(drop=True)
        extra = extra.drop(columns=[c for c in extra.columns if c == "id"])
        if "genres" in extra:  # tuples -> lists: a Parquet list column
            extra["genres"] = [list(g) if isinstance(g, (tuple, list)) else [] for g in extra["genres"]]
        frame = pd.concat([frame, extra], axis=1)
    return frame


def _load_vocab(path: Path, kind: str) -> tuple[Vocabulary, pd.DataFrame | None]:
    frame = pd.read_parquet(path)
    ids = frame["id"].to_numpy()
    ids = ids.astype(np.int64) if ids.dtype.kind in "iu" else np.asarray([str(x) for x in ids], object)
    info = frame.drop(columns="id")
    if "genres" in info:
        info["genres"] = [tuple(str(x) for x in g) for g in info["genres"]]
    return Vocabulary(ids, kind), (info if len(info.columns) else None)


def _load_data(folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
    with np.load(folder / "parts.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    if meta["kind"] == "pairs":
        return {p: PairData(*(arrays[f"{p}.{f}"] for f in _PAIR_FIELDS)) for p in PARTS}
    users, user_info = _load_vocab(folder / "users.parquet", "user")
    items, item_info = _load_vocab(folder / "items.parquet", "item")
    return {p: Ratings(*(arrays[f"{p}.{f}"] for f in _RATING_FIELDS), users, items,
                       item_info=item_info, user_info=user_info,
                       rating_scale=tuple(meta["rating_scale"]), name=meta["name"])
            for p in PARTS}


# ----------------------------------------------------------------------------- lock
class _Lock:
    """An exclusive OS lock on ``RUN/.lock`` (``fcntl.flock``), naming its holder."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / ".lock"
        self.file = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise RunFolderError(f"{self.path.parent} is being trained by {holder}; wait for it "
                                 f"to finish or use another --out") from None
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()} on {socket.gethostname()} since "
                f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M:%S')}")
        f.flush()
        self.file = f

    def release(self) -> None:
        if self.file is not None:
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()
            self.file = None

    @staticmethod
    def holder(run_dir: Path) -> str | None:
        """Who holds the lock now (None when nobody does)."""
        path = run_dir / ".lock"
        if not path.is_file():
            return None
        with open(path, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                return f.read().strip() or "another process"
            fcntl.flock(f, fcntl.LOCK_UN)
        return None


# ----------------------------------------------------------------------------- writing
def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RunFolderError(f"{path} is damaged or unreadable ({type(err).__name__}); "
                             f"the run cannot be used") from None
    if not isinstance(value, dict):
        raise RunFolderError(f"{path} is damaged (not a JSON object)")
    return value


class RunWriter:
    """Writes one run folder: lock, configuration, data, metrics, embeddings, status.

    Used as a context manager around training: the lock is held until it exits.
    With ``primary=False`` (the other processes of a multi-process run) nothing is
    written or locked; process 0 does both.
    """

    def __init__(self, run_dir: str | os.PathLike, *, primary: bool = True) -> None:
        self.path = Path(run_dir)
        self.primary = primary
        self._lock = _Lock(self.path)
        self.records: list[dict[str, Any]] = []
        self.status: dict[str, Any] = {}

    def __enter__(self) -> "RunWriter":
        if self.primary:
            self._lock.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._lock.release()

    # -- state of the folder
    def saved(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(run.json, config.json) of the run already in the folder, or None."""
        if not (self.path / "run.json").is_file():
            return None
        status = _read_json(self.path / "run.json")
        if status.get("format") != FORMAT:
            raise RunFolderError(f"{self.path} holds a run of format {status.get('format')!r}, "
                                 f"this recjax reads {FORMAT!r}; retrain it or use another --out")
        return status, _read_json(self.path / "config.json")

    def refuse_existing(self) -> None:
        """A fresh run must not overwrite another: raise if the folder holds one, unless
        that run failed (:meth:`fail`): then the fresh run starts over in its place."""
        saved = self.saved() if (self.path / "run.json").is_file() else None
        if saved is not None and saved[0].get("status") == "failed":
            return
        if saved is not None and saved[0].get("status") == "training":
            raise RunFolderError(f"{self.path} holds an unfinished run: continue it with --resume, "
                                 f"or delete the folder (or use another --out) to start afresh")
        if saved is not None or (self.path / "checkpoints").exists():
            raise RunFolderError(f"{self.path} already holds a run; use --resume to continue it "
                                 f"or another --out")

    # -- writing
    def begin(self, config: dict[str, Any], parts: dict[str, Any], *, resume: bool,
              dataset: str = "", split: str = "") -> None:
        """Write config.json, the data and run.json (status ``training``); on resume keep
        the metrics logged so far, else delete the checkpoints a failed run left. ``dataset``
        and ``split`` name the data in words (default: the parts' own name, "given")."""
        if not self.primary:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        if not resume:  # refuse_existing let only a failed run's checkpoints be here
            shutil.rmtree(self.path / "checkpoints", ignore_errors=True)
        write_atomic(self.path / "config.json", json.dumps(config, indent=2) + "\n")
        data = _save_data(self.path / "data", parts)
        data["dataset"] = dataset or data.get("name", "token files")
        data["split"] = split or "given"
        data["fingerprint"] = fingerprint(parts)
        if resume and (self.path / "metrics.jsonl").is_file():
            self.records = [r for r in read_metrics(self.path / "metrics.jsonl")
                            if r.get("event") != "final"]
        self.status = {"format": FORMAT, "status": "training", "recjax": __version__,
                       "created": _now(), "data": data}
        self._write_status()
        self._write_metrics()

    def log(self, record: dict[str, Any]) -> None:
        """Add one epoch's record and rewrite metrics.jsonl atomically.

        Epochs are logged in order, so records of the same phase from this epoch on
        are from before a resume (which restarts at its last checkpoint, possibly
        several epochs back): they are replaced, never left beside the new ones."""
        if not self.primary:
            return
        phase, epoch = record.get("phase"), record.get("epoch")
        self.records = [r for r in self.records
                        if r.get("phase") != phase or "epoch" not in r or r["epoch"] < epoch]
        self.records.append(record)
        self._write_metrics()

    def finish(self, metrics: dict[str, Any], embeddings: Embeddings | None) -> None:
        """The final metrics and the embeddings, then run.json with status ``finished``
        and every file's sha256: the folder is complete."""
        if not self.primary:
            return
        self.records.append({"event": "final", **metrics})
        self._write_metrics()
        if embeddings is not None:
            _save_npz(self.path / "embeddings.npz", {
                "user_ids": _storable_ids(embeddings.user_ids),
                "user_embeddings": np.asarray(embeddings.users, np.float32),
                "item_ids": _storable_ids(embeddings.item_ids),
                "item_embeddings": np.asarray(embeddings.items, np.float32)})
        files = ["config.json", "metrics.jsonl", "data/parts.npz"]
        files += [f"data/{n}" for n in ("users.parquet", "items.parquet")
                  if (self.path / "data" / n).is_file()]
        files += ["embeddings.npz"] if embeddings is not None else []
        self.status.update(status="finished", finished=_now(),
                           files={name: _sha256(self.path / name) for name in files})
        self._write_status()

    def fail(self, error: str) -> None:
        """Mark the run ``failed`` with ``error`` (refused before any checkpoint, or
        diverged): it can be trained again into this folder, afresh or with ``--resume``
        and corrected settings. Nothing to mark before :meth:`begin`."""
        if self.primary and self.status:
            self.status.update(status="failed", error=error, failed=_now())
            self._write_status()

    def _write_status(self) -> None:
        write_atomic(self.path / "run.json", json.dumps(self.status, indent=2) + "\n")

    def _write_metrics(self) -> None:
        write_atomic(self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.records))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file, in order."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ----------------------------------------------------------------------------- reading
def verify(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(run.json, config.json) of the finished run folder ``path``, every file listed in
    run.json checked against its sha256 (what :meth:`recjax.runs.Run.open` opens).

    Raises
    ------
    RunFolderError
        Not a run folder; one being trained (locked) or interrupted (continue it with
        ``--resume``); a failed one; written by another recjax format; a file missing
        or damaged.
    """
    if not path.is_dir():
        raise RunFolderError(f"{path}: no such run folder")
    if not (path / "run.json").is_file():
        hint = (" (written by an older recjax: retrain it)" if (path / "config.json").is_file()
                else "")
        raise RunFolderError(f"{path} is not a recjax run folder (no run.json){hint}")
    status = _read_json(path / "run.json")
    if status.get("format") != FORMAT:
        raise RunFolderError(f"{path} is a run of format {status.get('format')!r}; this recjax "
                             f"reads {FORMAT!r}: retrain it")
    if status.get("status") != "finished":
        holder = _Lock.holder(path)
        if holder is not None:
            raise RunFolderError(f"{path} is still being trained by {holder}")
        if status.get("status") == "failed":
            raise RunFolderError(f"{path} failed ({status.get('error')}); train it again: "
                                 f"`recjax train --out {path}` starts it over, `--resume` "
                                 f"continues it with corrected settings")
        raise RunFolderError(f"{path} did not finish (interrupted); continue it with "
                             f"`recjax train --resume --out {path}` and the same settings")
    for name, digest in status.get("files", {}).items():
        file = path / name
        if not file.is_file():
            raise RunFolderError(f"{file} is missing; the run cannot be used")
        if _sha256(file) != digest:
            raise RunFolderError(f"{file} is damaged (it fails its sha256 check); the run "
                                 f"cannot be used")
    return status, _read_json(path / "config.json")


def load_parts(path: Path, status: dict[str, Any]) -> dict[str, Any]:
    """The train / val / test parts of a :func:`verify`-ed run folder."""
    return _load_data(path / "data", status["data"])


def load_embeddings(path: Path, status: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(user, item) vectors float32 [n_users, d], [n_items, d] of a :func:`verify`-ed run
    folder, C-contiguous; [0, 0] each when it has none."""
    users = items = np.zeros((0, 0), np.float32)
    if "embeddings.npz" in status.get("files", {}):
        with np.load(path / "embeddings.npz", allow_pickle=False) as z:
            users, items = z["user_embeddings"], z["item_embeddings"]
    return np.ascontiguousarray(users, np.float32), np.ascontiguousarray(items, np.float32)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def fingerprint_digest(fp: dict[str, Any]) -> str:
    """One sha256 over a :func:`fingerprint` (what checkpoints record)."""
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()
