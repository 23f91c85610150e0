"""The readers fuzzed: arbitrary bytes and mutations of valid files (IDX, .npy, .npz, tables, image folders, run
folders) give vaekit's own error or a valid result, never another exception.

`make test` runs a bounded number of examples per reader; `make fuzz` (HYPOTHESIS_PROFILE=fuzz) runs many more.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vaekit import checkpoint
from vaekit.config import DataConfig
from vaekit.data import load_dataset
from vaekit.data.idx import read_idx
from vaekit.errors import VaekitError

settings.register_profile("default", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("fuzz", max_examples=3000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def _npy() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.random.default_rng(0).random((6, 5)).astype(np.float32))
    return buffer.getvalue()


def _npz() -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez_compressed(buffer, x=rng.random((6, 5)).astype(np.float32), y=np.arange(6) % 2)
    return buffer.getvalue()


def _idx() -> bytes:
    array = (np.arange(2 * 4 * 4) % 256).astype(np.uint8).reshape(2, 4, 4)
    return bytes([0, 0, 0x08, 3]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape) + array.tobytes()


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (6, 6), 128).save(buffer, format="PNG")
    return buffer.getvalue()


CSV = ("age,sex,city,score\n" + "\n".join(f"{20 + i},{'FM'[i % 2]},{['Oslo', 'Lima'][i % 3 % 2]},{i * 1.5}"
                                          for i in range(12)) + "\n").encode()
VALID = {".npy": _npy(), ".npz": _npz(), ".csv": CSV, "idx": _idx(), "idx.gz": gzip.compress(_idx()), ".png": _png()}


@st.composite
def mutated(draw, valid: bytes) -> bytes:
    """A valid file with some bytes flipped, cut short, or with bytes inserted; or arbitrary bytes."""
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "random"]))
    data = bytearray(valid)
    if kind == "random":
        return draw(st.binary(max_size=512))
    if kind == "truncate":
        return bytes(data[: draw(st.integers(0, len(data)))])
    if kind == "insert":
        at = draw(st.integers(0, len(data)))
        return bytes(data[:at] + draw(st.binary(min_size=1, max_size=16)) + data[at:])
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(data) - 1))
        data[at] = draw(st.integers(0, 255))
    return bytes(data)


def _load(path: Path, **fields) -> None:
    try:
        load_dataset(DataConfig(name=str(path), **fields))
    except VaekitError:
        pass


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".csv"])
def test_array_and_table_files(suffix, tmp_path):
    @given(mutated(VALID[suffix]))
    def check(data):
        path = tmp_path / f"data{suffix}"
        path.write_bytes(data)
        _load(path)

    check()


@pytest.mark.parametrize("name", ["idx", "idx.gz"])
def test_idx_files(name, tmp_path):
    @given(mutated(VALID[name]))
    def check(data):
        path = tmp_path / f"images-{name.replace('idx', 'idx3-ubyte')}"
        path.write_bytes(data)
        try:
            read_idx(path)
        except VaekitError:
            pass

    check()


def test_image_folders(tmp_path):
    @given(mutated(VALID[".png"]))
    def check(data):
        folder = Path(tempfile.mkdtemp(dir=tmp_path))
        (folder / "a.png").write_bytes(_png())
        (folder / "b.png").write_bytes(data)
        _load(folder, image_size=8)
        shutil.rmtree(folder)

    check()


@pytest.fixture
def run_folder(small_run):
    return small_run


@pytest.mark.parametrize("name", [checkpoint.CONFIG_FILE, checkpoint.MODEL_FILE, checkpoint.RESUME_STATE])
def test_run_folders(name, run_folder, tmp_path):
    from vaekit.runs import resume

    valid = (run_folder / name).read_bytes()

    @given(mutated(valid))
    def check(data):
        folder = Path(tempfile.mkdtemp(dir=tmp_path)) / "run"
        shutil.copytree(run_folder, folder)
        (folder / name).write_bytes(data)
        try:
            if name == checkpoint.RESUME_STATE:
                resume(folder, progress=False)  # a resume that works trains the epochs left: none here
            else:
                checkpoint.load(folder)
        except VaekitError:
            pass
        shutil.rmtree(folder.parent)

    check()


def test_valid_files_still_load(tmp_path, run_folder):
    for suffix in (".npy", ".npz", ".csv"):
        (tmp_path / f"ok{suffix}").write_bytes(VALID[suffix])
        load_dataset(DataConfig(name=str(tmp_path / f"ok{suffix}")))
    assert read_idx(_write(tmp_path / "x-idx3-ubyte.gz", VALID["idx.gz"])).shape == (2, 4, 4)
    assert json.loads((run_folder / checkpoint.CONFIG_FILE).read_text())["format"] == checkpoint.FORMAT
    checkpoint.load(run_folder)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
