"""The stages of one SPPO iteration, one module each: ``generate``, ``rank``, ``probabilities``,
``train`` and the in-loop ``heldout`` evaluation. Each ``run_stage(run, t, ...)`` takes the run
(:class:`harness.pipeline.SPPORun`) as its context and returns what ``run.json`` records of it;
the benchmarks' stages come from :mod:`harness.benchmarks`."""
