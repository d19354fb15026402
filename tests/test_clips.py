"""Clip folders for video networks: real video files (MPEG-4, lossless FFV1) and folders of
frames, sampled at the network's clip length and frame rate, resized and cropped as timm's
evaluation transform does for each frame."""

import json
import subprocess
from dataclasses import asdict, replace
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

import usconvert
from clip_files import clip_tree, numbered, panned, write_frames, write_video
from usconvert.clips import ClipTransform, forward_videos, windows
from usconvert.data import DataConfig, DataError, load_data

KINETICS = DataConfig(mean=(0.43216, 0.394666, 0.37645), std=(0.22803, 0.22145, 0.216989), crop_pct=0.875)
RAW = DataConfig(mean=(0.0, 0.0, 0.0), std=(1 / 255,) * 3, crop_pct=1.0)  # a sample's values are its grey levels


def transform(config: DataConfig, frames: int, side: int, *, training: bool = False) -> ClipTransform:
    return ClipTransform((3, frames, side, side), **asdict(config), training=training)


def window(count: int, frames: int, step: float, draw=None) -> list[int]:
    return windows(count, frames, step, 1, draw)[0]


def levels(clip: torch.Tensor) -> list[int]:
    """The grey level of each frame of a sample of ``numbered`` frames, over ten."""
    return [round(float(frame.mean()) / 10) - 1 for frame in clip.transpose(0, 1)]


def test_a_window_is_frames_a_step_apart_central_or_drawn_where_it_fits_and_loops_through_short_clips():
    import random
    assert window(20, 4, 1.0) == [8, 9, 10, 11]
    assert window(20, 4, 2.0) == [6, 8, 10, 12]  # 30 frames a second resampled to 15
    assert window(11, 4, 25 / 15) == [1, 3, 5, 6]  # a fractional step rounds down, as torchvision resamples
    assert window(6, 4, 25 / 15) == [0, 1, 3, 0]  # torchvision keeps floor(6 * 15 / 25) = 3 frames: it loops
    assert window(2, 4, 0.5) == [0, 0, 1, 1]  # a slower video than the network's rate repeats frames
    assert window(3, 4, 1.0) == [0, 1, 2, 0]
    draw = random.Random(0)
    firsts = [window(20, 4, 2.0, draw)[0] for _ in range(400)]  # every second frame: 0, 2, ..., 18
    counts = [firsts.count(first) for first in range(0, 14, 2)]
    assert sum(counts) == 400 and min(counts) > 30 and max(counts) < 90, counts  # uniform over 0, 2, ..., 12


@pytest.mark.parametrize("count,fps,rate", [(20, 30, 15), (21, 30, 15), (37, 25, 15), (50, 30, 7.5), (251, 29.97, 15),
                                            (25, 25, 15), (9, 10, 15), (300, 30, 15)])
