"""``harness agreement``: how often a ranker or judge agrees with published AlpacaEval preferences."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.commands import (
    HelpFormatter,
    add_dtype_flag,
    add_environment_flags,
    apply_environment,
    emit_json,
)
from harness.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "agreement", help="how often a ranker or judge agrees with published AlpacaEval preferences",
        description="Score both outputs of each published annotation with the ranker, in the "
                    "published order and swapped; report agreement with the annotator (95%% Wilson "
                    "interval), consistency across orders and position bias.",
        formatter_class=HelpFormatter)
    p.add_argument("--ranker", required=True, help="any --ranker of `harness run`")
    p.add_argument("--annotations", nargs="+", required=True, metavar="FILE",
                   help="annotation files: paths, or mirrored ones such as "
                        "alpaca_eval/annotations/alpaca-7b.json")
    p.add_argument("--limit", type=int, default=None, help="a seeded sample of N decided pairs")
    p.add_argument("--seed", type=int, default=0, help="seed of the --limit sample")
    p.add_argument("--balanced", action="store_true",
                   help="as many pairs the annotator decided for each side (always picking one "
                        "side then scores 50%%)")
    p.add_argument("--template", default="embedded:smollm2-135m", metavar="MODEL",
                   help="tokenizer whose chat template renders prompts for rankers that use one "
                        "(pairrm)")
    add_dtype_flag(p)
    p.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")
    p.add_argument("--yes", action="store_true", help="accept a paid judge's estimated cost")
    p.add_argument("--out", type=Path, default=None, help="also write the result as JSON here")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    add_environment_flags(p)


def run(args: argparse.Namespace) -> int:
    import torch

    from harness import agreement
    from harness.provenance import package_versions
    from harness.rank import check_ranker, get_ranker

    apply_environment(args)
    if args.limit is not None and args.limit < 1:
        raise ConfigError("--limit must be at least 1")
    check_ranker(args.ranker)
    rows = [r for spec in args.annotations for r in agreement.load_annotations(spec)]
    pairs = agreement.labelled_pairs(rows, args.limit, args.seed, args.balanced)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    ranker = get_ranker(args.ranker, device=device, dtype=args.dtype, progress=not args.no_progress,
                        policy_tokenizer=args.template, yes=args.yes)
    result = {"ranker": ranker.name, **agreement.measure(ranker, pairs),
              "annotator": sorted({str(r.get("annotator")) for r in pairs}),
              "annotations": args.annotations, "limit": args.limit, "seed": args.seed,
              "balanced": args.balanced,
              "dtype": args.dtype, "ranker_details": dict(getattr(ranker, "details", {})),
              "packages": package_versions()}
    if args.out:
        from harness.artifacts import write_json

        write_json(args.out, result)
    if args.json:
        emit_json(result)
    else:
        lo, hi = result["agreement_ci95"]
        print(f"{result['ranker']}: agreement {100 * result['agreement']:.1f}% "
              f"[{100 * lo:.1f}, {100 * hi:.1f}] on n={result['n']} ({', '.join(result['annotator'])}); "
              f"swapped {100 * result['agreement_swapped']:.1f}%, consistency "
              f"{100 * result['consistency']:.1f}%, first position wins "
              f"{100 * result['first_position_wins']:.1f}%; the annotator preferred the second "
              f"output in {100 * result['judge_prefers_output_2']:.1f}% of these pairs")
    return 0
