"""Training in N processes through ``accelerate launch`` (DDP, DeepSpeed or FSDP by its config).

The harness stays one process; a training stage with ``--launcher accelerate`` writes its
:class:`TrainRequest` to ``train_request.json`` beside the checkpoint and runs
``accelerate launch ... -m trainers.launch REQUEST RESULT``, whose processes all call the same
backend; the main one writes the :class:`TrainResult`.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

from harness import distributed
from harness.artifacts import write_json
from harness.plugins import load_plugins
from trainers.base import TrainRequest, TrainResult, get_trainer


def run(trainer: str, request: TrainRequest, processes: int,
        config: str | None = None) -> TrainResult:
    """Run one training under ``accelerate launch``; raises if any process fails."""
    get_trainer(trainer)  # unknown names and impossible configs fail here, not in N processes
    distributed.accelerate_config(config, request.device)
    # Fixed names beside the checkpoint, so other nodes of a multi-node launch can find them.
    work = request.output_dir.parent
    result = distributed.run_module(
        "trainers.launch", {"trainer": trainer, "request": request.to_dict()},
        work / "train_request.json", work / "train_result.json", processes, config,
        what=f"training with the {trainer!r} backend", dtype=request.config.dtype)
    return TrainResult.from_dict(result)


def main(argv: list[str] | None = None) -> None:
    req_path, out_path = (argv if argv is not None else sys.argv[1:])
    # DeepSpeed (0.19) calls these at every ZeRO-3 step; torch warns each time, per process
    warnings.filterwarnings("ignore", category=FutureWarning,
                            message=r"`torch\.distributed\.(all_gather_into_tensor|reduce_scatter_tensor)`")
    load_plugins()
    spec = json.loads(Path(req_path).read_text())
    result = get_trainer(spec["trainer"]).train(TrainRequest.from_dict(spec["request"]))
    from accelerate import PartialState

    if PartialState().is_main_process:
        write_json(Path(out_path), result.as_dict())
    distributed.close()


if __name__ == "__main__":
    main()
    distributed.exit_launched()
