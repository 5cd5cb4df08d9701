"""What every backend shares: tokenised preference pairs (context masked, response scored, in the
configured :mod:`~trainers.layout`), the step schedule, and log-probabilities of the pairs."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import InitProcessGroupKwargs
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from harness.artifacts import read_jsonl
from harness.config import TrainingConfig
from harness.errors import ConfigError, DataError
from harness.logprobs import pad_rows, paired_logps, sequence_logps
from harness.models import DTYPES, load_tokenizer
from trainers.layout import LAYOUTS

if TYPE_CHECKING:
    from trainers.base import TrainRequest

REQUIRED = ("prompt_id", "prompt", "chosen", "rejected", "chosen_probs", "chosen_probs_win",
            "chosen_probs_lose")


@dataclass
class PairExample:
    prompt_id: str
    prompt_ids: list[int]  # the context of the chosen response (masked)
    chosen_ids: list[int]  # scored tokens
    rejected_ids: list[int]
    chosen_probs: float
    chosen_probs_win: float
    chosen_probs_lose: float
    rejected_prompt_ids: list[int] | None = None  # when it differs from the chosen one's

    @property
    def rejected_context(self) -> list[int]:
        return self.prompt_ids if self.rejected_prompt_ids is None else self.rejected_prompt_ids


def load_pairs(
    path: Path, tokenizer: PreTrainedTokenizerBase, max_length: int, max_prompt_length: int,
    layout: str = "clean",
) -> list[PairExample]:
    """Read ``preferences.jsonl`` and tokenise each pair in ``layout``."""
    out = []
    for i, row in enumerate(read_jsonl(path)):
        missing = [k for k in REQUIRED if k not in row]
        if missing:
            raise DataError(f"{path}: row {i} lacks {', '.join(missing)}")
        where = f"{path}: prompt {row['prompt_id']}"
        t = LAYOUTS[layout](tokenizer, row["prompt"], row["chosen"], row["rejected"], max_length,
                            max_prompt_length, where)
        for k in ("chosen_probs", "chosen_probs_win", "chosen_probs_lose"):
            v = row[k]
            if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:  # NaN fails too
                raise DataError(f"{path}: row {i} ({row['prompt_id']}) has {k}={v!r}; "
                                "expected a probability in [0, 1]")
        out.append(PairExample(
            str(row["prompt_id"]), t.chosen_context, t.chosen, t.rejected,
            float(row["chosen_probs"]), float(row["chosen_probs_win"]),
            float(row["chosen_probs_lose"]),
            None if t.rejected_context == t.chosen_context else t.rejected_context,
        ))
    if not out:
        raise DataError(f"{path}: no preference pairs")
    return out


def pair_forward(
    model: torch.nn.Module, examples: list[PairExample], pad_id: int, share_context: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed response log-probs and token counts of [chosen_0..chosen_{B-1}, rejected_0..] and
    each pair's tokens forwarded ([B]). A pair's shared context runs once
    (:func:`~harness.logprobs.paired_logps`) unless ``share_context`` is off or the tokenizer
    split the pair's contexts; then whole sequences run (:func:`collate`)."""
    device = next(model.parameters()).device
    if share_context and all(ex.rejected_prompt_ids is None for ex in examples):
        return paired_logps(model, [ex.prompt_ids for ex in examples],
                            [ex.chosen_ids for ex in examples] + [ex.rejected_ids for ex in examples],
                            pad_id)
    batch = {k: v.to(device) for k, v in collate(examples, pad_id).items()}
    logps, counts = sequence_logps(model, batch)
    rows = batch["attention_mask"].sum(-1)
    return logps, counts, rows[: len(examples)] + rows[len(examples) :]


