"""The run directory (docs/design.md, "The run directory contract"): layout, ``run.json`` stage
states, and the run lock."""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
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


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _holder() -> dict[str, Any]:
    """What a lock records of its holder."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "boot_id": _boot_id()}


def _read_holder(path: Path) -> dict[str, Any]:
    """A lock's holder; an older lock holds its pid alone (its host unknown)."""
    try:
        text = path.read_text().strip()
    except OSError:
        return {}
    try:
        held = json.loads(text or "{}")
    except json.JSONDecodeError:
        return {}
    return held if isinstance(held, dict) else {"pid": held} if isinstance(held, int) else {}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _in_iter_dir(name: str, doc: str | None = None) -> Callable[[RunDir, int], Path]:
    """A ``RunDir`` method giving the path of ``name`` in iteration t's folder."""

    def path(self: RunDir, t: int) -> Path:
        return self.iter_dir(t) / name

    path.__doc__ = doc or f"``iter-<t>/{name}``"
    return path


class RunDir:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.meta_path = root / "run.json"
        self.meta: dict[str, Any] = {}

    # layout -------------------------------------------------------------------------------
    def iter_dir(self, t: int) -> Path:
        return self.root / f"iter-{t}"

    # iteration t's artifacts, in the order the stages write them
    generations = _in_iter_dir("generations.jsonl")
    scores = _in_iter_dir("scores.jsonl")
    preferences = _in_iter_dir("preferences.jsonl")
    checkpoint = _in_iter_dir("checkpoint")
    train_state = _in_iter_dir(
        "train_state",
        "Resumable training state (``training.save_steps``), removed once the checkpoint is in.")
    train_log = _in_iter_dir("train_log.jsonl")

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
    def lock(self, break_lock: bool = False, say: Callable[[str], None] = print) -> Iterator[None]:
        """One writer per run directory. The lock names its process, host and boot: a lock whose
        process is gone from this host (or whose host has rebooted since) is taken over, with a
        message; a live process's lock is refused; a lock from another host (or of an older
        format, without its host) is refused unless ``break_lock``: only the user knows that
        no process on that host still writes the run."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / ".lock"
        guard = os.open(self.root, os.O_RDONLY)  # the folder's flock: one taker at a time
        try:
            fcntl.flock(guard, fcntl.LOCK_EX)
            if path.exists():
                self._take_over(path, break_lock, say)
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            with os.fdopen(fd, "w") as f:
                json.dump(_holder(), f)
        finally:
            os.close(guard)
        try:
            yield
        finally:
            path.unlink(missing_ok=True)

    def _take_over(self, path: Path, break_lock: bool, say: Callable[[str], None]) -> None:
        held = _read_holder(path)
        me = _holder()
        pid = held.get("pid") or 0
        here = held.get("host") == me["host"]
        if here and pid and held.get("boot_id") == me["boot_id"] and _pid_alive(pid):
            raise RunStateError(f"{self.root} is in use by process {pid} ({path})")
        if here:
            why = ("which is no longer running" if held.get("boot_id") == me["boot_id"]
                   else "from before this host's last boot")
            say(f"taking over the lock of process {pid} on this host, {why}")
        elif break_lock:
            say(f"breaking the lock of process {pid or '?'} on host {held.get('host') or '?'} "
                "(--break-lock)")
        else:
            where = (f"host {held['host']}" if held.get("host")
                     else "an unknown host (an older lock format)")
            raise RunStateError(
                f"{path}: locked by process {pid or '?'} on {where}. If no process there still "
                "writes this run, resume with --break-lock.")
        path.unlink()
