"""save/load: one .safetensors file, rebuilt by re-tracing, with clear errors for bad files."""

import json
import os

import pytest
import torch
from safetensors.torch import save_file

import usconvert
from usconvert import FileFormatError
from usconvert.models import create
from usconvert.files import atomic_path
from usconvert.serialize import read_metadata

SIZE = (3, 32, 32)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model, source = create("mobilenetv2_050", num_classes=10)
    net = usconvert.convert(model, SIZE, divisor=8, min_width=0.35, source=source)
    with torch.no_grad():  # make the weights differ from a fresh build
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    net.set_width(0.5)
    key = net.configuration_key()
    for name, layer in net.batch_norm_layers().items():
        n = len(net.active_channels(name)["channel"])
        net.statistics.put(key, "0.5", name, torch.rand(n), torch.rand(n) + 0.5)
    net.set_width(1.0)
    path = tmp_path_factory.mktemp("nets") / "m.safetensors"
    usconvert.save(net, path)
    return net, path


def test_load_of_save_gives_identical_outputs(saved):
    net, path = saved
    loaded = usconvert.load(path)
    assert loaded.min_width == 0.35 and loaded.divisor == 8 and loaded.input_size == SIZE
    x = torch.randn(2, *SIZE)
    for width in (1.0, 0.5):
        net.set_width(width), loaded.set_width(width)
        net.eval(), loaded.eval()
        with torch.no_grad():
            assert torch.equal(net(x), loaded(x))
    net.set_width(1.0)


def test_file_metadata(saved):
    _, path = saved
    metadata = read_metadata(path)
    assert metadata["source"] == {"kind": "timm", "name": "mobilenetv2_050", "kwargs": {"num_classes": 10}}
    # no layer averages its output: version 1, which every usconvert reads
    assert metadata["format_version"] == 1 and len(metadata["space_digest"]) == 32
    assert list(metadata["statistics_labels"].values()) == ["0.5"]


def test_truncated_foreign_and_missing_files(saved, tmp_path):
    _, path = saved
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(path.read_bytes()[: 5000])
    with pytest.raises(FileFormatError, match="truncated or corrupt"):
        usconvert.load(truncated)
    foreign = tmp_path / "f.safetensors"
    save_file({"x": torch.zeros(2)}, foreign)
    with pytest.raises(FileFormatError, match="not a usconvert network"):
        usconvert.load(foreign)
    with pytest.raises(FileFormatError, match="does not exist"):
        usconvert.load(tmp_path / "none.safetensors")


def test_a_file_whose_model_changed_is_refused(saved, tmp_path):
    _, path = saved
    from safetensors import safe_open
    from safetensors.torch import load_file
    with safe_open(str(path), framework="pt") as f:
        metadata = json.loads(f.metadata()["usconvert"])
    metadata["source"]["name"] = "mobilenetv2_100"  # same tensors, another architecture
    other = tmp_path / "other.safetensors"
    save_file(load_file(str(path)), other, metadata={"usconvert": json.dumps(metadata)})
    with pytest.raises(FileFormatError, match="channel spaces of the rebuilt model differ"):
        usconvert.load(other)


def test_a_file_of_a_newer_format_is_refused(saved, tmp_path):
    _, path = saved
    from safetensors import safe_open
    from safetensors.torch import load_file
    with safe_open(str(path), framework="pt") as f:
        metadata = json.loads(f.metadata()["usconvert"])
    metadata["format_version"] = 3
    newer = tmp_path / "newer.safetensors"
    save_file(load_file(str(path)), newer, metadata={"usconvert": json.dumps(metadata)})
    with pytest.raises(FileFormatError, match=r"format version 3; this usconvert reads versions 1 and 2 \(a newer"):
        usconvert.load(newer)


def test_networks_from_model_objects_need_the_model_to_load(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.LazyLinear(4))
    model(torch.randn(1, *SIZE))
    net = usconvert.convert(model, SIZE)
    path = usconvert.save(net, tmp_path / "obj.safetensors")
    with pytest.raises(FileFormatError, match="pass the same architecture"):
        usconvert.load(path)
    loaded = usconvert.load(path, model=model)
    assert torch.equal(loaded.model.state_dict()["0.weight"], net.model.state_dict()["0.weight"])


def test_writes_are_atomic(tmp_path):
    target = tmp_path / "keep.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half-written")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["keep.bin"]
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["keep.bin"]


def test_a_write_reaches_the_disk_before_it_replaces_the_old_file(tmp_path, monkeypatch):
    """A rename can be stored before the data it names: unflushed, a power cut after the rename
    could leave an empty file where the old one was. Flushed: the file, then its folder's entry."""
    events = []
    fsync, replace = os.fsync, os.replace

    def recording_fsync(fd):
        events.append(("flush", os.path.realpath(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def recording_replace(src, dst):
        events.append(("rename", os.path.realpath(src), os.path.realpath(dst)))
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    target = tmp_path / "f.json"
    with atomic_path(target) as tmp:
        tmp.write_text("{}")
    tmp, target, folder = (os.path.realpath(p) for p in (tmp, target, tmp_path))
    assert events == [("flush", tmp), ("rename", tmp, target), ("flush", folder)]
    assert open(target).read() == "{}"


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_get_the_umasks_mode(tmp_path, umask):
    previous = os.umask(umask)
    try:
        with atomic_path(tmp_path / "f.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(previous)
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_writing_into_a_missing_folder_says_so_and_creates_nothing(tmp_path):
    with pytest.raises(FileFormatError, match="folder .*missing does not exist"):
        with atomic_path(tmp_path / "missing" / "f.json") as tmp:
            tmp.write_text("{}")
    assert os.listdir(tmp_path) == []
