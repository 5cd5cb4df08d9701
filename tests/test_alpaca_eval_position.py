"""Where an AlpacaEval 2.0 result stands in the published leaderboard (data mirror's leaderboard.csv).

Expected ranks are computed here from the CSV with plain pandas comparisons, and the order is
checked against alpaca_eval's own ``main.evaluate`` leaderboard.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import pandas as pd
import pytest

from harness import datafiles
from harness.benchmarks import alpaca_eval as ae

LC = "length_controlled_winrate"
COLUMNS = (LC, "win_rate", "standard_error", "n_total", "avg_length")


@pytest.fixture(scope="module")
def board() -> pd.DataFrame:
    if not os.environ.get("SPPO_DATA_DIR"):
        pytest.fail("SPPO_DATA_DIR must point at the benchmark data mirror")
    return pd.read_csv(datafiles.fetch(ae.LEADERBOARD), index_col=0)


def _published(board: pd.DataFrame, model: str) -> dict:
    return {k: board.loc[model, k].item() for k in COLUMNS}


def _expected_rank(board: pd.DataFrame, lc: float, name: str) -> int:
    """1 + published rows above: those with a higher LC, and (alpaca_eval appends a new model after
    the published rows) those tied with it; a row of the model's own name is replaced."""
    others = board[board.index != name][LC]
    return 1 + int((others > lc).sum()) + int((others == lc).sum())


def _published_order(board: pd.DataFrame) -> list[str]:
    ranks = board[LC].rank(ascending=False, method="first").astype(int)
    return ranks.sort_values().index.tolist()


@pytest.mark.parametrize("model", ["NullModel", "gpt4_1106_preview", "Qwen-14B-Chat", "alpaca-7b"])
def test_a_published_lc_lands_at_its_models_own_rank(board: pd.DataFrame, model: str) -> None:
    order = _published_order(board)
    own = order.index(model) + 1
    got = ae.leaderboard_position(_published(board, model), board, model)
    assert got["rank"] == own == _expected_rank(board, board.loc[model, LC], model)
    assert got["out_of"] == len(board) and got["replaces_published_row"]
    shown = order[max(own - 1 - ae.NEIGHBOURS, 0):own + ae.NEIGHBOURS]
    assert [r["model"] for r in got["rows"]] == shown
    assert [r["rank"] for r in got["rows"]] == [order.index(m) + 1 for m in shown]
    current = [r for r in got["rows"] if r["current"]]
    assert [r["model"] for r in current] == [model]
    for r in got["rows"]:
        if not r["current"]:
            assert r[LC] == pytest.approx(board.loc[r["model"], LC])
            assert r["mode"] == board.loc[r["model"], "mode"]


@pytest.mark.parametrize("model", ["gpt4_1106_preview", "alpaca-7b"])
def test_a_tie_puts_the_new_model_after_the_published_row(board: pd.DataFrame, model: str) -> None:
    got = ae.leaderboard_position(_published(board, model), board, "my-model")
    assert got["rank"] == _expected_rank(board, board.loc[model, LC], "my-model")
    assert got["rank"] == _published_order(board).index(model) + 2 and got["out_of"] == len(board) + 1
    above = [r["model"] for r in got["rows"] if r["rank"] == got["rank"] - 1]
    assert above == [model] and not got["replaces_published_row"]


@pytest.mark.parametrize("lc", [99.0, 30.0, 5.88, 0.01])
def test_order_is_alpaca_evals_own(board: pd.DataFrame, lc: float, tmp_path: Path) -> None:
    """alpaca_eval's main.evaluate sorts the precomputed leaderboard (the model's row appended) the same
    way; 5.88... ties alpaca-7b exactly."""
    from alpaca_eval.main import evaluate

    if lc == 5.88:
        lc = board.loc["alpaca-7b", LC].item()
    metrics = {**_published(board, "Qwen-14B-Chat"), LC: lc}
    combined = pd.concat([board, pd.DataFrame([{**metrics, "mode": "community"}], index=["my-model"])])
    combined.to_csv(tmp_path / "leaderboard.csv")
    theirs, _ = evaluate(model_outputs=None, precomputed_leaderboard=tmp_path / "leaderboard.csv",
                         is_return_instead_of_print=True, output_path=None, is_cache_leaderboard=False)
    got = ae.leaderboard_position(metrics, board, "my-model")
    at = theirs.index.get_loc("my-model")
    assert got["rank"] == at + 1 == _expected_rank(board, lc, "my-model")
    around = theirs.index[max(at - ae.NEIGHBOURS, 0):at + ae.NEIGHBOURS + 1]
    assert [r["model"] for r in got["rows"]] == list(around)


