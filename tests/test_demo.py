"""``usconvert demo --quick``: the whole method on embedded data in under a minute."""

import json
import subprocess

from PIL import Image

import usconvert


def test_quick_demo_trains_calibrates_and_plots(tmp_path):
    result = subprocess.run(["usconvert", "demo", "--quick", "-o", str(tmp_path / "demo")], capture_output=True,
                            text=True, timeout=1800)  # a safety net: the demo takes about a minute
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "demo"
    assert {p.name for p in out.iterdir()} >= {"digits_us.safetensors", "digits_us_calibrated.safetensors",
                                              "spectrum.json", "spectrum.png", "digits_us.log.jsonl"}
    rows = json.loads((out / "spectrum.json").read_text())["rows"]
    assert [r["width"] for r in rows] == [0.25, 0.5, 0.75, 1.0]
    assert rows[0]["multiply_adds"] < rows[-1]["multiply_adds"]
    # one epoch shows the pipeline, not accuracy (the slow training tests assert that)
    assert all(0 <= r["top1"] <= r["top5"] <= 100 and r["parameters"] > 0 for r in rows)
    with Image.open(out / "spectrum.png") as image:
        assert image.format == "PNG"
    assert "one network:" in result.stderr and "top-1 at width 1.0" in result.stderr
    net = usconvert.load(out / "digits_us_calibrated.safetensors")
    assert sorted(net.statistics.labels().values()) == ["0.25", "0.5", "0.75"]
