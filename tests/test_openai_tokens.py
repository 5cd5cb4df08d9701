"""OpenAI's token counts offline: the bundled vocabulary files reproduce the official answers'
``token_len`` (arena-hard-auto counts v0.1 answers with cl100k_base, v2.0 answers with
o200k_base), and a file that is not OpenAI's by its sha256 gives no count at all."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness import datafiles, openai_tokens
from harness.benchmarks import arena_hard as ah


def _answer_text(row: dict) -> str:
    if "messages" in row:  # the 2025 schema: the answer is the last message
        content = row["messages"][-1]["content"]
        return content["answer"] if isinstance(content, dict) else content
    return row["choices"][0]["turns"][0]["content"]


def _official_len(row: dict) -> int:
    return row["metadata"]["token_len"] if "metadata" in row else row["choices"][0]["turns"][0]["token_len"]


@pytest.mark.parametrize(("version", "baseline", "encoding"), [("v0.1", "gpt-4-0314", "cl100k_base"),
                                                               ("v2.0", "o3-mini-2025-01-31", "o200k_base")])
def test_official_token_len_reproduced_offline(version: str, baseline: str, encoding: str) -> None:
    assert openai_tokens.bundled_cache_dir() is not None, "install the vocabularies: README, install"
    rows = datafiles.fetch_jsonl(ah.VERSIONS[version].answers.format(baseline))
    count, method = ah.token_counter(version)
    assert method == f"tiktoken {encoding}"
    differ = [r for r in rows if count(_answer_text(r)) != _official_len(r)]
    assert len(rows) >= 500 and not differ  # every answer, exactly


def test_a_vocabulary_that_is_not_openais_gives_no_count(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import tiktoken.load
    import tiktoken.registry

    bundled = openai_tokens.bundled_cache_dir()
    assert bundled is not None
    tampered = tmp_path / "tokenizers"
    shutil.copytree(bundled, tampered)
    for f in tampered.iterdir():  # one token's rank changed in every vocabulary file
        if f.stat().st_size > 1_000_000 and not f.name.endswith(".json"):
            lines = f.read_bytes().splitlines(keepends=True)
            lines[100] = lines[100].replace(b" 100\n", b" 101\n")
            f.write_bytes(b"".join(lines))

    def offline(*_args: object, **_kwargs: object) -> bytes:
        raise OSError("no network")

    monkeypatch.setattr(openai_tokens, "bundled_cache_dir", lambda: tampered)
    monkeypatch.setattr(tiktoken.load, "read_file", offline)
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    openai_tokens.encoding.cache_clear()
    try:
        assert openai_tokens.counter("o200k_base") is None
        count, method = ah.token_counter("v2.0")
        assert method == "characters/4" and count("abcdefgh") == 2
    finally:
        openai_tokens.encoding.cache_clear()
    with pytest.raises(ValueError, match="unknown OpenAI encoding 'p50k_base'"):
        openai_tokens.encoding("p50k_base")
