import os
import shutil
from pathlib import Path

import pytest

from harness import datafiles
from harness.errors import DataError

REL = "mt_bench/question.jsonl"


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A mirror holding one official file, copied from the project's data mirror."""
    source = os.environ.get("SPPO_DATA_DIR")
    if not source or not (Path(source) / REL).is_file():
        pytest.fail("SPPO_DATA_DIR must point at the benchmark data mirror (../shared/data in CI)")
    dest = tmp_path / "mirror" / REL
    dest.parent.mkdir(parents=True)
    shutil.copy(Path(source) / REL, dest)
    monkeypatch.setenv("SPPO_DATA_DIR", str(tmp_path / "mirror"))
    monkeypatch.setenv("SPPO_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "mirror"


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """No network: every download attempt is recorded and fails."""
    tried: list[str] = []

    def refuse(url: str, timeout: float = 0) -> None:
        tried.append(url)
        raise OSError("network unreachable")

    monkeypatch.setattr(datafiles.urllib.request, "urlopen", refuse)
    return tried


def test_manifest_lists_official_sources_with_checksums() -> None:
    m = datafiles.manifest()
    assert len(m) >= 150
    e = m["alpaca_eval/gpt4_1106_preview/model_outputs.json"]
    assert e["sha256"].startswith("83db546b") and e["sha256"].endswith("1ec4")
    assert e["url"].startswith("https://raw.githubusercontent.com/tatsu-lab/alpaca_eval/")
    assert all(len(x["sha256"]) == 64 for x in m.values())


def test_mirror_file_is_verified(mirror: Path) -> None:
    assert datafiles.fetch(REL) == mirror / REL


def test_checksum_mismatch_is_refused(mirror: Path) -> None:
    with open(mirror / REL, "a", encoding="utf-8") as f:
        f.write("\n")
    with pytest.raises(DataError, match=r"sha256 mismatch for mt_bench/question\.jsonl"):
        datafiles.fetch(REL)


def test_missing_and_unknown_files_are_named(mirror: Path, offline: list[str]) -> None:
    rel = "arena_hard/arena-hard-v0.1/question.jsonl"
    with pytest.raises(DataError, match=r"not in the data mirror .* download from https://raw\.githubusercontent"
                                        r"\.com/lmarena/arena-hard-auto/.* failed: network unreachable"):
        datafiles.fetch(rel)
    assert offline == [datafiles.manifest()[rel]["url"]]
    with pytest.raises(DataError, match=r"not an official data file"):
        datafiles.fetch("mt_bench/../../etc/passwd")


def test_file_missing_from_the_mirror_is_taken_from_the_cache(
    mirror: Path, offline: list[str], tmp_path: Path
) -> None:
    (mirror / REL).rename(tmp_path / "moved")
    (tmp_path / "cache" / "data" / "mt_bench").mkdir(parents=True)
    cached = tmp_path / "cache" / "data" / REL
    (tmp_path / "moved").rename(cached)
    assert datafiles.fetch(REL) == cached
    assert offline == []
