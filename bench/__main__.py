"""Run the whole benchmark suite, one section per process, then write ``bench/REPORT.md``.

    python -m bench                      # every section (about 20 min on 2 CPU cores)
    python -m bench --only generation    # one section; the report uses the others' last results
    python -m bench --report-only        # re-render REPORT.md from bench/results/*.json

Run it alone on the machine: two torch processes sharing the cores slow each other down.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from bench.report import RESULTS, write_report

SECTIONS = {
    "generation": ["bench.generation"],
    "ranking": ["bench.rank_throughput", "--prompts", "1", "--no-bf16"],
    "training": ["bench.train_throughput"],
    "end_to_end": ["bench.end_to_end"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=list(SECTIONS))
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    if not args.report_only:
        for name in args.only or SECTIONS:
            print(f"[bench] {name} ...", flush=True)
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", *SECTIONS[name]])
            if done.returncode:
                sys.exit(f"[bench] {name} failed (exit {done.returncode}); earlier results are kept")
            print(f"[bench] {name}: {time.perf_counter() - start:.0f} s", flush=True)
    print(f"[bench] written {write_report(RESULTS)}")


if __name__ == "__main__":
    main()
