"""The command line, run as a user runs it."""

import json
import subprocess
import sys

import pytest
import torch

import usconvert


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(["usconvert", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "m.safetensors"
    result = run("convert", "mobilenetv2_100", "-o", str(out))
    assert result.returncode == 0, result.stderr
    return out, result


def test_convert_then_inspect_json(converted):
    path, result = converted
    assert path.is_file()
    assert "multiply-adds" in result.stdout and "300.8M" in result.stdout
    inspected = run("inspect", str(path), "--json")
    assert inspected.returncode == 0, inspected.stderr
    info = json.loads(inspected.stdout)
    assert info["source"]["name"] == "mobilenetv2_100" and info["input_size"] == [3, 224, 224]
    assert info["slimmable_spaces"] == 25 and info["frozen_spaces"] == 1
    assert info["spaces"][-1] == {**info["spaces"][-1], "name": "classifier:out", "frozen": True,
                                  "reasons": ["model output"]}
    assert info["calibrated_widths"] == []
    # the table of a piped run (80 columns) prints every space's name whole, as --widths takes it
    assert max(len(s["name"]) for s in info["spaces"]) > 16
    assert all(s["name"] in result.stdout for s in info["spaces"])


def test_the_saved_file_loads_in_python(converted):
    path, _ = converted
    net = usconvert.load(path)
    net.eval()
    assert net(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_options_reach_the_conversion(tmp_path):
    out = tmp_path / "r.safetensors"
    result = run("convert", "tv:resnet18", "--num-classes", "7", "--input-size", "3,64,64", "--divisor", "16",
                 "--min-width", "0.5", "-o", str(out), "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["divisor"] == 16 and info["min_width"] == 0.5 and info["input_size"] == [3, 64, 64]
    assert all(s["active_at_min_width"] % 16 == 0 for s in info["spaces"] if not s["frozen"])
    assert info["spaces"][-1]["channels"] == 7


def test_model_kwargs_reach_the_factory_and_the_saved_source(tmp_path):
    """As timm's --model-kwargs: comma-separated or repeated, values read as Python literals."""
    out = tmp_path / "vit.safetensors"
    result = run("convert", "vit_tiny_patch16_224", "--model-kwargs", "img_size=32,patch_size=8",
                 "--model-kwargs", "depth=2", "--num-classes", "10", "--input-size", "3,32,32", "-o", str(out),
                 "--json")
    assert result.returncode == 0, result.stderr
    net = usconvert.load(out)
    assert net.source["kwargs"] == {"img_size": 32, "patch_size": 8, "depth": 2, "num_classes": 10}
    keys = list(net.state_dict())
    assert any("blocks.1." in k for k in keys) and not any("blocks.2." in k for k in keys)
    net.eval()
    assert net(torch.randn(3, 3, 32, 32)).shape == (3, 10)


@pytest.mark.parametrize("args,message", [
    (["convert", "mobilenetv2_10", "-o", "x.safetensors"], "unknown model 'mobilenetv2_10'; closest matches"),
    (["convert", "mobilenetv2_100", "--min-width", "1.5", "-o", "x.safetensors"], "--min-width must be in (0, 1]"),
    (["convert", "mobilenetv2_100", "--input-size", "3,a", "-o", "x.safetensors"], "--input-size must look like"),
    (["convert", "mobilenetv2_100", "-o", "x.pt"], "-o must end in .safetensors, got x.pt"),
    (["convert", "mobilenetv2_100", "-o", "missing/x.safetensors"], "the folder missing does not exist"),
    (["convert", "tv:resnet18", "--input-size", "3,32", "-o", "x.safetensors"],
     "--input-size must be C,H,W (such as 3,224,224), or C,T,H,W for a video model"),
    (["export", "m.safetensors", "--width", "0.5", "-o", "m.tflite"], "-o must end in .safetensors, .onnx or .pt2"),
    (["spectrum", "m.safetensors", "-o", "s.txt"], "-o must end in .json, .csv or .png"),
    (["spectrum", "m.safetensors", "-o", "a.json", "-o", "b.json"], "-o names two .json files"),
    (["profile", "m.safetensors", "--device", "tpu"], "--device must be auto, cpu or cuda"),
    (["inspect", "missing.safetensors"], "does not exist"),
    (["convert", "vit_tiny_patch16_224", "--model-kwargs", "img_size", "-o", "x.safetensors"],
     "--model-kwargs takes KEY=VALUE pairs, got 'img_size'"),
    (["convert", "tv:resnet18", "--model-kwargs", "depth=4", "-o", "x.safetensors"],
     "building tv:resnet18 failed: TypeError"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_truncated_file_is_one_line_and_exit_2(converted, tmp_path):
    path, _ = converted
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(path.read_bytes()[:4096])
    result = run("inspect", str(broken))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "truncated or corrupt" in result.stderr


def test_help_and_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "usconvert", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "convert" in result.stdout and "inspect" in result.stdout
    result = run("convert", "--help")
    assert "--min-width" in result.stdout and "--divisor" in result.stdout


def test_a_video_classifier_converts_calibrates_and_exports_and_image_data_is_refused(tmp_path):
    """torchvision's video classifiers take C,T,H,W clips: --input-size takes four numbers, and
    a command that needs data says that images do not fit (clip folders do: test_clips.py; fake:N
    has inputs of any shape)."""
    result = run("convert", "tv:r3d_18", "--num-classes", "5", "--input-size", "3,4,32,32", "-o", "v.safetensors",
                 "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["input_size"] == [3, 4, 32, 32]
    assert all(not s["frozen"] for s in info["spaces"][:-1]), info["spaces"]
    refused = run("calibrate", "v.safetensors", "--data", "digits", "-o", "c.safetensors", cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.strip() == (
        "error: --data digits holds images, and this network takes clips of 3x4x32x32 (C,T,H,W): give a directory of "
        "clips (train/ and val/ of class folders of videos) or fake:N")
    calibrated = run("calibrate", "v.safetensors", "--data", "fake:8", "-o", "c.safetensors", cwd=tmp_path)
    assert calibrated.returncode == 0, calibrated.stderr
    exported = run("export", "c.safetensors", "--width", "0.5", "-o", "v.onnx", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    import onnxruntime
    session = onnxruntime.InferenceSession(str(tmp_path / "v.onnx"))
    clip = torch.randn(1, 3, 4, 32, 32).numpy()
    assert session.run(None, {session.get_inputs()[0].name: clip})[0].shape == (1, 5)


def test_a_model_with_a_dict_of_outputs_converts_profiles_and_exports(tmp_path):
    """torchvision's segmentation models return ``{"out": ..., "aux": ...}``."""
    from pathlib import Path

    tiny = Path(__file__).parent / "data" / "tiny.py"
    result = run("convert", f"{tiny}:tiny_segmenter", "--input-size", "3,16,16", "-o", "seg.safetensors", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    profiled = run("profile", "seg.safetensors", "--json", cwd=tmp_path)
    assert profiled.returncode == 0, profiled.stderr
    rows = json.loads(profiled.stdout)["rows"]
    assert rows[0]["multiply_adds"] < rows[-1]["multiply_adds"]
    for name in ("seg.onnx", "seg.pt2", "seg_1.safetensors"):
        exported = run("export", "seg.safetensors", "--width", "1.0", "-o", name, cwd=tmp_path)
        assert exported.returncode == 0 and (tmp_path / name).is_file(), exported.stderr
