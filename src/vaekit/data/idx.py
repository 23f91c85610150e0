"""The IDX file format of MNIST and Fashion-MNIST, gzipped or not, and md5 verification."""
from __future__ import annotations

import gzip
import hashlib
import math
import zlib
from pathlib import Path

import numpy as np

from ..errors import VaekitError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path: str | Path) -> np.ndarray:
    path = Path(path)
    try:
        with _open(path) as handle:
            raw = handle.read()
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise VaekitError(f"cannot read IDX file {path} ({exc.__class__.__name__}: {str(exc)[:80]}): delete it and "
                          "fetch it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise VaekitError(f"{path} is not an IDX file (bad magic number); delete it and fetch it again")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = header + math.prod(shape) * dtype.itemsize  # Python integers: a header's sizes cannot overflow it
    if len(raw) != expected:
        raise VaekitError(
            f"{path} is truncated or corrupt: {len(raw)} bytes, expected {expected} for shape {shape}; fetch it again"
        )
    try:
        return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    except ValueError:  # sizes numpy cannot hold (a zero beside a huge one): no data set has them
        raise VaekitError(f"{path} is corrupt: its header gives the shape {shape}; fetch it again") from None


def md5_of(path: str | Path, uncompressed: bool = True, limit: int | None = None) -> str:
    """The md5 of the file's (uncompressed) content; with `limit`, a ValueError once it holds more bytes than that
    (a small .gz can hold gigabytes: said before they are all read)."""
    path = Path(path)
    digest = hashlib.md5()
    read = 0
    with (_open(path) if uncompressed else open(path, "rb")) as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            read += len(block)
            if limit is not None and read > limit:
                raise ValueError(f"over {limit / 2**20:g} MiB uncompressed, more than the file holds")
            digest.update(block)
    return digest.hexdigest()


def verify_md5(path: str | Path, expected: str) -> None:
    """md5 of the uncompressed content, so .gz and raw copies of one file verify alike."""
    got = md5_of(path)
    if got != expected:
        raise VaekitError(f"checksum mismatch for {path}: md5 {got}, expected {expected}; delete it and fetch it again")
