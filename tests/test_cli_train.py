"""``usconvert train`` as a user runs it: files, resume, Ctrl-C, errors."""

import json
import re
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

TINY = Path(__file__).parent / "data" / "tiny.py"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["usconvert", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture
def converted(tmp_path):
    result = run("convert", f"{TINY}:tiny", "--input-size", "3,16,16", "-o", "t.safetensors", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return tmp_path


def test_train_writes_network_checkpoint_and_log(converted):
    result = run("train", "t.safetensors", "--data", "fake:96", "--epochs", "2", "-b", "16", "--lr", "0.05",
                 "--sampling", "max-random", "--widths-per-step", "3", "-o", "out.safetensors", cwd=converted)
    assert result.returncode == 0, result.stderr
    assert {p.name for p in converted.iterdir()} == {"t.safetensors", "out.safetensors", "out.checkpoint.safetensors",
                                                     "out.log.jsonl"}
    records = [json.loads(line) for line in (converted / "out.log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and records[-1]["step"] == 8
    resumed = run("train", "t.safetensors", "--data", "fake:96", "--epochs", "3", "-b", "16", "--lr", "0.05",
                  "--sampling", "max-random", "--widths-per-step", "3", "-o", "out.safetensors",
                  "--resume", "out.checkpoint.safetensors", cwd=converted)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming with changed settings: epochs" in resumed.stderr
    records = [json.loads(line) for line in (converted / "out.log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]


def test_train_samples_limit_the_images_of_an_epoch(converted):
    result = run("train", "t.safetensors", "--data", "fake:96", "--train-samples", "32", "--val-samples", "8",
                 "--epochs", "1", "-b", "16", "-o", "out.safetensors", cwd=converted)
    assert result.returncode == 0, result.stderr
    record = json.loads((converted / "out.log.jsonl").read_text())
    assert record["step"] == 2  # 32 images in batches of 16, not 96


def wait_for_line(process: subprocess.Popen, text: str, timeout: float = 1200) -> str:
    """Read the process's stderr until a line holds ``text`` (an event, not a guess at how long
    start-up takes); ``timeout`` is only a safety net. Returns what was read."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stderr], [], [], 1.0)
        if not ready:
            continue
        line = process.stderr.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return "".join(seen)
    raise AssertionError(f"no line with {text!r} from the process: {''.join(seen)[-2000:]}")


def interrupt_after_start(converted: Path, *extra: str) -> tuple[int, str]:
    """Start a long training run, Ctrl-C it once its loop runs; the step it stopped at, and stderr."""
    process = subprocess.Popen(["usconvert", "train", "t.safetensors", "--data", "fake:40000", "--epochs", "1",
                                "-b", "16", "-o", "out.safetensors", *extra], cwd=converted, stderr=subprocess.PIPE,
                               text=True)
    started = wait_for_line(process, "training from epoch 1")  # the loop runs; the epoch takes far longer
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=1200)
    stderr = started + stderr
    assert process.returncode == 130, stderr
    stopped = re.search(r"interrupted: stopped at epoch 1, step (\d+)", stderr)
    assert stopped, stderr
    return int(stopped.group(1)), stderr


def test_ctrl_c_checkpoints_at_a_step_boundary_and_resumes(converted):
    checkpoint = converted / "out.checkpoint.safetensors"
    first, _ = interrupt_after_start(converted)
    assert checkpoint.is_file() and not (converted / "out.safetensors").exists()
    # the resumed run goes on from that step (the whole epoch would take minutes: stopped again)
    second, stderr = interrupt_after_start(converted, "--resume", str(checkpoint))
    assert second > first, stderr
    from usconvert.train.checkpoint import read_checkpoint
    assert read_checkpoint(checkpoint).progress.step == second


@pytest.mark.parametrize("args,message", [
    (["--data", "digits"], "convert the model with --num-classes 10"),
    (["--data", "fake:64", "--sampling", "zigzag"], "--sampling must be one of"),
    (["--data", "fake:64", "--recipe", "missing.yaml"], "recipe missing.yaml does not exist"),
    (["--data", "fake:64", "-b", "16", "--resume", "t.safetensors"], "not a training checkpoint"),
    (["--data", "fake:8", "-b", "16"], "fewer than one batch"),
    (["--data", "fake:64", "--train-samples", "0"], "--train-samples must be at least 1"),
])
def test_bad_training_input_is_one_line(converted, args, message):
    if "digits" in args:  # a 7-class network on 10-class data
        assert run("convert", f"{TINY}:tiny", "--num-classes", "7", "--input-size", "3,16,16", "-o",
                   "t.safetensors", cwd=converted).returncode == 0
    result = run("train", "t.safetensors", *args, "--epochs", "1", "-o", "out.safetensors", cwd=converted)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_training_with_the_original_as_teacher_from_the_command_line(converted):
    result = run("train", "t.safetensors", "--data", "fake:96", "--epochs", "1", "-b", "16", "--teacher", "original",
                 "--kd-ratio", "0.5", "--kd-temperature", "2", "-o", "out.safetensors", cwd=converted)
    assert result.returncode == 0, result.stderr
    checkpoint = converted / "out.checkpoint.safetensors"
    from usconvert.train.checkpoint import read_checkpoint
    config = read_checkpoint(checkpoint).config
    assert (config["teacher"], config["kd_ratio"], config["kd_temperature"], config["inplace_distill"]) == (
        "original", 0.5, 2.0, False)
    bad = run("train", "t.safetensors", "--data", "fake:96", "--epochs", "1", "-b", "16", "--teacher", "nope.pt2",
              "-o", "out.safetensors", cwd=converted)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "does not exist" in bad.stderr