def collate(examples: list[PairExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded [chosen_0..chosen_{B-1}, rejected_0..rejected_{B-1}] with a response mask."""
    prefixes = [ex.prompt_ids for ex in examples] + [ex.rejected_context for ex in examples]
    responses = [ex.chosen_ids for ex in examples] + [ex.rejected_ids for ex in examples]
    return pad_rows(prefixes, responses, pad_id)


@dataclass(frozen=True)
class MicroBatch:
    """Example indices of one forward; the first ``counted`` count in the loss (the rest only
    keep every process running the same number of forwards in a short last step)."""

    indices: list[int]
    counted: int


@dataclass(frozen=True)
class Schedule:
    """Which examples each optimizer step sees, shared by every backend.

    ``batches[s]`` holds step s's example indices: seeded permutations, one per epoch, cut into
    global batches of G. With ``last_batch: wrap`` every step has G (the last step of an epoch
    takes from the next permutation, and training stops after ``ceil(n·epochs / G)`` steps); with
    ``partial`` each epoch ends with its leftover examples, as one process of Hugging Face's
    Trainer does. A step is cut into micro-batches of ``micro_batch``; micro-batch m goes to
    process ``m mod processes``, as accelerate shards a data loader, so one process and N processes
    see the same micro-batches. A short step is padded to the same number of micro-batches per
    process with uncounted repeats, so collectives (DDP, ZeRO-3) stay in step.
    """

    global_batch: int
    micro_batch: int
    processes: int
    batches: list[list[int]]

    @property
    def steps(self) -> int:
        return len(self.batches)

    @property
    def order(self) -> list[int]:
        """Every step's examples, concatenated."""
        return [i for b in self.batches for i in b]

    @property
    def accumulation(self) -> int:
        """Micro-batches per process per optimizer step."""
        return self.global_batch // (self.micro_batch * self.processes)

    def micro_batches(self, step: int, rank: int = 0) -> list[MicroBatch]:
        """This process's micro-batches for optimizer step ``step``."""
        m, idx = self.micro_batch, self.batches[step]
        chunks = [MicroBatch(idx[i : i + m], len(idx[i : i + m])) for i in range(0, len(idx), m)]
        chunks += [MicroBatch(idx[:1], 0)] * (self.accumulation * self.processes - len(chunks))
        return chunks[rank :: self.processes]


def plan(n: int, config: TrainingConfig, seed: int, processes: int = 1) -> Schedule:
    """The schedule of ``n`` pairs over ``config.epochs`` epochs (see :class:`Schedule`)."""
    # wrap: fewer pairs than a batch make the batch; partial: each epoch is one short step
    g = config.global_batch_size if config.last_batch == "partial" else min(config.global_batch_size, n)
    micro = config.per_device_batch_size
    if g % (micro * processes):
        raise ConfigError(
            f"training.global_batch_size ({g}{' = the number of pairs' if g == n else ''}) must be "
            f"a multiple of per_device_batch_size × processes ({micro} × {processes})"
        )
    gen = torch.Generator().manual_seed(seed)
    if config.last_batch == "wrap":
        steps = math.ceil(n * config.epochs / g)
        order: list[int] = []
        while len(order) < steps * g:
            order.extend(torch.randperm(n, generator=gen).tolist())
        return Schedule(g, micro, processes, [order[s * g : (s + 1) * g] for s in range(steps)])
    # partial: whole epochs, then a fractional one (its share of an epoch's steps)
    batches: list[list[int]] = []
    per_epoch = math.ceil(n / g)
    total = math.ceil(config.epochs * per_epoch)
    while len(batches) < total:
        perm = torch.randperm(n, generator=gen).tolist()
        batches.extend(perm[i : i + g] for i in range(0, n, g))
    return Schedule(g, micro, processes, batches[:total])


def _sharded_engine() -> bool:
    """Whether ``accelerate launch`` asked for DeepSpeed or FSDP."""
    return any(os.environ.get(f"ACCELERATE_USE_{k}", "false").lower() == "true"
               for k in ("DEEPSPEED", "FSDP"))


def _state_kwargs(device: str) -> dict:
    """On a CPU, DeepSpeed and FSDP need ``cpu=False`` (``cpu=True`` turns them off and runs plain
    DDP) and a gloo group (DeepSpeed would otherwise count one process per node)."""
    if device == "cpu" and _sharded_engine():
        return {"cpu": False, "backend": "gloo"}
    return {"cpu": device == "cpu"}


def processes(device: str) -> int:
    """Processes in this launch (1 outside ``accelerate launch``/``torchrun``)."""
    return PartialState(**_state_kwargs(device)).num_processes


def accelerator(device: str, accumulation: int) -> Accelerator:
    """The training Accelerator of this launch (DDP, DeepSpeed or FSDP, as launched)."""
    kw = _state_kwargs(device)
    handlers = [InitProcessGroupKwargs(backend=kw["backend"])] if "backend" in kw else []
    return Accelerator(cpu=kw["cpu"], gradient_accumulation_steps=accumulation,
                       kwargs_handlers=handlers)


def prepare(request: TrainRequest) -> tuple[PreTrainedTokenizerBase, list[PairExample], Schedule]:
    """A request's tokenizer, tokenised pairs and step schedule for this launch."""
    cfg = request.config
    tok = load_tokenizer(request.model_path, request.trust_remote_code)
    pairs = load_pairs(request.preferences, tok, cfg.max_length, cfg.max_prompt_length, cfg.layout)
    return tok, pairs, plan(len(pairs), cfg, request.seed, processes(request.device))


def strategy(acc: Accelerator) -> str:
    """accelerate's distributed type, with the ZeRO stage under DeepSpeed (e.g. ``DEEPSPEED-3``)."""
    plugin = acc.state.deepspeed_plugin
    kind = acc.distributed_type.value
    return f"{kind}-{plugin.deepspeed_config['zero_optimization']['stage']}" if plugin else kind


def autocast(device: torch.device, dtype: str):
    if dtype == "float32":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=DTYPES[dtype])


@torch.no_grad()
def pair_logps(
    model: torch.nn.Module, pairs: list[PairExample], batch_size: int, pad_id: int,
    acc: Accelerator, dtype: str, normalize: bool, desc: str, progress: bool,
    share_context: bool = True,
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
    with autocast(acc.device, dtype):  # one context for the pass, not one per micro-batch
        for i in tqdm(range(0, per, batch_size), desc=desc,
                      disable=not (progress and acc.is_main_process)):
            chunk = mine[i : i + batch_size]
            logps, count, _ = pair_forward(model, chunk, pad_id, share_context)
            if normalize:
                logps = logps / count
            out.append(torch.stack(logps.float().split(len(chunk)), dim=1))
    return acc.gather(torch.cat(out)).cpu()[:n]
