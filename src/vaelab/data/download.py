"""Downloading files over HTTP(S) with a timeout and a progress bar."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

from tqdm.auto import tqdm

from .errors import DataError, SourceUnavailable

_CHUNK = 1 << 16
MAX_BYTES = 256 * 2**20  # far above any MNIST-family file; guards against runaway servers


def download(url: str, dest: Path, *, timeout: float, progress: bool) -> None:
    """Fetch ``url`` into the file ``dest``.

    ``timeout`` bounds the connect and each read, so an offline machine fails
    fast. An unreachable server or HTTP error raises :class:`SourceUnavailable`;
    a short or oversized body raises :class:`DataError`. Both name the URL.
    """
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as out:
            total = _content_length(resp)
            got = _copy(resp, out, total, url=url, progress=progress)
    except http.client.IncompleteRead as exc:
        raise DataError(f"{url}: truncated download: {exc!r}") from exc
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise SourceUnavailable(f"{url}: download failed: {_reason(exc)}") from exc
    if total is not None and got != total:
        raise DataError(f"{url}: truncated download: got {got} of {total} bytes")


def _content_length(resp: http.client.HTTPResponse) -> int | None:
    """The announced body size in bytes, or None when not announced."""
    value = resp.headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


def _copy(src: BinaryIO, out: BinaryIO, total: int | None, *, url: str, progress: bool) -> int:
    """Copy ``src`` to ``out`` in chunks; returns the number of bytes copied."""
    got = 0
    with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1],
              disable=not progress, leave=False) as bar:
        while chunk := src.read(_CHUNK):
            got += len(chunk)
            if got > MAX_BYTES:
                raise DataError(f"{url}: download exceeds {MAX_BYTES} bytes")
            out.write(chunk)
            bar.update(len(chunk))
    return got


def _reason(exc: BaseException) -> str:
    """A short one-line reason for a failed request."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__
