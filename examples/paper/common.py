"""What the paper experiments share: the data setting, the trained networks (each trained once
and cached, so that Table 1, Table 2, Figure 6, Figure 11 and Table 3 reuse one US-Net per seed),
and evaluation at given widths.

Every network is tv:mobilenet_v2 (a small timm ViT for the ViT methods) at 32x32, trained on
one of the ``DATA`` settings (``--data``: scikit-learn's digits, the default; Fashion-MNIST at
the size 2 CPU cores can train; Fashion-MNIST in full, for a GPU) with its recipe and budget
(chosen so that every method has converged: the validation curves are in docs/RESULTS.md);
only the method differs, and each table checks that its rows were trained with the same
settings but for the method's own. ``--smoke`` shrinks everything to seconds (for CI): the
numbers it produces mean nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import multiprocessing
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

import usconvert
from usconvert.calibrate import calibrate
from usconvert.data import DataConfig, Splits, calibration_loader, eval_loader, load_data, subset
from usconvert.errors import TrainingInterrupted
from usconvert.files import atomic_path, write_json_file
from usconvert.sorting import sort_channels
from usconvert.spectrum import SpectrumRow, plot, spectrum
from usconvert.train import Trainer, make_config
from usconvert.train.config import TrainConfig, load_recipe
from usconvert.width import width_grid

ROOT = Path(__file__).resolve().parents[2]
MODEL = "tv:mobilenet_v2"
SWITCHES = [1.0, 0.75, 0.5, 0.25]
DEFAULT_OUT = ROOT / "docs" / "results"


@dataclass(frozen=True)
class Data:
    """A data set as the experiments use it: recipe, input size and the budget of every run."""

    spec: str  # --data of usconvert train
    recipe: Path
    budget: dict[str, Any]  # settings beyond the recipe that every run shares
    input_size: tuple[int, int, int] = (3, 32, 32)
    smoke: str = "fake:64"  # the data of --smoke runs


# what 2 CPU cores can train: 6,000 training images drawn once per seed, in channels-last layout
# (1.9x faster on CPUs, the same function); each epoch validates on 2,000 test images, the tables
# on all 10,000. The 40-, 80-, 160- and 320-epoch budgets below add their epochs to it
CPU_FASHION_MNIST = {"val_calibration": 512, "train_samples": 6000, "val_samples": 2000, "channels_last": True}

DATA: dict[str, Data] = {
    # 30 epochs of 22 steps (10 in the first release were too few for the shared networks to
    # converge); validation after each epoch recalibrates the smallest width
    "digits": Data("digits", ROOT / "recipes" / "digits.yaml", {"epochs": 30, "val_calibration": 512}),
    # 40 epochs of 47 steps
    "fashion-mnist": Data("fashion-mnist", ROOT / "recipes" / "fashion_mnist.yaml",
                          {"epochs": 40, **CPU_FASHION_MNIST}, smoke="fashion-mnist"),
    # the first Fashion-MNIST budget, half as long, in the standard layout: too short for the
    # US-Net to converge (RESULTS.md); kept to show what doubling the budget changes
    "fashion-mnist-20": Data("fashion-mnist", ROOT / "recipes" / "fashion_mnist.yaml",
                             {"epochs": 20, "val_calibration": 512, "train_samples": 6000, "val_samples": 2000},
                             smoke="fashion-mnist"),
    # twice the budget, the same images and recipe: whether the US-Net's deficit in Table 1's
    # middle widths closes with more steps (RESULTS.md: seeds 0, 1 and 2)
    "fashion-mnist-80": Data("fashion-mnist", ROOT / "recipes" / "fashion_mnist.yaml",
                             {"epochs": 80, **CPU_FASHION_MNIST}, smoke="fashion-mnist"),
    # twice that again, for the US-Net and the I-Nets (budgets.py): whether 80 epochs had
    # converged (RESULTS.md: seeds 0, 1 and 2)
    "fashion-mnist-160": Data("fashion-mnist", ROOT / "recipes" / "fashion_mnist.yaml",
                              {"epochs": 160, **CPU_FASHION_MNIST}, smoke="fashion-mnist"),
    # twice that again, for the US-Net only: whether its narrow widths, still gaining in the last
    # quarter of 160 epochs, had converged there (RESULTS.md)
    "fashion-mnist-320": Data("fashion-mnist", ROOT / "recipes" / "fashion_mnist.yaml",
                              {"epochs": 320, **CPU_FASHION_MNIST}, smoke="fashion-mnist"),
    # the full training split, for a GPU (examples/paper/gpu_table1.sh), in the paper's batches of
    # 1,024 at its learning rate (0.5, decreasing linearly to 0). On an H200 a step costs the same
    # at 1,024 images as at 256 (launch-bound; benchmarks/device_step.py), and at 256 Table 1 did
    # not fit in 10 minutes (RESULTS.md)
    "fashion-mnist-full": Data("fashion-mnist", ROOT / "recipes" / "fashion_mnist.yaml",
                               {"epochs": 20, "val_calibration": 1024, "batch_size": 1024, "lr": 0.5, "workers": 4,
                                "channels_last": True},
                               smoke="fashion-mnist"),
}


@dataclass(frozen=True)
class Setting:
    """What every run of one invocation shares: the data (``DATA``) and the device."""

    data: str = "digits"
    device: str = "auto"  # usconvert train's --device: CUDA when present
    eval_samples: int | None = None  # at most this many validation images in evaluate (None: all)

    @property
    def dataset(self) -> Data:
        return DATA[self.data]

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


@dataclass(frozen=True)
class Run:
    """One training run: a method (training settings) and a seed."""

    method: str
    seed: int
    settings: tuple = ()  # sorted (key, value) pairs of TrainConfig overrides

    @property
    def name(self) -> str:
        return f"{self.method}-seed{self.seed}"


# the models a method may name ("model"); the first is every method's but the ViT ones (issue 19):
# a timm ViT of vit_tiny's width, 4 blocks, 6 heads of 32, patches of 8 pixels (16 tokens at 32x32)
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "mobilenet_v2": (MODEL, {}),
    "vit": ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "depth": 4, "num_heads": 6}),
}
# a transformer trains with AdamW, not SGD; every ViT run (US-Net and individual) uses this
VIT = {"model": "vit", "opt": "adamw", "lr": 1e-3, "weight_decay": 0.05, "warmup_lr": 1e-5}

METHODS: dict[str, dict[str, Any]] = {
    "us": {},  # the paper: sandwich rule, inplace distillation (on by default with it), n = 4
    "us-no-distill": {"inplace_distill": False},
    # Table 2 compares the sampling rules under one setting, as the paper does: no distillation
    "us-random": {"sampling": "random", "inplace_distill": False},
    "us-min-random": {"sampling": "min-random", "inplace_distill": False},
    "us-max-random": {"sampling": "max-random", "inplace_distill": False},
    "snet": {"widths": SWITCHES, "private_norms": True},  # S-Net: labels at every switch
    **{f"inet-{w:g}": {"widths": [w]} for w in SWITCHES},  # individually trained widths
    # from a trained model (examples/paper/pretrained.py): the I-Net 1.0x stands for a pretrained
    # network; its channels are sorted (l1), then it is fine-tuned as a US-Net for FINETUNE epochs
    "pretrained-inplace": {"start": "inet-1", "epochs": 10, "lr": 0.01, "warmup_epochs": 0},
    "pretrained-teacher": {"start": "inet-1", "epochs": 10, "lr": 0.01, "warmup_epochs": 0, "teacher": "original"},
    "us-40-epochs": {"epochs": 40},  # a US-Net from scratch for the I-Net's 30 epochs plus the 10 of fine-tuning
    # random widths draw a ratio per channel space (the paper's nonuniform US-Net, Figure 10):
    # the sub-networks a search picks were trained (examples/paper/search.py)
    "us-nonuniform-40-epochs": {"epochs": 40, "nonuniform": True},
    "us-nonuniform": {"nonuniform": True},  # the same at the data's budget: the fair partner of "us"
    "vit-us": VIT,  # examples/paper/vit.py
    **{f"vit-inet-{w:g}": {**VIT, "widths": [w]} for w in SWITCHES},
    "vit-us-60-epochs": {**VIT, "epochs": 60},  # whether the ViT US-Net's gap closes with twice the budget
    # the paper's ablations (figure7.py, figure8.py, figure9.py, table4.py): "us" has k0 = 0.25, d = 8, n = 4
    "us-k0-0.35": {"min_width": 0.35},  # Figure 7: the width lower bound
    "us-k0-0.05": {"min_width": 0.05},
    "us-d1": {"divisor": 1},  # Figure 8: the width divisor
    "us-n3": {"widths_per_step": 3},  # Figure 9: widths trained per step
    "us-n5": {"widths_per_step": 5},
    # the widths' losses are summed before a step (Algorithm 1), so n = 5 steps up to 5/4 as far
    # as n = 4 at one learning rate: n = 5 at 4/5 of the data's rate takes n = 4's step length
    "us-n5-lr-0.8": {"widths_per_step": 5, "lr_scale": 0.8},
    "us-lr-0.8": {"lr_scale": 0.8},  # and n = 4 at the same rate: whether a lower rate helps any n
    "us-output-averaging": {"output_averaging": True},  # Table 4
}
# Table 1's networks: the US-Net, the 4-switch S-Net and the individually trained widths
TABLE1_METHODS = ("us", "snet", *[f"inet-{w:g}" for w in SWITCHES])
# what makes a method: the settings a table's rows may differ in
METHOD_SETTINGS = {"sampling", "inplace_distill", "widths", "private_norms", "teacher"}


def run(method: str, seed: int) -> Run:
    return Run(method, seed, tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                                          for k, v in METHODS[method].items())))


def default_out(data: str) -> Path:
    """Where a data setting's results and networks go unless ``--out`` says otherwise."""
    return DEFAULT_OUT if data == "digits" else DEFAULT_OUT / data


