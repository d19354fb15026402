"""A long fuzzing campaign: random models from the grammar of tests/fuzz_grammar.py, each held to
the property of tests/fuzz_property.py (width 1.0 equals the original at batches 1-3; prefix
equivalence at the minimum and two nonuniform widths; the export equals the network). Counts
the models built, the ones torch.fx could not trace, the ones with frozen spaces, and every
failure with its op list.

    python benchmarks/fuzz.py --examples 10000 --seed 1 --json docs/results/fuzz.json
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import seed as hypothesis_seed  # noqa: E402

from fuzz_grammar import models  # noqa: E402
from fuzz_property import check_model  # noqa: E402
from usconvert.cli.common import progress  # noqa: E402
from usconvert.files import write_json_file  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-ops", type=int, default=8)
    parser.add_argument("--json", type=Path, help="write the counts here")
    args = parser.parse_args()
    counts = collections.Counter()
    productions = collections.Counter()
    failures: list[dict] = []
    start = time.perf_counter()
    bar = progress("fuzzing", counter="{task.fields[failed]} failed")
    task = bar.add_task("fuzzing", total=args.examples, failed=0)

    @hypothesis_seed(args.seed)
    @settings(max_examples=args.examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(models(max_ops=args.max_ops))
    def campaign(ops):
        counts["models"] += 1
        bar.update(task, completed=counts["models"], failed=counts["failed"])
        productions.update(op[0] for op in ops)
        try:
            net = check_model(ops)
        except Exception as exc:  # record and go on: the campaign counts every failure
            counts["failed"] += 1
            failures.append({"ops": repr(ops), "error": f"{type(exc).__name__}: {exc}"[:500],
                             "where": traceback.format_exc().splitlines()[-3:]})
            return
        if net is None:
            counts["not traceable"] += 1
            return
        counts["passed"] += 1
        frozen = [s for s in net.spaces if s.frozen_by_rule]
        counts["with frozen spaces"] += bool(frozen)
        counts["slimmable spaces"] += len(net.slimmable_spaces)

    with bar:
        campaign()
    result = {"examples": args.examples, "seed": args.seed, "max_ops": args.max_ops, **counts,
              "productions": dict(productions), "seconds": round(time.perf_counter() - start, 1),
              "failures": failures[:50]}
    print(json.dumps({k: v for k, v in result.items() if k != "failures"}, indent=2))
    for failure in failures[:10]:
        print(failure["error"], failure["ops"], sep="\n  ", file=sys.stderr)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_json_file(args.json, result)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
