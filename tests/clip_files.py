"""Real clip files for the tests: videos written with PyAV (FFmpeg) and folders of frames, from
scikit-image's photographs panned across, or frames of one grey level each (the level tells
which frame a sample took)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from PIL import Image


def panned(photo: np.ndarray, count: int, height: int = 48, width: int = 64) -> list[np.ndarray]:
    """``count`` crops of ``photo`` moving from its top left towards its bottom right."""
    rows, cols = photo.shape[0] - height, photo.shape[1] - width
    steps = max(count - 1, 1)
    return [np.ascontiguousarray(photo[rows * i // steps // 2:][:height, cols * i // steps // 2:][:, :width])
            for i in range(count)]


def numbered(count: int, height: int = 20, width: int = 24) -> list[np.ndarray]:
    """Frame k is grey level 10 * (k + 1) throughout."""
    return [np.full((height, width, 3), 10 * (k + 1), dtype=np.uint8) for k in range(count)]


def write_video(path: Path, frames: list[np.ndarray], *, rate: int = 30, codec: str = "mpeg4") -> Path:
    """A video file; ``ffv1`` (in .mkv) is lossless and records no frame count in its header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "bgr0" if codec == "ffv1" else "yuv420p"
        if codec == "mpeg4":
            stream.bit_rate = 4_000_000
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def write_frames(folder: Path, frames: list[np.ndarray], names: str = "frame_{}.png") -> Path:
    """A folder of frames named frame_1.png, frame_2.png, ... (numbers not zero-padded)."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, frame in enumerate(frames, start=1):
        Image.fromarray(frame).save(folder / names.format(k))
    return folder


def clip_tree(root: Path) -> Path:
    """train/ and val/ with three classes: an MPEG-4 video, a lossless Matroska video, a folder of frames."""
    from skimage import data
    for split in ("train", "val"):
        write_video(root / split / "astronaut" / "walk.mp4", panned(data.astronaut(), 20))
        write_video(root / split / "coffee" / "pour.mkv", panned(data.coffee(), 12), codec="ffv1")
        write_frames(root / split / "chelsea" / "cat", panned(data.chelsea(), 10))
    return root