def test_evaluation_windows_are_the_clips_torchvisions_uniform_clip_sampler_takes(count, fps, rate):
    """torchvision's own resampling and sampler, on a video's timestamps (nothing to decode)."""
    from torchvision.datasets.samplers import UniformClipSampler
    from torchvision.datasets.video_utils import VideoClips
    metadata = {"video_paths": ["v.mp4"], "video_pts": [torch.arange(count)], "video_fps": [fps]}
    compared = 0
    for frames, clips_per_video in ((4, 5), (16, 12), (2, 3)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's note that it drops a video shorter than a window
            clips = VideoClips(["v.mp4"], clip_length_in_frames=frames, frames_between_clips=1, frame_rate=rate,
                               _precomputed_metadata=metadata, num_workers=0)
        if not clips.num_clips():
            continue  # usconvert loops such a video
        taken = [clips.clips[0][clips.get_clip_location(i)[1]].tolist()
                 for i in UniformClipSampler(clips, clips_per_video)]
        assert windows(count, frames, fps / rate, clips_per_video) == taken
        compared += 1
    assert compared >= 2


def test_evaluation_takes_clips_per_video_windows_and_a_videos_prediction_is_their_mean_softmax(tmp_path):
    folder = write_frames(tmp_path / "counting", numbered(20))
    three = transform(replace(RAW, clips_per_video=3), 4, 16)(folder)
    assert three.shape == (3, 3, 4, 16, 16)
    assert [levels(clip) for clip in three] == [[0, 1, 2, 3], [8, 9, 10, 11], [16, 17, 18, 19]]
    training = transform(replace(RAW, clips_per_video=3), 4, 16, training=True)
    assert training(folder).shape == (3, 4, 16, 16)  # training draws one window per sample
    # per clip logits (0, 3), (1, 0), (1, 0): the mean softmax favours class 0 (0.503), the mean logit class 1
    logits = torch.tensor([[0.0, 3.0], [1.0, 0.0], [1.0, 0.0]])
    videos = logits.view(1, 3, 2, 1, 1, 1)  # one video of three clips of (C, T, H, W) = (2, 1, 1, 1)
    predicted = forward_videos(lambda x: x.flatten(1), videos, sample_dims=4)
    assert torch.allclose(predicted, logits.softmax(-1).mean(0, keepdim=True).log())
    assert predicted.argmax(-1).item() == 0 and logits.mean(0).argmax().item() == 1
    single = torch.randn(2, 2, 1, 1, 1)
    assert torch.equal(forward_videos(lambda x: x.flatten(1), single, sample_dims=4), single.flatten(1))


def test_an_evaluation_clip_is_the_central_frames_through_timms_evaluation_transform(tmp_path):
    """Frames named frame_1 ... frame_10 are taken in number order (not frame_10 after frame_1),
    the central four, each resized and center-cropped as timm's evaluation transform does."""
    from timm.data import create_transform
    frames = panned(data.chelsea(), 10)
    folder = write_frames(tmp_path / "cat", frames)
    clip = transform(KINETICS, 4, 32)(folder)
    timm_eval = create_transform((3, 32, 32), is_training=False, interpolation="bilinear", crop_pct=0.875,
                                 mean=KINETICS.mean, std=KINETICS.std)
    expected = torch.stack([timm_eval(Image.fromarray(frames[k])) for k in (3, 4, 5, 6)], dim=1)
    assert clip.shape == expected.shape == (3, 4, 32, 32)
    difference = (clip - expected).abs()  # tensor and PIL resizing round differently, by a grey level or two
    assert difference.mean() < 0.01 and difference.max() < 0.05, (difference.mean(), difference.max())


def test_video_files_decode_to_the_frames_written_resampled_to_the_networks_frame_rate(tmp_path):
    """A 30 frames a second video for a network trained at 15 takes every second frame; the
    lossless file (whose header holds no frame count) gives exactly the frames written, the
    MPEG-4 one (which holds it) the same up to its compression."""
    import av
    frames = panned(data.coffee(), 12)
    lossless = write_video(tmp_path / "pour.mkv", frames, codec="ffv1")
    lossy = write_video(tmp_path / "pour.mp4", frames)
    with av.open(str(lossless)) as container:
        assert container.streams.video[0].frames == 0
    at_15 = replace(KINETICS, frame_rate=15.0)
    chosen = write_frames(tmp_path / "chosen", [frames[k] for k in window(12, 4, 2.0, None)])  # 2, 4, 6, 8
    expected = transform(KINETICS, 4, 32)(chosen)
    assert torch.equal(transform(at_15, 4, 32)(lossless), expected)
    assert (transform(at_15, 4, 32)(lossy) - expected).abs().mean() < 0.1
    assert not torch.equal(transform(KINETICS, 4, 32)(lossless), expected)  # every frame: another window


def test_training_draws_a_start_crop_and_flip_per_sample_and_epoch_and_repeats_them(tmp_path):
    root = tmp_path / "clips"
    for split in ("train", "val"):
        write_frames(root / split / "grey" / "counting", numbered(20))
        write_frames(root / split / "cat" / "walk", panned(data.chelsea(), 20))
    splits = load_data(str(root), (3, 4, 16, 16), RAW, num_classes=2, seed=3)
    assert splits.num_classes == 2 and len(splits.train) == len(splits.val) == 2
    grey = 1  # classes in name order: cat, grey
    assert splits.val[grey][1] == grey and levels(splits.val[grey][0]) == [8, 9, 10, 11]
    starts, cats = set(), []
    for epoch in range(8):
        splits.train.set_epoch(epoch)
        clip, label = splits.train[grey]
        assert label == grey and torch.equal(clip, splits.train[grey][0])  # the same draw for the same epoch
        taken = levels(clip)
        assert taken == list(range(taken[0], taken[0] + 4)) and 0 <= taken[0] <= 16
        starts.add(taken[0])
        cats.append(splits.train[0][0])
    assert len(starts) > 2
    assert len({tuple(c.flatten()[::97].tolist()) for c in cats}) == len(cats)  # crops (and flips) differ
    assert levels(splits.calibration[grey][0]) == [8, 9, 10, 11]  # calibration takes evaluation clips


def test_a_training_clip_is_flipped_as_a_whole_half_of_the_time(tmp_path):
    """Frames the network's size (crop_pct 1: nothing to resize or crop) come back as they are or
    mirrored, every frame alike."""
    import random
    ramp = np.tile(np.arange(0, 160, 10, dtype=np.uint8)[None, :, None], (16, 1, 3))
    folder = write_frames(tmp_path / "ramp", [ramp + 5 * k for k in range(4)])
    plain = transform(RAW, 4, 16)(folder)
    flips = []
    for seed in range(16):
        random.seed(seed)
        clip = transform(RAW, 4, 16, training=True)(folder)
        assert torch.equal(clip, plain) or torch.equal(clip, plain.flip(-1))
        flips.append(torch.equal(clip, plain.flip(-1)))
    assert 0 < sum(flips) < len(flips)


def test_a_clip_shorter_than_its_window_loops(tmp_path):
    clip = transform(RAW, 4, 16)(write_frames(tmp_path / "short", numbered(3)))
    assert levels(clip) == [0, 1, 2, 0]


def test_a_tree_of_videos_and_frame_folders_loads_for_a_video_network(tmp_path):
    splits = load_data(str(clip_tree(tmp_path / "clips")), (3, 4, 32, 32), KINETICS, num_classes=10)
    assert splits.num_classes == 3 and len(splits.train) == len(splits.val) == 3
    for dataset in (splits.train, splits.val, splits.calibration):
        batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=3)))
        assert batch[0].shape == (3, 3, 4, 32, 32) and batch[1].tolist() == [0, 1, 2]  # astronaut, chelsea, coffee


