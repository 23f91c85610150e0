"""The face sets: loading the checked copies, and `vaekit data get`'s conversions on fake files of the same layout."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from vaekit.cli import main
from vaekit.config import DataConfig
from vaekit.data import faces, load_dataset, safe
from vaekit.errors import VaekitError

from conftest import shared_faces as _shared

@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # vaekit's cache (and the terms marker) in a fresh place


def test_the_face_sets_load_with_their_splits(caplog):
    import logging

    root = _shared("smiles")
    with caplog.at_level(logging.WARNING):
        smiles = load_dataset(DataConfig(name="smiles", data_dir=str(root)))
    assert "github.com/hromi/SMILEsmileD" in caplog.text  # the source and terms, said on first use
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_dataset(DataConfig(name="smiles", data_dir=str(root)))
    assert "SMILEsmileD" not in caplog.text  # and not every time
    assert smiles.x_train.shape == (6634, 1, 64, 64) and smiles.x_test.shape == (736, 1, 64, 64)
    assert smiles.attributes_test["smile"].sum() == 368 and 0 <= smiles.value_range[0] < smiles.value_range[1] <= 1
    olivetti = load_dataset(DataConfig(name="olivetti", data_dir=str(_shared("olivetti"))))
    assert set(olivetti.y_train.tolist()).isdisjoint(olivetti.y_test.tolist())  # split by person
    assert len(olivetti.x_test) == 80 and olivetti.attributes_test["glasses"].sum() == 30
    frey = load_dataset(DataConfig(name="frey", data_dir=str(_shared("frey"))))
    assert frey.x_train.shape == (1765, 1, 28, 20) and frey.x_test.shape == (200, 1, 28, 20)


def test_a_damaged_copy_is_refused(tmp_path, capsys):
    folder = tmp_path / "frey"
    folder.mkdir()
    np.savez(folder / "frey.npz", images=np.zeros((3, 28, 20), dtype=np.uint8))
    assert main(["train", "--data", "frey", "--data-dir", str(tmp_path), "--epochs", "1", "--out",
                 str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "does not match its checksum" in err and "vaekit data get frey" in err and err.count("\n") == 1


def test_a_face_sets_own_file_given_as_a_path_names_the_set(tmp_path, capsys):
    """olivetti/olivetti.npz as --data (its arrays are not named x) failed naming the arrays; frey/frey.npz trained,
    split otherwise than --data frey. A new run is told to give the set's name; a run trained on such a path before
    reads it as it did. Fake files of the sets' layout (the checks look at names, not checksums)."""
    from vaekit.data.user import for_new_runs

    for name, arrays in (("olivetti", {"images": np.zeros((10, 64, 64), np.uint8), "person": np.arange(10),
                                       "glasses": np.zeros(10, np.uint8)}),
                         ("frey", {"images": np.zeros((10, 28, 20), np.uint8)})):
        folder = tmp_path / name
        folder.mkdir()
        np.savez(folder / f"{name}.npz", **arrays)
        labels = " and its labels" if name == "olivetti" else ""
        for flags in ([], ["--label-column", "person"] if name == "olivetti" else []):  # (an array of it as labels)
            assert main(["train", "--data", str(folder / f"{name}.npz"), *flags, "--epochs", "1", "--out",
                         str(tmp_path / f"run-{name}")]) == 2
            err = capsys.readouterr().err
            assert (f"{name}.npz is the {name} face set's own file: give --data {name} (with --data-dir {tmp_path}), "
                    f"which reads it with its fixed split{labels}\n") in err and err.count("\n") == 1, err
    with for_new_runs(False):  # a run that trained on frey.npz as a path before: read as then
        assert len(load_dataset(DataConfig(name=str(tmp_path / "frey" / "frey.npz"))).x_train) == 9
    other = tmp_path / "mine" / "frey.npz"  # a file of the user's named so, holding other arrays: their data
    other.parent.mkdir()
    np.savez(other, x=np.zeros((10, 4), np.float32))
    assert len(load_dataset(DataConfig(name=str(other))).x_train) == 9


def test_a_missing_set_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv("VAEKIT_DATA", raising=False)
    with pytest.raises(VaekitError, match="vaekit data get olivetti"):
        faces.read_arrays(faces.SPECS["olivetti"], str(tmp_path))


# ---- vaekit data get on fake files ---------------------------------------------------------------------------

