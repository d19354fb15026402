"""Data: Fashion-MNIST from its idx files (tiny ones written here, and the real ones that
Debian's dataset-fashion-mnist installs), read by torchvision's reader."""

import gzip
import struct
from pathlib import Path

import pytest
import torch

from usconvert.data import FASHION_MNIST_DIR, DataConfig, DataError, SeededTransform, load_data, subset


def write_idx(path: Path, tensor: torch.Tensor, packed: bool) -> None:
    """The idx format: magic (0, 0, type 0x08 = uint8, dims), the sizes big-endian, the bytes."""
    header = struct.pack(">BBBB", 0, 0, 8, tensor.ndim) + b"".join(struct.pack(">I", n) for n in tensor.shape)
    data = header + tensor.to(torch.uint8).numpy().tobytes()
    if packed:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


@pytest.fixture
def tiny_fashion(tmp_path) -> tuple[Path, dict]:
    g = torch.Generator().manual_seed(0)
    made = {}
    for split, count, packed in (("train", 12, True), ("t10k", 5, False)):  # gzipped and plain alike
        images = torch.randint(0, 256, (count, 28, 28), generator=g)
        labels = torch.randint(0, 10, (count,), generator=g)
        write_idx(tmp_path / f"{split}-images-idx3-ubyte", images, packed)
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte", labels, packed)
        made[split] = (images, labels)
    return tmp_path, made


def test_idx_files_anywhere_become_the_models_input(tiny_fashion):
    root, made = tiny_fashion
    config = DataConfig(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    splits = load_data(f"fashion-mnist:{root}", (3, 28, 28), config, num_classes=10)
    assert (len(splits.train), len(splits.val), splits.num_classes) == (12, 5, 10)
    image, label = splits.val[2]
    expected = (made["t10k"][0][2].float() / 255 - 0.5) / 0.25
    assert image.shape == (3, 28, 28) and label == int(made["t10k"][1][2])
    assert torch.allclose(image, expected.expand(3, -1, -1))  # grey, repeated to the model's channels
    resized = load_data(f"fashion-mnist:{root}", (1, 16, 16), config, num_classes=10)
    assert resized.train[0][0].shape == (1, 16, 16) and resized.calibration[0][0].shape == (1, 16, 16)


def test_missing_files_say_which_and_how_to_install():
    with pytest.raises(DataError, match=r"needs .*train-images-idx3-ubyte\[.gz\].* in /nowhere$"):
        load_data("fashion-mnist:/nowhere", (1, 28, 28), DataConfig(), num_classes=10)


def test_the_installed_fashion_mnist():
    """The real data set (`apt-get install dataset-fashion-mnist`; .ci/run installs it)."""
    assert FASHION_MNIST_DIR.is_dir(), "apt-get install dataset-fashion-mnist"
    splits = load_data("fashion-mnist", (3, 32, 32), DataConfig(), num_classes=10)
    assert (len(splits.train), len(splits.val)) == (60000, 10000)
    labels = torch.tensor([splits.val.labels[i] for i in range(10000)])
    assert torch.equal(torch.bincount(labels), torch.full((10,), 1000))  # the balanced test split
    assert splits.train[0][0].shape == (3, 32, 32)


def test_a_subset_draws_the_same_images_for_a_seed_and_keeps_augmentation_seeded(tiny_fashion):
    root, made = tiny_fashion
    splits = load_data(f"fashion-mnist:{root}", (3, 28, 28), DataConfig(), num_classes=10, seed=0)
    small = subset(splits, train=4, val=3, seed=7)
    again = subset(splits, train=4, val=3, seed=7)
    assert (len(small.train), len(small.val), len(small.calibration)) == (4, 3, 4)
    assert isinstance(small.train, SeededTransform)  # the trainer sets its epoch
    labels = [int(small.calibration[i][1]) for i in range(4)]
    assert labels == [int(again.calibration[i][1]) for i in range(4)]
    picked = small.calibration.indices
    assert small.train.base.indices == picked and len(set(picked)) == 4  # augmented and plain: the same images
    assert [int(made["train"][1][i]) for i in picked] == labels
    assert subset(splits, train=None, val=100).val is splits.val  # more than there are: all of them
    with pytest.raises(DataError, match="--train-samples must be at least 1"):
        subset(splits, train=0)
