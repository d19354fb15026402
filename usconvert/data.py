"""Datasets and loaders: a torchvision ``ImageFolder`` tree through timm's dataset and transform
factories, the embedded ``digits`` set (scikit-learn's 1,797 real handwritten digits, nothing to
download), Fashion-MNIST from its four idx files (Debian's ``dataset-fashion-mnist`` installs
them) and ``fake:N`` for smoke runs.

Augmentation is seeded per sample from (seed, epoch, index), so a run's data does not depend on
the number of loader workers or on the batch a sample lands in, and a resumed run sees exactly
the batches it would have seen. Tensor data sets hand a loader whole batches (``__getitems__``).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from .augment import RandomResizedCrops
from .clips import ClipFolder, ClipTransform, find_clips
from .errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DIGITS_VAL_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


@dataclass
class DataConfig:
    """Preprocessing that belongs to the model (timm's pretrained config)."""

    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"
    crop_pct: float = 0.875
    frame_rate: float | None = None  # frames a second a video clip is resampled to; None: as stored
    clips_per_video: int = 1  # windows of a clip whose mean prediction is a video's, in evaluation

    @classmethod
    def of(cls, model: torch.nn.Module) -> "DataConfig":
        from timm.data import resolve_model_data_config
        cfg = resolve_model_data_config(model)
        video = getattr(model, "pretrained_cfg", None) or {}  # timm's resolver drops what is only video's
        rate = video.get("frame_rate")
        return cls(tuple(cfg["mean"]), tuple(cfg["std"]), cfg.get("interpolation", "bilinear"),
                   float(cfg.get("crop_pct", 0.875)), None if rate is None else float(rate),
                   int(video.get("clips_per_video", 1)))


@dataclass
class Splits:
    train: Dataset
    val: Dataset
    num_classes: int
    name: str
    train_plain: Dataset | None = None  # the training images with evaluation transforms

    @property
    def calibration(self) -> Dataset:
        return self.train_plain if self.train_plain is not None else self.train


class SeededTransform(Dataset):
    """Applies a random transform seeded per sample from (seed, epoch, index). A batch of random
    resized crops (``RandomResizedCrops``) draws each sample's box from a generator of its own
    and resamples the batch at once (``__getitems__``, which DataLoader calls with a batch's
    indices); any other transform runs per sample, with Python's and torch's CPU generators
    seeded and restored afterwards. CUDA generators are never touched."""

    def __init__(self, base: Dataset, transform: Callable | None, seed: int):
        self.base, self.transform, self.seed = base, transform, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)

    def _sample_seed(self, index: int) -> int:
        return (self.seed * 1_000_003 + self.epoch) * 10_000_019 + index

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if isinstance(self.transform, RandomResizedCrops):
            return self.__getitems__([index])[0]
        image, label = self.base[index]
        if self.transform is None:
            return image, label
        sample_seed, state = self._sample_seed(index), random.getstate()
        # the CPU generator alone: torch.manual_seed would reseed every CUDA generator too (and
        # with them the dropout masks of training on a GPU), which fork_rng(devices=[]) does not restore
        with torch.random.fork_rng(devices=[]):
            random.seed(sample_seed)
            torch.default_generator.manual_seed(sample_seed % (2 ** 63))
            image = self.transform(image)
        random.setstate(state)
        return image, label

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        if not isinstance(self.transform, RandomResizedCrops):
            return [self[i] for i in indices]
        images, labels = zip(*_items(self.base, indices))
        batch = torch.stack(images)
        boxes = [self.transform.box(random.Random(self._sample_seed(i)), *batch.shape[-2:]) for i in indices]
        return list(zip(self.transform(batch, boxes).unbind(0), labels))