def _planted(monkeypatch, name: str, arrays: dict[str, np.ndarray], url: str = "") -> None:
    """Give the spec the checksums of the arrays a correct conversion of the fake file yields."""
    from dataclasses import replace

    spec = replace(faces.SPECS[name], arrays={k: faces.array_sha256(v) for k, v in arrays.items()}, url=url,
                   url_sha256=None)
    monkeypatch.setitem(faces.SPECS, name, spec)


def test_frey_is_converted_from_its_mat_file_downloaded_or_given(tmp_path, monkeypatch, capsys):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    ff = rng.integers(0, 256, (560, 30), dtype=np.uint8)  # one frame per column, as frey_rawface.mat
    savemat(tmp_path / "frey_rawface.mat", {"ff": ff})
    expected = ff.T.reshape(30, 28, 20)
    assert expected[1, 0, 5] == ff[5, 1] and expected[1, 2, 0] == ff[40, 1]  # rows of 20 pixels
    _planted(monkeypatch, "frey", {"images": expected}, url=(tmp_path / "frey_rawface.mat").as_uri())
    assert main(["data", "get", "frey", "--dest", str(tmp_path / "got")]) == 0  # "downloads" the file:// URL
    with np.load(tmp_path / "got" / "frey.npz") as got:
        assert np.array_equal(got["images"], expected)
    assert main(["data", "get", "frey", "--from", str(tmp_path / "frey_rawface.mat"), "--dest",
                 str(tmp_path / "given")]) == 0
    data = load_dataset(DataConfig(name="frey", data_dir=str(tmp_path / "given")))
    assert len(data.x_train) + len(data.x_test) == 30
    assert sorted(p.name for p in (tmp_path / "got").iterdir()) == ["frey.npz"]  # no temporaries
    # another file given with --from: the file wanted named, not "download it again" alone
    np.save(tmp_path / "frey.npy", expected)
    savemat(tmp_path / "other.mat", {"faces": ff})
    savemat(tmp_path / "cut.mat", {"ff": ff[:100]})  # the variable, of another shape
    capsys.readouterr()
    for given in ("frey.npy", "other.mat", "cut.mat"):
        assert main(["data", "get", "frey", "--from", str(tmp_path / given), "--dest", str(tmp_path / "wrong")]) == 2
        err = capsys.readouterr().err
        assert "the file wanted is the source's frey_rawface.mat" in err and err.count("\n") == 1, err


def test_a_conversion_that_does_not_match_writes_nothing(tmp_path, monkeypatch, capsys):
    from scipy.io import savemat

    savemat(tmp_path / "frey_rawface.mat", {"ff": np.zeros((560, 4), dtype=np.uint8)})
    _planted(monkeypatch, "frey", {"images": np.ones((4, 28, 20), dtype=np.uint8)})
    assert main(["data", "get", "frey", "--from", str(tmp_path / "frey_rawface.mat"), "--dest",
                 str(tmp_path / "got")]) == 2
    assert "does not match its published sha256" in capsys.readouterr().err
    assert not (tmp_path / "got").exists()  # nothing written, not even the folder it would have made
    (tmp_path / "mine").mkdir()  # a folder of the user's: kept, empty
    assert main(["data", "get", "frey", "--from", str(tmp_path / "frey_rawface.mat"), "--dest",
                 str(tmp_path / "mine")]) == 2
    assert list((tmp_path / "mine").iterdir()) == []
    (tmp_path / "not.mat").write_bytes(b"not a MATLAB file")
    assert main(["data", "get", "frey", "--from", str(tmp_path / "not.mat"), "--dest", str(tmp_path / "got")]) == 2
    np.savez(tmp_path / "frey.npz", images=np.ones((4, 28, 20), dtype=np.uint8))  # a converted copy
    capsys.readouterr()
    assert main(["data", "get", "frey", "--from", str(tmp_path / "frey.npz"), "--dest", str(tmp_path / "got")]) == 2
    assert "is an .npz, not the file --from converts: a converted NAME.npz is used as it is from " \
           "DIR/NAME/NAME.npz" in capsys.readouterr().err
    assert main(["data", "get", "frey", "--dest", str(tmp_path / "got")]) == 2  # the planted spec's URL is empty


