"""Train every network the digits experiments use (each once: the scripts share them), two
runs at a time. The experiment scripts train what is missing themselves; this runs it all up
front.

    python examples/paper/train_all.py [--seeds 0 1 2] [--jobs 2]
"""

from __future__ import annotations

from common import METHODS, Timer, arguments, run, train_all


def main() -> None:
    args = arguments(__doc__)
    timer = Timer()
    records = train_all([run(m, s) for s in args.seeds for m in METHODS], args.out, args.setting, jobs=args.jobs,
                        smoke=args.smoke)
    for item, record in records.items():
        last = record["history"][-1]
        print(f"{item.name:>24}: {record['train_seconds']:6.0f}s  top-1 {last['val_top1_max']:.1f} / "
              f"{last['val_top1_min']:.1f}")
    print(f"all runs: {timer.seconds():.0f}s")


if __name__ == "__main__":
    main()
