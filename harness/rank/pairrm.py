"""``pairrm``: PairRM through llm-blender, as the official SPPO ranking script uses it, but batched.

Official pipeline (uclaml/SPPO ``scripts/rank.py``): each prompt is rendered with the policy's chat
template up to the assistant turn, and ``Blender.rank(inputs, candidates, return_scores=True,
batch_size=1)`` scores the K responses: PairRM compares every ordered pair (i, j) in one DeBERTa
pass over ``<source> <candidate1> <candidate2>`` giving a logit C[i, j], and a candidate's score is
the row mean of C − Cᵀ. For ``probabilities: pairwise`` the same logits give P_ij =
½(σ(C_ij) + σ(−C_ji)) (:meth:`PairRMRanker.score_pairwise`, one pass for scores and matrices).

Here llm-blender does the loading, tokenisation and truncation exactly as at batch size 1 (its
collator is called one prompt at a time, so each prompt keeps its own truncation budget), and
the K(K−1) pair sequences of all prompts are then run through llm-blender's own model pieces
(``cat_ids``, the DeBERTa backbone, ``reduce``) in length-sorted padded batches instead of one
at a time. Scores equal ``Blender.rank(..., batch_size=1)`` up to float rounding (tested).

llm-blender 0.0.2 was written for transformers 4. Under transformers 5 three things differ, and
:func:`import_llm_blender` / :func:`load_blender` restore them: ``TRANSFORMERS_CACHE`` (gone; set
to the Hugging Face cache path), ``batch_encode_plus`` (gone; its collator's call equals
``tokenizer(texts, ...)``), and DeBERTa-v3's tokenizer, which transformers 5 builds from
``spm.model`` without sentencepiece's NFKC character map (so "…", "ﬁ", no-break spaces, full-width
letters get other ids); the normaliser transformers 4 built is put back. With these, scores equal
llm-blender's under transformers 4.44 exactly (tests/fixtures/pairrm_tiny).

Weights: ``pairrm`` loads ``llm-blender/PairRM`` from the hub (llm-blender downloads it into the
Hugging Face cache, with the ``microsoft/deberta-v3-large`` backbone config); ``pairrm:<dir>`` loads
a local copy (a directory with PairRM's ``config.json`` and weights, as ``snapshot_download`` of
``llm-blender/PairRM`` gives). ``pytorch_model.bin`` checkpoints are read by ``torch.load``, which
in torch ≥ 2.6 only unpickles tensors (``weights_only``).
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from harness.errors import ConfigError
from harness.probabilities import pairwise_probabilities
from harness.rank import Matrix, Ranker, register

HUB_ID = "llm-blender/PairRM"
PLACEHOLDER = "None"  # the official script's assistant stand-in, cut off after templating


def import_llm_blender():
    """llm_blender, importable under transformers 5 (see the module docstring)."""
    import transformers.utils.hub as hub
    from transformers import PreTrainedTokenizerBase

    if not hasattr(hub, "TRANSFORMERS_CACHE"):
        from huggingface_hub.constants import HF_HUB_CACHE

        hub.TRANSFORMERS_CACHE = HF_HUB_CACHE
    if not hasattr(PreTrainedTokenizerBase, "batch_encode_plus"):
        PreTrainedTokenizerBase.batch_encode_plus = _batch_encode_plus
    try:
        with contextlib.redirect_stdout(sys.stderr):
            import llm_blender
    except ImportError as exc:
        raise ConfigError(f"ranker 'pairrm' needs llm-blender: pip install 'llm-blender==0.0.2' "
                          f"dataclasses-json sentencepiece ({exc})") from None
    return llm_blender


def _batch_encode_plus(self, batch_text_or_text_pairs, **kwargs):
    """transformers 4's ``batch_encode_plus(texts, **kw)``, which is ``self(texts, **kw)``."""
    return self(batch_text_or_text_pairs, **kwargs)


def restore_spm_normalizer(tokenizer) -> None:
    """Give a DeBERTa-v3 tokenizer built by transformers 5 the normaliser transformers 4 built from
    its ``spm.model``: strip, sentencepiece's precompiled (NFKC) character map, collapse spaces."""
    from tokenizers import Regex, normalizers

    spm = getattr(tokenizer, "vocab_file", None)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if not spm or backend is None or not Path(spm).is_file() or "Precompiled" in repr(backend.normalizer):
        return
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(Path(spm).read_bytes())
    charsmap = proto.normalizer_spec.precompiled_charsmap
    if charsmap:
        backend.normalizer = normalizers.Sequence([
            normalizers.Strip(), normalizers.Precompiled(charsmap),
            normalizers.Replace(Regex(" {2,}"), " ")])


