"""``judge:<judge>`` and ``judge-single:<judge>``: an LLM judge as ranker, through any judge client.

Prompts are MT-Bench's official judge prompts, read from FastChat's ``judge_prompts.jsonl``:

- ``judge:`` (pairwise, ``pair-v2``): every ordered pair (i, j) of the K responses is judged, i as
  assistant A. The game's value C[i, j] is the log-odds of "[[A]]" against "[[B]]" at the verdict
  token when the judge returns log-probabilities there, else ±log(19) for a stated winner
  ("[[C]]" = 0); scores are the row means of C − Cᵀ, as PairRM's, so position bias cancels. For
  ``probabilities: pairwise`` the same games give P_ij = ½(σ(C_ij) + σ(−C_ji)), a tie or an
  unparseable verdict counting C = 0, i.e. ½ (:meth:`JudgeRanker.score_pairwise`).
- ``judge-single:`` (pointwise, ``single-v1``): each response is rated 1–10 on its own; the score is
  the rating, parsed as FastChat does (``[[x]]``, then ``[x]``).

Verdicts that do not parse count as a tie (pairwise) or as the mean rating of the prompt's other
responses (pointwise); how many is kept in :attr:`details` and printed. Judgments are cached
(:mod:`harness.judges.cache`); a paid judge asks for ``--yes`` first (:mod:`harness.judges.cost`).
"""

from __future__ import annotations

import math
import re
import sys
from typing import Any

from harness.benchmarks.mt_bench import judge_prompt, parse_rating
from harness.errors import ConfigError
from harness.judges.base import Decoding, JudgeRequest, Judgment
from harness.judges.cache import JudgmentCache, judge_cached
from harness.judges.config import JudgeConfig, check_judge, load_judge_config
from harness.judges.cost import confirm, estimate
from harness.judges.factory import get_judge
from harness.probabilities import pairwise_probabilities
from harness.rank import PAIRWISE_HELP, Matrix, Ranker, register

DECISIVE = math.log(19.0)  # a stated winner without log-probabilities: p = 0.95


def pair_value(j: Judgment) -> float | None:
    """Log-odds that assistant A won one game, or None when the verdict does not parse."""
    soft = _verdict_logodds(j)
    if soft is not None:
        return soft
    if "[[A]]" in j.text:  # FastChat's order of checks
        return DECISIVE
    if "[[B]]" in j.text:
        return -DECISIVE
    if "[[C]]" in j.text:
        return 0.0
    return None


def _verdict_logodds(j: Judgment) -> float | None:
    """log p(A) − log p(B) at the verdict letter of the last "[[X]]", from the returned tokens."""
    if not j.top_logprobs:
        return None
    chosen = "".join(row[0][0] for row in j.top_logprobs)
    if chosen != j.text and chosen.strip() != j.text.strip():
        return None  # tokens do not spell the text (e.g. stripped); no position to read
    found = list(re.finditer(r"\[\[([ABC])\]\]", chosen))
    if not found:
        return None
    m = found[-1]
    pos, at = m.start(1), 0
    for row in j.top_logprobs:
        token = row[0][0]
        if at <= pos < at + len(token):
            if token.strip() != m.group(1):
                return None  # the letter shares a token with other text
            alts = {t.strip(): lp for t, lp in row}
            if "A" in alts and "B" in alts:
                return alts["A"] - alts["B"]
            return None
        at += len(token)
    return None


