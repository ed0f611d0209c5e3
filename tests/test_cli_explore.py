"""The evaluate, recommend, neighbors and plot commands on a tiny trained run."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from _tiny_run import tiny_run

from recjax.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tiny_run(tmp_path_factory)


def cli(capsys, *argv) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def one_line_error(status: int, err: str, *fragments: str) -> None:
    assert status == 2
    assert err.startswith("recjax: error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err


def test_evaluate_table_and_json(capsys, run_dir, tmp_path):
    path = tmp_path / "eval.json"
    status, out, _ = cli(capsys, "evaluate", run_dir, "--k", 5, "--json", path)
    assert status == 0
    for text in ("model", "RMSE", "NDCG@5", "HR@5", "cov@5", "div@5", "novelty@5", "most popular",
                 "EASE (l2 250)", "global mean", "user mean", "relevant = the user's test items"):
        assert text in out, text
    saved = json.loads(path.read_text())
    assert saved["k"] == 5 and saved["split"] == "random" and saved["runs"] == [str(run_dir)]
    assert set(saved["results"]) == {"mf", "most popular", "EASE (l2 250)", "global mean", "user mean"}
    assert 0 <= saved["results"]["mf"]["ndcg@5"] <= 1


def test_evaluate_markdown_and_no_baselines(capsys, run_dir):
    status, out, _ = cli(capsys, "evaluate", run_dir, "--markdown", "--no-baselines", "--split", "random")
    assert status == 0
    assert "| mf " in out and "---:" in out and "most popular" not in out


def test_evaluate_other_split_is_refused(capsys, run_dir):
    one_line_error(*cli(capsys, "evaluate", run_dir, "--split", "ua")[::2],
                   "trained on split 'random'")


def test_recommend_users(capsys, run_dir):
    status, out, _ = cli(capsys, "recommend", run_dir, "--user", 1, 2, "-N", 3)
    assert status == 0
    assert "user 1 (" in out and "user 2 (" in out and "excluded; dot score" in out
    assert out.count("Item ") == 6
    status, out, _ = cli(capsys, "recommend", run_dir, "--user", 1, "--measure", "cosine",
                         "--include-rated")
    assert status == 0 and "included; cosine score" in out


def test_recommend_all_to_csv(capsys, run_dir, tmp_path):
    path = tmp_path / "recs.csv"
    status, out, _ = cli(capsys, "recommend", run_dir, "--all", "-N", 4, "--out", path)
    assert status == 0 and "wrote 4,000 recommendations for 1,000 users" in out
    frame = pd.read_csv(path)
    assert frame.columns.tolist() == ["user_id", "rank", "item_id", "title", "genres", "score"]
    assert len(frame) == 4000 and frame["rank"].max() == 4


@pytest.mark.parametrize("argv, fragments", [
    (["--user", "999999"], ["--user[0]: unknown user id 999999 (the run has 1000 users)"]),
    (["--user", "1", "bob"], ["--user[1]: unknown user id 'bob' (this run's user ids are integers)"]),
    (["--all"], ["--all needs --out"]),
    ([], ["--user ID"]),
    (["--all", "--user", "1"], ["not both"]),
])
def test_recommend_errors(capsys, run_dir, argv, fragments):
    one_line_error(*cli(capsys, "recommend", run_dir, *argv)[::2], *fragments)


def test_neighbors(capsys, run_dir):
    status, out, _ = cli(capsys, "neighbors", run_dir, "--movie", "item 7", "-k", 4, "--measure", "dot")
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == "Nearest neighbors of: Item 7 (item 7; dot)"
    assert lines[1].startswith("[Found more than one matching movie. Other candidates: Item 70, Item 71")
    assert "dot score" in lines[2] and len(lines) == 4 + 4  # title, others, header, rule, 4 rows
    status, out, _ = cli(capsys, "neighbors", run_dir, "--item", 7, "--include-self", "--measure", "l2")
    assert status == 0 and "distance" in out and out.splitlines()[3].split()[1] == "7"


@pytest.mark.parametrize("argv, fragments", [
    (["--movie", "Itme 7"], ["no title contains 'Itme 7'", "did you mean"]),
    (["--movie", "qqqqqq"], ["no title contains 'qqqqqq'"]),
    (["--item", "424242"], ["--item: unknown item id 424242 (the run has 500 items)"]),
    ([], ["--movie TITLE or --item ID"]),
])
def test_neighbors_errors(capsys, run_dir, argv, fragments):
    one_line_error(*cli(capsys, "neighbors", run_dir, *argv)[::2], *fragments)


def test_plot_writes_pngs(capsys, run_dir, tmp_path):
    status, out, _ = cli(capsys, "plot", run_dir, "--out", tmp_path / "plots", "--no-tsne")
    assert status == 0
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert names == ["embeddings_pca.png", "learning_curves.png", "norm_vs_ratings.png",
                     "rating_histograms.png"]
    assert all((tmp_path / "plots" / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for n in names)
    assert out.splitlines()[0].endswith(".png")


@pytest.mark.parametrize("command", [["evaluate"], ["recommend", "--user", "1"],
                                     ["neighbors", "--movie", "x"], ["plot"]])
def test_bad_run_folder(capsys, tmp_path, command):
    one_line_error(*cli(capsys, command[0], tmp_path / "nope", *command[1:])[::2], "no such run folder")
    one_line_error(*cli(capsys, command[0], tmp_path, *command[1:])[::2], "no run.json")


def test_evaluate_several_runs(capsys, run_dir):
    status, out, _ = cli(capsys, "evaluate", run_dir, run_dir, "--k", 3)
    assert status == 0 and "mf (run)" in out and "mf (run, 2)" in out and "most popular" in out


def test_evaluate_ensemble(capsys, run_dir):
    status, out, _ = cli(capsys, "evaluate", run_dir, run_dir, "--k", 3, "--ensemble",
                         "--ensemble-ease", 0.2, "--no-baselines")
    assert status == 0 and "ensemble of 2 runs + EASE (0.2)" in out and "most popular" not in out
    one_line_error(*cli(capsys, "evaluate", run_dir, "--ensemble-ease", 0.2)[::2], "need --ensemble")
    status, out, _ = cli(capsys, "evaluate", run_dir, run_dir, "--k", 3, "--ensemble",
                         "--ensemble-weights", "1,3", "--no-baselines")
    assert status == 0 and "ensemble of 2 runs (weighted)" in out
    one_line_error(*cli(capsys, "evaluate", run_dir, "--ensemble-weights", "1")[::2], "need --ensemble")
    one_line_error(*cli(capsys, "evaluate", run_dir, run_dir, "--ensemble", "--ensemble-weights", "1")[::2],
                   "1 weights for 2 runs")
    for bad in ("1,-1", "0,0", "a,b", "1,nan"):
        with pytest.raises(SystemExit):
            main(["evaluate", str(run_dir), str(run_dir), "--ensemble", "--ensemble-weights", bad])
    with pytest.raises(SystemExit):
        main(["evaluate", str(run_dir), "--ensemble", "--ensemble-ease", "1"])
