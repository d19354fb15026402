"""``usconvert search``: the best nonuniform width under a multiply-add, parameter or latency budget."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import UsconvertError
from .common import checked_output, console, human, print_json, progress, reports_errors, stdout
from .options import BATCH, DATA_HELP, DEVICE, JSON, WORKERS


@reports_errors
def search(
    network: Path = typer.Argument(..., help="A trained network (.safetensors)."),
    data: Optional[str] = typer.Option(None, "--data", help="Training data to score candidates on (a held-out part "
                                       "of its training split, never its validation split): " + DATA_HELP),
    macs: Optional[str] = typer.Option(None, "--macs", help="Budget of multiply-adds: 150M, 1.2G, or 40% of width "
                                                            "1.0's."),
    params: Optional[str] = typer.Option(None, "--params", help="Budget of parameters: 1.2M, or 40%."),
    latency_ms: Optional[str] = typer.Option(None, "--latency-ms", help="Budget of eval latency in milliseconds on "
                                             "--device at --latency-batch (or 40%), measured."),
    output: Path = typer.Option(..., "-o", "--output", help="The configurations (.json): the format calibrate "
                                                            "--configs, spectrum --configs and export --config read."),
    strategy: str = typer.Option("greedy", "--strategy", help="greedy (AutoSlim's one-shot greedy slimming) or "
                                                              "evolution."),
    pareto: int = typer.Option(1, "--pareto", help="Write N configurations along the score/cost frontier, from "
                                                   "the budget up to width 1.0."),
    step: float = typer.Option(0.1, "--step", help="greedy: shrink a space by this share of its channels per move."),
    holdout: float = typer.Option(0.1, "--holdout", help="Share of the training split held out to score on."),
    score_samples: int = typer.Option(1024, "--score-samples", help="Held-out images scored per candidate (at "
                                                                    "most)."),
    calibration_samples: int = typer.Option(256, "--calibration-samples", help="Training images that compute each "
                                            "candidate's batch-norm statistics."),
    latency_batch: int = typer.Option(1, "--latency-batch", help="Batch size of the latency budget."),
    seed: int = typer.Option(0, "--seed", help="Which images are held out, and evolution's draws."),
    batch_size: int = BATCH,
    workers: int = WORKERS,
    device: str = DEVICE,
    as_json: bool = JSON,
) -> None:
    """Search the nonuniform width (a ratio per channel space) that scores best on held-out
    training images within a budget, and write it, with its multiply-adds, parameters and score."""
    checked_output(output, [".json"])
    if data is None:
        raise UsconvertError("search scores candidates on held-out training images: give --data (digits, "
                             "fashion-mnist, fake:N or an ImageFolder directory, or one of clips for a video network)")
    from ..search import parse_budget
    budget = parse_budget(macs=macs, params=params, latency_ms=latency_ms)
    from ..configs import configs_document
    from ..distributed import setup
    from ..files import write_json_file
    from ..search import HeldOut, search as run_search
    from ..serialize import load
    from .options import splits_for
    net = load(network, map_location=setup(device)[1])
    splits = splits_for(net, data, seed=seed)
    score = HeldOut(net, splits.calibration, holdout=holdout, score_samples=score_samples,
                    calibration_samples=calibration_samples, batch_size=batch_size, seed=seed, workers=workers)
    with progress(f"searching ({strategy})", counter="{task.completed} candidates scored") as bar:
        task = bar.add_task("", total=None)
        result = run_search(net, score, budget, strategy=strategy, pareto=pareto, seed=seed, step=step,
                            latency_batch=latency_batch, on_candidate=lambda: bar.advance(task))
    document = configs_document(result.configs)
    write_json_file(output, document)
    if as_json:
        print_json({"network": str(network), "budget": result.budget, "kind": result.kind,
                    "full_cost": result.full_cost, "evaluated": result.evaluated, "seconds": result.seconds,
                    "held_out_images": score.images, "configs": document})
        return
    for name, entry in result.configs.items():
        stdout.print(f"{name}: {human(entry['multiply_adds'])} multiply-adds, {human(entry['parameters'])} "
                     f"parameters" + (f", {entry['latency_ms']:.2f} ms" if "latency_ms" in entry else "")
                     + f"; held-out score {entry['score']:.2f} ({score.images} training images)")
    console.print(f"scored {result.evaluated} candidates in {result.seconds:.0f}s; wrote {output} "
                  f"(next: usconvert calibrate {network} --configs {output} -o calibrated.safetensors)")
