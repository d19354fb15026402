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
from helpers import without_dropout
from usconvert.train import NonFiniteLossError, Trainer, TrainingInterrupted, WidthSampler, make_config, sandwich_step
from usconvert.train.checkpoint import read_checkpoint
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
    without_dropout(net)
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
    without_dropout(net)
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
    assert make_config(sampling="max-random").inplace_distill is True
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
    assert {"val_top1_max", "val_top1_min", "val_top5_max", "lr", "loss_largest", "loss_smallest", "val_statistics",
            "time_s", "elapsed_s"} <= set(log[0])
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


def test_a_resumed_run_counts_the_time_of_every_process_that_trained_it(tmp_path):
    """Progress.seconds: the checkpoint keeps the time spent before a stop (mid-epoch too), and
    each epoch's ``elapsed_s`` in the log counts from the run's start, not the last resume."""
    config = make_config(data="fake:160", epochs=2, batch_size=16, lr=0.05, seed=1)
    out = tmp_path / "run.safetensors"
    with pytest.raises(TrainingInterrupted):
        Trainer(tiny_net(), config, out).fit(stop_after_steps=3)
    checkpoint = out.with_name("run.checkpoint.safetensors")
    before = read_checkpoint(checkpoint).progress.seconds
    assert before > 0
    resumed = Trainer(tiny_net(), config, out, resume=checkpoint)
    assert resumed.progress.seconds == before
    history = resumed.fit()
    assert before < history[0]["elapsed_s"] < history[1]["elapsed_s"] == resumed.progress.seconds
    log = [json.loads(line) for line in (tmp_path / "run.log.jsonl").read_text().splitlines()]
    assert [r["elapsed_s"] for r in log] == [r["elapsed_s"] for r in history]


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
        250, 128, 0.5, "linear", 4, 1e-4)
    assert v1.expect == {"model": "mobilenetv1_100", "min_width": 0.25, "divisor": 8}
    assert make_config(recipes / "us_mobilenetv2_imagenet.yaml").expect["min_width"] == 0.35
    import re
    import yaml
    for name in ("us_mobilenetv1_imagenet.yaml", "us_mobilenetv2_imagenet.yaml"):  # the paper's global batch of 1024
        recipe = yaml.safe_load((recipes / name).read_text())
        processes = int(re.search(r"--nproc_per_node=(\d+)", recipe["description"]).group(1))
        assert processes * recipe["batch_size"] == 1024, name
    assert make_config(recipes / "digits.yaml", epochs=2).epochs == 2  # flags override the recipe
    finetune = make_config(recipes / "finetune_pretrained.yaml")
    assert (finetune.teacher, finetune.inplace_distill, finetune.lr) == ("original", False, 0.01)


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


MODES_WORKER = Path(__file__).parent / "ddp_modes_worker.py"


