"""Files a run writes and later reads: written to a temporary file, flushed, renamed into place.

A process killed mid-write leaves the old file or the new one, never a torn one. `StagedFile` is
that rule, the one place vaelab makes such a temporary file; `atomic_path` and
`atomic_write_bytes` are its common uses (the data caches write through them too).
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from .errors import VaelabError


class ReadError(VaelabError, ValueError):
    """A file is not in the format vaelab wrote it in (damaged, or another file in its place); the message names it."""


class WriteError(VaelabError, OSError):
    """A file could not be written; the message names it and says why."""

    def __init__(self, path: Path, err: OSError) -> None:
        super().__init__(err.errno, f"{path}: could not write it ({err.strerror or err})")
        self.path = path

    def __str__(self) -> str:
        return self.strerror


class StagedFile:
    """A hidden temporary file beside `path` (in its folder, so the rename is atomic): write `tmp`,
    then `publish()` renames it onto `path`; `discard()`, or leaving a with-block unpublished,
    removes it. The writer flushes and syncs what it writes before publishing."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(name)

    def publish(self) -> None:
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)  # after publish() there is nothing left to remove

    def __enter__(self) -> StagedFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.discard()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` for the block to write; renamed onto `path` when the block
    ends, removed when it raises (see `StagedFile`)."""
    with StagedFile(path) as staged:
        yield staged.tmp
        staged.publish()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp makes it private; reports and figures are meant to be shared
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:  # a full disk, a read-only folder: say which file could not be written
        raise WriteError(path, err) from None


def write_json(path: str | Path, value: Any) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: str | Path) -> Any:
    """A JSON file's value; a file that is not UTF-8 JSON (a pickle, say) is a ReadError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except UnicodeDecodeError as err:
        raise ReadError(f"{path}: not valid JSON (not UTF-8 text: {err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise ReadError(f"{path}: not valid JSON ({err})") from None


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """One JSON object per line; the line is written whole and synced before returning."""
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise WriteError(Path(path), err) from None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file; a torn last line (from a crash) is skipped with a warning."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ReadError(f"{path}: not JSON lines (not UTF-8 text: {err.reason} at byte {err.start})") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                warnings.warn(f"{path}: skipped a torn last line {number} (a crash while writing)", stacklevel=2)
                continue
            raise ReadError(f"{path}: line {number} is not valid JSON") from None
    return records


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Tensors to a safetensors file, atomically; never pickled."""
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write_bytes(path, save_safetensors_bytes(contiguous, metadata=metadata))


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file; a damaged file is a ReadError naming it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    return load_tensors_bytes(data, path)


def load_tensors_bytes(data: bytes, path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file's bytes read from `path` (named in errors)."""
    try:
        tensors = load_safetensors_bytes(data)
        metadata = _safetensors_metadata(data)
    except (SafetensorError, ValueError, json.JSONDecodeError) as err:
        raise ReadError(f"{path}: not a valid safetensors file ({err})") from None
    return tensors, metadata


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + header_len])
    return dict(header.get("__metadata__", {}))
