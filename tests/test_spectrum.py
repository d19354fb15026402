"""The FLOPs-accuracy spectrum and the profiler, through the command line and the API."""

import json
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image

import usconvert
from usconvert.spectrum import spectrum
from usconvert.width import parse_widths, width_grid

DATA = Path(__file__).parent / "data"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["usconvert", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_width_lists_and_ranges():
    assert parse_widths("0.25,0.5,1.0") == [0.25, 0.5, 1.0]
    grid = parse_widths("0.25:1.0:0.025")
    assert len(grid) == 31 and grid[0] == 0.25 and grid[-1] == 1.0 and grid[10] == 0.5
    assert width_grid(0.35, 1.0, 0.25) == [0.35, 0.6, 0.85, 1.0]
    with pytest.raises(usconvert.WidthError, match="start:stop:step"):
        parse_widths("0.25:1.0")


def test_each_width_is_evaluated_once_per_batch():
    torch.manual_seed(0)
    model, source = usconvert.create(f"{DATA / 'tiny.py'}:tiny", num_classes=10)
    net = usconvert.convert(model, (3, 16, 16), source=source)
    calls = []
    net.register_forward_hook(lambda *a: calls.append(net.width))
    data = [(torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))) for _ in range(3)]
    with net.sliced_statistics():
        rows = spectrum(net, data, [0.25, 0.5, 1.0])
    assert calls == [0.25, 0.5, 1.0] * 3  # each batch through every width, once
    assert [r.width for r in rows] == [0.25, 0.5, 1.0] and all(r.configuration is None for r in rows)
    assert rows[0].multiply_adds < rows[1].multiply_adds < rows[2].multiply_adds
    assert rows[0].parameters < rows[2].parameters and all(0 <= r.top1 <= r.top5 <= 100 for r in rows)


def test_a_mean_over_trainings_is_drawn_with_its_spread():
    """A series of means over seeds (rows with ``top1_std``) gets a band of one std either side;
    a single training's series and a single point get none."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from usconvert.spectrum import draw

    mean = {"name": "mean of 3 seeds", "rows": [{"multiply_adds": 1e6, "top1": 80.0, "top1_std": 1.0},
                                                {"multiply_adds": 2e6, "top1": 90.0, "top1_std": 0.5}]}
    single = {"name": "one seed", "rows": [{"multiply_adds": 1e6, "top1": 81.0}, {"multiply_adds": 2e6, "top1": 89.0}]}
    point = {"name": "I-Net", "rows": [{"multiply_adds": 2e6, "top1": 88.0, "top1_std": 0.3}]}
    figure, axes = plt.subplots()
    draw([mean, single, point], axes, "t")
    (band,) = axes.collections
    lower, upper = band.get_paths()[0].vertices[:, 1].min(), band.get_paths()[0].vertices[:, 1].max()
    assert (lower, upper) == (79.0, 90.5)
    assert band.get_facecolor()[0][:3] == pytest.approx(matplotlib.colors.to_rgb(axes.lines[0].get_color()))
    plt.close(figure)


@pytest.mark.slow
def test_calibrate_spectrum_and_profile_commands(trained_digits, tmp_path):
    path, _ = trained_digits
    result = run("calibrate", str(path), "--data", "digits", "--samples", "512", "--widths", "0.25:1.0:0.25",
                 "-o", "cal.safetensors", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "calibrated 4 channel configurations (4 widths)" in result.stderr
    info = json.loads(run("inspect", "cal.safetensors", "--json", cwd=tmp_path).stdout)
    assert info["calibrated_widths"] == ["0.25", "0.5", "0.75"]

    (tmp_path / "point.json").write_text(json.dumps({"name": "individual 1.0",
                                                     "rows": [{"multiply_adds": 6e6, "top1": 90.0}]}))
    result = run("spectrum", "cal.safetensors", "--data", "digits", "--step", "0.25", "-o", "s.json", "-o",
                 "s.csv", "-o", "s.png", "--compare", str(tmp_path / "point.json"), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "s.json").read_text())["rows"]
    assert json.loads(result.stdout)["rows"] == rows  # --json prints what -o .json writes
    assert [r["width"] for r in rows] == [0.25, 0.5, 0.75, 1.0] and {r["configuration"] for r in rows} == {None}
    # trained for only 3 epochs (48-67% at 0.5 and 0.25, by thread count), calibrated: every width is
    # far above chance (10%)
    assert all(r["top1"] > 40 for r in rows)
    csv_lines = (tmp_path / "s.csv").read_text().splitlines()
    assert len(csv_lines) == 5 and csv_lines[0].startswith("width,configuration,multiply_adds,parameters,top1")
    assert csv_lines[1].startswith("0.25,,")
    with Image.open(tmp_path / "s.png") as image:
        assert image.format == "PNG" and image.size[0] > 500

    uncalibrated = run("spectrum", str(path), "--data", "digits", "--widths", "0.5", cwd=tmp_path)
    assert uncalibrated.returncode == 2 and "usconvert calibrate" in uncalibrated.stderr

    result = run("profile", "cal.safetensors", "--widths", "0.25,1.0", "--repeats", "3", "--per-layer", "--json",
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    profile = json.loads(result.stdout)["rows"]
    shared = {"width", "configuration", "multiply_adds", "parameters", "latency_ms_batch_1", "latency_iqr_ms_batch_1"}
    assert shared <= set(profile[0]) and shared <= set(rows[0])  # one name per field in both commands
    assert [r["width"] for r in profile] == [0.25, 1.0] and rows[0]["multiply_adds"] == profile[0]["multiply_adds"]
    assert profile[0]["multiply_adds"] < profile[1]["multiply_adds"]
    assert profile[0]["latency_ms_batch_1"] > 0 and sum(v["share"] for v in profile[1]["layers"].values()) == \
        pytest.approx(1.0)


@pytest.mark.parametrize("args,message", [
    (["calibrate", "x.safetensors", "--widths", "a,b", "-o", "y.safetensors"], "widths must be a list"),
    (["calibrate", "x.safetensors", "--mode", "fast", "-o", "y.safetensors"], "exact or moving"),
    (["spectrum", "x.safetensors", "--widths", "0.1"], "outside [0.25, 1.0]"),
    (["profile", "missing.safetensors"], "does not exist"),
])
def test_bad_input_is_one_line(tmp_path, args, message):
    assert run("convert", f"{DATA / 'tiny.py'}:tiny", "--input-size", "3,16,16", "-o", "x.safetensors",
               cwd=tmp_path).returncode == 0
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr
