"""Dataset resolution and downloads, against a real HTTP server on 127.0.0.1.

No test here touches the internet or the real user cache: RECJAX_CACHE, XDG_CACHE_HOME
and HOME point into tmp_path, and every download names a local URL.
"""

from __future__ import annotations

import hashlib
import http.server
import importlib
import io
import json
import socket
import threading
import time
import urllib.error
import zipfile
from pathlib import Path

import pytest

from recjax.data import ChecksumError, DatasetNotFoundError, load_movielens

# ``recjax.data.download`` the attribute is the function; the module is reached this way.
dl = importlib.import_module("recjax.data.download")
DatasetSpec = dl.DatasetSpec


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test gets its own cache and home; RECJAX_DATA is cleared."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("RECJAX_CACHE", str(cache))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RECJAX_DATA", raising=False)
    # a download that forgets its url= would go to a closed local port, never the internet
    monkeypatch.setattr(dl, "_GROUPLENS_URL", f"http://127.0.0.1:{closed_port()}/datasets")
    return cache


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def make_zip(folder: Path, arcroot: str, extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.name != "MANIFEST.txt":
                zf.write(path, f"{arcroot}/{path.name}")
        for name, data in (extra or {}).items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return buf.getvalue()


class Server:
    """Serves ``files`` (URL path -> bytes); ``truncate`` paths promise more bytes than sent."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.truncate_chunked: set[str] = set()
        self.delay = 0.0
        self.delays: list[float] = []  # per request, in arrival order; then ``delay``
        self.requests: list[str] = []
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                with server.lock:
                    pause = server.delays.pop(0) if server.delays else server.delay
                time.sleep(pause)
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if self.path in server.truncate:
                    self.send_header("Content-Length", str(len(body) + 100_000))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if self.path in server.truncate_chunked:  # cut inside a chunk
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    half = body[: len(body) // 2]
                    self.wfile.write(b"%x\r\n" % len(half) + half + b"\r\n")
                    self.wfile.write(b"%x\r\n" % len(body) + body[:1000])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def ml100k_zip(movielens_dir) -> bytes:
    """A re-zipped copy of the test ml-100k (folder ``ml-100k/`` inside)."""
    return make_zip(movielens_dir / "ml-100k", "ml-100k")


@pytest.fixture
def served_100k(server, ml100k_zip, monkeypatch):
    """The zip on the server, and the registry entry pinned to its md5."""
    server.files["/ml-100k.zip"] = ml100k_zip
    entry = DatasetSpec("ml-100k", "u.data", md5_of(ml100k_zip))
    monkeypatch.setitem(dl.DATASETS, "ml-100k", entry)
    return server.url + "/ml-100k.zip"


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def fake_copy(folder: Path, name: str = "u.data") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("1\t1\t5\t881250949\n")
    return folder


# ----------------------------------------------------------------------------- resolution


def test_registry():
    assert sorted(dl.DATASETS) == ["ml-100k", "ml-1m", "ml-20m", "ml-25m", "ml-latest-small"]
    assert dl.DATASETS["ml-100k"].md5 == "0e33842e24a9c977be4e0107933c0723"
    assert dl.DATASETS["ml-latest-small"].md5 is None  # checked against the .md5 sidecar
    assert dl._GROUPLENS_URL.startswith("http://127.0.0.1:")  # patched by the fixture
    assert DatasetSpec("ml-1m", "ratings.dat", None).url.endswith("/ml-1m.zip")


def test_cache_dir_order(tmp_path, monkeypatch):
    assert dl.cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("RECJAX_CACHE")
    assert dl.cache_dir() == tmp_path / "xdg" / "recjax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert dl.cache_dir() == tmp_path / "home" / ".cache" / "recjax"
    assert not (tmp_path / "home").exists()  # nothing is created


def test_resolution_order(tmp_path, monkeypatch, private_cache):
    explicit = fake_copy(tmp_path / "explicit")
    env_root = tmp_path / "env"
    env_copy = fake_copy(env_root / "ml-100k")
    cached = fake_copy(private_cache / "ml-100k")
    monkeypatch.setenv("RECJAX_DATA", str(env_root))

    assert dl.resolve("ml-100k", explicit, allow_download=False) == explicit
    # an explicit folder may hold the dataset in a name/ sub-folder
    assert dl.resolve("ml-100k", tmp_path / "env", allow_download=False) == env_copy
    assert dl.resolve("ml-100k", allow_download=False) == env_copy  # RECJAX_DATA before the cache
    (env_copy / "u.data").unlink()  # an incomplete copy does not count
    assert dl.resolve("ml-100k", allow_download=False) == cached
    monkeypatch.delenv("RECJAX_DATA")
    assert dl.resolve("ml-100k", allow_download=False) == cached


def test_explicit_folder_is_not_second_guessed(tmp_path, monkeypatch, private_cache):
    fake_copy(private_cache / "ml-100k")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetNotFoundError, match="an explicit folder was given") as info:
        dl.resolve("ml-100k", empty)
    assert str(empty) in str(info.value) and str(empty / "ml-100k") in str(info.value)


def test_not_found_offline_message(tmp_path, monkeypatch, private_cache):
    monkeypatch.setenv("RECJAX_DATA", str(tmp_path / "shared"))
    with pytest.raises(DatasetNotFoundError) as info:
        load_movielens("ml-1m", allow_download=False)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "'ml-1m'" in message and "downloading is disabled" in message
    assert str(tmp_path / "shared" / "ml-1m") in message  # places looked in
    assert str(private_cache / "ml-1m") in message
    assert "RECJAX_DATA" in message and "--data-dir" in message and "ml-1m/ratings.dat" in message
    assert not private_cache.exists()  # looking does not create the cache


def test_not_found_when_download_fails(private_cache):
    bad_url = f"http://127.0.0.1:{closed_port()}/ml-100k.zip"
    with pytest.raises(DatasetNotFoundError) as info:
        dl.resolve("ml-100k", url=bad_url)
    message = str(info.value)
    assert f"downloading {bad_url} failed" in message and "'ml-100k'" in message
    assert str(private_cache / "ml-100k") in message and "RECJAX_DATA" in message
    assert leftovers(private_cache) == []
    with pytest.raises(DatasetNotFoundError, match="downloading http://127.0.0.1"):
        dl.resolve("ml-1m")  # default URL (patched to a closed local port)


# ----------------------------------------------------------------------------- downloads


def test_download_success(served_100k, server, ml100k_zip, private_cache):
    folder = dl.download("ml-100k", url=served_100k, quiet=True)
    assert folder == private_cache / "ml-100k"
    assert leftovers(private_cache) == ["ml-100k"]  # no temporary folders left
    assert (folder / "ua.test").is_file() and (folder / "u.item").is_file()
    record = json.loads((folder / ".recjax-download.json").read_text())
    assert record == {
        "url": served_100k,
        "md5": md5_of(ml100k_zip),
        "sha256": hashlib.sha256(ml100k_zip).hexdigest(),
    }
    data = load_movielens("ml-100k", allow_download=False)  # found in the cache
    assert (len(data), data.n_users, data.n_items) == (100_000, 943, 1682)
    # a second call is a no-op: no request, same folder, untouched files
    before = len(server.requests)
    stamp = (folder / "u.data").stat().st_mtime_ns
    assert dl.download("ml-100k", url=served_100k, quiet=True) == folder
    assert len(server.requests) == before == 1
    assert (folder / "u.data").stat().st_mtime_ns == stamp
    # force=True downloads again and replaces the copy in one piece
    (folder / "stale-file").write_text("x")
    assert dl.download("ml-100k", url=served_100k, quiet=True, force=True) == folder
    assert len(server.requests) == 2 and not (folder / "stale-file").exists()
    assert leftovers(private_cache) == ["ml-100k"]


def test_resolve_downloads_into_cache(served_100k, server, private_cache, movielens_dir):
    folder = dl.resolve("ml-100k", url=served_100k)
    assert folder == private_cache / "ml-100k"
    assert (folder / "u.data").read_bytes() == (movielens_dir / "ml-100k" / "u.data").read_bytes()
    assert dl.resolve("ml-100k", url=served_100k) == folder
    assert server.requests == ["/ml-100k.zip"]


def test_download_explicit_cache_argument(served_100k, tmp_path, private_cache):
    other = tmp_path / "elsewhere"
    assert dl.download("ml-100k", other, url=served_100k, quiet=True) == other / "ml-100k"
    assert not private_cache.exists()


def test_checksum_mismatch_leaves_nothing(server, ml100k_zip, private_cache):
    # the real registry pins the official md5, which a re-zipped copy cannot match
    server.files["/ml-100k.zip"] = ml100k_zip
    url = server.url + "/ml-100k.zip"
    with pytest.raises(ChecksumError) as info:
        dl.download("ml-100k", url=url, quiet=True)
    assert "0e33842e24a9c977be4e0107933c0723" in str(info.value)
    assert md5_of(ml100k_zip) in str(info.value)
    assert leftovers(private_cache) == []
    with pytest.raises(ChecksumError):  # resolve does not hide it as "not found"
        dl.resolve("ml-100k", url=url)
    assert leftovers(private_cache) == []


def test_truncated_download_leaves_nothing(served_100k, server, private_cache):
    server.truncate.add("/ml-100k.zip")
    with pytest.raises(OSError) as info:
        dl.download("ml-100k", url=served_100k, quiet=True)
    assert not isinstance(info.value, ChecksumError)
    assert served_100k in str(info.value)
    assert leftovers(private_cache) == []
    with pytest.raises(DatasetNotFoundError, match="failed"):
        dl.resolve("ml-100k", url=served_100k)
    assert leftovers(private_cache) == []


def test_truncated_chunked_download_is_an_oserror(served_100k, server, private_cache):
    server.truncate_chunked.add("/ml-100k.zip")
    with pytest.raises(OSError, match="failed after"):
        dl.download("ml-100k", url=served_100k, quiet=True)
    assert leftovers(private_cache) == []
    with pytest.raises(DatasetNotFoundError):  # resolve reports it as a failed download
        dl.resolve("ml-100k", url=served_100k)
    assert leftovers(private_cache) == []


def test_http_error(server, private_cache):
    with pytest.raises(urllib.error.HTTPError):
        dl.download("ml-100k", url=server.url + "/missing.zip", quiet=True)
    assert leftovers(private_cache) == []


def test_zip_without_the_dataset_is_refused(server, monkeypatch, tmp_path, private_cache):
    folder = tmp_path / "junk"
    fake_copy(folder, "README")
    blob = make_zip(folder, "ml-100k")
    server.files["/ml-100k.zip"] = blob
    monkeypatch.setitem(dl.DATASETS, "ml-100k", DatasetSpec("ml-100k", "u.data", md5_of(blob)))
    with pytest.raises(OSError, match="does not contain ml-100k/u.data"):
        dl.download("ml-100k", url=server.url + "/ml-100k.zip", quiet=True)
    assert leftovers(private_cache) == []


@pytest.mark.parametrize("member", ["../evil.txt", "ml-100k/../../evil.txt", "/ABSOLUTE/evil.txt"])
def test_unsafe_zip_member_is_refused(server, monkeypatch, tmp_path, private_cache, member):
    folder = fake_copy(tmp_path / "src")
    if member.startswith("/ABSOLUTE"):
        member = str(tmp_path / "abs-evil.txt")  # an absolute path inside tmp_path
    blob = make_zip(folder, "ml-100k", {member: b"pwned"})
    assert member in zipfile.ZipFile(io.BytesIO(blob)).namelist()
    server.files["/ml-100k.zip"] = blob
    monkeypatch.setitem(dl.DATASETS, "ml-100k", DatasetSpec("ml-100k", "u.data", md5_of(blob)))
    with pytest.raises(ValueError, match="unsafe zip member"):
        dl.download("ml-100k", url=server.url + "/ml-100k.zip", quiet=True)
    assert leftovers(private_cache) == []
    assert not list(tmp_path.rglob("*evil*"))  # nothing written anywhere


@pytest.fixture(scope="module")
def latest_small_zip(movielens_dir) -> bytes:
    return make_zip(movielens_dir / "ml-latest-small", "ml-latest-small")


@pytest.mark.parametrize(
    "sidecar", ["MD5 (ml-latest-small.zip) = {md5}\n", "{md5}  ml-latest-small.zip\n"]
)
def test_md5_sidecar(server, latest_small_zip, private_cache, sidecar):
    assert dl.DATASETS["ml-latest-small"].md5 is None
    server.files["/ml-latest-small.zip"] = latest_small_zip
    server.files["/ml-latest-small.zip.md5"] = sidecar.format(md5=md5_of(latest_small_zip)).encode()
    folder = dl.download("ml-latest-small", url=server.url + "/ml-latest-small.zip", quiet=True)
    assert sorted(server.requests) == ["/ml-latest-small.zip", "/ml-latest-small.zip.md5"]
    record = json.loads((folder / ".recjax-download.json").read_text())
    assert record["md5"] == md5_of(latest_small_zip)
    assert record["sha256"] == hashlib.sha256(latest_small_zip).hexdigest()
    data = load_movielens("ml-latest-small", allow_download=False)
    assert (len(data), data.n_users, data.n_items) == (100_836, 610, 9724)


def test_md5_sidecar_mismatch(server, latest_small_zip, private_cache):
    server.files["/ml-latest-small.zip"] = latest_small_zip
    server.files["/ml-latest-small.zip.md5"] = b"MD5 (ml-latest-small.zip) = " + b"0" * 32 + b"\n"
    with pytest.raises(ChecksumError, match="0" * 32):
        dl.download("ml-latest-small", url=server.url + "/ml-latest-small.zip", quiet=True)
    assert leftovers(private_cache) == []


def test_md5_sidecar_missing(server, latest_small_zip, private_cache):
    server.files["/ml-latest-small.zip"] = latest_small_zip  # no .md5 on the server
    with pytest.raises(OSError):
        dl.download("ml-latest-small", url=server.url + "/ml-latest-small.zip", quiet=True)
    assert leftovers(private_cache) == []


def test_concurrent_downloads_leave_one_intact_copy(
    served_100k, server, private_cache, movielens_dir
):
    # both requests are in flight together; the second finishes well after the first
    server.delays = [0.3, 0.8]
    results: list[tuple[Path, int]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def worker():
        try:
            start.wait()
            folder = dl.download("ml-100k", url=served_100k, quiet=True)
            results.append((folder, (folder / "u.data").stat().st_ino))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    folder = private_cache / "ml-100k"
    assert [r[0] for r in results] == [folder, folder]
    assert len(server.requests) == 2  # both really downloaded
    assert leftovers(private_cache) == ["ml-100k"]  # no partial folders
    # the copy handed to the first caller was not swapped out under it by the second
    final_inode = (folder / "u.data").stat().st_ino
    assert [r[1] for r in results] == [final_inode, final_inode]
    source = movielens_dir / "ml-100k"
    expected = sorted(p.name for p in source.iterdir() if p.name != "MANIFEST.txt")
    assert sorted(p.name for p in folder.iterdir()) == sorted(expected + [".recjax-download.json"])
    for name in expected:
        assert (folder / name).read_bytes() == (source / name).read_bytes(), name
    assert len(load_movielens("ml-100k", allow_download=False)) == 100_000
