"""Benchmarks run on every checkpoint, each through its official tool: ``alpaca_eval``.

A benchmark writes ``iter-<t>/eval/<name>/results.json``: ``{benchmark, version, metrics,
provenance}``, and keeps its intermediate files (answers, judgments) beside it for resumption.
"""
