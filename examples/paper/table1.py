"""Table 1: one US-Net against four individually trained widths (I-Net) and a 4-switch S-Net
with private batch norm, at the S-Net's widths, on digits (top-1 error, mean ± std over seeds).

    python examples/paper/table1.py [--seeds 0 1 2] [--out docs/results] [--smoke]
"""

from __future__ import annotations

from common import (SWITCHES, TABLE1_METHODS, Timer, arguments, cell, check_same_settings, evaluate_table1_run, run,
                    train_for_evaluation, train_seconds, write_result)


def main() -> None:
    args = arguments(__doc__)
    timer = Timer()
    # the shared networks first (four widths a step): the short I-Net runs fill the parallel slots at the end
    runs = [run(m, s) for m in TABLE1_METHODS for s in args.seeds]
    records = train_for_evaluation(args, runs)
    check_same_settings(records)
    errors: dict[str, dict[float, list[float]]] = {"I-Net": {}, "S-Net": {}, "US-Net": {}}
    flops: dict[float, int] = {}
    for seed in args.seeds:
        for row in evaluate_table1_run(args, "us", seed):  # BN post-statistics
            errors["US-Net"].setdefault(float(row.width), []).append(100 - row.top1)
            flops[float(row.width)] = row.multiply_adds
        for row in evaluate_table1_run(args, "snet", seed):  # its private statistics
            errors["S-Net"].setdefault(float(row.width), []).append(100 - row.top1)
        for width in SWITCHES:
            row, = evaluate_table1_run(args, f"inet-{width:g}", seed)
            errors["I-Net"].setdefault(width, []).append(100 - row.top1)
    for method in errors:
        errors[method]["average"] = [sum(e[i] for w, e in errors[method].items()) / len(SWITCHES)
                                     for i in range(len(args.seeds))]
    lines = ["| width | multiply-adds | I-Net | S-Net | US-Net |", "|---|---|---|---|---|"]
    for width in [*SWITCHES, "average"]:
        madds = f"{flops[width] / 1e6:.2f}M" if width != "average" else f"{sum(flops.values()) / 4e6:.2f}M"
        label = f"{width:g}x" if width != "average" else "average"
        lines.append(f"| {label} | {madds} | " + " | ".join(cell(errors[m][width]) for m in errors) + " |")
    table = "\n".join(lines)
    print(table)
    write_result(args, "table1", f"Table 1: top-1 error (%) of I-Net, S-Net and US-Net on {args.data}",
                 errors={m: {str(w): v for w, v in e.items()} for m, e in errors.items()},
                 multiply_adds={str(w): v for w, v in flops.items()}, markdown=table, seconds=timer.seconds(),
                 train_seconds=train_seconds(records))


if __name__ == "__main__":
    main()
