"""BN post-statistics: Eq. 8 (exact) and Eq. 5 (moving), stored per width, used in eval."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import usconvert
from usconvert import CalibrationRequiredError
from usconvert.calibrate import calibrate
from usconvert.data import calibration_loader, eval_loader
from usconvert.spectrum import spectrum

DATA = Path(__file__).parent / "data"
SIZE = (3, 16, 16)


def tiny(factory: str = "tiny") -> usconvert.SlimmableNet:
    torch.manual_seed(0)
    model, source = usconvert.create(f"{DATA / 'tiny.py'}:{factory}", num_classes=10)
    return usconvert.convert(model, SIZE, source=source)


def batches(count: int = 4, size: int = 8):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(size, *SIZE, generator=g) * 2 + 1,) for _ in range(count)]


def layer_inputs(net, width, data, layer="1"):
    """The batch-norm layer's input for each batch, in eval mode (what calibration sees: the
    network as at inference, its batch norms computing batch statistics)."""
    net.set_width(width)
    net.eval()
    for norm in net.batch_norm_layers().values():
        norm.training = True
    captured = []
    hook = net.layers[layer].register_forward_pre_hook(lambda m, a: captured.append(a[0].transpose(0, 1).flatten(1)))
    with net.batch_statistics_only(), torch.no_grad():
        for (x,) in data:
            net.model(x)
    hook.remove()
    net.train()
    return captured


def test_exact_statistics_are_the_average_of_per_batch_means_and_variances():
    net, data = tiny(), batches()
    calibrate(net, data, [0.5], samples=32, mode="exact")
    inputs = layer_inputs(net, 0.5, data)
    net.set_width(0.5)
    stats = net.layers["1"].width_statistics
    torch.testing.assert_close(stats.running_mean, torch.stack([v.mean(1) for v in inputs]).mean(0))
    torch.testing.assert_close(stats.running_var, torch.stack([v.var(1) for v in inputs]).mean(0))


def test_moving_statistics_follow_the_momentum_recursion():
    net, data = tiny(), batches()
    calibrate(net, data, [0.5], samples=32, mode="moving", momentum=0.1)
    mean, var = torch.zeros(8), torch.ones(8)
    for v in layer_inputs(net, 0.5, data):
        mean, var = 0.9 * mean + 0.1 * v.mean(1), 0.9 * var + 0.1 * v.var(1)
    net.set_width(0.5)
    torch.testing.assert_close(net.layers["1"].width_statistics.running_mean, mean)
    torch.testing.assert_close(net.layers["1"].width_statistics.running_var, var)


def test_calibration_changes_the_statistics_and_counts_samples():
    net, data = tiny(), batches()
    bn = net.layers["4"]
    before = bn.running_var.clone()
    report = calibrate(net, data, [0.25, 1.0], samples=20)
    assert report.samples == 20 and report.batches == 3  # the last batch is cut to the sample count
    assert not torch.allclose(bn.running_var, before)  # width 1.0: the layers' own buffers
    net.set_width(0.25)
    assert net.layers["4"].width_statistics.running_var.shape == (8,)
    assert not torch.allclose(net.layers["4"].width_statistics.running_var, torch.ones(8))


def test_eval_uses_calibrated_widths_and_says_which_exist():
    net = tiny()
    calibrate(net, batches(), [0.25], samples=32)
    net.eval()
    net.set_width(0.25)
    net(torch.randn(1, *SIZE))
    net.set_width(0.75)
    with pytest.raises(CalibrationRequiredError, match=r"calibrated widths: 0.25\).*usconvert calibrate"):
        net(torch.randn(1, *SIZE))
    net.set_width(0.75, nearest_calibrated=True)
    assert net.width == 1.0  # 1.0 is nearer to 0.75 than 0.25 is, and always calibrated
    report = usconvert.ensure_calibrated(net, 0.75, batches())
    assert net.width == 0.75 and report.widths and usconvert.ensure_calibrated(net, 0.75, batches()) is None
    net(torch.randn(1, *SIZE))
    assert sorted(net.statistics.labels().values()) == ["0.25", "0.75"]


def test_nonuniform_configurations_are_calibrated_by_name():
    net = tiny()
    config = {net.slimmable_spaces[0].name: 0.5}
    calibrate(net, batches(), [], configs={"half-stem": config}, samples=16)
    assert list(net.statistics.labels().values()) == ["half-stem"]
    net.eval()
    net.set_width(config)
    net(torch.randn(1, *SIZE))


def test_networks_without_batch_norm_calibrate_nothing():
    report = calibrate(tiny("tiny_no_bn"), batches(), [0.5])
    assert "nothing to calibrate" in report.message and not report.widths


def test_statistics_survive_save_and_load(tmp_path):
    net = tiny()
    calibrate(net, batches(), [0.25, 0.5], samples=32)
    usconvert.save(net, tmp_path / "c.safetensors")
    loaded = usconvert.load(tmp_path / "c.safetensors")
    x = torch.randn(2, *SIZE)
    for width in (0.25, 0.5):
        net.set_width(width), loaded.set_width(width)
        net.eval(), loaded.eval()
        assert torch.equal(net(x), loaded(x))


@pytest.mark.slow
def test_calibrated_statistics_beat_sliced_full_width_statistics(trained_digits):
    path, _ = trained_digits
    net = usconvert.load(path)
    splits = usconvert.data.load_data("digits", net.input_size, usconvert.data.DataConfig(**net.data_config),
                                      num_classes=10)
    val = eval_loader(splits.val, 128)
    with net.sliced_statistics():
        naive = spectrum(net, val, [0.5])[0].top1
    calibrate(net, calibration_loader(splits, 64), [0.5], samples=1024)
    calibrated = spectrum(net, val, [0.5])[0].top1
    assert calibrated > naive + 5, (calibrated, naive)


@pytest.mark.slow
def test_two_ranks_split_the_samples_and_reduce_exactly(tmp_path):
    worker = Path(__file__).parent / "calibrate_worker.py"
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                             "--master_port=29518", str(worker), str(tmp_path)], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    single = subprocess.run([sys.executable, str(worker), str(tmp_path / "single")], capture_output=True, text=True,
                            timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    two, one = (json.loads((p / "stats.json").read_text()) for p in (tmp_path, tmp_path / "single"))
    assert two["samples"] == one["samples"] == 64
    # equal-sized batches: the mean of per-batch means is the mean over all samples, however they
    # are split into batches and ranks; per-batch variances depend on the grouping
    torch.testing.assert_close(torch.tensor(two["mean"]), torch.tensor(one["mean"]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.tensor(two["var"]), torch.tensor(one["var"]), rtol=0.1, atol=0.05)


def test_the_slicing_path_gives_the_same_statistics_as_dense_copies():
    data = batches()
    dense, sliced = tiny(), tiny()
    calibrate(dense, data, [0.25, 0.5, 1.0], samples=32)
    calibrate(sliced, data, [0.25, 0.5, 1.0], samples=32, memory_budget=0)  # no room for dense copies
    for width in (0.25, 0.5):
        dense.set_width(width), sliced.set_width(width)
        for name in dense.batch_norm_layers():
            a, b = dense.layers[name].width_statistics, sliced.layers[name].width_statistics
            torch.testing.assert_close(a.running_mean, b.running_mean)
            torch.testing.assert_close(a.running_var, b.running_var)
    torch.testing.assert_close(dense.layers["1"].running_var, sliced.layers["1"].running_var)  # width 1.0


def _eval_time_statistics(net, width, data):
    """Per batch-norm layer, the mean and unbiased variance of its inputs over all of ``data``
    with the network in eval mode (dropout and drop-path off), batches weighted by their size."""
    sums = {}
    for name in net.batch_norm_layers():
        inputs = layer_inputs(net, width, data, name)
        count = sum(v.shape[1] for v in inputs)
        sums[name] = (sum(v.mean(1) * v.shape[1] for v in inputs) / count,
                      sum(v.var(1) * v.shape[1] for v in inputs) / count)
    return sums


def _statistics(net, width):
    net.set_width(width)
    return {name: (layer.running_mean.clone(), layer.running_var.clone()) if net.is_full_width()
            else (layer.width_statistics.running_mean.clone(), layer.width_statistics.running_var.clone())
            for name, layer in net.batch_norm_layers().items()}


def test_calibration_sees_the_network_as_at_inference_with_dropout_and_drop_path_off():
    """Dropout and timm's drop-path sit right before batch norms: calibrating with them on
    would inflate the variances and make two calls differ."""
    data = batches(count=3, size=16)
    net = tiny("tiny_dropout")
    assert net.slimmable_spaces[0].name == "0:out"  # drop-path's mask (x.new_empty) keeps channels slimmable
    calibrate(net, data, [0.5, 1.0], samples=48)
    again = tiny("tiny_dropout")
    calibrate(again, data, [0.5, 1.0], samples=48, memory_budget=0)  # the slicing path
    for width in (0.5, 1.0):
        expected = _eval_time_statistics(net, width, data)
        for statistics in (_statistics(net, width), _statistics(again, width)):
            for name, (mean, var) in expected.items():
                torch.testing.assert_close(statistics[name][0], mean, rtol=1e-4, atol=1e-5)
                torch.testing.assert_close(statistics[name][1], var, rtol=1e-4, atol=1e-5)
    first = _statistics(net, 0.5)
    calibrate(net, data, [0.5, 1.0], samples=48)
    assert all(torch.equal(first[k][0], v[0]) and torch.equal(first[k][1], v[1])
               for k, v in _statistics(net, 0.5).items()), "two identical calibrations differ"
    assert net.training  # the mode is given back


def test_a_short_last_batch_weighs_by_its_size_and_a_single_image_is_joined_to_the_batch_before():
    g = torch.Generator().manual_seed(3)
    data = [(torch.randn(n, *SIZE, generator=g) * 2 + 1,) for n in (16, 16, 16)]
    net = tiny("tiny_dropout")
    report = calibrate(net, data, [0.5], samples=20)  # 16 + 4: the 4 count for a fifth
    assert (report.samples, report.batches) == (20, 2)
    cut = [data[0], (data[1][0][:4],)]
    for name, (mean, var) in _eval_time_statistics(net, 0.5, cut).items():
        torch.testing.assert_close(_statistics(net, 0.5)[name][0], mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(_statistics(net, 0.5)[name][1], var, rtol=1e-4, atol=1e-5)
    # 17 samples from batches of 16: the 17th would be a batch norm over one value per channel
    # (BatchNorm1d after pooling); it joins the first batch
    report = calibrate(net, data, [0.5], samples=17)
    assert (report.samples, report.batches) == (17, 1)
    joined = [(torch.cat([data[0][0], data[1][0][:1]]),)]
    for name, (mean, var) in _eval_time_statistics(net, 0.5, joined).items():
        torch.testing.assert_close(_statistics(net, 0.5)[name][0], mean, rtol=1e-4, atol=1e-5)
    with pytest.raises(usconvert.UsconvertError, match="from a batch of 1 image: calibrate with more samples"):
        calibrate(net, [(data[0][0][:1],)], [0.5], samples=1)
