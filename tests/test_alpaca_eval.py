"""AlpacaEval 2.0 fidelity: the harness's metrics reproduce the official leaderboard rows.

Inputs are the published annotation files and leaderboard in the data mirror (SPPO_DATA_DIR);
the leaderboard CSV is also the one shipped inside the alpaca-eval package.
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness import datafiles
from harness.benchmarks import alpaca_eval as ae

ANNOTATED = ["FuseChat-Qwen-2.5-7B-Instruct", "Qwen-14B-Chat", "alpaca-7b", "gpt-3.5-turbo-1106",
             "gpt-3.5-turbo-1106_verbose", "gpt4_1106_preview", "gpt4_gamed"]


@pytest.fixture(scope="module")
def leaderboard() -> pd.DataFrame:
    if not os.environ.get("SPPO_DATA_DIR"):
        pytest.fail("SPPO_DATA_DIR must point at the benchmark data mirror (../shared/data in CI)")
    import alpaca_eval

    shipped = (Path(alpaca_eval.__file__).parent / "leaderboards" / "data_AlpacaEval_2"
               / "weighted_alpaca_eval_gpt4_turbo_leaderboard.csv")
    mirror = datafiles.fetch("alpaca_eval/leaderboard.csv")
    assert shipped.read_bytes() == mirror.read_bytes(), "package leaderboard differs from the mirror"
    return pd.read_csv(shipped, index_col=0)


def _annotations(model: str) -> list[dict]:
    return json.loads(datafiles.fetch(f"alpaca_eval/annotations/{model}.json").read_text())


@pytest.mark.parametrize("model", ANNOTATED)
def test_metrics_reproduce_the_leaderboard_row(model: str, leaderboard: pd.DataFrame) -> None:
    row = leaderboard.loc[model]
    got = ae.score(_annotations(model), lc=None, lc_unavailable="not in this test")
    assert got["win_rate"] == pytest.approx(row["win_rate"], abs=1e-6)
    assert got["standard_error"] == pytest.approx(row["standard_error"], abs=1e-6, nan_ok=True)
    assert got["discrete_win_rate"] == pytest.approx(row["discrete_win_rate"], abs=1e-6)
    for key in ("n_wins", "n_wins_base", "n_draws", "n_total", "avg_length"):
        assert got[key] == row[key], key
    assert got["length_controlled_winrate"] is None and got["lc_unavailable"] == "not in this test"


@pytest.mark.parametrize("model", ["alpaca-7b", "gpt-3.5-turbo-1106"])
def test_order_randomisation_and_preference_direction(model: str) -> None:
    """Each stored preference is the judge's raw verdict, un-switched by alpaca_eval's seeded rule.

    The judge saw (output_1, output_2) as (m, M), or swapped when the seeded rule says so; with
    p = P(m) / (P(m) + P(M)) from the raw logprobs, the stored preference is 2 − p unswitched and
    3 − (2 − p) = 1 + p switched. 1 means the baseline (output_1) is better, 2 the model.
    """
    import ast

    from alpaca_eval.utils import random_seeded_choice

    rows = _annotations(model)
    switched = 0
    for r in rows:
        raw = r["raw_completion"]
        if raw is None:  # no verdict was obtained: alpaca_eval scores the row as a draw
            assert float(r["preference"]) == 1.5
            continue
        raw = ast.literal_eval(raw) if isinstance(raw, str) else raw
        top = {t["token"]: t["logprob"] for t in raw["logprobs"]["content"][0]["top_logprobs"]}
        pm, pM = (math.exp(top.get(t, -math.inf)) for t in ("m", "M"))
        p_first = pm / (pm + pM)
        is_switched = random_seeded_choice(seed="is_switched_outputs" + r["instruction"] + "0",
                                           choices=[False, True])
        switched += is_switched
        expected = 1 + p_first if is_switched else 2 - p_first
        assert float(r["preference"]) == pytest.approx(expected, abs=1e-6)
    assert 300 < switched < 505  # the rule is a fair coin per instruction
    # Direction: alpaca-7b loses to GPT-4-Turbo almost always, so preferences sit near 1.
    prefs = [float(r["preference"]) for r in rows]
    assert sum(p < 1.5 for p in prefs) > 0.9 * len(prefs)


def test_lc_is_unavailable_with_a_reason_when_hub_files_are_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPPO_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(datafiles.urllib.request, "urlopen",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    files, reason = ae.lc_files()
    assert files is None and "instruction_difficulty.csv" in reason and "offline" in reason
    got = ae.score(_annotations("alpaca-7b")[:50], files, reason)
    assert got["length_controlled_winrate"] is None and got["lc_standard_error"] is None
    assert "instruction_difficulty.csv" in got["lc_unavailable"]


def _constructed_lc_files(tmp_path: Path, n: int = 805) -> dict[str, Path]:
    """Files with the hub files' layout, made up for the test (the real ones are not here)."""
    rng = random.Random(0)
    difficulty = [rng.gauss(0, 1) for _ in range(n)]
    (tmp_path / "instruction_difficulty.csv").write_text(
        "index,instruction_difficulty\n" + "".join(f"{i},{d}\n" for i, d in enumerate(difficulty)))
    rows = ["model,index,preference,std_delta_len,instruction_difficulty,not_gamed_baseline"]
    for model, shift in (("gamed_long", 1.0), ("gamed_short", -1.0)):
        for i in range(n):
            p = min(max(0.5 + 0.3 * shift * rng.random(), 0.0), 1.0)
            rows.append(f"{model},{i},{p},{-shift},{difficulty[i]},False")
    (tmp_path / "df_gamed.csv").write_text("\n".join(rows) + "\n")
    return {"instruction_difficulty.csv": tmp_path / "instruction_difficulty.csv",
            "df_gamed.csv": tmp_path / "df_gamed.csv"}


