"""A ranker over the tiny test model, registered in every process via ``SPPO_PLUGINS=tiny_plugin``
(``TINY_MODEL_DIR`` names the model)."""

import os

from harness.models import load_model, load_tokenizer
from harness.rank import register
from harness.rank.embedded import PMIRanker


@register("tiny-pmi")
def _tiny(device: str = "cpu", progress: bool = False, **_) -> PMIRanker:
    path = os.environ["TINY_MODEL_DIR"]
    return PMIRanker(load_model(path, device=device), load_tokenizer(path), "tiny-pmi",
                     progress=False)
