"""Find MovieLens on disk, or download it from GroupLens with checksum verification.

Resolution order for a dataset ``name`` (e.g. ``"ml-100k"``):

1. an explicit folder (``data_dir`` argument): it must hold the dataset's files,
   either directly or in a ``name/`` sub-folder;
2. ``$RECJAX_DATA/name`` (a folder holding ``ml-100k/``, ``ml-1m/``, ...);
3. the user cache, ``$RECJAX_CACHE`` or ``$XDG_CACHE_HOME/recjax`` or ``~/.cache/recjax``;
4. download into the cache (only when ``allow_download=True``).

Downloads are checked against the published md5 (and their sha256 is recorded in
``name/.recjax-download.json``), written to a temporary name and renamed into
place, and extracted member by member with path checks, so an interrupted or
concurrent run never leaves a half-written dataset behind. Nothing is created at
import time.

Example
-------
>>> from recjax.data.download import DATASETS
>>> sorted(DATASETS)[:2]
['ml-100k', 'ml-1m']
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "DatasetNotFoundError",
    "ChecksumError",
    "cache_dir",
    "resolve",
    "download",
]

_GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens"


@dataclass(frozen=True)
class DatasetSpec:
    """Where a MovieLens release lives and how to check it.

    Attributes
    ----------
    name : str
        Folder name inside the zip and on disk, e.g. ``"ml-100k"``.
    ratings_file : str
        The file whose presence marks a complete copy.
    md5 : str or None
        Published md5 of the zip; ``None`` for the "latest" releases, which change
        over time and are checked against GroupLens's ``.md5`` file instead.
    """

    name: str
    ratings_file: str
    md5: str | None

    @property
    def url(self) -> str:
        return f"{_GROUPLENS_URL}/{self.name}.zip"


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("ml-100k", "u.data", "0e33842e24a9c977be4e0107933c0723"),
        DatasetSpec("ml-1m", "ratings.dat", "c4d9eecfca2ab87c1945afe126590906"),
        DatasetSpec("ml-latest-small", "ratings.csv", None),
        DatasetSpec("ml-20m", "ratings.csv", "cd245b17a1ae2cc31bb14903e1204af3"),
        DatasetSpec("ml-25m", "ratings.csv", "6b51fb2759a8657d3bfcbfc42b592ada"),
    )
}

_CHUNK = 1 << 20


class DatasetNotFoundError(FileNotFoundError):
    """No local copy of a dataset, and it could not (or may not) be downloaded."""


class ChecksumError(OSError):
    """A downloaded archive does not match its published checksum."""


def spec(name: str) -> DatasetSpec:
    """The registry entry for ``name``; unknown names list the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(
            f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}"
        ) from None


