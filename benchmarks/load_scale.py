"""Load time and peak memory of the data pipeline at ml-25m scale (issue #7).

    python benchmarks/load_scale.py [--ratings 25000095] [--folder /tmp/ml-25m-synth]

Writes a synthetic folder in ml-25m's layout (``ratings.csv``: ``userId,movieId,
rating,timestamp`` sorted by user then movie, half-star ratings, sparse movie ids;
``movies.csv``: ``movieId,title,genres`` with "Title (year)" and ``|``-separated
genres) unless the folder already holds both files, then times each stage the
training CLI runs with ``--dataset ml-25m --split random --model mf``:

1. ``load``: :func:`recjax.data.movielens.load_movielens`;
2. ``split``: 10% random test, then 5% of the rest as validation
   (:func:`recjax.experiment.load_splits`'s two :func:`holdout_split` calls);
3. ``inputs``: the MF model's input arrays of each part (``MODELS["mf"].inputs``);
4. ``device_put``: those arrays onto the default JAX device.

Prints a markdown table: wall and CPU seconds (CPU counts every thread; the CSV
parse uses several, and on a shared machine it is the steadier figure), the peak
resident memory of the process while the stage ran, that peak less the memory
resident when the stage began in bytes per rating, and what stayed resident after
it. Each stage's peak is ``ru_maxrss`` after resetting the kernel's high-water mark
(``/proc/self/clear_refs``), with free heap memory handed back first (glibc's
``malloc_trim``), so this needs Linux with glibc.
"""

from __future__ import annotations

import argparse
import ctypes
import resource
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

# ml-25m's published figures: ratings, users and rated movies; movies.csv lists more
# movies (some never rated); movie ids run up to 209171.
ML25M_RATINGS, ML25M_USERS, ML25M_MOVIES = 25_000_095, 162_541, 59_047
ML25M_LISTED, ML25M_MAX_MOVIE_ID = 62_423, 209_171
# Share of each half star 0.5, 1.0, ..., 5.0 among ml-25m's ratings.
RATING_SHARES = np.array([1.6, 3.1, 1.6, 6.6, 5.0, 19.6, 12.6, 26.6, 8.5, 14.5])
RATING_LABELS = [f"{r:.1f}" for r in np.arange(1, 11) / 2]
GENRES = ["Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "IMAX", "Musical", "Mystery", "Romance",
          "Sci-Fi", "Thriller", "War", "Western"]
FIRST_TIMESTAMP, LAST_TIMESTAMP = 789_652_009, 1_574_327_703  # ml-25m's range
CHUNK_ROWS = 2_000_000  # ratings generated and written at a time


# --------------------------------------------------------------------------- generator
def _user_counts(rng: np.random.Generator, n_users: int, n_ratings: int, least: int,
                 most: int) -> np.ndarray:
    """Ratings per user, int64 [n_users]: skewed, each in [least, most], summing to n_ratings."""
    weights = rng.lognormal(0.0, 1.2, n_users)
    counts = least + rng.multinomial(n_ratings - least * n_users, weights / weights.sum())
    while (over := np.clip(counts - most, 0, None)).any():  # move any excess to users with room
        counts -= over
        room = most - counts
        counts += rng.multinomial(over.sum(), room / room.sum())
    return counts


