"""Table 3: batch-norm post-statistics from 128, 512 and all training images, exact
(cumulative, Eq. 8) against moving averages (Eq. 5, momentum 0.1), on the trained US-Nets:
top-1 error, mean ± std over seeds.

    python examples/paper/table3.py [--seeds 0 1 2] [--data digits] [--out docs/results] [--smoke]
"""

from __future__ import annotations

from common import (SWITCHES, Timer, add_errors, arguments, error_table, evaluate_run, run, train_for_evaluation,
                    write_result)

from usconvert.data import DataConfig, load_data

SAMPLES = {"128": 128, "512": 512, "all": None}  # None: every training image


def main() -> None:
    args = arguments(__doc__)
    timer = Timer()
    train_for_evaluation(args, [run("us", s) for s in args.seeds])
    data = args.setting.dataset
    training_images = len(load_data(data.spec, data.input_size, DataConfig(), num_classes=10).calibration)
    widths = sorted(SWITCHES)
    errors: dict[str, dict[str, list[float]]] = {}
    for mode in ("moving", "exact"):
        for label, samples in SAMPLES.items():
            for seed in args.seeds:
                count = samples or training_images
                key = f"{mode}, {label}" if samples else f"{mode}, {label} ({count})"
                errors.setdefault(key, {f"{w:g}": [] for w in widths})
                add_errors(errors[key], evaluate_run(args, run("us", seed), widths, mode=mode, seed=seed,
                                                     calibrate_samples=min(count, 64) if args.smoke else count))
    table = error_table("statistics", errors, widths)
    print(table)
    write_result(args, "table3", f"Table 3: BN post-statistics, top-1 error (%) on {args.data}", errors=errors,
                 markdown=table, seconds=timer.seconds())


if __name__ == "__main__":
    main()