def arguments(description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """The options every script takes; ``extra`` adds a script's own (and may change these
    options' defaults with ``parser.set_defaults``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data", choices=sorted(DATA), default="digits", help="the data setting (common.DATA)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to train and evaluate (auto: CUDA when present)")
    parser.add_argument("--out", type=Path, default=None, help="results (JSON, PNG) and trained networks "
                        "(default: docs/results, and docs/results/<data> for other data than digits)")
    parser.add_argument("--jobs", type=int, default=2, help="training runs in parallel (one thread each)")
    parser.add_argument("--smoke", action="store_true", help="a few steps per run, for CI: meaningless numbers")
    parser.add_argument("--recompute", action="store_true",
                        help="evaluate every network again, training those whose files are gone, instead of "
                             "reading the evaluations kept in nets/<run>.evaluations.json")
    if extra:
        extra(parser)
    args = parser.parse_args()
    if args.smoke:
        args.seeds = args.seeds[:1]
    if args.out is None:
        args.out = default_out(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    args.setting = Setting(args.data, args.device, eval_samples=256 if args.smoke else None)
    return args


SMOKE = dict(epochs=1, warmup_epochs=0, batch_size=32, val_calibration=32, train_samples=64, val_samples=64)


def settings_of(method_settings: dict[str, Any], setting: Setting, smoke: bool) -> dict[str, Any]:
    """A run's settings beyond the recipe: the data's budget, which a method may change (the
    epochs of fine-tuning; ``lr_scale``, a learning rate relative to the data's), and the device;
    at smoke size, a few steps whatever the method says."""
    data = setting.dataset
    if smoke:
        settings = {**method_settings, **SMOKE, "data": data.smoke, "device": setting.device}
    else:
        settings = {**data.budget, **method_settings, "device": setting.device}
    if "lr_scale" in settings:  # a learning rate relative to the data's, whatever budget it runs at
        lr = settings.pop("lr_scale") * {**load_recipe(data.recipe), **data.budget}["lr"]
        settings["lr"] = round(lr, 12)  # 0.04, not 0.04000000000000001, in the run's record
    return settings


def check_same_settings(records: dict["Run", dict[str, Any]], also: tuple[str, ...] = ()) -> None:
    """Rows that are compared must differ in the method only: every setting of every run of a
    table equal, but for ``METHOD_SETTINGS``, the seed, and the settings named in ``also`` (a
    row that is meant to differ in its budget, and says so)."""
    ignored = METHOD_SETTINGS | {"seed", *also}
    defaults = dataclasses.asdict(TrainConfig())  # what a record written before a setting existed had
    shared = [{k: v for k, v in {**defaults, **record["config"]}.items() if k not in ignored}
              for record in records.values()]
    differing = sorted({k for config in shared for k in config if config[k] != shared[0].get(k)})
    if differing:
        raise SystemExit(f"the compared runs differ in more than the method: {', '.join(differing)}")


def network_path(out: Path, item: Run) -> Path:
    return out / "nets" / f"{item.name}.safetensors"


def record_path(out: Path, item: Run) -> Path:
    """The run's record (settings, history, training time), committed beside its log."""
    return out / "nets" / f"{item.name}.json"


CONVERT_SETTINGS = ("min_width", "divisor")  # a method's settings that apply to the conversion (Figures 7, 8)


def _train_one(item: Run, out: Path, setting: Setting, smoke: bool, threads: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    path = network_path(out, item)
    record_file = record_path(out, item)
    if path.is_file() and record_file.is_file():
        return json.loads(record_file.read_text())
    torch.manual_seed(item.seed)
    settings = {k: list(v) if isinstance(v, tuple) else v for k, v in item.settings}
    start = settings.pop("start", None)
    name, model_kwargs = MODELS[settings.pop("model", "mobilenet_v2")]
    conversion = {k: settings.pop(k) for k in CONVERT_SETTINGS if k in settings}
    data = setting.dataset
    if start is None:
        model, source = usconvert.create(name, num_classes=10, model_kwargs=model_kwargs)
        net = usconvert.convert(model, data.input_size, source=source, **conversion)
    else:  # a trained network, its channels sorted by importance (what convert --weights does)
        net = usconvert.load(network_path(out, run(start, item.seed)))
        sort_channels(net, "l1")
    expect = {**load_recipe(data.recipe).get("expect", {}), **conversion}
    config = make_config(data.recipe, seed=item.seed, expect=expect, **settings_of(settings, setting, smoke))
    checkpoint = path.with_name(f"{path.stem}.checkpoint.safetensors")
    trainer = Trainer(net, config, path, resume=checkpoint if checkpoint.is_file() else None)
    try:
        history = trainer.fit()
    except TrainingInterrupted:  # the trainer's advice is --resume; the script resumes by itself
        raise TrainingInterrupted(f"{item.name} stopped; running the same command again resumes it from "
                                  f"{checkpoint}") from None
    record = {"run": item.name, "method": item.method, "seed": item.seed, "model": [name, model_kwargs],
              "settings": {**settings, **conversion}, "data": setting.data,
              "start": start, "config": dataclasses.asdict(config), "train_seconds": trainer.progress.seconds,
              "device": str(trainer.device), "threads": threads, "history": history}
    record_file.write_text(json.dumps(record, indent=1))
    return record


_STOP: Any = None  # set in a worker when one of the pool's runs is interrupted


def _share_stop(event: Any) -> None:
    global _STOP
    _STOP = event


def _train_in_pool(item: Run, out: Path, setting: Setting, smoke: bool, threads: int) -> dict[str, Any]:
    """``_train_one`` in a worker, where an interrupted run (Ctrl-C, ``kill -INT``) stops the
    queue too: a worker that would start another run after it gives up instead."""
    if _STOP.is_set():
        raise TrainingInterrupted(f"{item.name} not started: another run was interrupted")
    try:
        return _train_one(item, out, setting, smoke, threads)
    except (TrainingInterrupted, KeyboardInterrupt):
        _STOP.set()
        raise


def train_all(items: list[Run], out: Path, setting: Setting, *, jobs: int = 2, smoke: bool = False,
              evaluated_only: bool = False) -> dict[Run, dict[str, Any]]:
    """Train every run not trained yet (an interrupted run resumes from its checkpoint).
    ``evaluated_only``: the caller needs the runs' evaluations only (``evaluate_run``), so a run
    whose network file is gone (the networks are not committed) but whose evaluations are kept is
    not trained again."""
    (out / "nets").mkdir(parents=True, exist_ok=True)

    def only_evaluations_kept(item: Run) -> bool:
        return (not network_path(out, item).is_file() and record_path(out, item).is_file()
                and evaluations_path(out, item).is_file())

    kept = {item: json.loads(record_path(out, item).read_text()) for item in items
            if evaluated_only and only_evaluations_kept(item)}
    try:
        return {**kept, **_train_missing([item for item in items if item not in kept], out, setting, jobs, smoke)}
    except (TrainingInterrupted, KeyboardInterrupt) as stopped:  # one line, as usconvert train says it
        print(f"interrupted: {str(stopped) or 'running the same command again resumes the unfinished runs'}",
              file=sys.stderr)
        raise SystemExit(130) from None


def _train_missing(items: list[Run], out: Path, setting: Setting, jobs: int, smoke: bool) -> dict[Run, dict[str, Any]]:
    threads = max(1, len(os.sched_getaffinity(0)) // max(1, jobs))  # the cores this process may use (taskset)
    if jobs <= 1:
        return {item: _train_one(item, out, setting, smoke, threads) for item in items}
    stop = multiprocessing.get_context().Event()
    with ProcessPoolExecutor(jobs, initializer=_share_stop, initargs=(stop,)) as pool:
        futures = {item: pool.submit(_train_in_pool, item, out, setting, smoke, threads) for item in items}
        try:
            return {item: future.result() for item, future in futures.items()}
        except BaseException:
            stop.set()
            pool.shutdown(cancel_futures=True)
            raise


def train_for_evaluation(args: argparse.Namespace, items: list[Run]) -> dict[Run, dict[str, Any]]:
    """``train_all`` for a script that only evaluates the runs (``evaluate_run``): with its
    options, reading kept evaluations unless ``--recompute``."""
    return train_all(items, args.out, args.setting, jobs=args.jobs, smoke=args.smoke,
                     evaluated_only=not args.recompute)


def data_splits(net: usconvert.SlimmableNet, setting: Setting, seed: int = 0) -> Splits:
    """The splits of the setting's data, prepared for ``net`` (its input size and normalisation);
    at most ``setting.eval_samples`` validation images."""
    splits = load_data(setting.dataset.spec, net.input_size, DataConfig(**net.data_config), num_classes=10, seed=seed)
    return subset(splits, val=setting.eval_samples, seed=seed)


def evaluate(net: usconvert.SlimmableNet, widths: list, *, setting: Setting, calibrate_samples: int | None = 1024,
             mode: str = "exact", seed: int = 0) -> list[SpectrumRow]:
    """Top-1 on the validation split of the setting's data at each width, on its device.
    ``calibrate_samples``: recompute the batch-norm statistics of every width first (the
    paper's BN post-statistics); None: use the statistics kept during training."""
    splits = data_splits(net, setting, seed)
    device = setting.torch_device()
    net.to(device)
    if calibrate_samples:
        uniform = [w for w in widths if not isinstance(w, dict)]
        named = {f"configuration {i}": w for i, w in enumerate(widths) if isinstance(w, dict)}
        calibrate(net, calibration_loader(splits, 64, seed=seed), uniform, configs=named, samples=calibrate_samples,
                  mode=mode, device=device)
    return spectrum(net, eval_loader(splits.val, 256), widths, device=device)


def evaluations_path(out: Path, item: Run) -> Path:
    return out / "nets" / f"{item.name}.evaluations.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def evaluate_run(args: argparse.Namespace, item: Run, widths: list, *, calibrate_samples: int | None,
                 mode: str = "exact", seed: int = 0) -> list[SpectrumRow]:
    """``evaluate`` on a trained run's network, kept in ``nets/<run>.evaluations.json``, which is
    committed where the networks (``*.safetensors``) are not: an evaluation with the same
    settings, of the network on disk (by its SHA-256) or of one no longer on disk, is read back
    instead of computed, so that a table gains a seed without training the others again.
    ``--recompute`` computes it again."""
    settings = json.loads(json.dumps({"data": args.setting.data, "eval_samples": args.setting.eval_samples,
                                      "widths": widths, "calibrate_samples": calibrate_samples, "mode": mode,
                                      "seed": seed}))  # as read back from JSON: tuples become lists
    path, net_path = evaluations_path(args.out, item), network_path(args.out, item)
    digest = _sha256(net_path) if net_path.is_file() else None
    kept = json.loads(path.read_text())["evaluations"] if path.is_file() else []
    if not args.recompute:
        for entry in kept:
            if entry["settings"] == settings and digest in (None, entry["network_sha256"]):
                return [SpectrumRow(**row) for row in entry["rows"]]
    if digest is None:
        raise SystemExit(f"{item.name}: {net_path} is gone and {path.name} keeps no evaluation with these settings; "
                         "pass --recompute to train it again")
    rows = evaluate(usconvert.load(net_path), widths, setting=args.setting, calibrate_samples=calibrate_samples,
                    mode=mode, seed=seed)
    entry = {"settings": settings, "network_sha256": digest, "device": str(args.setting.torch_device()),
             "rows": [asdict(row) for row in rows]}
    write_json_file(path, {"run": item.name, "evaluations": [*(e for e in kept if e["settings"] != settings), entry]})
    return rows


def evaluate_table1_run(args: argparse.Namespace, method: str, seed: int) -> list[SpectrumRow]:
    """A network at the widths it trains (its fixed ones, or Table 1's from its lower bound up),
    as Table 1 evaluates it (and reads back its kept evaluations): a US-Net after BN
    post-statistics from 1,024 training images (128 at smoke size), the S-Net and the I-Nets
    with the statistics they kept in training."""
    settings = METHODS[method]
    samples = (128 if args.smoke else 1024) if "widths" not in settings else None
    widths = settings.get("widths", [w for w in SWITCHES if w >= settings.get("min_width", 0.0)])
    return evaluate_run(args, run(method, seed), list(widths), calibrate_samples=samples)


def train_seconds(records: dict[Run, dict[str, Any]]) -> dict[str, float]:
    """Each run's training seconds, by run name, as every result records them."""
    return {item.name: record["train_seconds"] for item, record in records.items()}


def spectra(args: argparse.Namespace, variants: dict[str, str], *, step: float = 0.05, also: tuple[str, ...] = ()
            ) -> tuple[list[dict[str, Any]], list[list[list[SpectrumRow]]], dict[str, float]]:
    """Train each variant (a method, for every seed), check that the runs differ in the method
    only (and in ``also``), and evaluate each at widths from its own lower bound to 1.0 in
    ``step`` after BN calibration. Returns the plotted series (mean top-1 over seeds, with its
    std), the rows per variant and seed, and each run's training seconds."""
    records = train_for_evaluation(args, [run(m, s) for s in args.seeds for m in variants.values()])
    check_same_settings(records, also=also)
    series, rows_per_variant = [], []
    for label, method in variants.items():
        per_seed = []
        for seed in args.seeds:
            item = run(method, seed)
            widths = width_grid(records[item]["config"]["expect"]["min_width"], 1.0, 0.25 if args.smoke else step)
            per_seed.append(evaluate_run(args, item, widths, calibrate_samples=128 if args.smoke else 1024, seed=seed))
        series.append({"name": label, "rows": mean_over_seeds(per_seed)})
        rows_per_variant.append(per_seed)
    for label, summary in summarize(series).items():
        spread = f" ± {summary['mean_top1_std']:.2f} over seeds" if "mean_top1_std" in summary else ""
        print(f"{label:>36}: mean top-1 over widths {summary['mean_top1']:.2f}%{spread}, "
              f"lowest {summary['min_top1']:.2f}%")
    return series, rows_per_variant, train_seconds(records)


def spectrum_figure(args: argparse.Namespace, name: str, variants: dict[str, str], *, title: str, experiment: str,
                    also: tuple[str, ...] = (), from_width: float = 0.0) -> None:
    """A figure of spectra (Figures 6 to 9): the variants' spectra (``spectra``), plotted to
    ``<name>.png`` and written to ``<name>.json`` with their summary from ``from_width``."""
    timer = Timer()
    series, _, run_seconds = spectra(args, variants, also=also)
    plot(series, args.out / f"{name}.png", title=f"{title} ({args.data})")
    write_result(args, name, experiment, series=series, summary=summarize(series, from_width),
                 seconds=timer.seconds(), train_seconds=run_seconds)


def mean_over_seeds(per_seed: list[list[SpectrumRow]]) -> list[dict[str, Any]]:
    """One row per width: the first seed's row, with top-1 the mean over the seeds, its std
    (``top1_std``) and each seed's (``top1_per_seed``)."""
    rows = []
    for i, first in enumerate(per_seed[0]):
        top1_per_seed = [seed_rows[i].top1 for seed_rows in per_seed]
        mean, std = mean_std(top1_per_seed)
        rows.append({**first.__dict__, "top1": mean, "top1_std": std, "top1_per_seed": top1_per_seed})
    return rows


def summarize(series: list[dict[str, Any]], from_width: float = 0.0) -> dict[str, dict[str, float]]:
    """Per series: the mean top-1 over its widths from ``from_width`` (a range every series
    covers, where their lower bounds differ) and the lowest top-1 there. Where the rows carry
    several seeds, also each seed's mean over those widths and their std: the spread between
    trainings of the figure compared (the std at one width, ``top1_std``, also holds noise that
    the mean over widths averages out)."""
    summary = {}
    for s in series:
        kept = [r for r in s["rows"] if r["width"] >= from_width - 1e-9]
        top1 = [r["top1"] for r in kept]
        summary[s["name"]] = {"mean_top1": statistics.fmean(top1), "min_top1": min(top1)}
        if all(len(r.get("top1_per_seed", ())) > 1 for r in kept):
            per_seed = [statistics.fmean(seed_top1) for seed_top1 in zip(*(r["top1_per_seed"] for r in kept))]
            summary[s["name"]].update(mean_top1_per_seed=per_seed, mean_top1_std=statistics.stdev(per_seed))
    return summary


def mean_curves(histories: list[list[dict[str, Any]]], keys: tuple[str, ...]) -> dict[str, list[float]]:
    """Per-epoch means over runs' histories (their log records), as long as the shortest."""
    epochs = min(len(h) for h in histories)
    return {key: [statistics.fmean(h[e][key] for h in histories) for e in range(epochs)] for key in keys}


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def cell(values: list[float]) -> str:
    mean, std = mean_std(values)
    return f"{mean:.1f} ± {std:.1f}" if len(values) > 1 else f"{mean:.1f}"


def add_errors(errors: dict[str, list[float]], rows: list[SpectrumRow]) -> None:
    """Append one seed's top-1 errors per width, and their average, to ``errors``."""
    for row in rows:
        errors.setdefault(row.label, []).append(100 - row.top1)
    errors.setdefault("average", []).append(sum(100 - r.top1 for r in rows) / len(rows))


def error_table(first_column: str, errors: dict[str, dict[str, list[float]]], widths: list[float]) -> str:
    """A markdown table: one row per key of ``errors``, a column per width and the average."""
    columns = [*(f"{w:g}" for w in widths), "average"]
    lines = [f"| {first_column} | " + " | ".join(f"{c}x" if c != "average" else c for c in columns) + " |",
             "|---|" + "---|" * len(columns)]
    lines += [f"| {key} | " + " | ".join(cell(per_width[c]) for c in columns) + " |"
              for key, per_width in errors.items()]
    return "\n".join(lines)


def save_figure(figure: Any, path: Path) -> None:
    """Lay out a matplotlib figure, write it to ``path`` as PNG (atomically), and close it."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)


def write_result(args: argparse.Namespace, name: str, experiment: str, **fields: Any) -> Path:
    """Write ``<args.out>/<name>.json`` atomically: what the experiment is, what every result
    records of the script's arguments (the data setting, the seeds, whether a smoke run), then
    ``fields``."""
    recorded = {key: getattr(args, key) for key in ("data", "seeds", "smoke") if hasattr(args, key)}
    path = args.out / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"experiment": experiment, **recorded, **fields}, indent=1,
                              default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o)))
    tmp.replace(path)
    return path


@dataclass
class Timer:
    start: float = field(default_factory=time.perf_counter)

    def seconds(self) -> float:
        return round(time.perf_counter() - self.start, 1)