def test_a_spectrum_of_a_video_network_counts_each_videos_mean_prediction(tmp_path):
    """Validation batches hold each video's clips (B, N, C, T, H, W) and calibration ones a
    single clip; a spectrum's accuracy and loss are those of the mean of each video's clips'
    softmax, computed here clip by clip."""
    from usconvert.spectrum import spectrum
    config = replace(KINETICS, clips_per_video=2)
    splits = load_data(str(clip_tree(tmp_path / "clips")), (3, 4, 32, 32), config, num_classes=3)
    videos, labels = next(iter(torch.utils.data.DataLoader(splits.val, batch_size=3)))
    assert videos.shape == (3, 2, 3, 4, 32, 32)
    assert next(iter(torch.utils.data.DataLoader(splits.calibration, batch_size=3)))[0].shape == (3, 3, 4, 32, 32)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv3d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool3d(1),
                                torch.nn.Flatten(), torch.nn.Linear(8, 3))
    net = usconvert.convert(model, (3, 4, 32, 32))
    net.eval()
    with torch.no_grad():
        mean = torch.stack([net(videos[:, n]).softmax(-1) for n in range(2)]).mean(0)
    row = spectrum(net, [(videos, labels)], [1.0])[0]
    assert row.top1 == pytest.approx(100 * (mean.argmax(-1) == labels).float().mean().item())
    assert row.loss == pytest.approx(torch.nn.functional.nll_loss(mean.log(), labels).item(), rel=1e-5)