# evaluate(): recorded only for the official annotator on all 805 instructions --------------------
@pytest.fixture()
def quick_evaluate(monkeypatch: pytest.MonkeyPatch, board: pd.DataFrame):
    """ae.evaluate with answering, judging and scoring stubbed: the metrics are alpaca-7b's published
    row (or ``lc=None``), so only the leaderboard step is real."""
    monkeypatch.setattr(ae, "write_model_config", lambda *a, **k: None)
    monkeypatch.setattr("harness.models.load_tokenizer", lambda *a, **k: None)
    monkeypatch.setattr(ae, "annotate", lambda outputs, *a, **k: [
        {"instruction": o["instruction"], "output_2": o["output"]} for o in outputs])
    monkeypatch.setattr(ae, "annotator_provenance", lambda annotator, judge, dtype: {
        "annotator": annotator if annotator != ae.LOCAL_ANNOTATOR else "prompt and parser, local judge"})

    def run(out: Path, annotator: str = ae.OFFICIAL_ANNOTATOR, limit: int | None = None,
            lc: bool = True) -> dict:
        metrics = _published(board, "alpaca-7b") | ({} if lc else {LC: None, "lc_unavailable": "no df_gamed"})
        monkeypatch.setattr(ae, "score", lambda *a, **k: dict(metrics))
        ae.evaluate("my-model", "path", lambda xs: ["answer"] * len(xs), {}, out,
                    annotator=annotator, limit=limit)
        return json.loads((out / "results.json").read_text())

    return run


def test_official_full_result_records_its_position(quick_evaluate, board: pd.DataFrame, tmp_path: Path,
                                                   capsys) -> None:
    saved = quick_evaluate(tmp_path / "ae")
    position = saved[ae.POSITION_KEY]
    mirror = Path(os.environ["SPPO_DATA_DIR"]) / "alpaca_eval" / "leaderboard.csv"
    assert position["leaderboard"] == "alpaca_eval/leaderboard.csv"
    assert position["sha256"] == hashlib.sha256(mirror.read_bytes()).hexdigest()
    assert position["rank"] == _expected_rank(board, board.loc["alpaca-7b", LC], "my-model")
    assert saved["provenance"]["n_examples"] == 805 and saved["provenance"]["limit"] is None
    err = capsys.readouterr().err
    assert f"rank {position['rank']} of {len(board) + 1}" in err and "my-model" in err


@pytest.mark.parametrize("case", [
    {"annotator": ae.LOCAL_ANNOTATOR},
    {"limit": 804},
    {"lc": False},
])
def test_local_judge_limit_or_no_lc_record_nothing(quick_evaluate, tmp_path: Path, capsys,
                                                   case: dict) -> None:
    saved = quick_evaluate(tmp_path / "ae", **case)
    assert ae.POSITION_KEY not in saved and ae.POSITION_KEY not in saved["metrics"]
    err = capsys.readouterr().err
    assert "not placed in the published leaderboard" in err and "rank" not in err
    assert len([line for line in err.splitlines() if "leaderboard" in line]) == 1


