"""Arena-Hard-Auto: official data and prompts, verdict extraction, show_result.py's scoring (checked
against a transcription of the official scripts), and the benchmark end to end on CPU."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from openai_server import FakeOpenAI, judge_config

from harness.benchmarks import arena_hard as ah
from harness.benchmarks import arena_hard_scoring as sc
from harness.cli import main

# sha256 of the system prompts in lmarena/arena-hard-auto's code (utils/judge_utils.py): the
# original Arena-Hard prompt and the creative-writing one
OG_PROMPT_SHA = "03f68010febd7a6405102ef882b4dd5a9700c56b2e1ff286d3b38f5d3a929bbf"
CREATIVE_PROMPT_SHA = "171489efbca7f19fb520e1b3c23783c76af7c723e770fe897a55f391684aa358"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_data_and_prompts_come_from_the_official_files() -> None:
    for name, n in (("v0.1", 500), ("v2.0", 500)):
        qs = ah.questions(name)
        assert len(qs) == n and len({q["id"] for q in qs}) == n
        assert {q["id"] for q in qs} <= set(ah.baseline_answers(name))
    v01, v2 = ah.judge_settings("v0.1"), ah.judge_settings("v2.0")
    assert _sha(v01.system_prompt) == OG_PROMPT_SHA and v2.system_prompt == v01.system_prompt
    assert _sha(ah.creative_writing_prompt(v01.system_prompt)) == CREATIVE_PROMPT_SHA
    assert (v01.attempts, v01.temperature, v01.max_tokens) == (2, 0.0, 4096)
    assert (v2.attempts, v2.max_tokens) == (1, 16000)
    assert [q["id"] for q in ah.questions("v0.1", limit=2)] == [q["id"] for q in ah.questions("v0.1")[:2]]


def test_games_show_the_baseline_first_then_swapped() -> None:
    q = ah.questions("v0.1", limit=1)
    g1, g2 = ah.games(q, {q[0]["id"]: "MODEL"}, "m", "v0.1", ah.Decoding(0.0, 4096))
    base = ah.baseline_answers("v0.1")[q[0]["id"]]
    template = ah.judge_settings("v0.1").template
    want = template.format(question_1=q[0]["prompt"], answer_1=base, answer_2="MODEL")
    assert g1.request.messages[1]["content"] == want
    swapped = g2.request.messages[1]["content"]
    assert swapped == template.format(question_1=q[0]["prompt"], answer_1="MODEL", answer_2=base)
    assert g1.request.messages[0] == {"role": "system", "content": ah.judge_settings("v0.1").system_prompt}


# verdicts ------------------------------------------------------------------------------------
V01_ENDINGS = [  # (judgment ending, label, ask again) as v0.1 gen_judgment.py's get_score
    ("My final verdict is tie: [[A=B]]", "A=B", False),
    ("Assistant B is significantly better: [[B>>A]].", "B>>A", False),
    ("[[A>B]] ... so again, my final verdict: [[A>B]]", "A>B", False),  # one distinct label
    ("first [[A>B]], but on reflection [[B>A]]", None, False),  # conflicting: an invalid game
    ("My final verdict is that Assistant A is better.", None, True),  # none: ask again
    ("my final verdict: [[a>b]]", None, True),  # case matters in v0.1
    ("Verdict: [A>B]", None, True),  # single brackets are not v0.1's pattern
    ("[[]] and then [[C]]", None, True),
]
V2_ENDINGS = [  # as the 2025 get_score: upper-cased, first pattern that matches, last match
    ("My final verdict is tie: [[A=B]]", "A=B"),
    ("first [[A>B]], but on reflection [[B>A]]", "B>A"),
    ("my final verdict: [[a>>b]]", "A>>B"),
    ("Verdict: [A>B]", "A>B"),
    ("[B>A] then [[A>B]]", "A>B"),  # the double-bracket pattern is tried first
    ("no label at all", None),
]


@pytest.mark.parametrize(("text", "label", "again"), V01_ENDINGS)
def test_v01_verdicts(text: str, label: str | None, again: bool) -> None:
    assert ah.parse_verdict(text, "v0.1") == (label, again)


@pytest.mark.parametrize(("text", "label"), V2_ENDINGS)
def test_v2_verdicts(text: str, label: str | None) -> None:
    assert ah.parse_verdict(text, "v2.0") == (label, False)


# scoring -------------------------------------------------------------------------------------
LABELS = ["A>>B", "A>B", "A=B", "B>A", "B>>A"]


def _rows(n: int, models: dict[str, list[float]], seed: int, invalid: float = 0.0) -> list[dict]:
    """Random judgment rows (2024 schema); ``models`` gives each model's label probabilities."""
    rng = np.random.default_rng(seed)
    rows = []
    for model, p in models.items():
        for i in range(n):
            games = []
            for _ in range(2):
                label = str(rng.choice(LABELS, p=p))
                games.append({"score": None if rng.random() < invalid else label})
            rows.append({"question_id": f"q{i}", "model": model, "judge": "j", "games": games})
    return rows


