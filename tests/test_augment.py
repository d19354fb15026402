"""Random resized crops of a whole batch: torchvision's box rule and resampling, each sample's
crop its own whatever batch, worker or epoch it is loaded in."""

import random

import pytest
import torch
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as VF

from usconvert.augment import RandomResizedCrops
from usconvert.data import DataConfig, SeededTransform, TensorImages, digits


@pytest.mark.parametrize("scale,ratio,size", [((0.8, 1.0), (0.8, 1.25), (32, 32)), ((0.05, 1.0), (0.5, 2.0), (24, 40))])
def test_a_batch_of_crops_resamples_as_torchvision_resizes_each_crop(scale, ratio, size):
    crops = RandomResizedCrops(scale, ratio)
    images = torch.randn(64, 3, *size, generator=torch.Generator().manual_seed(0))
    rng = random.Random(0)
    boxes = [crops.box(rng, *size) for _ in images]
    batch = crops(images, boxes)
    for image, box, cropped in zip(images, boxes, batch):
        # at the crop's edges too, where interpolate repeats the edge pixel instead of blending in the
        # next; up to float32 sample positions (a half-pixel shift or a blended edge differs by ~0.1 and more)
        torch.testing.assert_close(cropped, VF.resized_crop(image, *box, size=list(size), antialias=True),
                                   rtol=0, atol=1e-4)
    torch.testing.assert_close(crops(images[:2], [(0, 0, *size)] * 2), images[:2], rtol=0, atol=1e-5)  # itself


def test_boxes_keep_to_the_scale_and_ratio_and_fall_back_as_torchvision_does():
    crops = RandomResizedCrops(scale=(0.5, 1.0), ratio=(0.8, 1.25))
    rng = random.Random(1)
    boxes = [crops.box(rng, 32, 32) for _ in range(2000)]
    for top, left, h, w in boxes:
        assert 0 <= top <= 32 - h and 0 <= left <= 32 - w
        assert 0.5 - 0.07 <= h * w / 1024 <= 1.0 and 0.8 / 1.1 <= w / h <= 1.25 * 1.1  # up to whole pixels
    areas = [h * w / 1024 for _, _, h, w in boxes]
    assert 0.68 < sum(areas) / len(areas) < 0.76  # uniform in scale, less the draws that did not fit
    assert len({(top, left) for top, left, _, _ in boxes}) > 100  # placed anywhere
    # no draw fits a 10x40 image at the whole area: the central crop at the nearest ratio, as torchvision's
    wide = RandomResizedCrops(scale=(1.0, 1.0), ratio=(3 / 4, 4 / 3))
    theirs = transforms.RandomResizedCrop.get_params(torch.zeros(1, 10, 40), [1.0, 1.0], [3 / 4, 4 / 3])
    assert wide.box(random.Random(0), 10, 40) == tuple(theirs)  # top, left, height, width


def test_a_samples_crop_does_not_depend_on_its_batch_or_the_loaders_workers():
    images = torch.randn(40, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    augmented = SeededTransform(TensorImages(images, torch.arange(40)), RandomResizedCrops((0.5, 1.0)), 3)
    alone = torch.stack([augmented[i][0] for i in (5, 17, 30)])
    batch = augmented.__getitems__([30, 5, 17])
    assert torch.equal(torch.stack([batch[1][0], batch[2][0], batch[0][0]]), alone)
    assert [label for _, label in batch] == [30, 5, 17]
    loaded = [torch.cat([x for x, _ in DataLoader(augmented, batch_size=8, num_workers=workers)])
              for workers in (0, 2)]
    assert torch.equal(loaded[0], loaded[1]) and torch.equal(loaded[0][[5, 17, 30]], alone)
    augmented.set_epoch(1)
    assert not torch.equal(augmented[5][0], alone[0])  # a new crop each epoch
    augmented.set_epoch(0)
    assert torch.equal(augmented[5][0], alone[0])


def test_augmentation_seeds_only_the_cpu_generator(monkeypatch):
    """torch.manual_seed reseeds every CUDA generator too: on a GPU each sample's transform would
    reset the stream of dropout masks. The batch crops draw from generators of their own; any
    other transform (timm's for an image folder) runs with the CPU generator seeded per sample."""
    reseeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: reseeded.append(seed))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: reseeded.append(seed))
    splits = digits((3, 16, 16), DataConfig(), scale_min=0.5)
    per_sample = SeededTransform(splits.train.base, v2.RandomResizedCrop((16, 16), scale=(0.5, 1.0)), seed=0)
    for dataset in (splits.train, per_sample):
        state = torch.get_rng_state()
        first = dataset[0][0]
        assert torch.equal(first, dataset[0][0])  # seeded per sample
        assert torch.equal(torch.get_rng_state(), state)  # and the caller's stream left as it was
    assert not reseeded
