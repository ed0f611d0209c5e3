"""Pictures of a run, as PNG files (matplotlib; the ``plot`` extra).

* :func:`learning_curves`: the training loss and validation metrics per epoch;
* :func:`norm_vs_ratings`: item embedding norm against number of ratings (log x),
  the items furthest above the trend highlighted and labelled by title (the Google
  lab's popularity-norm effect);
* :func:`projection`: the item embeddings in 2-D (PCA, or t-SNE with cosine metric
  when scikit-learn is installed), coloured by genre;
* :func:`rating_histograms`: ratings per user and per item;
* :func:`plot_run`: all of them for a run folder.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot
(no global state, no display needed).

Example
-------
>>> import numpy as np
>>> from recjax.plots import norm_vs_ratings
>>> rng = np.random.default_rng(0)
>>> counts = rng.integers(1, 500, 100)
>>> emb = rng.normal(size=(100, 8)) * np.log(counts)[:, None]
>>> fig = norm_vs_ratings(emb, counts, [f"item {i}" for i in range(100)], n_label=3)
>>> fig.axes[0].get_xscale()
'log'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure

from recjax.evaluation.protocol import RankingTask
from recjax.metrics import norm_popularity_correlation

__all__ = ["learning_curves", "norm_vs_ratings", "projection", "rating_histograms", "plot_run",
           "save_png"]


def _tsne_available() -> bool:
    """True when scikit-learn (for t-SNE) can be imported."""
    try:
        import sklearn.manifold  # noqa: F401
    except ImportError:
        return False
    return True


def learning_curves(history: Sequence[dict[str, Any]], title: str = "") -> Figure:
    """Training loss and validation metrics per epoch.

    Parameters
    ----------
    history : list of dict
        ``metrics.jsonl`` epoch records: ``epoch``, ``train_data_loss`` (the task
        loss: MSE or log loss), ``train_loss`` (with regularisation), ``val_*`` (of
        the validated epochs: ``--val-every``).

    Returns
    -------
    Figure
        Left: train data loss and the validation metric on the same scale (``val_mse``
        or ``val_log_loss``), with total train loss dashed; right: every other ``val_*``.
    """
    if not history:
        raise ValueError("no epoch records to plot (metrics.jsonl has no epoch lines)")
    epochs = np.array([h["epoch"] for h in history])
    fig = Figure(figsize=(10, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    keys = list(dict.fromkeys(k for h in history for k in h))  # every record's, in order
    validated = lambda key: ([h["epoch"] for h in history if key in h],  # noqa: E731
                             [h[key] for h in history if key in h])
    same_scale = next((k for k in ("val_mse", "val_log_loss") if k in keys), None)
    left.plot(epochs, [h["train_data_loss"] for h in history], "o-", ms=3, label="train (data loss)")
    left.plot(epochs, [h["train_loss"] for h in history], "--", color="grey", lw=1,
              label="train (with regularisation)")
    if same_scale:
        at, values = validated(same_scale)
        left.plot(at, values, "o-", ms=3, label=same_scale.replace("_", " ", 1))
        best = at[int(np.argmin(values))]
        left.axvline(best, color="k", lw=0.6, ls=":")
        left.annotate(f"best epoch {best}", (best, left.get_ylim()[1]),
                      ha="left", va="top", fontsize=8)
    left.set_xlabel("epoch")
    left.set_ylabel("MSE" if same_scale == "val_mse" else "log loss" if same_scale else "loss")
    left.set_title("loss per epoch")
    left.legend(fontsize=8)
    others = [k for k in keys if k.startswith("val_") and k not in (same_scale, "val_seconds")]
    for key in others:
        right.plot(*validated(key), "o-", ms=3, label=key)
    right.set_xlabel("epoch")
    right.set_title("validation metrics")
    if others:
        right.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def norm_vs_ratings(item_embeddings: np.ndarray, item_counts: np.ndarray, titles: Sequence[str],
                    n_label: int = 8, title: str = "") -> Figure:
    """Embedding norm of each item against its number of ratings (log x).

    Items with no rating are left out. The ``n_label`` items furthest above a
    least-squares line of norm on log(count) (high norm for their popularity: the
    items dot-product retrieval over-recommends) are drawn in red and labelled.

    Parameters
    ----------
    item_embeddings : float array [n_items, d]
    item_counts : int array [n_items]
    titles : sequence of str, length n_items
    n_label : int
    """
    emb = np.asarray(item_embeddings, np.float64)
    counts = np.asarray(item_counts, np.float64)
    if emb.shape[0] != counts.shape[0] or len(titles) != counts.shape[0]:
        raise ValueError(f"item_embeddings ({emb.shape[0]}), item_counts ({counts.shape[0]}) and "
                         f"titles ({len(titles)}) must have one entry per item")
    rated = np.flatnonzero(counts > 0)
    if len(rated) == 0:
        raise ValueError("no item has a rating")
    norms = np.linalg.norm(emb, axis=1)[rated]
    x = counts[rated]
    fig = Figure(figsize=(8, 5.5), layout="constrained")
    ax = fig.subplots()
    ax.scatter(x, norms, s=8, alpha=0.4, color="tab:blue", edgecolors="none")
    ax.set_xscale("log")
    if len(rated) >= 3 and np.ptp(np.log(x)) > 0:
        slope, intercept = np.polyfit(np.log(x), norms, 1)
        grid = np.geomspace(x.min(), x.max(), 50)
        ax.plot(grid, intercept + slope * np.log(grid), color="k", lw=1, label="least-squares trend")
        residual = norms - (intercept + slope * np.log(x))
    else:
        residual = norms - norms.mean()
    top = np.argsort(-residual)[:max(n_label, 0)]
    ax.scatter(x[top], norms[top], s=24, color="tab:red", label="highest norm for their popularity")
    for n, j in enumerate(top):  # alternate above/below so that neighbours' labels part
        ax.annotate(str(titles[rated[j]]), (x[j], norms[j]), fontsize=7,
                    xytext=(4, 3 if n % 2 == 0 else -9), textcoords="offset points")
    corr = norm_popularity_correlation(emb, counts) if len(rated) >= 3 else {"spearman": np.nan}
    ax.set_xlabel("number of ratings (train)")
    ax.set_ylabel("item embedding norm")
    ax.set_title(title or f"embedding norm vs popularity (Spearman rho = {corr['spearman']:.2f})")
    ax.legend(fontsize=8, loc="upper left")
    return fig


def _primary_genres(genres: Sequence[Any]) -> np.ndarray:
    """One genre per item for colouring: its rarest genre (the most specific one).

    ``genres`` holds one tuple (or "A|B" string) per item; items without one get
    ``"unknown"``. Example: ("Animation", "Children's", "Comedy") -> "Animation".
    """
    lists = [tuple(g.split("|")) if isinstance(g, str) else tuple(g or ()) for g in genres]
    lists = [tuple(x for x in g if x and x != "unknown") for g in lists]
    freq: dict[str, int] = {}
    for g in lists:
        for name in g:
            freq[name] = freq.get(name, 0) + 1
    return np.asarray([min(g, key=lambda n: (freq[n], n)) if g else "unknown" for g in lists],
                      dtype=object)


def _project(emb: np.ndarray, method: str, seed: int) -> np.ndarray:
    if method == "pca":
        centred = emb - emb.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        return centred @ vt[:2].T
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(40.0, max(2.0, (len(emb) - 1) / 3)))
        return TSNE(n_components=2, perplexity=perplexity, metric="cosine", init="pca",
                    random_state=seed).fit_transform(emb)
    raise ValueError(f"unknown projection {method!r}; use 'pca' or 'tsne'")


def projection(item_embeddings: np.ndarray, genres: Sequence[Any], method: str = "pca", *,
               mask: np.ndarray | None = None, seed: int = 0, title: str = "") -> Figure:
    """The item embeddings projected to 2-D, one colour per (primary) genre.

    Parameters
    ----------
    item_embeddings : float array [n_items, d]
    genres : sequence, length n_items
        Each item's genres (a tuple, or an "A|B" string); an item takes the colour of
        its rarest genre, the most specific one.
    method : {"pca", "tsne"}
        ``tsne`` needs scikit-learn (cosine metric, as in the Google lab).
    mask : bool array [n_items], optional
        Items to draw (e.g. those with ratings).
    """
    emb = np.asarray(item_embeddings, np.float64)
    if emb.ndim != 2 or len(genres) != emb.shape[0]:
        raise ValueError(f"item_embeddings {emb.shape} and genres ({len(genres)}) disagree")
    labels = _primary_genres(genres)
    if mask is not None:
        emb, labels = emb[mask], labels[mask]
    if len(emb) < 3:
        raise ValueError("need at least 3 items to project")
    if emb.shape[1] < 2:
        emb = np.hstack([emb, np.zeros((len(emb), 2 - emb.shape[1]))])
    xy = _project(emb, method, seed)
    names, counts = np.unique(labels, return_counts=True)
    names = names[np.argsort(-counts, kind="stable")]
    cmap = _colours(len(names))
    fig = Figure(figsize=(9, 7), layout="constrained")
    ax = fig.subplots()
    for j, name in enumerate(names):
        sel = labels == name
        ax.scatter(xy[sel, 0], xy[sel, 1], s=9, alpha=0.7, color=cmap[j], edgecolors="none",
                   label=f"{name} ({int(sel.sum())})")
    ax.legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5),
              title="genre (rarest of the item's)", title_fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"item embeddings, {'PCA' if method == 'pca' else 't-SNE (cosine)'}")
    return fig


def _colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    base = colormaps["tab20"].colors
    return [base[(2 * j) % 20 + (2 * j) // 20 % 2] for j in range(n)]


def rating_histograms(per_user: np.ndarray, per_item: np.ndarray, title: str = "") -> Figure:
    """Histograms of ratings per user and per item (log-spaced bins, zeros left out)."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    for ax, counts, who in zip(fig.subplots(1, 2), (per_user, per_item), ("user", "item")):
        c = np.asarray(counts)
        c = c[c > 0]
        if len(c) == 0:
            raise ValueError(f"no {who} has a rating")
        bins = np.unique(np.geomspace(1, c.max() + 1, 40).round()) - 0.5  # integers centred
        ax.hist(c, bins=bins, color="tab:blue" if who == "user" else "tab:orange")
        ax.set_xscale("log")
        ax.set_xlabel(f"ratings per {who} (log scale)")
        ax.set_ylabel(f"{who}s")
        ax.set_title(f"{len(c):,} {who}s: median {np.median(c):g}, max {c.max():,}")
    if title:
        fig.suptitle(title)
    return fig


