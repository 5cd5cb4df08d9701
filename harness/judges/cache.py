"""Judgment cache: an append-only JSONL per judge, so a re-run or a later iteration never pays twice.

Each obtained judgment is appended (one line, flushed and fsynced, under an advisory lock) as
soon as it arrives, keyed by :meth:`JudgeRequest.key` = sha256(judge id, full prompt, decoding).
A crash can leave at most a torn last line: lines that do not parse are skipped (and counted),
and the next append starts on a fresh line. Later lines win over earlier ones with the same key.

Location: ``$SPPO_CACHE_DIR/judgments`` (default ``~/.cache/sppo-harness/judgments``), one file
per judge id, shared by every run on the machine.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import threading
from pathlib import Path

from harness.errors import RunStateError
from harness.faults import crash_point
from harness.judges.base import Judge, JudgeBatch, JudgeRequest, Judgment


def cache_root() -> Path:
    from harness.models import cache_dir

    return cache_dir() / "judgments"


def _file_name(judge_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", judge_id).strip("._")[:150] + ".jsonl"


class JudgmentCache:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.skipped_lines = 0
        self._lock = threading.Lock()
        self._entries: dict[str, Judgment] = {}
        if path.exists():
            self._load()

    @classmethod
    def for_judge(cls, judge_id: str, root: Path | None = None) -> JudgmentCache:
        return cls((root or cache_root()) / _file_name(judge_id))

    def _load(self) -> None:
        with open(self.path, "rb") as f:
            for raw in f:
                try:
                    row = json.loads(raw.decode("utf-8"))
                    self._entries[row["key"]] = Judgment.from_dict(row["judgment"])
                except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError):
                    self.skipped_lines += 1

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Judgment | None:
        return self._entries.get(key)

    def put(self, key: str, request_id: str, judgment: Judgment) -> None:
        line = json.dumps({"key": key, "id": request_id, "judgment": judgment.to_dict()},
                          ensure_ascii=False) + "\n"
        try:
            self._append(line)
        except OSError as exc:  # disk full, permission denied: name the file, lose nothing else
            raise RunStateError(f"cannot write the judgment cache {self.path}: {exc.strerror or exc}; "
                                "judgments cached so far are kept (free space or fix permissions, "
                                "then re-run)") from None
        self._entries[key] = judgment
        crash_point("judge/judgment")

    def _append(self, line: str) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                try:
                    if f.tell() > 0 and not _ends_with_newline(self.path):
                        f.write(b"\n")  # a torn line from a crash stays on its own line
                    f.write(line.encode("utf-8"))
                    f.flush()
                    os.fsync(f.fileno())
                finally:
                    fcntl.flock(f, fcntl.LOCK_UN)


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def judge_cached(judge: Judge, requests: list[JudgeRequest], cache: JudgmentCache | None = None,
                 progress: bool = True) -> JudgeBatch:
    """Answer ``requests`` from the cache, asking the judge only for the missing ones.

    Duplicate requests (same key) are asked once. New judgments are cached as they arrive, so a
    crash mid-batch loses none that were paid for.
    """
    cache = cache if cache is not None else JudgmentCache.for_judge(judge.id)
    keys = {r.id: r.key(judge.id) for r in requests}
    if len(keys) != len(requests):
        raise ValueError("judge requests must have distinct ids")
    out = JudgeBatch()
    missing: dict[str, JudgeRequest] = {}
    for r in requests:
        hit = cache.get(keys[r.id])
        if hit is not None:
            out.judgments[r.id] = hit
        elif keys[r.id] not in missing:
            missing[keys[r.id]] = r
    if missing:
        def record(req: JudgeRequest, judgment: Judgment) -> None:
            cache.put(keys[req.id], req.id, judgment)

        fresh = judge.complete(list(missing.values()), progress=progress, on_judgment=record)
        for r in requests:
            if r.id in out.judgments:
                continue
            hit = cache.get(keys[r.id])
            if hit is not None:
                out.judgments[r.id] = hit
            else:
                out.failed[r.id] = fresh.failed.get(missing[keys[r.id]].id, "no judgment returned")
    return out
