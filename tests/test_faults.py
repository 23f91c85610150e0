"""Faults provoked for real: a process killed just before and just after each file a run writes replaces, and a
filesystem that fills up. After each, the run continues to exactly the weights of a run never stopped."""
from __future__ import annotations

import errno
import json
import multiprocessing
import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch

import _fault_child
from vaekit import checkpoint
from vaekit.cli import main
from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaekit.errors import VaekitError
from vaekit.runs import resume, train

# 640 digits in batches of 128: 5 steps an epoch; step checkpoints every 3 steps, so at steps 3, 5 (epoch end), 6,
# 9 and 10 (the end). One thread: the killed child and the resuming parent compute alike, bit for bit.
ARGS = ["train", "--data", "digits", "--limit", "640", "--batch-size", "128", "--epochs", "2", "--latent-dim", "2",
        "--hidden-dims", "16", "--checkpoint-steps", "3", "--threads", "1", "--no-progress"]
# The run replaces 23 files: config.json and the start marker, then model, config, resume tensors and resume.json
# at each of the 5 checkpoints, and metrics.jsonl at the first epoch end (later epochs append to it).
REPLACES = 23


@pytest.fixture(autouse=True)
def _threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # the runs here set one thread for the whole process


# A fork server that imported torch and vaekit (fast children) but never ran a thread pool (safe ones); it starts
# with the first child. The preload is found on the tests folder's path, which the server gets.
FORK_SERVER = multiprocessing.get_context("forkserver")
FORK_SERVER.set_forkserver_preload(["_fault_child"])


