"""Plots: each figure has the right axes, scales, labels and data; files are PNGs."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from _tiny_run import tiny_run  # noqa: E402

from recjax.plots import (  # noqa: E402
    _primary_genres,
    _tsne_available,
    learning_curves,
    norm_vs_ratings,
    plot_run,
    projection,
    rating_histograms,
)

HISTORY = [
    {"epoch": e, "train_loss": 1.2 / e, "train_data_loss": 1.0 / e, "val_mse": 0.9 + 0.01 * (e - 3) ** 2,
     "val_rmse": 0.95, "val_mae": 0.75, "seconds": 0.1}
    for e in range(1, 7)
]


def test_learning_curves():
    fig = learning_curves(HISTORY, title="mf")
    left, right = fig.axes
    labels = [line.get_label() for line in left.get_lines()]
    assert labels[:3] == ["train (data loss)", "train (with regularisation)", "val mse"]
    np.testing.assert_allclose(left.get_lines()[2].get_ydata(), [h["val_mse"] for h in HISTORY])
    assert left.get_lines()[3].get_xdata()[0] == 3  # the best epoch marker
    assert [line.get_label() for line in right.get_lines()] == ["val_rmse", "val_mae"]
    with pytest.raises(ValueError, match="no epoch records"):
        learning_curves([])


def test_norm_vs_ratings_labels_outliers():
    rng = np.random.default_rng(0)
    counts = np.concatenate([rng.integers(1, 1000, 200), [0]])
    emb = rng.normal(size=(201, 6)) * (0.2 + 0.1 * np.log(counts + 1))[:, None]
    emb[17] *= 10  # a niche-looking item with a huge norm
    titles = [f"movie {i}" for i in range(201)]
    fig = norm_vs_ratings(emb, counts, titles, n_label=3)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert len(ax.collections[0].get_offsets()) == 200  # the unrated item is left out
    labels = [t.get_text() for t in ax.texts]
    assert len(labels) == 3 and "movie 17" in labels
    assert "Spearman" in ax.get_title()
    with pytest.raises(ValueError, match="one entry per item"):
        norm_vs_ratings(emb, counts[:5], titles)


def test_primary_genres_prefers_the_rarest():
    genres = [("Comedy", "Drama"), ("Drama",), ("Drama", "War"), (), "Comedy|Drama"]
    assert _primary_genres(genres).tolist() == ["Comedy", "Drama", "War", "unknown", "Comedy"]


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_projection_colours_by_genre(method):
    if method == "tsne" and not _tsne_available():
        pytest.skip("scikit-learn is not installed")
    rng = np.random.default_rng(0)
    centres = np.array([[5.0, 0, 0], [0, 5.0, 0]])
    emb = np.concatenate([centres[0] + rng.normal(size=(20, 3)), centres[1] + rng.normal(size=(12, 3))])
    genres = [("Action",)] * 20 + [("Drama",)] * 12
    fig = projection(emb, genres, method, mask=np.arange(32) != 0)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["Action (19)", "Drama (12)"]
    a, d = (c.get_offsets() for c in ax.collections)
    assert len(a) == 19 and len(d) == 12
    gap = np.linalg.norm(a.mean(0) - d.mean(0))
    spread = max(a.std(0).max(), d.std(0).max())
    assert gap > 2 * spread  # the two groups stay apart
    with pytest.raises(ValueError, match="unknown projection"):
        projection(emb, genres, "umap")


def test_rating_histograms():
    fig = rating_histograms(np.array([1, 5, 20, 0, 100]), np.array([3, 3, 400]))
    left, right = fig.axes
    assert left.get_xscale() == "log" and sum(p.get_height() for p in left.patches) == 4
    assert "3 items" in right.get_title() and "max 400" in right.get_title()


def test_plot_run_files(tmp_path_factory, tmp_path):
    from recjax.explore import load_run

    run = load_run(tiny_run(tmp_path_factory))
    paths = plot_run(run, tmp_path, tsne=False, dpi=40)  # t-SNE: see the projection test
    names = {p.name for p in paths}
    assert {"learning_curves.png", "norm_vs_ratings.png", "embeddings_pca.png",
            "rating_histograms.png"} <= names
    assert "embeddings_tsne.png" not in names
    for p in paths:
        assert p.read_bytes()[:4] == b"\x89PNG" and p.stat().st_size < 200_000
