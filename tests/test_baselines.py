"""The paper's baselines, trained with the same trainer: individually trained widths and the
4-switch S-Net with switchable (private) batch norm."""

import io
from pathlib import Path

import pytest
import torch
from rich.console import Console

import usconvert
from usconvert.export import export
from usconvert.train import Trainer, WidthSampler, make_config
from usconvert.train.config import ConfigError
from usconvert.verify import relative_error

DATA = Path(__file__).parent / "data"
SIZE = (3, 16, 16)
SWITCHES = [1.0, 0.75, 0.5, 0.25]


def tiny_net() -> usconvert.SlimmableNet:
    torch.manual_seed(0)
    model, source = usconvert.create(f"{DATA / 'tiny.py'}:tiny", num_classes=10)
    return usconvert.convert(model, SIZE, source=source)


def test_fixed_widths_are_trained_every_step_largest_first():
    sampler = WidthSampler(0.25, fixed=[0.5, 1.0, 0.25])
    assert all(sampler.sample(step) == [1.0, 0.5, 0.25] for step in range(20))
    assert make_config(widths=[0.5, 1.0, 0.5]).widths == [1.0, 0.5]
    with pytest.raises(ConfigError, match="--private-norms needs --widths"):
        make_config(private_norms=True)
    with pytest.raises(ConfigError, match="--widths must be ratios"):
        make_config(widths=[1.5])


def test_private_norms_are_used_at_their_width_and_borrowed_between_switches(tmp_path):
    net = tiny_net()
    net.track_statistics(SWITCHES)
    net.privatize_norms(SWITCHES)
    x = torch.randn(4, *SIZE)
    net.eval()
    with torch.no_grad():
        before = {w: (net.set_width(w), net(x))[1] for w in (1.0, 0.75, 0.6, 0.5)}
        net.set_width(0.75)
        private_weight, private_bias, channels = net.statistics.affine(net.configuration_key())["7"]
        assert channels.tolist() == list(range(24)) and torch.equal(private_weight, net.layers["7"].weight[:24])
        private_bias.add_(1.0)  # only width 0.75, and the widths that borrow from it, see this
        after = {w: (net.set_width(w), net(x))[1] for w in (1.0, 0.75, 0.6, 0.5)}
    assert torch.equal(before[1.0], after[1.0]) and torch.equal(before[0.5], after[0.5])
    assert relative_error(after[0.75], before[0.75]) > 1e-3
    assert relative_error(after[0.6], before[0.6]) > 1e-3  # 0.6 has no switch: it borrows 0.75's

    net.set_width(0.75)
    exported = export(net)
    with torch.no_grad():
        assert relative_error(exported(x), net(x)) < 1e-6
    path = usconvert.save(net, tmp_path / "snet.safetensors")
    loaded = usconvert.load(path)
    loaded.eval()
    loaded.set_width(0.75)
    with torch.no_grad():
        assert torch.equal(loaded(x), after[0.75])


def test_calibrating_an_s_net_normalises_with_its_private_norms():
    net = tiny_net()
    net.privatize_norms(SWITCHES)
    with torch.no_grad():
        net.set_width(0.5)
        for weight, bias, _ in net.statistics.affine(net.configuration_key()).values():
            weight.mul_(3.0)
            bias.add_(1.0)  # the statistics of every later batch norm depend on these
    batches = [(torch.randn(8, *SIZE),) for _ in range(3)]
    results = {}
    for label, budget in (("dense copies", 2 ** 31), ("slicing", 0)):  # two independent paths
        usconvert.calibrate(net, batches, [0.5, 0.6], samples=24, memory_budget=budget)
        results[label] = {key: {n: [t.clone() for t in pair] for n, pair in (net.statistics.get(key) or {}).items()}
                          for key in net.statistics.labels()}
    assert sum(map(len, results["slicing"].values())) > 0
    for key, layers in results["slicing"].items():
        for name, (mean, var) in layers.items():
            dense_mean, dense_var = results["dense copies"][key][name]
            assert torch.allclose(mean, dense_mean, atol=1e-5) and torch.allclose(var, dense_var, atol=1e-4)
    net.train()
    net.set_width(0.5)
    for dropout in (m for m in net.modules() if isinstance(m, torch.nn.Dropout)):
        dropout.eval()
    with torch.no_grad(), net.batch_statistics_only():
        train_mode = net(torch.cat([b[0] for b in batches]))
    net.eval()
    with torch.no_grad():
        assert relative_error(net(torch.cat([b[0] for b in batches])), train_mode) < 0.05


def test_an_s_net_trains_private_norms_with_labels_at_every_switch():
    net = tiny_net()
    config = make_config(data="fake:64", epochs=1, batch_size=16, lr=0.05, widths=SWITCHES, private_norms=True,
                         inplace_distill=False)
    trainer = Trainer(net, config)
    net.set_width(0.5)
    private = net.statistics.affine(net.configuration_key())["1"][0].detach().clone()
    shared = net.layers["1"].weight.detach().clone()
    assert any(p is net.statistics.affine(net.configuration_key())["1"][0]
               for group in trainer.optimizer.param_groups for p in group["params"])
    history = trainer.fit()
    net.set_width(0.5)
    trained_private = net.statistics.affine(net.configuration_key())["1"][0]
    assert not torch.equal(trained_private, private)
    assert not torch.equal(net.layers["1"].weight[:8], shared[:8])  # width 1.0 trains the shared ones
    stats = net.statistics.get(net.configuration_key())["1"]
    assert stats[0].abs().sum() > 0  # each switch tracks its own statistics
    assert history[-1]["val_top1_min"] >= 0 and trainer.validation_widths == (1.0, 0.25)


def test_an_individual_model_trains_one_width_only():
    net = tiny_net()
    full_head = net.layers["12"].weight.detach().clone()
    console = Console(file=io.StringIO(), width=200)
    trainer = Trainer(net, make_config(data="fake:64", epochs=1, batch_size=16, lr=0.05, widths=[0.5],
                                       weight_decay=0.0),  # decay would shrink the unused weights too
                      console=console)
    history = trainer.fit()
    assert trainer.validation_widths == (0.5, 0.5)
    # the epoch line names its one width once, with the statistics it was validated with
    line, = [line for line in console.file.getvalue().splitlines() if line.startswith("epoch 1:")]
    assert f"val top-1 {history[0]['val_top1_max']:.1f}% at 0.5 (tracked during training);" in line
    changed = (net.layers["12"].weight != full_head).any(0)
    assert changed[:16].all() and not changed[16:].any()  # the classifier's inputs beyond width 0.5 never train