def _run_child(folder: Path, kill_at: int | None, when: str, log: Path | None = None,
               argv: list[str] | None = None) -> int:
    """vaekit train in a child process whose os.replace SIGKILLs it just before or just after its kill_at-th call
    (tests/_fault_child.py). Returns its exit code: negative for the signal that ended it. `log` gets the names
    replaced, in order."""
    child = FORK_SERVER.Process(target=_fault_child.run, args=(
        argv or [*ARGS, "--out", str(folder)], kill_at, when, None if log is None else str(log)))
    # The first start starts the fork server. It finds its preload only on its own path (Python 3.11 passes it the
    # tests' sys.path but does not use it), and without it every child imported torch, vaekit and scikit-learn anew:
    # 7 s a child, of the suite's minutes, against under 1 s.
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(_fault_child.__file__).parent), previous]))
    try:
        child.start()
    finally:
        if previous is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = previous
    child.join(timeout=300)  # a child that never ends fails the test instead of hanging the suite
    if child.exitcode is None:
        child.kill()
        child.join()
        raise AssertionError(f"the vaekit train child (kill_at={kill_at}, {when or 'no kill'}) ran past 300 s: killed")
    return child.exitcode


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The uninterrupted run: its weights and the files it replaced, in order."""
    folder = tmp_path_factory.mktemp("whole") / "run"
    log = folder.parent / "replaced.txt"
    status = _run_child(folder, None, "", log)
    assert status == 0, status
    replaced = log.read_text().split("\n")
    assert len(replaced) == REPLACES, replaced  # a change in what a run writes: update REPLACES
    return checkpoint.read_tensors(folder / checkpoint.MODEL_FILE), replaced, folder


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("at", range(1, REPLACES + 1))
def test_a_kill_before_or_after_any_write_loses_nothing(at, when, whole, tmp_path):
    weights, replaced, _ = whole
    folder = tmp_path / "run"
    status = _run_child(folder, at, when)
    assert status == -signal.SIGKILL, f"not killed at {replaced[at - 1]} (exit {status})"
    if when == "before":  # the kill left the write's temporary behind (resume tensors: another random token)
        name = replaced[at - 1]
        stem = name.rsplit("-", 1)[0] + "-" if name.startswith("resume-") else name + "."
        assert any(p.name.startswith(f".{stem}") for p in folder.iterdir())
    if (folder / checkpoint.CONFIG_FILE).exists():
        result = resume(folder)  # what the user is told to do
    else:  # killed before the run wrote anything: the same command again
        assert main([*ARGS, "--out", str(folder)]) == 0
        result = None
    assert not [p for p in folder.iterdir() if p.name.startswith(".") and p.name != ".lock"]  # no temporaries
    finished = checkpoint.read_tensors(folder / checkpoint.MODEL_FILE)
    assert finished.keys() == weights.keys()
    assert all(torch.equal(finished[k], weights[k]) for k in weights), f"differs after a kill at {replaced[at - 1]}"
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    if result is not None:
        assert [r.epoch for r in result.history] == [1, 2]


# ---- a filesystem that fills up ---------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A real 4 MiB tmpfs (needs root, or CAP_SYS_ADMIN; skipped elsewhere: the simulated ENOSPC tests in
    test_reliability.py still run)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip() or 'mount failed'})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


RUN = RunConfig(data=DataConfig(name="digits", limit=640), model=ModelConfig(latent_dim=2, hidden_dims=(16,)),
                train=TrainConfig(epochs=3, batch_size=128, threads=1, progress=False))


def _fill(folder: Path) -> Path:
    """Write zeros until the filesystem is full (unbuffered: nothing is left to fail at close)."""
    filler = folder.parent / "filler"
    handle = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (1 << 16, 1 << 10, 1):
            try:
                while True:
                    os.write(handle, bytes(size))
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(handle)
    return filler


def test_a_full_filesystem_keeps_the_last_checkpoint_and_the_run_continues(small_disk, tmp_path, capsys):
    whole = train(RUN, out=tmp_path / "whole")
    folder = small_disk / "run"
    kept = {}

    class FillAfterEpoch1:
        def on_epoch_end(self, trainer, result):
            if result.epoch == 1:  # after vaekit's own checkpoint of epoch 1
                kept.update({p.name: p.read_bytes() for p in folder.iterdir() if p.name != ".lock"})
                kept["filler"] = _fill(folder)

    with pytest.raises(VaekitError, match=r"cannot write .* \(No space left on device\): free some disk space"):
        train(RUN, out=folder, callbacks=[FillAfterEpoch1()])
    filler = kept.pop("filler")
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name != ".lock"} == kept  # epoch 1, whole
    filler.unlink()
    resumed = resume(folder)
    assert [r.epoch for r in resumed.history] == [1, 2, 3]
    assert all(torch.equal(a, b) for a, b in zip(resumed.model.state_dict().values(),
                                                   whole.model.state_dict().values()))


def test_too_little_space_for_a_checkpoint_is_said_before_training(small_disk, capsys):
    """A 0.68 MB model: its first checkpoint (4x) would fit the 4 MiB disk, its second (7x at the peak) would not."""
    assert main(["train", "--data", "digits", "--hidden-dims", "256,256", "--epochs", "2", "--out",
                 str(small_disk / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "MiB free, but checkpoints of this model need about" in err, err
    assert not (small_disk / "run").exists()  # the folder made for the run goes again (it kept an empty run's lock)
    (small_disk / "mine").mkdir()
    (small_disk / "mine" / "notes.txt").write_text("the user's")
    assert main(["train", "--data", "digits", "--hidden-dims", "256,256", "--epochs", "2", "--out",
                 str(small_disk / "mine"), "--no-progress"]) == 2
    assert (small_disk / "mine" / "notes.txt").read_text() == "the user's"  # a folder the run did not make stays


def test_tensorboard_on_a_full_disk_is_one_line(small_disk, capfd):
    """TensorBoard's writer thread meets the full disk: no thread traceback, one error naming --resume (it was two
    tracebacks and exit 1)."""
    from types import SimpleNamespace

    pytest.importorskip("tensorboard")
    from vaekit.integrations.tensorboard import TensorBoardLog

    folder = small_disk / "run"
    folder.mkdir()
    log = TensorBoardLog(folder / "tensorboard")
    trainer = SimpleNamespace(step=0, read_every_step=True)
    log.on_fit_begin(trainer)
    _fill(folder)
    result = SimpleNamespace(train={"loss": 1.0}, val={"loss": 2.0}, step=10, images_per_s=1e3, skipped=0, epoch=1)
    with pytest.raises(VaekitError, match=r"cannot write TensorBoard events in .*\(No space left on device\): free "
                                          r"some space, then continue from the last checkpoint \(vaekit train --resume"):
        for _ in range(200):  # until the writer thread has met the full disk and the training thread hears of it
            log.on_epoch_end(trainer, result)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception in thread" not in err, err


def test_a_new_run_on_a_full_disk_is_said_in_one_line(small_disk, capsys):
    """The folder can be made and an empty probe file too, but not the lock's pid: the space check says what is
    wrong (the pid's write was a traceback)."""
    (small_disk / "run").mkdir()
    _fill(small_disk / "run")
    assert main(["train", "--data", "digits", "--limit", "300", "--hidden-dims", "16", "--epochs", "1", "--out",
                 str(small_disk / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "MiB free, but checkpoints of this model need about" in err, err


# ---- kills of a resumed run: `vaekit train --resume RUN --epochs 3` on the finished 2-epoch run --------------
# It rewrites metrics.jsonl, then checkpoints at steps 12 and 15 (a step checkpoint, then the epoch's) and rewrites
# metrics.jsonl at its first epoch end. A kill anywhere must not lose the two epochs already trained: the same
# command again continues them (not from the start) to the weights of the run never stopped.
RESUMED_REPLACES = 14


def _resume_args(folder: Path) -> list[str]:
    return ["train", "--resume", str(folder), "--epochs", "3", "--no-progress"]


@pytest.fixture(scope="module")
def resumed_whole(whole, tmp_path_factory):
    import shutil

    folder = tmp_path_factory.mktemp("resumed") / "run"
    shutil.copytree(whole[2], folder)
    log = folder.parent / "replaced.txt"
    status = _run_child(folder, None, "", log, _resume_args(folder))
    assert status == 0, status
    replaced = log.read_text().split("\n")
    assert len(replaced) == RESUMED_REPLACES, replaced  # a change in what a resume writes: update RESUMED_REPLACES
    return checkpoint.read_tensors(folder / checkpoint.MODEL_FILE), replaced


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("at", range(1, RESUMED_REPLACES + 1))
def test_a_kill_of_a_resumed_run_keeps_the_epochs_it_had(at, when, whole, resumed_whole, tmp_path, caplog):
    import logging
    import shutil

    weights, replaced = resumed_whole
    folder = tmp_path / "run"
    shutil.copytree(whole[2], folder)
    trained = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    status = _run_child(folder, at, when, argv=_resume_args(folder))
    assert status == -signal.SIGKILL, f"not killed at {replaced[at - 1]} (exit {status})"
    with caplog.at_level(logging.WARNING):
        result = resume(folder, epochs=3)  # the same command again
    assert "from the start" not in caplog.text
    assert [r.epoch for r in result.history] == [1, 2, 3]
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert rows[:2] == trained  # epochs 1 and 2 as they were trained (their timings too): not trained again
    finished = checkpoint.read_tensors(folder / checkpoint.MODEL_FILE)
    assert all(torch.equal(finished[k], weights[k]) for k in weights), f"differs after a kill at {replaced[at - 1]}"
    assert not [p for p in folder.iterdir() if p.name.startswith(".") and p.name != ".lock"]