class JudgeRanker:
    independent = False  # pairwise games; pointwise, an unparseable rating takes the others' mean

    def __init__(self, judge, cfg: JudgeConfig, spec: str, pairwise: bool = True, yes: bool = False,
                 progress: bool = True, cache: JudgmentCache | None = None) -> None:
        self.judge, self.cfg, self.pairwise = judge, cfg, pairwise
        self.name = f"{'judge' if pairwise else 'judge-single'}:{spec}"
        self.yes, self.progress = yes, progress
        self.cache = cache if cache is not None else JudgmentCache.for_judge(judge.id)
        self.prompt = judge_prompt("pair-v2" if pairwise else "single-v1")
        self.decoding = Decoding(cfg.temperature, cfg.max_tokens, cfg.logprobs, cfg.top_logprobs)
        self.details: dict[str, Any] = {"judge": judge.id, "prompt": self.prompt["name"]}

    def _request(self, rid: str, **fields: str) -> JudgeRequest:
        messages = ({"role": "system", "content": self.prompt["system_prompt"]},
                    {"role": "user", "content": self.prompt["prompt_template"].format(**fields)})
        return JudgeRequest(rid, messages, self.decoding)

    def requests(self, prompts: list[str], candidates: list[list[str]]) -> list[JudgeRequest]:
        reqs = []
        for n, (q, cands) in enumerate(zip(prompts, candidates, strict=True)):
            for i, a in enumerate(cands):
                if not self.pairwise:
                    reqs.append(self._request(f"{n}/{i}", question=q, answer=a))
                    continue
                for j, b in enumerate(cands):
                    if i != j:
                        reqs.append(self._request(f"{n}/{i}-{j}", question=q, answer_a=a, answer_b=b))
        return reqs

    def _judge(self, prompts: list[str], candidates: list[list[str]]) -> dict[str, Judgment]:
        reqs = self.requests(prompts, candidates)
        confirm(estimate(self.cfg, self.judge.id, reqs, self.cache), self.cfg, self.yes)
        batch = judge_cached(self.judge, reqs, self.cache, self.progress)
        batch.raise_failures(f"ranker {self.name}")
        return batch.judgments

    def _games(self, got: dict[str, Judgment], candidates: list[list[str]]) -> tuple[list[Matrix], int]:
        """Per prompt the game values C[i][j] (an unparseable verdict counts 0), and how many
        verdicts did not parse."""
        bad, out = 0, []
        for n, cands in enumerate(candidates):
            k = len(cands)
            c = [[0.0] * k for _ in range(k)]
            for i in range(k):
                for j in range(k):
                    if i != j:
                        v = pair_value(got[f"{n}/{i}-{j}"])
                        bad += v is None
                        c[i][j] = v or 0.0
            out.append(c)
        return out, bad

    def _ratings(self, got: dict[str, Judgment], candidates: list[list[str]]
                 ) -> tuple[list[list[float]], int]:
        """Per prompt the ratings (an unparseable one: the mean of the others), and how many
        verdicts did not parse."""
        bad, out = 0, []
        for n, cands in enumerate(candidates):
            ratings = [parse_rating(got[f"{n}/{i}"].text) for i in range(len(cands))]
            known = [r for r in ratings if r != -1]
            fill = sum(known) / len(known) if known else 0.0
            bad += len(ratings) - len(known)
            out.append([fill if r == -1 else r for r in ratings])
        return out, bad

    def _count(self, judgments: int, bad: int) -> None:
        for key, n in (("judgments", judgments), ("unparseable", bad)):  # summed over calls
            self.details[key] = self.details.get(key, 0) + n
        if bad:
            print(f"{self.name}: {bad} of {judgments} verdicts did not parse (counted as "
                  f"{'ties' if self.pairwise else 'the mean rating'})", file=sys.stderr)

    def score(self, prompts: list[str], candidates: list[list[str]]) -> list[list[float]]:
        if self.pairwise:
            return self.score_pairwise(prompts, candidates)[0]
        got = self._judge(prompts, candidates)
        out, bad = self._ratings(got, candidates)
        self._count(len(got), bad)
        return out

    def score_pairwise(self, prompts: list[str], candidates: list[list[str]]
                       ) -> tuple[list[list[float]], list[Matrix]]:
        """Scores (row means of C − Cᵀ) and P_ij = ½(σ(C_ij) + σ(−C_ji)) from the same games."""
        if not self.pairwise:
            raise ConfigError(f"ranker {self.name!r} is pointwise only (it rates each response "
                              f"on its own); {PAIRWISE_HELP}")
        got = self._judge(prompts, candidates)
        games, bad = self._games(got, candidates)
        self._count(len(got), bad)
        scores = [[sum(c[i][j] - c[j][i] for j in range(len(c))) / len(c) for i in range(len(c))]
                  for c in games]
        return scores, [pairwise_probabilities(c) for c in games]


def _builder(pairwise: bool):
    def build(spec: str, device: str | None = None, progress: bool = True, yes: bool = False,
              **_: object) -> Ranker:
        cfg = load_judge_config(spec)
        return JudgeRanker(get_judge(cfg, device), cfg, spec, pairwise, yes, progress)

    return build


register("judge:", check=check_judge, pairwise=True)(_builder(True))
register("judge-single:", check=check_judge)(_builder(False))
