"""Files usconvert writes: atomically, with the umask's mode, and with one suffix per format."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import FileFormatError

NETWORK_SUFFIX = ".safetensors"  # a slimmable network, as save/load and every command write it
EXPORT_FORMATS = {".safetensors": "safetensors", ".onnx": "onnx", ".pt2": "pt2"}  # one width, exported
EXPORT_METADATA_KEY = "usconvert_export"  # what an exported file says of itself, in every format


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; it replaces ``path`` only if the block succeeds,
    so an interrupted write never leaves a truncated file behind. The new contents reach the disk
    before the rename, and the rename before we return, so that a crash or power cut leaves the
    old file or the new one, never an empty one (a rename can otherwise be stored before the data
    it names). The file gets the mode the umask gives a new file (not ``mkstemp``'s 0600). The
    folder must exist, as for ``torch.save``."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileFormatError(f"cannot write {path}: the folder {path.parent} does not exist")
    # the temporary name keeps the suffix: some writers (torch.export) insist on it
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        _sync(tmp, os.O_RDWR)
        os.replace(tmp, path)
        _sync(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0), optional=True)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _sync(path: str | Path, flags: int, optional: bool = False) -> None:
    """Flush a file, or a folder's entries, to the disk. ``optional``: where the platform cannot
    open or flush a folder (Windows, some network file systems), go on without."""
    try:
        fd = os.open(path, flags)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        if not optional:
            raise


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it
    os.umask(mask)
    return mask


def write_json_file(path: str | Path, data: Any) -> None:
    """JSON as every command writes it: indented, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def write_csv_file(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Rows as CSV, one column per field of the first row (fields holding lists or mappings are
    left out: JSON carries them); a null is an empty cell."""
    fields = [k for k, v in rows[0].items() if not isinstance(v, (list, dict))] if rows else []
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
