"""Bad input and failed writes: each case a hostile user found gets vaekit's one-line error and exit code 2, and a
write that fails keeps what was written before."""
from __future__ import annotations

import errno
import gzip
import json
import math
import os
import re
import struct
import sys
import zipfile
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from vaekit import Callback, checkpoint
from vaekit.cli import main
from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaekit.data import load_dataset, safe
from vaekit.data.idx import read_idx
from vaekit.errors import VaekitError
from vaekit.runs import resume, train


@pytest.fixture
def run(small_run):
    return small_run  # copied by every test that changes a file in it


def fails(argv: list[str], capsys, match: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1 and match in err, err


# ---- damaged and hostile data files -------------------------------------------------------------------------

def _files(tmp_path):
    ok = tmp_path / "ok.npy"
    np.save(ok, np.random.default_rng(0).random((10, 8)))
    header = bytearray(ok.read_bytes())
    header[10:40] = b"X" * 30
    compressed = tmp_path / "c.npz"
    np.savez_compressed(compressed, x=np.random.default_rng(0).random((100, 8)))
    damaged = bytearray(compressed.read_bytes())
    damaged[200:260] = bytes(60)
    text = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000, 14), }"
    text += " " * (118 - len(text)) + "\n"
    encrypted = bytearray(compressed.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # set the "encrypted" flag bit
        at = encrypted.find(signature)
        encrypted[at + offset] |= 1
    return {
        "empty.npy": (b"", "cannot read"),
        "header.npy": (bytes(header), "cannot read"),
        "huge.npy": (b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode() + bytes(64), "GiB of memory"),
        "text.npz": (b"hello, not a zip", "not a .npz archive"),
        "deflate.npz": (bytes(damaged), "cannot read"),
        "locked.npz": (bytes(encrypted), "encrypted"),
    }


def test_damaged_array_files_are_one_line_errors(tmp_path, capsys):
    for name, (data, match) in _files(tmp_path).items():
        (tmp_path / name).write_bytes(data)
        fails(["train", "--data", str(tmp_path / name), "--epochs", "1", "--out", str(tmp_path / "r"),
               "--no-progress"], capsys, match)


def test_damaged_idx_and_images(tmp_path, capsys, monkeypatch):
    raw = bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 4]) + bytes(32)
    packed = bytearray(gzip.compress(raw))
    packed[12:20] = bytes(8)
    (tmp_path / "x-idx3-ubyte.gz").write_bytes(bytes(packed))
    with pytest.raises(VaekitError, match="cannot read IDX file"):
        read_idx(tmp_path / "x-idx3-ubyte.gz")
    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(3):
        Image.new("L", (40, 40), 60 * i).save(folder / f"{i}.png")
    png = (folder / "0.png").read_bytes()
    (folder / "cut.png").write_bytes(png[:20])  # a truncated IHDR
    fails(["train", "--data", str(folder), "--epochs", "1", "--out", str(tmp_path / "r"), "--no-progress"], capsys,
          "cannot read image")
    (folder / "cut.png").unlink()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 40x40 = 1600 pixels: over twice the limit, a "bomb"
    fails(["train", "--data", str(folder), "--epochs", "1", "--out", str(tmp_path / "r"), "--no-progress"], capsys,
          "cannot read image")
    monkeypatch.undo()
    fails(["train", "--data", str(folder), "--image-size", "30000", "--epochs", "1", "--out", str(tmp_path / "r"),
           "--no-progress"], capsys, "choose a smaller --image-size")
    # what a folder's reading holds: 9 bytes a value (the pixels, their float32 copy and its split) and one image
    from vaekit.data import user

    files = sorted(folder.glob("*.png"))
    need = 3 * 16 * 16 * 9 + 16 * 16 * 16
    monkeypatch.setattr(safe, "memory_budget", lambda: need - 1)
    with pytest.raises(VaekitError, match=r"3 images of 16x16 needs .*: choose a smaller --image-size"):
        user._read_images(files, 16)
    monkeypatch.setattr(safe, "memory_budget", lambda: need)
    assert user._read_images(files, 16)[0].shape == (3, 1, 16, 16)


def test_memory_is_checked_before_allocating(monkeypatch):
    monkeypatch.setattr(safe, "memory_budget", lambda: 1000)
    with pytest.raises(VaekitError, match="needs 0.0 GiB of memory, more than half"):
        safe.check_memory(2000, "this", "use less")


def test_the_memory_checked_against_is_the_containers_where_it_has_less(tmp_path, monkeypatch):
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    monkeypatch.setattr(safe, "CGROUP_LIMITS", (str(v2), str(v1)))
    monkeypatch.setattr(safe, "CGROUP_SELF", str(tmp_path / "none"))
    v2.write_text("max\n")  # (no limit in v2's own words)
    v1.write_text(f"{2**30}\n")
    assert safe.memory_budget() == 2**29
    with pytest.raises(VaekitError, match=r"needs 0\.6 GiB of memory, more than half of this container's 1\.0 GiB"):
        safe.check_memory(600 * 2**20, "this", "use less")
    v1.write_text("9223372036854771712\n")  # (v1's "no limit")
    assert safe.memory_budget() == safe.physical_memory() // 2
    # a limit on this process's own cgroup, below the root's (a container's nested group)
    (tmp_path / "self").write_text("4:memory:/process_api/abc\n0::/\n")
    monkeypatch.setattr(safe, "CGROUP_SELF", str(tmp_path / "self"))
    assert "/sys/fs/cgroup/memory/process_api/abc/memory.limit_in_bytes" in safe._cgroup_files()
    (tmp_path / "self").write_text("0::/user.slice/app\n")  # and those of its parents, whose limits hold it too
    assert safe._cgroup_files()[2:] == ["/sys/fs/cgroup/user.slice/memory.max",
                                        "/sys/fs/cgroup/user.slice/app/memory.max"]
    (tmp_path / "self").write_bytes(b"0::/\xff\xfe\n0::/user.slice\n")  # not text: the root's alone
    assert safe._cgroup_files() == [str(v2), str(v1)]
    (tmp_path / "self").write_text("0::/../../etc\n4:memory:/a/../../../etc\n")  # a path leading out: passed over
    assert safe._cgroup_files() == [str(v2), str(v1)]
    # two limits below the machine's: the lower holds
    v2.write_text(f"{2**30}\n")
    v1.write_text(f"{2**31}\n")
    assert safe.memory_budget() == 2**29
    v2.write_text(f"{2**31}\n")
    v1.write_text(f"{2**30}\n")
    assert safe.memory_budget() == 2**29


def test_an_npz_is_checked_against_memory_for_all_its_arrays_together(tmp_path, monkeypatch):
    """Every array of an .npz is read: five arrays that each fit, but not together, are refused before any is."""
    np.savez_compressed(tmp_path / "five.npz", **{f"a{i}": np.zeros(1000, np.uint8) for i in range(5)})
    each = 1000 * (1 + 4 + 4)  # an array, its float32 copy and that copy's split: 9000 bytes
    monkeypatch.setattr(safe, "memory_budget", lambda: 2 * each)
    with pytest.raises(VaekitError, match=r"five\.npz \(its arrays together\) needs .* GiB of memory, more than half"):
        safe.load_npz(tmp_path / "five.npz")
    monkeypatch.setattr(safe, "memory_budget", lambda: 5 * each)
    assert len(safe.load_npz(tmp_path / "five.npz")) == 5
    np.save(tmp_path / "one.npy", np.zeros(1000, np.uint8))  # one array: exactly its 9 bytes a value
    monkeypatch.setattr(safe, "memory_budget", lambda: each - 1)
    with pytest.raises(VaekitError, match=r"one\.npy \(shape \(1000,\), uint8\) needs"):
        safe.load_npy(tmp_path / "one.npy")
    monkeypatch.setattr(safe, "memory_budget", lambda: each)
    assert len(safe.load_npy(tmp_path / "one.npy")) == 1000


def test_binary_data_is_found_over_every_item_not_its_first_chunk():
    """A value other than 0 or 1 after the first 4096 items (binariness is checked a chunk at a time) makes the data
    not binary."""
    from vaekit.data import user

    bits = torch.zeros(5000, 3)
    assert user._is_binary(bits)
    bits[-1, 2] = 0.5
    assert not user._is_binary(bits)


def test_decode_of_an_empty_npz(run, tmp_path, capsys):
    np.savez(tmp_path / "none.npz")
    fails(["decode", str(run), str(tmp_path / "none.npz"), "--out", str(tmp_path / "d.png")], capsys,
          "holds no arrays")


