"""Output averaging (the paper's Table 4): each dense convolution scales its output by its full
count of input channels over the active count; depthwise and grouped convolutions (fixed group
width), layers of fixed inputs and linear layers (as in the paper's code) are never scaled."""

import torch
import torch.nn.functional as F
from torch import nn

import usconvert
from usconvert.export import export


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU(),  # depthwise: never averaged
        nn.Conv2d(16, 32, 1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()


def by_hand(model: nn.Module, x: torch.Tensor, averaged: bool, classifier_averaged: bool = False) -> torch.Tensor:
    """Width 0.5 written out: 8 of conv1's 16 outputs, 16 of the pointwise conv's 32; the
    classifier reads 16 of its 32 inputs, unscaled (scaled by 2 as files of the first rule were)."""
    conv1, dw, pw, fc = model[0], model[2], model[4], model[8]
    scale = 2.0 if averaged else 1.0  # 16 input channels of 8 active
    a = F.relu(F.conv2d(x, conv1.weight[:8], conv1.bias[:8], padding=1))  # fixed input (the image)
    b = F.relu(F.conv2d(a, dw.weight[:8], dw.bias[:8], padding=1, groups=8))
    c = F.relu(F.conv2d(b, pw.weight[:16, :8] * scale, pw.bias[:16] * scale))
    fc_scale = 2.0 if classifier_averaged else 1.0
    return F.linear(c.mean((2, 3)), fc.weight[:, :16] * fc_scale, fc.bias * fc_scale)


def test_output_averaging_scales_dense_convolutions_by_full_over_active_inputs(tmp_path):
    model = small_model()
    net = usconvert.convert(model, (3, 8, 8))
    x = torch.randn(3, 3, 8, 8)
    net.eval()
    net.set_width(0.5)
    with torch.no_grad():
        plain = net(x)  # fills the eval cache with the unaveraged width
        torch.testing.assert_close(plain, by_hand(model, x, averaged=False))
        net.output_averaging = True
        averaged = net(x)  # not served from the cache of the other setting
        torch.testing.assert_close(averaged, by_hand(model, x, averaged=True))
        assert not torch.allclose(plain, averaged)
        net.train()
        torch.testing.assert_close(net(x), averaged)  # the slicing path (training) agrees
        net.eval()
        torch.testing.assert_close(export(net, 0.5)(x), averaged)  # baked into the exported weights
        net.set_width(1.0)
        torch.testing.assert_close(net(x), model(x))  # identity at full width
    usconvert.save(net, tmp_path / "averaged.safetensors")
    loaded = usconvert.load(tmp_path / "averaged.safetensors", model=small_model())
    assert loaded.output_averaging
    loaded.eval()
    loaded.set_width(0.5)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), averaged)


def test_training_with_output_averaging_saves_it_with_the_network(tmp_path):
    from usconvert.train import Trainer, make_config

    net = usconvert.convert(small_model(), (3, 8, 8))
    config = make_config(data="fake:32", epochs=1, batch_size=16, output_averaging=True, val_calibration=0)
    Trainer(net, config, tmp_path / "trained.safetensors").fit()
    assert net.output_averaging
    assert usconvert.load(tmp_path / "trained.safetensors", model=small_model()).output_averaging


def test_batch_norm_removes_the_averaging_of_the_convolution_before_it():
    """Why averaging changes little in a network with batch norm after every convolution: the
    norm divides the scale out again (up to its eps), in training as with calibrated statistics."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 1),
                          nn.BatchNorm2d(16))
    net = usconvert.convert(model, (3, 8, 8))
    x = torch.randn(8, 3, 8, 8)
    net.set_width(0.5)
    plain = net(x)
    net.output_averaging = True
    averaged = net(x)
    assert net.layers["3"].output_scale(8) == 2.0  # the second convolution is scaled ...
    torch.testing.assert_close(averaged, plain, atol=2e-3, rtol=1e-3)  # ... and the norm undoes it (but eps)


def test_a_file_records_which_layers_it_averaged_and_older_files_load_as_they_were_saved(tmp_path):
    """Files written before only convolutions were averaged (no ``averaged_layers`` entry)
    averaged the linear layers too: they load with that function, not with today's rule."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    from usconvert.serialize import METADATA_KEY

    model, x = small_model(), torch.randn(3, 3, 8, 8)
    net = usconvert.convert(model, (3, 8, 8))
    net.output_averaging = True
    path = usconvert.save(net, tmp_path / "new.safetensors")
    loaded = usconvert.load(path, model=small_model())
    assert loaded.averaged_layers == net.averaged_layers == ["0", "2", "4"]  # the convolutions, not "8"
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        metadata = json.loads(f.metadata()[METADATA_KEY])
    assert metadata["format_version"] == 2  # usconvert before version 2 refuses it, rather than average "8" too
    del metadata["averaged_layers"]  # as an older usconvert wrote it
    metadata["format_version"] = 1
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={METADATA_KEY: json.dumps(metadata)})
    old = usconvert.load(tmp_path / "old.safetensors", model=small_model())
    assert old.averaged_layers == ["0", "2", "4", "8"]
    old.eval()
    old.set_width(0.5)
    with torch.no_grad():
        torch.testing.assert_close(old(x), by_hand(model, x, averaged=True, classifier_averaged=True))
        loaded.eval()
        loaded.set_width(0.5)
        torch.testing.assert_close(loaded(x), by_hand(model, x, averaged=True))
