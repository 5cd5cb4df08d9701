from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness.artifacts import write_jsonl
from harness.generate import chat_prompt
from harness.logprobs import batched_logps, pad_rows, paired_logps
from trainers.data import collate, load_pairs


def test_chat_prompt_is_the_tokenizers_template_with_generation_prompt(chat_tokenizer_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(chat_tokenizer_dir)
    text = chat_prompt(tok, "Is None a valid value?")
    assert text == tok.apply_chat_template(
        [{"role": "user", "content": "Is None a valid value?"}], tokenize=False,
        add_generation_prompt=True)
    # The official code split on the string "None", truncating such prompts; we must not.
    assert "<|im_start|>user\nIs None a valid value?<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n")


def _pairs_file(tmp_path: Path) -> Path:
    rows = [{"prompt_id": f"p{i}", "prompt": f"Question number {i}?" * (i + 1),
             "chosen": "A fine answer." * (i + 1), "rejected": "No.",
             "chosen_probs": 0.7, "chosen_probs_win": 0.6, "chosen_probs_lose": 0.4}
            for i in range(3)]
    path = tmp_path / "preferences.jsonl"
    write_jsonl(path, rows)
    return path


def test_prompt_masked_response_and_eos_scored(tmp_path: Path, chat_tokenizer_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(chat_tokenizer_dir)
    pairs = load_pairs(_pairs_file(tmp_path), tok, max_length=256, max_prompt_length=128)
    batch = collate(pairs, tok.pad_token_id)
    assert batch["input_ids"].shape[0] == 6  # chosen rows then rejected rows
    for row, ex in enumerate(pairs + pairs):
        resp = ex.chosen_ids if row < 3 else ex.rejected_ids
        pad = int((batch["attention_mask"][row] == 0).sum())  # left padding
        mask = batch["response_mask"][row].tolist()[pad:]
        ids = batch["input_ids"][row].tolist()[pad:]
        n_p = len(ex.prompt_ids)
        assert mask[:n_p] == [0] * n_p  # prompt masked
        assert mask[n_p : n_p + len(resp)] == [1] * len(resp)  # response scored
        assert sum(mask) == len(resp) and len(mask) == n_p + len(resp)  # padding masked
        assert ids[n_p + len(resp) - 1] == tok.eos_token_id  # EOS is part of the response
        assert tok.decode(ids[:n_p]) == chat_prompt(tok, ex_prompt(tmp_path, ex.prompt_id))
        assert batch["attention_mask"][row].sum() == n_p + len(resp)


def ex_prompt(tmp_path: Path, pid: str) -> str:
    i = int(pid[1:])
    return f"Question number {i}?" * (i + 1)


def test_batched_logps_equal_unpadded_per_row(tiny_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64)
    torch.manual_seed(0)
    prefixes = [torch.randint(5, 1000, (n,)).tolist() for n in (3, 9, 5, 1)]
    responses = [torch.randint(5, 1000, (n,)).tolist() for n in (4, 2, 7, 3)]
    batched = batched_logps(model, prefixes, responses, pad_id=0, batch_size=3)
    for (p, r), (got, count) in zip(zip(prefixes, responses, strict=True), batched, strict=True):
        ids = torch.tensor([p + r])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].double()
        logp = torch.log_softmax(logits, -1)
        want = sum(float(logp[len(p) + j - 1, tok]) for j, tok in enumerate(r))
        assert count == len(r)
        assert abs(got - want) < 1e-9


# Tolerances: (log-probs, gradients). In float64 the log-probs agree to rounding; gradients to
# float32's (Llama's RMSNorm computes in float32 whatever the model's dtype, and the two paths sum
# a context's gradient in different orders). Eager attention runs in float32 only: transformers'
# eager mask turns a float64 model's left-padded rows into NaN.
@pytest.mark.parametrize(("attn", "dtype", "tol"), [("sdpa", torch.float64, (1e-9, 1e-5)),
                                                    ("eager", torch.float32, (1e-4, 1e-4))])
def test_paired_logps_and_gradients_equal_whole_sequences(
    tiny_model_dir: Path, attn: str, dtype: torch.dtype, tol: tuple[float, float]
) -> None:
    """Contexts run once and continued from their repeated KV cache: the same log-probs and the
    same gradients as each context + response forwarded whole, unpadded."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=dtype, attn_implementation=attn)
    torch.manual_seed(0)
    contexts = [torch.randint(5, 1000, (n,)).tolist() for n in (6, 2, 9)]
    responses = [torch.randint(5, 1000, (n,)).tolist() for n in (3, 7, 1, 5, 2, 4)]  # chosen, rejected
    got, counts, forwarded = paired_logps(model, contexts, responses, pad_id=0)
    got.sum().backward()
    shared_grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    want = []
    for i, r in enumerate(responses):
        c = contexts[i % 3]
        logp = torch.log_softmax(model(input_ids=torch.tensor([c + r])).logits[0], -1)
        want.append(sum(logp[len(c) + j - 1, t] for j, t in enumerate(r)))
    torch.stack(want).sum().backward()
    assert got.detach().tolist() == pytest.approx([float(w) for w in want], abs=tol[0])
    assert counts.tolist() == [len(r) for r in responses]
    assert forwarded.tolist() == [len(contexts[i]) + len(responses[i]) + len(responses[i + 3])
                                  for i in range(3)]
    for k, p in model.named_parameters():
        scale = float(p.grad.abs().max())
        assert float((shared_grads[k] - p.grad).abs().max()) <= tol[1] * scale, k


def test_pad_rows_layout() -> None:
    b = pad_rows([[1, 2], [3]], [[4], [5, 6, 7]], pad_id=0)
    assert b["input_ids"].tolist() == [[0, 1, 2, 4], [3, 5, 6, 7]]
    assert b["response_mask"].tolist() == [[0, 0, 0, 1], [0, 1, 1, 1]]
    assert b["attention_mask"].tolist() == [[0, 1, 1, 1], [1, 1, 1, 1]]


def test_yes_no_judge_batched_equals_one_by_one(tiny_model_dir: Path) -> None:
    from harness.rank.embedded import YesNoJudgeRanker

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    judge = YesNoJudgeRanker(model, tok, "tiny-judge", batch_size=3, progress=False)
    prompts = ["Name a fruit.", "What is 2 + 2? Explain briefly."]
    cands = [["Apple.", "A banana is a fruit that is yellow.", ""], ["4", "Five, since 2 + 2 = 5."]]
    batched = judge.score(prompts, cands)
    for p, cs, got in zip(prompts, cands, batched, strict=True):
        for c, g in zip(cs, got, strict=True):
            ids = torch.tensor([judge.judge_prompt(p, c)])
            with torch.no_grad():
                logp = model(input_ids=ids).logits[0, -1].double().log_softmax(-1)
            assert abs(g - float(logp[judge.yes] - logp[judge.no])) < 1e-9
    # Pointwise: reordering candidates reorders the scores and changes nothing else.
    swapped = judge.score(prompts, [list(reversed(c)) for c in cands])
    for s, b in zip(swapped, batched, strict=True):
        assert list(reversed(s)) == pytest.approx(b, abs=1e-9)
    assert "Answer Yes or No." in tok.decode(judge.judge_prompt("x", "y"))
