"""What a new user meets in the first hour (issue 20): every command answers bad input in one
line that says what to run, exported files describe themselves, and the model list exists."""

import json
import subprocess
from pathlib import Path

import pytest
import torch

import usconvert
from usconvert.export import read_description, write

TINY = Path(__file__).parent / "data" / "tiny.py"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["usconvert", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("first_hour")
    result = run("convert", f"{TINY}:tiny", "--num-classes", "10", "--input-size", "3,16,16", "-o", "t.safetensors",
                 cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_spectrum_of_an_uncalibrated_network_says_which_command_to_run(folder):
    line = one_line_error(run("spectrum", "t.safetensors", "--data", "fake:64", cwd=folder))
    assert "t.safetensors has no batch-norm statistics for width 0.25" in line
    assert "usconvert calibrate t.safetensors --data fake:64 --widths 0.25:1:0.025 -o t_calibrated.safetensors" in line


def test_a_data_path_that_does_not_exist_says_so(folder):
    line = one_line_error(run("calibrate", "t.safetensors", "--data", "no/such/folder", "-o", "c.safetensors",
                              cwd=folder))
    assert "--data no/such/folder: no such directory" in line


def test_asking_for_more_samples_than_the_data_holds_says_so(folder):
    result = run("calibrate", "t.safetensors", "--data", "fake:90", "--samples", "1024", "--widths", "0.5",
                 "-o", "c.safetensors", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert "the data holds 72 images, fewer than the 1024 asked" in " ".join(result.stderr.split())


def test_models_lists_names_convert_takes(folder):
    result = run("models", "tv:resnet1*", cwd=folder)
    assert result.returncode == 0 and result.stdout.split() == ["tv:resnet101", "tv:resnet152", "tv:resnet18"]
    listed = json.loads(run("models", "mobilenetv3_small_0*", "--pretrained", "--json", cwd=folder).stdout)
    assert listed and all(name.startswith("mobilenetv3_small_0") and "." in name for name in listed)
    assert run("models", "no_such_model*", cwd=folder).returncode == 1
    assert "must be timm, torchvision or all" in one_line_error(run("models", "--source", "keras", cwd=folder))


@pytest.mark.parametrize("suffix", [".safetensors", ".onnx", ".pt2"])
def test_exported_files_carry_their_preprocessing_and_inspect_reads_them(folder, suffix):
    net = usconvert.load(folder / "t.safetensors")
    usconvert.calibrate(net, [(torch.randn(16, 3, 16, 16),)], [0.5], samples=16)
    path = folder / f"small{suffix}"
    write(net, path, width=0.5)
    about = read_description(path)
    assert about["width"] == 0.5 and about["input_size"] == [3, 16, 16]
    assert about["preprocessing"] == net.data_config and set(about["preprocessing"]) >= {"mean", "std"}
    inspected = run("inspect", str(path), "--json", cwd=folder)
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["parameters"] > 0
    if suffix == ".safetensors":
        assert "usconvert.load_exported" in run("inspect", str(path), cwd=folder).stdout
        with pytest.raises(usconvert.FileFormatError, match=r"load it with usconvert.load_exported"):
            usconvert.load(path)
