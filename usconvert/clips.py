"""Clip folders for video classifiers: the layout torchvision's Kinetics reader takes
(``train/<class>/<clip>.mp4``, any container FFmpeg reads) and the raw-frame layout of mmaction2
(``train/<class>/<clip>/`` holding its frames as image files, in name order), with ``val/`` (or
``validation/``) beside ``train/``.

A sample is ``T`` frames of a clip (T from the network's C,T,H,W), resampled to the frame rate its
weights were trained at (torchvision's recipe: 15 frames a second for the video ResNets, 7.5 for
MViT; frames as stored where the rate is unknown, as for a folder of frames). Training draws the
clip's start, a crop and a flip per sample (all frames share them); evaluation takes the central
crop of ``clips_per_video`` windows spread evenly over the clip (one: the central window), and a
video's prediction is the mean of its windows' softmax (``forward_videos``): torchvision's
video-level accuracy, with the number of clips its weights record (5 for the video ResNets and
MViTs, 12 for Video Swin). Frames are resized so that the crop is ``crop_pct`` of the short side,
as for images. A clip shorter than its window loops, as mmaction2's ``SampleFrames`` does.

Video files are decoded with PyAV, whose wheels carry FFmpeg (torchvision's own reader, which was
PyAV too, left torchvision; TorchCodec needs FFmpeg's libraries installed beside it): ``pip install
av``. Decoding runs from the clip's beginning to the last frame a sample needs, so a loader
spends its time in proportion to how far into a clip samples reach: cut long videos into clips
beforehand, as the Kinetics recipes do. Seeking would not shorten that for such clips: a decoder
starts at the keyframe before the first frame it is asked for, and FFmpeg's H.264 encoder puts
one every 250 frames by default (the 10-second clip of benchmarks/clip_loading.py has two,
frames 0 and 250), so a seek would land on frame 0 for every window starting before frame 250.
"""

from __future__ import annotations

import math
import random
import re
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import Dataset

from .errors import DataError

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ogv", ".ts", ".gif")

# Which frames of a clip of ``count`` frames (at ``rate`` frames a second, None if unknown) a sample takes.
ChooseFrames = Callable[[int, "float | None"], list[int]]


def _images_in(folder: Path) -> Iterator[Path]:
    from torchvision.datasets.folder import IMG_EXTENSIONS
    return (p for p in folder.iterdir() if p.suffix.lower() in IMG_EXTENSIONS and p.is_file())


def _natural_key(path: Path) -> list[object]:
    """frame_2 before frame_10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def frame_files(folder: Path) -> list[Path]:
    """A raw-frame clip's images, in natural name order."""
    return sorted(_images_in(folder), key=_natural_key)


def _is_clip(path: Path) -> bool:
    if path.is_file():
        return path.suffix.lower() in VIDEO_SUFFIXES
    return path.is_dir() and next(_images_in(path), None) is not None


Clips = list[tuple[Path, int]]  # each clip with its label


def find_clips(split: Path, class_to_idx: dict[str, int] | None = None) -> tuple[Clips, dict[str, int]]:
    """Every clip under ``split``'s class folders with its label; ``class_to_idx`` from the
    training split holds the validation split to the same labels."""
    from torchvision.datasets.folder import find_classes
    try:
        classes, found = find_classes(str(split))
    except FileNotFoundError as exc:
        raise DataError(f"{split}: {exc}") from None
    if class_to_idx is not None:
        unknown = sorted(set(classes) - set(class_to_idx))
        if unknown:
            raise DataError(f"{split} has classes the training split lacks: {', '.join(unknown)}")
        found = {name: class_to_idx[name] for name in classes}
    clips, empty = [], []
    for name in classes:
        entries = [p for p in sorted((split / name).iterdir(), key=_natural_key) if _is_clip(p)]
        if not entries:
            empty.append(name)
        clips.extend((path, found[name]) for path in entries)
    if empty:
        raise DataError(f"{split}: no clips in {', '.join(empty)} (a clip is a video file, "
                        f"{' '.join(VIDEO_SUFFIXES)}, or a folder of its frames as images)")
    return clips, class_to_idx or found


def _pyav():
    try:
        import av
    except ImportError:
        raise DataError("reading video files needs PyAV: pip install av") from None
    return av


def _read_video(path: Path, choose: ChooseFrames, count: int | None = None) -> torch.Tensor:
    av = _pyav()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path} holds no video stream")
            stream = container.streams.video[0]
            rate = float(stream.average_rate or stream.guessed_rate or 0) or None
            if count is None:  # the header's count, else the packets' (a lossless Matroska file records none)
                count = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
                container.seek(0)
            if count == 0:
                raise DataError(f"{path} holds no frames")
            wanted = choose(count, rate)
            needed, last, decoded, read = set(wanted), max(wanted), {}, 0
            for read, frame in enumerate(container.decode(stream), start=1):
                if read - 1 in needed:
                    decoded[read - 1] = torch.from_numpy(frame.to_ndarray(format="rgb24"))
                if read > last:
                    break
    except av.error.FFmpegError as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if len(decoded) < len(needed):  # the header promised more frames than the stream holds
        if read == 0:
            raise DataError(f"{path} holds no frames")
        return _read_video(path, choose, count=read)
    return torch.stack([decoded[i] for i in wanted])


def _read_frames(folder: Path, choose: ChooseFrames) -> torch.Tensor:
    import numpy as np
    from PIL import Image
    files = frame_files(folder)
    if not files:
        raise DataError(f"{folder} holds no frames")
    wanted = choose(len(files), None)
    opened: dict[int, torch.Tensor] = {}
    for i in sorted(set(wanted)):
        with Image.open(files[i]) as image:
            opened[i] = torch.from_numpy(np.asarray(image.convert("RGB")).copy())
    shapes = {tuple(t.shape) for t in opened.values()}
    if len(shapes) > 1:
        raise DataError(f"{folder}: frames of different sizes {sorted(shapes)}")
    return torch.stack([opened[i] for i in wanted])


