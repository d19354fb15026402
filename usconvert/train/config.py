"""Training settings, and recipes: YAML files of the same settings that flags override."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsconvertError, first_line

SAMPLING_RULES = ("sandwich", "random", "min-random", "max-random")
DISTILL_LOSSES = ("soft-ce", "kl", "l1", "l2")
SCHEDULES = ("linear", "cosine", "step", "multistep", "poly", "tanh", "constant")


class ConfigError(UsconvertError):
    """Training settings that contradict each other or the network."""


@dataclass
class TrainConfig:
    # data
    data: str = "digits"
    # at most this many training / validation images, drawn once with the seed (None: all)
    train_samples: int | None = None
    val_samples: int | None = None
    batch_size: int = 64
    workers: int = 0
    scale_min: float | None = None  # random-resized-crop lower bound; None: 0.25 for folders, 0.8 for digits
    # the paper's algorithm
    epochs: int = 10
    widths_per_step: int = 4
    sampling: str = "sandwich"
    # None: on where every step trains width 1.0 (sandwich, max-random), off for the other rules
    # and for baselines of fixed widths (the paper's S-Net and I-Nets learn from the labels)
    inplace_distill: bool | None = None
    distill_loss: str = "soft-ce"
    nonuniform: bool = False
    # a frozen teacher that distils every sampled width, the largest included, on top of the
    # labels (Once-for-All): "original" (the network as it was before this training) or a file
    teacher: str | None = None
    kd_ratio: float = 1.0  # loss = labels + kd_ratio * distillation
    kd_temperature: float = 1.0
    # baselines: train exactly these widths every step (one width: an individually trained model;
    # several with private_norms: the 4-switch S-Net with switchable batch norm)
    widths: list[float] | None = None
    private_norms: bool = False
    # the paper's Table 4: convolutions average their output over the active input channels (saved
    # with the network; off keeps what the network has)
    output_averaging: bool = False
    smoothing: float = 0.0
    # validation after each epoch: below width 1.0 with statistics recomputed from this many
    # training images (0: the statistics tracked during training)
    val_calibration: int = 0
    # optimisation (timm's factories)
    opt: str = "sgd"  # timm's "sgd" is SGD with Nesterov momentum
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    sched: str = "linear"
    warmup_epochs: int = 0
    warmup_lr: float = 1e-5
    min_lr: float = 0.0
    # running
    amp: bool = False
    amp_dtype: str | None = None  # default: bfloat16 on CPU, float16 on CUDA
    # NHWC weights and images (timm's --channels-last): the same function, much faster for
    # convolutions on CPUs (oneDNN) and on GPUs with tensor cores
    channels_last: bool = False
    device: str = "auto"
    seed: int = 0
    sync_bn: bool = False
    # what a recipe expects of the conversion (checked, not applied)
    expect: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        if self.sampling not in SAMPLING_RULES:
            raise ConfigError(f"--sampling must be one of {', '.join(SAMPLING_RULES)}, got {self.sampling!r}")
        if self.distill_loss not in DISTILL_LOSSES:
            raise ConfigError(f"--distill-loss must be one of {', '.join(DISTILL_LOSSES)}, got {self.distill_loss!r}")
        if self.sched not in SCHEDULES:
            raise ConfigError(f"--sched must be one of {', '.join(SCHEDULES)}, got {self.sched!r}")
        if self.widths is not None:
            if not self.widths or not all(isinstance(w, (int, float)) and 0 < w <= 1 for w in self.widths):
                raise ConfigError(f"--widths must be ratios in (0, 1], got {self.widths!r}")
            self.widths = sorted({float(w) for w in self.widths}, reverse=True)
        elif self.private_norms:
            raise ConfigError("--private-norms needs --widths: the widths that get private batch norm")
        trains_full_width = (1.0 in self.widths if self.widths is not None
                             else self.sampling in ("sandwich", "max-random"))
        if self.teacher is not None:
            if self.inplace_distill:
                raise ConfigError("--teacher distils every width from the teacher: it replaces inplace distillation "
                                  "(leave out --inplace-distill)")
            self.inplace_distill = False
            if self.kd_ratio < 0 or self.kd_temperature <= 0:
                raise ConfigError("--kd-ratio must be at least 0 and --kd-temperature positive")
        if self.inplace_distill is None:
            self.inplace_distill = self.widths is None and trains_full_width
        elif self.inplace_distill and not trains_full_width:
            teacher = "1.0 among --widths" if self.widths is not None else "--sampling sandwich or max-random"
            raise ConfigError(f"inplace distillation learns from width 1.0, which these settings never train: use "
                              f"{teacher}, or --no-inplace-distill")
        minimum = 2 if self.sampling == "sandwich" else 1
        if self.widths is None and self.widths_per_step < minimum:
            raise ConfigError(f"--widths-per-step must be at least {minimum} with --sampling {self.sampling}")
        if self.val_calibration < 0:
            raise ConfigError("--val-calibration must be a number of images (0: off)")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if self.lr <= 0:
            raise ConfigError("--lr must be positive")
        if self.amp_dtype not in (None, "bfloat16", "float16"):
            raise ConfigError(f"--amp-dtype must be bfloat16 or float16, got {self.amp_dtype!r}")


FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def load_recipe(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"recipe {path} is not valid YAML: {first_line(exc)}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"recipe {path} must be a mapping of settings")
    settings = {k.replace("-", "_"): v for k, v in raw.items() if k not in ("convert", "description")}
    unknown = sorted(set(settings) - FIELDS)
    if unknown:
        raise ConfigError(f"recipe {path} has unknown settings: {', '.join(unknown)}")
    if isinstance(raw.get("convert"), dict):
        settings["expect"] = {k.replace("-", "_"): v for k, v in raw["convert"].items()}
    return settings


def make_config(recipe: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """Defaults, then the recipe, then the given settings (None means: not given)."""
    settings: dict[str, Any] = load_recipe(recipe) if recipe else {}
    settings.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(settings) - FIELDS)
    if unknown:
        raise ConfigError(f"unknown training settings: {', '.join(unknown)}")
    config = TrainConfig(**settings)
    config.check()
    return config
