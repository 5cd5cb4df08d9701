"""Arena-Hard with several judges, as the official ``show_result.py --judge-names``.

The reference is a transcription (written here, not copied) of lmarena/arena-hard-auto@196f6b8
(HEAD, 2025) ``show_result.py``: ``load_judgments`` reads ``data/<bench>/model_judgment/<judge>/
*.jsonl`` of every judge in ``--judge-names`` order, concatenates them, drops questions with a
missing verdict and explodes the battles; ``print_leaderboard`` bootstraps every model's mean
battle score; ``print_leaderboard_with_style_features`` fits one Bradley-Terry model with style
features over all the battles (``utils/math_utils.py``: ``one_hot_encode``,
``bootstrap_pairwise_model``, ``to_winrate_probabilities``). The judge itself is no feature of
either fit. The 2024 script (3071ef9, 0489bf3) has one ``--judge-name`` only.

The second judge's folder is derived from the gpt-4.1 fixtures by changing some verdicts
deterministically, so the pooled scores differ from either judge's alone.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.benchmarks import arena_hard as ah
from harness.cli import main

V2_DIR = Path(__file__).parent / "fixtures" / "arena_hard" / "arena-hard-v2.0"
BASELINE = "o3-mini-2025-01-31"
JUDGES = ["gpt-4.1", "gemini-2.5"]
# the second judge: a milder reading of some of gpt-4.1's verdicts
SOFTER = {"A>>B": "A>B", "A>B": "A=B", "B>>A": "B>A", "B>A": "A=B", "A=B": "B>A"}


def _bench(tmp_path: Path) -> Path:
    """The v2.0 fixtures plus a ``gemini-2.5`` judge folder: every third game of gpt-4.1's softened."""
    bench = tmp_path / "arena-hard-v2.0"
    shutil.copytree(V2_DIR, bench)
    out = bench / "model_judgment" / "gemini-2.5"
    out.mkdir()
    for f in sorted((bench / "model_judgment" / "gpt-4.1").glob("*.jsonl")):
        rows = [json.loads(line) for line in f.read_text().splitlines()]
        for n, r in enumerate(rows):
            r["judge"] = "gemini-2.5"
            for k, g in enumerate(r["games"]):
                if (n + k) % 3 == 0 and g["score"] in SOFTER:
                    g["score"] = SOFTER[g["score"]]
        (out / f.name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return bench


# the official multi-judge path, transcribed ---------------------------------------------------
def _official_battles(bench: Path, judges: list[str]) -> pd.DataFrame:
    """``load_judgments``: each judge's folder in turn (files sorted, as the harness reads a folder)."""
    frames = [pd.read_json(f, lines=True) for j in judges
              for f in sorted((bench / "model_judgment" / j).glob("*.jsonl"))]
    data = pd.concat(frames).reset_index(drop=True)
    missing = data.games.map(lambda g: g[0] is None or g[1] is None
                             or g[0]["score"] is None or g[1]["score"] is None)
    data = data[~missing].reset_index(drop=True)
    strong = 3
    to_score = {"A>B": [1], "A>>B": [1] * strong, "A=B": [0.5], "A<<B": [0] * strong, "A<B": [0],
                "B>A": [0], "B>>A": [0] * strong, "B=A": [0.5], "B<<A": [1] * strong, "B<A": [1]}
    data["scores"] = data.games.map(lambda g: to_score[g[1]["score"]]
                                    + [1 - s for s in to_score[g[0]["score"]]])
    battles = data[["uid", "model", "category", "scores"]].explode("scores").reset_index(drop=True)
    return battles[battles.category == "hard_prompt"].reset_index(drop=True)


def _official_mean(bench: Path, judges: list[str]) -> dict[str, tuple[float, float, float]]:
    """``print_leaderboard``: 100 per-model resamples (``np.random.seed(42)`` first; unseeded there)."""
    b = _official_battles(bench, judges)[["model", "scores"]]
    np.random.seed(42)
    boots = pd.concat([b.groupby("model").sample(frac=1.0, replace=True).groupby("model").mean()
                       for _ in range(100)])
    boots["scores"] = boots["scores"].astype(float)
    g = boots.groupby("model")["scores"]
    mean, lo, hi = g.mean(), g.quantile(0.05), g.quantile(0.95)
    return {m: (100 * mean[m], 100 * lo[m], 100 * hi[m]) for m in mean.index}


def _metadata(bench: Path) -> dict[str, dict[str, dict]]:
    """``get_model_style_metadata``, plus the baseline's answers from the mirrored official file."""
    from harness import datafiles

    meta = {}
    for f in sorted((bench / "model_answer").glob("*.jsonl")):
        df = pd.read_json(f, lines=True)
        meta[df.iloc[0]["model"]] = df.set_index("uid")["metadata"].to_dict()
    base = datafiles.fetch_jsonl(ah.VERSIONS["v2.0"].answers.format(BASELINE))
    meta[BASELINE] = {r["uid"]: r["metadata"] for r in base}
    return meta


def _counts(meta: dict) -> list[float]:
    return [v if isinstance(v, int) else sum(v.values()) for v in meta.values()]


def _official_style(bench: Path, judges: list[str]) -> dict[str, tuple[float, float, float]]:
    """``print_leaderboard_with_style_features`` with ``-f length markdown`` over all judges' battles."""
    import torch

    b = _official_battles(bench, judges)
    meta = _metadata(bench)
    mine = torch.tensor([_counts(meta[m][u]) for m, u in zip(b.model, b.uid, strict=True)],
                        dtype=torch.float32)
    base = torch.tensor([_counts(meta[BASELINE][u]) for u in b.uid], dtype=torch.float32)
    feats = torch.zeros_like(mine)
    feats[:, 0] = (mine[:, 0] - base[:, 0]) / (mine[:, 0] + base[:, 0])
    dm, db = mine[:, 1:] / (mine[:, :1] + 1), base[:, 1:] / (base[:, :1] + 1)
    feats[:, 1:] = (dm - db) / (dm + db + 1)
    feats = (feats - feats.mean(axis=0)) / feats.std(axis=0)
    models = sorted({*b.model, BASELINE})
    onehot = torch.zeros(len(b), len(models))
    for row, m in enumerate(b.model):
        onehot[row, models.index(m)] = 1
        onehot[row, models.index(BASELINE)] = -1
    x, y = torch.cat([onehot, feats], dim=1), torch.tensor(b.scores.tolist())

    def fit(idx: np.ndarray) -> torch.Tensor:
        w = torch.nn.Parameter(torch.full((x.shape[1],), 0.5))
        opt = torch.optim.LBFGS([w], lr=0.1, max_iter=50, tolerance_grad=1e-9, tolerance_change=1e-9)

        def loss() -> torch.Tensor:
            opt.zero_grad()
            value = torch.nn.functional.binary_cross_entropy_with_logits(x[idx] @ w, y[idx].float(),
                                                                         reduction="sum")
            value.backward()
            return value

        opt.step(loss)
        return w.detach()

    np.random.seed(42)
    idxs = np.random.randint(low=0, high=len(x), size=(100, len(x)))
    coefs = torch.stack([fit(i) for i in idxs])[:, :-4].exp()
    k = models.index(BASELINE)
    table = pd.DataFrame((coefs / (coefs + coefs[:, k:k + 1])).tolist(), columns=models)
    return {m: tuple(100 * table[m].quantile(q) for q in (0.5, 0.05, 0.95)) for m in models if m != BASELINE}


# the harness against it ------------------------------------------------------------------------
def _close(ours: dict, theirs: dict) -> None:
    assert sorted(ours) == sorted(theirs) and len(ours) == 4
    for m, want in theirs.items():
        got = (ours[m]["score"], ours[m]["ci_lower"], ours[m]["ci_upper"])
        assert got == pytest.approx(want, abs=1e-6), m


def test_two_judges_pooled_as_the_official_script(tmp_path: Path) -> None:
    bench = _bench(tmp_path)
    folders = [bench / "model_judgment" / j for j in JUDGES]
    result = ah.score_judges(folders, "v2.0", JUDGES)
    theirs = _official_mean(bench, JUDGES)
    _close(result["models"], theirs)
    alone = _official_mean(bench, JUDGES[:1])  # the second judge changes the scores
    assert all(abs(theirs[m][0] - alone[m][0]) > 0.5 for m in theirs)
    assert result["version"] == "arena-hard-v2.0 judges gpt-4.1+gemini-2.5"
    assert result["provenance"]["judges"] == JUDGES
    assert result["models"]["llama-3-8b-instruct"]["n_questions"] == 80  # 40 questions, two judges
    # files named one by one, in any order, are grouped judge by judge as the script does
    files = sorted(f for d in folders for f in d.glob("*.jsonl"))[::-1]
    again = ah.score_judges(files, "v2.0", JUDGES)["models"]
    _close(again, theirs)


def test_two_judges_style_controlled_as_the_official_script(tmp_path: Path) -> None:
    bench = _bench(tmp_path)
    folders = [bench / "model_judgment" / j for j in JUDGES]
    result = ah.score_judges(folders, "v2.0", JUDGES, "style")
    _close(result["models"], _official_style(bench, JUDGES))
    info = result["provenance"]["style_control"]
    assert info["judges"] == JUDGES and info["n_models"] == 4
    assert result["version"] == f"arena-hard-v2.0 style-control pooled over 4 models [{info['hash']}] " \
                                "judges gpt-4.1+gemini-2.5"
    rows, features = ah.load_pool([folders[0]], "v2.0", "gpt-4.1")
    assert ah.pool_info(rows, "v2.0", features, "style")["hash"] != info["hash"]


def test_a_file_of_another_judge_is_refused(tmp_path: Path) -> None:
    bench = _bench(tmp_path)
    gemini = bench / "model_judgment" / "gemini-2.5" / "llama-3-8b-instruct.jsonl"
    with pytest.raises(ah.DataError, match=r"gemini-2\.5/llama-3-8b-instruct\.jsonl: row 1 judged by "
                                           r"'gemini-2\.5', which is not among the named judges "
                                           r"\(--judge-names gpt-4\.1 claude\)"):
        ah.score_judges([bench / "model_judgment" / "gpt-4.1", gemini], "v2.0", ["gpt-4.1", "claude"])
    with pytest.raises(ah.DataError, match=r"no judgments of 'claude'"):
        ah.score_judges([bench / "model_judgment" / "gpt-4.1"], "v2.0", ["gpt-4.1", "claude"])
    # without a judge field, the judge is the folder the file is in
    bare = bench / "model_judgment" / "claude"
    bare.mkdir()
    rows = [{k: v for k, v in json.loads(line).items() if k != "judge"}
            for line in gemini.read_text().splitlines()]
    (bare / gemini.name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ah.DataError, match=r"judged by 'claude'"):
        ah.score_judges([bare], "v2.0", ["gpt-4.1"])
    with pytest.raises(ah.ConfigError, match=r"2024 script \(v0\.1\) scores one --judge-name"):
        ah.score_judges([bare], "v0.1", ["gpt-4.1", "claude"])


def test_judge_names_from_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bench = _bench(tmp_path)
    folders = [str(bench / "model_judgment" / j) for j in JUDGES]
    args = ["eval", "arena_hard", "--version", "v2.0", "--from-judgments", *folders]
    assert main([*args, "--judge-names", *JUDGES, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["version"] == "arena-hard-v2.0 judges gpt-4.1+gemini-2.5"
    assert out["provenance"]["judges"] == JUDGES
    _close(out["models"], _official_mean(bench, JUDGES))
    assert main([*args, "--judge-names", *JUDGES, "--model", "llama-3-8b-sppo-iter3"]) == 0
    text = capsys.readouterr().out
    assert "Arena-Hard arena-hard-v2.0 judges gpt-4.1+gemini-2.5" in text
    assert "llama-3-8b-sppo-iter3" in text and "llama-3-8b-instruct" not in text
    assert main([*args, "--judge-names", "gpt-4.1"]) == 2  # gemini-2.5's folder is not named
    assert "judged by 'gemini-2.5', which is not among the named judges" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # an arena_hard flag only
        main(["eval", "mt_bench", "--from-judgments", folders[0], "--judge-names", "gpt-4.1"])
    assert "unrecognized arguments: --judge-names gpt-4.1" in capsys.readouterr().err
    assert main(["eval", "arena_hard", "--version", "v2.0", "--judge-names", "gpt-4.1"]) == 2
    assert "--judge-names is for arena_hard --from-judgments" in capsys.readouterr().err
    # without --judge-names a folder is not taken, as before
    assert main(args[:-1]) == 2
    assert "no such file" in capsys.readouterr().err
