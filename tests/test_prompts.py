from pathlib import Path

import pandas as pd
import pytest

from harness.artifacts import read_jsonl
from harness.config import load_config
from harness.errors import DataError
from harness.prompts import EMBEDDED_FILE, heldout_prompts, iteration_prompts, load_source


def test_embedded_set_is_large_varied_and_clean() -> None:
    rows = read_jsonl(EMBEDDED_FILE)
    assert len(rows) >= 300
    assert len({r["category"] for r in rows}) >= 10
    assert len({r["prompt"] for r in rows}) == len(rows)
    assert not any("None" in r["prompt"] for r in rows)


def test_iterations_and_heldout_are_disjoint() -> None:
    cfg = load_config("smollm2-135m")  # three iterations on the embedded set, no cap
    slices = [{p.prompt_id for p in iteration_prompts(cfg, t)} for t in (1, 2, 3)]
    held = {p.prompt_id for p in heldout_prompts(cfg)}
    assert all(len(s) == len(slices[0]) > 50 for s in slices)
    assert not (slices[0] & slices[1] or slices[1] & slices[2] or slices[0] & slices[2])
    assert not held & (slices[0] | slices[1] | slices[2])


def test_local_files_load_with_ids(tmp_path: Path) -> None:
    pd.DataFrame({"prompt": ["a?", "b?"], "prompt_id": ["x", "y"]}).to_parquet(tmp_path / "p.parquet")
    assert [p.prompt_id for p in load_source(str(tmp_path / "p.parquet"))] == ["x", "y"]
    (tmp_path / "p.jsonl").write_text('{"prompt": "hello?"}\n{"prompt": "bye?"}\n')
    ids = [p.prompt_id for p in load_source(str(tmp_path / "p.jsonl"))]
    assert len(set(ids)) == 2 and all(i.startswith("p-") for i in ids)  # content-hash ids


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "no prompts"),
        ('{"prompt": "a"}\n{"prompt": "a"}\n', "duplicate prompt id"),
        ('{"prompt": "a"}\n{"prompt": ', "p.jsonl:2: invalid JSON"),
        ('{"text": "a"}\n', "row 0: missing or empty 'prompt'"),
        ('{"prompt": "  "}\n', "row 0: missing or empty 'prompt'"),
    ],
)
def test_bad_prompt_files_are_named(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        load_source(str(path))


def test_non_utf8_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"prompt": "caf\xe9"}\n')
    with pytest.raises(DataError, match="not valid UTF-8"):
        load_source(str(path))
    with pytest.raises(DataError, match="no such file"):
        load_source(str(tmp_path / "missing.jsonl"))
