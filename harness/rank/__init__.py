"""Rank stage: a ranker maps (prompt, K responses) to K scores, higher = better.

Rankers are named on the command line (``--ranker``):

- ``pairrm`` / ``pairrm:<dir or hub id>``: PairRM through llm-blender (:mod:`.pairrm`), the
  official SPPO ranker; batched, same scores as llm-blender's batch size 1.
- ``reward:<model>``: any Hugging Face sequence-classification reward model (:mod:`.reward_model`).
- ``judge:<judge>``: an LLM judge, pairwise or pointwise (:mod:`.judge`), any judge config.
- ``smollm-judge`` / ``smollm-pmi``: offline rankers on the embedded model (:mod:`.embedded`).

A plugin adds one with :func:`register` (see :mod:`harness.plugins`). Scores feed
:mod:`harness.probabilities`, which turns score differences into win probabilities, so a ranker's
scores should be on a log-odds scale.

A ranker that compares responses in pairs (``pairrm``, ``judge:``) also offers
:meth:`PairwiseRanker.score_pairwise`: its scores and, from the same comparisons, each prompt's
matrix P_ij = P(i ≻ j), for ``preferences.probabilities: pairwise``. It registers with
``pairwise=True`` so that :func:`check_ranker` can refuse a pointwise ranker before any work.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol

from harness.errors import ConfigError

Matrix = list[list[float]]


class Ranker(Protocol):
    name: str
    # True where a response's score does not depend on the candidates it is scored with (the
    # embedded rankers, reward models); the win-rate stage then scores the base's answers once.
    # A ranker without it is given each base answer beside the checkpoint's.
    independent: bool

    def score(self, prompts: list[str], candidates: list[list[str]]) -> list[list[float]]:
        """``scores[i][k]`` for candidate k of prompt i."""
        ...


class PairwiseRanker(Ranker, Protocol):
    def score_pairwise(self, prompts: list[str], candidates: list[list[str]]
                       ) -> tuple[list[list[float]], list[Matrix]]:
        """``score``'s scores and, per prompt, ``P[i][j]`` = P(candidate i ≻ candidate j) from the
        comparisons themselves, symmetrised (P_ij + P_ji = 1, P_ii = ½); one pass for both."""
        ...


_REGISTRY: dict[str, Callable[..., Ranker]] = {}
_CHECKS: dict[str, Callable[[str], None]] = {}
_PAIRWISE: set[str] = set()
PAIRWISE_HELP = ("probabilities: pairwise needs a ranker that compares responses in pairs (pairrm, "
                 "pairrm:<dir>, judge:<judge>); use probabilities: scores (--probabilities scores) "
                 "with this one")


def register(name: str, check: Callable[[str], None] | None = None, pairwise: bool = False
             ) -> Callable[[Callable[..., Ranker]], Callable[..., Ranker]]:
    """Register a ranker factory. A name ending in ``:`` takes an argument (``reward:<model>``);
    ``check(argument)`` runs before any work to fail early on what cannot work; ``pairwise``: its
    rankers implement :meth:`PairwiseRanker.score_pairwise`."""
    def deco(factory: Callable[..., Ranker]) -> Callable[..., Ranker]:
        _REGISTRY[name] = factory
        if check:
            _CHECKS[name] = check
        if pairwise:
            _PAIRWISE.add(name)
        return factory

    return deco


# The built-in rankers' modules: each registers its rankers when imported, which happens when a
# ranker is first looked up (so that importing this package loads no model code).
BUILTIN = ("harness.rank.embedded", "harness.rank.judge", "harness.rank.pairrm", "harness.rank.reward_model")


def _lookup(name: str) -> tuple[str, str | None]:
    for module in BUILTIN:
        importlib.import_module(module)
    if name in _REGISTRY:
        return name, None
    prefix, sep, arg = name.partition(":")
    if sep and f"{prefix}:" in _REGISTRY:
        if not arg:
            raise ConfigError(f"ranker {name!r}: give what follows '{prefix}:'")
        return f"{prefix}:", arg
    known = ", ".join(sorted(k + ("<…>" if k.endswith(":") else "") for k in _REGISTRY))
    raise ConfigError(f"unknown ranker {name!r}; available: {known}")


def check_ranker(name: str, pairwise: bool = False) -> None:
    """Fail early, before any work, on a ranker that cannot be built, or (``pairwise``) that
    cannot give pairwise probabilities."""
    key, arg = _lookup(name)
    if pairwise and key not in _PAIRWISE:
        raise ConfigError(f"ranker {name!r} is pointwise only (it scores each response on its "
                          f"own); {PAIRWISE_HELP}")
    if key in _CHECKS:
        _CHECKS[key](arg or "")


def score_pairwise(ranker: Ranker, prompts: list[str], candidates: list[list[str]]
                   ) -> tuple[list[list[float]], list[Matrix]]:
    """The ranker's scores and pairwise probability matrices (:class:`PairwiseRanker`)."""
    method = getattr(ranker, "score_pairwise", None)
    if method is None:
        raise ConfigError(f"ranker {ranker.name!r} is pointwise only; {PAIRWISE_HELP}")
    return method(prompts, candidates)


def get_ranker(name: str, **kwargs: Any) -> Ranker:
    """Build a ranker. Keyword arguments every factory accepts: ``device``, ``dtype``,
    ``progress`` and ``policy_tokenizer`` (the policy's tokenizer, for chat templates)."""
    key, arg = _lookup(name)
    return _REGISTRY[key](arg, **kwargs) if arg is not None else _REGISTRY[key](**kwargs)


def split_flat(flat: list[float], candidates: list[list[str]]) -> list[list[float]]:
    """Cut a flat list of per-candidate scores back into one list per prompt."""
    out, i = [], 0
    for cands in candidates:
        out.append(flat[i : i + len(cands)])
        i += len(cands)
    return out

