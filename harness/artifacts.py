"""Atomic artifact I/O: every file is written to a temporary name and renamed when complete.

Long stages also keep a *partial* file: whole chunks of rows appended and fsynced as they finish
(:func:`append_jsonl`), read back on resume by :func:`read_partial_jsonl`, which drops a line torn
by a crash mid-write. A write that fails (disk full, permission denied) raises a
:class:`~harness.errors.RunStateError` naming the path; what was committed before stays.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.errors import DataError, RunStateError


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=_json_default, allow_nan=False)


def _write_failed(path: Path, exc: OSError) -> RunStateError:
    return RunStateError(f"{path}: cannot write ({exc.strerror or exc}); the work committed before "
                         "is kept: free space or fix permissions, then resume with --resume")


def _write_durably(path: Path, text: str, mode: str) -> None:
    """One write of ``text`` to ``path`` (``mode`` "w" or "a"), flushed and fsynced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode, encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_text_atomic(path: Path, text: str) -> None:
    tmp = _tmp_name(path)
    try:
        _write_durably(tmp, text, "w")
        os.replace(tmp, path)
    except OSError as exc:
        raise _write_failed(path, exc) from exc
    finally:
        tmp.unlink(missing_ok=True)


def append_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Append whole rows to a partial file, durably (one write, flushed and fsynced)."""
    try:
        _write_durably(path, "".join(dumps(r) + "\n" for r in rows), "a")
    except OSError as exc:
        raise _write_failed(path, exc) from exc


def partial_path(path: Path) -> Path:
    """Where a chunked stage keeps the chunks of ``path`` committed so far."""
    return path.with_name(path.name + ".partial")


def read_partial_jsonl(path: Path) -> list[dict[str, Any]]:
    """The complete rows of a partial file ([] if none); a torn last line is dropped and cut off,
    so the next append starts on a clean line."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):  # a crash mid-append: the tail is not a whole row
        with open(path, "r+b") as f:
            f.truncate(end)
    rows = []
    for n, line in enumerate(data[:end].decode("utf-8").split("\n")[:-1], 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{n}: corrupt partial file ({exc.msg}); delete it to redo the stage") \
                from None
    return rows


def write_json(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(dumps(r) + "\n" for r in rows))


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not valid UTF-8 JSON: {exc}") from None


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL file; a bad line raises a DataError naming file and line number."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with open(path, encoding="utf-8") as f:
        lineno = 0
        try:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{lineno}: expected a JSON object per line")
                yield row
        except UnicodeDecodeError:
            raise DataError(f"{path}: not valid UTF-8 (after line {lineno})") from None
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno}: invalid JSON (truncated line?): {exc.msg}") from None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return list(iter_jsonl(path))


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces ``path`` in one rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by a killed process
        shutil.rmtree(stale, ignore_errors=True)
    tmp = _tmp_name(path)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def require_finite(values: Iterable[float], what: str) -> None:
    for i, v in enumerate(values):
        if v is None or not math.isfinite(v):
            raise DataError(f"{what}: value {i} is {v!r}, expected a finite number")
