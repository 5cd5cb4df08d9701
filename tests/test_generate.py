"""The fast nucleus warper keeps exactly what transformers' temperature + top-p warpers keep; the
per-sample sampler draws from that distribution, and a sample depends on its prompt and seed only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import TemperatureLogitsWarper, TopPLogitsWarper, set_seed

from harness.generate import NucleusSampler, NucleusWarper, RowTemperature, Sampling, sample_seed
from harness.judges.base import Decoding, JudgeRequest
from harness.models import load_model, load_tokenizer
from harness.prompts import Prompt
from harness.under_test.hf import TransformersModel


@pytest.mark.parametrize("scale", [0.5, 3.0, 8.0, 30.0])
@pytest.mark.parametrize(("temperature", "top_p"), [(0.7, 0.9), (1.0, 0.5), (0.3, 0.99)])
def test_kept_tokens_equal_transformers(scale: float, temperature: float, top_p: float) -> None:
    # scale 0.5 gives flat rows (the fallback path), 30 gives one or two kept tokens.
    torch.manual_seed(int(scale * 10))
    logits = torch.randn(16, 5000) * scale
    expected = TopPLogitsWarper(top_p)(None, TemperatureLogitsWarper(temperature)(None, logits.clone()))
    got = NucleusWarper(temperature, top_p, probe=64)(None, logits.clone())
    assert torch.equal(torch.isinf(got), torch.isinf(expected))
    kept = ~torch.isinf(got)
    assert torch.allclose(got[kept], expected[kept])
    assert kept.sum(-1).min() >= 1


def test_generate_matches_transformers_sampling(tiny_model_dir: Path) -> None:
    """Same seed, same tokens as generate(temperature=, top_p=) on a peaked and a flat model."""
    tok = load_tokenizer(str(tiny_model_dir))
    model = load_model(str(tiny_model_dir))
    ids = tok(["Hello there", "Write a haiku"], return_tensors="pt", padding=True, padding_side="left")
    for sharpen in (1.0, 400.0):  # the random model is flat; sharpened, the fast path is taken
        with torch.no_grad():
            model.lm_head.weight.mul_(sharpen)
        runs = []
        for fast in (False, True):
            set_seed(7)
            kwargs = ({"temperature": 1.0, "top_p": 1.0, "logits_processor": [NucleusWarper(0.7, 0.9)]}
                      if fast else {"temperature": 0.7, "top_p": 0.9})
            runs.append(model.generate(**ids, do_sample=True, top_k=0, max_new_tokens=12,
                                       pad_token_id=tok.pad_token_id, **kwargs))
        assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("scale", [0.5, 8.0])  # flat rows: the sorted fallback; peaked: the probe
def test_sampler_draws_from_the_warped_distribution(scale: float) -> None:
    torch.manual_seed(3)
    row = torch.randn(1, 600) * scale
    n = 20_000
    warped = NucleusWarper(0.7, 0.9, probe=64)(None, row.clone())
    p = warped.softmax(-1)[0].double()
    picks = NucleusSampler(0.7, 0.9, list(range(n)), probe=64)(None, row.expand(n, -1).clone())
    assert torch.equal((picks == 0).sum(-1), torch.ones(n, dtype=torch.long))  # one token a row
    freq = torch.bincount(picks.argmax(-1), minlength=600).double() / n
    assert float(freq[p == 0].sum()) == 0.0  # nothing outside the nucleus
    sigma = (p * (1 - p) / n).sqrt()
    assert bool(((freq - p).abs() <= 5 * sigma + 1e-12).all()), float(((freq - p).abs() / sigma).max())


def _sample_alone(model, tok, prompt: Prompt, sampling: Sampling) -> list[list[int]]:
    """Each sample of ``prompt`` on its own: no batch, no shared prefill, the sampler of one row."""
    from harness.generate import chat_prompt

    ids = torch.tensor([tok(chat_prompt(tok, prompt.prompt), add_special_tokens=False)["input_ids"]])
    out = []
    for seed in sampling.seeds:
        seq = model.generate(input_ids=ids, do_sample=False, max_new_tokens=sampling.max_new_tokens,
                             logits_processor=[NucleusSampler(sampling.temperature, sampling.top_p,
                                                              [sample_seed(prompt.prompt_id, seed)])],
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        out.append(seq[0, ids.shape[1]:].tolist())
    return out


@pytest.mark.parametrize("sharpen", [1.0, 8.0])  # flat: nucleus beyond the probe; sharper: inside
def test_a_sample_depends_on_its_prompt_and_seed_only(tiny_model_dir: Path, sharpen: float) -> None:
    """One batched pass with a shared prefill gives every prompt the samples it gets alone, in
    any batch and order (the rule a resumed run relies on)."""
    tok = load_tokenizer(str(tiny_model_dir))
    # float64: batch shapes change the last bits of fp32 logits, and a flat row's draw can flip
    model = load_model(str(tiny_model_dir)).double()
    with torch.no_grad():
        model.lm_head.weight.mul_(sharpen)
    prompts = [Prompt("a", "Hi"), Prompt("b", "Write a long poem about the sea, please."),
               Prompt("c", "Name three colours.")]
    sampling = Sampling((0, 50, 100), 0.7, 0.9, max_new_tokens=10)
    batched = TransformersModel(model, tok, batch_size=3, progress=False).sample(prompts, sampling)
    alone = TransformersModel(model, tok, batch_size=1, progress=False).sample(prompts[::-1], sampling)[::-1]
    assert batched == alone
    for prompt, gen in zip(prompts, batched, strict=True):
        want = _sample_alone(model, tok, prompt, sampling)
        assert [tok.decode(w[:n], skip_special_tokens=True).strip()
                for w, n in zip(want, gen.num_tokens, strict=True)] == gen.responses
    assert len({r for g in batched for r in g.responses}) > 3  # seeds and prompts do differ


def test_a_draw_does_not_depend_on_a_wide_row_in_its_batch() -> None:
    """bf16 logits tie often; a row whose nucleus is inside the probe draws the same token whether
    or not another row of its batch needed the whole vocabulary sorted (ties kept in one order)."""
    torch.manual_seed(0)
    narrow = (torch.randn(400, 49152) * 4.0).bfloat16().float()
    wide = torch.randn(1, 49152) * 0.1
    seeds = list(range(400))
    sampler = NucleusSampler(0.7, 0.9, seeds)
    assert not bool(sampler.nucleus(narrow / 0.7)[2].any()) and bool(sampler.nucleus(wide / 0.7)[2].all())
    alone = sampler(None, narrow.clone()).argmax(-1)
    mixed = NucleusSampler(0.7, 0.9, [999, *seeds])(None, torch.cat([wide, narrow])).argmax(-1)[1:]
    assert torch.equal(alone, mixed)


def test_row_temperature_is_transformers_temperature_per_row_and_greedy_at_zero() -> None:
    scores = torch.randn(3, 40, generator=torch.Generator().manual_seed(0))
    out = RowTemperature([0.7, 0.0, 1.3])(None, scores.clone())
    for row, t in ((0, 0.7), (2, 1.3)):
        assert torch.equal(out[row], TemperatureLogitsWarper(t)(None, scores[row : row + 1].clone())[0])
    best = int(scores[1].argmax())
    assert out[1, best] == scores[1, best]
    assert torch.isinf(out[1]).sum() == 39 and bool((out[1][torch.arange(40) != best] < 0).all())
    with pytest.raises(ValueError, match="2 rows for 3 temperatures"):
        RowTemperature([0.7, 0.0, 1.3])(None, scores[:2])


def test_chat_answers_every_temperature_in_one_generate_call(tiny_model_dir: Path) -> None:
    """Requests that differ only in temperature (MT-Bench's categories) are decoded together; the
    greedy ones give what they give decoded alone (each row's temperature is checked against
    transformers' warper above)."""
    model = TransformersModel.load(str(tiny_model_dir), dtype="float32", device="cpu", batch_size=8)
    temps = [0.0, 0.7, 0.0, 0.1, 0.7]
    requests = [JudgeRequest(f"q{i}", ({"role": "user", "content": f"question {i} " * (i + 1)},),
                             Decoding(t, 12)) for i, t in enumerate(temps)]
    calls = []
    generate = model.model.generate
    model.model.generate = lambda **kw: calls.append(kw) or generate(**kw)
    together = model.chat(requests, progress=False).judgments
    assert len(calls) == 1
    greedy = model.chat([r for r in requests if r.decoding.temperature == 0], progress=False).judgments
    assert len(calls) == 2 and not calls[1]["do_sample"]
    for r in requests:
        if r.decoding.temperature == 0:
            assert together[r.id].text == greedy[r.id].text
    assert len({together[r.id].text for r in requests}) > 1


def test_a_pass_of_one_sample_per_prompt_takes_k_times_the_prompts(tiny_model_dir: Path) -> None:
    """With a row budget (the run's K × batch_size), evaluation answers (one sample per prompt)
    decode K times the prompts per pass that K samples do: fewer decoding steps for the same rows."""
    tok = load_tokenizer(str(tiny_model_dir))
    model = load_model(str(tiny_model_dir))
    calls: list[int] = []
    generate = model.generate
    model.generate = lambda **kw: calls.append(len(kw["input_ids"])) or generate(**kw)
    prompts = [Prompt(str(i), f"Say {i}") for i in range(7)]
    mut = TransformersModel(model, tok, batch_size=2, progress=False, rows_per_pass=6)
    mut.sample(prompts, Sampling((0, 50, 100), 0.7, 0.9, max_new_tokens=3))
    assert calls == [6, 6, 6, 3]  # 2 prompts × 3 samples per pass
    calls.clear()
    mut.sample(prompts, Sampling((0,), 0.7, 0.9, max_new_tokens=3))
    assert calls == [6, 1]
    calls.clear()
    TransformersModel(model, tok, batch_size=2, progress=False).sample(
        prompts, Sampling((0,), 0.7, 0.9, max_new_tokens=3))
    assert calls == [2, 2, 2, 1]  # without a budget, batch_size prompts
