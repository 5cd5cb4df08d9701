"""Many processes: ``accelerate launch`` commands, and sharding work by rank and gathering it.

The harness itself is one process. A stage that runs in N processes writes its request to JSON
and starts ``accelerate launch ... -m MODULE REQUEST RESULT``; in there every process takes its
:func:`shard` of the work, the results are :func:`gather`-ed, and the main process writes them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, TypeVar

import torch.distributed as dist

from harness.artifacts import write_json
from harness.errors import ConfigError, HarnessError

T = TypeVar("T")

CONFIG_DIR = Path(__file__).resolve().parent.parent / "trainers" / "accelerate_configs"


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _ensure_group() -> None:
    if not dist.is_initialized():
        import torch

        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def shard(items: list[T]) -> list[T]:
    """This rank's share of ``items`` (strided, so shards differ in size by at most one)."""
    return items[rank() :: world_size()]


def gather(local: list[T]) -> list[T]:
    """Inverse of :func:`shard`: every rank gets all items in their original order."""
    n = world_size()
    if n == 1:
        return local
    _ensure_group()
    parts: list[list[T] | None] = [None] * n
    dist.all_gather_object(parts, local)
    out: list[T] = []
    for i in range(max(len(p or []) for p in parts)):
        out.extend(p[i] for p in parts if p is not None and i < len(p))
    return out


def close() -> None:
    """Leave the process group, if one was joined, before the interpreter shuts down.

    A gloo group left to the interpreter's exit can abort the process ("terminate called without
    an active exception") while its worker threads are torn down; every launched module ends here,
    once its work succeeded (the barrier keeps a rank's sockets open until all have finished).
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def exit_launched() -> None:
    """End a launched process that finished its work: leave the group, flush, and exit at once.

    Even after :func:`close`, gloo's threads can abort a process during the interpreter's
    shutdown (seen in 2 of ~20 two-process runs), turning a finished stage into a failed launch;
    ``os._exit`` skips that shutdown. Only for ``python -m`` entry points under ``accelerate launch``.
    """
    close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def accelerate_config(name: str | None, device: str | None = None) -> Path | None:
    """A shipped accelerate config by name (``zero3``, ``fsdp``) or the path of the user's own.

    On ``device="cpu"`` an FSDP config is refused: accelerate (1.15) builds its FSDP plugin only
    where a GPU-like device exists ("no available devices found"); DeepSpeed and DDP run on CPU.
    """
    if name is None:
        return None
    shipped = CONFIG_DIR / f"{name}.yaml"
    path = shipped if shipped.exists() else Path(name)
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
        raise ConfigError(f"accelerate config {name!r} is neither a shipped one ({known}) nor a file")
    if device == "cpu":
        import yaml

        kind = (yaml.safe_load(path.read_text()) or {}).get("distributed_type")
        if kind == "FSDP":
            raise ConfigError(f"accelerate config {name!r} asks for FSDP, which accelerate runs only "
                              "on GPUs (and other accelerators); on CPU use zero3 (DeepSpeed) or "
                              "no --accelerate-config (DDP)")
    return path


MIXED_PRECISION = {"float32": "no", "bfloat16": "bf16", "float16": "fp16"}


def launch_command(module: str, args: list[str], processes: int, config: Path | None = None,
                   port: int | None = None, dtype: str | None = None) -> list[str]:
    """``accelerate launch`` of ``module``; with a config, ``dtype`` (the training's compute dtype)
    overrides the config's ``mixed_precision``, so DeepSpeed computes in the dtype the run asked for."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes)]
    if config is not None:
        cmd += ["--config_file", str(config)]
        if dtype is not None:
            cmd += ["--mixed_precision", MIXED_PRECISION[dtype]]
    elif processes > 1:
        # torchrun-style processes; on a CPU-only machine they join a gloo group (accelerate's own
        # --cpu launcher would need MPI for more than one process).
        cmd += ["--multi_gpu"]
    if port is not None:
        cmd += ["--main_process_port", str(port)]
    return [*cmd, "-m", module, *args]


def run_module(module: str, request: Any, req_path: Path, out_path: Path, processes: int,
               config: str | None = None, what: str = "stage", dtype: str | None = None) -> Any:
    """Write ``request`` as JSON, run ``accelerate launch ... -m module REQUEST RESULT`` and return
    the JSON its main process wrote. Both files are removed afterwards, whatever happens; a
    failing process raises, naming the command."""
    cmd = launch_command(module, [str(req_path), str(out_path)], processes,
                         accelerate_config(config), dtype=dtype)
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    write_json(req_path, request)
    out_path.unlink(missing_ok=True)
    try:
        proc = subprocess.run(cmd, env=env)
        if proc.returncode != 0:
            raise HarnessError(f"{what} in {processes} processes failed (exit {proc.returncode}); "
                               f"command: {' '.join(cmd)}")
        if not out_path.exists():
            raise HarnessError(f"{what} in {processes} processes wrote no result ({out_path})")
        return json.loads(out_path.read_text())
    finally:
        req_path.unlink(missing_ok=True)
        out_path.unlink(missing_ok=True)