def test_olivetti_is_converted_from_its_mat_file(tmp_path, monkeypatch):
    from scipy.io import savemat

    faces_mat = np.random.default_rng(1).integers(0, 243, (4096, 400), dtype=np.uint8)  # one image per column
    savemat(tmp_path / "olivettifaces.mat", {"faces": faces_mat})
    arrays = faces.convert_olivetti(tmp_path / "olivettifaces.mat")
    # stored column-major: pixel (row r, column c) of image i is faces[c * 64 + r, i]
    assert arrays["images"][7, 3, 10] == faces_mat[10 * 64 + 3, 7]
    assert arrays["glasses"].sum() == 119 and arrays["person"][399] == 39  # 119 images with glasses, 40 people
    _planted(monkeypatch, "olivetti", arrays)
    path = faces.fetch_faces("olivetti", tmp_path / "got", tmp_path / "olivettifaces.mat")
    with np.load(path) as got:
        assert all(np.array_equal(got[k], v) for k, v in arrays.items())


def test_the_glasses_ranges_give_the_published_array():
    root = _shared("olivetti")
    with np.load(root / "olivetti" / "olivetti.npz") as real:
        glasses = real["glasses"]
    from scipy.io import savemat  # noqa: F401  (the conversion needs scipy)

    ranges = np.zeros(400, dtype=np.uint8)
    for first, last in faces.OLIVETTI_GLASSES:
        ranges[first:last + 1] = 1
    assert np.array_equal(ranges, glasses)