# ---- --out and failed writes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("where,match", [("file", "is a file, not a folder"), ("under", "so no folder can be made"),
                                         ("/dev/null", "is a file, not a folder"),
                                         ("/proc/vaekit-run", "cannot write in --out")])
def test_out_that_cannot_be_a_run_folder(where, match, tmp_path, capsys):
    (tmp_path / "file").write_text("mine")
    out = {"file": tmp_path / "file", "under": tmp_path / "file" / "run"}.get(where, where)
    fails(["train", "--data", "digits", "--epochs", "1", "--out", str(out), "--no-progress"], capsys, match)
    assert (tmp_path / "file").read_text() == "mine"


def test_a_full_disk_is_an_error_and_keeps_the_files_written_before(run, tmp_path, monkeypatch, capsys):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def full(*_, **__):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", full)
    fails(["train", "--resume", str(folder), "--epochs", "3", "--no-progress"], capsys, "No space left on device")
    after = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert after == {**before, "metrics.jsonl": after["metrics.jsonl"]}  # no temporaries left; weights untouched
    monkeypatch.undo()
    checkpoint.load(folder)


# ---- weights, configs and resume states -------------------------------------------------------------------------

def test_damaged_weights_are_refused(run, tmp_path, capsys):
    import shutil

    for name, change in (("flip", lambda b: b[:-10] + bytes([b[-10] ^ 1]) + b[-9:]),
                         ("nan", lambda b: b[:-8] + struct.pack("<f", float("nan")) + b[-4:])):
        folder = tmp_path / name
        shutil.copytree(run, folder)
        path = folder / checkpoint.MODEL_FILE
        path.write_bytes(change(path.read_bytes()))
        fails(["sample", str(folder), "--n", "2", "--out", str(tmp_path / "s.png")], capsys, "is damaged")
    # the checksum is of the tensors themselves: a checkpoint that loads gives the saved weights back
    tensors = checkpoint.read_tensors(run / checkpoint.MODEL_FILE)
    assert checkpoint.checksum(tensors) == checkpoint.checksum(checkpoint.load(run).state_dict())


def test_damaged_configs(run, tmp_path, capsys):
    import shutil

    folder = tmp_path / "deep"
    shutil.copytree(run, folder)
    (folder / checkpoint.CONFIG_FILE).write_text("[" * 100_000 + "]" * 100_000)
    fails(["sample", str(folder), "--out", str(tmp_path / "s.png")], capsys, "is corrupt (RecursionError)")
    config = json.loads((run / checkpoint.CONFIG_FILE).read_text())
    config["model"]["data_shape"] = [-5]
    (folder / checkpoint.CONFIG_FILE).write_text(json.dumps(config))
    fails(["sample", str(folder), "--out", str(tmp_path / "s.png")], capsys, "must be positive sizes")


def test_a_config_from_elsewhere_asking_for_a_huge_model_allocates_none_of_it(run, tmp_path, capsys, monkeypatch):
    """A folder from elsewhere (a Hub download: config.json beside weights without vaekit's metadata) whose
    config.json asks for an enormous model: one line, before any of that model is allocated (before, the loader
    built it first: 16 GB taken for a 1 kB file)."""
    from vaekit import Model, models

    built = []
    family = models.MODEL_FAMILIES["vae"]
    monkeypatch.setitem(models.MODEL_FAMILIES, "vae", lambda config: built.append(torch.get_default_device().type)
                        or family(config))
    original = json.loads((run / checkpoint.CONFIG_FILE).read_text())
    for name, change, says in (
            ("wide", {"hidden_dims": [100_000, 100_000]}, "does not match config.json (missing ["),
            ("labels", {"condition": "label", "num_labels": 3_000_000}, "of memory, more than half of this machine's"),
            ("overflow", {"data_shape": [3, 2**30, 2**30]}, "the model's sizes are beyond any machine's")):
        folder = tmp_path / name
        folder.mkdir()
        config = json.loads(json.dumps(original))
        config["model"].update(change)
        (folder / checkpoint.CONFIG_FILE).write_text(json.dumps(config))
        save_file({"x": torch.zeros(1)}, str(folder / checkpoint.MODEL_FILE))
        with monkeypatch.context() as patch:
            if name == "labels":  # (3M labels' embedding: 15 GiB, refused on a machine of any size)
                patch.setattr(safe, "memory_budget", lambda: 2**30)
            fails(["sample", str(folder), "--n", "2", "--out", str(tmp_path / "s.png")], capsys, says)
            with pytest.raises(VaekitError, match=re.escape(says)):
                Model.from_pretrained(str(folder))
        assert set(built) <= {"meta"}, (name, built)  # only ever built without memory
    assert built
    # the run's own weights beside a config.json whose layers are one wider: the tensors of those names are named
    folder = tmp_path / "resized"
    folder.mkdir()
    config = json.loads(json.dumps(original))
    config["model"]["hidden_dims"] = [width + 1 for width in original["model"]["hidden_dims"]]
    (folder / checkpoint.CONFIG_FILE).write_text(json.dumps(config))
    save_file(load_file(str(run / checkpoint.MODEL_FILE)), str(folder / checkpoint.MODEL_FILE))
    fails(["sample", str(folder), "--n", "2", "--out", str(tmp_path / "s.png")], capsys,
          "does not match config.json (other shapes for ")
    built.clear()  # and building a model itself checks its size first (a model built in Python, from no folder)
    monkeypatch.setattr(safe, "memory_budget", lambda: 2**30)
    with pytest.raises(VaekitError, match="of memory, more than half"):
        models.build_model(ModelConfig(data_shape=(64,), likelihood="bernoulli", hidden_dims=(100_000, 100_000)))
    assert set(built) == {"meta"}


def test_a_model_whose_training_needs_more_than_the_memory_is_refused_before_it_is_built(tmp_path, monkeypatch,
                                                                                          capsys):
    """The check before training counts what a trainer holds (measured here on a run: weights, gradients, Adam's
    moments and the copy kept to roll back to): a budget below that is one line before the model is built, one just
    above it trains. Counting the weights alone, a model was killed by the system at 23.8 GB."""
    held = []

    class Held(Callback):
        def on_epoch_end(self, trainer, result):
            parameters = list(trainer.model.parameters())
            tensors = [*parameters, *(p.grad for p in parameters if p.grad is not None),
                       *(v for state in trainer.optimizer.state.values() for v in state.values() if torch.is_tensor(v)),
                       *trainer.good[0].values()]
            held.append(sum(t.numel() * t.element_size() for t in tensors))

    cfg = RunConfig(data=DataConfig(name="digits"), model=ModelConfig(latent_dim=2, hidden_dims=(512, 512),
                                                                      network="mlp"),
                    train=TrainConfig(epochs=1, progress=False))
    train(cfg, callbacks=[Held()])
    args = ["train", "--data", "digits", "--latent-dim", "2", "--hidden-dims", "512,512", "--network", "mlp",
            "--epochs", "1", "--no-progress"]
    monkeypatch.setattr(safe, "memory_budget", lambda: held[0] - 2**16)  # (less the generators' states, 5 kB)
    fails([*args, "--out", str(tmp_path / "run")], capsys, "training the model (7 times its weights: them, their "
          "gradients, Adam's two moments and the copy kept to roll back to) needs")
    assert not (tmp_path / "run").exists()
    monkeypatch.setattr(safe, "memory_budget", lambda: int(held[0] * 1.05))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two processes on this machine (--nproc 2): each holds as much
    fails([*args, "--out", str(tmp_path / "run")], capsys, "training the model (14 times its weights")
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    fails([*args, "--early-stopping", "3", "--out", str(tmp_path / "run")], capsys, "training the model (9 times its "
          "weights: them, their gradients, Adam's two moments and the copy kept to roll back to, and the best epoch)")
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    # a resume is checked as a new run is, before the model is built; the run is left as it was
    before = {path.name: path.read_bytes() for path in (tmp_path / "run").iterdir() if path.is_file()}
    monkeypatch.setattr(safe, "memory_budget", lambda: held[0] - 2**16)
    fails(["train", "--resume", str(tmp_path / "run"), "--epochs", "2", "--no-progress"], capsys,
          "training the model (7 times its weights")
    assert {path.name: path.read_bytes() for path in (tmp_path / "run").iterdir() if path.is_file()} == before


