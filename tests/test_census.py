"""The census on a fixed sample of timm families and torchvision models (the full census is a
benchmark: docs/COVERAGE.md)."""

import json
import subprocess

import pytest

from usconvert.census import (census, failure_cause, grouped_failures, is_cnn, markdown, model_names, parameter_count,
                              sizes_to_try, smallest_variant, smallest_variants, timm_families)

# one small model per family, quick to check; tests/census_sample.txt adds slower ones
CI_SAMPLE = ["resnet18", "resnext26ts", "mobilenetv2_050", "mobilenetv3_small_050", "efficientnet_b0", "ghostnet_050",
             "regnety_002", "densenet121", "dla34", "cspresnet50", "convnext_atto", "repvgg_a0", "rexnet_100",
             "mixnet_s", "lcnet_050", "tinynet_e", "gernet_s", "selecsls42b", "res2net50_26w_4s", "resnest14d",
             "skresnet18", "ese_vovnet19b_dw", "poolformer_s12", "mobilevit_xxs", "efficientformer_l1",
             "levit_128s", "vit_tiny_patch16_224", "tv:resnet18", "tv:mobilenet_v3_small", "tv:squeezenet1_0",
             "tv:googlenet", "tv:mnasnet0_5", "tv:regnet_x_400mf", "tv:efficientnet_b0", "tv:shufflenet_v2_x0_5"]


def test_sizes_tried_before_the_models_own_are_multiples_of_common_patch_grids():
    assert sizes_to_try((3, 128, 128), (3, 768, 768)) == [(3, 128, 128), (3, 140, 140), (3, 144, 144), (3, 768, 768)]
    assert sizes_to_try((3, 100, 120), (3, 224, 224)) == [(3, 100, 120), (3, 112, 126), (3, 128, 128), (3, 144, 144),
                                                          (3, 224, 224)]
    assert sizes_to_try((3, 128, 128), (3, 144, 144)) == [(3, 128, 128), (3, 140, 140), (3, 144, 144)]
    assert sizes_to_try((3, 224, 224), (3, 224, 224)) == [(3, 224, 224)]


@pytest.mark.slow
def test_ci_sample_passes_every_check(tmp_path):
    (tmp_path / "models.txt").write_text("\n".join(CI_SAMPLE))
    # per model and in all, time limits are safety nets for a busy machine, not expectations
    result = subprocess.run(["usconvert", "census", "--models", str(tmp_path / "models.txt"), "--jobs", "1",
                             "--timeout", "1200", "-o", str(tmp_path / "c.json"), "-o", str(tmp_path / "c.md")],
                            capture_output=True, text=True, timeout=7200)
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((tmp_path / "c.json").read_text())["results"]
    failed = {r["name"]: r["error"] for r in results if not r["passed"]}
    assert not failed, failed
    cnns = sorted(r["slimmable_share"] for r in results if is_cnn(r))
    assert len(cnns) >= 30 and cnns[len(cnns) // 2] >= 0.9  # median share of multiply-adds that scale with width
    assert not is_cnn(next(r for r in results if r["name"] == "vit_tiny_patch16_224"))
    report = (tmp_path / "c.md").read_text()
    assert f"**{len(CI_SAMPLE)} of {len(CI_SAMPLE)} models pass**" in report


def test_failures_are_grouped_by_cause_and_reported():
    results = [
        {"name": "a", "passed": False, "stage": "convert", "error": "ConversionError: cannot trace 'Foo' at 3"},
        {"name": "b", "passed": False, "stage": "convert", "error": "ConversionError: cannot trace 'Bar' at 7"},
        {"name": "c", "passed": False, "stage": "timeout", "error": "no result within 120s"},
        {"name": "d", "passed": True, "stage": "done", "slimmable_share": 0.95, "convolution_share": 0.9,
         "macs_min_over_full": 0.1, "frozen": [["x:out", "model output"]], "seconds": 2.0},
        {"name": "tv:e", "passed": True, "stage": "done", "slimmable_share": 0.5, "convolution_share": 0.1,
         "macs_min_over_full": 0.5, "frozen": [], "seconds": 1.0},
    ]
    groups = grouped_failures(results)
    assert list(groups.values()) == [["a", "b"], ["c"]]
    assert failure_cause(results[0]) == "convert: ConversionError: cannot trace … at …"
    text = markdown(results, {"command": "usconvert census", "date": "2026-11-24", "timm": "1", "torch": "2",
                              "torchvision": "0"})
    assert "**2 of 5 models pass**" in text and "| d | pass | 95% | 90% | 0.100 |" in text
    assert "| timm | 4 | 1 | 25% | 1 | 95% |  |" in text and "| torchvision | 1 | 1 | 100% | 0 |  | 50% |" in text
    assert "- **2** convert: ConversionError: cannot trace … at …: a, b" in text and "None." not in text
    meta = {"command": "usconvert census", "date": "2026-12-06", "timm": "1", "torch": "2", "torchvision": "0"}
    assert "## Failures by cause\n\nNone.\n" in markdown(results[3:], meta)


def test_model_lists_and_the_smallest_variant_of_a_family():
    assert 90 <= len(timm_families()) <= 200 and "resnet18" in model_names("timm", "resnet1*")
    # by parameter count on the meta device, not by name; timm's own test configurations last
    assert smallest_variant(["resnet50", "resnet18", "test_resnet", "resnet10t"]) == "resnet10t"
    assert smallest_variant(["test_resnet"]) == "test_resnet"
    assert parameter_count("resnet18") == 11_181_642
    assert all(n.startswith("tv:") for n in model_names("torchvision"))
    assert "tv:resnet18" in model_names("torchvision")


def test_the_smallest_variants_are_counted_once_per_timm_version_then_read_from_the_cache(tmp_path):
    import timm
    families = {module: models for module, models in timm_families().items() if models}
    cache = tmp_path / f"smallest-timm-variants-{timm.__version__}.json"
    # every family cached but two: one missing, one whose cached choice timm no longer lists
    cached = {module: models[0] for module, models in families.items() if module not in ("ghostnet", "mobilevit")}
    cached["mobilevit"] = "a_model_timm_removed"
    cache.write_text(json.dumps(cached))
    names = smallest_variants(tmp_path)
    written = json.loads(cache.read_text())
    assert written["ghostnet"] == smallest_variant(families["ghostnet"]) == "ghostnet_050"
    assert written["mobilevit"] == smallest_variant(families["mobilevit"]) == "mobilevit_xxs"
    assert names == [written[module] for module in families]
    assert all(written[m] == cached[m] for m in cached if m != "mobilevit")  # the others were not counted again


MODEL_THAT_DIES_ONCE = '''
import os, sys
from pathlib import Path
from torch import nn

def build(num_classes=10):
    marker = Path(__file__).with_suffix(".died")
    if not marker.exists():  # the first process dies as one killed for memory would
        marker.touch()
        os._exit(137)
    return nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, num_classes))
'''


def test_a_process_that_dies_beside_others_is_checked_again_alone(tmp_path):
    (tmp_path / "dies.py").write_text(MODEL_THAT_DIES_ONCE)
    reported = []
    results = census([f"{tmp_path / 'dies.py'}:build", "resnet10t"], input_size=(3, 32, 32), timeout=1200, jobs=2,
                     on_result=reported.append)
    first = results[0]
    assert first["passed"] and first["retried_alone"] and (tmp_path / "dies.died").exists()
    assert sorted(r["name"] for r in reported) == sorted(r["name"] for r in results)  # each reported once