def test_lc_runs_through_alpaca_eval_glm_with_the_hub_files(tmp_path: Path) -> None:
    files = _constructed_lc_files(tmp_path)
    rows = _annotations("gpt-3.5-turbo-1106")[:200]
    got = ae.score(rows, files)
    assert "lc_unavailable" not in got
    lc = got["length_controlled_winrate"]
    assert isinstance(lc, float) and 0 < lc < 100 and got["lc_standard_error"] > 0
    # The GLM is length-controlled: making the model's outputs longer without changing any verdict
    # moves the raw win rate not at all, and the LC win rate (which removes length) changes.
    longer = [{**r, "output_2": r["output_2"] * 3} for r in rows]
    again = ae.score(longer, files)
    assert again["win_rate"] == got["win_rate"]
    assert again["length_controlled_winrate"] != pytest.approx(lc, abs=1e-9)


def test_glm_weights_are_saved_for_alpaca_evals_predict_winrate(tmp_path: Path) -> None:
    files = _constructed_lc_files(tmp_path)
    rows = _annotations("gpt-3.5-turbo-1106")  # all 805: predict_winrate averages over all
    got = ae.score(rows, files, weights_dir=tmp_path / "w")
    csv = tmp_path / "w" / "length_controlled_v1" / "baseline_gpt4_1106_preview.csv"
    weights = pd.read_csv(csv, index_col=0)
    assert list(weights.index) == ["gpt-3.5-turbo-1106"]
    # alpaca_eval's predict_winrate against the baseline (its weights are 0 by construction) from
    # the saved row is the LC win rate: the file holds the fitted GLM
    weights.loc[ae.BASELINE] = 0.0
    glm = ae._alpaca_eval().metrics.glm_winrate
    with ae._hub_files(files):
        predicted = glm.predict_winrate("gpt-3.5-turbo-1106", ae.BASELINE, weights=weights)
    assert 100 * predicted == pytest.approx(got["length_controlled_winrate"], abs=1e-9)