def torchrun(out: Path, mode: str, port: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           f"--master_port={port}", str(MODES_WORKER), str(out), mode],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_ddp_trains_an_s_net_whose_switches_leave_parameters_unused(tmp_path):
    """Each switch's private batch-norm weights get no gradient at the other switches. Two
    processes must compute what one process computes from both ranks' batches, averaged."""
    from usconvert.data import fake
    from usconvert.train.losses import label_loss
    from usconvert.train.optim import create_optimizer, create_scheduler
    result = torchrun(tmp_path, "snet", 29521)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"snet_rank{r}.json").read_text())["indices"] for r in (0, 1)]
    net = usconvert.load(tmp_path / "initial.safetensors").train()
    without_dropout(net)  # as in the worker
    widths = [1.0, 0.75, 0.5, 0.25]
    net.track_statistics(widths)
    net.privatize_norms(widths)
    config = make_config(data="fake:160", epochs=1, batch_size=8, lr=0.05, seed=3, widths=widths, private_norms=True)
    optimizer = create_optimizer(net, opt=config.opt, lr=config.lr, weight_decay=config.weight_decay,
                                 momentum=config.momentum)
    scheduler = create_scheduler(optimizer, sched=config.sched, epochs=1, updates_per_epoch=len(ranks[0]) // 8,
                                 warmup_epochs=0, warmup_lr=config.warmup_lr, min_lr=0.0)
    train = fake(160, SIZE, 10, seed=3).train
    for step in range(len(ranks[0]) // 8):
        optimizer.zero_grad(set_to_none=True)
        for indices in ranks:
            chunk = indices[step * 8:(step + 1) * 8]
            x = torch.stack([train[i][0] for i in chunk])
            y = torch.tensor([train[i][1] for i in chunk])
            sandwich_step(net, net, x, y, widths, criterion=label_loss(), distill=None)
        for p in net.parameters():
            if p.grad is not None:
                p.grad /= 2
        optimizer.step()
        scheduler.step_update(num_updates=step + 1)
    net.set_width(1.0)
    trained = dict(usconvert.load(tmp_path / "snet.safetensors").named_parameters())
    replayed = dict(net.named_parameters())
    assert trained.keys() == replayed.keys() and any("statistics" in name for name in trained)  # private weights too
    for name, value in trained.items():
        torch.testing.assert_close(value, replayed[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.slow
def test_ddp_stopped_while_rank_0_writes_keeps_its_checkpoint_and_resumes_every_rank_exactly(tmp_path):
    """Rank 1 must not exit (and torchrun must not stop rank 0) before the checkpoint is
    written; after the resume every rank draws its own dropout masks again, so the run ends
    bitwise equal to one never stopped."""
    straight = torchrun(tmp_path / "straight", "straight", 29522)
    assert straight.returncode == 0, straight.stderr[-3000:]
    stopped = torchrun(tmp_path / "resumed", "stop", 29523)
    assert stopped.returncode != 0
    checkpoint = tmp_path / "resumed" / "run.checkpoint.safetensors"
    assert checkpoint.is_file(), stopped.stderr[-3000:]
    from usconvert.train.checkpoint import read_checkpoint
    assert read_checkpoint(checkpoint).progress.step == 3
    resumed = torchrun(tmp_path / "resumed", "resume", 29524)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = usconvert.load(tmp_path / "straight" / "run.safetensors")
    b = usconvert.load(tmp_path / "resumed" / "run.safetensors")
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), name


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
    assert math.isfinite(record["loss_largest"]) and math.isfinite(record["loss_smallest"])


def test_sync_batch_norm_in_one_process_is_plain_batch_norm():
    net = tiny_net()
    trainer = Trainer(net, make_config(data="fake:64", epochs=1, batch_size=16, sync_bn=True))
    assert all(isinstance(layer, torch.nn.SyncBatchNorm) for layer in net.batch_norm_layers().values())
    assert math.isfinite(trainer.fit()[-1]["loss_largest"])


# -- settings that must say what they do -------------------------------------------------------
def test_inplace_distillation_needs_a_rule_that_trains_width_one():
    """Random and min + random never train width 1.0, so there is no teacher: by default they
    learn from the labels, and asking for distillation is an error instead of a silent fallback."""
    assert make_config(sampling="random").inplace_distill is False
    assert make_config(sampling="min-random").inplace_distill is False
    assert make_config(widths=[1.0, 0.5], private_norms=True).inplace_distill is False  # S-Net: labels
    with pytest.raises(ConfigError, match="never train: use --sampling sandwich or max-random, or --no-inplace"):
        make_config(sampling="random", inplace_distill=True)
    with pytest.raises(ConfigError, match="1.0 among --widths"):
        make_config(widths=[0.5], inplace_distill=True)


def test_losses_are_named_by_the_largest_and_smallest_width_trained():
    from usconvert.train.trainer import _extremes
    assert _extremes([0.6, 0.3, 0.9, 0.4], [1.0, 2.0, 3.0, 4.0]) == (3.0, 2.0)  # random rule: no fixed order
    assert _extremes([1.0, 0.25, {"a": 0.5}], [1.0, 2.0, 3.0]) == (1.0, 2.0)


def test_bf16_autocast_computes_both_losses_in_float32():
    """On CPU, bf16 autocast would compute soft_cross_entropy's softmax in bf16 while
    cross-entropy runs in float32; both must see float32 outputs."""
    net = tiny_net().train()
    x, y = batch()
    dtypes = []

    def recording(loss):
        def wrapped(output, target):
            dtypes.append(output.dtype)
            return loss(output, target)
        return wrapped

    sandwich_step(net, net, x, y, [1.0, 0.25], criterion=recording(F.cross_entropy),
                  distill=recording(soft_cross_entropy),
                  autocast=lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    assert dtypes == [torch.float32, torch.float32]


# -- runs: the schedule, the log and the checkpoint agree -------------------------------------
def test_resuming_a_finished_run_with_more_epochs_rebuilds_the_schedule(tmp_path):
    out = tmp_path / "r.safetensors"
    settings = dict(data="fake:80", batch_size=16, lr=0.05, seed=1, sched="linear")
    Trainer(tiny_net(), make_config(epochs=1, **settings), out).fit()
    lrs = []
    trainer = Trainer(tiny_net(), make_config(epochs=3, **settings), out,
                      resume=tmp_path / "r.checkpoint.safetensors",
                      on_step=lambda t: lrs.append(t.optimizer.param_groups[0]["lr"]))
    history = trainer.fit()
    fresh = Trainer(tiny_net(), make_config(epochs=3, **settings))
    expected = []
    for step in range(4, 12):  # the steps of epochs 2 and 3 on a 3-epoch schedule
        fresh.scheduler.step_update(num_updates=step + 1)
        expected.append(fresh.optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx(expected) and min(lrs[:-1]) > 0  # 0 only after the last step
    assert [r["epoch"] for r in history] == [1, 2, 3]


def _log_epochs(path: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines()]


def test_a_fresh_run_keeps_an_earlier_log_aside_instead_of_appending(tmp_path):
    out = tmp_path / "f.safetensors"
    config = make_config(data="fake:48", epochs=2, batch_size=16)
    Trainer(tiny_net(), config, out).fit()
    Trainer(tiny_net(), config, out).fit()
    assert _log_epochs(tmp_path / "f.log.jsonl") == [1, 2]
    assert _log_epochs(tmp_path / "f.log.1.jsonl") == [1, 2]


def test_the_log_on_disk_matches_the_checkpoint_after_a_crash_between_them(tmp_path, monkeypatch):
    """A crash after the checkpoint of epoch 1 and before its log line (or after a log line
    whose checkpoint never landed): the resumed run's log is the checkpoint's history."""
    from usconvert.train import checkpoint as ckpt
    out = tmp_path / "c.safetensors"
    config = make_config(data="fake:80", epochs=3, batch_size=16, seed=2)
    real_write_log = ckpt.write_log

    def crash_on_second_epoch(path, history):
        if len(history) == 2:
            raise KeyboardInterrupt  # killed between the checkpoint and the log
        real_write_log(path, history)

    monkeypatch.setattr(ckpt, "write_log", crash_on_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_net(), config, out).fit()
    monkeypatch.setattr(ckpt, "write_log", real_write_log)
    assert _log_epochs(tmp_path / "c.log.jsonl") == [1]  # behind the checkpoint, which holds 2 epochs
    (tmp_path / "c.log.jsonl").write_text((tmp_path / "c.log.jsonl").read_text() * 2)  # and a stale duplicate
    trainer = Trainer(tiny_net(), config, out, resume=tmp_path / "c.checkpoint.safetensors")
    assert _log_epochs(tmp_path / "c.log.jsonl") == [1, 2]  # rewritten from the checkpoint at once
    trainer.fit()
    log = [json.loads(line) for line in (tmp_path / "c.log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert log == json.loads(json.dumps(trainer.history))


def test_validation_can_use_calibrated_statistics_and_gives_the_tracked_ones_back():
    net = tiny_net()
    trainer = Trainer(net, make_config(data="fake:96", epochs=1, batch_size=16, val_calibration=32))
    record = trainer.fit()[-1]
    assert record["val_statistics"] == "calibrated from 32 training images"
    net.set_width(net.min_width)
    tracked = {k: v.clone() for k, v in net.statistics.tensors().items()}
    trainer.validate()
    assert set(net.statistics.labels().values()) == {f"{net.min_width:g}"}
    assert all(torch.equal(v, tracked[k]) for k, v in net.statistics.tensors().items())


# -- a frozen teacher (train --teacher) --------------------------------------------------------
def test_a_teacher_distils_every_width_the_largest_too_on_top_of_the_labels():
    from usconvert.train.losses import TeacherDistillation
    net = tiny_net().train()
    without_dropout(net)
    x, y = batch()
    teacher_output = torch.randn(8, 10)
    kd = TeacherDistillation("soft-ce", ratio=0.5, temperature=2.0)
    losses = sandwich_step(net, net, x, y, [1.0, 0.25], criterion=F.cross_entropy, distill=kd,
                           teacher_output=teacher_output)
    for width, loss in zip([1.0, 0.25], losses):
        net.set_width(width)
        with torch.no_grad():
            out = net(x)
        expected = F.cross_entropy(out, y) + 0.5 * 4 * soft_cross_entropy(out / 2, teacher_output / 2)
        assert loss == pytest.approx(expected.item(), rel=1e-5)


def test_train_with_the_original_as_teacher_runs_it_once_per_batch_and_keeps_it_frozen(tmp_path):
    net = tiny_net()
    x = torch.randn(2, *SIZE)
    net.eval()
    with torch.no_grad():
        before = net(x)
    config = make_config(data="fake:96", epochs=2, batch_size=16, lr=0.05, teacher="original", kd_ratio=0.5)
    assert config.inplace_distill is False
    trainer = Trainer(net, config)
    calls = []
    trainer.teacher.register_forward_hook(lambda *a: calls.append(1))
    trainer.fit()
    assert len(calls) == trainer.progress.step == 8
    with torch.no_grad():
        torch.testing.assert_close(trainer.teacher(x), before)  # the network before training, unchanged
        net.eval()
        assert not torch.allclose(net(x), before)
    assert not any(p.requires_grad for p in trainer.teacher.parameters())


def test_a_teacher_run_stopped_and_resumed_ends_bitwise_equal(tmp_path):
    """On resume the teacher is rebuilt from the network the run started from, not from the
    checkpoint's trained weights."""
    settings = dict(data="fake:160", epochs=2, batch_size=16, lr=0.05, seed=1, teacher="original")
    straight = tiny_net()
    Trainer(straight, make_config(**settings), tmp_path / "a.safetensors").fit()
    with pytest.raises(TrainingInterrupted):
        Trainer(tiny_net(), make_config(**settings), tmp_path / "b.safetensors").fit(stop_after_steps=5)
    resumed = tiny_net()
    Trainer(resumed, make_config(**settings), tmp_path / "b.safetensors",
            resume=tmp_path / "b.checkpoint.safetensors").fit()
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_teacher_settings_that_cannot_work_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="replaces inplace distillation"):
        make_config(teacher="original", inplace_distill=True)
    other = tiny_net(classes=7)
    usconvert.save(other, tmp_path / "seven.safetensors")
    with pytest.raises(ConfigError, match=r"outputs \(7,\) per example, the network \(10,\)"):
        Trainer(tiny_net(), make_config(data="fake:64", epochs=1, batch_size=16,
                                        teacher=str(tmp_path / "seven.safetensors")))
    with pytest.raises(ConfigError, match="does not exist"):
        Trainer(tiny_net(), make_config(data="fake:64", epochs=1, batch_size=16, teacher="missing.safetensors"))


def test_channels_last_trains_the_same_function_with_nhwc_weights_and_images(tmp_path):
    config = dict(data="fake:96", epochs=1, batch_size=16, lr=0.05, seed=1, val_calibration=32)
    nchw = Trainer(tiny_net(), make_config(**config))
    last = {"nchw": nchw.fit()[-1]}
    nhwc = Trainer(tiny_net(), make_config(**config, channels_last=True), tmp_path / "nhwc.safetensors")
    seen = []
    nhwc.net.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    convolutions = [p for p in nhwc.net.parameters() if p.ndim == 4]
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in convolutions)
    assert not convolutions[0].is_contiguous()  # 3x3 over 3 channels: the layouts differ (not so for 1x1)
    last["nhwc"] = nhwc.fit()[-1]
    assert seen and all(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() for x in seen)
    for key in ("loss_largest", "loss_smallest", "val_loss_max", "val_loss_min"):
        assert last["nhwc"][key] == pytest.approx(last["nchw"][key], rel=1e-4), key
    for (name, a), (_, b) in zip(nchw.net.state_dict().items(), nhwc.net.state_dict().items()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
    saved = usconvert.load(tmp_path / "nhwc.safetensors")  # written in the standard layout
    for (name, a), (_, b) in zip(nhwc.net.state_dict().items(), saved.state_dict().items()):
        assert torch.equal(a, b), name
