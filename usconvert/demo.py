"""The whole method on the embedded data, in one call: convert torchvision's MobileNetV2,
train it as a US-Net on scikit-learn's handwritten digits, calibrate every width, and measure
the FLOPs-accuracy spectrum."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .calibrate import calibrate
from .convert import convert
from .errors import UsconvertError
from .data import DataConfig, calibration_loader, eval_loader, load_data
from .models import create
from .serialize import save
from .spectrum import SpectrumRow, plot, spectrum, write_json
from .train import Trainer, make_config
from .width import width_grid

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "digits.yaml"
MODEL = "tv:mobilenet_v2"
INPUT_SIZE = (3, 32, 32)


@dataclass
class DemoResult:
    network: Path
    spectrum_json: Path
    plot: Path
    rows: list[SpectrumRow]
    history: list[dict]


def run_demo(out: Path, *, quick: bool = False, seed: int = 0, say: Callable[[str], None] = print) -> DemoResult:
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model, source = create(MODEL, num_classes=10)
    net = convert(model, INPUT_SIZE, source=source)
    say(f"converted {MODEL}: {len(net.slimmable_spaces)} slimmable channel spaces, widths "
        f"{net.min_width:g} to 1.0")
    settings = dict(seed=seed) if not quick else dict(seed=seed, epochs=1, warmup_epochs=0)
    if not RECIPE.is_file():
        raise UsconvertError(f"the digits recipe is missing ({RECIPE}); the demo runs from a checkout "
                             f"installed with pip install -e .")
    trainer = Trainer(net, make_config(RECIPE, **settings), out / "digits_us.safetensors")
    history = trainer.fit()
    splits = load_data("digits", INPUT_SIZE, DataConfig(**net.data_config), num_classes=10, seed=seed)
    widths = width_grid(net.min_width, 1.0, 0.25 if quick else 0.025)
    report = calibrate(net, calibration_loader(splits, 64, seed=seed), widths, samples=256 if quick else 1024)
    say(f"calibrated batch-norm statistics for {len(widths)} widths from {report.samples} images "
        f"in {report.seconds:.1f}s")
    network = save(net, out / "digits_us_calibrated.safetensors")
    rows = spectrum(net, eval_loader(splits.val, 128), widths)
    spectrum_json, figure = out / "spectrum.json", out / "spectrum.png"
    write_json(rows, spectrum_json, {"name": "US-MobileNetV2 (digits)", "data": "digits"})
    plot([{"name": "US-MobileNetV2 on digits", "rows": [r.__dict__ for r in rows]}], figure,
         title="US-MobileNetV2 on digits: one network, every width")
    return DemoResult(network, spectrum_json, figure, rows, history)