def test_lc_of_the_baseline_against_itself_is_one_half(tmp_path: Path) -> None:
    got = ae.score(_annotations("gpt4_1106_preview"), _constructed_lc_files(tmp_path))
    assert got["length_controlled_winrate"] == 50.0 and got["win_rate"] == 50.0


def test_annotations_for_unknown_instructions_are_refused() -> None:
    rows = _annotations("alpaca-7b")[:3]
    rows[1] = {**rows[1], "instruction": "not an AlpacaEval instruction"}
    with pytest.raises(ae.DataError, match=r"not in AlpacaEval 2\.0"):
        ae.score(rows)


def test_cli_rescores_published_annotations_as_json(leaderboard: pd.DataFrame, capsys) -> None:
    from harness.cli import main

    path = datafiles.fetch("alpaca_eval/annotations/Qwen-14B-Chat.json")
    assert main(["eval", "alpaca_eval", "--from-annotations", str(path), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["win_rate"] == pytest.approx(leaderboard.loc["Qwen-14B-Chat", "win_rate"], abs=1e-6)
    assert got["n_total"] == 805 and got["length_controlled_winrate"] is None


def test_local_annotator_runs_alpaca_eval_end_to_end(
    tmp_path: Path, long_context_judge: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Answers → alpaca_eval PairwiseAnnotator (official prompt + logprob parser, local judge) →
    metrics; a second evaluation reuses every answer and judgment."""
    monkeypatch.setenv("SPPO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(datafiles.urllib.request, "urlopen",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    asked: list[list[str]] = []

    def answer(instructions: list[str]) -> list[str]:
        asked.append(instructions)
        return [f"A short answer to: {x[:40]}" for x in instructions]

    judged_in: list[str] = []  # the local judge runs in the run's dtype, whatever it is
    completions = ae.local_completions
    monkeypatch.setattr(ae, "local_completions", lambda *a, **k: judged_in.append(k["dtype"]) or
                        completions(*a, **k))
    out = tmp_path / "ae"
    kwargs = {"annotator": "local", "limit": 3, "judge": str(long_context_judge), "dtype": "float32"}
    decoding = {"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 8}
    res = ae.evaluate("tiny", str(long_context_judge), answer, decoding, out, **kwargs)
    rows = ae.eval_set(3)
    assert asked == [[r["instruction"] for r in rows]]
    annotations = json.loads((out / "annotations.json").read_text())
    assert [a["instruction"] for a in annotations] == asked[0]
    assert all(a["generator_1"] == ae.BASELINE and a["generator_2"] == "tiny" for a in annotations)
    assert all(1.0 <= float(a["preference"]) <= 2.0 for a in annotations)
    m = res["metrics"]
    assert m["n_total"] == 3 and m["win_rate"] == pytest.approx(
        100 * sum(float(a["preference"]) - 1 for a in annotations) / 3)
    assert m["avg_length"] == int(sum(len(a) for a in answer(asked[0])) / 3)
    assert "offline" in m["lc_unavailable"]
    prov = res["provenance"]
    assert prov["baseline"] == "gpt4_1106_preview" and prov["judge"] == f"local:{long_context_judge}"
    assert judged_in and set(judged_in) == {"float32"} and prov["judge_dtype"] == "float32"
    assert prov["n_examples"] == 3 and prov["alpaca_eval"].startswith("0.6")
    assert prov["limit"] == "3 (alpaca_eval max_instances: shuffled, seed 123)"  # not the first 3
    # The checkpoint's alpaca_eval model config, ready for a leaderboard submission.
    card = yaml.safe_load((out / "models_configs" / "tiny" / "configs.yaml").read_text())["tiny"]
    assert card["prompt_template"] == "tiny/prompt.txt"
    assert card["completions_kwargs"]["max_new_tokens"] == 8 and card["completions_kwargs"]["top_p"] == 0.9
    prompt = (out / "models_configs" / "tiny" / "prompt.txt").read_text()
    assert prompt.count("{instruction}") == 1 and prompt.rstrip().endswith("<|im_start|>assistant")

    # Resume: no new answers, and no judge call (the judge now fails if asked).
    asked.clear()
    monkeypatch.setattr(ae, "local_completions", lambda *a, **k: pytest.fail("judge called again"))
    again = ae.evaluate("tiny", str(long_context_judge), answer, decoding, out, **kwargs)
    assert asked == [] and again["metrics"] == m


def test_cli_evaluates_a_checkpoint_on_its_own(
    tmp_path: Path, long_context_judge: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from harness.cli import main

    monkeypatch.setattr(datafiles.urllib.request, "urlopen",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    # A relative mirror path (as the README's test command passes) must survive the chdir below.
    monkeypatch.setenv("SPPO_DATA_DIR", str(Path(os.environ["SPPO_DATA_DIR"]).resolve()))
    monkeypatch.chdir(tmp_path)
    out = Path("ae")  # relative, as a user types it
    argv = ["eval", "alpaca_eval", "--model", str(long_context_judge), "--annotator", "local",
            "--judge", str(long_context_judge), "--limit", "2", "--max-new-tokens", "4",
            "--dtype", "float32", "--out", str(out), "--json", "--no-progress"]
    assert main(argv) == 0
    metrics = json.loads(capsys.readouterr().out)
    saved = json.loads((out / "results.json").read_text())
    assert metrics == saved["metrics"] and metrics["n_total"] == 2
    assert saved["provenance"]["decoding"]["max_new_tokens"] == 4
    outputs = json.loads((out / "model_outputs.json").read_text())
    assert [o["instruction"] for o in outputs] == [r["instruction"] for r in ae.eval_set(2)]
    # A paid annotator without credentials is refused before any work.
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_CLIENT_CONFIG_PATH", raising=False)
    assert main(["eval", "alpaca_eval", "--model", str(long_context_judge), "--out",
                 str(tmp_path / "paid")]) == 2
    assert "OPENAI_API_KEY" in capsys.readouterr().err and not (tmp_path / "paid").exists()


def test_official_annotator_against_an_openai_compatible_server(
    tmp_path: Path, long_context_judge: Path
) -> None:
    """The official weighted_alpaca_eval_gpt4_turbo config, through alpaca_eval's own OpenAI client,
    against a local server speaking the chat-completions protocol (configured the way users point
    alpaca_eval at any endpoint: OPENAI_CLIENT_CONFIG_PATH)."""
    import subprocess
    import sys
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from alpaca_eval.utils import random_seeded_choice

    requests: list[dict] = []
    top = [{"token": "m", "logprob": -0.1, "bytes": [109]}, {"token": "M", "logprob": -2.4, "bytes": [77]}]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
            reply = json.dumps({
                "id": "cmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "length",
                             "message": {"role": "assistant", "content": "m"},
                             "logprobs": {"content": [{**top[0], "top_logprobs": top}]}}],
                "usage": {"prompt_tokens": 900, "completion_tokens": 1, "total_tokens": 901},
            }).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    key = "sk-harness-test-0123456789abcdef"
    clients = tmp_path / "clients.yaml"
    clients.write_text(yaml.safe_dump({"default": [{"api_key": key,
                                               "base_url": f"http://127.0.0.1:{server.server_port}/v1"}]}))
    out = tmp_path / "official"
    env = {**os.environ, "OPENAI_CLIENT_CONFIG_PATH": str(clients), "OPENAI_API_KEY": key,
           "SPPO_CACHE_DIR": str(tmp_path / "cache")}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "harness", "eval", "alpaca_eval", "--model", str(long_context_judge),
             "--limit", "3", "--max-new-tokens", "4", "--dtype", "float32", "--out", str(out), "--json",
             "--no-progress"], env=env, capture_output=True, text=True, timeout=600)
    finally:
        server.shutdown()
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads(proc.stdout)

    rows = ae.eval_set(3)
    outputs = json.loads((out / "model_outputs.json").read_text())
    assert len(requests) == 3
    for req in requests:
        assert req["path"] == "/v1/chat/completions" and req["auth"] == f"Bearer {key}"
        assert req["model"] == "gpt-4-1106-preview" and req["max_tokens"] == 1
        assert req["logprobs"] is True and req["top_logprobs"] == 5 and req["temperature"] == 1
        assert req["messages"][0]["role"] == "system" and "leaderboard" in req["messages"][1]["content"]
    p_m = math.exp(-0.1) / (math.exp(-0.1) + math.exp(-2.4))
    annotations = json.loads((out / "annotations.json").read_text())
    for row, o, a in zip(rows, outputs, annotations, strict=True):
        req = next(r for r in requests if row["instruction"] in r["messages"][1]["content"])
        user = req["messages"][1]["content"]
        switched = random_seeded_choice(seed="is_switched_outputs" + row["instruction"] + "0",
                                        choices=[False, True])
        first, second = (o["output"], row["output"]) if switched else (row["output"], o["output"])
        assert user.index(first.strip()) < user.index(second.strip(), user.index(first.strip()) + 1)
        assert float(a["preference"]) == pytest.approx(1 + p_m if switched else 2 - p_m, abs=1e-6)
    assert metrics["n_total"] == 3
    assert metrics["win_rate"] == pytest.approx(
        100 * sum(float(a["preference"]) - 1 for a in annotations) / 3)
    saved = json.loads((out / "results.json").read_text())
    assert saved["provenance"]["judge"] == "gpt-4-1106-preview"
    assert saved["provenance"]["annotator"] == "weighted_alpaca_eval_gpt4_turbo"
    # The API key is never written anywhere.
    for path in out.rglob("*"):
        if path.is_file():
            assert key not in path.read_text(errors="replace"), path


def test_lc_from_a_local_judge_run_when_the_hub_files_are_present(
    tmp_path: Path, long_context_judge: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole benchmark on a small subset with the local judge reaches an LC number once the two
    hub files are available (files constructed for the test stand in for the verified copies)."""
    (tmp_path / "hub").mkdir()
    files = _constructed_lc_files(tmp_path / "hub")
    monkeypatch.setattr(ae, "lc_files", lambda: (files, None))
    def answer(instructions: list[str]) -> list[str]:
        return ["An answer. " * (i + 1) for i in range(len(instructions))]

    res = ae.evaluate("tiny", str(long_context_judge), answer,
                      {"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 8}, tmp_path / "ae",
                      annotator="local", limit=4, judge=str(long_context_judge))
    m = res["metrics"]
    assert isinstance(m["length_controlled_winrate"], float) and 0 < m["length_controlled_winrate"] < 100
    assert m["lc_standard_error"] > 0 and "lc_unavailable" not in m


@pytest.mark.parametrize("limit", [1, 16, 804])
def test_limit_keeps_the_instructions_alpaca_evals_max_instances_keeps(limit: int) -> None:
    # alpaca_eval 0.6.6 main.evaluate, max_instances: both frames shuffled with
    # sample(frac=1, random_state=123), then the first max_instances rows of each
    import pandas as pd

    full = ae.eval_set()
    model_outputs = pd.DataFrame([{"instruction": r["instruction"], "output": "x"} for r in full])
    reference_outputs = pd.DataFrame(full)
    model_outputs = model_outputs.sample(frac=1, random_state=123)[:limit]
    reference_outputs = reference_outputs.sample(frac=1, random_state=123)[:limit]
    got = ae.eval_set(limit)
    assert [r["instruction"] for r in got] == model_outputs["instruction"].tolist()
    assert [r["output"] for r in got] == reference_outputs["output"].tolist()
    assert len(got) == limit and got != full[:limit]
