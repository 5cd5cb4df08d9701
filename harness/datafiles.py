"""Benchmark data files: from a local mirror or fetched from the official source, sha256-checked.

The manifest (``resources/data_manifest.json``) names every official file by its relative path,
with its source URL and sha256 (or, for a file the official git repository holds but no checksum
list gives, the object id git records for it). One setting tells every component where a mirror lives: the
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

from harness.errors import DataError, DataUnavailable
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


def git_blob_sha1_of(path: Path) -> str:
    """The object id git gives the file's content (``git hash-object``)."""
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


CHECKSUMS = {"sha256": sha256_of, "git_blob_sha1": git_blob_sha1_of}


def checksum(entry: dict) -> tuple[str, str]:
    """(kind, value) of an entry's checksum: sha256, or, for a file known only by the object id
    its official git repository records (too large for the mirror), that id."""
    for kind in CHECKSUMS:
        if entry.get(kind):
            return kind, entry[kind]
    raise DataError(f"{entry['path']}: the data manifest gives no checksum")


@functools.cache
def _verified(path: Path, mtime_ns: int, kind: str, expected: str) -> bool:
    return CHECKSUMS[kind](path) == expected


def _check(path: Path, entry: dict) -> Path:
    kind, expected = checksum(entry)
    if not _verified(path, path.stat().st_mtime_ns, kind, expected):
        raise DataError(
            f"{path}: {kind} mismatch for {entry['path']} (expected {expected[:12]}…, "
            f"got {CHECKSUMS[kind](path)[:12]}…); the file is corrupt or not the official version"
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


def fetch(relpath: str, mirror: Path | None = None) -> Path:
    """Local path of the official file ``relpath`` (e.g. ``mt_bench/question.jsonl``), verified:
    from ``mirror`` (default: the configured one), else the download cache, else downloaded."""
    entry = manifest().get(relpath)
    if entry is None:
        raise DataError(f"{relpath}: not an official data file known to the harness")
    mirror = mirror or data_dir()
    where = ""
    if mirror is not None:
        if (mirror / relpath).is_file():
            return _check(mirror / relpath, entry)
        where = f"not in the data mirror {mirror} (SPPO_DATA_DIR / --data-dir), "
    path = cache_dir() / "data" / relpath
    if path.is_file():
        return _check(path, entry)
    if not entry.get("url"):
        raise DataUnavailable(f"{relpath}: {where}and a derived file with no public download")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with urllib.request.urlopen(entry["url"], timeout=60) as resp, open(tmp, "wb") as f:
            while block := resp.read(1 << 20):
                f.write(block)
        _check(tmp, entry)
        os.replace(tmp, path)
    except OSError as exc:
        raise DataUnavailable(f"{relpath}: {where}download from {entry['url']} failed: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return path