def _official_v01(rows: list[dict], baseline: str = "gpt-4-0314", weight: int = 3, rounds: int = 100):
    """A transcription of the 2024 show_result.py (battles, compute_mle_elo, bootstrap, win rates)."""
    from sklearn.linear_model import LogisticRegression

    battles = pd.DataFrame()
    for row in rows:
        for g, (a_wins, b_wins) in enumerate((("model_a", "model_b"), ("model_b", "model_a"))):
            out = {"question_id": row["question_id"], "model_a": baseline, "model_b": row["model"]}
            s, w = row["games"][g]["score"], 1
            if s == "A=B":
                out["winner"] = "tie"
            elif s in ("A>B", "A>>B"):
                out["winner"], w = a_wins, weight if s == "A>>B" else 1
            elif s in ("B>A", "B>>A"):
                out["winner"], w = b_wins, weight if s == "B>>A" else 1
            else:
                w = 0
            if w:
                battles = pd.concat([battles, pd.DataFrame([out] * w)])

    def mle(df):
        models = pd.concat([df["model_a"], df["model_b"]]).unique()
        models = pd.Series(np.arange(len(models)), index=models)
        df = pd.concat([df, df], ignore_index=True)
        n = df.shape[0]
        x = np.zeros([n, len(models)])
        x[np.arange(n), models[df["model_a"]]] = +math.log(10)
        x[np.arange(n), models[df["model_b"]]] = -math.log(10)
        y = np.zeros(n)
        y[df["winner"] == "model_a"] = 1.0
        tie = (df["winner"] == "tie").to_numpy().copy()
        tie[len(tie) // 2:] = False
        y[tie] = 1.0
        lr = LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-8).fit(x, y)
        elo = 400 * lr.coef_[0] + 1000
        elo += 1000 - elo[models[baseline]]
        return pd.Series(elo, index=models.index)

    point = mle(battles)

    def wr(e: float) -> float:
        return 100 / (1 + 10 ** ((1000 - e) / 400))

    if not rounds:  # (on a handful of battles a resample can hold one class, where sklearn stops)
        return {m: (wr(point[m]),) for m in point.index if m != baseline}
    np.random.seed(42)
    boot = pd.DataFrame([mle(battles.sample(frac=1.0, replace=True)) for _ in range(rounds)])
    return {m: (wr(point[m]), wr(np.percentile(boot[m], 2.5)), wr(np.percentile(boot[m], 97.5)))
            for m in point.index if m != baseline}


def test_v01_scores_equal_a_transcription_of_the_official_script() -> None:
    rows = _rows(60, {"m1": [0.1, 0.2, 0.2, 0.3, 0.2], "m2": [0.3, 0.3, 0.2, 0.1, 0.1]}, seed=0,
                 invalid=0.05)
    ours = ah.score(rows, "v0.1")
    theirs = _official_v01(rows)
    for m in ("m1", "m2"):
        got = (ours[m]["score"], ours[m]["ci_lower"], ours[m]["ci_upper"])
        assert got == pytest.approx(theirs[m], abs=1e-4)
        assert ours[m]["ci_lower"] < ours[m]["score"] < ours[m]["ci_upper"]
    assert ours["m1"]["n_questions"] == 60


def test_bradley_terry_equals_the_closed_form_against_one_baseline() -> None:
    rows = _rows(80, {"m": [0.1, 0.25, 0.3, 0.2, 0.15]}, seed=3)
    df, invalid = sc.battles(ah.normalise(rows, "v0.1"), "v0.1")
    assert invalid == 0
    weights = {"A>>B": 3, "B>>A": 3}
    n = wins = 0.0
    for r in rows:  # (weighted wins + ½ ties) / weighted N, from the model's side
        for g, label in enumerate(x["score"] for x in r["games"]):
            w = weights.get(label, 1)
            model_wins = label.startswith("A") if g == 1 else label.startswith("B")
            wins += w * (0.5 if "=" in label else float(model_wins))
            n += w
    assert len(df) == n
    rating = sc.bt_ratings(df, "gpt-4-0314")["m"]
    assert 100 * sc.win_rate(rating) == pytest.approx(100 * wins / n, abs=1e-4)
    assert ah.score(rows, "v0.1")["m"]["score"] == pytest.approx(100 * wins / n, abs=1e-4)


def test_bootstrap_is_deterministic_under_the_seed_and_brackets_the_estimate() -> None:
    rows = _rows(40, {"m": [0.15, 0.25, 0.2, 0.25, 0.15]}, seed=5)
    df, _ = sc.battles(ah.normalise(rows, "v0.1"), "v0.1")
    a, b = sc.score_v01(df, "gpt-4-0314"), sc.score_v01(df, "gpt-4-0314")
    other = sc.score_v01(df, "gpt-4-0314", seed=7)
    assert a == b and a["m"]["ci_lower"] != other["m"]["ci_lower"]
    assert a["m"]["ci_lower"] < a["m"]["score"] < a["m"]["ci_upper"]
    v2 = sc.score_v2(df)
    assert v2 == sc.score_v2(df) and v2["m"]["ci_lower"] < v2["m"]["score"] < v2["m"]["ci_upper"]


def _official_v2(rows: list[dict], weight: int = 3) -> dict[str, tuple[float, float, float]]:
    """A transcription of the 2025 show_result.py's load_judgments + print_leaderboard (seeded)."""
    label_to_score = {"A>B": [1], "A>>B": [1] * weight, "A=B": [0.5], "A<<B": [0] * weight, "A<B": [0],
                      "B>A": [0], "B>>A": [0] * weight, "B=A": [0.5], "B<<A": [1] * weight, "B<A": [1]}
    data = pd.DataFrame(rows)
    null = data.games.map(lambda x: x[0]["score"] is None or x[1]["score"] is None)
    data = data[~null].reset_index(drop=True)
    data["scores"] = data.games.map(lambda x: label_to_score[x[1]["score"]]
                                    + [1 - s for s in label_to_score[x[0]["score"]]])
    battles = data[["uid", "model", "scores"]].explode("scores").reset_index(drop=True)
    battles = battles[["model", "scores"]]
    np.random.seed(42)
    boots = pd.concat([battles.groupby("model").sample(frac=1.0, replace=True).groupby("model").mean()
                       for _ in range(100)])
    boots["scores"] = boots["scores"].astype(float)
    mean, lo, hi = (boots.groupby("model").mean(), boots.groupby("model").quantile(0.05),
                    boots.groupby("model").quantile(0.95))
    return {m: (100 * mean.loc[m, "scores"], 100 * lo.loc[m, "scores"], 100 * hi.loc[m, "scores"])
            for m in mean.index}


