"""A ranker over the tiny test model, registered in every process via ``SPPO_PLUGINS=tiny_plugin``
(``TINY_MODEL_DIR`` names the model). ``TINY_RANK_CHUNK`` shrinks the ranking chunk, and
``TINY_EVAL_CHUNK`` the benchmark answer and AlpacaEval annotation chunks, so that the kill tests
can stop a run between chunks."""

import os

import harness.benchmarks.alpaca_eval
import harness.benchmarks.answers
import harness.stages.rank
from harness.models import load_model, load_tokenizer
from harness.rank import register
from harness.rank.embedded import PMIRanker


@register("tiny-pmi")
def _tiny(device: str = "cpu", progress: bool = False, **_) -> PMIRanker:
    path = os.environ["TINY_MODEL_DIR"]
    return PMIRanker(load_model(path, device=device), load_tokenizer(path), "tiny-pmi",
                     progress=False)


if os.environ.get("TINY_RANK_CHUNK"):
    harness.stages.rank.RANK_CHUNK = int(os.environ["TINY_RANK_CHUNK"])
if os.environ.get("TINY_EVAL_CHUNK"):
    harness.benchmarks.answers.CHUNK = int(os.environ["TINY_EVAL_CHUNK"])
    harness.benchmarks.alpaca_eval.ANNOTATION_CHUNK = int(os.environ["TINY_EVAL_CHUNK"])
