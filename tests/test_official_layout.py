"""``training.layout: official`` against a transcription of uclaml/SPPO at commit 5e61c4e.

Transcribed (the branches SPPO's training takes; exact on the inputs used here):
- ``sppo/alignment/data.py`` ``apply_chat_template`` with ``skip_system_message=True`` (as
  ``sppo/run_sppo.py`` calls it), including its misspelled ``add_generate_prompt=True``;
- ``sppo/trainer.py`` ``SPPOTrainer.build_tokenized_answer``, ``tokenize_row`` (decoder-only,
  ``truncation_mode="keep_end"``, ``label_pad_token_id=-100``), ``concatenated_inputs`` (padding
  with 0 / -100) and ``get_batch_logps`` (``average_log_prob=False``).

The harness must give identical input ids, attention masks and label masks, and summed
log-probabilities equal within 1e-5 (the same forward; only padding widths differ).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.artifacts import write_jsonl
from harness.errors import DataError
from harness.logprobs import sequence_logps
from trainers.data import collate, load_pairs

IGNORE = -100


# ---- transcription of uclaml/SPPO 5e61c4e -------------------------------------------------------
def upstream_texts(tok, prompt: str, chosen: str, rejected: str) -> dict[str, str]:
    """data.py apply_chat_template, skip_system_message=True."""
    ex = {"chosen": [{"role": "user", "content": prompt}, {"role": "assistant", "content": chosen}],
          "rejected": [{"role": "user", "content": prompt},
                       {"role": "assistant", "content": rejected}]}
    prompt_messages = ex["chosen"][:-1]
    text_prompt = tok.apply_chat_template(prompt_messages, tokenize=False, add_generate_prompt=True)
    return {
        "prompt": text_prompt,
        "chosen": tok.apply_chat_template(ex["chosen"], tokenize=False,
                                          add_generate_prompt=True)[len(text_prompt):],
        "rejected": tok.apply_chat_template(ex["rejected"], tokenize=False,
                                            add_generate_prompt=True)[len(text_prompt):],
    }


def upstream_build_tokenized_answer(tok, prompt: str, answer: str) -> dict[str, list[int]]:
    full = tok(prompt + answer, add_special_tokens=False)
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = full["input_ids"][len(prompt_ids):]
    if len(full["input_ids"]) != len(np.concatenate([prompt_ids, answer_ids])):
        raise ValueError("Prompt input ids and answer input ids should have the same length.")
    start = len(prompt_ids)
    if prompt_ids != full["input_ids"][:start]:
        start -= 1
    return {"prompt_input_ids": full["input_ids"][:start],
            "prompt_attention_mask": full["attention_mask"][:start],
            "input_ids": full["input_ids"][start:], "attention_mask": full["attention_mask"][start:]}


def upstream_tokenize_row(tok, feature: dict[str, str], max_length: int,
                          max_prompt_length: int) -> dict[str, list[int]]:
    prompt_tokens = {f"prompt_{k}": v for k, v in tok(feature["prompt"],
                                                      add_special_tokens=False).items()}
    chosen_tokens = upstream_build_tokenized_answer(tok, feature["prompt"], feature["chosen"])
    rejected_tokens = upstream_build_tokenized_answer(tok, feature["prompt"], feature["rejected"])
    n = min(len(chosen_tokens["prompt_input_ids"]), len(rejected_tokens["prompt_input_ids"]))
    prompt_tokens = {k: v[:n] for k, v in prompt_tokens.items()}
    diff_tokens = sum(a != b for a, b in zip(chosen_tokens["prompt_input_ids"],
                                             rejected_tokens["prompt_input_ids"], strict=False))
    diff_len = abs(len(chosen_tokens["prompt_input_ids"]) - len(rejected_tokens["prompt_input_ids"]))
    if diff_tokens > 1 or diff_len > 1:
        raise ValueError("Chosen and rejected prompt_input_ids might only differ on the last token")
    for t in (prompt_tokens, chosen_tokens, rejected_tokens):
        t["prompt_input_ids"] = [tok.bos_token_id, *t["prompt_input_ids"]]
        t["prompt_attention_mask"] = [1, *t["prompt_attention_mask"]]
    for t in (chosen_tokens, rejected_tokens):
        t["input_ids"].append(tok.eos_token_id)
        t["attention_mask"].append(1)
    longer = max(len(chosen_tokens["input_ids"]), len(rejected_tokens["input_ids"]))
    for t in (chosen_tokens, rejected_tokens, prompt_tokens):
        if len(t["prompt_input_ids"]) + longer > max_length:  # keep_end
            for k in ("prompt_input_ids", "prompt_attention_mask"):
                t[k] = t[k][-max_prompt_length:]
    for t in (chosen_tokens, rejected_tokens):
        if len(t["prompt_input_ids"]) + longer > max_length:
            for k in ("input_ids", "attention_mask"):
                t[k] = t[k][: max_length - max_prompt_length]
    batch = {}
    for name, t in (("chosen", chosen_tokens), ("rejected", rejected_tokens)):
        seq = {k: t[f"prompt_{k}"] + t[k] for k in ("input_ids", "attention_mask")}
        seq["labels"] = seq["input_ids"][:]
        seq["labels"][: len(t["prompt_input_ids"])] = [IGNORE] * len(t["prompt_input_ids"])
        batch.update({f"{name}_{k}": v for k, v in seq.items()})
    return batch


def upstream_logps(model, rows: list[dict[str, list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """concatenated_inputs (chosen rows, then rejected rows, padded to one width) + forward +
    get_batch_logps(average_log_prob=False)."""
    seqs = [(r[f"{n}_input_ids"], r[f"{n}_attention_mask"], r[f"{n}_labels"])
            for n in ("chosen", "rejected") for r in rows]
    width = max(len(s[0]) for s in seqs)
    ids = torch.tensor([s[0] + [0] * (width - len(s[0])) for s in seqs])
    mask = torch.tensor([s[1] + [0] * (width - len(s[1])) for s in seqs])
    labels = torch.tensor([s[2] + [IGNORE] * (width - len(s[2])) for s in seqs])
    logits = model(ids, attention_mask=mask).logits
    labels = labels[:, 1:].clone()
    logits = logits[:, :-1, :]
    loss_mask = labels != IGNORE
    labels[labels == IGNORE] = 0
    per_token = torch.gather(logits.log_softmax(-1), dim=2, index=labels.unsqueeze(2)).squeeze(2)
    logps = (per_token * loss_mask).sum(-1)
    return logps[: len(rows)], logps[len(rows):]
# -------------------------------------------------------------------------------------------------


def _words(n: int, seed: int) -> str:
    rnd = np.random.default_rng(seed)
    vocab = ["river", "stone", "quiet", "lamp", "orbit", "mint", "harbor", "seven", "glass", "fern"]
    return " ".join(rnd.choice(vocab, size=n))


# (prompt, chosen, rejected) in words: about one token per word with this tokenizer
CASES = {
    "short": (_words(12, 0), _words(20, 1), _words(9, 2)),
    "prompt over max_prompt_length": (_words(700, 3), _words(30, 4), _words(25, 5)),
    "prompt cut": (_words(700, 15), _words(400, 16), _words(100, 17)),
    "long responses": (_words(40, 6), _words(1100, 7), _words(60, 8)),
    "both truncations": (_words(700, 9), _words(900, 10), _words(800, 11)),
    "only the shorter response fits": (_words(300, 12), _words(650, 13), _words(100, 14)),
}


def _pairs_file(tmp: Path, cases: dict[str, tuple[str, str, str]]) -> Path:
    path = tmp / "preferences.jsonl"
    write_jsonl(path, [{"prompt_id": name, "prompt": p, "chosen": c, "rejected": r,
                        "chosen_probs": 0.7, "chosen_probs_win": 0.6, "chosen_probs_lose": 0.4}
                       for name, (p, c, r) in cases.items()])
    return path


def _upstream_rows(tok, cases, max_length: int, max_prompt_length: int) -> list[dict]:
    return [upstream_tokenize_row(tok, upstream_texts(tok, *c), max_length, max_prompt_length)
            for c in cases.values()]


def _as_sequences(ex, which: str) -> tuple[list[int], list[int], list[bool]]:
    context = ex.prompt_ids if which == "chosen" else ex.rejected_context
    response = ex.chosen_ids if which == "chosen" else ex.rejected_ids
    return (context + response, [1] * (len(context) + len(response)),
            [False] * len(context) + [True] * len(response))


def test_official_layout_gives_upstreams_tokens_in_every_branch(tmp_path: Path,
                                                                chat_tokenizer_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(chat_tokenizer_dir)
    pairs = load_pairs(_pairs_file(tmp_path, CASES), tok, 1024, 512, layout="official")
    want = _upstream_rows(tok, CASES, 1024, 512)
    for name, ex, up in zip(CASES, pairs, want, strict=True):
        for which in ("chosen", "rejected"):
            ids, attn, scored = _as_sequences(ex, which)
            assert ids == up[f"{which}_input_ids"], (name, which)
            assert attn == up[f"{which}_attention_mask"], (name, which)
            assert scored == [label != IGNORE for label in up[f"{which}_labels"]], (name, which)
    by = dict(zip(CASES, pairs, strict=True))
    # every branch was taken. Upstream cuts only when prompt + the longer response exceed
    # max_length: a prompt over max_prompt_length that fits stays whole
    assert len(by["prompt over max_prompt_length"].prompt_ids) > 700
    assert len(by["prompt cut"].prompt_ids) == 512 and len(by["prompt cut"].chosen_ids) > 400
    assert len(by["long responses"].chosen_ids) == 512 and len(by["long responses"].prompt_ids) < 512
    assert len(by["both truncations"].prompt_ids) == 512
    assert len(by["both truncations"].rejected_ids) == 512
    assert len(by["short"].prompt_ids) + len(by["short"].chosen_ids) < 200
    # upstream's layout: BOS before a prompt that already opens with it; the response opens the
    # assistant turn and ends with the template's end of turn, then EOS
    short = by["short"]
    assert short.prompt_ids[:2] == [tok.bos_token_id, tok.bos_token_id]
    assert tok.decode(short.chosen_ids).startswith("<|im_start|>assistant\n")
    assert short.chosen_ids[-3:] == [tok.eos_token_id, *tok("\n", add_special_tokens=False)["input_ids"],
                                     tok.eos_token_id]


def test_a_prompt_token_merged_into_one_response_gives_each_its_own_context(
        tmp_path: Path, chat_tokenizer_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(chat_tokenizer_dir)
    # a plain template: the answer follows the prompt's text directly, so " hi" + "gh" → " high"
    tok.chat_template = ("{% for m in messages %}{% if m['role'] == 'user' %}{{ 'Q: ' + m['content'] }}"
                         "{% else %}{{ m['content'] }}{% endif %}{% endfor %}")
    cases = {"merge": ("hi", "gh there", " there")}
    [ex] = load_pairs(_pairs_file(tmp_path, cases), tok, 1024, 512, layout="official")
    [up] = _upstream_rows(tok, cases, 1024, 512)
    assert len(ex.prompt_ids) + 1 == len(ex.rejected_context)  # the merge branch was taken
    for which in ("chosen", "rejected"):
        ids, _, scored = _as_sequences(ex, which)
        assert ids == up[f"{which}_input_ids"]
        assert scored == [label != IGNORE for label in up[f"{which}_labels"]]


def test_official_layout_scores_what_upstream_scores(tmp_path: Path, tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    # the tiny model's window is 512: the same branches at max_length 160, max_prompt_length 64
    cases = {"short": (_words(5, 20), _words(9, 21), _words(4, 22)),
             "prompt cut": (_words(90, 23), _words(60, 24), _words(6, 25)),
             "both cut": (_words(90, 26), _words(150, 27), _words(40, 28))}
    pairs = load_pairs(_pairs_file(tmp_path, cases), tok, 160, 64, layout="official")
    with torch.no_grad():
        logps, _ = sequence_logps(model, collate(pairs, tok.pad_token_id))
        want_c, want_r = upstream_logps(model, _upstream_rows(tok, cases, 160, 64))
    got_c, got_r = logps.split(len(pairs))
    torch.testing.assert_close(got_c, want_c, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_r, want_r, rtol=1e-5, atol=1e-5)
    assert len(pairs[1].prompt_ids) == 64 and len(pairs[1].chosen_ids) > 60  # the prompt was cut
    assert len(pairs[2].chosen_ids) == 160 - 64  # truncation reached the scored tokens


def test_clean_layout_refuses_a_long_prompt_the_official_one_cuts(tmp_path: Path,
                                                                  chat_tokenizer_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(chat_tokenizer_dir)
    path = _pairs_file(tmp_path, {"long": CASES["prompt over max_prompt_length"]})
    with pytest.raises(DataError, match=r"prompt long: the prompt has \d+ tokens, more than "
                                        r"max_prompt_length=512 \(training.layout: official cuts it\)"):
        load_pairs(path, tok, 1024, 512, layout="clean")
    assert json.loads(path.read_text().splitlines()[0])["prompt_id"] == "long"


def test_ipo_is_upstreams_on_summed_log_probabilities(tmp_path: Path, tiny_model_dir: Path) -> None:
    # sppo/trainer.py: concatenated_forward calls get_batch_logps(average_log_prob=False) for
    # every loss, and ipo is ((π_w − π_l) − (ref_w − ref_l) − 1/(2β))² on those sums
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainers.losses import LENGTH_NORMALIZED, LOSSES, PreferenceBatch

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ref = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    cases = {"a": (_words(8, 30), _words(15, 31), _words(3, 32)),
             "b": (_words(20, 33), _words(4, 34), _words(30, 35))}
    pairs = load_pairs(_pairs_file(tmp_path, cases), tok, 160, 64, layout="official")
    up_rows = _upstream_rows(tok, cases, 160, 64)
    beta = 0.1
    with torch.no_grad():
        (pc, pr), (rc, rr) = (upstream_logps(m, up_rows) for m in (policy, ref))
        want = ((pc - pr) - (rc - rr) - 1 / (2 * beta)) ** 2
        batch = collate(pairs, tok.pad_token_id)
        sums = {}
        for name, m in (("policy", policy), ("ref", ref)):
            logps, counts = sequence_logps(m, batch)
            sums[name] = (logps / counts if "ipo" in LENGTH_NORMALIZED else logps).split(len(pairs))
    probs = torch.full((len(pairs),), 0.5)
    got = LOSSES["ipo"](PreferenceBatch(*sums["policy"], *sums["ref"], probs, probs, probs), beta)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert "ipo_mean" in LENGTH_NORMALIZED  # TRL's IPO, by its own name
