"""Tokenised preference pairs, shared by every backend: prompt masked, response + EOS scored."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from harness.artifacts import read_jsonl
from harness.errors import DataError
from harness.generate import chat_prompt
from harness.logprobs import right_pad

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
