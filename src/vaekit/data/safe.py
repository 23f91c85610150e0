"""Reading users' array files without trusting them: no pickle, sizes from headers checked against memory before
anything is allocated, and every way a file can be damaged reported as a VaekitError."""
from __future__ import annotations

import math
import os
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import VaekitError

# What numpy and zipfile raise on damaged files: a bad header (SyntaxError, TokenError, ValueError), a cut-off file
# (EOFError), damaged compressed data (zlib.error, BadZipFile), an encrypted member (RuntimeError).
DAMAGED = (OSError, ValueError, EOFError, SyntaxError, tokenize.TokenError, zipfile.BadZipFile, zlib.error,
           RuntimeError, KeyError, NotImplementedError, OverflowError)


CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")  # v2, v1
CGROUP_SELF = "/proc/self/cgroup"  # this process's own cgroups, whose limits may be set below the root's


def _cgroup_files() -> list[str]:
    """The memory-limit files of the root cgroup, of this process's own (v2: '0::/path'; v1: 'N:memory:/path') and of
    every cgroup between them: a limit set on a parent holds its children too."""
    files = list(CGROUP_LIMITS)
    try:
        with open(CGROUP_SELF) as handle:
            lines = handle.read().splitlines()
    except (OSError, ValueError):  # (unreadable, or not text)
        return files
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if ".." in path.split("/"):
            continue
        parts = [part for part in path.split("/") if part]
        chain = ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]  # the parents first, this one last
        if controllers == "":
            files += [f"/sys/fs/cgroup{group}/memory.max" for group in chain]
        elif "memory" in controllers.split(","):
            files += [f"/sys/fs/cgroup/memory{group}/memory.limit_in_bytes" for group in chain]
    return files


def container_limit() -> int | None:
    """The memory limit of the container (cgroup) this process runs in, where one is set below the machine's: the
    lowest of its own and the root's."""
    limits = []
    for path in _cgroup_files():
        try:
            with open(path) as handle:
                text = handle.read().strip()
        except (OSError, ValueError):
            continue
        if text.isdigit() and int(text) < physical_memory():
            limits.append(int(text))
    return min(limits, default=None)


def physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 * 2**30


def memory_budget() -> int:
    """Bytes one data set (or model) may take: half of this machine's physical memory, or of its container's
    limit where that is lower."""
    return (container_limit() or physical_memory()) // 2


def check_memory(nbytes: int, what: str, fix: str) -> None:
    """A clear error, before allocating, when `what` needs more than memory_budget() bytes."""
    budget = memory_budget()
    if nbytes > budget:
        whose = "this container's" if container_limit() is not None else "this machine's"
        raise VaekitError(f"{what} needs {nbytes / 2**30:,.1f} GiB of memory, more than half of {whose} "
                          f"{2 * budget / 2**30:,.1f} GiB: {fix}")


def _header(handle, source: str) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(handle)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(handle)
    if dtype.hasobject:
        raise VaekitError(f"{source} holds Python objects (it would need pickle, which vaekit never runs): save "
                          "numbers with numpy.save")
    return tuple(shape), dtype


def _checked(shape: tuple[int, ...], dtype: np.dtype, source: str) -> int:
    """The array, vaekit's float32 copy of it and that copy's split into training and test items must fit: the bytes
    they take at the peak of a load."""
    nbytes = math.prod(shape) * (dtype.itemsize + 8)
    check_memory(nbytes, f"{source} (shape {shape}, {dtype})", "use a smaller file")
    return nbytes


def load_npy(path: Path) -> np.ndarray:
    try:
        with open(path, "rb") as handle:
            shape, dtype = _header(handle, str(path))
        _checked(shape, dtype, str(path))
        return np.load(path, allow_pickle=False)
    except VaekitError:
        raise
    except DAMAGED as exc:
        raise VaekitError(f"cannot read {path} as a .npy array ({_reason(exc)}): the file is damaged or not a .npy; "
                          "save it again with numpy.save") from None


def load_npz(path: Path) -> dict[str, np.ndarray]:
    if not zipfile.is_zipfile(path):
        raise VaekitError(f"{path} is not a .npz archive (not a zip file): save it with numpy.savez")
    try:
        with zipfile.ZipFile(path) as archive:
            total = 0
            for member in archive.infolist():
                if member.flag_bits & 0x1:
                    raise VaekitError(f"{path} is encrypted ({member.filename}): save it again without a password")
                if not member.filename.endswith(".npy") and not member.is_dir():
                    raise VaekitError(f"{path} holds {member.filename}, which is not an array (.npy): an .npz holds "
                                      "only arrays; save it again with numpy.savez")
                with archive.open(member) as handle:
                    shape, dtype = _header(handle, f"{path}[{member.filename}]")
                total += _checked(shape, dtype, f"{path}[{member.filename}]")
        check_memory(total, f"{path} (its arrays together)", "use a smaller file")  # each is read
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except VaekitError:
        raise
    except DAMAGED as exc:
        raise VaekitError(f"cannot read {path} as a .npz archive ({_reason(exc)}): the file is damaged; save it again "
                          "with numpy.savez") from None


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:80] if str(exc) else ""
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__
