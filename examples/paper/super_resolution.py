"""Super-resolution (the paper's Figure 4): a WDSR-A network, converted with usconvert and
trained as a US-Net for x2 bicubic super-resolution with inplace distillation on outputs (the
paper allows L1 or L2; both are run), against the same network trained individually at its min
and max widths, and a US-Net without distillation. Training patches come from scikit-image's
sample photographs; PSNR is measured on other, held-out photographs.

    python examples/paper/super_resolution.py [--seeds 0] [--steps 1500] [--out docs/results] [--smoke]
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from common import write_result
from wdsr import WDSR

import usconvert
from usconvert.profile import count_macs
from usconvert.spectrum import plot
from usconvert.train import WidthSampler, sandwich_step
from usconvert.train.losses import DISTILL_LOSSES
from usconvert.train.optim import create_optimizer, create_scheduler
from usconvert.width import width_grid

TRAIN_PHOTOS = ("astronaut", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "stereo_motorcycle",
                "brick", "grass", "gravel", "moon")
TEST_PHOTOS = ("chelsea", "coffee", "camera", "coins")
SCALE, PATCH, MIN_WIDTH, DIVISOR = 2, 48, 0.5, 4  # the paper: widths [32, 64] of 64 channels
METHODS = {"US-WDSR, L2 distillation": dict(sandwich=True, distill="l2"),
           "US-WDSR, L1 distillation": dict(sandwich=True, distill="l1"),
           "US-WDSR without distillation": dict(sandwich=True, distill=None),
           "WDSR 1.0x (individual)": dict(width=1.0), "WDSR 0.5x (individual)": dict(width=MIN_WIDTH)}


def photo(name: str) -> torch.Tensor:
    """A scikit-image sample photograph as 3xHxW in [0, 1] (grey ones repeated to 3 channels)."""
    from skimage import data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = getattr(data, name)()
    image = image[0] if isinstance(image, tuple) else image
    tensor = torch.from_numpy(image).float() / 255.0
    tensor = tensor.unsqueeze(-1).expand(-1, -1, 3) if tensor.ndim == 2 else tensor[..., :3]
    height, width = (s - s % SCALE for s in tensor.shape[:2])
    return tensor[:height, :width].permute(2, 0, 1).contiguous()


def downscale(hr: torch.Tensor) -> torch.Tensor:
    """Bicubic x2 (antialiased), the standard degradation of the bicubic track."""
    lr = F.interpolate(hr.unsqueeze(0) if hr.ndim == 3 else hr, scale_factor=1 / SCALE, mode="bicubic",
                       antialias=True, align_corners=False)
    return lr.clamp(0, 1).squeeze(0) if hr.ndim == 3 else lr.clamp(0, 1)


def patches(images: list[torch.Tensor], count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    hr = []
    for _ in range(count):
        image = images[int(torch.randint(len(images), (1,), generator=generator))]
        top = int(torch.randint(image.shape[1] - PATCH + 1, (1,), generator=generator))
        left = int(torch.randint(image.shape[2] - PATCH + 1, (1,), generator=generator))
        patch = image[:, top:top + PATCH, left:left + PATCH]
        if torch.rand((), generator=generator) < 0.5:
            patch = patch.flip(-1)
        hr.append(patch)
    hr = torch.stack(hr)
    return downscale(hr), hr


def psnr(sr: torch.Tensor, hr: torch.Tensor) -> float:
    """On RGB in [0, 1], ignoring a border of SCALE pixels (as SR benchmarks do)."""
    b = SCALE
    mse = F.mse_loss(sr.clamp(0, 1)[..., b:-b, b:-b], hr[..., b:-b, b:-b]).item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def train(method: dict, seed: int, steps: int, batch: int) -> tuple[usconvert.SlimmableNet, float, list[float]]:
    """The trained network, its training seconds, and the L1 loss of the largest width to the
    high-resolution patches, averaged over each 50 steps (the training curve)."""
    torch.manual_seed(seed)
    net = usconvert.convert(WDSR(), (3, PATCH // SCALE, PATCH // SCALE), min_width=MIN_WIDTH, divisor=DIVISOR)
    images = [photo(name) for name in TRAIN_PHOTOS]
    generator = torch.Generator().manual_seed(seed)
    optimizer = create_optimizer(net, opt="adam", lr=1e-3, weight_decay=0.0, momentum=0.9)
    scheduler = create_scheduler(optimizer, sched="cosine", epochs=1, updates_per_epoch=steps, warmup_epochs=0,
                                 warmup_lr=1e-3, min_lr=1e-5)
    sampler = WidthSampler(MIN_WIDTH, n=4, rule="sandwich", seed=seed,
                           fixed=None if method.get("sandwich") else [method["width"]])
    distill = DISTILL_LOSSES[method["distill"]] if method.get("distill") else None
    net.train()
    start = time.perf_counter()
    curve, window = [], []
    for step in range(steps):
        lr, hr = patches(images, batch, generator)
        optimizer.zero_grad(set_to_none=True)
        losses = sandwich_step(net, net, lr, hr, sampler.sample(step), criterion=F.l1_loss, distill=distill)
        optimizer.step()
        window.append(losses[0])
        if (step + 1) % 50 == 0 or step + 1 == steps:
            curve.append(sum(window) / len(window))
            window = []
        if (step + 1) % 250 == 0:
            print(f"  step {step + 1}/{steps}: L1 {curve[-1]:.4f} (largest width)", flush=True)
        scheduler.step_update(num_updates=step + 1)
    net.set_width(1.0)
    return net, time.perf_counter() - start, curve


@torch.no_grad()
def evaluate(net: usconvert.SlimmableNet, widths: list[float], photos: list[torch.Tensor]) -> list[dict]:
    net.eval()
    rows = []
    for width in widths:
        net.set_width(width)
        scores = [psnr(net(downscale(hr).unsqueeze(0)), hr.unsqueeze(0)) for hr in photos]
        rows.append({"width": width, "psnr": sum(scores) / len(scores),
                     "multiply_adds": count_macs(net, input_size=(3, 48, 48)).macs})
    net.set_width(1.0)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "docs" / "results")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS),
                        help="the methods to train (default: all)")
    parser.add_argument("--name", default="super_resolution", help="of the JSON and PNG files written")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.seeds, args.steps, args.batch_size = args.seeds[:1], 3, 4
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    test = [photo(name) for name in TEST_PHOTOS]
    if args.smoke:
        test = [image[:, :64, :64] for image in test]
    bicubic = sum(psnr(F.interpolate(downscale(hr).unsqueeze(0), scale_factor=SCALE, mode="bicubic",
                                     align_corners=False), hr.unsqueeze(0)) for hr in test) / len(test)
    widths = width_grid(MIN_WIDTH, 1.0, 0.125)
    results = {}
    for label in args.methods:
        method = METHODS[label]
        per_seed, seconds, curves = [], [], []
        for seed in args.seeds:
            net, took, curve = train(method, seed, args.steps, args.batch_size)
            evaluated = widths if method.get("sandwich") else [method["width"]]
            per_seed.append(evaluate(net, evaluated, test))
            seconds.append(took)
            curves.append(curve)
        rows = [{**r, "psnr": sum(s[i]["psnr"] for s in per_seed) / len(per_seed),
                 "psnr_per_seed": [s[i]["psnr"] for s in per_seed]} for i, r in enumerate(per_seed[0])]
        results[label] = {"rows": rows, "train_seconds": seconds, "train_l1_every_50_steps": curves}
        print(f"{label:>30}: " + ", ".join(f"{r['width']:g}x {r['psnr']:.2f} dB" for r in rows))
    print(f"{'bicubic':>30}: {bicubic:.2f} dB")
    series = [{"name": label, "rows": r["rows"]} for label, r in results.items()]
    plot(series, args.out / f"{args.name}.png", title="x2 super-resolution, held-out photographs (PSNR)")
    write_result(args, args.name, "Figure 4: US-WDSR x2 super-resolution", steps=args.steps,
                 batch_size=args.batch_size, train_photos=TRAIN_PHOTOS, test_photos=TEST_PHOTOS,
                 bicubic_psnr=bicubic, results=results, seconds=round(time.perf_counter() - start, 1))


if __name__ == "__main__":
    main()
