"""Table 2: width sampling rules (sandwich, random, min + random, max + random), n = 4, top-1
error after BN calibration, mean ± std over seeds. As in the paper, no rule uses
inplace distillation (random and min + random have no full width to distil from), so the rows
differ in the rule only; the script checks it.

    python examples/paper/table2.py [--seeds 0 1 2] [--data digits] [--out docs/results] [--smoke] [--recompute]
"""

from __future__ import annotations

from common import (SWITCHES, Timer, add_errors, arguments, check_same_settings, error_table, evaluate_run, run,
                    train_for_evaluation, train_seconds, write_result)

RULES = {"sandwich": "us-no-distill", "random": "us-random", "min + random": "us-min-random",
         "max + random": "us-max-random"}


def main() -> None:
    args = arguments(__doc__)
    timer = Timer()
    records = train_for_evaluation(args, [run(m, s) for s in args.seeds for m in RULES.values()])
    check_same_settings(records)
    assert all(record["config"]["inplace_distill"] is False for record in records.values())
    widths = sorted(SWITCHES)
    errors: dict[str, dict[str, list[float]]] = {}
    for rule, method in RULES.items():
        errors[rule] = {f"{w:g}": [] for w in widths}
        for seed in args.seeds:
            add_errors(errors[rule], evaluate_run(args, run(method, seed), widths,
                                                  calibrate_samples=128 if args.smoke else 1024))
    table = error_table("sampling rule", errors, widths)
    print(table)
    write_result(args, "table2", f"Table 2: sampling rules, top-1 error (%) on {args.data}", errors=errors,
                 markdown=table, seconds=timer.seconds(),
                 train_seconds=train_seconds(records))


if __name__ == "__main__":
    main()
