"""The benchmark report checks each target against the figures it is given (no timing here)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bench.report import RESULTS, write_report


def test_report_verdicts_follow_the_figures(tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(RESULTS, results)
    out = tmp_path / "REPORT.md"
    e2e = json.loads((results / "end_to_end.json").read_text())
    e2e["ratio_harness_over_official"] = 0.45
    e2e["harness"]["peak_rss_gib"] = 6.0  # 6.44 GB: still above 6 GB
    (results / "end_to_end.json").write_text(json.dumps(e2e))
    text = write_report(results, out, tmp_path / "no-analysis.md").read_text()
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert rows["end-to-end ≤ 0.5× the official-recipe time"].endswith("| 0.45× | met |")
    assert rows["peak memory of a smoke iteration < 6 GB"].endswith("| 6.4 GB | **missed** |")
    for section in ("## 1. Generation", "## 2. Ranking", "## 3. Training", "## 4. End to end", "## Targets"):
        assert section in text


def test_logratio_agreement_is_a_target_with_its_tolerance(tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(RESULTS, results)
    train = json.loads((results / "train_throughput.json").read_text())
    for gap, verdict in ((0.3, "met"), (0.9, "**missed**")):
        train["logratio_agreement"] = {
            "sequences": 128, "fp32_logratio_std": 4.0, "fp32_logratio_mean_abs": 3.0,
            "max_abs_difference": gap, "mean_abs_difference": 0.1, "correlation": 0.999, "passed": gap <= 0.4,
            "tolerance": "every pair's difference ≤ 0.1 × the fp32 std"}
        (results / "train_throughput.json").write_text(json.dumps(train))
        text = write_report(results, tmp_path / "REPORT.md", tmp_path / "no-analysis.md").read_text()
        row = next(line for line in text.splitlines() if line.startswith("| bfloat16 log-ratios agree"))
        assert row.endswith(f"| largest difference {gap} (std 4.0) | {verdict} |")
        assert row.count("|") == 4  # three cells
        assert f"differs by at most {gap} nats" in text


def test_precision_section_shows_each_rounding_with_its_verdict(tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(RESULTS, results)
    variants = {"weights": {"max_abs_difference": 7.1, "mean_abs_difference": 1.8, "max_over_fp32_std": 0.262,
                            "correlation": 0.996, "passed": False},
                "activations": {"max_abs_difference": 0.5, "mean_abs_difference": 0.13,
                                "max_over_fp32_std": 0.018, "correlation": 0.9999, "passed": True}}
    (results / "logratio_precision.json").write_text(json.dumps({
        "run": "runs/ci-smoke", "iteration": 2, "training_steps": 12, "optimizer": "rmsprop",
        "learning_rate": 1e-5, "pairs": 48, "sequences": 96, "fp32_logratio_std": 27.1,
        "fp32_logratio_mean_abs": 22.3, "tolerance": "every pair's difference ≤ 0.1 × the fp32 std",
        "machine": {"cpu": "AMD EPYC"}, "threads": 1, "variants": variants}))
    text = write_report(results, tmp_path / "REPORT.md", tmp_path / "no-analysis.md").read_text()
    assert "## 6. Where bf16 log-ratios depart from fp32" in text
    rows = [line for line in text.split("## 6.")[1].splitlines() if line.startswith("| weights")
            or line.startswith("| activations")]
    assert rows[0].endswith("| 7.1 nats | 1.8 nats | 0.262 | 0.996 | no |")
    assert rows[1].endswith("| 0.5 nats | 0.13 nats | 0.018 | 0.9999 | yes |")


def test_the_split_row_has_its_own_agreement_and_mfu_verdicts(tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(RESULTS, results)
    train = json.loads((results / "train_throughput.json").read_text())
    native = next(r for r in train["results"] if r["backend"] == "native")
    agreement = {"sequences": 128, "fp32_logratio_std": 10.0, "fp32_logratio_mean_abs": 20.0,
                 "max_abs_difference": 0.95, "mean_abs_difference": 0.2, "correlation": 0.9997,
                 "passed": True, "tolerance": "every pair's difference ≤ 0.1 × the fp32 std"}
    train["results"].append({**native, "backend": "native-split", "weight_rounding": "split", "mfu": 0.33,
                             "logratio_agreement": agreement})
    (results / "train_throughput.json").write_text(json.dumps(train))
    text = write_report(results, tmp_path / "REPORT.md", tmp_path / "no-analysis.md").read_text()
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert rows["bfloat16 log-ratios agree with fp32, `weight_rounding: split`"].endswith(
        "| largest difference 0.95 (std 10.0) | met |")
    assert rows["training ≥ 40 % MFU (bfloat16 peak), native-split"].endswith("| 33 % | **missed** |")
    assert rows["native-split"].count("|") == 9  # its own row of the backends' table
