"""Benchmark data files: from a local mirror or fetched from the official source, sha256-checked.

The manifest (``resources/data_manifest.json``) names every official file by its relative path,
with its source URL and sha256. One setting tells every component where a mirror lives: the
``--data-dir`` flag or the ``SPPO_DATA_DIR`` environment variable. Without a mirror, files are
downloaded into ``$SPPO_CACHE_DIR/data`` once and verified on every use; a file the mirror lacks
is looked for there too.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import urllib.request
import uuid
from pathlib import Path

from harness.errors import DataError
from harness.models import cache_dir

MANIFEST = Path(__file__).parent / "resources" / "data_manifest.json"


@functools.cache
def manifest() -> dict[str, dict]:
    return {f["path"]: f for f in json.loads(MANIFEST.read_text(encoding="utf-8"))["files"]}


def data_dir() -> Path | None:
    value = os.environ.get("SPPO_DATA_DIR")
    return Path(value) if value else None


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@functools.cache
def _verified(path: Path, mtime_ns: int, expected: str) -> bool:
    return sha256_of(path) == expected


def _check(path: Path, entry: dict) -> Path:
    if not _verified(path, path.stat().st_mtime_ns, entry["sha256"]):
        raise DataError(
            f"{path}: sha256 mismatch for {entry['path']} (expected {entry['sha256'][:12]}…, "
            f"got {sha256_of(path)[:12]}…); the file is corrupt or not the official version"
        )
    return path


def verify(path: Path, relpath: str) -> Path:
    """``path``, checked to be the official file ``relpath`` by its sha256."""
    entry = manifest().get(relpath)
    if entry is None:
        raise DataError(f"{relpath}: not an official data file known to the harness")
    return _check(path, entry)


def fetch_jsonl(relpath: str) -> list[dict]:
    """The rows of the official JSONL file ``relpath``, verified."""
    from harness.artifacts import read_jsonl

    return read_jsonl(fetch(relpath))


def fetch(relpath: str) -> Path:
    """Local path of the official file ``relpath`` (e.g. ``mt_bench/question.jsonl``), verified."""
    entry = manifest().get(relpath)
    if entry is None:
        raise DataError(f"{relpath}: not an official data file known to the harness")
    mirror = data_dir()
    where = ""
    if mirror is not None:
        if (mirror / relpath).is_file():
            return _check(mirror / relpath, entry)
        where = f"not in the data mirror {mirror} (SPPO_DATA_DIR / --data-dir), "
    path = cache_dir() / "data" / relpath
    if path.is_file():
        return _check(path, entry)
    if not entry.get("url"):
        raise DataError(f"{relpath}: {where}and a derived file with no public download")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with urllib.request.urlopen(entry["url"], timeout=60) as resp, open(tmp, "wb") as f:
            while block := resp.read(1 << 20):
                f.write(block)
        _check(tmp, entry)
        os.replace(tmp, path)
    except OSError as exc:
        raise DataError(f"{relpath}: {where}download from {entry['url']} failed: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return path