def cache_dir() -> Path:
    """The user cache folder (not created): $RECJAX_CACHE, $XDG_CACHE_HOME/recjax or ~/.cache/recjax."""
    if os.environ.get("RECJAX_CACHE"):
        return Path(os.environ["RECJAX_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "recjax"


def _candidates(name: str, data_dir: str | os.PathLike | None) -> list[Path]:
    """Folders to look in for ``name``, in resolution order."""
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        return [root, root / name]
    found = []
    if os.environ.get("RECJAX_DATA"):
        found.append(Path(os.environ["RECJAX_DATA"]).expanduser() / name)
    found.append(cache_dir() / name)
    return found


def resolve(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    allow_download: bool = True,
    url: str | None = None,
) -> Path:
    """The folder holding dataset ``name``'s files, downloading into the cache if allowed.

    Parameters
    ----------
    name : str
        A key of :data:`DATASETS`.
    data_dir : path, optional
        An explicit folder; when given, nothing else is searched or downloaded.
    allow_download : bool
        Download into :func:`cache_dir` when no local copy is found.
    url : str, optional
        Override the GroupLens URL (a mirror, or a local server in tests).

    Raises
    ------
    DatasetNotFoundError
        With every place looked in and how to point recjax at a local copy.
    """
    entry = spec(name)
    places = _candidates(name, data_dir)
    for folder in places:
        if (folder / entry.ratings_file).is_file():
            return folder
    if allow_download and data_dir is None:
        try:
            return download(name, url=url)
        except (urllib.error.URLError, OSError) as err:
            if isinstance(err, ChecksumError):
                raise
            reason = f"downloading {url or entry.url} failed: {err}"
    else:
        reason = "downloading is disabled" if data_dir is None else "an explicit folder was given"
    looked = "\n  ".join(str(p) for p in places)
    raise DatasetNotFoundError(
        f"dataset {name!r} not found ({reason}).\nLooked in:\n  {looked}\n"
        f"Point recjax at a local copy with --data-dir FOLDER or RECJAX_DATA=FOLDER "
        f"(a folder holding {name}/{entry.ratings_file}), or download it with "
        f"`python -m recjax data download {name}` on a machine with internet."
    )


def _hash_file(path: Path) -> tuple[str, str]:
    """(md5, sha256) hex digests of a file."""
    md5, sha = hashlib.md5(), hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            md5.update(block)
            sha.update(block)
    return md5.hexdigest(), sha.hexdigest()


def _fetch(url: str, dest: Path, *, quiet: bool) -> None:
    """Stream ``url`` into ``dest``; a short read (truncated transfer) raises OSError."""
    from tqdm.auto import tqdm  # only downloads draw a bar: importing recjax.data skips it

    total = None
    written = 0
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, dest.open("wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=Path(url).name,
                      disable=quiet) as bar:
                for block in iter(lambda: resp.read(_CHUNK), b""):
                    out.write(block)
                    written += len(block)
                    bar.update(len(block))
    except http.client.HTTPException as err:  # IncompleteRead etc. are not OSErrors
        raise OSError(
            f"download from {url} failed after {written} of {total or '?'} bytes: {err!r}"
        ) from err
    if total is not None and written != total:
        raise OSError(f"truncated download from {url}: got {written} of {total} bytes")


def _published_md5(entry: DatasetSpec, url: str) -> str:
    """The md5 to check against: pinned, or read from GroupLens's ``.md5`` file."""
    if entry.md5 is not None:
        return entry.md5
    with urllib.request.urlopen(url + ".md5", timeout=60) as resp:
        text = resp.read(4096).decode("ascii", "replace")
    digest = text.strip().split()[-1].lower()  # "MD5 (file.zip) = <hex>" or "<hex>  file.zip"
    if len(digest) != 32 or any(c not in "0123456789abcdef" for c in digest):
        digest = text.strip().split()[0].lower()
    return digest


def _safe_extract(archive: zipfile.ZipFile, dest: Path) -> None:
    """Extract every member under ``dest``; absolute or ``..`` paths are refused."""
    for member in archive.infolist():
        path = PurePosixPath(member.filename)
        if path.is_absolute() or ".." in path.parts or member.filename.startswith(("/", "\\")):
            raise ValueError(f"refusing to extract unsafe zip member {member.filename!r}")
    archive.extractall(dest)


def download(
    name: str,
    cache: str | os.PathLike | None = None,
    *,
    url: str | None = None,
    force: bool = False,
    quiet: bool = False,
) -> Path:
    """Download, verify and unpack dataset ``name`` into the cache; return its folder.

    The zip is streamed to a temporary file in the cache, its md5 compared with the
    published one, unpacked into a temporary folder and renamed into place as
    ``cache/name``. On any failure the temporary files are removed and the cache is
    left as it was. A ``.recjax-download.json`` beside the data records the URL and
    the archive's md5 and sha256.

    Raises
    ------
    ChecksumError
        The archive's md5 differs from the published one.
    OSError, urllib.error.URLError
        The transfer failed or was truncated.
    """
    entry = spec(name)
    root = Path(cache).expanduser() if cache is not None else cache_dir()
    final = root / name
    if (final / entry.ratings_file).is_file() and not force:
        return final
    source = url or entry.url
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{name}-partial-") as tmp:
        zip_path = Path(tmp, f"{name}.zip")
        _fetch(source, zip_path, quiet=quiet)
        md5, sha256 = _hash_file(zip_path)
        expected = _published_md5(entry, source)
        if md5 != expected:
            raise ChecksumError(
                f"{source}: md5 {md5} does not match the published {expected}; "
                f"the download is corrupt or not the official archive, nothing was kept"
            )
        unpacked = Path(tmp, "unpacked")
        with zipfile.ZipFile(zip_path) as archive:
            _safe_extract(archive, unpacked)
        inner = unpacked / name if (unpacked / name).is_dir() else unpacked
        if not (inner / entry.ratings_file).is_file():
            raise OSError(f"{source} does not contain {name}/{entry.ratings_file}")
        (inner / ".recjax-download.json").write_text(
            json.dumps({"url": source, "md5": md5, "sha256": sha256}, indent=2)
        )
        if (final / entry.ratings_file).is_file() and not force:
            return final  # a concurrent download finished first; keep its copy
        if final.exists():  # force=True, or an incomplete copy: move it aside, then replace
            try:
                os.replace(final, Path(tmp, "previous"))
            except FileNotFoundError:
                pass
        try:
            os.replace(inner, final)
        except OSError:
            if not (final / entry.ratings_file).is_file():  # not a concurrent winner
                raise
    return final
