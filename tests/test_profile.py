"""Multiply-adds and parameters per width."""

import pytest

import usconvert
from usconvert.models import create
from usconvert.profile import active_parameters, count_macs, summary


@pytest.fixture(scope="module")
def mobilenet():
    model, source = create("mobilenetv2_100")
    return usconvert.convert(model, (3, 224, 224), source=source)


def test_mobilenetv2_multiply_adds_match_the_paper(mobilenet):
    full = count_macs(mobilenet, 1.0)
    assert abs(full.macs - 300.8e6) / 300.8e6 < 0.01  # conv + linear, the paper's convention
    assert abs(full.total - 314.2e6) / 314.2e6 < 0.01  # fvcore's total includes batch norm


def test_counts_grow_with_width_and_parameters_shrink(mobilenet):
    counts = [count_macs(mobilenet, w).macs for w in (0.25, 0.5, 0.75, 1.0)]
    assert counts == sorted(counts) and counts[0] < counts[-1]
    mobilenet.set_width(0.25)
    small = active_parameters(mobilenet)
    mobilenet.set_width(1.0)
    assert active_parameters(mobilenet) == sum(p.numel() for p in mobilenet.parameters())
    assert small < 0.2 * active_parameters(mobilenet)
    assert mobilenet.width == 1.0  # counting restores the width


def test_summary(mobilenet):
    info = summary(mobilenet)
    assert info["slimmable_share"] == pytest.approx(1.0)
    assert info["frozen_spaces"] == 1 and info["spaces"][-1]["reasons"] == ["model output"]
    assert info["multiply_adds"]["min_over_full"] < 0.15
    assert info["spaces"][0]["active_at_min_width"] == 8