def read_clip(path: Path, choose: ChooseFrames) -> torch.Tensor:
    """The frames ``choose`` picks, as uint8 (T, H, W, 3)."""
    return _read_frames(path, choose) if path.is_dir() else _read_video(path, choose)


def windows(count: int, frames: int, step: float, clips: int, draw: Any = None) -> list[list[int]]:
    """The frame indices of ``clips`` windows of ``frames`` frames in a clip of ``count``, resampled
    by ``step`` (source frames a second over the network's) as torchvision resamples a video:
    every step-th frame for a whole step, else ``floor(count / step)`` frames, the i-th being frame
    ``floor(i * step)``. Each window's first frame is drawn uniformly over the positions where it
    fits with ``draw.randint`` (a ``random.Random``, or the ``random`` module that SeededTransform
    seeds per sample); without ``draw``, one window is central and several have their first frames
    spread evenly from the first position to the last (torchvision's ``UniformClipSampler``, which
    takes the first window for one). A clip shorter than the window loops."""
    if float(step).is_integer():
        resampled = -(-count // int(step))
    else:
        resampled = max(1, math.floor(count / step + 1e-9))
    last = resampled - frames  # the last position where a window fits
    if last < 0:
        positions = [[k % resampled for k in range(frames)]] * clips
    else:
        if draw is not None:
            firsts = [draw.randint(0, last) for _ in range(clips)]
        elif clips == 1:
            firsts = [last // 2]
        else:
            firsts = [k * last // (clips - 1) for k in range(clips)]
        positions = [list(range(first, first + frames)) for first in firsts]
    return [[math.floor(i * step) for i in indices] for indices in positions]


def forward_videos(model: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor,
                   sample_dims: int) -> torch.Tensor:
    """``model``'s output for a batch of samples of ``sample_dims`` dimensions; for a batch of
    several clips per video (B, N, C, T, H, W), the log of the clips' mean softmax per video:
    torchvision's video-level prediction, which top-k and cross entropy read as they read logits."""
    if inputs.dim() != sample_dims + 2:
        return model(inputs)
    videos, clips = inputs.shape[:2]
    probabilities = model(inputs.flatten(0, 1)).float().softmax(-1).view(videos, clips, -1).mean(1)
    return probabilities.clamp_min(torch.finfo(probabilities.dtype).tiny).log()


class ClipTransform:
    """A clip file or folder to a normalised (C, T, H, W) tensor for a network of ``input_size``:
    ``frame_rate`` frames a second (None: as stored), resized with ``interpolation`` so that the
    crop is ``crop_pct`` of the short side, normalised by ``mean`` and ``std``. For evaluation
    with ``clips_per_video`` above one, (N, C, T, H, W): that many windows, each cropped alike."""

    def __init__(self, input_size: tuple[int, ...], *, mean: tuple[float, ...], std: tuple[float, ...],
                 interpolation: str, crop_pct: float, frame_rate: float | None, clips_per_video: int = 1,
                 training: bool):
        channels, self.frames, self.height, self.width = input_size
        if channels != 3:
            raise DataError(f"clips are RGB, and this network takes {channels} channels")
        if clips_per_video < 1:
            raise DataError(f"clips_per_video must be at least 1, got {clips_per_video}")
        self.clips = 1 if training else clips_per_video
        tensor_modes = ("nearest", "bilinear", "bicubic")  # what torchvision resizes tensors with
        self.interpolation = interpolation if interpolation in tensor_modes else "bilinear"
        self.frame_rate, self.training = frame_rate, training
        self.short_side = math.floor(max(self.height, self.width) / crop_pct + 1e-6)  # timm's, less float noise
        self.mean = torch.tensor(mean).view(-1, 1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1, 1)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(frames={self.frames}, size={self.height}x{self.width}, "
                f"frame_rate={self.frame_rate}, clips={self.clips}, training={self.training})")

    def _choose(self, count: int, rate: float | None) -> list[int]:
        step = rate / self.frame_rate if rate and self.frame_rate else 1.0
        chosen = windows(count, self.frames, step, self.clips, random if self.training else None)
        return [index for indices in chosen for index in indices]

    def __call__(self, path: Path) -> torch.Tensor:
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.v2 import functional as TF
        frames = read_clip(path, self._choose).permute(0, 3, 1, 2)  # T, 3, H, W
        frames = TF.resize(frames, [self.short_side], interpolation=InterpolationMode(self.interpolation),
                           antialias=True)  # the short side, as timm's and torchvision's evaluation transforms
        if self.training:
            height, width = frames.shape[-2:]
            top, left = random.randint(0, height - self.height), random.randint(0, width - self.width)
            frames = TF.crop(frames, top, left, self.height, self.width)
            if random.random() < 0.5:
                frames = TF.horizontal_flip(frames)
        else:
            frames = TF.center_crop(frames, [self.height, self.width])
        clips = frames.unflatten(0, (self.clips, self.frames)).transpose(1, 2)  # N, C, T, H, W
        clips = (clips.float().div(255) - self.mean) / self.std
        return clips[0] if self.clips == 1 else clips


class ClipFolder(Dataset):
    """The clips of one split; each item a (C, T, H, W) tensor through ``transform`` and a label,
    or the clip's path without one (for SeededTransform to transform with a seeded draw)."""

    def __init__(self, clips: Clips, transform: ClipTransform | None):
        self.clips, self.transform = clips, transform

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | Path, int]:
        path, label = self.clips[index]
        return (self.transform(path) if self.transform is not None else path), label