def _add_fresh(rng: np.random.Generator, have: np.ndarray, users: np.ndarray, need: np.ndarray,
               n_movies: int, p: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Draw up to ``need[u]`` new movies for each user of the chunk.

    ``have`` holds the chunk's keys ``user * n_movies + movie`` (int64, sorted); the
    result is the grown sorted keys and what each user still needs.
    """
    draws = need * 2 + 4 if p is None else need  # uniform top-ups oversample
    user = np.repeat(users, draws)
    key = user * n_movies + rng.choice(n_movies, size=len(user), p=p)
    first = np.zeros(len(key), bool)
    first[np.unique(key, return_index=True)[1]] = True
    at = np.minimum(np.searchsorted(have, key), max(len(have) - 1, 0))
    fresh = first & ~(have[at] == key) if len(have) else first
    key, user = key[fresh], user[fresh]
    rank = np.arange(len(user)) - np.searchsorted(user, user)  # draw order within each user
    taken = rank < need[user - users[0]]
    got = np.bincount(user[taken] - users[0], minlength=len(users))
    return np.sort(np.concatenate([have, key[taken]])), need - got


def _chunk_keys(rng: np.random.Generator, users: np.ndarray, counts: np.ndarray,
                forced: np.ndarray, n_movies: int, popularity: np.ndarray) -> np.ndarray:
    """Sorted distinct keys ``user * n_movies + movie`` (int64): ``counts[u]`` per user,
    the ``forced`` keys among them, the rest by popularity then uniform top-ups."""
    have = np.sort(forced)
    need = counts - np.bincount(forced // n_movies - users[0], minlength=len(users))
    have, need = _add_fresh(rng, have, users, need, n_movies, popularity)
    while need.any():  # popular movies repeat; fill the gaps uniformly
        have, need = _add_fresh(rng, have, users, need, n_movies, None)
    return have


def _write_movies(path: Path, rng: np.random.Generator, movie_ids: np.ndarray) -> None:
    """``movies.csv``: titles "Movie <id> (<year>)", a fifth "Movie <id>, The (<year>)"
    (quoted, as in the real file); 1-3 ``|``-separated genres, 1% "(no genres listed)"."""
    n = len(movie_ids)
    names = np.array(GENRES, dtype=object)[np.argsort(rng.random((n, len(GENRES))), axis=1)[:, :3]]
    n_genres = rng.integers(1, 4, n)
    genres = np.where(n_genres > 1, names[:, 0] + "|" + names[:, 1], names[:, 0])
    genres = np.where(n_genres > 2, genres + "|" + names[:, 2], genres)
    genres = np.where(rng.random(n) < 0.01, "(no genres listed)", genres)
    article = np.where(rng.random(n) < 0.2, ", The", "")
    titles = ("Movie " + pd.Series(movie_ids).astype(str) + article
              + " (" + pd.Series(rng.integers(1902, 2020, n)).astype(str) + ")")
    movies = pd.DataFrame({"movieId": movie_ids, "title": titles, "genres": genres})
    movies.to_csv(path, index=False)


def write_ml25m_layout(
    folder: str | Path,
    n_ratings: int = ML25M_RATINGS,
    n_users: int = ML25M_USERS,
    n_movies: int = ML25M_MOVIES,
    *,
    n_listed: int | None = None,
    max_movie_id: int = ML25M_MAX_MOVIE_ID,
    seed: int = 0,
) -> Path:
    """Write synthetic ``ratings.csv`` and ``movies.csv`` in ml-25m's layout into ``folder``.

    Every one of the ``n_users`` users (ids ``1..n_users``) and ``n_movies`` rated
    movies (sparse ids in ``1..max_movie_id``) has a rating; no (user, movie) pair
    repeats; rows are sorted by user, then movie, as in the real file. Ratings follow
    ml-25m's half-star shares, movies a Zipf-like popularity, users a skewed activity
    (at least 20 ratings each where ``n_ratings`` allows, at most half the movies).
    ``movies.csv`` lists ``n_listed`` movies (default: ml-25m's proportion), the
    rated ones and some never rated. Generated and written in chunks of about
    :data:`CHUNK_ROWS` ratings, so memory stays bounded at any size.

    Parameters
    ----------
    folder : path
        Created if missing; both files are overwritten.
    n_ratings, n_users, n_movies : int
        Sizes; the defaults are ml-25m's.
    n_listed : int, optional
        Rows of ``movies.csv``; at least ``n_movies``.
    max_movie_id : int
        Largest possible movie id; at least ``n_listed``.
    seed : int
        Everything is a function of the seed.

    Returns
    -------
    Path
        The folder.

    Raises
    ------
    ValueError
        If the sizes cannot give every user and movie a rating without repeats.
    """
    if min(n_ratings, n_users, n_movies) < 1:
        raise ValueError(f"sizes must be >= 1, got {n_ratings}, {n_users}, {n_movies}")
    n_listed = n_listed or max(n_movies, round(n_movies * ML25M_LISTED / ML25M_MOVIES))
    least = max(-(-n_movies // n_users), min(20, n_ratings // n_users))
    most = n_movies // 2
    if not least * n_users <= n_ratings <= most * n_users:
        raise ValueError(
            f"n_ratings={n_ratings} cannot give each of {n_users} users between {least} and "
            f"{most} (half of {n_movies} movies) ratings: it must be in "
            f"[{least * n_users}, {most * n_users}]"
        )
    if not n_movies <= n_listed <= max_movie_id:
        raise ValueError(f"need n_movies <= n_listed <= max_movie_id, got {n_movies}, "
                         f"{n_listed}, {max_movie_id}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    listed = np.sort(rng.choice(max_movie_id, n_listed, replace=False) + 1)
    movie_ids = np.sort(rng.choice(listed, n_movies, replace=False))
    _write_movies(folder / "movies.csv", rng, listed)

    popularity = (rng.permutation(n_movies) + 1.0) ** -0.9
    popularity /= popularity.sum()
    counts = _user_counts(rng, n_users, n_ratings, least, most)
    # Movie m is rated by (at least) user owner[m], so every movie appears.
    owner = rng.permutation(n_users)[np.arange(n_movies) % n_users]
    forced = np.sort(owner * np.int64(n_movies) + np.arange(n_movies))
    cuts = np.searchsorted(np.cumsum(counts), np.arange(CHUNK_ROWS, n_ratings, CHUNK_ROWS))
    bounds = np.unique(np.concatenate([[0], cuts, [n_users]]))
    forced_bounds = np.searchsorted(forced // n_movies, bounds)
    with open(folder / "ratings.csv", "w", newline="") as fh:
        fh.write("userId,movieId,rating,timestamp\n")
        for lo, hi, flo, fhi in zip(bounds[:-1], bounds[1:], forced_bounds[:-1], forced_bounds[1:]):
            users = np.arange(lo, hi, dtype=np.int64)
            key = _chunk_keys(rng, users, counts[lo:hi], forced[flo:fhi], n_movies, popularity)
            rating = pd.Categorical.from_codes(
                rng.choice(10, len(key), p=RATING_SHARES / RATING_SHARES.sum()), RATING_LABELS)
            pd.DataFrame({
                "userId": key // n_movies + 1,
                "movieId": movie_ids[key % n_movies],
                "rating": rating,
                "timestamp": rng.integers(FIRST_TIMESTAMP, LAST_TIMESTAMP + 1, len(key)),
            }).to_csv(fh, header=False, index=False)
    return folder


# --------------------------------------------------------------------------- measurement
def _status_kib(field: str) -> int:
    """A ``/proc/self/status`` memory field (``VmRSS``) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise ValueError(f"/proc/self/status has no {field} line")


def measure(stage: Callable[[], Any]) -> tuple[Any, float, float, int, int, int]:
    """Run ``stage()``: (its result, wall and CPU seconds, RSS bytes before, at the peak
    and after)."""
    ctypes.CDLL(None).malloc_trim(0)  # hand freed heap back, so RSS counts live data only
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    before = _status_kib("VmRSS") * 1024
    start, cpu_start = time.perf_counter(), time.process_time()
    result = stage()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # the reset peak, on Linux
    ctypes.CDLL(None).malloc_trim(0)
    return result, seconds, cpu, before, peak, _status_kib("VmRSS") * 1024


def run_stages(folder: Path) -> tuple[list[tuple], int]:
    """Time the four stages on ``folder``: rows (stage, wall s, CPU s, RSS before, peak,
    after) and the number of ratings."""
    import jax

    from recjax.config import RunConfig
    from recjax.data.movielens import load_movielens
    from recjax.data.splits import carve_validation, holdout_split
    from recjax.families import MODELS

    cfg = RunConfig(dataset="ml-25m", split="random", model="mf")
    jax.devices()  # backend start-up is not part of any stage

    def split(data):
        train, test, _ = holdout_split(data, cfg.test_fraction, seed=cfg.seed)
        fit_part, val = carve_validation(train, cfg.val_fraction, cfg.seed)
        return {"train": fit_part, "val": val, "test": test}

    def device_put(inputs):
        arrays = jax.device_put(inputs)
        jax.block_until_ready(arrays)
        return arrays

    rows = []
    data, *stats = measure(lambda: load_movielens("ml-25m", folder, allow_download=False))
    rows.append(("load", *stats))
    n_ratings = len(data)
    parts, *stats = measure(lambda: split(data))
    rows.append(("split", *stats))
    del data  # as in training: only the parts live on
    inputs, *stats = measure(lambda: {name: MODELS["mf"].inputs(part, task=cfg.task,
                                                                binary_threshold=cfg.binary_threshold)
                                      for name, part in parts.items()})
    rows.append(("inputs", *stats))
    _, *stats = measure(lambda: device_put(inputs))
    rows.append(("device_put", *stats))
    return rows, n_ratings


def table(rows: list[tuple], n_ratings: int) -> str:
    """Markdown table of :func:`run_stages` rows; bytes/rating is the stage's own peak
    (peak RSS minus RSS when it started) per rating."""
    lines = ["| stage | seconds | CPU seconds | peak RSS GiB | stage peak bytes/rating "
             "| RSS after GiB |", "|---|---|---|---|---|---|"]
    for stage, seconds, cpu, before, peak, after in rows:
        lines.append(f"| {stage} | {seconds:.2f} | {cpu:.2f} | {peak / 2**30:.2f} "
                     f"| {(peak - before) / n_ratings:.1f} | {after / 2**30:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ratings", type=int, default=ML25M_RATINGS,
                        help="ratings to generate (fewer users and movies below ml-25m's size)")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/ml-25m-synth"),
                        help="where the synthetic files are (generated if missing)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not ((args.folder / "ratings.csv").is_file() and (args.folder / "movies.csv").is_file()):
        scale = min(1.0, args.ratings / ML25M_RATINGS)  # users shrink with it, movies slower
        start = time.perf_counter()
        write_ml25m_layout(args.folder, args.ratings, max(1, round(ML25M_USERS * scale)),
                           max(1, round(ML25M_MOVIES * scale**0.5)), seed=args.seed)
        print(f"wrote {args.folder} in {time.perf_counter() - start:.1f} s")
    rows, n_ratings = run_stages(args.folder)
    print(f"\n{n_ratings:,} ratings from {args.folder}\n")
    print(table(rows, n_ratings))
    print(f"\npeak RSS of the whole run: {max(row[4] for row in rows) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
