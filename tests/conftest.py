"""Shared fixtures: small, seeded data and models so tests stay fast on 2 CPU cores."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import pytest
import torch

from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig


os.environ.pop("XDG_CACHE_HOME", None)  # vaekit's cache under HOME, which the tests that write it point elsewhere


def pytest_configure(config):
    """Under pytest-xdist (make test runs two processes), each process and what it starts gets its share of the
    cores, so that the two do not fight over them: torch's threads and those of numpy's BLAS, loaded (with torch)
    before this runs, whose waiting threads made some tests up to 5 times slower beside the other process."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        from vaekit.threads import use_threads

        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        use_threads(threads)


class Killed(RuntimeError):
    """What KillAt raises: a run stopped as a kill would stop it, at a chosen point, without saving."""


class KillAt:
    """A training callback that raises Killed after the given epoch ends, or the given step (whichever comes)."""

    def __init__(self, epoch: int | None = None, step: int | None = None) -> None:
        self.epoch, self.step = epoch, step

    def on_epoch_end(self, trainer, result) -> None:
        if result.epoch == self.epoch:
            raise Killed

    def on_step_end(self, trainer, step) -> None:
        if step.step == self.step:
            raise Killed


def fail_import(monkeypatch, prefix: str, error: ImportError) -> None:
    """Make every import of a module whose name starts with `prefix` raise `error`: an optional package missing, or
    installed but failing to import."""
    import builtins

    real = builtins.__import__

    def importing(name, *args, **kwargs):
        if name.startswith(prefix):
            raise error
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", importing)


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """The folder `name`/run made by build(folder) once per test session. Under pytest-xdist, the first process to
    ask builds it in the session's shared temporary folder and the others wait for it, so a session fixture costs
    its training once, not once per process; its users only read it."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        out = tmp_path_factory.mktemp(name) / "run"
        build(out)
        return out
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp().parent / f"once-{name}"  # the session's folder, shared by its processes
    out, done = root / "run", root / "done"
    with FileLock(f"{root}.lock"):
        if not done.is_file():
            shutil.rmtree(root, ignore_errors=True)  # a build that failed part-way in another process
            root.mkdir()
            build(out)
            done.touch()
    return out


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Each test starts seeded, and a test that set --threads (vaekit.threads.use_threads: torch's threads and the
    BLAS and OpenMP pools) leaves the next test the threads it found."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(threads)
        threadpool_limits(limits=threads)


@pytest.fixture
def digits_config() -> RunConfig:
    return RunConfig(
        data=DataConfig(name="digits"),
        model=ModelConfig(latent_dim=8, network="mlp", hidden_dims=(128, 64)),
        train=TrainConfig(epochs=2, batch_size=64, progress=False),
    )


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """A finished 2-epoch run folder on 300 digits (a tiny MLP): tests copy it before changing anything in it."""
    from vaekit.runs import train

    out = tmp_path_factory.mktemp("small") / "run"
    train(RunConfig(data=DataConfig(name="digits", limit=300), model=ModelConfig(latent_dim=2, hidden_dims=(16,)),
                    train=TrainConfig(epochs=2, progress=False)), out=out)
    return out


SHARED_FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"


def shared_faces(name: str) -> Path:
    """The folder holding the real face sets ($VAEKIT_DATA, as the Makefile and CI set it, or ../shared), or skip."""
    from vaekit.data import faces

    folder = faces.SPECS[name].folder
    for root in (os.environ.get("VAEKIT_DATA"), SHARED_FACES):
        if root and (Path(root) / folder / f"{folder}.npz").is_file():
            return Path(root)
    pytest.skip(f"the {name} face set is not on this machine (../shared/data/faces, or $VAEKIT_DATA): its loading "
                "is not tested here")


@pytest.fixture(scope="session")
def smiles_short_run(tmp_path_factory):
    """The faces recipe cut short (2,000 training faces of `smiles`, 4 epochs, no learning-rate warm-up; about
    30 s): a run folder, and the data folder it reads."""
    from vaekit.cli import main

    root = shared_faces("smiles")

    def build(out: Path) -> None:
        with pytest.MonkeyPatch.context() as patch:  # the terms marker in a fresh home, as the face tests expect
            patch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
            assert main(["train", "--recipe", "faces", "--data", "smiles", "--data-dir", str(root), "--limit", "2000",
                         "--epochs", "4", "--set", "train.warmup_steps=0", "--out", str(out), "--no-progress"]) == 0

    return built_once(tmp_path_factory, "smiles", build), root


@pytest.fixture(scope="session")
def shapes_recipe_run(tmp_path_factory):
    """The shipped shapes recipe trained as a user would (`vaekit train --recipe shapes`, default settings; about
    40-75 s): the model and its data set."""
    from vaekit import checkpoint
    from vaekit.cli import main
    from vaekit.data import load_dataset

    def build(out: Path) -> None:
        assert main(["train", "--recipe", "shapes", "--out", str(out), "--no-progress"]) == 0

    out = built_once(tmp_path_factory, "shapes", build)
    return checkpoint.load(out), load_dataset(checkpoint.load_config(out).data)


def identity_written_before(run: Path, family: str, later: dict) -> str:
    """The identity (sha256) a run's resume state carried before its family's settings `later` (name -> the value
    the run has, their default) existed: its settings without them, without the train settings a resume could change
    then (LEGACY_RUNTIME: train.minutes was still part of it), early_stopping, free_bits, data.validation,
    data.header, model.label_names and the edits section. Checks the run has those values."""
    import hashlib
    import json

    from vaekit import checkpoint

    settings = checkpoint.load_config(run).to_dict()
    for name, value in later.items():
        assert settings["model"][family].pop(name) == value, name
    settings.pop("edits")
    for name in (*checkpoint.LEGACY_RUNTIME, "early_stopping"):
        settings["train"].pop(name)
    assert settings["model"].pop("label_names") == [] and settings["data"].pop("header") == "auto"
    assert "untrained_labels" not in settings["model"]  # left out where there are none
    settings["model"].pop("free_bits")
    settings["data"].pop("validation")
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