def chat_source(tokenizer, prompt: str) -> str:
    """The prompt as the official script gives it to PairRM: the chat template of a user turn and
    an assistant turn holding a placeholder, cut where the placeholder starts. (The official
    script cuts at the first "None", which truncates prompts that contain the word; this cuts at
    the last, giving the same text for every other prompt.)"""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": PLACEHOLDER}],
        tokenize=False)
    return text.rsplit(PLACEHOLDER, 1)[0]


def load_blender(source: str = HUB_ID, device: str = "cpu"):
    """An llm-blender ``Blender`` with PairRM loaded from the hub or a local directory."""
    blender_mod = import_llm_blender()
    kwargs: dict[str, Any] = {}
    local = Path(source).expanduser()
    if local.is_dir():
        cfg_path = local / "config.json"
        if not cfg_path.is_file():
            raise ConfigError(f"pairrm:{source}: no config.json (a PairRM checkpoint directory has "
                              "llm-blender's ranker config.json and its weights)")
        backbone = json.loads(cfg_path.read_text()).get("model_name")
        if backbone and (local / backbone).is_dir():  # a backbone shipped inside the directory
            kwargs["model_name"] = str(local / backbone)
        source = str(local)
    elif source.startswith(("/", ".", "~")):
        raise ConfigError(f"pairrm:{source}: no such directory")
    try:
        with contextlib.redirect_stdout(sys.stderr), _quiet():
            blender = blender_mod.Blender()
            blender.loadranker(source, device=device, **kwargs)
    except Exception as exc:  # llm-blender reports a missing download as whatever fails next
        raise ConfigError(f"cannot load PairRM from {source!r} ({type(exc).__name__}: {exc}); "
                          f"without network access, download {HUB_ID} elsewhere and pass "
                          "--ranker pairrm:<its directory>") from None
    if getattr(blender, "ranker", None) is None or blender.ranker_config.ranker_type != "pairranker":
        raise ConfigError(f"pairrm:{source}: not a PairRM (pairranker) checkpoint")
    restore_spm_normalizer(blender.ranker_tokenizer)
    return blender


@contextlib.contextmanager
def _quiet():
    """Hide llm-blender's noise while loading: "no fuser loaded" log lines and dataclasses_json
    warnings about its own config defaults."""
    import logging
    import warnings

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=RuntimeWarning, module="dataclasses_json")
            yield
    finally:
        logging.disable(previous)