# --from-annotations: the published annotations re-scored ----------------------------------------
def _constructed_lc_files(tmp_path: Path, n: int = 805) -> dict[str, Path]:
    """Files with the layout of the two hub files of the LC GLM, made up (the real ones are not in
    the mirror), as in test_alpaca_eval."""
    rng = random.Random(0)
    difficulty = [rng.gauss(0, 1) for _ in range(n)]
    (tmp_path / "instruction_difficulty.csv").write_text(
        "index,instruction_difficulty\n" + "".join(f"{i},{d}\n" for i, d in enumerate(difficulty)))
    rows = ["model,index,preference,std_delta_len,instruction_difficulty,not_gamed_baseline"]
    for model, shift in (("gamed_long", 1.0), ("gamed_short", -1.0)):
        rows += [f"{model},{i},{min(max(0.5 + 0.3 * shift * rng.random(), 0.0), 1.0)},{-shift},"
                 f"{difficulty[i]},False" for i in range(n)]
    (tmp_path / "df_gamed.csv").write_text("\n".join(rows) + "\n")
    return {"instruction_difficulty.csv": tmp_path / "instruction_difficulty.csv",
            "df_gamed.csv": tmp_path / "df_gamed.csv"}


@pytest.fixture()
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datafiles.urllib.request, "urlopen",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))


def test_from_annotations_shows_the_position(board: pd.DataFrame, tmp_path: Path, offline,
                                             monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """End to end with the LC GLM (its hub files are not in the mirror: made-up stand-ins here)."""
    from harness.cli import main

    files = _constructed_lc_files(tmp_path)
    monkeypatch.setattr(ae, "lc_files", lambda: (files, None))
    path = datafiles.fetch("alpaca_eval/annotations/Qwen-14B-Chat.json")
    assert main(["eval", "alpaca_eval", "--from-annotations", str(path), "--json"]) == 0
    captured = capsys.readouterr()
    got = json.loads(captured.out)
    position = got[ae.POSITION_KEY]
    assert position["rank"] == _expected_rank(board, got[LC], "Qwen-14B-Chat")
    assert position["replaces_published_row"] and position["out_of"] == len(board)
    current = next(r for r in position["rows"] if r["current"])
    assert current["model"] == "Qwen-14B-Chat" and current[LC] == got[LC]
    assert current["win_rate"] == pytest.approx(board.loc["Qwen-14B-Chat", "win_rate"], abs=1e-6)
    assert f"rank {position['rank']} of {len(board)}" in captured.err


def test_from_annotations_without_lc_files_records_nothing(tmp_path: Path, offline,
                                                           monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from harness.cli import main

    monkeypatch.setenv("SPPO_CACHE_DIR", str(tmp_path))
    path = datafiles.fetch("alpaca_eval/annotations/Qwen-14B-Chat.json")
    assert main(["eval", "alpaca_eval", "--from-annotations", str(path), "--json"]) == 0
    captured = capsys.readouterr()
    assert ae.POSITION_KEY not in json.loads(captured.out)
    assert "not placed in the published leaderboard: no LC win rate" in captured.err


@pytest.mark.parametrize("change", ["local annotator", "subset"])
def test_from_annotations_of_a_local_judge_or_a_subset_record_nothing(
    tmp_path: Path, offline, monkeypatch: pytest.MonkeyPatch, capsys, change: str
) -> None:
    from harness.cli import main

    files = _constructed_lc_files(tmp_path)
    monkeypatch.setattr(ae, "lc_files", lambda: (files, None))
    rows = json.loads(datafiles.fetch("alpaca_eval/annotations/alpaca-7b.json").read_text())
    if change == "subset":
        rows = rows[:200]
    else:
        rows = [{**r, "annotator": f"{ae.OFFICIAL_ANNOTATOR}_local_judge"} for r in rows]
    (tmp_path / "annotations.json").write_text(json.dumps(rows))
    assert main(["eval", "alpaca_eval", "--from-annotations", str(tmp_path / "annotations.json"),
                 "--json"]) == 0
    captured = capsys.readouterr()
    got = json.loads(captured.out)
    assert got[LC] is not None and ae.POSITION_KEY not in got
    reason = "200 of the 805" if change == "subset" else "is not the leaderboard's"
    assert "not placed in the published leaderboard: " in captured.err and reason in captured.err