def test_v2_scores_equal_a_transcription_of_the_official_script() -> None:
    rows = _rows(50, {"m1": [0.1, 0.2, 0.2, 0.3, 0.2], "m2": [0.3, 0.3, 0.2, 0.1, 0.1]}, seed=1,
                 invalid=0.05)
    rows = [{"uid": r["question_id"], "category": "hard_prompt", "judge": "j", "model": r["model"],
             "baseline": "o3-mini-2025-01-31", "games": r["games"]} for r in rows]
    ours, theirs = ah.score(rows, "v2.0"), _official_v2(rows)
    for m in ("m1", "m2"):
        got = (ours[m]["score"], ours[m]["ci_lower"], ours[m]["ci_upper"])
        assert got == pytest.approx(theirs[m], abs=1e-9)
    dropped = sum(1 for r in rows if r["model"] == "m1" and any(g["score"] is None for g in r["games"]))
    assert dropped and ours["m1"]["invalid_games"] == 2 * dropped  # v2.0 drops the question


def test_v01_drops_a_game_and_v2_the_question() -> None:
    row = {"id": "q", "model": "m", "category": "c", "labels": ["A>>B", None]}
    df, invalid = sc.battles([row], "v0.1")
    assert list(df["score"]) == [0.0, 0.0, 0.0] and invalid == 1
    df, invalid = sc.battles([row], "v2.0")
    assert df.empty and invalid == 2
    df, _ = sc.battles([{**row, "labels": ["A<B", "B<<A"]}], "v0.1")  # 2025-only labels
    assert df.empty
    df, _ = sc.battles([{**row, "labels": ["A<B", "B<<A"]}], "v2.0")
    assert list(df["score"]) == [1.0, 1.0, 1.0, 1.0]


def test_markdown_counts_as_the_official_answer_metadata() -> None:
    text = "# Title\n## Part\n1. one\n2. two\n- a\n* b\n**bold** and __also__\n```\n# not a header\n- no\n```"
    assert sc.markdown_counts(text) == {
        "header_count": {"h1": 1, "h2": 1, "h3": 0, "h4": 0, "h5": 0, "h6": 0},
        "list_count": {"ordered": 2, "unordered": 2}, "bold_count": {"**": 1, "__": 1}}
    assert sc.style_features(text, lambda t: 7) == [7.0, 2.0, 4.0, 2.0]