class PairRMRanker:
    independent = False  # a response's score is its comparisons with the others

    def __init__(self, blender, policy_tokenizer, name: str = "pairrm", batch_size: int = 16,
                 progress: bool = True) -> None:
        self.blender = blender
        self.policy_tokenizer = policy_tokenizer
        self.name = name
        self.batch_size = batch_size
        self.progress = progress
        self.details: dict[str, Any] = {
            "dtype": str(next(blender.ranker.parameters()).dtype).removeprefix("torch."),
            "batch_size": batch_size,
            "source_maxlength": blender.ranker_config.source_maxlength,
            "candidate_maxlength": blender.ranker_config.candidate_maxlength,
        }

    def _sources(self, prompts: list[str]) -> list[str]:
        if self.policy_tokenizer is None:
            raise ConfigError("pairrm needs the policy's tokenizer for its chat template")
        return [chat_source(self.policy_tokenizer, p) for p in prompts]

    def score(self, prompts: list[str], candidates: list[list[str]]) -> list[list[float]]:
        return self.score_sources(self._sources(prompts), candidates)

    def score_pairwise(self, prompts: list[str], candidates: list[list[str]]
                       ) -> tuple[list[list[float]], list[Matrix]]:
        """Scores and P_ij = ½(σ(C_ij) + σ(−C_ji)) per prompt, from one pass over the pairs."""
        return self.pairwise_sources(self._sources(prompts), candidates)

    def pairwise_sources(self, sources: list[str], candidates: list[list[str]]
                         ) -> tuple[list[list[float]], list[Matrix]]:
        """:meth:`score_pairwise` for already-templated sources."""
        logits = self.pair_logits(sources, candidates)
        return ([_scores(c) for c in logits],
                [pairwise_probabilities(c.astype(float).tolist()) for c in logits])

    def score_sources(self, sources: list[str], candidates: list[list[str]]) -> list[list[float]]:
        """Scores for already-templated sources (what ``Blender.rank`` takes as ``inputs``)."""
        return [_scores(c) for c in self.pair_logits(sources, candidates)]

    @torch.inference_mode()
    def pair_logits(self, sources: list[str], candidates: list[list[str]]) -> list[Any]:
        """C[i, j] per prompt: PairRM's logit that candidate i beats candidate j (diagonal 0)."""
        import copy

        import numpy as np

        lb = import_llm_blender()
        ranker, cfg = self.blender.ranker, self.blender.ranker_config
        tok = ranker.tokenizer
        collate = copy.copy(self.blender.ranker_collator)
        collate.source_maxlength, collate.candidate_maxlength = cfg.source_maxlength, cfg.candidate_maxlength
        dataset = lb.blender.blender_utils.RankerDataset(sources, candidates)
        rows: list[tuple[int, int, int, torch.Tensor]] = []  # (prompt, i, j, ids)
        for p in range(len(dataset)):
            b = collate([dataset[p]])  # one prompt: the official batch-1 ids and truncation
            src, src_mask = b["source_ids"], b["source_attention_mask"]
            cand, cand_mask = b["candidate_ids"], b["candidate_attention_mask"]
            k = cand.shape[1]
            for i in range(k):
                for j in range(k):
                    if i == j:
                        continue
                    left, right = cand[:, i].clone(), cand[:, j].clone()
                    left[left == tok.cand_prefix_id] = tok.cand1_prefix_id
                    right[right == tok.cand_prefix_id] = tok.cand2_prefix_id
                    ids, mask = ranker.cat_ids(src, src_mask, left, cand_mask[:, i], right, cand_mask[:, j])
                    rows.append((p, i, j, ids[0][mask[0].bool()]))
        out = [np.zeros((len(c), len(c)), dtype=np.float32) for c in candidates]
        order = sorted(range(len(rows)), key=lambda r: len(rows[r][3]))
        device = next(ranker.parameters()).device
        pad = tok.pad_token_id
        marks = (tok.source_prefix_id, tok.cand1_prefix_id, tok.cand2_prefix_id)
        for s in tqdm(range(0, len(order), self.batch_size), desc=f"rank ({self.name})",
                      disable=not self.progress):
            batch = [rows[r] for r in order[s : s + self.batch_size]]
            width = max(len(r[3]) for r in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for n, r in enumerate(batch):
                ids[n, : len(r[3])], mask[n, : len(r[3])] = r[3], 1
            ids, mask = ids.to(device), mask.to(device)
            hidden = ranker.pretrained_model(input_ids=ids, attention_mask=mask,
                                             output_hidden_states=True).hidden_states[-1]
            encs = []
            for mark in marks:  # exactly one of each marker per sequence
                where = (ids == mark).int().argmax(-1)
                encs.append(hidden[torch.arange(len(batch), device=device), where])
            left, right, _ = ranker.reduce(*encs)
            logit = (left - right).mean(-1).float().cpu()
            for n, (p, i, j, _ids) in enumerate(batch):
                out[p][i, j] = logit[n]
        return out


def _scores(c: Any) -> list[float]:
    """A candidate's score: the row mean of C − Cᵀ (llm-blender's)."""
    return (c - c.T).mean(axis=-1).tolist()


def _check(arg: str) -> None:
    import_llm_blender()
    if arg and arg.startswith(("/", ".", "~")) and not Path(arg).expanduser().is_dir():
        raise ConfigError(f"ranker pairrm:{arg}: no such directory")


def _build(source: str = HUB_ID, device: str = "cpu", progress: bool = True,
           policy_tokenizer: str | None = None, batch_size: int | None = None, **_: object) -> Ranker:
    from harness.models import load_tokenizer, resolve_source

    tok = load_tokenizer(resolve_source(policy_tokenizer)) if policy_tokenizer else None
    name = "pairrm" if source == HUB_ID else f"pairrm:{source}"
    if batch_size is None:  # a CPU is saturated by one sequence (bench/rank_throughput.py); a GPU is not
        batch_size = 1 if str(device).startswith("cpu") else 16
    return PairRMRanker(load_blender(source, device), tok, name, batch_size, progress)


register("pairrm", check=_check, pairwise=True)(_build)
register("pairrm:", check=_check, pairwise=True)(_build)