def test_a_resume_state_beside_a_config_asking_for_a_huge_model_allocates_none_of_it(run, tmp_path, monkeypatch):
    """train --resume of a folder from elsewhere (its resume.json's identity made to fit an edited config.json):
    the config's model is checked against the resume state's tensors before it is built."""
    import shutil

    from vaekit import models

    folder = tmp_path / "crafted"
    shutil.copytree(run, folder)
    config = json.loads((folder / checkpoint.CONFIG_FILE).read_text())
    config["model"]["hidden_dims"] = [100_000, 100_000]
    (folder / checkpoint.CONFIG_FILE).write_text(json.dumps(config))
    state = json.loads((folder / checkpoint.RESUME_STATE).read_text())
    state[checkpoint.IDENTITY_KEY] = checkpoint.identity_sha256(folder)
    (folder / checkpoint.RESUME_STATE).write_text(json.dumps(state))
    built = []
    family = models.MODEL_FAMILIES["vae"]
    monkeypatch.setitem(models.MODEL_FAMILIES, "vae", lambda config: built.append(torch.get_default_device().type)
                        or family(config))
    with pytest.raises(VaekitError, match="the resume state in .* does not fit its model"):
        resume(folder, epochs=3, progress=False)
    assert built and set(built) == {"meta"}


@pytest.mark.parametrize("change,malformed", [
    (lambda s: s.update(epoch=None), True), (lambda s: s.update(epoch="2"), True),
    (lambda s: s.update(epoch=-5), True), (lambda s: s.update(optimizer_scalars=[1, 2]), True),
    (lambda s: s["history"][0].update(train_loss=[1.0]), True),
    # well-formed values, which only the checksum tells from the state written: they would train otherwise
    (lambda s: s.update(step=s["step"] + 8), False),
    (lambda s: [group.update(maximize=True) for group in s["optimizer_groups"]], False),
])
def test_damaged_resume_states(change, malformed, run, tmp_path):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    state = json.loads((folder / checkpoint.RESUME_STATE).read_text())
    change(state)
    (folder / checkpoint.RESUME_STATE).write_text(json.dumps(state))
    # the checksum of its entries written with its tensors says so first
    with pytest.raises(VaekitError, match=r"resume.json is damaged \(its entries do not match the checksum"):
        resume(folder, epochs=3, progress=False)
    # a state from before that checksum: each entry's own check, where the entry is of the wrong kind
    tensors, metadata = checkpoint.read_checked(folder / state["tensors"])
    del metadata[checkpoint.STATE_KEY]
    save_file(tensors, str(folder / state["tensors"]), metadata=metadata)
    if malformed:
        with pytest.raises(VaekitError, match="resume state in .* (is corrupt|does not fit)"):
            resume(folder, epochs=3, progress=False)


def test_resume_with_fewer_epochs_keeps_the_config(run, tmp_path):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    with pytest.raises(VaekitError, match="already trained 2 epochs.*at least 2"):
        resume(folder, epochs=1, progress=False)
    assert json.loads((folder / checkpoint.CONFIG_FILE).read_text())["train"]["epochs"] == 2


def test_metrics_lines_damaged_by_a_crash_are_rewritten_on_resume(run, tmp_path):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    with open(folder / "metrics.jsonl", "ab") as handle:
        handle.write(b'{"epoch": 3, "tra\xff\xfe\n[1, 2]\n')
    resume(folder, epochs=3, progress=False)
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3]


def test_out_of_range_labels_in_a_table(tmp_path):
    (tmp_path / "t.csv").write_text("a,label\n" + "\n".join(f"{i},{1e300 if i == 3 else i % 2}" for i in range(20)))
    with pytest.raises(VaekitError, match="holds the label 1e\\+300, which is no class: .* whole numbers below 2\\^53"):
        load_dataset(DataConfig(name=str(tmp_path / "t.csv"), label_column="label"))


def test_zip_flag_helper_really_marks_members_encrypted(tmp_path):
    data, _ = _files(tmp_path)["locked.npz"]
    (tmp_path / "locked.npz").write_bytes(data)
    with zipfile.ZipFile(tmp_path / "locked.npz") as archive:
        assert all(member.flag_bits & 1 for member in archive.infolist())


# ---- kills and signals: nothing lost, the resumed run ends bitwise identical ------------------------------------

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
TRAIN = ["--data", "mnist-10k", "--limit", "2000", "--binarize", "dynamic", "--batch-size", "100", "--epochs", "3",
         "--hidden-dims", "64", "--latent-dim", "4", "--checkpoint-steps", "5", "--no-progress"]


def _vaekit(*args: str):
    import subprocess
    import sys

    command = "import sys; from vaekit.cli import main; sys.exit(main())"
    return subprocess.Popen([sys.executable, "-c", command, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _step(folder) -> int:
    try:
        return json.loads((folder / checkpoint.RESUME_STATE).read_text())["step"]
    except (OSError, ValueError, KeyError):
        return -1


def _kill_after(folder, step: int, signum: int):
    import time

    process = _vaekit("train", *TRAIN, "--out", str(folder))
    deadline = time.time() + 120
    while _step(folder) < step and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    return process.returncode, err


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("whole") / "run"
    process = _vaekit("train", *TRAIN, "--out", str(folder))
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-1000:]
    return checkpoint.read_tensors(folder / checkpoint.MODEL_FILE)


@pytest.mark.parametrize("step", [7, 33])
def test_a_killed_run_resumes_to_the_same_weights(step, uninterrupted, tmp_path):
    import signal

    folder = tmp_path / "run"
    code, _ = _kill_after(folder, step, signal.SIGKILL)
    assert code == -signal.SIGKILL and 0 < _step(folder) < 60  # killed inside training, after a step checkpoint
    process = _vaekit("train", "--resume", str(folder), "--no-progress")
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-1000:]
    assert not [p for p in folder.glob(".*") if p.name != ".lock"]  # a write the kill cut short: cleaned up
    resumed = checkpoint.read_tensors(folder / checkpoint.MODEL_FILE)
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[name], uninterrupted[name]) for name in resumed)
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3]


def test_sigterm_stops_after_a_step_saves_and_says_how_to_resume(uninterrupted, tmp_path):
    import signal

    folder = tmp_path / "run"
    code, err = _kill_after(folder, 12, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM and "Traceback" not in err
    assert f"stopped by SIGTERM after step {_step(folder)}, saved: continue with vaekit train --resume {folder}" in err
    process = _vaekit("train", "--resume", str(folder), "--no-progress")
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-1000:]
    resumed = checkpoint.read_tensors(folder / checkpoint.MODEL_FILE)
    assert all(torch.equal(resumed[name], uninterrupted[name]) for name in resumed)


