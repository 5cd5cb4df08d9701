"""Prompt sources and their disjoint split across iterations.

A source is ``embedded`` (the built-in set), ``hf:<dataset>[:<column>]`` (a hub dataset, train
split, column ``prompt`` by default) or a local ``.jsonl``/``.json``/``.parquet`` file with a
``prompt`` column (and optionally ``prompt_id``). When several iterations name the same source,
its prompts are split into consecutive disjoint slices, so no prompt is reused across iterations.
The embedded set's last ``heldout_size`` prompts are reserved for evaluation and never trained on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from harness.artifacts import read_jsonl
from harness.config import RunConfig
from harness.errors import DataError

EMBEDDED_FILE = Path(__file__).parent / "resources" / "embedded_prompts.jsonl"


@dataclass(frozen=True)
class Prompt:
    prompt_id: str
    prompt: str


def prompt_hash_id(text: str) -> str:
    return "p-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _from_rows(rows: list[dict], origin: str, column: str = "prompt") -> list[Prompt]:
    out: list[Prompt] = []
    seen: dict[str, int] = {}
    for i, row in enumerate(rows):
        text = row.get(column)
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{origin}: row {i}: missing or empty {column!r} field")
        pid = str(row.get("prompt_id") or row.get("id") or prompt_hash_id(text))
        if pid in seen:
            raise DataError(f"{origin}: duplicate prompt id {pid!r} (rows {seen[pid]} and {i})")
        seen[pid] = i
        out.append(Prompt(pid, text))
    if not out:
        raise DataError(f"{origin}: no prompts")
    return out


def load_source(source: str) -> list[Prompt]:
    """All prompts of ``source``, in file order."""
    if source == "embedded":
        return _from_rows(read_jsonl(EMBEDDED_FILE), str(EMBEDDED_FILE))
    if source.startswith("hf:"):
        spec = source[3:]
        dataset, _, column = spec.partition(":")
        import datasets  # heavy; only when asked for

        try:
            ds = datasets.load_dataset(dataset, split="train")
        except Exception as exc:
            raise DataError(f"cannot load hub dataset {dataset!r}: {exc}") from exc
        column = column or "prompt"
        if column not in ds.column_names:
            raise DataError(f"{dataset}: no column {column!r} (has {ds.column_names})")
        return _from_rows([{"prompt": p} for p in ds[column]], dataset)
    path = Path(source)
    if not path.is_file():
        raise DataError(
            f"prompt source {source!r}: no such file (use 'embedded', 'hf:DATASET[:COLUMN]' or a path)"
        )
    if path.suffix == ".jsonl":
        rows = read_jsonl(path)
    elif path.suffix == ".parquet":
        import pandas as pd

        rows = pd.read_parquet(path).to_dict("records")
    elif path.suffix == ".json":
        import json

        rows = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(rows, list):
            raise DataError(f"{path}: expected a JSON list of objects")
    else:
        raise DataError(f"{path}: unsupported prompt file type {path.suffix!r}")
    return _from_rows(rows, str(path))


def heldout_prompts(config: RunConfig) -> list[Prompt]:
    prompts = load_source(config.prompts.heldout)
    n = config.prompts.heldout_size
    if len(prompts) < n:
        raise DataError(f"held-out source has {len(prompts)} prompts, heldout_size is {n}")
    return prompts[-n:]


def iteration_prompts(config: RunConfig, iteration: int) -> list[Prompt]:
    """The prompts iteration ``iteration`` (1-based) trains on: disjoint from every other one."""
    source = config.prompt_source(iteration)
    prompts = load_source(source)
    if source == config.prompts.heldout:
        prompts = prompts[: -config.prompts.heldout_size]
    sharing = [t for t in range(1, len(config.prompts.iterations) + 1)
               if config.prompt_source(t) == source]
    slot = sharing.index(iteration)
    size = config.prompts.per_iteration or len(prompts) // len(sharing)
    chunk = prompts[slot * size : (slot + 1) * size]
    if len(chunk) < max(1, min(size, 2)):
        raise DataError(
            f"prompt source {source!r} has {len(prompts)} prompts: not enough for iteration "
            f"{iteration} at {size} per iteration without reusing prompts"
        )
    return chunk
