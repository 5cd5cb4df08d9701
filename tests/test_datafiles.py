import io
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
    checksums = [datafiles.checksum(x) for x in m.values()]
    assert all(len(v) == {"sha256": 64, "git_blob_sha1": 40}[k] for k, v in checksums)
    # files too large for the mirror, known by the object id of their official repository's tree
    hellaswag = m["open_llm/hellaswag/hellaswag_val.jsonl"]
    assert hellaswag["git_blob_sha1"] == "0f5ee25d72216f12317d5d8a7b92deafa423d81e"
    assert hellaswag["url"].startswith("https://raw.githubusercontent.com/rowanz/hellaswag/a29ff8e9")


def test_git_object_id_is_gits(tmp_path: Path) -> None:
    """``git hash-object``: empty blob and "hello\n", the ids git itself gives them."""
    empty, hello = tmp_path / "empty", tmp_path / "hello"
    empty.write_bytes(b"")
    hello.write_bytes(b"hello\n")
    assert datafiles.git_blob_sha1_of(empty) == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    assert datafiles.git_blob_sha1_of(hello) == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_a_download_is_checked_by_its_git_object_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rel = "open_llm/hellaswag/hellaswag_val.jsonl"
    monkeypatch.setenv("SPPO_DATA_DIR", str(tmp_path / "mirror"))
    monkeypatch.setenv("SPPO_CACHE_DIR", str(tmp_path / "cache"))
    served = {"body": b'{"ind": 24}\n'}

    def serve(url: str, timeout: float = 0) -> io.BytesIO:
        assert url == datafiles.manifest()[rel]["url"]
        return io.BytesIO(served["body"])

    monkeypatch.setattr(datafiles.urllib.request, "urlopen", serve)
    with pytest.raises(DataError, match=r"git_blob_sha1 mismatch for open_llm/hellaswag/hellaswag_val\.jsonl "
                                        r"\(expected 0f5ee25d7221…"):
        datafiles.fetch(rel)
    assert not (tmp_path / "cache" / "data" / rel).exists()  # nothing unverified is kept
    blob = tmp_path / "body"
    blob.write_bytes(served["body"])
    entry = {**datafiles.manifest()[rel], "git_blob_sha1": datafiles.git_blob_sha1_of(blob)}
    monkeypatch.setitem(datafiles.manifest(), rel, entry)
    assert datafiles.fetch(rel).read_bytes() == served["body"]


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
