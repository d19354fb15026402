"""Validation curves of every digits network: top-1 after each epoch at the largest and the
smallest width it trains (below width 1.0 with batch-norm statistics recomputed from 512
training images before each validation), mean over seeds, from the training logs. They show
whether the budget let each method converge.

    python examples/paper/curves.py [--out docs/results]
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from common import METHODS, arguments, mean_curves, record_path, run, save_figure, write_result

# rules that never train width 1.0: its statistics are never tracked, and validation (which
# recalibrates only the smaller widths) reads chance there; their tables calibrate every width
NO_FULL_WIDTH = {"us-random", "us-min-random"}
PANELS = {"Table 1 (and Figures 6, 11)": ["us", "snet", "inet-1", "inet-0.75", "inet-0.5", "inet-0.25"],
          "Table 2 and Figure 6 (no distillation)": ["us-no-distill", "us-random", "us-min-random", "us-max-random"],
          "from a trained model": ["pretrained-inplace", "pretrained-teacher", "us-40-epochs"],
          "ViT (issue 19)": ["vit-us", "vit-us-60-epochs", "vit-inet-1", "vit-inet-0.25"],
          "Figures 7 to 10 and Table 4 (ablations)": ["us-k0-0.35", "us-k0-0.05", "us-d1", "us-n3", "us-n5",
                                                      "us-output-averaging", "us-nonuniform-40-epochs"]}


def main() -> None:
    args = arguments(__doc__)
    curves: dict[str, dict[str, list[float]]] = {}
    for method in METHODS:
        # finished runs (with a record) only, and not the logs kept of earlier trainings
        # (``us-seed0.first-training.log.jsonl``)
        seeds = [re.fullmatch(rf"{re.escape(method)}-seed(\d+)\.log\.jsonl", path.name)
                 for path in sorted((args.out / "nets").glob(f"{method}-seed*.log.jsonl"))]
        logs = [args.out / "nets" / seed.group(0) for seed in seeds
                if seed and record_path(args.out, run(method, int(seed.group(1)))).is_file()]
        histories = [[json.loads(line) for line in path.read_text().splitlines() if line.strip()] for path in logs]
        histories = [h for h in histories if h]
        if not histories:
            continue
        curves[method] = mean_curves(histories, ("val_top1_max", "val_top1_min", "loss_largest"))
        curves[method]["seeds"] = [len(histories)]
        print(f"{method:>20}: top-1 at the largest / smallest width, last 5 epochs: "
              + ", ".join(f"{a:.1f}/{b:.1f}" for a, b in zip(curves[method]["val_top1_max"][-5:],
                                                            curves[method]["val_top1_min"][-5:])))
    _plot(curves, args.out / "curves.png")
    write_result(args, "curves", "validation top-1 (%) per epoch, mean over seeds", curves=curves)


def _drawn(method: str) -> tuple[str, ...]:
    """The curves a method's lines show: a rule that never trains 1.0x reads chance there."""
    return ("val_top1_min",) if method in NO_FULL_WIDTH else ("val_top1_max", "val_top1_min")


def _plot(curves: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {title: [m for m in methods if m in curves] for title, methods in PANELS.items()}
    panels = {title: methods for title, methods in panels.items() if methods}
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), dpi=110, sharey=True, squeeze=False)
    # from 5 points under the lowest top-1 of the lines drawn after the first quarter of training (digits: 80)
    later = [v for methods in panels.values() for m in methods for key in _drawn(m)
             for v in curves[m][key][len(curves[m][key]) // 4:]]
    bottom = min(80.0, 5 * (min(later) // 5) - 5)
    for axis, (title, methods) in zip(axes[0], panels.items()):
        for method in methods:
            line = None
            if "val_top1_max" in _drawn(method):
                line, = axis.plot(range(1, len(curves[method]["val_top1_max"]) + 1), curves[method]["val_top1_max"],
                                  label=f"{method} (largest)")
            if line is None or curves[method]["val_top1_min"] != curves[method]["val_top1_max"]:
                axis.plot(range(1, len(curves[method]["val_top1_min"]) + 1), curves[method]["val_top1_min"], "--",
                          color=line.get_color() if line is not None else None, label=f"{method} (smallest)")
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("epoch")
        axis.set_ylim(bottom, 100)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=6, loc="lower right")
    axes[0][0].set_ylabel("validation top-1 (%)")
    save_figure(figure, path)


if __name__ == "__main__":
    main()
