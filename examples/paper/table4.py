"""Table 4: output averaging. A US-Net whose convolution and linear layers average their output
over the active input channels (``train --output-averaging``; depthwise layers never), against
the default, at the S-Net's widths after BN calibration: top-1 error, mean ± std over seeds.

    python examples/paper/table4.py [--seeds 0 1 2] [--data digits] [--out docs/results] [--smoke]
"""

from __future__ import annotations

from common import SWITCHES, Timer, add_errors, arguments, error_table, spectra, write_result

VARIANTS = {"US-MobileNetV2": "us", "US-MobileNetV2 + output averaging": "us-output-averaging"}


def main() -> None:
    args = arguments(__doc__)
    timer = Timer()
    # the S-Net's widths, from 0.25
    _, rows, run_seconds = spectra(args, VARIANTS, step=0.25, also=("output_averaging",))
    widths = sorted(SWITCHES)
    errors: dict[str, dict[str, list[float]]] = {}
    for label, per_seed in zip(VARIANTS, rows):
        for seed_rows in per_seed:
            add_errors(errors.setdefault(label, {f"{w:g}": [] for w in widths}), seed_rows)
    table = error_table("network", errors, widths)
    print(table)
    write_result(args, "table4", f"Table 4: output averaging, top-1 error (%) on {args.data}", errors=errors,
                 markdown=table, seconds=timer.seconds(), train_seconds=run_seconds)


if __name__ == "__main__":
    main()
