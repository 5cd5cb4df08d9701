"""What every backend shares: tokenised preference pairs (prompt masked, response + EOS scored),
the step schedule, and log-probabilities of the pairs under a model."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from accelerate import Accelerator, PartialState
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from harness.artifacts import read_jsonl
from harness.config import TrainingConfig
from harness.errors import ConfigError, DataError
from harness.generate import chat_prompt
from harness.logprobs import right_pad, sequence_logps
from harness.models import DTYPES, load_tokenizer

if TYPE_CHECKING:
    from trainers.base import TrainRequest

REQUIRED = ("prompt_id", "prompt", "chosen", "rejected", "chosen_probs", "chosen_probs_win",
            "chosen_probs_lose")


@dataclass
class PairExample:
    prompt_id: str
    prompt_ids: list[int]
    chosen_ids: list[int]  # response tokens, EOS appended
    rejected_ids: list[int]
    chosen_probs: float
    chosen_probs_win: float
    chosen_probs_lose: float


def encode_response(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def load_pairs(
    path: Path, tokenizer: PreTrainedTokenizerBase, max_length: int, max_prompt_length: int
) -> list[PairExample]:
    """Read ``preferences.jsonl`` and tokenise; responses are cut to fit ``max_length``."""
    out = []
    for i, row in enumerate(read_jsonl(path)):
        missing = [k for k in REQUIRED if k not in row]
        if missing:
            raise DataError(f"{path}: row {i} lacks {', '.join(missing)}")
        prompt_ids = tokenizer(chat_prompt(tokenizer, row["prompt"]), add_special_tokens=False)[
            "input_ids"
        ]
        if len(prompt_ids) > max_prompt_length:
            raise DataError(
                f"{path}: prompt {row['prompt_id']} has {len(prompt_ids)} tokens, more than "
                f"max_prompt_length={max_prompt_length}"
            )
        for k in ("chosen_probs", "chosen_probs_win", "chosen_probs_lose"):
            v = row[k]
            if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:  # NaN fails too
                raise DataError(f"{path}: row {i} ({row['prompt_id']}) has {k}={v!r}; "
                                "expected a probability in [0, 1]")
        room = max_length - len(prompt_ids)
        out.append(PairExample(
            str(row["prompt_id"]),
            prompt_ids,
            encode_response(tokenizer, row["chosen"])[:room],
            encode_response(tokenizer, row["rejected"])[:room],
            float(row["chosen_probs"]),
            float(row["chosen_probs_win"]),
            float(row["chosen_probs_lose"]),
        ))
    if not out:
        raise DataError(f"{path}: no preference pairs")
    return out


def collate(examples: list[PairExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded [chosen_0..chosen_{B-1}, rejected_0..rejected_{B-1}] with a response mask."""
    prefixes = [ex.prompt_ids for ex in examples] * 2
    responses = [ex.chosen_ids for ex in examples] + [ex.rejected_ids for ex in examples]
    return right_pad(prefixes, responses, pad_id)


@dataclass(frozen=True)
class Schedule:
    """Which examples each optimizer step sees, shared by every backend.

    ``order`` holds ``steps × global_batch`` example indices (seeded permutations, one per epoch,
    concatenated). Step s takes ``order[s·G:(s+1)·G]``, cut into micro-batches of
    ``micro_batch``; micro-batch m goes to process ``m mod processes``, as accelerate shards a
    data loader, so one process and N processes see the same micro-batches.
    """

    steps: int
    global_batch: int
    micro_batch: int
    processes: int
    order: list[int]

    @property
    def accumulation(self) -> int:
        """Micro-batches per process per optimizer step."""
        return self.global_batch // (self.micro_batch * self.processes)

    def micro_batches(self, step: int, rank: int = 0) -> list[list[int]]:
        """This process's micro-batches (example indices) for optimizer step ``step``."""
        g, m = self.global_batch, self.micro_batch
        idx = self.order[step * g : (step + 1) * g]
        chunks = [idx[i : i + m] for i in range(0, g, m)]
        return chunks[rank :: self.processes]


def plan(n: int, config: TrainingConfig, seed: int, processes: int = 1) -> Schedule:
    """The schedule for ``n`` pairs: ``ceil(n·epochs / G)`` full steps of G examples."""
    g = min(config.global_batch_size, n)
    micro = config.per_device_batch_size
    if g % (micro * processes):
        raise ConfigError(
            f"training.global_batch_size ({g}{' = the number of pairs' if g == n else ''}) must be "
            f"a multiple of per_device_batch_size × processes ({micro} × {processes})"
        )
    steps = math.ceil(n * config.epochs / g)
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    while len(order) < steps * g:
        order.extend(torch.randperm(n, generator=gen).tolist())
    return Schedule(steps, g, micro, processes, order[: steps * g])


def processes(device: str) -> int:
    """Processes in this launch (1 outside ``accelerate launch``/``torchrun``)."""
    return PartialState(cpu=device == "cpu").num_processes


def prepare(request: TrainRequest) -> tuple[PreTrainedTokenizerBase, list[PairExample], Schedule]:
    """A request's tokenizer, tokenised pairs and step schedule for this launch."""
    cfg = request.config
    tok = load_tokenizer(request.model_path, request.trust_remote_code)
    pairs = load_pairs(request.preferences, tok, cfg.max_length, cfg.max_prompt_length)
    return tok, pairs, plan(len(pairs), cfg, request.seed, processes(request.device))


def autocast(device: torch.device, dtype: str):
    if dtype == "float32":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=DTYPES[dtype])


@torch.no_grad()
def pair_logps(
    model: torch.nn.Module, pairs: list[PairExample], batch_size: int, pad_id: int,
    acc: Accelerator, dtype: str, normalize: bool, desc: str, progress: bool,
) -> torch.Tensor:
    """[N, 2] log-probs (chosen, rejected) of every pair under ``model``.

    Each process scores an equal contiguous share (the list is padded by repeating its last
    pair, so every process runs the same number of forwards, as ZeRO-3 needs); the shares are
    gathered and the padding dropped.
    """
    model.eval()
    n, world = len(pairs), acc.num_processes
    per = math.ceil(n / world)
    padded = pairs + [pairs[-1]] * (per * world - n)
    mine = padded[acc.process_index * per : (acc.process_index + 1) * per]
    out = []
    for i in tqdm(range(0, per, batch_size), desc=desc, disable=not (progress and acc.is_main_process)):
        chunk = mine[i : i + batch_size]
        batch = {k: v.to(acc.device) for k, v in collate(chunk, pad_id).items()}
        with autocast(acc.device, dtype):
            logps, count = sequence_logps(model, batch)
        if normalize:
            logps = logps / count
        out.append(torch.stack(logps.float().split(len(chunk)), dim=1))
    return acc.gather(torch.cat(out)).cpu()[:n]
