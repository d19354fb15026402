"""Starting from a trained model: pretrained weights through timm's and torchvision's own loading
(tested offline: a local file through timm's override, a filled torch hub cache for
torchvision), classifiers of another class count, and sorted channels by default."""

import os
import subprocess
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

import usconvert
from usconvert.errors import FileFormatError, WeightsError
from usconvert.models import load_state


def run(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["usconvert", *args], capture_output=True, text=True, cwd=cwd, timeout=600,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def imagenet_resnet18(tmp_path_factory) -> tuple[Path, dict]:
    """A 1000-class timm resnet18 checkpoint on disk, standing for downloaded ImageNet weights."""
    torch.manual_seed(0)
    state = timm.create_model("resnet18").state_dict()
    path = tmp_path_factory.mktemp("weights") / "resnet18.safetensors"
    save_file(state, str(path))
    return path, state


def test_timm_pretrained_weights_from_a_local_file_through_timms_override(imagenet_resnet18):
    path, state = imagenet_resnet18
    said = []
    model, source = usconvert.create("resnet18", num_classes=10, pretrained_path=path, say=said.append)
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items() if not k.startswith("fc."))
    assert own["fc.weight"].shape == (10, 512)
    assert source["weights"] == f"pretrained from {path}" and "num_classes" in source["kwargs"]
    assert said and "classifier (fc.weight, fc.bias) is created anew for 10 classes" in said[0]


def test_torchvision_pretrained_weights_from_a_filled_hub_cache(tmp_path, monkeypatch):
    """torchvision's own loading finds the file in torch's hub cache and downloads nothing."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.get_model_weights("resnet18").DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    cached.parent.mkdir(parents=True)
    torch.manual_seed(1)
    state = torchvision.models.resnet18().state_dict()
    torch.save(state, cached)
    model, source = usconvert.create("tv:resnet18", num_classes=10, pretrained=True)
    own = model.state_dict()
    assert torch.equal(own["conv1.weight"], state["conv1.weight"]) and own["fc.weight"].shape == (10, 512)
    assert source["weights"] == "pretrained"
    model, _ = usconvert.create("tv:resnet18", pretrained=True)  # the same class count: every tensor
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_no_weights_to_be_found_is_one_line_naming_the_cache(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch")}
    result = run("convert", "resnet18", "--pretrained", "-o", "m.safetensors", cwd=tmp_path, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot fetch or find the pretrained weights of resnet18" in lines[0]
    assert str(tmp_path / "hf") in lines[0] and "--pretrained-path" in lines[0]
    with pytest.raises(WeightsError, match="does not exist"):
        usconvert.create("resnet18", pretrained_path=tmp_path / "missing.pth")


def test_weights_of_another_class_count_get_a_new_classifier_and_say_so(imagenet_resnet18, tmp_path):
    path, state = imagenet_resnet18
    said = []
    model, _ = usconvert.create("resnet18", num_classes=7, weights=path, say=said.append)
    assert model.fc.weight.shape == (7, 512) and torch.equal(model.conv1.weight, state["conv1.weight"])
    assert "created anew for 7 classes" in said[0]
    wrong = dict(state)
    wrong["layer1.0.conv1.weight"] = torch.zeros(8, 64, 3, 3)
    save_file(wrong, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(FileFormatError, match=r"do not fit the model: layer1.0.conv1.weight \(8, 64, 3, 3\)"):
        usconvert.create("resnet18", weights=tmp_path / "wrong.safetensors")


def test_weights_without_version_metadata_load_into_a_version_aware_model(tmp_path):
    # torchvision's MNASNet rebuilds its stem as version 1 unless told otherwise by the metadata,
    # which a safetensors file, and a converted network's state, do not carry as the model's
    torch.manual_seed(0)
    original, _ = usconvert.create("tv:mnasnet0_5", num_classes=10)
    save_file(original.state_dict(), str(tmp_path / "m.safetensors"))
    model, _ = usconvert.create("tv:mnasnet0_5", num_classes=10, weights=tmp_path / "m.safetensors")
    net = usconvert.convert(original, (3, 64, 64))
    load_state(model, dict(net.model.state_dict()), "the converted network")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), original.eval()(x))


def test_convert_from_pretrained_sorts_channels_and_keeps_the_function(imagenet_resnet18, tmp_path):
    path, state = imagenet_resnet18
    result = run("convert", "resnet18", "--pretrained-path", str(path), "--input-size", "3,64,64", "--json",
                 "-o", "m.safetensors", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert '"sorted_by": "l1"' in result.stdout and "sorted the channels of 12 spaces by l1" in result.stderr
    net = usconvert.load(tmp_path / "m.safetensors").eval()
    original = timm.create_model("resnet18")
    original.load_state_dict(state)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net(x), original.eval()(x), rtol=1e-4, atol=1e-5)
    assert not torch.equal(net.model.conv1.weight, state["conv1.weight"])  # the channels moved
    warned = run("convert", "resnet18", "--input-size", "3,64,64", "--sort-channels", "l2", "-o", "r.safetensors",
                 cwd=tmp_path)
    assert warned.returncode == 0 and "sorting the channels of random weights means nothing" in warned.stderr
