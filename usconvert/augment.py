"""A random resized crop for a batch of tensor images at once, one box per image.

torchvision's ``RandomResizedCrop`` transforms one image a call: on a 32x32 image most of its
cost is dispatch, not arithmetic, and nine small networks training at once on one GPU would
spend about half of the GPU machine's CPU time loading that way (docs/BENCHMARKS.md, "Loading
a batch"; docs/RESULTS.md, "Table 1 at full scale on one GPU"). Here
each image draws its box with torchvision's rule from a generator of its own (so a sample's crop
does not depend on the batch it lands in), and one ``grid_sample`` call resamples the whole
batch as torchvision's ``resized_crop`` resamples each crop.
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F

Box = tuple[int, int, int, int]  # top, left, height, width in pixels


class RandomResizedCrops:
    """Crops of ``scale`` of the area and ``ratio`` of aspect, resized back to the image's size.

    The box rule is torchvision's (ten tries, then the central crop nearest the ratio), the
    resampling its bilinear one. A box never exceeds the image, so a crop is only ever enlarged
    (or kept), and antialiasing has nothing to do.
    """

    def __init__(self, scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3)):
        if not (0 < scale[0] <= scale[1] <= 1 and 0 < ratio[0] <= ratio[1]):
            raise ValueError(f"scale {scale} must lie in (0, 1] and ratio {ratio} be positive, each as (min, max)")
        self.scale, self.ratio = scale, ratio
        self._log_ratio = (math.log(ratio[0]), math.log(ratio[1]))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scale={self.scale}, ratio={self.ratio})"

    def box(self, rng: random.Random, height: int, width: int) -> Box:
        """One image's crop, drawn from ``rng``."""
        area = height * width
        for _ in range(10):
            target_area = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*self._log_ratio))
            w = round(math.sqrt(target_area * aspect))
            h = round(math.sqrt(target_area / aspect))
            if 0 < w <= width and 0 < h <= height:
                return rng.randint(0, height - h), rng.randint(0, width - w), h, w
        h, w = height, width  # no draw fitted: the central crop nearest the ratio
        if width / height < self.ratio[0]:
            h = round(width / self.ratio[0])
        elif width / height > self.ratio[1]:
            w = round(height * self.ratio[1])
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, images: torch.Tensor, boxes: list[Box]) -> torch.Tensor:
        """``images`` (N, C, H, W) cropped to ``boxes`` (one each) and resized back to H x W."""
        if len(boxes) != len(images):
            raise ValueError(f"{len(boxes)} boxes for {len(images)} images")
        height, width = images.shape[-2:]
        top, left, h, w = torch.tensor(boxes, dtype=images.dtype, device=images.device).unsqueeze(-1).unbind(1)
        ys = _centres(top, h, height) / height * 2 - 1  # grid_sample's coordinates: -1 to 1 edge to edge
        xs = _centres(left, w, width) / width * 2 - 1
        grid = torch.stack(torch.broadcast_tensors(xs[:, None, :], ys[:, :, None]), dim=-1)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _centres(start: torch.Tensor, length: torch.Tensor, out: int) -> torch.Tensor:
    """Where each of ``out`` output pixels samples a crop of ``length`` pixels from ``start``, in
    pixel edges (pixel k spans [k, k + 1)): F.interpolate's source (align_corners=False), held
    to the crop's first and last pixel centres as interpolate holds it to the crop."""
    centres = start + (torch.arange(out, dtype=start.dtype, device=start.device) + 0.5) * length / out
    return torch.minimum(torch.maximum(centres, start + 0.5), start + length - 0.5)
