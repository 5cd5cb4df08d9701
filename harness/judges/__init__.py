"""Judges used by benchmarks: a model that reads a judging prompt and returns a verdict.

``local``: any transformers chat model in-process (the embedded model by default on CPU), giving
log-probability verdicts. OpenAI-compatible endpoints are reached through each benchmark's own
official client code (e.g. alpaca_eval's annotators).
"""
