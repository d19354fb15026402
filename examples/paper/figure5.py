"""Figure 5: deep reinforcement learning. An actor-critic without batch norm, converted to a
US-Net and trained with PPO and inplace distillation (roll-outs by its largest width), against
the same network trained alone at each width (I-Net), on a MinAtar game (Breakout by default,
the paper's game in MinAtar's 10x10 form). Curves: the mean return of evaluation episodes at
each width through training; table: the mean over the last quarter of training. The setting and
the loop are in ``rl.py``. A finished run is not trained again, also when only its record
(``<out>/rl/<run>.json``, committed; the networks are not) is left. The table adds, per width,
each seed's US-Net minus I-Net and how much each run still gained over its last quarter (its
mean less the third quarter's): the measure of whether the budget was long enough. Another
budget (``--frames``) needs its own ``--out``: a run recorded there with other settings stops
the script before anything is trained.

    python examples/paper/figure5.py [--seeds 0 1] [--frames 1000000] [--game breakout]
                                     [--device auto] [--jobs 2] [--out docs/results] [--smoke]
                                     [--methods us inet-1 ...]  (train only these runs: one process
                                     per core, each on other runs)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from common import DEFAULT_OUT, SWITCHES, Timer, cell, mean_std, save_figure, write_result
from rl import Method, PPOConfig, check_recorded_settings, kept_record, train


METHODS = [Method("us", None, tuple(SWITCHES)), *(Method(f"inet-{w:g}", (w,), (w,)) for w in SWITCHES)]
SMOKE = dict(frames=3 * 8 * 16, steps=16, eval_every=8 * 16, eval_max_steps=50)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--frames", type=int, default=PPOConfig.frames, help="frames of play per run")
    parser.add_argument("--game", default=PPOConfig.game, help="a MinAtar game")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to train (auto: CUDA when present)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results (JSON, PNG); runs in <out>/rl")
    parser.add_argument("--jobs", type=int, default=2, help="training runs in parallel (one thread each)")
    parser.add_argument("--methods", nargs="+", choices=[m.name for m in METHODS], default=None,
                        help="train only these runs and stop (default: all, then the figure)")
    parser.add_argument("--smoke", action="store_true", help="a few updates per run, for CI: meaningless numbers")
    args = parser.parse_args()
    if args.smoke:
        args.seeds = args.seeds[:1]
    config = PPOConfig(**{"game": args.game, "frames": args.frames, "device": args.device,
                          **(SMOKE if args.smoke else {})})
    timer = Timer()
    runs = args.out / "rl"
    runs.mkdir(parents=True, exist_ok=True)
    items = [(m, s, runs / f"{args.game}-{m.name}-seed{s}.safetensors") for s in args.seeds for m in METHODS
             if args.methods is None or m.name in args.methods]
    for _, _, path in items:
        check_recorded_settings(path, config)
    kept = [kept_record(path, config) for _, _, path in items]
    missing = [item for item, record in zip(items, kept) if record is None]
    threads = max(1, len(os.sched_getaffinity(0)) // max(1, args.jobs))
    if args.jobs <= 1:
        trained = [train(m, config, s, path, threads=threads) for m, s, path in missing]
    else:
        with ProcessPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(train, m, config, s, path, threads=threads) for m, s, path in missing]
            trained = [f.result() for f in futures]
    records = [record if record is not None else trained.pop(0) for record in kept]
    for record in records:  # rows that are compared differ only in the method
        assert record["config"] == dataclasses.asdict(config), record["run"]
    if args.methods is not None:
        return

    # the curves of one method at one width, per seed: [(frames, mean return)]
    curves: dict[str, dict[str, list[list[tuple[int, float]]]]] = {}
    for record in records:
        label = "US-Net" if record["method"]["train_widths"] is None else "I-Net"
        for width in record["method"]["eval_widths"]:
            points = [(c["frames"], c["returns"][f"{width:g}"]) for c in record["curves"]]
            curves.setdefault(label, {}).setdefault(f"{width:g}", []).append(points)
    final = {label: {w: [_quarter(points, 4) for points in per_seed] for w, per_seed in by_width.items()}
             for label, by_width in curves.items()}
    # how far each run still climbed over its last quarter: a converged run gains about nothing
    gains = {label: {w: [_quarter(points, 4) - _quarter(points, 3) for points in per_seed]
                     for w, per_seed in by_width.items()} for label, by_width in curves.items()}
    widths = [f"{w:g}" for w in SWITCHES]
    seeds = " / ".join(str(s) for s in args.seeds)
    lines = [f"| width | I-Net | US-Net | US-Net − I-Net, seeds {seeds} | gain in the last quarter, I-Net; US-Net |",
             "|---|---|---|---|---|"]
    lines += [f"| {w}x | {cell(final['I-Net'][w])} | {cell(final['US-Net'][w])} | {_per_seed(final, w)} | "
              f"{_signed(gains['I-Net'][w])}; {_signed(gains['US-Net'][w])} |" for w in widths]
    table = "\n".join(lines)
    print(table)
    _plot(curves, args.out / "figure5.png", f"PPO on MinAtar {args.game}: mean return of evaluation episodes")
    write_result(args, "figure5", "Figure 5: actor-critic PPO, US-Net (inplace distillation, roll-outs by width 1.0) "
                 "against I-Nets; mean return of evaluation episodes over the last quarter of training",
                 game=args.game, config=dataclasses.asdict(config), curves=curves, last_quarter=final,
                 last_quarter_gain=gains, markdown=table,
                 train_seconds={r["run"]: round(r["seconds"], 1) for r in records}, seconds=timer.seconds())


def _quarter(points: list[tuple[int, float]], quarter: int) -> float:
    """The mean return of the evaluations in one quarter (1 to 4) of the run's frames."""
    last = points[-1][0] if points else 0
    inside = [r for frames, r in points if (quarter - 1) * last < 4 * frames <= quarter * last]
    return statistics.fmean(inside) if inside else float("nan")


def _per_seed(final: dict[str, dict[str, list[float]]], width: str) -> str:
    return _signed([us - inet for us, inet in zip(final["US-Net"][width], final["I-Net"][width])])


def _signed(values: list[float]) -> str:
    return " / ".join(f"{v:+.1f}".replace("-", "−") for v in values)


def _plot(curves: dict[str, dict[str, list[list[tuple[int, float]]]]], path: Path, title: str) -> None:
    """The paper's layout: I-Nets, the US-Net at the same widths, and both at each width (mean
    over seeds, not smoothed; with more than one seed, a band of one standard deviation)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=120, sharey=True)
    for ax, label in zip(axes, ("I-Net", "US-Net")):
        for width, per_seed in curves[label].items():
            frames = [f for f, _ in per_seed[0]]
            mean, spread = zip(*(mean_std([seed[i][1] for seed in per_seed]) for i in range(len(frames))))
            millions = [f / 1e6 for f in frames]
            line, = ax.plot(millions, mean, label=f"{width}x")
            if len(per_seed) > 1:
                ax.fill_between(millions, [m - d for m, d in zip(mean, spread)], [m + d for m, d in zip(mean, spread)],
                                color=line.get_color(), alpha=0.15, linewidth=0)
        ax.set_title(label)
        ax.set_xlabel("frames (millions)")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left")
    axes[0].set_ylabel("mean episode return")
    figure.suptitle(title)
    save_figure(figure, path)


if __name__ == "__main__":
    main()