def test_a_second_signal_during_the_checkpoint_stops_at_once_and_corrupts_nothing(tmp_path, monkeypatch, capsys):
    """The first SIGTERM arrives just after the step-3 checkpoint; the second while the stop's own checkpoint is
    being written (before its resume state is committed). The run stops at once, says so, and resumes exactly."""
    import os
    import signal

    args = ["train", "--data", "digits", "--limit", "640", "--epochs", "2", "--latent-dim", "2", "--hidden-dims", "16",
            "--checkpoint-steps", "3", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    real, calls = checkpoint.save_resume, []

    def save_resume(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # the second signal, inside the stop's checkpoint
        real(*a, **k)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # the first, after the step-3 checkpoint

    monkeypatch.setattr(checkpoint, "save_resume", save_resume)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        main([*args, "--out", str(tmp_path / "run")])
    assert stopped.value.code == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert "stopped at once by a second SIGTERM" in err and err.count("\n") == 1, err
    monkeypatch.setattr(checkpoint, "save_resume", real)
    assert json.loads((tmp_path / "run" / checkpoint.RESUME_STATE).read_text())["step"] == 3
    resume(tmp_path / "run")
    whole = checkpoint.read_tensors(tmp_path / "whole" / checkpoint.MODEL_FILE)
    resumed = checkpoint.read_tensors(tmp_path / "run" / checkpoint.MODEL_FILE)
    assert all(torch.equal(resumed[k], whole[k]) for k in whole)


def test_a_run_folder_has_one_writer(tmp_path, capsys):
    import fcntl

    folder = tmp_path / "run"
    folder.mkdir()
    with open(folder / ".lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        handle.write("pid 12345")
        handle.flush()
        fails(["train", "--data", "digits", "--epochs", "1", "--out", str(folder), "--no-progress"], capsys,
              "is being written by another vaekit run (pid 12345)")
    assert main(["train", "--data", "digits", "--epochs", "1", "--out", str(folder), "--no-progress"]) == 0


def test_links_in_a_run_folder_from_elsewhere_write_over_nothing_they_point_to(run, tmp_path, capsys):
    """A run folder from an archive or another user may hold symbolic links named as its files: vaekit's writes
    replace a link with the run's file (or refuse a linked lock), and the files pointed to stay as they were."""
    import shutil

    for name in (checkpoint.MODEL_FILE, "metrics.jsonl"):
        copy = tmp_path / f"run-{name}"
        shutil.copytree(run, copy)
        target = copy / name
        users = tmp_path / f"users-{name}"  # a file of the user's, which the link points to (the run's bytes, so
        shutil.copy(target, users)          # that the run opens through it)
        before = users.read_bytes()
        target.unlink()
        target.symlink_to(users)
        assert main(["train", "--resume", str(copy), "--epochs", "3", "--no-progress"]) == 0
        assert users.read_bytes() == before
        assert not target.is_symlink() and target.read_bytes() != before  # the run's file now, in the run
    # a link where the run keeps its TensorBoard events is refused before training, and nothing is written through it
    copy = tmp_path / "run-tensorboard"
    shutil.copytree(run, copy)
    elsewhere = tmp_path / "users-folder"
    elsewhere.mkdir()
    (copy / "tensorboard").symlink_to(elsewhere)
    metrics = (copy / "metrics.jsonl").read_bytes()
    fails(["train", "--resume", str(copy), "--epochs", "3", "--tensorboard", "--no-progress"], capsys,
          "tensorboard is a symbolic link, where a run keeps its TensorBoard events: remove it")
    assert not list(elsewhere.iterdir()) and (copy / "metrics.jsonl").read_bytes() == metrics
    # a link to a folder or a device is replaced too (not refused as a folder, nor written through)
    for name, pointed in ((checkpoint.MODEL_FILE, tmp_path / "a-folder"), ("metrics.jsonl", Path(os.devnull))):
        copy = tmp_path / f"to-{name}"
        shutil.copytree(run, copy)
        if pointed.name == "a-folder":
            pointed.mkdir()
        (copy / name).unlink()
        (copy / name).symlink_to(pointed)
        assert main(["train", "--resume", str(copy), "--epochs", "3", "--no-progress"]) == 0  # (weights: resume's)
        assert (copy / name).is_file() and not (copy / name).is_symlink() and (copy / name).stat().st_size > 0
    assert list((tmp_path / "a-folder").iterdir()) == []
    # a link put in place of metrics.jsonl while the run trains: the next epoch's line replaces it
    users = tmp_path / "users-file"
    users.write_text("the user's own lines\n")

    class Swap(Callback):
        def on_epoch_end(self, trainer, result):
            if result.epoch == 4:
                (copy / "metrics.jsonl").unlink()
                (copy / "metrics.jsonl").symlink_to(users)

    resume(copy, epochs=6, progress=False, callbacks=[Swap()])
    assert users.read_text() == "the user's own lines\n"
    lines = (copy / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4, 5, 6]
    # a link put there between the check for one and the append (the check blind to it here): the append refuses to
    # follow it, and the user's file stays as it was
    module = sys.modules["vaekit.train"]  # the module (vaekit.train is the training function)

    class Blind:  # the training module's os, whose look for a link misses it
        path = SimpleNamespace(**{**vars(os.path), "islink": lambda _: False})

        def __getattr__(self, name):
            return getattr(os, name)

    copy = tmp_path / "raced"
    shutil.copytree(run, copy)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "os", Blind())
        with pytest.raises(VaekitError, match="cannot add epoch 5 to .*metrics.jsonl"):
            resume(copy, epochs=6, progress=False, callbacks=[Swap()])
    assert users.read_text() == "the user's own lines\n"
    # the lock: a link in its place is refused (nothing written through it), as a folder in its place is
    victim = tmp_path / "victim-lock"
    victim.write_text("the user's own file\n")
    folder = tmp_path / "locked"
    folder.mkdir()
    (folder / ".lock").symlink_to(victim)
    fails(["train", "--data", "digits", "--epochs", "1", "--out", str(folder), "--no-progress"], capsys,
          ".lock is a symbolic link, where a run keeps its lock file: remove it")
    assert victim.read_text() == "the user's own file\n"
    (folder / ".lock").unlink()
    (folder / ".lock").mkdir()
    fails(["train", "--data", "digits", "--epochs", "1", "--out", str(folder), "--no-progress"], capsys,
          ".lock is a folder, where a run keeps its lock file: remove it")
    (folder / ".lock").rmdir()
    os.mkfifo(folder / ".lock")  # a named pipe: opened without blocking, and refused
    fails(["train", "--data", "digits", "--epochs", "1", "--out", str(folder), "--no-progress"], capsys,
          ".lock is a special file, where a run keeps its lock file: remove it")
    (folder / ".lock").unlink()
    os.link(victim, folder / ".lock")  # a hard link: the same file as the user's, which the lock would empty
    fails(["train", "--data", "digits", "--epochs", "1", "--out", str(folder), "--no-progress"], capsys,
          ".lock is a hard link to another file, where a run keeps its lock file: remove it")
    assert victim.read_text() == "the user's own file\n"


def test_a_run_stopped_before_its_first_checkpoint_resumes_from_the_start(tmp_path):
    folder = tmp_path / "run"
    cfg = RunConfig(data=DataConfig(name="digits"), model=ModelConfig(latent_dim=2, hidden_dims=(16,)),
                    train=TrainConfig(epochs=1, progress=False))
    from vaekit.runs import resolve_config

    folder.mkdir()
    checkpoint.write_config(folder, resolve_config(cfg, load_dataset(cfg.data)))  # what a run writes first
    result = resume(folder)
    assert len(result.history) == 1 and (folder / checkpoint.MODEL_FILE).exists()


def test_a_run_trained_on_a_dataset_built_in_python_resumes_on_it_given_again(tmp_path):
    from vaekit.data import Dataset

    gen = torch.Generator().manual_seed(0)
    mine = Dataset("mine", torch.rand(300, 6, generator=gen), torch.rand(100, 6, generator=gen))
    cfg = RunConfig(data=DataConfig(name="digits"), model=ModelConfig(latent_dim=2, hidden_dims=(16,)),
                    train=TrainConfig(epochs=2, progress=False))
    whole = train(cfg, dataset=mine).history
    train(replace(cfg, train=replace(cfg.train, epochs=1)), tmp_path / "run", dataset=mine)
    # the config names digits, which the run never saw: refused, with the fix (data of the same shape, too)
    with pytest.raises(VaekitError, match=r"was trained on data given in Python \(vaekit.train\(..., dataset=\)\), not "
                                          r"on digits, which its config.json names: give it again as dataset=$"):
        resume(tmp_path / "run", epochs=2)
    assert main(["evaluate", str(tmp_path / "run"), "--iw-samples", "2"]) == 2  # the CLI cannot give it
    with pytest.raises(VaekitError, match=r"names: give it again from Python \(dataset=\), or give --data FILE to work "
                                          r"on other data$"):
        checkpoint.check_data(tmp_path / "run", load_dataset(DataConfig(name="digits")), "digits", cli=True)
    other = Dataset("other", torch.rand(300, 6, generator=gen), torch.rand(100, 6, generator=gen))
    with pytest.raises(VaekitError, match="the dataset= given is not the data the run in .* was trained on \\(its "
                                          "values changed\\): give the run's own data"):
        resume(tmp_path / "run", epochs=2, dataset=other)
    wider = Dataset("wider", torch.rand(300, 7, generator=gen), torch.rand(100, 7, generator=gen))
    with pytest.raises(VaekitError, match=r"was trained on \(its items are of shape \(7,\), the run's of \(6,\)\): "):
        resume(tmp_path / "run", epochs=2, dataset=wider)  # said as a shape, not as values that changed
    resumed = resume(tmp_path / "run", epochs=2, dataset=mine).history
    assert [e.epoch for e in resumed] == [1, 2]
    assert [e.train["loss"] for e in resumed] == pytest.approx([e.train["loss"] for e in whole], rel=1e-5)
    assert [e.val["loss"] for e in resumed] == pytest.approx([e.val["loss"] for e in whole], rel=1e-5)


def test_a_run_whose_data_file_moved_resumes_on_it_from_its_new_path(tmp_path, capsys):
    """--resume RUN --data NEW: the run's own file, read as the run read it (its split, its statistics) and checked
    against data.json, to the same weights as a run never moved; another file, or a run without the record, is
    refused in one line. config.json keeps the path it trained from (it was: no way to resume a moved run)."""
    rng = np.random.default_rng(0)
    rows = ["a,b,c,kind"] + [f"{x:.4f},{y:.4f},{x * y:.4f},{'pq'[i % 2]}" for i, (x, y) in
                             enumerate(rng.normal(size=(300, 2)))]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    flags = ["--latent-dim", "2", "--hidden-dims", "16", "--seed", "3", "--no-progress"]
    whole, moved = str(tmp_path / "whole"), str(tmp_path / "moved")
    assert main(["train", "--data", str(tmp_path / "t.csv"), "--epochs", "2", *flags, "--out", whole]) == 0
    assert main(["train", "--data", str(tmp_path / "t.csv"), "--epochs", "1", *flags, "--out", moved]) == 0
    (tmp_path / "t.csv").rename(tmp_path / "t2.csv")
    fails(["train", "--resume", moved, "--epochs", "2"], capsys, "if it moved, give its new path with --data, also "
          "to train --resume")
    (tmp_path / "t3.csv").write_text("\n".join(rows[:-1]) + "\n")  # one row fewer: not the run's data
    fails(["train", "--resume", moved, "--epochs", "2", "--data", str(tmp_path / "t3.csv")], capsys,
          "t3.csv is not the data the run in")
    assert main(["train", "--resume", moved, "--epochs", "2", "--data", str(tmp_path / "t2.csv")]) == 0
    a, b = (checkpoint.read_checked(Path(run) / checkpoint.MODEL_FILE)[0] for run in (whole, moved))
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    assert checkpoint.load_config(moved).data.name == str(tmp_path / "t.csv")
    (Path(moved) / checkpoint.DATA_FILE).unlink()
    fails(["train", "--resume", moved, "--epochs", "3", "--data", str(tmp_path / "t2.csv")], capsys,
          "keeps no record of the data it trained on (data.json)")
    # a built-in data set has no file to move; a vqvae's prior stage takes the moved file too
    assert main(["train", "--data", "digits", "--limit", "100", *flags, "--epochs", "1", "--out",
                 str(tmp_path / "dig")]) == 0
    fails(["train", "--resume", str(tmp_path / "dig"), "--epochs", "2", "--data", "digits"], capsys,
          "trained on vaekit's digits data set, which has no file to move: drop --data")
    np.save(tmp_path / "i.npy", load_dataset(DataConfig(name="digits", limit=100)).x_train.numpy())
    vq = str(tmp_path / "vq")
    assert main(["train", "--data", str(tmp_path / "i.npy"), "--model", "vqvae", "--network", "mlp", "--epochs", "1",
                 *flags, "--out", vq]) == 0
    (tmp_path / "i.npy").rename(tmp_path / "j.npy")
    fails(["train-prior", vq, "--epochs", "1"], capsys, "also to train --resume and train-prior")
    assert main(["train-prior", vq, "--epochs", "1", "--data", str(tmp_path / "j.npy"), "--no-progress"]) == 0


def test_a_resume_shows_progress_unless_it_is_asked_not_to(run, tmp_path):
    """--no-progress is the call's, not the run's: it used to stick to every later --resume and train-prior."""
    import shutil

    shutil.copytree(run, tmp_path / "run")
    assert checkpoint.load_config(tmp_path / "run").train.progress is False  # trained with --no-progress
    assert resume(tmp_path / "run", epochs=3).config.train.progress is True
    assert resume(tmp_path / "run", epochs=4, progress=False).config.train.progress is False


def test_overwrite_keeps_the_old_run_until_the_new_one_has_a_checkpoint(run, tmp_path, monkeypatch, capsys):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.name != ".lock"}

    def full(*_, **__):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", full)
    fails(["train", "--data", "digits", "--limit", "300", "--latent-dim", "2", "--hidden-dims", "16", "--lr", "3e-3",
           "--epochs", "1", "--out", str(folder), "--overwrite", "--no-progress"], capsys, "No space left on device")
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name != ".lock"} == before  # the old run, whole
    resume(folder, epochs=3, progress=False)  # and still resumable
    assert main(["train", "--data", "digits", "--limit", "300", "--latent-dim", "2", "--hidden-dims", "16", "--epochs",
                 "1", "--out", str(folder), "--overwrite", "--no-progress"]) == 0
    assert len((folder / "metrics.jsonl").read_text().splitlines()) == 1  # the new run's only
    assert len(list(folder.glob("resume-*.safetensors"))) == 1

    # checkpoints every 2 epochs: a new run stopped after its first epoch, before any checkpoint, leaves the old run
    # whole, its metrics.jsonl too
    from conftest import Killed, KillAt

    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.name != ".lock"}
    cfg = RunConfig(data=DataConfig(name="digits", limit=300), model=ModelConfig(latent_dim=3, hidden_dims=(16,)),
                    train=TrainConfig(epochs=3, checkpoint_every=2, progress=False))
    with pytest.raises(Killed):
        train(cfg, out=folder, overwrite=True, callbacks=[KillAt(epoch=1)])
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name != ".lock"} == before
    train(cfg, out=folder, overwrite=True)  # uninterrupted: the new run's three lines, written at its checkpoints
    assert [json.loads(line)["epoch"] for line in (folder / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]

    # a new run whose first checkpoint commits inside its first epoch (a step checkpoint, as at a stop) and is then
    # killed: the folder is the new run, so its metrics.jsonl is too (no epochs yet), not the old run's three lines
    steps = replace(cfg, train=replace(cfg.train, checkpoint_steps=5, batch_size=32))
    with pytest.raises(Killed):
        train(steps, out=folder, overwrite=True, callbacks=[KillAt(step=7)])
    assert json.loads((folder / checkpoint.RESUME_STATE).read_text())["step"] == 5
    assert (folder / "metrics.jsonl").read_text() == ""
    resumed = resume(folder)
    assert [json.loads(line)["epoch"] for line in (folder / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert len(resumed.history) == 3


def test_an_overwrite_of_a_run_without_weights_drops_its_metrics_at_once(tmp_path):
    """The old run stopped before any checkpoint (metrics lines, no weights): the folder is the new run's from the
    start, so a new run stopped at its first step checkpoint has the new run's (empty) history, not the old lines."""
    from conftest import Killed, KillAt

    folder = tmp_path / "run"
    cfg = RunConfig(data=DataConfig(name="digits", limit=300), model=ModelConfig(latent_dim=2, hidden_dims=(16,)),
                    train=TrainConfig(epochs=6, checkpoint_every=5, batch_size=32, progress=False))
    with pytest.raises(Killed):
        train(cfg, out=folder, callbacks=[KillAt(epoch=3)])
    assert len((folder / "metrics.jsonl").read_text().splitlines()) == 3
    assert not (folder / "model.safetensors").exists()
    with pytest.raises(Killed):
        train(replace(cfg, train=replace(cfg.train, checkpoint_steps=2)), out=folder, overwrite=True,
              callbacks=[KillAt(step=3)])
    assert (folder / "model.safetensors").exists()
    assert not (folder / "metrics.jsonl").exists() or (folder / "metrics.jsonl").read_text() == ""


def test_a_full_disk_at_an_epochs_metrics_line_is_one_line_and_no_half_line(run, tmp_path, monkeypatch, capsys):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    class HalfWrites:  # the training module's os, whose writes stop half-way on a full disk
        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def write(descriptor, data):
            os.write(descriptor, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

    module = sys.modules["vaekit.train"]  # the module (vaekit.train is the training function)
    monkeypatch.setattr(module, "os", HalfWrites())
    fails(["train", "--resume", str(folder), "--epochs", "5", "--no-progress"], capsys,
          "cannot add epoch 4 to")
    monkeypatch.undo()
    text = (folder / "metrics.jsonl").read_text()  # epochs 1-3 (the resumed fit's first epoch rewrites the file)
    assert text.endswith("}\n") and [json.loads(line)["epoch"] for line in text.splitlines()] == [1, 2, 3]
    resume(folder, epochs=5, progress=False)  # and the run goes on from its checkpoint
    epochs = [json.loads(line)["epoch"] for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4, 5]

    class ShortWrites(HalfWrites):  # a write that stops half-way and says so by its count, raising nothing
        @staticmethod
        def write(descriptor, data):
            return os.write(descriptor, data[: len(data) // 2])

    monkeypatch.setattr(module, "os", ShortWrites())  # (epoch 6, the resumed fit's first, rewrites the file whole)
    fails(["train", "--resume", str(folder), "--epochs", "7", "--no-progress"], capsys, "cannot add epoch 7 to")
    monkeypatch.undo()
    text = (folder / "metrics.jsonl").read_text()
    assert text.endswith("}\n") and [json.loads(line)["epoch"] for line in text.splitlines()] == [1, 2, 3, 4, 5, 6]


def test_weights_and_a_config_from_different_writes_are_found(run, tmp_path, capsys):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    config = checkpoint.load_config(folder)
    checkpoint.write_config(folder, type(config)(data=config.data, model=config.model,
                                                 train=type(config.train)(**{**config.train.__dict__, "lr": 0.5})))
    fails(["sample", str(folder), "--out", str(tmp_path / "s.png")], capsys,
          f"was written for another config.json: if you edited config.json, restore it (settings are changed with "
          f"flags, e.g. vaekit train --resume {folder} --epochs N); if the run stopped between writing them, vaekit "
          f"train --resume {folder} writes both again")


def test_temporaries_of_a_killed_write_are_cleaned_by_the_next_run(run, tmp_path):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    stale = [folder / ".model.safetensors.k1x2", folder / ".resume-000000042-ab.safetensors.zz9", folder / ".resume.json.q"]
    for path in stale:
        path.write_bytes(b"half a write")
    (folder / ".mine").write_text("not vaekit's")
    resume(folder, epochs=3, progress=False)
    assert not any(path.exists() for path in stale) and (folder / ".mine").exists()


class _Crash(Exception):
    pass


def test_a_step_checkpoint_on_an_epochs_last_step_resumes_exactly(tmp_path):
    """The step checkpoint at step 10 is the last step of epoch 1 (its epoch-end checkpoint comes only every 2
    epochs): a crash in epoch 2 resumes from a state whose epoch has every batch done."""
    from vaekit.train import Callback

    cfg = RunConfig(data=DataConfig(name="digits", limit=640), model=ModelConfig(latent_dim=2, hidden_dims=(16,)),
                    train=TrainConfig(epochs=3, batch_size=64, checkpoint_steps=10, checkpoint_every=2,
                                      progress=False))
    whole = train(cfg, out=tmp_path / "whole")

    class CrashAtStep12(Callback):
        def on_step_end(self, trainer, step):
            if step.step == 12:
                raise _Crash

    with pytest.raises(_Crash):
        train(cfg, out=tmp_path / "run", callbacks=[CrashAtStep12()])
    state = json.loads((tmp_path / "run" / checkpoint.RESUME_STATE).read_text())
    assert state["step"] == 10 and state["in_epoch"]["batches"] == 10 and state["epoch"] == 0
    resumed = resume(tmp_path / "run")
    assert all(torch.equal(a, b) for a, b in zip(resumed.model.state_dict().values(),
                                                   whole.model.state_dict().values()))
    assert [r.train["loss"] for r in resumed.history] == [r.train["loss"] for r in whole.history]


@pytest.mark.parametrize("older", [False, True])
def test_an_overwrite_stopped_during_its_first_checkpoint_resumes_as_the_new_run(older, run, tmp_path, monkeypatch,
                                                                                  capsys):
    """--overwrite whose first checkpoint wrote the new model and config but not the new resume state: the old
    resume state is not continued under the new config; --resume starts the new run, which is what was asked. Also
    when the old run was written by a vaekit before run ids and config identities (older)."""
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    if older:
        state = json.loads((folder / checkpoint.RESUME_STATE).read_text())
        for key in (checkpoint.RUN_KEY, checkpoint.IDENTITY_KEY):
            state.pop(key)
        (folder / checkpoint.RESUME_STATE).write_text(json.dumps(state))
        tensors, metadata = checkpoint.read_checked(folder / checkpoint.MODEL_FILE)
        metadata.pop(checkpoint.RUN_KEY)
        checkpoint.write_tensors(folder / checkpoint.MODEL_FILE, tensors, metadata)
    real = checkpoint.save_resume

    def disk_full_at_resume(*args, **kwargs):
        raise VaekitError("cannot write resume state (No space left on device)")

    monkeypatch.setattr(checkpoint, "save_resume", disk_full_at_resume)
    fails(["train", "--data", "digits", "--limit", "300", "--latent-dim", "2", "--hidden-dims", "16", "--lr", "5e-3",
           "--epochs", "1", "--out", str(folder), "--overwrite", "--no-progress"], capsys, "No space left on device")
    monkeypatch.setattr(checkpoint, "save_resume", real)
    result = resume(folder, progress=False)
    assert result.config.train.lr == 5e-3 and [r.epoch for r in result.history] == [1]
    assert json.loads((folder / checkpoint.RESUME_STATE).read_text())["epoch"] == 1


def test_a_resume_state_for_an_edited_config_is_refused(run, tmp_path):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    text = (folder / checkpoint.CONFIG_FILE).read_text()
    (folder / checkpoint.CONFIG_FILE).write_text(text.replace('"seed": 0', '"seed": 1'))
    with pytest.raises(VaekitError, match="was written for another config.json .was it edited.*--overwrite"):
        resume(folder, epochs=3, progress=False)


def test_an_unknown_attribute_with_huge_class_ids_lists_the_classes_present(tmp_path):
    from vaekit import latent

    x = np.random.default_rng(0).random((20, 4)).astype(np.float32)
    np.savez(tmp_path / "big.npz", x=x, y=np.array([0, 2**31 - 1] * 10))
    dataset = load_dataset(DataConfig(name=str(tmp_path / "big.npz")))
    with pytest.raises(VaekitError, match="known: 0, 2147483647$"):
        latent.find_attribute(dataset, "test", "smile")


# ---- non-finite steps: skipped, rolled back, bounded ------------------------------------------------------
# digits: 1437 training items, so 12 steps an epoch at the default batch of 128; checkpoints at epoch ends.

NAN_RUN = RunConfig(data=DataConfig(name="digits"), model=ModelConfig(latent_dim=2, hidden_dims=(16,)),
                    train=TrainConfig(epochs=3, progress=False))


class _Watch:
    """After each step: whether it was skipped, its learning rate, and a copy of the weights."""

    def __init__(self) -> None:
        self.skipped, self.lrs, self.weights, self.rolled_back_to = [], [], [], []

    def on_step_end(self, trainer, step) -> None:
        self.skipped.append(bool(step.skipped))
        self.lrs.append(step.lr)
        self.weights.append([p.detach().clone() for p in trainer.model.parameters()])

    def on_rollback(self, trainer) -> None:
        self.rolled_back_to.append([p.detach().clone() for p in trainer.model.parameters()])


class _Plant:
    """Plants a fault at chosen training steps (1-based, counted from this fit's start): a non-finite loss (through
    a forward hook), a non-finite gradient (a gradient hook), or a NaN in the first weight after the step."""

    def __init__(self, kind: str, steps, times: int | None = None) -> None:
        self.kind, self.steps, self.calls, self.times = kind, steps, 0, times

    def on_fit_begin(self, trainer) -> None:
        first = next(trainer.model.parameters())
        if self.kind == "loss":
            def poison(module, args, out):
                if module.training:
                    self.calls += 1
                    if self.calls in self.steps:
                        return type(out)(out.loss * float("nan"), {**out.terms, "kl": out.terms["kl"] * float("nan")},
                                         out.elbo)
                return None
            trainer.model.register_forward_hook(poison)
        elif self.kind == "gradient":
            def poison_grad(grad):
                self.calls += 1
                return grad * float("inf") if self.calls in self.steps else grad
            first.register_hook(poison_grad)

    def on_step_end(self, trainer, step) -> None:
        if self.kind == "weight" and step.step in self.steps and self.times != 0:
            self.times = None if self.times is None else self.times - 1
            with torch.no_grad():
                next(trainer.model.parameters())[0, 0] = float("nan")


def test_a_non_finite_loss_or_gradient_skips_the_update(tmp_path):
    watch = _Watch()
    result = train(NAN_RUN, out=tmp_path / "run", callbacks=[_Plant("loss", {5}), _Plant("gradient", {8}), watch])
    assert watch.skipped == [step in (5, 8) for step in range(1, 37)]
    for step in (5, 8):  # the weights after a skipped step are those before it, to the bit
        assert all(torch.equal(a, b) for a, b in zip(watch.weights[step - 1], watch.weights[step - 2]))
        assert not all(torch.equal(a, b) for a, b in zip(watch.weights[step], watch.weights[step - 1]))
    assert [r.skipped for r in result.history] == [2, 0, 0]
    assert all(math.isfinite(v) for r in result.history for v in r.train.values())  # skipped steps are not averaged
    tensors, state = checkpoint.load_resume(tmp_path / "run")
    assert state["step"] == 36 and int(tensors["optimizer.0.step"]) == 34  # Adam took 34 updates
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["skipped_steps"] for row in rows] == [2, 0, 0]


def test_non_finite_weights_roll_back_to_the_last_good_checkpoint_with_a_lower_lr(tmp_path, caplog):
    import logging

    watch = _Watch()
    with caplog.at_level(logging.WARNING):
        result = train(NAN_RUN, out=tmp_path / "run", callbacks=[_Plant("weight", {15}, times=1), watch])
    assert "the loss terms recon, kl and the gradient were not finite for 9 steps in a row and the weights are no " \
           "longer finite at step 24: rolled back to step 12 with the learning rate lowered to 0.0005 (rollback 1 of 3)" \
           in caplog.text
    assert [r.epoch for r in result.history] == [1, 2, 3]
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    # steps 1-23 seen by hooks (step 24 found the divergence and was rolled back), then 13-36 at half the rate
    assert watch.lrs == [1e-3] * 23 + [5e-4] * 24
    assert len(watch.rolled_back_to) == 1  # to the weights of step 12, bit for bit
    assert all(torch.equal(a, b) for a, b in zip(watch.rolled_back_to[0], watch.weights[11]))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    state = json.loads((tmp_path / "run" / checkpoint.RESUME_STATE).read_text())
    assert state["lr_scale"] == 0.5 and state["rollbacks"] == 1  # a resume keeps the lower rate


@pytest.mark.parametrize("kind,what", [("weight", "the loss terms recon, kl and the gradient were not finite for 10 "
                                                 "steps in a row at step 23"),
                                       ("gradient", "the gradient was not finite for 10 steps in a row at step 22")])
def test_rollbacks_are_bounded_and_the_error_names_the_step_and_the_term(kind, what, tmp_path, capsys):
    folder = tmp_path / "run"
    with pytest.raises(VaekitError) as error:
        train(NAN_RUN, out=folder, callbacks=[_Plant(kind, set(range(13, 1000)))])
    message = str(error.value)
    # a tenth of the last rate tried, below every rate that diverged (it said a tenth of the first: 0.0001, barely
    # below the last), and clipping by a flag the command takes (it said --set, which train-prior lacks)
    assert message == (f"training diverged: {what} after 3 rollbacks to a lower learning rate (now 0.000125): start "
                       "again with a lower --lr (e.g. 1.25e-05, a tenth of the last one tried) or with --grad-clip "
                       "1.0, or check the data; the last good checkpoint is kept"), message
    state = json.loads((folder / checkpoint.RESUME_STATE).read_text())
    assert state["step"] == 12 and state["lr_scale"] == 0.125  # the last good checkpoint, kept
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1]  # as the committed state says
    assert all(torch.isfinite(t).all() for t in checkpoint.read_tensors(folder / checkpoint.MODEL_FILE).values())
    assert len(resume(folder).history) == 3  # and it continues
    fails(["train", "--data", "digits", "--latent-dim", "2", "--hidden-dims", "16", "--lr", "1e30", "--epochs", "1",
           "--out", str(tmp_path / "wild"), "--no-progress"], capsys, "training diverged: ")



class _PoisonLossAtSteps:
    """A non-finite loss at the given global steps (1-based) while the learning rate is the configured one: after
    a rollback (a lower rate) the same steps are clean."""

    def __init__(self, steps) -> None:
        self.steps = steps

    def on_fit_begin(self, trainer) -> None:
        def poison(module, args, out):
            if module.training and trainer.step + 1 in self.steps and trainer.lr_scale == 1.0:
                return type(out)(out.loss * float("nan"), out.terms, out.elbo)
            return None
        trainer.model.register_forward_hook(poison)


def test_a_run_with_non_finite_steps_resumes_to_the_same_weights(tmp_path):
    """Non-finite loss at steps 3-5 (nan_skips 3): the step-4 checkpoint falls inside the streak and is not written,
    step 5 rolls back to the start at half the rate. A crash at step 7 and a resume end bitwise equal."""
    cfg = RunConfig(data=DataConfig(name="digits", limit=640), model=ModelConfig(latent_dim=2, hidden_dims=(16,)),
                    train=TrainConfig(epochs=2, batch_size=64, checkpoint_steps=4, nan_skips=3, progress=False))
    whole = train(cfg, out=tmp_path / "whole", callbacks=[_PoisonLossAtSteps({3, 4, 5})])
    assert json.loads((tmp_path / "whole" / checkpoint.RESUME_STATE).read_text())["lr_scale"] == 0.5

    class CrashAtStep7:
        def on_step_end(self, trainer, step):
            if step.step == 7 and trainer.lr_scale == 0.5:
                raise _Crash

    with pytest.raises(_Crash):
        train(cfg, out=tmp_path / "run", callbacks=[_PoisonLossAtSteps({3, 4, 5}), CrashAtStep7()])
    assert json.loads((tmp_path / "run" / checkpoint.RESUME_STATE).read_text())["step"] == 4
    resumed = resume(tmp_path / "run", callbacks=[_PoisonLossAtSteps({3, 4, 5})])
    assert all(torch.equal(a, b) for a, b in zip(resumed.model.state_dict().values(),
                                                   whole.model.state_dict().values()))


def test_a_stop_inside_a_non_finite_streak_saves_the_last_good_state(tmp_path, capsys):
    import os
    import signal

    class StopAtStep16:
        def on_step_end(self, trainer, step):
            if step.step == 16:
                os.kill(os.getpid(), signal.SIGTERM)

    folder = tmp_path / "run"
    from vaekit.errors import Interrupted

    with pytest.raises(Interrupted):
        train(NAN_RUN, out=folder, callbacks=[_Plant("weight", {15}, times=1), StopAtStep16()])
    state = json.loads((folder / checkpoint.RESUME_STATE).read_text())
    assert state["step"] == 12  # the state before the NaN, not the NaN weights of step 16
    assert all(torch.isfinite(t).all() for t in checkpoint.read_tensors(folder / checkpoint.MODEL_FILE).values())
    assert [r.epoch for r in resume(folder).history] == [1, 2, 3]


def test_a_resumed_run_saves_its_rollbacks(tmp_path):
    folder = tmp_path / "run"
    train(replace_train(NAN_RUN, epochs=1), out=folder)
    with pytest.raises(VaekitError, match="after 3 rollbacks"):
        resume(folder, epochs=3, callbacks=[_Plant("weight", set(range(13, 1000)))])
    state = json.loads((folder / checkpoint.RESUME_STATE).read_text())
    assert state["step"] == 12 and state["lr_scale"] == 0.125 and state["rollbacks"] == 3


def test_a_streak_between_two_reads_of_the_device_is_not_missed(tmp_path):
    """On a GPU the host reads the streak every 25 steps and at checkpoints: a streak of 10 steps that ends
    between two reads still rolls back (the longest streak since the last read counts)."""

    class GpuLikeReads:
        def on_fit_begin(self, trainer):
            trainer.read_every_step = False

    result = train(replace_train(NAN_RUN, epochs=1), callbacks=[GpuLikeReads(), _PoisonLossAtSteps(set(range(2, 12)))])
    assert [r.skipped for r in result.history] == [0]  # rolled back to the start, then clean at half the rate
    assert result.history[0].lr == 5e-4


def test_running_sums_of_the_wrong_size_are_refused(run, tmp_path):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    state = json.loads((folder / checkpoint.RESUME_STATE).read_text())
    tensors = checkpoint.read_tensors(folder / state["tensors"])
    tensors["rng.epoch_start"] = tensors["rng.data"].clone()
    tensors["epoch.sums"] = torch.zeros(2)
    checkpoint.write_tensors(folder / state["tensors"], tensors, {"step": str(state["step"]), "token": state["token"]})
    state.update(epoch=1, step=state["step"] - 1, history=state["history"][:1],
                 in_epoch={"batches": 1, "seen": 128, "names": ["recon", "kl"], "seconds": 0.1})
    (folder / checkpoint.RESUME_STATE).write_text(json.dumps(state))
    with pytest.raises(VaekitError, match="running sums have shape"):
        resume(folder)


def test_an_epoch_with_every_step_skipped_writes_null_means():
    from vaekit.train import EpochResult

    row = EpochResult(epoch=1, step=3, train={"loss": math.nan, "kl": math.nan}, val=None, lr=1e-3, kl_scale=1.0,
                      seconds=1.0, images_per_s=1.0, skipped=3).to_dict()
    assert row["train_loss"] is None and row["skipped_steps"] == 3 and "NaN" not in json.dumps(row)


def replace_train(cfg, **changes):
    from dataclasses import replace

    return replace(cfg, train=replace(cfg.train, **changes))


class _Payload:
    """Unpickling this creates a file: proof that something ran a pickle."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        from pathlib import Path

        return Path.touch, (Path(self.marker),)


def test_a_pickle_payload_renamed_to_each_run_file_is_refused_and_never_runs(run, tmp_path):
    import pickle
    import shutil

    marker = tmp_path / "pickle-ran"
    names = [p.name for p in run.iterdir() if p.name != ".lock"]
    assert {"config.json", "model.safetensors", "resume.json", "metrics.jsonl"} <= set(names)
    for protocol in (2, 4):
        payload = pickle.dumps(_Payload(marker), protocol=protocol)
        for name in names:
            folder = tmp_path / f"run-{name}-{protocol}"
            shutil.copytree(run, folder)
            (folder / name).write_bytes(payload)
            for action in (lambda: checkpoint.load(folder), lambda: resume(folder, epochs=3, progress=False)):
                try:
                    action()
                except VaekitError:
                    pass  # refused, as it should be (metrics.jsonl is rewritten from the resume state instead)
            assert not marker.exists(), f"a pickle in {name} was run"


def test_a_resume_with_a_new_time_limit_stopped_between_its_writes_resumes(tmp_path, monkeypatch):
    """A resume that changes --minutes writes config.json before it commits its state: a stop between the two (here
    at the commit) leaves a run that resumes, as one without --minutes does."""
    cfg = RunConfig(data=DataConfig(name="digits", limit=300), model=ModelConfig(latent_dim=2, hidden_dims=(16,)),
                    train=TrainConfig(epochs=2, minutes=5, progress=False))
    train(cfg, out=tmp_path / "run")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies as the state is committed

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint, "save_resume", killed)
        with pytest.raises(KeyboardInterrupt):
            resume(tmp_path / "run", epochs=3, minutes=10)
    assert checkpoint.load_config(tmp_path / "run").train.minutes == 10  # written before the commit
    result = resume(tmp_path / "run", epochs=3, minutes=10)
    assert [row.epoch for row in result.history] == [1, 2, 3]


def test_an_epoch_whose_every_step_was_skipped_is_kept_as_null_and_the_run_resumes(tmp_path, monkeypatch):
    from vaekit.models import VAE

    forward, calls = VAE.forward, {"n": 0}

    def flaky(self, x, y=None, kl_scale=1.0):  # every step of epoch 2 (300 items, batch 64: steps 6-10) non-finite
        out = forward(self, x, y, kl_scale)
        if self.training:
            calls["n"] += 1
            if 6 <= calls["n"] <= 10:
                out = type(out)(loss=out.loss * float("nan"), terms=out.terms, elbo=out.elbo)
        return out

    cfg = RunConfig(data=DataConfig(name="digits", limit=300), model=ModelConfig(latent_dim=2, hidden_dims=(16,)),
                    train=TrainConfig(epochs=3, batch_size=64, progress=False))
    with monkeypatch.context() as patch:
        patch.setattr(VAE, "forward", flaky)
        train(cfg, out=tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[1]["train_loss"] is None and rows[1]["skipped_steps"] == 5 and math.isfinite(rows[2]["train_loss"])
    result = resume(tmp_path / "run", epochs=4)  # checkpoints again with that row in its history
    assert [row.epoch for row in result.history] == [1, 2, 3, 4] and math.isnan(result.history[1].train_loss)
    text = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text  # strict JSON: null where a mean was not finite
    assert json.loads(text.splitlines()[1])["train_loss"] is None


def test_a_run_folder_that_cannot_be_written_is_said_before_training(run, tmp_path, monkeypatch):
    """resume and train-prior make files beside their targets: a folder that refuses new files is named at once,
    not after an epoch of training (the lock file itself may still open, as for an owner without write access to
    the folder)."""
    import shutil
    import tempfile

    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"}

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    with monkeypatch.context() as patch:
        patch.setattr(tempfile, "mkstemp", refused)
        with pytest.raises(VaekitError, match=r"cannot write in .*run \(Permission denied\): make the run folder"):
            resume(folder, epochs=4, progress=False)
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"} == before


def test_the_checksum_of_a_resume_states_entries_survives_its_json_round_trip():
    state = {"step": 7, "groups": ({"lr": 0.1, "betas": (0.9, 0.999)},), "by_index": {10: "a", 2: "b"},
             "loss": float("nan"), "tensors": "x.safetensors", "token": "t"}
    read_back = json.loads(json.dumps(state))
    assert checkpoint._state_sha256(state) == checkpoint._state_sha256(read_back)
    assert checkpoint._state_sha256(state) != checkpoint._state_sha256({**read_back, "step": 8})
    assert checkpoint._state_sha256(state) == checkpoint._state_sha256({**read_back, "token": "other"})  # commit keys


def test_a_stop_signal_during_a_runs_last_step_is_honoured_once_it_is_saved(tmp_path, monkeypatch, capsys):
    """SIGINT at the run's last step: it was dropped (the stop waits for a step that never came), so vaekit compare
    went on to train its next model and exited 0. The run is saved whole, then the stop is said; a stop inside a
    command that trains on its way (compare) is one line naming the run, not a traceback."""
    import os
    import signal as signals

    from vaekit.errors import Interrupted

    class SignalAtTheLastStep:
        def on_step_end(self, trainer, step):
            if trainer.epoch == 1 and step.step == 10:  # 300 digits in batches of 64: 5 steps an epoch, 2 epochs
                os.kill(os.getpid(), signals.SIGINT)

    cfg = RunConfig(data=DataConfig(name="digits", limit=300), model=ModelConfig(latent_dim=2, hidden_dims=(16,)),
                    train=TrainConfig(epochs=2, batch_size=64, progress=False))
    # SIGINT as a terminal's process has it (a test worker may run with it ignored, which the trainer now leaves be)
    monkeypatch.setattr(signals, "getsignal", lambda signum: signals.default_int_handler)
    with pytest.raises(Interrupted) as stop:
        train(cfg, out=tmp_path / "run", callbacks=[SignalAtTheLastStep()])
    assert stop.value.finished and stop.value.run == str(tmp_path / "run") and stop.value.signum == signals.SIGINT
    assert [json.loads(line)["epoch"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()] == \
        [1, 2] and json.loads((tmp_path / "run" / checkpoint.RESUME_STATE).read_text())["step"] == 10
    assert checkpoint.load(tmp_path / "run") is not None  # saved whole
    # a run kept in memory only (no folder; scikit-learn's fit) is returned whole, not lost to the stop
    assert len(train(cfg, callbacks=[SignalAtTheLastStep()]).history) == 2
    # a process started with SIGINT ignored (a script's background job) trains on: its trainer leaves it ignored
    monkeypatch.undo()
    previous = signals.signal(signals.SIGINT, signals.SIG_IGN)
    try:
        assert len(train(cfg, out=tmp_path / "ignored", callbacks=[SignalAtTheLastStep()]).history) == 2
    finally:
        signals.signal(signals.SIGINT, previous)
    import vaekit.compare

    def stopped(*args, **kwargs):
        error = Interrupted(signals.SIGINT, 7)
        error.run = "OUT/ae"
        raise error

    monkeypatch.setattr(vaekit.compare.runs, "train", stopped)
    assert main(["compare", "--data", "digits", "--out", str(tmp_path / "c")]) == 130
    assert capsys.readouterr().err == ("vaekit: stopped by SIGINT after step 7: the run in OUT/ae is saved, and the "
                                       "same vaekit compare command with --resume continues the comparison\n")


def test_a_roll_back_lowers_the_rate_by_the_factor_set(tmp_path):
    watch = _Watch()
    cfg = replace(NAN_RUN, train=replace(NAN_RUN.train, nan_lr_factor=0.25))
    train(cfg, out=tmp_path / "run", callbacks=[_Plant("weight", {15}, times=1), watch])
    assert watch.lrs == [1e-3] * 23 + [2.5e-4] * 24  # epoch 2 again from its start, at a quarter of the rate


def test_non_finite_steps_that_are_not_in_a_row_are_skipped_without_a_roll_back(tmp_path):
    watch = _Watch()
    planted = set(range(2, 32, 3))  # 10 non-finite losses (as many as nan_skips), never two in a row
    result = train(NAN_RUN, out=tmp_path / "run", callbacks=[_Plant("loss", planted), watch])
    assert watch.skipped == [step in planted for step in range(1, 37)]
    assert watch.rolled_back_to == [] and watch.lrs == [1e-3] * 36
    assert sum(row.skipped for row in result.history) == 10
