"""Training: Algorithm 1 as the paper states it, each point tested, and the run mechanics."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import usconvert
from usconvert.train import NonFiniteLossError, Trainer, TrainingInterrupted, WidthSampler, make_config, sandwich_step
from usconvert.train.config import ConfigError
from usconvert.train.losses import soft_cross_entropy

DATA = Path(__file__).parent / "data"
SIZE = (3, 16, 16)


def tiny_net(factory: str = "tiny", classes: int = 10) -> usconvert.SlimmableNet:
    torch.manual_seed(0)
    model, source = usconvert.create(f"{DATA / 'tiny.py'}:{factory}", num_classes=classes)
    return usconvert.convert(model, SIZE, source=source)


# -- the sampler -------------------------------------------------------------------------------
@pytest.mark.parametrize("rule,has_max,has_min", [("sandwich", True, True), ("random", False, False),
                                                  ("min-random", False, True), ("max-random", True, False)])
def test_sampler_yields_the_rule_and_stays_in_range(rule, has_max, has_min):
    sampler = WidthSampler(0.25, n=4, rule=rule, seed=3)
    for step in range(200):
        widths = sampler.sample(step)
        assert len(widths) == 4 and all(0.25 <= w <= 1.0 for w in widths)
        assert (widths[0] == 1.0) == has_max
        assert (0.25 in widths) == has_min
        assert widths == sampler.sample(step)  # the same on every rank, and after a resume
    assert len({tuple(sampler.sample(s)) for s in range(50)}) == 50


def test_nonuniform_sampling_draws_a_ratio_per_space():
    widths = WidthSampler(0.25, n=4, nonuniform=True).sample(0, ["a", "b"])
    assert widths[:2] == [1.0, 0.25]
    assert all(isinstance(w, dict) and set(w) == {"a", "b"} for w in widths[2:])


# -- one step of Algorithm 1 -------------------------------------------------------------------
def batch(n: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *SIZE, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_sub_width_losses_follow_the_teacher_not_the_labels():
    net = tiny_net().train()
    for m in net.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    x, y = batch()
    widths = [1.0, 0.25, 0.5, 0.75]
    kwargs = dict(criterion=F.cross_entropy, distill=soft_cross_entropy)
    losses = sandwich_step(net, net, x, y, widths, **kwargs)
    other_labels = sandwich_step(net, net, x, (y + 1) % 10, widths, **kwargs)
    assert other_labels[0] != losses[0] and other_labels[1:] == losses[1:]
    # the sub-width losses are the soft cross-entropy against the largest width's output
    with torch.no_grad():
        net.set_width(1.0)
        teacher = net(x)
        for width, loss in zip(widths[1:], losses[1:]):
            net.set_width(width)
            assert loss == pytest.approx(soft_cross_entropy(net(x), teacher).item(), rel=1e-5)
    # without inplace distillation every width learns from the labels
    plain = sandwich_step(net, net, x, (y + 1) % 10, widths, criterion=F.cross_entropy, distill=None)
    assert plain[1:] != losses[1:]


def test_gradients_are_the_sum_of_per_width_gradients_with_a_detached_teacher():
    net = tiny_net().train()
    for m in net.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    x, y = batch()
    widths = [1.0, 0.25, 0.6]
    net.zero_grad()
    sandwich_step(net, net, x, y, widths, criterion=F.cross_entropy, distill=soft_cross_entropy)
    accumulated = {n: p.grad.clone() for n, p in net.named_parameters()}

    expected = {n: torch.zeros_like(p) for n, p in net.named_parameters()}
    net.set_width(1.0)
    with torch.no_grad():
        teacher = net(x)
    for width in widths:
        net.zero_grad()
        net.set_width(width)
        out = net(x)
        loss = F.cross_entropy(out, y) if width == 1.0 else soft_cross_entropy(out, teacher)
        loss.backward()
        for n, p in net.named_parameters():
            expected[n] += p.grad
    for n in expected:
        torch.testing.assert_close(accumulated[n], expected[n], rtol=1e-5, atol=1e-7)


def test_one_optimizer_step_per_iteration(monkeypatch):
    net = tiny_net()
    trainer = Trainer(net, make_config(data="fake:96", epochs=1, batch_size=16, lr=0.01))
    steps = []
    original = trainer.optimizer.step
    monkeypatch.setattr(trainer.optimizer, "step", lambda *a, **k: (steps.append(1), original(*a, **k))[1])
    trainer.fit()
    assert len(steps) == len(trainer.train_loader) == trainer.progress.step == 4


def test_inplace_distillation_is_on_by_default_and_misnamed_keys_fail(tmp_path):
    assert make_config().inplace_distill is True
    trainer = Trainer(tiny_net(), make_config(data="fake:64", epochs=1, batch_size=16))
    assert trainer.distill is soft_cross_entropy
    recipe = tmp_path / "r.yaml"
    recipe.write_text("inplace-distill: false\n")
    assert make_config(recipe).inplace_distill is False
    recipe.write_text("inplace_distilation: false\n")  # the paper's configs lost the feature this way
    with pytest.raises(ConfigError, match="unknown settings: inplace_distilation"):
        make_config(recipe)


def test_only_min_and_max_widths_track_statistics():
    net = tiny_net()
    trainer = Trainer(net, make_config(data="fake:64", epochs=1, batch_size=16, lr=0.01))
    bn = net.layers["1"]
    full_before = bn.running_mean.clone()
    trainer.fit()
    assert not torch.equal(bn.running_mean, full_before)
    net.set_width(net.min_width)
    tracked = net.statistics.get(net.configuration_key())["1"][0]
    assert tracked.abs().sum() > 0  # updated from zero by min-width forwards
    net.set_width(0.6)
    assert net.statistics.get(net.configuration_key()) is None  # random widths keep nothing
    net.set_width(1.0)


# -- running for real --------------------------------------------------------------------------
@pytest.mark.slow
def test_a_short_run_on_digits_learns_at_both_widths(tmp_path):
    torch.manual_seed(0)
    model, source = usconvert.create("tv:mobilenet_v2", num_classes=10)
    net = usconvert.convert(model, (3, 32, 32), source=source)
    out = tmp_path / "digits.safetensors"
    history = usconvert.train(net, out, recipe=Path(__file__).parents[1] / "recipes" / "digits.yaml", epochs=5)
    last = history[-1]
    assert last["val_top1_max"] > 70 and last["val_top1_min"] > 60, last  # chance is 10%
    log = [json.loads(line) for line in (tmp_path / "digits.log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(1, 6))
    assert {"val_top1_max", "val_top1_min", "val_top5_max", "lr", "loss_max", "time_s"} <= set(log[0])
    trained = usconvert.load(out)
    trained.eval()
    trained.set_width(trained.min_width)  # the tracked min-width statistics were saved
    assert trained(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def run_to_end(tmp_path: Path, name: str, stop_after: int | None = None) -> usconvert.SlimmableNet:
    config = make_config(data="fake:160", epochs=2, batch_size=16, lr=0.05, seed=1)
    out = tmp_path / f"{name}.safetensors"
    net = tiny_net()
    if stop_after is not None:
        with pytest.raises(TrainingInterrupted, match="resume with --resume"):
            Trainer(net, config, out).fit(stop_after_steps=stop_after)
        net = tiny_net()  # a new process would start from nothing but the checkpoint
        torch.manual_seed(12345)  # and with other RNG states
        Trainer(net, config, out, resume=out.with_name(f"{name}.checkpoint.safetensors")).fit()
    else:
        Trainer(net, config, out).fit()
    return usconvert.load(out)


@pytest.mark.parametrize("stop_after", [3, 8])  # mid-epoch, and exactly at the end of epoch 1
def test_a_stopped_and_resumed_run_ends_bitwise_equal(tmp_path, stop_after):
    straight = run_to_end(tmp_path, "straight")
    resumed = run_to_end(tmp_path, "resumed", stop_after)
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    for (name, a), (_, b) in zip(straight.statistics.state_dict().items(), resumed.statistics.state_dict().items()):
        assert torch.equal(a, b), name
    log = [json.loads(line)["epoch"] for line in (tmp_path / "resumed.log.jsonl").read_text().splitlines()]
    assert log == [1, 2]


def test_class_count_mismatch_names_the_fix():
    with pytest.raises(ConfigError, match="convert the model with --num-classes 10"):
        Trainer(tiny_net(classes=7), make_config(data="digits", epochs=1))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "nan.safetensors"
    calls = []

    def poisoned(output, target):
        calls.append(1)
        loss = F.cross_entropy(output, target)
        return loss * float("nan") if len(calls) > 8 else loss  # epoch 2 of 4 steps each

    trainer = Trainer(tiny_net(), make_config(data="fake:80", epochs=3, batch_size=16), out, criterion=poisoned)
    with pytest.raises(NonFiniteLossError, match="became nan.*last good checkpoint is .*nan.checkpoint.safetensors"):
        trainer.fit()
    checkpoint = tmp_path / "nan.checkpoint.safetensors"
    assert checkpoint.is_file() and not out.exists()
    assert usconvert.load(checkpoint).input_size == SIZE


def test_shipped_recipes_load():
    recipes = Path(__file__).parents[1] / "recipes"
    v1 = make_config(recipes / "us_mobilenetv1_imagenet.yaml")
    assert (v1.epochs, v1.batch_size, v1.lr, v1.sched, v1.widths_per_step, v1.weight_decay) == (
        250, 1024, 0.5, "linear", 4, 1e-4)
    assert v1.expect == {"model": "mobilenetv1_100", "min_width": 0.25, "divisor": 8}
    assert make_config(recipes / "us_mobilenetv2_imagenet.yaml").expect["min_width"] == 0.35
    assert make_config(recipes / "digits.yaml", epochs=2).epochs == 2  # flags override the recipe


def test_recipe_expectations_are_checked():
    recipes = Path(__file__).parents[1] / "recipes"
    with pytest.raises(ConfigError, match="--min-width 0.35"):
        Trainer(tiny_net(), make_config(recipes / "us_mobilenetv2_imagenet.yaml", data="fake:64"))


# -- distributed -------------------------------------------------------------------------------
WORKER = Path(__file__).parent / "ddp_worker.py"


@pytest.mark.slow
def test_ddp_on_two_processes_matches_one_process(tmp_path):
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                             "--master_port=29517", str(WORKER), str(tmp_path), "8"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert not set(ranks[0]["indices"]) & set(ranks[1]["indices"])  # disjoint data
    assert ranks[0]["checksums"] == ranks[1]["checksums"]  # identical weights after every step
    assert len(ranks[0]["checksums"]) == ranks[0]["steps"] > 1

    single = subprocess.run([sys.executable, str(WORKER), str(tmp_path / "single"), "16"],
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    distributed = usconvert.load(tmp_path / "out.safetensors")
    one = usconvert.load(tmp_path / "single" / "out.safetensors")
    for (name, a), (_, b) in zip(distributed.model.state_dict().items(), one.model.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


def test_image_folder_data_through_timm(tmp_path):
    """A real ImageFolder tree (digits written as PNG files), read by timm's dataset factory."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for split, start in (("train", 0), ("val", 200)):
        for i in range(start, start + 60):
            label = int(digits.target[i]) % 3
            folder = tmp_path / "images" / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray((digits.images[i] * 15).astype("uint8")).convert("RGB").save(folder / f"{i}.png")
    trainer = Trainer(tiny_net(classes=3), make_config(data=str(tmp_path / "images"), epochs=1, batch_size=16))
    assert trainer.splits.num_classes == 3
    images, labels = next(iter(trainer.train_loader))
    assert images.shape == (16, *SIZE) and labels.max() < 3
    record = trainer.fit()[-1]
    assert 0 <= record["val_top1_max"] <= 100
    with pytest.raises(ConfigError, match="--num-classes 3"):
        Trainer(tiny_net(classes=10), make_config(data=str(tmp_path / "images"), epochs=1))


def test_mixed_precision_bf16_on_cpu():
    trainer = Trainer(tiny_net(), make_config(data="fake:64", epochs=1, batch_size=16, amp=True))
    assert trainer.scaler is None  # bfloat16 needs no loss scaling
    with trainer.autocast():
        assert trainer.net(torch.randn(2, *SIZE)).dtype == torch.bfloat16
    record = trainer.fit()[-1]
    assert math.isfinite(record["loss_max"]) and math.isfinite(record["loss_min"])


def test_sync_batch_norm_in_one_process_is_plain_batch_norm():
    net = tiny_net()
    trainer = Trainer(net, make_config(data="fake:64", epochs=1, batch_size=16, sync_bn=True))
    assert all(isinstance(layer, torch.nn.SyncBatchNorm) for layer in net.batch_norm_layers().values())
    assert math.isfinite(trainer.fit()[-1]["loss_max"])
