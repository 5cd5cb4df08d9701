"""The run directory (DESIGN.md contract): layout, ``run.json`` stage states, and the run lock."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness import provenance
from harness.artifacts import read_json, write_json
from harness.errors import RunStateError
from harness.faults import crash_point

RUN_FORMAT = 1  # bump when the layout changes incompatibly


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunDir:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.meta_path = root / "run.json"
        self.meta: dict[str, Any] = {}

    # layout -------------------------------------------------------------------------------
    def iter_dir(self, t: int) -> Path:
        return self.root / f"iter-{t}"

    def generations(self, t: int) -> Path:
        return self.iter_dir(t) / "generations.jsonl"

    def scores(self, t: int) -> Path:
        return self.iter_dir(t) / "scores.jsonl"

    def preferences(self, t: int) -> Path:
        return self.iter_dir(t) / "preferences.jsonl"

    def checkpoint(self, t: int) -> Path:
        return self.iter_dir(t) / "checkpoint"

    def train_state(self, t: int) -> Path:
        """Resumable training state (``training.save_steps``), removed once the checkpoint is in."""
        return self.iter_dir(t) / "train_state"

    def train_log(self, t: int) -> Path:
        return self.iter_dir(t) / "train_log.jsonl"

    def eval_dir(self, t: int, benchmark: str) -> Path:
        return self.iter_dir(t) / "eval" / benchmark

    def remove_stale_tmp(self) -> list[Path]:
        """Delete temporary files and folders a killed process left (call with the lock held)."""
        import shutil

        stale = list(self.root.rglob(".*.tmp-*"))
        for p in stale:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        return stale

    # run.json -----------------------------------------------------------------------------
    def create(self, config: dict[str, Any], args: dict[str, Any]) -> None:
        self.meta = {
            "format": RUN_FORMAT,
            "created": _now(),
            "config": config,
            "args": args,
            "git_sha": provenance.git_sha(),
            "packages": provenance.package_versions(),
            "machine": provenance.machine(),
            "stages": {},
        }
        self.save()

    def load(self) -> None:
        self.meta = read_json(self.meta_path)
        fmt = self.meta.get("format")
        if fmt != RUN_FORMAT:
            raise RunStateError(
                f"{self.meta_path}: run format {fmt!r}, this harness reads format {RUN_FORMAT}; "
                "start a new run directory"
            )

    def save(self) -> None:
        write_json(self.meta_path, self.meta)

    def done(self, stage: str) -> bool:
        return self.meta.get("stages", {}).get(stage, {}).get("state") == "done"

    def run_stage(self, stage: str, fn: Callable[[], dict[str, Any] | None]) -> bool:
        """Run ``fn`` unless ``stage`` finished before; record its state. True if it ran."""
        if self.done(stage):
            return False
        stages = self.meta.setdefault("stages", {})
        stages[stage] = {"state": "running", "started": _now()}
        self.save()
        start = time.perf_counter()
        try:
            info = fn() or {}
            crash_point(f"{stage}/end")  # the work is done and not yet recorded
        except BaseException as exc:
            stages[stage] = {"state": "failed", "error": f"{type(exc).__name__}: {exc}"[:2000]}
            self.save()
            raise
        stages[stage] = {**info, "state": "done", "finished": _now(),
                         "seconds": round(time.perf_counter() - start, 2)}
        self.save()
        return True

    # lock ---------------------------------------------------------------------------------
    @contextmanager
    def lock(self) -> Iterator[None]:
        """One writer per run directory. A lock left by a dead process is reported, not taken."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / ".lock"
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(path.read_text().strip() or "0")
            except (OSError, ValueError):
                pid = 0
            if pid and _pid_alive(pid):
                raise RunStateError(f"{self.root} is in use by process {pid} ({path})") from None
            raise RunStateError(
                f"{path}: stale lock left by process {pid or '?'}, which is no longer running. "
                "If no other machine writes this run, delete the lock file and resume."
            ) from None
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        try:
            yield
        finally:
            path.unlink(missing_ok=True)
