"""Converting a trained model: an ordinary network trained at width 1.0 (the I-Net 1.0x, standing
for a pretrained model) made universally slimmable, against a US-Net trained from scratch with as
many epochs in all, and individually trained networks. Top-1 error on digits at the S-Net's
widths after BN calibration, mean ± std over seeds; and the drift at width 1.0 against the
original.

    python examples/paper/pretrained.py [--seeds 0 1 2] [--out docs/results] [--smoke]

Rows: the trained network converted and calibrated as it is; with its channels sorted by
importance (l1); sorted and fine-tuned as a US-Net for 10 epochs with inplace distillation;
the same with the original network as a frozen teacher (``train --teacher original``); a
US-Net from scratch for 40 epochs (the 30 of the original plus the 10 of fine-tuning);
individually trained networks (30 epochs each).
"""

from __future__ import annotations

from common import (SWITCHES, Timer, add_errors, arguments, check_same_settings, error_table, evaluate, network_path,
                    run, train_all, train_seconds, write_result)

import usconvert
from usconvert.sorting import sort_channels

FINE_TUNED = {"sorted, fine-tuned with inplace distillation": "pretrained-inplace",
              "sorted, fine-tuned with the original as teacher": "pretrained-teacher"}


def main() -> None:
    args = arguments(__doc__)
    timer = Timer()
    samples = 128 if args.smoke else 1024
    originals = train_all([run("inet-1", s) for s in args.seeds], args.out, args.setting, jobs=args.jobs,
                          smoke=args.smoke)
    tuned = train_all([run(m, s) for s in args.seeds for m in FINE_TUNED.values()], args.out, args.setting,
                      jobs=args.jobs, smoke=args.smoke)
    check_same_settings(tuned)  # the two fine-tunings differ in the teacher only
    others = train_all([run(m, s) for s in args.seeds for m in ("us-40-epochs", *[f"inet-{w:g}" for w in SWITCHES])],
                       args.out, args.setting, jobs=args.jobs, smoke=args.smoke)
    widths = sorted(SWITCHES)
    errors: dict[str, dict[str, list[float]]] = {}
    drift: dict[str, list[float]] = {}

    def row(label: str, net: usconvert.SlimmableNet, original_error: float) -> None:
        rows = evaluate(net, widths, setting=args.setting, calibrate_samples=samples)
        add_errors(errors.setdefault(label, {f"{w:g}": [] for w in widths}), rows)
        drift.setdefault(label, []).append(100 - rows[-1].top1 - original_error)

    for seed in args.seeds:
        path = network_path(args.out, run("inet-1", seed))
        original = evaluate(usconvert.load(path), [1.0], setting=args.setting, calibrate_samples=None)
        original_error = 100 - original[0].top1
        row("converted as it is", usconvert.load(path), original_error)
        net = usconvert.load(path)
        sort_channels(net, "l1")
        row("channels sorted (l1)", net, original_error)
        for label, method in FINE_TUNED.items():
            row(label, usconvert.load(network_path(args.out, run(method, seed))), original_error)
        row("US-Net from scratch, 40 epochs", usconvert.load(network_path(args.out, run("us-40-epochs", seed))),
            original_error)
        individual = errors.setdefault("individually trained (one network per width)",
                                       {f"{w:g}": [] for w in widths})
        per_seed = []
        for width in widths:
            inet = usconvert.load(network_path(args.out, run(f"inet-{width:g}", seed)))
            error = 100 - evaluate(inet, [width], setting=args.setting, calibrate_samples=None)[0].top1
            individual[f"{width:g}"].append(error)
            per_seed.append(error)
        individual.setdefault("average", []).append(sum(per_seed) / len(per_seed))
    table = error_table("network", errors, widths)
    print(table)
    records = {**originals, **tuned, **others}
    write_result(args, "pretrained", f"Converting a trained model: top-1 error (%) on {args.data}", errors=errors,
                 markdown=table, drift_at_full_width=drift, seconds=timer.seconds(),
                 train_seconds=train_seconds(records))


if __name__ == "__main__":
    main()
