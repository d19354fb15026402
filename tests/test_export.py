"""Export: one width as a plain, smaller model, in memory and in each file format; the
eval-time cache that makes a slimmable network as fast as that model."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import usconvert
from helpers import random_configuration
from test_models import MODELS, build
from usconvert import CalibrationRequiredError
from usconvert.export import export, fold_batch_norm, load_exported, write
from usconvert.profile import active_parameters
from usconvert.verify import relative_error, write_informative_values

SIZE = (3, 64, 64)
TINY = Path(__file__).parent / "data" / "tiny.py"


def widths(net):
    return [net.min_width, 0.6, random_configuration(net, seed=1)]


@pytest.mark.parametrize("name", MODELS)
def test_exported_models_equal_the_slimmable_network(name):
    torch.manual_seed(0)
    model = write_informative_values(build(name).eval())
    net = usconvert.convert(model, SIZE)
    x = torch.randn(2, *SIZE)
    full = sum(p.numel() for p in model.parameters())
    net.eval()
    with net.sliced_statistics():
        for width in widths(net):
            exported = export(net, width)
            net.set_width(width)
            net.eval_cache = False
            with torch.no_grad():
                assert relative_error(exported(x), net(x)) <= 1e-6
            count = sum(p.numel() for p in exported.parameters())
            assert count == active_parameters(net) < full
            assert "usconvert" not in exported.code
            assert not any(type(m).__module__.startswith("usconvert") for m in exported.modules())


def test_fold_bn_folds_into_the_preceding_convolution():
    torch.manual_seed(0)
    net = usconvert.convert(write_informative_values(build("tv:mobilenet_v2").eval()), SIZE)
    x = torch.randn(2, *SIZE)
    with net.sliced_statistics():
        plain = export(net, 0.5)
        folded = export(net, 0.5, fold_bn=True)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        assert relative_error(folded(x), plain(x)) <= 1e-5
    assert fold_batch_norm(folded) == 0  # nothing left to fold


def tiny_calibrated(tmp_path):
    torch.manual_seed(0)
    model, source = usconvert.create(f"{TINY}:tiny", num_classes=10)
    net = usconvert.convert(model, (3, 16, 16), source=source)
    data = [(torch.randn(8, 3, 16, 16),) for _ in range(4)]
    config = random_configuration(net, seed=2)
    usconvert.calibrate(net, data, [0.25], configs={"mixed": config}, samples=32)
    return net, config


@pytest.mark.parametrize("suffix", [".onnx", ".pt2", ".safetensors"])
def test_file_formats_verify_and_run_without_usconvert(tmp_path, suffix):
    net, config = tiny_calibrated(tmp_path)
    for width in (0.25, config):
        path = tmp_path / f"small{suffix}"
        report = write(net, path, width=width)
        assert path.is_file() and report.max_error <= 1e-4
        assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary files left behind
        path.unlink()
    write(net, tmp_path / f"small{suffix}", width=0.25)
    if suffix == ".safetensors":
        assert isinstance(load_exported(tmp_path / "small.safetensors"), torch.nn.Module)
        return
    loader = ("import onnxruntime, numpy; s = onnxruntime.InferenceSession(path);"
              "print(s.run(None, {s.get_inputs()[0].name: numpy.zeros((3, 3, 16, 16), 'float32')})[0].shape)"
              if suffix == ".onnx" else
              "import torch; print(tuple(torch.export.load(path).module()(torch.zeros(3, 3, 16, 16)).shape))")
    script = f"import sys; sys.modules['usconvert'] = None; path = {str(tmp_path / f'small{suffix}')!r}; {loader}"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(3, 10)" in result.stdout  # a dynamic batch dim


def test_exporting_an_uncalibrated_width_is_an_error(tmp_path):
    net, _ = tiny_calibrated(tmp_path)
    with pytest.raises(CalibrationRequiredError, match="cannot export"):
        export(net, 0.75)
    torch.manual_seed(0)
    model, _ = usconvert.create(f"{TINY}:tiny_no_bn", num_classes=10)
    plain = usconvert.convert(model, (3, 16, 16))
    assert isinstance(export(plain, 0.75), torch.nn.Module)  # no batch norm, nothing to calibrate


def test_the_eval_cache_follows_width_weights_and_statistics(tmp_path):
    net, config = tiny_calibrated(tmp_path)
    x = torch.randn(4, 3, 16, 16)

    def check():
        net.eval()
        with torch.no_grad():
            cached = net(x)
            net.eval_cache = False
            direct = net(x)
            net.eval_cache = True
        assert torch.equal(cached, direct)
        return cached

    net.set_width(0.25)
    first = check()
    net.set_width(config)
    assert not torch.equal(check()[:, :3], first[:, :3])
    net.train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    net(torch.randn(8, 3, 16, 16)).sum().backward()
    optimizer.step()
    check()
    with torch.no_grad():
        net.layers["0"].weight.mul_(2)
    check()
    usconvert.calibrate(net, [(torch.randn(8, 3, 16, 16) * 3,)], [0.25], samples=8)
    net.set_width(0.25)
    check()
    net.double()
    x = x.double()
    check()
    net.eval()
    with torch.enable_grad():  # with gradients the slimmable path runs, so they reach the weights
        net(x).sum().backward()
    assert net.layers["0"].weight.grad is not None


def test_export_command_errors_are_one_line(tmp_path):
    def run(*args):
        return subprocess.run(["usconvert", *args], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run("convert", str(Path(__file__).parent / "data" / "tiny.py") + ":tiny", "--input-size", "3,16,16", "-o",
               "t.safetensors").returncode == 0
    for args, message in ((["-o", "x.onnx"], "exactly one of --width and --config"),
                          (["--width", "0.5", "-o", "x.bin"], "-o must end in"),
                          (["--width", "0.5", "-o", "x.onnx"], "cannot export: no batch-norm statistics")):
        result = run("export", "t.safetensors", *args)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert message in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_every_file_format_for_every_model(tmp_path, name):
    """A random nonuniform width (the hardest: gathers everywhere), each file format, each
    verified by ``write`` against the slimmable network before it is kept."""
    torch.manual_seed(0)
    model, source = usconvert.create(name, num_classes=10)
    net = usconvert.convert(write_informative_values(model.eval()), SIZE, source=source)
    config = random_configuration(net, seed=3)
    with net.sliced_statistics():
        for suffix in (".onnx", ".pt2", ".safetensors"):
            report = write(net, tmp_path / f"m{suffix}", width=config)
            assert report.max_error <= 1e-4 and (tmp_path / f"m{suffix}").is_file()


class Segmenter(torch.nn.Module):
    """Outputs as torchvision's segmentation models give them: a dict, here holding a tuple,
    with the channel count of the features where ``count``."""

    def __init__(self, count: bool = True):
        super().__init__()
        self.count = count
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16),
                                        torch.nn.ReLU(), torch.nn.Conv2d(16, 24, 3, padding=1))
        self.classifier, self.aux = torch.nn.Conv2d(24, 5, 1), torch.nn.Linear(24, 3)

    def forward(self, x):
        features = self.body(x)
        aux = self.aux(features.mean((2, 3)))
        return {"out": self.classifier(features), "aux": (aux, features.shape[1]) if self.count else (aux,)}


def test_outputs_that_are_dicts_and_tuples_convert_verify_sort_and_export(tmp_path):
    from usconvert.sorting import sort_channels
    from usconvert.verify import prefix_error

    torch.manual_seed(0)
    model = write_informative_values(Segmenter().eval())
    net = usconvert.convert(model, (3, 16, 16))  # with the self-check, which compares every output
    assert not net.space("body.0:out").frozen and not net.self_check.frozen
    # the rules, not the self-check, freeze the channels whose count the model returns
    assert net.space("body.3:out").frozen_reasons == ["model output: a number computed from a channel count"]
    x = torch.randn(3, 3, 16, 16)
    net.eval()
    with torch.no_grad():
        assert relative_error(net(x), model(x)) == 0.0
    assert prefix_error(model, net, net.min_width, x) <= 1e-6
    assert sort_channels(net, "l1").error_at_full_width <= 1e-9
    assert write(net, tmp_path / "segmenter.pt2", width=1.0).max_error <= 1e-4
    with pytest.raises(usconvert.UsconvertError, match="^torch cannot export this network to onnx: .*nothing was "
                                                         "written$"):  # ONNX has no integer outputs
        write(net, tmp_path / "segmenter.onnx", width=1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["segmenter.pt2"]
    tensors_only = usconvert.convert(write_informative_values(Segmenter(count=False).eval()), (3, 16, 16))
    assert write(tensors_only, tmp_path / "segmenter.onnx", width=1.0).max_error <= 1e-4


def test_timm_features_only_backbones_convert_and_keep_their_feature_maps_whole():
    """A backbone for detection or segmentation returns a list of feature maps: each keeps its
    channels (a model output), the layers between them slim."""
    import timm
    from usconvert.verify import prefix_error

    torch.manual_seed(0)
    model = write_informative_values(timm.create_model("resnet18", features_only=True, out_indices=(1, 2, 3)).eval())
    net = usconvert.convert(model, (3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    net.eval()
    with torch.no_grad():
        assert [f.shape[1] for f in net(x)] == [64, 128, 256] and relative_error(net(x), model(x)) == 0.0
    assert prefix_error(model, net, net.min_width, x) <= 1e-6 and not net.self_check.frozen
    net.set_width(net.min_width)
    assert [len(net.active_channels(name)["out"]) for name in ("layer2.0.conv1", "layer2.0.conv2")] == [32, 128]


def test_relative_error_pairs_outputs_by_structure():
    from collections import OrderedDict

    t = torch.tensor([1.0, -2.0])
    assert relative_error({"out": t, "n": 4}, OrderedDict(out=t, n=4)) == 0.0  # a GraphModule gives a plain dict
    assert relative_error({"out": t * 1.5}, {"out": t}) == 0.5
    assert relative_error((t, 100 * t + 1), [t, 100 * t]) == pytest.approx(0.005)  # each against its own scale
    for other in ({"aux": t}, {"out": t, "aux": t}, (t,), {"out": t[:1]}, {"out": t, "n": 5}, t):
        assert relative_error(other, {"out": t, "n": 4}) == float("inf"), other