def _items(dataset: Dataset, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
    if hasattr(dataset, "__getitems__"):  # a batch at once (Subset passes it on to its dataset)
        return dataset.__getitems__(indices)
    return [dataset[i] for i in indices]


class TensorImages(Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        chosen = torch.as_tensor(indices)
        return list(zip(self.images[chosen].unbind(0), self.labels[chosen].tolist()))


def _normalize(images: torch.Tensor, config: DataConfig) -> torch.Tensor:
    mean = torch.tensor(config.mean).view(1, -1, 1, 1)
    std = torch.tensor(config.std).view(1, -1, 1, 1)
    return (images - mean) / std


def _tensor_augmentation(scale_min: float) -> RandomResizedCrops:
    return RandomResizedCrops(scale=(scale_min, 1.0), ratio=(0.8, 1.25))


def digits(input_size: tuple[int, ...], config: DataConfig, *, scale_min: float = 0.8, seed: int = 0) -> Splits:
    """scikit-learn's handwritten digits, 8x8 grey levels upscaled to the model's input size,
    with a fixed seeded 80/20 train/val split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.long)
    channels, height, width = input_size
    images = F.interpolate(images, size=(height, width), mode="bilinear", align_corners=False).clamp(0, 1)
    images = _normalize(images.expand(-1, channels, -1, -1), config)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED))
    n_val = int(len(labels) * DIGITS_VAL_FRACTION)
    val, train = order[:n_val], order[n_val:]
    augment = _tensor_augmentation(scale_min) if scale_min < 1.0 else None
    plain = TensorImages(images[train], labels[train])
    return Splits(SeededTransform(plain, augment, seed), TensorImages(images[val], labels[val]), 10, "digits", plain)


FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # where apt-get install dataset-fashion-mnist puts it
FASHION_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                       "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


class GreyImages(Dataset):
    """Grey uint8 images kept at the model's input size, turned into normalised tensors with the
    model's channel count one at a time (60,000 float images of 3x32x32 would take 740 MB)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, channels: int, config: DataConfig):
        self.images, self.labels, self.channels, self.config = images, labels, channels, config
        self.mean = torch.tensor(config.mean[:channels] if len(config.mean) >= channels else config.mean[:1] * channels)
        self.std = torch.tensor(config.std[:channels] if len(config.std) >= channels else config.std[:1] * channels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        chosen = torch.as_tensor(indices)
        images = self.images[chosen].float().div(255).expand(-1, self.channels, -1, -1)
        images = (images - self.mean[:, None, None]) / self.std[:, None, None]
        return list(zip(images.unbind(0), self.labels[chosen].tolist()))


def _read_idx(folder: Path, name: str) -> torch.Tensor:
    """One idx file (plain or .gz), read by torchvision's reader."""
    import gzip
    import tempfile

    from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor
    plain, packed = folder / name, folder / f"{name}.gz"
    if plain.is_file():
        return read_sn3_pascalvincent_tensor(str(plain), strict=False)
    with tempfile.TemporaryDirectory() as tmp:  # the reader takes an uncompressed file
        unpacked = Path(tmp) / name
        with gzip.open(packed, "rb") as source, open(unpacked, "wb") as target:
            target.write(source.read())
        return read_sn3_pascalvincent_tensor(str(unpacked), strict=False)


def fashion_mnist(input_size: tuple[int, ...], config: DataConfig, root: Path = FASHION_MNIST_DIR, *,
                  scale_min: float = 0.8, seed: int = 0) -> Splits:
    """Fashion-MNIST's 60,000 training and 10,000 test images (the validation split), 28x28 grey
    levels resized to the model's input size and repeated to its channel count."""
    missing = [f"{name}[.gz]" for names in FASHION_MNIST_FILES.values() for name in names
               if not (root / name).is_file() and not (root / f"{name}.gz").is_file()]
    if missing:
        install = " (apt-get install dataset-fashion-mnist installs them)" if root == FASHION_MNIST_DIR else ""
        raise DataError(f"Fashion-MNIST needs {', '.join(missing)} in {root}{install}")
    channels, height, width = input_size
    splits = {}
    for split, (images_file, labels_file) in FASHION_MNIST_FILES.items():
        images, labels = _read_idx(root, images_file), _read_idx(root, labels_file).long()
        if images.ndim != 3 or len(images) != len(labels):
            raise DataError(f"{root / images_file} and {labels_file} do not hold matching 2D images and labels")
        if images.shape[1:] != (height, width):
            resized = F.interpolate(images[:, None].float(), size=(height, width), mode="bilinear",
                                    align_corners=False, antialias=True)
            images = resized.round().clamp(0, 255).to(torch.uint8)[:, 0]
        splits[split] = GreyImages(images[:, None], labels, channels, config)
    augment = _tensor_augmentation(scale_min) if scale_min < 1.0 else None
    name = "fashion-mnist" if root == FASHION_MNIST_DIR else f"fashion-mnist:{root}"
    return Splits(SeededTransform(splits["train"], augment, seed), splits["test"], 10, name, splits["train"])


def fake(count: int, input_size: tuple[int, ...], num_classes: int, *, seed: int = 0) -> Splits:
    """Random images with random labels, for smoke runs."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(count, *input_size, generator=generator)
    labels = torch.randint(0, num_classes, (count,), generator=generator)
    n_val = max(1, count // 5)
    return Splits(TensorImages(images[n_val:], labels[n_val:]), TensorImages(images[:n_val], labels[:n_val]),
                  num_classes, f"fake:{count}")


def image_folder(root: Path, input_size: tuple[int, ...], config: DataConfig, *, scale_min: float = 0.25,
                 seed: int = 0) -> Splits:
    """A torchvision ImageFolder tree with train/ and val/ (or validation/), through timm."""
    from timm.data import create_dataset, create_transform

    def split(name: str) -> Any:
        try:
            return create_dataset("", root=str(root), split=name, search_split=True)
        except Exception as exc:
            raise DataError(f"cannot read the {name} split of {root}: {exc}") from exc

    _split_folders(root, "images")
    train, val, plain = split("train"), split("validation"), split("train")
    train_tf = create_transform(input_size, is_training=True, scale=(scale_min, 1.0),
                                interpolation=config.interpolation,
                                mean=config.mean, std=config.std)
    val.transform = plain.transform = create_transform(input_size, is_training=False,
                                                       interpolation=config.interpolation, mean=config.mean,
                                                       std=config.std, crop_pct=config.crop_pct)
    classes = train.reader.class_to_idx if hasattr(train, "reader") else None
    num_classes = len(classes) if classes else len(getattr(train, "classes", []))
    return Splits(SeededTransform(train, train_tf, seed), val, num_classes, str(root), plain)


def _split_folders(root: Path, what: str) -> tuple[Path, Path]:
    """``root``'s train/ and val/ (or validation/) folders."""
    found = []
    for names in (("train",), ("val", "validation")):
        folders = [root / name for name in names if (root / name).is_dir()]
        if not folders:
            raise DataError(f"{root} needs a {' or '.join(n + '/' for n in names)} folder of class folders of {what}")
        found.append(folders[0])
    return found[0], found[1]


def clip_folder(root: Path, input_size: tuple[int, ...], config: DataConfig, *, seed: int = 0) -> Splits:
    """A tree of video clips (files, or folders of frames) for a network of C,T,H,W input: train/
    and val/ (or validation/) of class folders (usconvert.clips)."""
    train_root, val_root = _split_folders(root, "clips")
    train, classes = find_clips(train_root)
    val, _ = find_clips(val_root, classes)
    training = ClipTransform(input_size, **asdict(config), training=True)
    evaluate = ClipTransform(input_size, **asdict(config), training=False)
    # calibration and the search's held-out scores take one central clip, a sample of the network's input size
    central = ClipTransform(input_size, **asdict(replace(config, clips_per_video=1)), training=False)
    return Splits(SeededTransform(ClipFolder(train, None), training, seed), ClipFolder(val, evaluate), len(classes),
                  str(root), ClipFolder(train, central))


def load_data(spec: str, input_size: tuple[int, ...], config: DataConfig, *, num_classes: int,
              scale_min: float | None = None, seed: int = 0) -> Splits:
    """``digits``, ``fashion-mnist`` (or ``fashion-mnist:DIR``), ``fake:N`` or a directory: of
    images (an ImageFolder tree) for C,H,W input, of clips for C,T,H,W."""
    clips = len(input_size) == 4
    image_set = spec in ("digits", "fashion-mnist") or spec.startswith("fashion-mnist:")
    if len(input_size) != 3 and not spec.startswith("fake:") and (image_set or not clips):
        shape = "x".join(map(str, input_size))
        if clips:
            raise DataError(f"--data {spec} holds images, and this network takes clips of {shape} (C,T,H,W): give "
                            f"a directory of clips (train/ and val/ of class folders of videos) or fake:N")
        raise DataError(f"--data {spec} holds images, and this network takes inputs of {shape}, not C,H,W; only "
                        f"fake:N has inputs of any shape")
    if spec == "digits":
        return digits(input_size, config, scale_min=0.8 if scale_min is None else scale_min, seed=seed)
    if spec == "fashion-mnist" or spec.startswith("fashion-mnist:"):
        root = Path(spec.split(":", 1)[1]) if ":" in spec else FASHION_MNIST_DIR
        return fashion_mnist(input_size, config, root, scale_min=0.8 if scale_min is None else scale_min, seed=seed)
    if spec.startswith("fake:"):
        try:
            count = int(spec.split(":", 1)[1])
        except ValueError:
            raise DataError(f"--data fake:N needs a number of images, got {spec!r}") from None
        return fake(count, input_size, num_classes, seed=seed)
    root = Path(spec)
    folder = "a directory of clips" if clips else "an ImageFolder directory"
    if not root.exists():
        raise DataError(f"--data {spec}: no such directory (--data takes digits, fashion-mnist, fake:N or "
                        f"{folder} with train/ and val/)")
    if not root.is_dir():
        raise DataError(f"--data {spec} is a file; --data takes digits, fashion-mnist, fake:N or {folder}")
    if clips:
        return clip_folder(root, input_size, config, seed=seed)
    return image_folder(root, input_size, config, scale_min=0.25 if scale_min is None else scale_min, seed=seed)


def subset(splits: Splits, *, train: int | None = None, val: int | None = None, seed: int = 0) -> Splits:
    """The same splits with at most ``train`` training and ``val`` validation images, drawn
    once with ``seed`` (the same images for every run with that seed), so that a large data set
    fits a small budget."""
    def draw(dataset: Dataset, count: int | None, what: str) -> Dataset:
        if count is None or count >= len(dataset):
            return dataset
        if count < 1:
            raise DataError(f"--{what}-samples must be at least 1, got {count}")
        indices = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:count]
        return Subset(dataset, sorted(indices.tolist()))

    chosen = splits.train
    if isinstance(chosen, SeededTransform):  # keep the per-epoch augmentation seed reachable
        chosen = SeededTransform(draw(chosen.base, train, "train"), chosen.transform, chosen.seed)
    else:
        chosen = draw(chosen, train, "train")
    plain = draw(splits.train_plain, train, "train") if splits.train_plain is not None else None
    return replace(splits, train=chosen, val=draw(splits.val, val, "val"), train_plain=plain)


class ResumableSampler(DistributedSampler):
    """A distributed sampler (one replica when not distributed) that can start mid-epoch."""

    def __init__(self, dataset: Dataset, *, num_replicas: int, rank: int, seed: int, shuffle: bool = True,
                 drop_last: bool = True):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self.start = 0

    def __iter__(self):
        return iter(list(super().__iter__())[self.start:])

    def __len__(self) -> int:
        return super().__len__() - self.start


class ShardSampler(torch.utils.data.Sampler):
    """Disjoint, unpadded shards for evaluation: every sample is counted exactly once."""

    def __init__(self, size: int, num_replicas: int, rank: int):
        self.indices = list(range(rank, size, num_replicas))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def train_loader(dataset: Dataset, batch_size: int, *, seed: int, num_replicas: int = 1, rank: int = 0,
                 workers: int = 0) -> DataLoader:
    if len(dataset) < batch_size * num_replicas:
        raise DataError(f"the training split has {len(dataset)} images, fewer than one batch of "
                        f"{batch_size * num_replicas}; lower --batch-size")
    sampler = ResumableSampler(dataset, num_replicas=num_replicas, rank=rank, seed=seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=True,
                      generator=torch.Generator().manual_seed(seed), persistent_workers=False,
                      pin_memory=torch.cuda.is_available())


def calibration_loader(splits: Splits, batch_size: int, *, augment: bool = False, seed: int = 0,
                       num_replicas: int = 1, rank: int = 0, workers: int = 0) -> DataLoader:
    """Training images in a seeded random order (each rank its own share), with evaluation
    transforms unless ``augment``."""
    dataset = splits.train if augment else splits.calibration
    sampler = ResumableSampler(dataset, num_replicas=num_replicas, rank=rank, seed=seed, drop_last=False)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=torch.cuda.is_available())


def eval_loader(dataset: Dataset, batch_size: int, *, num_replicas: int = 1, rank: int = 0,
                workers: int = 0) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, sampler=ShardSampler(len(dataset), num_replicas, rank),
                      num_workers=workers, pin_memory=torch.cuda.is_available())
