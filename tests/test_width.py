import pytest

from usconvert import active_units, make_divisible


@pytest.mark.parametrize("value,expected", [
    (32 * 0.25, 8), (32 * 0.5, 16), (96 * 0.35, 32), (1280 * 0.25, 320), (3.0, 8), (0.1, 8),
    (12.0, 16),  # 12 + 4 rounds up to 16
    (11.9, 8 + 8),  # rounds to 8, which is below 90% of 11.9, so one more divisor
    (20.0, 24), (43.0, 40),
])
def test_make_divisible_follows_the_mobilenet_rule(value, expected):
    assert make_divisible(value, 8) == expected


def test_make_divisible_is_non_decreasing():
    values = [v / 10 for v in range(1, 5000)]
    results = [make_divisible(v, 8) for v in values]
    assert results == sorted(results)


def test_active_units_full_width_is_the_whole_space():
    for size in (1, 3, 42, 1000):
        assert active_units(size, 1.0, 8) == size


def test_active_units_bounds_and_divisor():
    for size in (16, 24, 40, 96, 320, 1280):
        previous = 0
        for step in range(25, 101):
            k = active_units(size, step / 100, 8)
            assert 8 <= k <= size
            assert k % 8 == 0 or k == size
            assert k >= previous
            previous = k


def test_space_smaller_than_divisor_never_shrinks():
    assert active_units(6, 0.25, 8) == 6


def test_step_and_unit_channels_give_whole_groups():
    # 32 groups of 4 channels (ResNeXt 32x4d stage 1): channel counts are multiples of 8, i.e. 2 groups
    assert active_units(32, 0.25, 8, unit_channels=4) == 8
    # a group width of 24 (RegNet): multiples of lcm(8, 24) = 24 channels, i.e. whole groups
    assert active_units(10, 0.5, 8, unit_channels=24) == 5
    # a step of 3 units with divisor 8: multiples of 24 channels
    assert active_units(96, 0.5, 8, step=3) == 48
    assert active_units(48, 0.25, 8, step=3) == 24
    assert active_units(12, 0.25, 8, step=3) == 12  # no multiple of 24 fits below 12