def test_style_control_removes_a_length_advantage() -> None:
    """Both models are as good as the baseline, but the judge likes length and m_long writes long:
    without style control m_long looks better; with it (pooled over both) the two come out alike."""
    rng = np.random.default_rng(0)
    rows, features = [], {}
    for i in range(300):
        features[(f"q{i}", "gpt-4-0314")] = (200, 2, 4, 1)
        for model, mean in (("m_long", 400), ("m_plain", 200)):
            n = int(rng.integers(mean // 2, mean * 3 // 2))
            features[(f"q{i}", model)] = (n, *(int(x) for x in rng.integers(0, 6, size=3)))
            p_win = 1 / (1 + math.exp(-4 * (n - 200) / (n + 200)))
            labels = ["B>A" if rng.random() < p_win else "A>B", "A>B" if rng.random() < p_win else "B>A"]
            rows.append({"question_id": f"q{i}", "model": model, "games": [{"score": s} for s in labels]})
    plain = ah.score(rows, "v0.1")
    assert plain["m_long"]["score"] - plain["m_plain"]["score"] > 15
    for control in ("style", "length"):
        styled = ah.score(rows, "v0.1", {"features": features, "control": control})
        assert abs(styled["m_long"]["score"] - styled["m_plain"]["score"]) < 5
        assert styled["m_long"]["ci_lower"] < styled["m_long"]["score"] < styled["m_long"]["ci_upper"]
    markdown = ah.score(rows, "v0.1", {"features": features, "control": "markdown"})
    assert markdown["m_long"]["score"] - markdown["m_plain"]["score"] > 15  # length not controlled


# style control: the official scripts, transcribed ---------------------------------------------
FIXTURES = Path(__file__).parent / "fixtures" / "arena_hard"
V01_DIR, V2_DIR = FIXTURES / "arena-hard-v0.1", FIXTURES / "arena-hard-v2.0"
FIXTURE_MODELS = ["llama-3-8b-instruct", "llama-3-8b-sppo-iter1", "llama-3-8b-sppo-iter2",
                  "llama-3-8b-sppo-iter3"]


def _official_markdown_meta(answer: str) -> dict:
    """add_markdown_info.py (lmarena/arena-hard-auto@3071ef9): count_markdown_elements of the
    answer with code blocks removed (remove_pattern)."""
    import re

    pattern = re.compile("```([^`]*)```")
    for block in pattern.findall(answer):
        answer = answer.replace(block, "")
    return {
        "header_count": {f"h{k}": len(re.findall(rf"^#{{{k}}}\s", answer, re.MULTILINE))
                         for k in range(1, 7)},
        "list_count": {"ordered": len(re.findall(r"^\s*\d+\.\s", answer, re.MULTILINE)),
                       "unordered": len(re.findall(r"^\s*[-*+]\s", answer, re.MULTILINE))},
        "bold_count": {"**": len(re.findall(r"\*\*[^*\n]+\*\*", answer)),
                       "__": len(re.findall(r"__[^_\n]+__", answer))},
    }


def _official_style_2024(bench_dir: Path, judge: str, control: str = "style", baseline: str = "gpt-4-0314",
                         multiplier: int = 3, num_round: int = 100) -> dict[str, tuple[float, float, float]]:
    """A transcription of lmarena/arena-hard-auto@3071ef9 (= 0489bf3, "update style control")
    show_result.py (get_battles_from_row, get_battles_from_judgment, the style branches of
    __main__) and utils_math.py (construct_style_matrices, fit_bt,
    get_bootstrap_result_style_control, predict_win_rate, get_win_rate_column). Returns each
    model's (score, lower, upper) win rates, unrounded (the script rounds to 0.01).

    Adapted only to run here: the judge folder is ``bench_dir/model_judgment/<judge>`` in sorted
    glob order; the baseline's conv_metadata (which the official HF answer files carry, added by
    add_markdown_info.py) is made from the mirrored 2024 answer file: its token_len and the
    official markdown counts; np.NAN (gone in numpy 2) is np.nan; tqdm is dropped."""
    import math as m

    from sklearn.linear_model import LogisticRegression

    from harness import datafiles

    style_elements = {"style": ["sum_assistant_a_tokens", "header_count_a", "list_count_a", "bold_count_a",
                                "sum_assistant_b_tokens", "header_count_b", "list_count_b", "bold_count_b"],
                      "length": ["sum_assistant_a_tokens", "sum_assistant_b_tokens"],
                      "markdown": ["header_count_a", "list_count_a", "bold_count_a",
                                   "header_count_b", "list_count_b", "bold_count_b"]}[control]
    apply_ratio = {"style": [1, 1, 1, 1], "length": [1], "markdown": [1, 1, 1]}[control]

    metadata = {}
    for file in sorted((bench_dir / "model_answer").glob("*.jsonl")):
        df = pd.read_json(file, lines=True)
        metadata[df.model_id[0]] = df[["question_id", "conv_metadata"]].set_index("question_id") \
            .to_dict("index")
    base = datafiles.fetch_jsonl(ah.VERSIONS["v0.1"].answers.format(baseline))
    metadata[baseline] = {r["question_id"]: {"conv_metadata": {
        "token_len": r["choices"][0]["turns"][0]["token_len"],
        **_official_markdown_meta(r["choices"][0]["turns"][0]["content"])}} for r in base}

    def conv_metadata(row):
        a, b = metadata[baseline][row["question_id"]]["conv_metadata"], \
            metadata[row["model"]][row["question_id"]]["conv_metadata"]
        return {"sum_assistant_a_tokens": a["token_len"], "sum_assistant_b_tokens": b["token_len"],
                "header_count_a": a["header_count"], "header_count_b": b["header_count"],
                "list_count_a": a["list_count"], "list_count_b": b["list_count"],
                "bold_count_a": a["bold_count"], "bold_count_b": b["bold_count"]}

    def get_battles_from_row(row):
        results = []
        for g, (a_label, b_label) in enumerate((("model_a", "model_b"), ("model_b", "model_a"))):
            output = {"question_id": row["question_id"], "model_a": baseline, "model_b": row["model"]}
            game = row["games"][g]
            weight = 1
            if game["score"] == "A=B":
                output["winner"] = "tie"
            elif game["score"] == "A>B":
                output["winner"] = a_label
            elif game["score"] == "A>>B":
                output["winner"] = a_label
                weight = multiplier
            elif game["score"] == "B>A":
                output["winner"] = b_label
            elif game["score"] == "B>>A":
                output["winner"] = b_label
                weight = multiplier
            else:
                weight = 0
            output["conv_metadata"] = conv_metadata(row)
            if weight:
                results += [output] * weight
        return results

    judge_dir = bench_dir / "model_judgment" / judge
    judgments = pd.concat([pd.read_json(f, lines=True) for f in sorted(judge_dir.glob("*jsonl"))])
    battles = judgments.apply(get_battles_from_row, axis=1)
    battles = pd.DataFrame(battles[battles.map(len) > 0].explode().tolist())

    def construct_style_matrices(df, BASE=10, add_one=True):
        models = pd.concat([df["model_a"], df["model_b"]]).unique()
        models = pd.Series(np.arange(len(models)), index=models)
        df = pd.concat([df, df], ignore_index=True)
        p = len(models.index)
        n = df.shape[0]
        k = int(len(style_elements) / 2)
        X = np.zeros([n, p + k])
        X[np.arange(n), models[df["model_a"]]] = +m.log(BASE)
        X[np.arange(n), models[df["model_b"]]] = -m.log(BASE)
        style_vector = np.array([df.conv_metadata.map(
            lambda x, e=element: x[e] if type(x[e]) is int else sum(x[e].values())).tolist()
            for element in style_elements])
        style_diff = (style_vector[:k] - style_vector[k:]).astype(float)
        style_sum = (style_vector[:k] + style_vector[k:]).astype(float)
        if add_one:
            style_sum = style_sum + np.ones(style_diff.shape)
        ratio = np.flatnonzero(apply_ratio)
        style_diff[ratio] /= style_sum[ratio]
        style_mean = np.mean(style_diff, axis=1)
        style_std = np.std(style_diff, axis=1)
        X[:, -k:] = ((style_diff - style_mean[:, np.newaxis]) / style_std[:, np.newaxis]).T
        Y = np.zeros(n)
        Y[df["winner"] == "model_a"] = 1.0
        tie_idx = (df["winner"] == "tie") | (df["winner"] == "tie (bothbad)")
        tie_idx[len(tie_idx) // 2:] = False
        Y[tie_idx] = 1.0
        return X, Y, models

    def fit_bt(X, Y, models, SCALE=400, INIT_RATING=1000, baseline_model=baseline):
        p = len(models.index)
        lr = LogisticRegression(fit_intercept=False)
        lr.fit(X, Y)
        elo_scores = SCALE * lr.coef_[0] + INIT_RATING
        elo_scores += 1114 - elo_scores[models[baseline_model]]
        return (pd.Series(elo_scores[:p], index=models.index).sort_values(ascending=False), lr.coef_[0][p:])

    def get_bootstrap_result_style_control(X, Y, battles, models, func_compute_elo, num_round=1000,
                                           baseline_model=baseline):
        elos = []
        k = int(X.shape[0] / 2)
        battles_tie_idx = (battles["winner"] == "tie") | (battles["winner"] == "tie (bothbad)")
        for _ in range(num_round):
            indices = np.random.choice(list(range(k)), size=(k), replace=True)
            index2tie = np.zeros(k, dtype=bool)
            index2tie[battles_tie_idx] = True
            nontie_indices = indices[~index2tie[indices]]
            tie_indices = np.concatenate([indices[index2tie[indices]], indices[index2tie[indices]] + k])
            _X = np.concatenate([X[nontie_indices], X[nontie_indices], X[tie_indices]])
            _Y = np.concatenate([Y[nontie_indices], Y[nontie_indices], Y[tie_indices]])
            assert _X.shape == X.shape and _Y.shape == Y.shape
            states = ~_X[:, : len(models)].any(axis=0)
            elo, _ = func_compute_elo(_X, _Y, models[~states], baseline_model=baseline_model)
            elos.append(elo)
        df = pd.DataFrame(elos)
        return df[df.median().sort_values(ascending=False).index]

    def predict_win_rate(elo_ratings, SCALE=400, BASE=10):
        names = sorted(elo_ratings.keys())
        wins: dict = {a: {} for a in names}
        for a in names:
            for b in names:
                ea = 1 / (1 + BASE ** ((elo_ratings[b] - elo_ratings[a]) / SCALE))
                wins[a][b] = ea
                wins[b][a] = 1 - ea
        data = {a: [wins[a][b] if a != b else np.nan for b in names] for a in names}
        df = pd.DataFrame(data, index=names)
        return df.T

    def get_win_rate_column(df, column):  # without the final round(x * 100, 2)
        to_dict = df[["model", column]].set_index("model").to_dict()[column]
        return predict_win_rate(to_dict)[baseline].fillna(0.5).apply(lambda x: x * 100)

    np.random.seed(42)  # utils_math.py, at import
    X, Y, models = construct_style_matrices(battles)
    bt_model_coef, _ = fit_bt(X, Y, models)
    bootstrap_model_coef = get_bootstrap_result_style_control(X, Y, battles, models, fit_bt,
                                                              num_round=num_round)
    stats = pd.DataFrame()
    for i, model in enumerate(bt_model_coef.index):
        stats.loc[i, "model"] = model
        stats.loc[i, "score"] = bt_model_coef[model]
        stats.loc[i, "lower"] = np.percentile(bootstrap_model_coef[model], 2.5)
        stats.loc[i, "upper"] = np.percentile(bootstrap_model_coef[model], 97.5)
    stats = stats.sort_values(by="model")
    out = {c: get_win_rate_column(stats, c) for c in ("score", "lower", "upper")}
    return {mod: (out["score"][mod], out["lower"][mod], out["upper"][mod])
            for mod in stats["model"] if mod != baseline}


def _official_style_2025(bench_dir: Path, judge: str, control: tuple[str, ...] = ("length", "markdown"),
                         fixed_slicing: bool = False, num_round: int = 100
                         ) -> dict[str, tuple[float, float, float]]:
    """A transcription of lmarena/arena-hard-auto@196f6b8 (HEAD) show_result.py (load_judgments,
    get_model_style_metadata, print_leaderboard_with_style_features) and utils/math_utils.py
    (BTModel, bt_loss, fit_pairwise_model, bootstrap_pairwise_model, one_hot_encode,
    to_winrate_probabilities). Returns each model's (median, 5%, 95%) win rates, unrounded.

    Adapted only to run here: judgments in sorted glob order; the baseline's answers (with their
    metadata) from the mirrored official file; ``np.random.seed(42)`` before the bootstrap (the
    script leaves it unseeded). ``fixed_slicing`` takes the length / markdown columns for the
    -f length / -f markdown options (the script slices the model columns instead)."""
    import torch

    from harness import datafiles

    category, baseline = "hard_prompt", "o3-mini-2025-01-31"
    weight = 3
    files = sorted((bench_dir / "model_judgment" / judge).glob("*.jsonl"))
    dfs = [pd.read_json(f, lines=True) for f in files]
    data = pd.concat(dfs).reset_index(drop=True)
    null_indices = data.games.map(lambda x: x[0] is None or x[1] is None or x[0]["score"] is None
                                  or x[1]["score"] is None)
    _data = data[~null_indices].reset_index(drop=True)
    label_to_score = {"A>B": [1], "A>>B": [1] * weight, "A=B": [0.5], "A<<B": [0] * weight, "A<B": [0],
                      "B>A": [0], "B>>A": [0] * weight, "B=A": [0.5], "B<<A": [1] * weight, "B<A": [1]}
    _data["scores"] = _data.games.map(
        lambda x: label_to_score[x[1]["score"]] + [1 - s for s in label_to_score[x[0]["score"]]])
    battles = _data[["uid", "model", "category", "scores"]].explode("scores").reset_index(drop=True)
    battles = battles[battles.category == category].reset_index(drop=True)

    model_metadata = {}
    for file in sorted((bench_dir / "model_answer").glob("*.jsonl")):
        df = pd.read_json(file, lines=True)
        model_metadata[df.iloc[0]["model"]] = df.set_index("uid")["metadata"].to_dict()
    base = datafiles.fetch_jsonl(ah.VERSIONS["v2.0"].answers.format(baseline))
    model_metadata[baseline] = {r["uid"]: r["metadata"] for r in base}
    style_metadata = model_metadata

    model_features = battles.apply(lambda row: style_metadata[row["model"]][row["uid"]], axis=1).tolist()
    baseline_features = battles.apply(lambda row: style_metadata[baseline][row["uid"]], axis=1).tolist()
    battles["model"] = battles["model"].map(lambda x: x.split("/")[-1])
    model_feature_tensor = torch.tensor([
        [v if isinstance(v, int) else sum(v.values()) for k, v in md.items()]
        for md in model_features], dtype=torch.float32)
    baseline_feature_tensor = torch.tensor([
        [v if isinstance(v, int) else sum(v.values()) for k, v in md.items()]
        for md in baseline_features], dtype=torch.float32)
    final_feature_tensor = torch.zeros_like(model_feature_tensor)
    final_feature_tensor[:, 0] = (model_feature_tensor[:, 0] - baseline_feature_tensor[:, 0]) / (
        model_feature_tensor[:, 0] + baseline_feature_tensor[:, 0])
    model_md_density = model_feature_tensor[:, 1:] / (model_feature_tensor[:, :1] + 1)
    baseline_md_density = baseline_feature_tensor[:, 1:] / (baseline_feature_tensor[:, :1] + 1)
    final_feature_tensor[:, 1:] = (model_md_density - baseline_md_density) / (
        model_md_density + baseline_md_density + 1)
    normalized_feature_tensor = (final_feature_tensor - torch.mean(final_feature_tensor, axis=0)) / torch.std(
        final_feature_tensor, axis=0)
    assert not normalized_feature_tensor.isnan().any()
    outcomes = torch.tensor(battles.scores.tolist())

    def one_hot_encode(items, baseline=baseline):
        unique_items = sorted(set(items + [baseline]))  # noqa: RUF005 (verbatim)
        item_to_index = {item: idx for idx, item in enumerate(unique_items)}
        one_hot_matrix = []
        for item in items:
            one_hot_vector = [0] * len(unique_items)
            one_hot_vector[item_to_index[item]] = 1
            one_hot_vector[item_to_index[baseline]] = -1
            one_hot_matrix.append(one_hot_vector)
        return torch.tensor(one_hot_matrix, dtype=torch.float32), unique_items

    model_features, unique_models = one_hot_encode(battles.model.tolist())
    all_features = torch.cat([model_features, normalized_feature_tensor], dim=1)
    p = len(unique_models)
    if "length" in control and "markdown" in control:
        num_features = 4
    elif "length" in control:
        all_features = torch.cat([all_features[:, :p], all_features[:, p:p + 1]], 1) if fixed_slicing \
            else all_features[:, :1]
        num_features = 1
    else:
        all_features = all_features[:, [*range(p), p + 1, p + 2, p + 3]] if fixed_slicing \
            else all_features[:, 1:]
        num_features = 3

    def fit_pairwise_model(features, outcomes, indices=None, lr=0.1, tol=1e-9, max_epochs=50):
        if indices is not None:
            features = features[indices]
            outcomes = outcomes[indices]
        logits = torch.nn.Parameter(torch.nn.init.constant_(torch.empty(features.shape[1]), 0.5))
        optimizer = torch.optim.LBFGS([logits], lr=lr, max_iter=max_epochs, tolerance_grad=tol,
                                      tolerance_change=tol)

        def closure():
            optimizer.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(features @ logits, outcomes.float(),
                                                                        reduction="sum")
            loss.backward()
            return loss

        optimizer.step(closure)
        return logits.detach()

    def bootstrap_pairwise_model(features, outcomes, num_round=100):
        boot_idxs = np.random.randint(low=0, high=features.shape[0], size=(num_round, features.shape[0]))
        return torch.stack([fit_pairwise_model(features, outcomes, boot_idxs[i]) for i in range(num_round)])

    def to_winrate_probabilities(coefs, models, baseline_model=baseline):
        baseline_idx = models.index(baseline_model)
        exp_coefs = torch.exp(coefs)
        probs = torch.zeros(coefs.shape[0], coefs.shape[1])
        for idx in range(len(models)):
            if models[idx] == baseline_model:
                probs[:, idx] = 0.5
            probs[:, idx] = exp_coefs[:, idx] / (exp_coefs[:, idx] + exp_coefs[:, baseline_idx])
        return probs

    np.random.seed(42)
    coefs = bootstrap_pairwise_model(all_features, outcomes, num_round)
    _coefs = coefs[:, :-num_features]
    table = pd.DataFrame(columns=unique_models,
                         data=to_winrate_probabilities(_coefs, unique_models).tolist())
    return {mod: (100 * table[mod].quantile(0.5), 100 * table[mod].quantile(0.05),
                  100 * table[mod].quantile(0.95)) for mod in unique_models if mod != baseline}


def _harness_pooled(name: str, bench_dir: Path, judge: str, control: str = "style") -> dict:
    rows, features = ah.load_pool([bench_dir / "model_judgment" / judge], name, judge)
    per_model, info = ah.pooled_style_scores([(rows, features)], name, control)
    assert info["models"] == FIXTURE_MODELS and info["control"] == control
    return per_model


@pytest.mark.parametrize("control", ["style", "length", "markdown"])
def test_v01_style_control_equals_the_2024_script_pooled_over_four_models(control: str) -> None:
    ours = _harness_pooled("v0.1", V01_DIR, "gpt-4-1106-preview", control)
    theirs = _official_style_2024(V01_DIR, "gpt-4-1106-preview", control)
    assert sorted(ours) == sorted(theirs) == FIXTURE_MODELS
    for m in FIXTURE_MODELS:
        got = (ours[m]["score"], ours[m]["ci_lower"], ours[m]["ci_upper"])
        assert got == pytest.approx(theirs[m], abs=1e-6)
        assert round(got[0], 2) == round(theirs[m][0], 2)  # the script's printed precision
        assert ours[m]["ci_lower"] < ours[m]["score"] < ours[m]["ci_upper"]


@pytest.mark.parametrize("control", ["style", "length", "markdown"])
def test_v2_style_control_equals_the_2025_script_pooled_over_four_models(control: str) -> None:
    ours = _harness_pooled("v2.0", V2_DIR, "gpt-4.1", control)
    features = ("length", "markdown") if control == "style" else (control,)
    theirs = _official_style_2025(V2_DIR, "gpt-4.1", features, fixed_slicing=control != "style")
    assert sorted(ours) == sorted(theirs) == FIXTURE_MODELS
    for m in FIXTURE_MODELS:
        got = (ours[m]["score"], ours[m]["ci_lower"], ours[m]["ci_upper"])
        assert got == pytest.approx(theirs[m], abs=1e-6)
        assert ours[m]["ci_lower"] <= ours[m]["score"] <= ours[m]["ci_upper"]


def test_the_2025_scripts_length_only_option_slices_the_wrong_columns() -> None:
    """Why the harness does not copy -f length / -f markdown of the 2025 script: it keeps the
    first model column (length) or drops it (markdown) instead of the style columns, so length
    only fails and markdown only gives each model another column's rating."""
    with pytest.raises(IndexError):
        _official_style_2025(V2_DIR, "gpt-4.1", ("length",), num_round=2)


def test_pooling_changes_the_fit_and_the_pool_is_named() -> None:
    """Fitted alone, a model keeps its own style gap in the features' centring; pooled, it does
    not. The version string names the pool, so the two never share a column."""
    rows, features = ah.load_pool([V01_DIR / "model_judgment" / "gpt-4-1106-preview"], "v0.1")
    alone_rows = [r for r in rows if r["model"] == "llama-3-8b-sppo-iter3"]
    alone, info1 = ah.pooled_style_scores([(alone_rows, features)], "v0.1")
    pooled, info4 = ah.pooled_style_scores([(rows, features)], "v0.1")
    m = "llama-3-8b-sppo-iter3"
    assert abs(alone[m]["score"] - pooled[m]["score"]) > 0.5
    assert (info1["n_models"], info4["n_models"]) == (1, 4) and info1["hash"] != info4["hash"]
    want = f"arena-hard-v0.1 style-control pooled over 4 models [{info4['hash']}]"
    assert ah.style_version("v0.1", info4) == want
    # the order the judgment sets come in does not matter (battles are pooled by model name)
    flipped = [r for name in reversed(FIXTURE_MODELS) for r in rows if r["model"] == name]
    again, info = ah.pooled_style_scores([(flipped, features)], "v0.1")
    assert info == info4 and again[m] == pooled[m]
    with pytest.raises(ah.DataError, match=r"judged by 'gpt-4-1106-preview', not 'gpt-4\.1'"):
        ah.load_pool([V01_DIR / "model_judgment" / "gpt-4-1106-preview"], "v0.1", "gpt-4.1")


def test_answer_features_use_the_official_metadata() -> None:
    count = len  # a counter that would give other numbers than the files
    row = json.loads((V01_DIR / "model_answer" / "llama-3-8b-sppo-iter3.jsonl").read_text().splitlines()[0])
    meta = row["conv_metadata"]
    want = (meta["token_len"], sum(meta["header_count"].values()), sum(meta["list_count"].values()),
            sum(meta["bold_count"].values()))
    assert ah.answer_style(row, count) == want
    legacy = {k: v for k, v in row.items() if k != "conv_metadata"}  # token_len in the turn only
    assert ah.answer_style(legacy, count) == want
    bare = {**legacy, "choices": [{"turns": [{"content": row["choices"][0]["turns"][0]["content"]}]}]}
    assert ah.answer_style(bare, count)[0] == len(row["choices"][0]["turns"][0]["content"])
    assert ah.answer_style(bare, count)[1:] == want[1:]
    v2 = json.loads((V2_DIR / "model_answer" / "llama-3-8b-instruct.jsonl").read_text().splitlines()[0])
    assert ah.answer_style(v2, count)[0] == v2["metadata"]["token_len"]


def test_2024_and_2025_rows_rescore_from_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows = _rows(30, {"m": [0.1, 0.2, 0.4, 0.2, 0.1]}, seed=2)
    f24, f25 = tmp_path / "m24.jsonl", tmp_path / "m25.jsonl"
    f24.write_text("".join(json.dumps(r) + "\n" for r in rows))
    f25.write_text("".join(json.dumps({"uid": r["question_id"], "category": "arena-hard-v0.1",
                                       "judge": "j", "model": r["model"], "baseline": "gpt-4-0314",
                                       "games": r["games"]}) + "\n" for r in rows))
    out = []
    for f in (f24, f25):
        assert main(["eval", "arena_hard", "--from-judgments", str(f), "--json"]) == 0
        out.append(json.loads(capsys.readouterr().out))
    assert out[0] == out[1] and out[0]["m"]["n_questions"] == 30
    assert main(["eval", "arena_hard", "--from-judgments", str(f24)]) == 0
    text = capsys.readouterr().out
    assert "Arena-Hard v0.1 (arena-hard-v0.1 vs gpt-4-0314)" in text
    assert f"{out[0]['m']['score']:6.1f}" in text
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"model": "m", "games": []}) + "\n")
    assert main(["eval", "arena_hard", "--from-judgments", str(bad)]) == 2
    assert "row 1: an Arena-Hard judgment row needs question_id or uid" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # each benchmark takes its own flags only
        main(["eval", "mt_bench", "--from-judgments", str(f24), "--version", "v2.0"])
    assert refused.value.code == 2 and "unrecognized arguments: --version v2.0" in capsys.readouterr().err


