"""Building models by name, and local weights."""

import pytest
import torch
from safetensors.torch import save_file

from usconvert import FileFormatError, ModelNotFoundError
from usconvert.models import create, default_input_size, parse_source

MODEL_FILE = '''
import torch.nn as nn

def tiny(num_classes=10):
    return nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, num_classes))

def not_a_model():
    return 3
'''


def test_timm_torchvision_and_file_sources(tmp_path):
    model, source = create("resnet18", num_classes=7)
    assert source == {"kind": "timm", "name": "resnet18", "kwargs": {"num_classes": 7}}
    assert model.fc.out_features == 7
    model, source = create("tv:mobilenet_v2", num_classes=3)
    assert source["kind"] == "torchvision" and model.classifier[-1].out_features == 3
    path = tmp_path / "mine.py"
    path.write_text(MODEL_FILE)
    model, source = create(f"{path}:tiny", num_classes=4)
    assert source["kind"] == "file" and source["factory"] == "tiny" and model[-1].out_features == 4


def test_unknown_names_suggest_the_closest_matches(tmp_path):
    with pytest.raises(ModelNotFoundError, match="closest matches: .*mobilenetv2_100"):
        parse_source("mobilenetv2_10")
    with pytest.raises(ModelNotFoundError, match="tv:resnet18"):
        parse_source("tv:resnet19")
    path = tmp_path / "mine.py"
    path.write_text(MODEL_FILE)
    with pytest.raises(ModelNotFoundError, match="no factory 'tinyy'.*tiny"):
        create(f"{path}:tinyy")
    with pytest.raises(ModelNotFoundError, match="not an nn.Module"):
        create(f"{path}:not_a_model")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        create(f"{tmp_path}/missing.py:tiny")


def test_default_input_size_comes_from_timm_config():
    model, _ = create("mobilenetv2_100")
    assert default_input_size(model) == (3, 224, 224)
    model, _ = create("tv:resnet18")
    assert default_input_size(model) == (3, 224, 224)


@pytest.mark.parametrize("name,size", [("tv:inception_v3", (3, 299, 299)), ("tv:r3d_18", (3, 16, 112, 112)),
                                       ("tv:mvit_v2_s", (3, 16, 224, 224)), ("tv:swin3d_t", (3, 32, 224, 224))])
def test_torchvision_input_sizes_come_from_their_weights(name, size):
    """The crop of the default weights' transforms, and for a video classifier (C,T,H,W) the clip
    length its weights were evaluated with."""
    model, _ = create(name)
    assert default_input_size(model) == size


def test_torchvision_preprocessing_comes_from_their_weights():
    """The mean and std the weights were trained with (Kinetics' for the video models), their
    resizing and the crop's share of the resized side (224 of 232 for ResNet-50's V2 weights)."""
    from usconvert.data import DataConfig

    resnet50, _ = create("tv:resnet50")
    config = DataConfig.of(resnet50)
    assert config.interpolation == "bilinear" and config.crop_pct == pytest.approx(224 / 232)
    assert config.mean == pytest.approx((0.485, 0.456, 0.406))
    r3d, _ = create("tv:r3d_18")
    assert DataConfig.of(r3d).mean == pytest.approx((0.43216, 0.394666, 0.37645))
    assert DataConfig.of(r3d).frame_rate == 15.0  # clips resampled as its weights were trained
    assert DataConfig.of(create("tv:mvit_v2_s")[0]).frame_rate == 7.5
    assert resnet50.pretrained_cfg.get("frame_rate") is None and DataConfig.of(resnet50).frame_rate is None
    # the clips per video whose mean prediction the weights' accuracy counts
    clips = [DataConfig.of(create(name)[0]).clips_per_video for name in ("tv:r3d_18", "tv:swin3d_t", "tv:s3d")]
    assert clips == [5, 12, 1]
    assert DataConfig.of(resnet50).clips_per_video == 1
    assert DataConfig.of(create("tv:efficientnet_b0")[0]).interpolation == "bicubic"


def test_local_weights_safetensors_and_pth(tmp_path):
    donor, _ = create("resnet18", num_classes=5)
    state = donor.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "w.safetensors")
    torch.save({"state_dict": state}, tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        model, _ = create("resnet18", num_classes=5, weights=tmp_path / name)
        assert torch.equal(model.fc.weight, donor.fc.weight)


def test_bad_weights_are_clear_errors(tmp_path):
    donor, _ = create("resnet18", num_classes=5)
    torch.save(donor.state_dict(), tmp_path / "w.pth")
    with pytest.raises(FileFormatError, match="do not fit the model"):
        create("resnet34", num_classes=5, weights=tmp_path / "w.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(FileFormatError, match="cannot read weights"):
        create("resnet18", weights=tmp_path / "junk.pth")
    with pytest.raises(FileFormatError, match="does not exist"):
        create("resnet18", weights=tmp_path / "nothing.pth")
    # weights_only=True: a pickled object that is not plain tensors is refused, never executed
    torch.save({"model": donor}, tmp_path / "pickled.pth")
    with pytest.raises(FileFormatError):
        create("resnet18", num_classes=5, weights=tmp_path / "pickled.pth")