@pytest.mark.parametrize("make,message", [
    (lambda root: (root / "train" / "a" / "c").mkdir(parents=True),
     "needs a val/ or validation/ folder of class folders of clips"),
    (lambda root: [(root / s / "a" / "notes.txt").parent.mkdir(parents=True) or (root / s / "a" / "notes.txt")
                   .write_text("no clip") for s in ("train", "val")],
     "no clips in a (a clip is a video file"),
    (lambda root: [write_frames(root / s / c / "x", numbered(2)) for s, c in (("train", "a"), ("val", "b"))],
     "has classes the training split lacks: b"),
])
def test_a_tree_without_clips_is_refused_in_one_line(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        load_data(str(tmp_path), (3, 4, 16, 16), RAW, num_classes=2)


def test_unreadable_clips_and_networks_clips_do_not_fit_are_refused_in_one_line(tmp_path, monkeypatch):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    with pytest.raises(DataError, match=f"cannot read {broken}"):
        transform(RAW, 4, 16)(broken)
    with pytest.raises(DataError, match="clips are RGB, and this network takes 1 channels"):
        ClipTransform((1, 4, 16, 16), mean=(0.0,), std=(1.0,), interpolation="bilinear", crop_pct=1.0,
                      frame_rate=None, training=False)
    with pytest.raises(DataError, match=r"--data digits holds images, and this network takes clips of 3x4x16x16"):
        load_data("digits", (3, 4, 16, 16), RAW, num_classes=10)
    video = write_video(tmp_path / "fine.mkv", numbered(4), codec="ffv1")
    monkeypatch.setitem(sys.modules, "av", None)  # as if PyAV were not installed
    with pytest.raises(DataError, match=r"^reading video files needs PyAV: pip install av$"):
        transform(RAW, 4, 16)(video)


def test_a_video_network_trains_from_the_command_line_on_a_clip_folder(tmp_path):
    """convert, then train on real clip files: the log on disk holds each epoch's validation."""
    root = clip_tree(tmp_path / "clips")
    usconvert = [sys.executable, "-m", "usconvert"]
    converted = subprocess.run([*usconvert, "convert", "tv:r3d_18", "--num-classes", "3", "--input-size",
                                "3,4,32,32", "-o", "v.safetensors"], cwd=tmp_path, capture_output=True, text=True)
    assert converted.returncode == 0, converted.stderr
    trained = subprocess.run([*usconvert, "train", "v.safetensors", "--data", str(root), "--epochs", "2", "-b", "3",
                              "-o", "t.safetensors"], cwd=tmp_path, capture_output=True, text=True)
    assert trained.returncode == 0, trained.stderr
    records = [json.loads(line) for line in (tmp_path / "t.log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(0 <= r["val_top1_max"] <= 100 and 0 <= r["val_top1_min"] <= 100 for r in records), records
    assert (tmp_path / "t.safetensors").is_file() and (tmp_path / "t.checkpoint.safetensors").is_file()
    # validation counted each video's 5 windows (r3d_18's weights record 5); the exported file says so
    exported = subprocess.run([*usconvert, "export", "t.safetensors", "--width", "1.0", "-o", "e.safetensors"],
                              cwd=tmp_path, capture_output=True, text=True)
    assert exported.returncode == 0, exported.stderr
    described = subprocess.run([*usconvert, "inspect", "e.safetensors"], cwd=tmp_path, capture_output=True, text=True)
    assert "15 frames a second, the mean of 5 clips per video" in " ".join(described.stdout.split())