# end to end ----------------------------------------------------------------------------------
def test_end_to_end_with_an_endpoint_judge(tiny_model_dir: Path, tmp_path: Path, fresh_cache: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    """Scripted verdicts: game 1 of question 1 gets no label, then [[B>A]] when asked to continue;
    every other game says the model's answer (A or B) is slightly better, except game 1 of
    question 2, a tie."""
    qs = ah.questions("v0.1", limit=2)
    base = ah.baseline_answers("v0.1")

    def reply(messages: list[dict]) -> str:
        if messages[-1]["content"] == ah.CONTINUE:
            return "Sorry. My final verdict is [[B>A]]"
        user = messages[1]["content"]
        q = 0 if user.startswith(f"<|User Prompt|>\n{qs[0]['prompt']}\n") else 1
        if f"<|The Start of Assistant A's Answer|>\n{base[qs[q]['id']]}" in user:  # game 1
            return "Both are fine." if q == 0 else "My final verdict is tie: [[A=B]]"
        return "[[A>B]]"  # game 2: the model is assistant A

    out = tmp_path / "eval"
    with FakeOpenAI(reply=reply) as srv:
        judge = judge_config(tmp_path, srv.url, "gpt-4-1106-preview", 4096, (10, 30))
        cmd = ["eval", "arena_hard", "--model", str(tiny_model_dir), "--name", "tiny", "--judge", str(judge),
               "--limit", "2", "--max-new-tokens", "4", "--dtype", "float32", "--out", str(out),
               "--no-progress"]
        assert main([*cmd, "--dry-run"]) == 0 and not srv.requests
        dry = [json.loads(x) for x in (out / "judge_requests.jsonl").read_text().splitlines()]
        assert len(dry) == 4 and dry[0]["max_tokens"] == 4096 and dry[0]["temperature"] == 0.0
        capsys.readouterr()
        assert main([*cmd, "--json", "--yes"]) == 0
        assert len(srv.requests) == 5  # 4 games + 1 second attempt
        second = next(r for r in srv.requests if len(r["messages"]) == 4)
        assert [m["role"] for m in second["messages"]] == ["system", "user", "assistant", "user"]
        assert sorted(json.dumps(r["messages"]) for r in srv.requests if len(r["messages"]) == 2) == \
            sorted(json.dumps(r["messages"]) for r in dry)  # the dry run was exact
        assert main([*cmd, "--json", "--yes"]) == 0 and len(srv.requests) == 5  # all cached
    metrics = json.loads(capsys.readouterr().out.splitlines()[-1])
    # battles from the model's side: q1 game1 B>A (1), game2 A>B (1); q2 game1 tie (.5), game2 A>B (1)
    assert metrics["score"] == pytest.approx(100 * 3.5 / 4, abs=1e-3)
    assert metrics["invalid_games"] == 0 and metrics["n_questions"] == 2 and metrics["battles"] == 4
    answers = [json.loads(x) for x in (out / "model_answer" / "tiny.jsonl").read_text().splitlines()]
    assert set(answers[0]) == {"question_id", "answer_id", "model_id", "choices", "tstamp", "conv_metadata"}
    assert "token_len" in answers[0]["choices"][0]["turns"][0]
    assert set(answers[0]["conv_metadata"]) == {"token_len", "header_count", "list_count", "bold_count"}
    rows = [json.loads(x) for x in
            (out / "model_judgment" / "gpt-4-1106-preview" / "tiny.jsonl").read_text().splitlines()]
    assert set(rows[0]) == {"question_id", "model", "judge", "games"}
    assert rows[0]["games"][0]["judgment"] == "\nBoth are fine.\nSorry. My final verdict is [[B>A]]"
    assert [g["score"] for r in rows for g in r["games"]] == ["B>A", "A>B", "A=B", "A>B"]
    theirs = _official_v01(rows, rounds=0)["tiny"]  # the official script on the files written
    assert theirs[0] == pytest.approx(metrics["score"], abs=1e-3)
    result = json.loads((out / "results.json").read_text())
    prov = result["provenance"]
    assert result["version"] == "arena-hard-v0.1"
    assert prov["baseline"] == "gpt-4-0314" and prov["n_examples"] == 2 and prov["style_control"] is False
    assert prov["judge"].startswith("openai:gpt-4-1106-preview@http://127.0.0.1")

    # style control for this checkpoint, pooled with published judgments of the same judge (the
    # answers and the judge's replies are reused: the server is gone)
    published = V01_DIR / "model_judgment" / "gpt-4-1106-preview"
    styled = ah.evaluate("tiny", None, out, judge=str(judge), limit=2, style_control=True,
                         style_pool=[published], yes=True)
    rows, features = ah.load_pool([published], "v0.1")
    own = [json.loads(x) for x in (out / "model_answer" / "tiny.jsonl").read_text().splitlines()]
    count = ah.token_counter("v0.1")[0]
    want, info = ah.pooled_style_scores([(ah.read_judgments(out / "model_judgment" / "gpt-4-1106-preview"
                                                            / "tiny.jsonl"),
                                          ah.answer_features(own, count)), (rows, features)], "v0.1")
    assert styled["metrics"]["score"] == want["tiny"]["score"]
    # (4 battles: some resamples lack the model, the official percentile is NaN: no CI)
    assert styled["metrics"]["ci_lower"] is want["tiny"]["ci_lower"] is None
    pool = styled["provenance"]["style_control"]
    assert info["n_models"] == 5 and pool["models"] == [*FIXTURE_MODELS, "tiny"]
    assert styled["version"] == f"arena-hard-v0.1 style-control pooled over 5 models [{info['hash']}]"
    assert pool["judgments"] == "model_judgment/gpt-4-1106-preview/tiny.jsonl"
    assert json.loads((out / "results.json").read_text())["version"] == styled["version"]
    with pytest.raises(ah.DataError, match=r"judged by 'gpt-4\.1'"):  # another judge's folder
        ah.load_pool([V2_DIR / "model_judgment" / "gpt-4.1"], "v0.1", "gpt-4-1106-preview")


def test_end_to_end_with_a_local_judge_v2(tmp_path: Path, fresh_cache: Path, local_judge,
                                          capsys: pytest.CaptureFixture) -> None:
    """The CPU path: the model under test and an in-process judge (the tiny random model, whose
    judgments hold no verdict: every game is invalid and the score is missing, not invented)."""
    judge = local_judge(16384, 4)
    judge_dir = tmp_path / "tiny-judge"
    out = tmp_path / "eval"
    # (the first v2.0 question is longer than the tiny model's context: both use the long copy)
    assert main(["eval", "arena_hard", "--version", "v2.0", "--model", str(judge_dir), "--name", "tiny",
                 "--judge", str(judge), "--limit", "1", "--max-new-tokens", "4", "--dtype", "float32",
                 "--out", str(out), "--no-progress", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.splitlines()[-1])
    judged = out / "model_judgment" / "tiny-judge" / "tiny.jsonl"
    rows = [json.loads(x) for x in judged.read_text().splitlines()]
    assert set(rows[0]) == {"uid", "category", "judge", "model", "baseline", "games"}
    assert rows[0]["baseline"] == "o3-mini-2025-01-31" and len(rows[0]["games"]) == 2
    labels = [ah.parse_verdict(g["judgment"]["answer"], "v2.0")[0] for g in rows[0]["games"]]
    assert [g["score"] for g in rows[0]["games"]] == labels
    assert labels == [None, None]  # (greedy, so always the same 4 tokens)
    assert metrics["score"] is None and metrics["invalid_games"] == 2
    answers = [json.loads(x) for x in (out / "model_answer" / "tiny.jsonl").read_text().splitlines()]
    assert set(answers[0]) == {"uid", "ans_id", "model", "messages", "tstamp", "metadata"}
    assert set(answers[0]["metadata"]) == {"token_len", "header_count", "list_count", "bold_count"}
    result = json.loads((out / "results.json").read_text())
    assert result["version"] == "arena-hard-v2.0"
    assert result["provenance"]["judge_decoding"]["max_tokens"] == 4  # capped by the judge config
    assert result["provenance"]["judge_decoding"]["official_max_tokens"] == 16000
