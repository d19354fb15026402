"""Loading one clip for torchvision's r3d_18 (16 frames resampled to 15 a second, resized to a
short side of 128, cropped to 112) from a Kinetics-shaped clip: 10 seconds at 30 frames a second,
340x256, H.264 in MP4 (as Kinetics is usually stored), against the same frames as a folder of
JPEGs (mmaction2's raw frames, which take no decoding of the frames a sample skips). A
training sample (a random window, so on average half the clip is decoded), an evaluation
sample of the central window, and one of the 5 windows spread over the clip whose mean
prediction r3d_18's weights record their accuracy with (torchvision's video-level protocol,
usconvert's evaluation default for them); one thread, in the loading process, interleaved in
one run.

    python benchmarks/clip_loading.py [--repeats 9]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from clip_files import panned, write_frames, write_video  # noqa: E402
from common import environment, interleaved, report  # noqa: E402

from usconvert.clips import ClipTransform  # noqa: E402
from usconvert.data import DataConfig  # noqa: E402
from usconvert.models import create  # noqa: E402

SECONDS, RATE, HEIGHT, WIDTH = 10, 30, 256, 340


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from skimage import data, transform
    photo = (transform.resize(data.astronaut(), (640, 640)) * 255).astype("uint8")  # room to pan 340x256 across
    frames = panned(photo, SECONDS * RATE, HEIGHT, WIDTH)
    with tempfile.TemporaryDirectory() as tmp:
        video = write_video(Path(tmp) / "clip.mp4", frames, rate=RATE, codec="libx264")
        folder = write_frames(Path(tmp) / "clip", frames, names="img_{:05d}.jpg")
        sizes = {"mp4 MB": video.stat().st_size / 1e6,
                 "jpeg frames MB": sum(p.stat().st_size for p in folder.iterdir()) / 1e6}
        r3d_18 = create("tv:r3d_18")[0]  # its weights' preprocessing: Kinetics' statistics, 112 of 128, 15 fps
        preprocessing = DataConfig.of(r3d_18)
        assert preprocessing.clips_per_video == 5
        size = r3d_18.pretrained_cfg["input_size"]
        one_clip = dataclasses.replace(preprocessing, clips_per_video=1)
        transforms = {"training": ClipTransform(size, **dataclasses.asdict(preprocessing), training=True),
                      "evaluation, 1 clip": ClipTransform(size, **dataclasses.asdict(one_clip), training=False),
                      "evaluation, 5 clips": ClipTransform(size, **dataclasses.asdict(preprocessing), training=False)}
        draw = random.Random(0)

        def sample(path: Path, phase: str):
            random.seed(draw.random())  # as SeededTransform seeds each sample
            return transforms[phase](path)

        candidates = {f"{kind} {phase}": (lambda p=path, t=phase: sample(p, t))
                      for kind, path in (("mp4", video), ("frames", folder)) for phase in transforms}
        seconds = interleaved(candidates, args.repeats)
    rows = {f"{name} ms": s * 1e3 for name, s in seconds.items()}
    ratios = {f"mp4 / frames, {phase}": seconds[f"mp4 {phase}"] / seconds[f"frames {phase}"] for phase in transforms}
    report({"environment": environment(), "clip": f"{SECONDS} s, {RATE} fps, {WIDTH}x{HEIGHT}", **sizes,
            **rows, **ratios})


if __name__ == "__main__":
    main()
