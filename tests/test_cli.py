"""The command line end to end on digits, and every user mistake as one line with exit code 2."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vaekit.cli import main

TRAIN = ["train", "--data", "digits", "--epochs", "2", "--latent-dim", "4", "--network", "mlp",
         "--hidden-dims", "64", "--no-progress"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main([*TRAIN, "--out", str(out)]) == 0
    return out


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def test_train_writes_a_run(run_dir, capsys):
    assert (run_dir / "model.safetensors").is_file()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"]["latent_dim"] == 4 and config["data"]["name"] == "digits"


def test_sample_reconstruct_interpolate(run_dir, tmp_path):
    assert main(["sample", str(run_dir), "--n", "16", "--out", str(tmp_path / "s.png")]) == 0
    assert png_size(tmp_path / "s.png")[0] > 100
    assert main(["sample", str(run_dir), "--n", "5", "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (5, 1, 8, 8)
    assert main(["reconstruct", str(run_dir), "--n", "6", "--out", str(tmp_path / "r.png")]) == 0
    width, height = png_size(tmp_path / "r.png")
    assert width > 2.5 * height  # one row of inputs above one row of reconstructions
    assert main(["interpolate", str(run_dir), "--from", "3", "--to", "7", "--steps", "6", "--slerp",
                 "--out", str(tmp_path / "i.npy")]) == 0
    assert np.load(tmp_path / "i.npy").shape == (6, 1, 8, 8)


def test_encode_decode_round_trip(run_dir, tmp_path):
    assert main(["encode", str(run_dir), "--out", str(tmp_path / "z.npy")]) == 0
    codes = np.load(tmp_path / "z.npy")
    assert codes.shape == (360, 4)
    assert main(["encode", str(run_dir), "--sample", "--out", str(tmp_path / "zs.npy")]) == 0
    assert not np.allclose(np.load(tmp_path / "zs.npy"), codes)
    assert main(["decode", str(run_dir), str(tmp_path / "z.npy"), "--out", str(tmp_path / "x.npy")]) == 0
    assert np.load(tmp_path / "x.npy").shape == (360, 1, 8, 8)


def test_config_file_and_flags(tmp_path, capsys):
    (tmp_path / "run.yaml").write_text("model:\n  latent_dim: 5\ntrain:\n  lr: 0.01\n")
    assert main(["train", "--config", str(tmp_path / "run.yaml"), "--lr", "0.002", "--print-config"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["model"]["latent_dim"] == 5 and cfg["train"]["lr"] == 0.002


def test_resume_from_cli(run_dir, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    assert main(["train", "--resume", str(copy), "--epochs", "3"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["epoch"] == 3
    # A time limit given on resuming counts the run's training so far: more than 0.6 ms of it (1e-5 minutes) is
    # spent already, so the run trains no further however many epochs it may have, and keeps the new limit.
    from vaekit import checkpoint

    assert main(["train", "--resume", str(copy), "--epochs", "9", "--minutes", "0.00001"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["epoch"] == 3
    assert checkpoint.load_config(copy).train.minutes == 0.00001


ERRORS = [
    (["sample", "{tmp}/nothing-here", "--out", "{tmp}/a.png"], "not found"),
    (["train", "--data", "mnist-1k", "--out", "{tmp}/r"], "did you mean"),
    (["train", "--data", "digits", "--latent-dim", "0", "--out", "{tmp}/r"], "latent_dim"),
    (["train", "--data", "digits", "--network", "transformer", "--out", "{tmp}/r"], "invalid choice"),
    (["train", "--data", "digits", "--set", "train.epoch=1", "--out", "{tmp}/r"], "did you mean"),
    (["train", "--config", "{tmp}/missing.yaml", "--out", "{tmp}/r"], "config file not found"),
    (["decode", "{run}", "{tmp}/wrong.npy", "--out", "{tmp}/x.png"], "expected (N, 4)"),
    (["interpolate", "{run}", "--from", "0", "--to", "99999", "--out", "{tmp}/i.png"], "out of range"),
    (["sample", "{run}", "--out", "{tmp}/s.gif"], ".png"),
    (["sample", "{corrupt}", "--out", "{tmp}/s.png"], "corrupt"),
    (["train", "--data", "{tmp}/big.npy", "--likelihood", "bernoulli", "--out", "{tmp}/r"], "likelihood gaussian"),
]


@pytest.mark.parametrize("argv,message", ERRORS, ids=[e[1] for e in ERRORS])
def test_user_mistakes_exit_2_with_one_line(argv, message, run_dir, tmp_path, capsys):
    import shutil

    corrupt = tmp_path / "corrupt"
    shutil.copytree(run_dir, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"{" * 100)
    np.save(tmp_path / "wrong.npy", np.zeros((3, 7), np.float32))
    np.save(tmp_path / "big.npy", np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32) * 5)
    argv = [a.format(tmp=tmp_path, run=run_dir, corrupt=corrupt) for a in argv]
    with pytest.raises(SystemExit) if "invalid choice" in message else _no_raise():
        code = main(argv)
        assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err


class _no_raise:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_console_script_exit_code_and_no_traceback(tmp_path):
    vaekit = Path(sys.executable).with_name("vaekit")
    command = [str(vaekit)] if vaekit.exists() else [sys.executable, "-m", "vaekit.cli"]
    done = subprocess.run([*command, "sample", str(tmp_path / "none"), "--out", str(tmp_path / "a.png")],
                          capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "a.png").exists()


def test_resume_refuses_flags_that_would_change_the_run(run_dir, capsys):
    assert main(["train", "--resume", str(run_dir), "--lr", "5"]) == 2
    err = capsys.readouterr().err
    assert "--lr" in err and len(err.strip().splitlines()) == 1


def test_the_command_line_flushes_denormal_numbers_for_the_whole_process():
    # torch's worker threads take the mode at their start: Adam's moments of dead units decaying into denormals
    # slowed a long run from 2.0 to 3.5 s per epoch before the command line set it first
    import subprocess
    import sys

    code = ("import torch; from vaekit.cli import main; main(['data', 'list']); "
            "print(float(torch.tensor([1e-39]) * 1.0))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1] == "0.0", out.stderr