def plot_run(run: Any, out: str | Path, *, tsne: bool | None = None, label: int = 8,
             dpi: int = 80) -> list[Path]:
    """Write every plot of a :class:`recjax.runs.Run` as PNG files into ``out``.

    Files: ``learning_curves.png`` (when metrics.jsonl has epochs),
    ``norm_vs_ratings.png``, ``embeddings_pca.png``, ``embeddings_tsne.png`` (when
    ``tsne`` and scikit-learn is installed; ``None`` means whenever it is) and
    ``rating_histograms.png``. Returns the paths written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"{run.name} on {run.dataset} ({run.split})"
    task = RankingTask.from_run(run)
    counts = task.item_counts
    info = run.data.item_info
    genres = list(info["genres"]) if info is not None and "genres" in info else [()] * len(counts)
    figures: dict[str, Figure] = {}
    if run.history:
        figures["learning_curves"] = learning_curves(run.history, title=name)
    figures["norm_vs_ratings"] = norm_vs_ratings(run.item_embeddings, counts, run.item_titles,
                                                 n_label=label)
    figures["embeddings_pca"] = projection(run.item_embeddings, genres, "pca", mask=counts > 0,
                                           title=f"{name}: item embeddings, PCA")
    if tsne or (tsne is None and _tsne_available()):
        if not _tsne_available():
            raise ImportError("t-SNE needs scikit-learn: pip install 'recjax[plot]'")
        figures["embeddings_tsne"] = projection(run.item_embeddings, genres, "tsne", mask=counts > 0,
                                                title=f"{name}: item embeddings, t-SNE (cosine)")
    per_user = np.diff(task.train.indptr)
    figures["rating_histograms"] = rating_histograms(per_user, counts,
                                                     title=f"{run.dataset}: train part")
    paths = []
    for key, fig in figures.items():
        path = out / f"{key}.png"
        save_png(fig, path, dpi=dpi)
        paths.append(path)
    return paths


def save_png(fig: Figure, path: str | Path, dpi: int = 80) -> Path:
    """Save ``fig`` as a PNG, reduced to a 256-colour palette when Pillow is installed
    (a third of the size, no visible change for these plots)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    try:
        from PIL import Image
    except ImportError:
        Path(path).write_bytes(buffer.getvalue())
        return Path(path)
    with Image.open(io.BytesIO(buffer.getvalue())) as image:
        image.convert("RGB").quantize(256).save(path, optimize=True)
    return Path(path)
