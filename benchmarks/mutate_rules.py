"""Mutation run over the channel rules: each rule of the graph pass, weakened to pass its input
through (no ties, no freezing) and to freeze everything, must fail at least one test of the
rule suites. Prints and writes the surviving mutants.

    python benchmarks/mutate_rules.py --jobs 2 --json docs/results/mutation.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from mutation import rule_names  # noqa: E402
from usconvert.files import write_json_file  # noqa: E402

# quick and targeted suites first: a killed mutant stops at its first failing test (-x)
SUITES = ["tests/test_rules.py", "tests/test_transformer_rules.py", "tests/test_recurrent_rules.py",
          "tests/test_exactness.py", "tests/test_spaces.py", "tests/test_weight_norm.py", "tests/test_timm_layers.py",
          "tests/test_fuzz.py"]
KINDS = ("pass_through", "freeze_all")


def run(spec: str, threads: int) -> tuple[str, bool, float]:
    start = time.perf_counter()
    env = {**os.environ, "USCONVERT_MUTANT": spec, "OMP_NUM_THREADS": str(threads)}
    result = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *SUITES],
                            cwd=ROOT, env=env, capture_output=True, text=True)
    return spec, result.returncode != 0, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--rules", nargs="*", help="only these rules (default: all)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    specs = [f"{name}:{kind}" for name in (args.rules or rule_names()) for kind in KINDS]
    start = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        results = []
        # one share of the cores per job: torch's default of every core per process oversubscribes them
        threads = max(1, (os.cpu_count() or 1) // args.jobs)
        for spec, killed, seconds in pool.map(lambda spec: run(spec, threads), specs):
            print(f"{'killed  ' if killed else 'SURVIVED'} {spec} ({seconds:.0f} s)", flush=True)
            results.append({"mutant": spec, "killed": killed, "seconds": round(seconds, 1)})
    survivors = [r["mutant"] for r in results if not r["killed"]]
    summary = {"mutants": len(results), "killed": len(results) - len(survivors), "survivors": survivors,
               "suites": SUITES, "seconds": round(time.perf_counter() - start)}
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_json_file(args.json, {**summary, "results": results})


if __name__ == "__main__":
    main()
