from usconvert.graph.spaces import SpaceGraph


def atoms(graph, layout):
    return [(node.name, inner) for node, inner in graph.expand(layout)]


def test_merge_of_equal_spaces_keeps_the_older_name():
    g = SpaceGraph()
    a, b = g.layout("a", 16), g.layout("b", 16)
    assert g.merge(a, b, "add")
    assert atoms(g, b) == [("a", 1)]


def test_merge_of_a_concatenation_refines_the_other_side():
    g = SpaceGraph()
    a, b, c = g.layout("a", 8), g.layout("b", 8), g.layout("c", 16)
    g.merge(a + b, c, "add")
    assert atoms(g, c) == [("a", 1), ("b", 1)]


def test_merge_with_different_units_scales_the_finer_space():
    g = SpaceGraph()
    channels, groups = g.layout("x", 32), g.layout("conv:groups", 8)
    g.merge(channels, ((groups[0][0], 4),), "grouped conv")
    assert atoms(g, channels) == [("conv:groups", 4)]
    assert groups[0][0].unit_channels == 4


def test_incompatible_units_freeze_both_sides():
    g = SpaceGraph()
    a, b = g.layout("a", 6), g.layout("b", 4)
    g.merge(((a[0][0], 2),), ((b[0][0], 3),), "op")
    assert a[0][0].frozen_reasons and b[0][0].frozen_reasons


def test_size_mismatch_freezes():
    g = SpaceGraph()
    a, b = g.layout("a", 6), g.layout("b", 4)
    assert not g.merge(a, b, "op")
    assert "channel counts differ" in a[0][0].frozen_reasons[0]


def test_split_at_segment_boundaries_and_inside_a_space():
    g = SpaceGraph()
    a, b = g.layout("a", 8), g.layout("b", 8)
    assert [atoms(g, p) for p in g.split(a + b, [8, 8], "split")] == [[("a", 1)], [("b", 1)]]
    pieces = g.split(a, [4, 4], "chunk")
    assert [atoms(g, p) for p in pieces] == [[("a[0:4]", 1)], [("a[4:8]", 1)]]
    assert atoms(g, a) == [("a[0:4]", 1), ("a[4:8]", 1)]


def test_split_inside_a_unit_is_refused():
    g = SpaceGraph()
    a = g.layout("a", 4)
    assert g.split(((a[0][0], 2),), [3, 5], "split") is None


def test_zero_length_pieces():
    g = SpaceGraph()
    a = g.layout("a", 8)
    pieces = g.split(a, [0, 8, 0], "slice")
    assert [atoms(g, p) for p in pieces] == [[], [("a", 1)], []]


def test_splitting_a_grouped_space_off_group_boundaries_freezes():
    g = SpaceGraph()
    a = g.layout("a", 8)
    g.require_step(a, 4, "grouped conv")
    g.split(a, [2, 6], "split")
    assert any("split inside a channel group" in r for r in a[0][0].frozen_reasons)


def test_frozen_reasons_propagate_through_ties():
    g = SpaceGraph()
    a, b = g.layout("a", 8), g.layout("b", 8)
    g.freeze(b, "model output")
    g.merge(a, b, "add")
    assert g.is_frozen(a)