def test_smiles_is_converted_from_a_repository_archive_of_the_same_layout(tmp_path, monkeypatch):
    from PIL import Image

    with np.load(Path(faces.__file__).parents[1] / "_data" / "smiles_selection.npz") as selection:
        ids, smile = selection["file_id"], selection["smile"]
    archive = tmp_path / "SMILEsmileD.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("SMILEsmileD-6afac66/README", "not an image")
        for file_id, smiling in zip(ids.tolist(), smile.tolist()):
            folder = "positives/positives7" if smiling else "negatives/negatives7"
            buffer = io.BytesIO()  # left half one grey, right half another: whole 8x8 blocks, decoded exactly
            image = np.full((64, 64), file_id % 200, dtype=np.uint8)
            image[:, 32:] = 250
            Image.fromarray(image).save(buffer, "JPEG", quality=95)
            out.writestr(f"SMILEsmileD-6afac66/SMILEs/{folder}/{file_id}.jpg", buffer.getvalue())
        out.writestr("SMILEsmileD-6afac66/SMILEs/negatives/negatives7/99999.jpg", b"a face not in the selection")
    arrays = faces.convert_smiles(archive)
    assert arrays["images"].shape == (7370, 64, 64)
    images = arrays["images"].astype(int)
    assert np.abs(images[:, :, :32] - (ids % 200)[:, None, None]).max() <= 1  # each item its own file, in order
    assert np.abs(images[:, :, 32:] - 250).max() <= 1  # and not transposed or mirrored
    assert arrays["smile"][:3685].all() and not arrays["smile"][3685:].any()  # smiling first
    assert (arrays["split"] == 1).sum() == 736 and np.array_equal(arrays["file_id"], ids)
    broken = tmp_path / "short.zip"
    with zipfile.ZipFile(broken, "w") as out:
        out.writestr("SMILEsmileD-6afac66/SMILEs/positives/positives7/3.jpg", b"")
    with pytest.raises(VaekitError, match="3.jpg in .* is not a readable JPEG"):
        faces.convert_smiles(broken)
    with zipfile.ZipFile(broken, "w") as out:
        buffer = io.BytesIO()
        Image.new("L", (64, 64)).save(buffer, "JPEG")
        out.writestr("SMILEsmileD-6afac66/SMILEs/positives/positives7/3.jpg", buffer.getvalue())
    with pytest.raises(VaekitError, match="has no SMILEs/positives/positives7/6.jpg"):
        faces.convert_smiles(broken)
    # deflate data broken in the middle of a member
    with zipfile.ZipFile(tmp_path / "deflated.zip", "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr("SMILEsmileD-6afac66/SMILEs/positives/positives7/3.jpg", bytes(range(256)) * 400)
    damaged = bytearray((tmp_path / "deflated.zip").read_bytes())
    damaged[200:260] = bytes(60)
    (tmp_path / "deflated.zip").write_bytes(bytes(damaged))
    with pytest.raises(VaekitError, match="not a readable zip archive"):
        faces.convert_smiles(tmp_path / "deflated.zip")


def test_sources_that_would_fill_the_memory_or_the_disk_are_refused_before(tmp_path, monkeypatch):
    """A small archive holding a picture of gigabytes (or of 20000x20000 pixels), a MATLAB variable larger than
    memory, a server sending without end: each one line, before the memory or the disk is taken."""
    from PIL import Image
    from scipy.io import savemat

    first = "SMILEsmileD-6afac66/SMILEs/positives/positives7/3.jpg"  # the selection's first picture
    with zipfile.ZipFile(tmp_path / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr(first, bytes(2 * faces.MAX_PICTURE))  # (1 MiB as shipped: a 3 GiB one is 3 MB deflated)
    with pytest.raises(VaekitError, match=r"3\.jpg in .* is over 1 MiB, not a 64x64 JPEG"):
        faces.convert_smiles(tmp_path / "bomb.zip")
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, "PNG")  # 4e8 pixels, a few kB: Pillow's decompression bomb
    with zipfile.ZipFile(tmp_path / "large.zip", "w") as out:
        out.writestr(first, buffer.getvalue())
    with pytest.raises(VaekitError, match=r"3\.jpg in .* is not a readable JPEG \(DecompressionBombError\)"):
        faces.convert_smiles(tmp_path / "large.zip")
    buffer = io.BytesIO()
    Image.new("L", (640, 64)).save(buffer, "PNG")
    with zipfile.ZipFile(tmp_path / "wide.zip", "w") as out:
        out.writestr(first, buffer.getvalue())
    with pytest.raises(VaekitError, match=r"3\.jpg in .* is 640x64, not 64x64"):
        faces.convert_smiles(tmp_path / "wide.zip")
    savemat(tmp_path / "frey_rawface.mat", {"ff": np.zeros((560, 30), dtype=np.uint8), "other": np.zeros(3)})
    monkeypatch.setattr(safe, "memory_budget", lambda: 560 * 29 * 8)  # (its headers tell its size)
    with pytest.raises(VaekitError, match=r"frey_rawface\.mat's 'ff' \(shape \(560, 30\)\) needs .* GiB of "
                                          r"memory, more than half"):
        faces.convert_frey(tmp_path / "frey_rawface.mat")
    savemat(tmp_path / "cell.mat", {"ff": np.array([[np.zeros((560, 30))]], dtype=object)})  # headers: (1, 1)
    with pytest.raises(VaekitError, match=r"cell\.mat's 'ff' is a MATLAB cell, not an array of numbers"):
        faces.convert_frey(tmp_path / "cell.mat")
    monkeypatch.undo()
    (tmp_path / "endless").write_bytes(bytes(3 * 2**10))
    monkeypatch.setattr(faces, "MAX_DOWNLOAD", 2**10)  # (512 MiB as shipped)
    _planted(monkeypatch, "frey", {"images": np.zeros((30, 28, 20), dtype=np.uint8)},
             url=(tmp_path / "endless").as_uri())
    with pytest.raises(VaekitError, match=r"endless sent over 0\.000976562 MiB, more than the file holds"):
        faces.fetch_faces("frey", tmp_path / "got")
    assert not (tmp_path / "got").exists()


def test_the_shipped_selection_is_the_published_one():
    root = _shared("smiles")
    with np.load(root / "smilesmiled" / "smilesmiled.npz") as real, np.load(
            Path(faces.__file__).parents[1] / "_data" / "smiles_selection.npz") as selection:
        for name in ("file_id", "smile", "split"):
            assert np.array_equal(real[name], selection[name]), name


def test_a_short_run_on_smiles_scores_its_smile_edit_above_chance(smiles_short_run):
    """The faces recipe cut short (2,000 training faces, 4 epochs, no learning-rate warm-up, about 30 s): on 300
    test faces the smile vector moves the judge's reading the requested way for well over half of them, both ways
    (chance: half)."""
    from vaekit import checkpoint, edits

    run, root = smiles_short_run
    model = checkpoint.load(run)
    dataset = load_dataset(DataConfig(name="smiles", data_dir=str(root), limit=2000))
    score = edits.score_attribute(model, dataset, "smile", (-2, 0, 2), items=300)
    assert score.items == 300 and score.judge_accuracy > 0.75
    assert score.moved[0] > 0.6 and score.moved[2] > 0.6
