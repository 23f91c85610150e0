"""The command line end to end on digits, and every user mistake as one line with exit code 2."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
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


def test_reconstruct_wraps_many_items_into_paired_rows(run_dir, tmp_path, caplog):
    """20 items: two pairs of rows, 16 wide, each row of inputs above its reconstructions, the short row's rest
    white; more than the split holds is all of it, with a note (it used to be one row of 360 images, unsaid)."""
    from vaekit.config import DataConfig
    from vaekit.data import load_dataset
    from vaekit.viz import to_uint8_images

    assert main(["reconstruct", str(run_dir), "--n", "20", "--out", str(tmp_path / "r.png")]) == 0
    assert main(["reconstruct", str(run_dir), "--n", "20", "--out", str(tmp_path / "r.npy")]) == 0
    x = load_dataset(DataConfig(name="digits")).split("test").x[:20]
    tiles = np.concatenate([to_uint8_images(x), to_uint8_images(np.load(tmp_path / "r.npy"))])[..., 0]
    with Image.open(tmp_path / "r.png") as image:
        canvas = np.asarray(image)
    zoom, cell = 7, 8 + 2  # digits are 8x8, enlarged to at least 56 pixels; 2 pixels between tiles
    assert canvas.shape == ((4 * cell + 2) * zoom, (16 * cell + 2) * zoom)

    def tile(row: int, col: int) -> np.ndarray:
        top, left = (2 + row * cell) * zoom, (2 + col * cell) * zoom
        return canvas[top:top + 8 * zoom:zoom, left:left + 8 * zoom:zoom]

    assert np.array_equal(tile(0, 3), tiles[3]) and np.array_equal(tile(1, 3), tiles[20 + 3])
    assert np.array_equal(tile(2, 2), tiles[18]) and np.array_equal(tile(3, 2), tiles[20 + 18])
    assert (tile(2, 4) == 255).all() and (tile(3, 15) == 255).all()
    caplog.clear()
    assert main(["reconstruct", str(run_dir), "--n", "1000", "--out", str(tmp_path / "all.npy")]) == 0
    assert np.load(tmp_path / "all.npy").shape == (360, 1, 8, 8)
    assert "the test split has 360 items: reconstructing all of them" in caplog.text


def test_decode_takes_a_plain_list_of_numbers_for_a_one_number_code(tmp_path, capsys):
    out = tmp_path / "one"
    assert main([*TRAIN, "--latent-dim", "1", "--out", str(out)]) == 0
    np.save(tmp_path / "z.npy", np.linspace(-2, 2, 5).astype(np.float32))  # shape (5,): five codes
    assert main(["decode", str(out), str(tmp_path / "z.npy"), "--out", str(tmp_path / "x.npy")]) == 0
    assert np.load(tmp_path / "x.npy").shape == (5, 1, 8, 8)
    np.save(tmp_path / "bad.npy", np.zeros((5, 2), np.float32))
    assert main(["decode", str(out), str(tmp_path / "bad.npy"), "--out", str(tmp_path / "y.npy")]) == 2
    assert "has shape (5, 2), but this model's codes have shape (1): give an array of shape (N, 1)" in \
        capsys.readouterr().err


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
    (["decode", "{run}", "{tmp}/wrong.npy", "--out", "{tmp}/x.png"], "give an array of shape (N, 4)"),
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
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    for flag, says in (("--print-config", "--print-config prints a new run's settings"),
                       ("--overwrite", "--overwrite starts a run afresh and --resume continues it")):
        # neither trains nor prints: both were ignored, the run trained on
        assert main(["train", "--resume", str(run_dir), "--epochs", "9", flag]) == 2
        captured = capsys.readouterr()
        assert says in captured.err and captured.out == ""
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before


def test_the_command_line_flushes_denormal_numbers_for_the_whole_process():
    # torch's worker threads take the mode at their start: Adam's moments of dead units decaying into denormals
    # slowed a long run from 2.0 to 3.5 s per epoch before the command line set it first
    import subprocess
    import sys

    code = ("import torch; from vaekit.cli import main; main(['data', 'list']); "
            "print(float(torch.tensor([1e-39]) * 1.0))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1] == "0.0", out.stderr


def test_demo_draws_its_pictures_and_replaces_only_its_own_runs(tmp_path, capsys):
    def demo(out, *more):
        return main(["demo", "--data", "digits", "--epochs", "1", "--latent-dim", "2", "--out", str(out),
                     "--no-progress", *more])

    out = tmp_path / "demo"
    assert demo(out) == 0
    assert {"reconstructions.png", "prior_samples.png", "interpolation.png", "vae", "ae", "demo.json"} <= \
        {p.name for p in out.iterdir()}
    assert json.loads((out / "demo.json").read_text())["finished"] is True
    width, height = Image.open(out / "interpolation.png").size  # two 10-item strips, stacked: no empty band
    assert height < 0.45 * width
    assert demo(out) == 0  # its own folder: run again
    # a folder holding runs of the user's own: refused, untouched, unless --overwrite
    mine = tmp_path / "mine"
    assert main(["train", "--data", "digits", "--epochs", "1", "--out", str(mine / "vae"), "--no-progress"]) == 0
    before = {p.name: p.read_bytes() for p in (mine / "vae").iterdir() if p.is_file()}
    capsys.readouterr()
    assert demo(mine) == 2
    assert "vae exists and no earlier demo wrote it: choose another --out, or pass --overwrite" in \
        capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (mine / "vae").iterdir() if p.is_file()} == before
    assert demo(mine, "--overwrite") == 0
    for bad, says in ((["--epochs", "0"], "--epochs must be at least 1"),
                      (["--data", str(tmp_path / "v.npy")], "is not images: give an image data set")):
        np.save(tmp_path / "v.npy", np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32))
        assert demo(tmp_path / "other", *bad) == 2 and says in capsys.readouterr().err


def test_outputs_are_written_whole_or_not_at_all_and_never_over_a_runs_files(small_run, tmp_path, capsys,
                                                                           monkeypatch):
    import errno

    out = tmp_path / "s.png"
    assert main(["sample", str(small_run), "--n", "4", "--out", str(out)]) == 0
    before = out.read_bytes()

    def full_disk(self, target, *args, **kwargs):  # half a picture, then the disk is full
        Path(target).write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patch:
        patch.setattr(Image.Image, "save", full_disk)
        capsys.readouterr()
        assert main(["sample", str(small_run), "--n", "4", "--seed", "3", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {out} (No space left on device)" in err and err.count("\n") == 1
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["s.png"]  # no temporary
    cases = [  # an output onto a run's own file, or a folder; a new folder is made
        (["evaluate", str(small_run), "--iw-samples", "0", "--out", str(small_run / "config.json")],
         "config.json is a file of the run in"),
        (["evaluate", str(small_run), "--iw-samples", "0", "--per-item", str(small_run / "metrics.jsonl")],
         "metrics.jsonl is a file of the run in"),
        (["sample", str(small_run), "--out", str(tmp_path / "dir.png")], "dir.png: it is a folder; give a file name"),
    ]
    (tmp_path / "dir.png").mkdir()
    run_files = {p.name: p.read_bytes() for p in small_run.iterdir() if p.is_file()}
    for args, says in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1, (args, err)
    assert {p.name: p.read_bytes() for p in small_run.iterdir() if p.is_file()} == run_files
    assert main(["encode", str(small_run), "--out", str(tmp_path / "new" / "codes.npy")]) == 0
    assert np.load(tmp_path / "new" / "codes.npy").shape[1] == 2
    # an upper-case suffix (numpy adds ".npy" to any other name), and a link: its target written, the link kept
    from vaekit.files import atomic_write

    atomic_write(tmp_path / "CODES.NPY", lambda tmp: np.save(tmp, np.ones((3, 2))))  # a table model's rows take it
    assert np.load(tmp_path / "CODES.NPY").shape == (3, 2)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    (tmp_path / "real").mkdir()
    (tmp_path / "link.png").symlink_to(tmp_path / "real" / "s.png")
    assert main(["sample", str(small_run), "--n", "4", "--out", str(tmp_path / "link.png")]) == 0
    assert (tmp_path / "link.png").is_symlink() and Image.open(tmp_path / "real" / "s.png").format == "PNG"
    # the check comes before the work: nothing is encoded for an --out that is a folder
    import vaekit.latent

    def never(*args, **kwargs):
        raise AssertionError("encoded before the --out was checked")

    monkeypatch.setattr(vaekit.latent, "encode_dataset", never)
    assert main(["encode", str(small_run), "--out", str(tmp_path / "dir.png")]) == 2
    assert "it is a folder" in capsys.readouterr().err


def test_no_output_replaces_a_file_the_command_reads_or_the_data_a_run_trained_on(tmp_path, capsys, monkeypatch):
    """--out (or --per-item) onto the codes being decoded, the --data file read, the --compare-to file, or the data
    file the run trained on (which `sample` does not read): one line, exit 2, the file as it was; data.json too."""
    monkeypatch.chdir(tmp_path)
    rows = np.random.default_rng(0).normal(size=(120, 3))
    Path("table.csv").write_text("a,b,c\n" + "".join(f"{a:.4f},{b:.4f},{c:.4f}\n" for a, b, c in rows))
    assert main(["train", "--data", "table.csv", "--latent-dim", "2", "--hidden-dims", "8", "--epochs", "1",
                 "--no-progress", "--out", "run"]) == 0
    Path("other.csv").write_bytes(Path("table.csv").read_bytes()[:600])
    assert main(["encode", "run", "--out", "codes.npy"]) == 0
    assert main(["evaluate", "run", "--iw-samples", "2", "--per-item", "items.csv"]) == 0
    kept = {name: Path(name).read_bytes() for name in ("table.csv", "other.csv", "codes.npy", "items.csv",
                                                        "run/data.json")}
    cases = [
        (["sample", "run", "--n", "3", "--out", "table.csv"], "table.csv is the data the run in run trained on"),
        (["sample", "run", "--n", "3", "--out", str(tmp_path / "table.csv")], "the data the run in run trained on"),
        (["decode", "run", "codes.npy", "--out", "codes.npy"], "codes.npy is an input of this command"),
        (["reconstruct", "run", "--data", "other.csv", "--out", "./other.csv"], "other.csv is an input of this command"),
        (["evaluate", "run", "--iw-samples", "2", "--compare-to", "items.csv", "--per-item", "items.csv"],
         "items.csv is an input"),
        (["evaluate", "run", "--iw-samples", "2", "--out", "run/data.json"], "data.json is a file of the run in run"),
    ]
    for args, says in cases:
        capsys.readouterr()
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert says in err and "write to another name" in err and err.count("\n") == 1, (args, err)
    assert {name: Path(name).read_bytes() for name in kept} == kept
    assert main(["sample", "run", "--n", "3", "--out", "samples.csv"]) == 0  # any other name is written
    # from another folder: the run's data is where it was when the run trained (data.json), not a file of that name
    # here; ~ is expanded as the loaders expand it
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    monkeypatch.setenv("HOME", str(tmp_path))
    for args, says in ((["sample", "../run", "--n", "3", "--out", "../table.csv"], "the data the run in ../run"),
                       (["reconstruct", "../run", "--data", "~/other.csv", "--out", str(tmp_path / "other.csv")],
                        "is an input of this command")):
        capsys.readouterr()
        assert main(args) == 2, args
        assert says in capsys.readouterr().err
    Path("table.csv").write_text("not the run's data\n")
    assert main(["sample", "../run", "--n", "3", "--out", "table.csv"]) == 0  # another file of that name: written
    assert Path("table.csv").read_text().startswith("a,b,c\n")
    assert {name: (tmp_path / name).read_bytes() for name in kept} == kept
    # an image folder the run trained on takes no output into it (it would be one more training picture)
    from PIL import Image

    (tmp_path / "pictures").mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):
        Image.fromarray((rng.random((8, 8)) * 255).astype(np.uint8)).save(tmp_path / "pictures" / f"{i:02d}.png")
    assert main(["train", "--data", str(tmp_path / "pictures"), "--latent-dim", "2", "--hidden-dims", "8", "--epochs",
                 "1", "--no-progress", "--out", str(tmp_path / "picture-run")]) == 0
    capsys.readouterr()
    assert main(["sample", str(tmp_path / "picture-run"), "--n", "2", "--out", str(tmp_path / "pictures" / "new.png")]) \
        == 2
    assert "is inside" in capsys.readouterr().err and len(list((tmp_path / "pictures").iterdir())) == 24
    # nor any folder written into it (export's, compare's, said before the training), by --data or the run's
    for args in (["export", str(tmp_path / "picture-run"), "--hub", str(tmp_path / "pictures" / "hub")],
                 ["compare", "--data", str(tmp_path / "pictures"), "--latent-dim", "2", "--hidden-dims", "8",
                  "--epochs", "1", "--no-progress", "--out", str(tmp_path / "pictures" / "report")]):
        assert main(args) == 2, args
        assert "is inside" in capsys.readouterr().err and len(list((tmp_path / "pictures").iterdir())) == 24
    # a project folder moved, the run with it: its data file is protected by the name its config gives it
    project = tmp_path / "project"
    project.mkdir()
    (project / "t.csv").write_bytes((tmp_path / "table.csv").read_bytes())
    monkeypatch.chdir(project)
    assert main(["train", "--data", "t.csv", "--latent-dim", "2", "--hidden-dims", "8", "--epochs", "1",
                 "--no-progress", "--out", "run"]) == 0
    project.rename(tmp_path / "moved")
    monkeypatch.chdir(tmp_path / "moved")
    capsys.readouterr()
    assert main(["reconstruct", "run", "--out", "t.csv"]) == 2
    assert "t.csv is the data the run in run trained on" in capsys.readouterr().err
    # resumed on data moved elsewhere: that file is then the one kept
    Path("t.csv").rename(tmp_path / "elsewhere" / "t2.csv")
    assert main(["train", "--resume", "run", "--data", str(tmp_path / "elsewhere" / "t2.csv"), "--epochs", "2",
                 "--no-progress"]) == 0
    assert main(["sample", "run", "--n", "2", "--out", str(tmp_path / "elsewhere" / "t2.csv")]) == 2


def test_a_registered_data_sets_name_is_not_a_folder_of_that_name_here(small_run, tmp_path, monkeypatch):
    """--data digits reads vaekit's digits, not a folder `digits` here, which an output may go into."""
    monkeypatch.chdir(tmp_path)
    Path("digits").mkdir()
    assert main(["evaluate", str(small_run), "--data", "digits", "--iw-samples", "0", "--no-progress", "--out",
                 "digits/m.json"]) == 0
    assert (tmp_path / "digits" / "m.json").is_file()


def test_sampling_an_ae_from_its_nominal_prior_says_where_its_codes_are(small_run, tmp_path, caplog):
    """An AE's codes were never trained towards N(0, I): `sample` says so and names --sampler mixture (the explorer
    and compare say it too); a VAE's draws get no note."""
    ae = tmp_path / "ae"
    assert main(["train", "--data", "digits", "--model", "ae", "--latent-dim", "2", "--hidden-dims", "8",
                 "--epochs", "1", "--no-progress", "--out", str(ae)]) == 0
    caplog.set_level("INFO")
    for run, noted in ((ae, True), (small_run, False)):
        caplog.clear()
        assert main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "s.png")]) == 0
        assert ("never trained towards its prior" in caplog.text and "--sampler mixture" in caplog.text) is noted
    caplog.clear()
    assert main(["sample", str(ae), "--n", "4", "--sampler", "mixture", "--fit-items", "50", "--components", "2",
                 "--out", str(tmp_path / "s.png")]) == 0
    assert "never trained towards" not in caplog.text


def test_an_upper_case_suffix_chooses_the_format_as_a_lower_case_one(small_run, tmp_path):
    """D.NPY is an array as d.npy is (it was refused, while D.PNG was a picture), for every command writing one."""
    for args, shape in ((["sample", "--n", "3"], (3, 1, 8, 8)), (["traverse", "--dims", "0", "--steps", "4"],
                                                                  (1, 4, 1, 8, 8)),
                        (["arithmetic", "--a", "0", "--b", "1", "--c", "2"], (1, 1, 8, 8)),
                        (["neighbours", "--item", "0", "--k", "2"], (2, 1, 8, 8)),
                        (["reconstruct", "--n", "2"], (2, 1, 8, 8))):
        out = tmp_path / f"{args[0]}.NPY"
        assert main([args[0], str(small_run), *args[1:], "--out", str(out)]) == 0, args
        assert np.load(out).shape == shape, args


def test_evaluate_n_beyond_the_split_says_it_evaluates_all(small_run, caplog, capsys):
    caplog.set_level("INFO")
    assert main(["evaluate", str(small_run), "--n", "100000", "--iw-samples", "0", "--no-progress"]) == 0
    items = json.loads(capsys.readouterr().out)["n_examples"]
    assert f"note: the test split has {items} items: evaluating all of them" in caplog.text


def test_sizes_threads_devices_and_data_flags_are_checked_for_commands_on_a_run(small_run, tmp_path, capsys):
    import torch

    np.save(tmp_path / "big.npy", np.zeros((5_000_000, 2), np.float32))
    np.save(tmp_path / "huge.npy", np.full((2, 2), 1e300))
    out = str(tmp_path / "o.png")
    cases = [
        (["interpolate", str(small_run), "--steps", "100000000", "--out", out], "--steps 100,000,000 asks for"),
        (["vary", str(small_run), "--n", "100000000", "--out", out], "--n 100,000,000 asks for"),
        (["traverse", str(small_run), "--steps", "100000000", "--out", out], "more than fit in 1 GiB"),
        (["decode", str(small_run), str(tmp_path / "big.npy"), "--out", out], "(its codes) 5,000,000 asks for"),
        (["decode", str(small_run), str(tmp_path / "huge.npy"), "--out", out], "not finite or beyond +-1e+06"),
        (["traverse", str(small_run), "--range=-1e300,1e300", "--out", out], "--range must be numbers within +-1e+06"),
        (["attribute", str(small_run), "--attr", "3", "--strengths", "1e300", "--out", out],
         "--strengths must be numbers within"),
        (["attribute", str(small_run), "--attr", "3", "--apply-to", ",".join(["0"] * 20000),
          "--strengths=" + ",".join(["1"] * 300), "--out", out], "--apply-to 20,000 asks for"),
        (["evaluate", str(small_run), "--threads", "100000"], "--threads must be between 1 and 1024"),
        (["attribute", str(small_run), "--attr", "3", "--threads", "0", "--out", out],
         "--threads must be between 1 and 1024, got 0"),
        (["train", "--data", "digits", "--threads", "100000", "--out", str(tmp_path / "t")],
         "train.threads=100000: must be between 1 and 1024"),
        (["encode", str(small_run), "--test-fraction", "5", "--out", str(tmp_path / "z.npy")],
         "data.test_fraction=5.0: must be between 0 and 1"),
        (["encode", str(small_run), "--limit", "0", "--out", str(tmp_path / "z.npy")], "data.limit=0: must be at least 1"),
        (["train", "--data", "shapes", "--image-size", "100000", "--out", str(tmp_path / "t")],
         "shapes of 100000x100000 needs"),
    ]
    if not torch.cuda.is_available():
        cases.append((["evaluate", str(small_run), "--device", "cuda"], "--device cuda, but torch sees no CUDA GPU"))
    for args, says in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1, (args, err)
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "t").exists() and not (tmp_path / "z.npy").exists()
    (tmp_path / "deep.yaml").write_text("a: " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert main(["train", "--config", str(tmp_path / "deep.yaml"), "--out", str(tmp_path / "t")]) == 2
    assert "nests too deeply to read" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["traverse"], ["attribute", "--attr", "3"], ["latent-map"], ["sample"],
                                     ["interpolate", "--from", "0", "--to", "1"], ["reconstruct"]])
def test_the_latent_commands_take_threads(command, small_run, tmp_path):
    """For torch and for the thread pools of numpy's BLAS and the OpenMP libraries loaded (scikit-learn's fits, which
    took one thread per core under --threads 1)."""
    import torch
    from threadpoolctl import threadpool_info

    before = torch.get_num_threads()
    wanted = 1 if before > 1 else 2  # a value different from the current one, so the flag must take effect
    try:
        assert main([command[0], str(small_run), *command[1:], "--threads", str(wanted),
                     "--out", str(tmp_path / "o.png")]) == 0
        assert torch.get_num_threads() == wanted
        pools = threadpool_info()
        assert any(pool["user_api"] == "blas" for pool in pools)  # numpy's
        assert {pool["num_threads"] for pool in pools} == {wanted}, pools
    finally:
        torch.set_num_threads(before)
    assert (tmp_path / "o.png").is_file()


def test_a_run_refuses_a_data_file_that_is_not_the_one_it_trained_on(tmp_path, monkeypatch, capsys):
    from conftest import Killed, KillAt

    import vaekit
    from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    images = np.random.default_rng(0).integers(0, 256, (300, 16, 16), dtype=np.uint8)
    np.save(tmp_path / "u8.npy", images)
    monkeypatch.chdir(tmp_path)
    tiny = ["--latent-dim", "2", "--hidden-dims", "16", "--epochs", "1", "--no-progress"]
    assert main(["train", "--data", "u8.npy", *tiny, "--out", "run"]) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["name"] == "u8.npy"  # as given
    assert main(["encode", "run", "--out", "here.npy"]) == 0
    # the run's own file spelled another way is the run's own data: checked, and split as the run split it
    assert main(["encode", "run", "--data", "./u8.npy", "--out", "spelled.npy"]) == 0
    np.testing.assert_array_equal(np.load("here.npy"), np.load("spelled.npy"))
    (tmp_path / "sub").mkdir()  # and from another folder, named from there
    monkeypatch.chdir(tmp_path / "sub")
    assert main(["encode", "../run", "--data", "../u8.npy", "--out", "../from-sub.npy"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "here.npy"), np.load(tmp_path / "from-sub.npy"))
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    # from another folder, which holds another file of the same name: refused, not read as the run's
    (tmp_path / "elsewhere").mkdir()
    np.save(tmp_path / "elsewhere" / "u8.npy", np.zeros_like(images))
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["encode", str(tmp_path / "run"), "--out", "there.npy"]) == 2
    assert "u8.npy is not the data the run in" in capsys.readouterr().err and not Path("there.npy").exists()
    monkeypatch.chdir(tmp_path)
    # the file changed: one item more redraws the split, so the run's own data is refused, with the fix
    np.save(tmp_path / "u8.npy", np.concatenate([images, images[:1]]))
    says = "u8.npy is not the data the run in run was trained on (it had 270 training and 30 test items then, 271 " \
           "and 30 now, so its split is not the run's): restore the file the run trained on"
    assert main(["train", "--resume", "run", "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert says in err and "or train a new run on this one" in err and err.count("\n") == 1, err
    assert main(["encode", "run", "--out", "z.npy"]) == 2
    assert f"{says}, give --data FILE to work on other data, or train" in capsys.readouterr().err
    assert main(["encode", "run", "--data", "./u8.npy", "--out", "z.npy"]) == 0  # named: new data
    assert np.load("z.npy").shape == (30, 2)
    np.save(tmp_path / "u8.npy", images[::-1])  # as many items, other values
    assert main(["evaluate", "run", "--iw-samples", "2"]) == 2
    assert "(its values changed, so its split is not the run's)" in capsys.readouterr().err
    # an --overwrite on other data keeps the old run's data.json until the new run's first checkpoint
    np.save(tmp_path / "u8.npy", images)
    before = (tmp_path / "run" / "data.json").read_text()
    np.save(tmp_path / "v8.npy", images[:200])
    cfg = RunConfig(data=DataConfig(name=str(tmp_path / "v8.npy")), model=ModelConfig(latent_dim=2, hidden_dims=(16,)),
                    train=TrainConfig(epochs=3, checkpoint_every=2, progress=False))
    with pytest.raises(Killed):
        vaekit.train(cfg, out=tmp_path / "run", overwrite=True, callbacks=[KillAt(epoch=1)])
    assert (tmp_path / "run" / "data.json").read_text() == before
    assert main(["encode", str(tmp_path / "run"), "--out", "z.npy"]) == 0  # the old run, whole
    vaekit.train(cfg, out=tmp_path / "run", overwrite=True)
    assert json.loads((tmp_path / "run" / "data.json").read_text())["train_items"] == 180


def _one_line_errors(cases: list, capsys) -> None:
    """Each (argv, says): exit code 2 and one line on stderr that holds `says` (argparse's usage errors too)."""
    for argv, says in cases:
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
        err = capsys.readouterr().err
        assert code == 2 and says in err and err.count("\n") == 1, (argv, err)


def test_usage_mistakes_name_the_commands_help_and_paths_name_the_run_folder(small_run, tmp_path, capsys):
    cases = [
        (["interpolate", str(small_run), "--from", "0", "--to", "1", "--bogus", "3", "--out", "x.png"],
         "vaekit interpolate: error: unrecognized arguments: --bogus 3 (see 'vaekit interpolate --help')"),
        (["data", "get", "mnist", "extra"], "vaekit data get: error: unrecognized arguments: extra (see 'vaekit data "
                                            "get --help')"),
        (["sample", str(small_run / "config.json"), "--out", "x.png"],
         f"{small_run / 'config.json'} is a file, not a run folder: give the run's folder ({small_run})"),
        (["vary", str(small_run), "--item", "-5000", "--out", "x.png"],
         "item index -5000 is out of range: the split has 360 items (0..359, or -360..-1 counting from the end)"),
        (["encode", str(small_run), "--data", "mnist-10k", "--limit", "10", "--out", str(tmp_path / "z.npy")],
         "expects (1, 8, 8): give data of that shape, or leave out the data flags for the run's own"),
        (["encode", str(small_run), "--data", str(tmp_path / "photos"), "--image-size", "8", "--out",
          str(tmp_path / "z.npy")],
         "has items of shape (3, 8, 8), but the model at " + str(small_run) + " expects (1, 8, 8) (its pictures are "
         "grey: convert yours, e.g. with Pillow's Image.convert; attribute --pictures and the explorer's upload "
         "convert a picture themselves): give data of that shape"),
        (["encode", str(small_run), "--data", str(tmp_path / "photos"), "--out", str(tmp_path / "z.npy")],
         "convert a picture themselves; read the folder at the model's size with --image-size 8): give data"),
    ]
    from PIL import Image

    (tmp_path / "photos").mkdir()
    for i in range(4):
        Image.new("RGB", (8, 8), (60 * i, 20, 200)).save(tmp_path / "photos" / f"{i}.png")
    _one_line_errors(cases, capsys)


def test_latent_pictures_say_what_they_show(small_run, tmp_path, monkeypatch, capsys):
    """Each tile's caption, each row's label and a title (the pictures were bare tiles); the .npy arrays as before."""
    from vaekit import viz

    seen = {}
    real = viz.labelled_grid
    monkeypatch.setattr(viz, "labelled_grid", lambda images, path, **kw: seen.update(n=len(images), **kw) or
                        real(images, path, **kw))
    out = str(tmp_path / "p.png")
    assert main(["traverse", str(small_run), "--dims", "1,0", "--steps", "3", "--out", out]) == 0
    assert seen["row_labels"] == ["z[1]", "z[0]"] and seen["captions"] == ["-3", "0", "+3"] * 2
    assert "item 0: one latent dimension per row, swept from -3 to 3 (in the prior's SD)" == seen["title"]
    assert main(["traverse", str(small_run), "--top", "2", "--steps", "3", "--out", out]) == 0  # the same unit (it
    assert seen["title"].endswith("(in the prior's SD)")  # said the codes' SD, and swept the prior's)
    title = "item 0: one latent dimension per row, swept from -3 to 3 (in the codes' SD over the data)"
    real(torch.rand(6, 1, 8, 8), out, ncol=3, row_labels=["z[12]", "z[3]"], title=title)
    with Image.open(out) as picture:  # narrower than its title: wrapped, and no line cut off at either edge
        band = np.asarray(picture.convert("L"))[:40]
        assert band.min() < 100 and band[:, :3].min() == 255 and band[:, -3:].min() == 255
    assert main(["interpolate", str(small_run), "--from", "3", "--to", "5", "--steps", "4", "--out", out]) == 0
    assert seen["n"] == 6 and seen["captions"][0] == "item 3" and seen["captions"][-1] == "item 5"
    assert main(["interpolate", str(small_run), "--from", "3", "--to", "5", "--steps", "4",
                 "--out", str(tmp_path / "p.npy")]) == 0
    assert np.load(tmp_path / "p.npy").shape == (4, 1, 8, 8)  # the path alone, as before
    assert main(["attribute", str(small_run), "--attr", "3", "--apply-to", "0,2", "--strengths=-1,0,1",
                 "--out", out]) == 0
    assert seen["row_labels"] == ["item 0", "item 2"] and seen["captions"][:3] == ["-1", "0\nunedited", "+1"]
    capsys.readouterr()
    assert main(["neighbours", str(small_run), "--item", "4", "--k", "20", "--out", out]) == 0
    assert seen["captions"][0] == "item 4\nquery" and seen["ncol"] == viz.WRAP  # 21 tiles wrap at 16
    found, path = capsys.readouterr().out.splitlines()  # the list is the result: on stdout (it was on stderr)
    assert path == out and found.startswith("nearest to item 4 (item, distance): ")
    assert [f"item {part.split()[0]}\nd=" for part in found.split(": ")[1].split(", ")] == \
        [caption.split("=")[0] + "=" for caption in seen["captions"][1:]]
    listed = [int(part.split()[0]) for part in found.split(": ")[1].split(", ")]
    assert len(listed) == 20 and 4 not in listed  # k other items: the query itself (at distance 0) is not one
    assert main(["vary", str(small_run), "--item", "2", "--n", "5", "--out", out]) == 0
    assert seen["captions"] == ["item 2", "draw 1", "draw 2", "draw 3", "draw 4", "draw 5"]
    with Image.open(out) as picture:  # enlarged tiles with their captions above
        assert picture.height > 56 + 11 and picture.width >= 6 * 56


def test_train_help_says_what_each_recipe_is_for(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "recipes (--recipe NAME; flags override them):" in text
    assert "fast         Recommended VAE recipe for binarised 28x28 images on a CPU: reach a good test NLL" in text
    assert "paper-mlp    The benchmark model: MLP 784-512-256" in text
    assert "vae-wide     VAE recipe for half an hour on a 2-core CPU" in text


def test_a_log_file_gets_no_empty_progress_bars(tmp_path):
    """stderr to a file: short epochs and evaluations leave only their lines (each left a 0% bar line before)."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "vaekit"]
    done = subprocess.run([*cmd, "train", "--data", "digits", "--limit", "300", "--epochs", "2", "--latent-dim", "2",
                           "--hidden-dims", "16", "--out", str(run)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "epoch 2/2  loss" in done.stderr
    evaluated = subprocess.run([*cmd, "evaluate", str(run), "--iw-samples", "5", "--n", "50"], capture_output=True,
                               text=True, timeout=300)
    assert evaluated.returncode == 0
    # compare's feature classifier wrote a bar line per step into a log file
    compared = subprocess.run([*cmd, "compare", "--data", "digits", "--limit", "300", "--epochs", "1", "--latent-dim",
                               "2", "--network", "mlp", "--hidden-dims", "16", "--classifier-steps", "50",
                               "--interpolation-pairs", "2", "--out", str(tmp_path / "cmp")], capture_output=True,
                              text=True, timeout=300)
    assert compared.returncode == 0 and "feature classifier:" in compared.stderr
    for stderr in (done.stderr, evaluated.stderr, compared.stderr):
        assert "%|" not in stderr and "\r" not in stderr, stderr


def test_every_command_on_a_run_takes_threads_and_vaekit_has_a_version(capsys):
    """export and explore refused --threads, which the README promises for every command on a run."""
    import argparse

    import vaekit
    from vaekit.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    on_a_run = {name: parser for name, parser in commands.items()
                if any(action.dest == "run" for action in parser._actions)}
    assert {"export", "explore", "evaluate", "sample", "traverse", "train-prior"} <= set(on_a_run)
    for name, parser in on_a_run.items():
        assert any("--threads" in action.option_strings for action in parser._actions), name
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out == f"vaekit {vaekit.__version__}\n"
    from vaekit.entry import main as command

    assert command(["--version"]) == 0 and capsys.readouterr().out == f"vaekit {vaekit.__version__}\n"  # at once


def test_the_command_line_silences_numpys_note_on_flushed_subnormals(recwarn):
    """Flushing denormals made numpy 1.x warn "The value of the smallest subnormal ... is zero" with file paths."""
    import warnings

    assert main(["data", "list"]) == 0
    warnings.warn("The value of the smallest subnormal for <class 'numpy.float32'> type is zero.", UserWarning)
    assert not [w for w in recwarn if "smallest subnormal" in str(w.message)]


def test_train_prior_trains_the_later_stage_a_family_names(tmp_path, monkeypatch, capsys):
    """A family of one's own may name its later stage otherwise than "prior" (Model.stages): train-prior trains its
    only one, or the one --stage names (it asked for "prior" always, so such a stage had no command)."""
    import vaekit
    from vaekit import checkpoint, runs
    from vaekit.config import DataConfig, ModelConfig, RunConfig
    from vaekit.data import load_dataset

    for name, stages in (("test-one-later-stage", ("fit",)), ("test-two-later-stages", ("fit", "polish"))):
        vaekit.register_family(name)(type(name.title().replace("-", ""), (vaekit.VAE,), {"stages": stages}))
    asked = []
    epoch = runs.EpochResult(1, 1, {"loss": 1.0}, None, 1e-3, 1.0, 1.0, 1.0)
    monkeypatch.setattr(runs, "train_stage", lambda run, stage, **kw: asked.append(stage) or
                        runs.RunResult(None, None, [epoch], Path(run)))
    for family in ("test-one-later-stage", "test-two-later-stages"):
        cfg = RunConfig(data=DataConfig(name="digits"), model=ModelConfig(family=family, latent_dim=2))
        (tmp_path / family).mkdir()
        checkpoint.write_config(tmp_path / family, runs.resolve_config(cfg, load_dataset(cfg.data)))
    assert main(["train-prior", str(tmp_path / "test-one-later-stage")]) == 0
    assert json.loads(capsys.readouterr().out)["stage"] == "fit"
    assert main(["train-prior", str(tmp_path / "test-two-later-stages"), "--stage", "polish"]) == 0
    assert asked == ["fit", "polish"]
    assert main(["train-prior", str(tmp_path / "test-two-later-stages")]) == 2
    assert "trains in stages fit, polish after its own: name the one to train with --stage" in capsys.readouterr().err
    from vaekit.errors import Interrupted

    def stopped(run, stage, **kw):
        raise Interrupted(2, 7)

    monkeypatch.setattr(runs, "train_stage", stopped)  # the stop's line says the command that goes on
    with pytest.raises(SystemExit):
        main(["train-prior", str(tmp_path / "test-two-later-stages"), "--stage", "polish"])
    assert capsys.readouterr().err.endswith("the polish stage as it was then is saved in the run: train it further "
                                            f"with vaekit train-prior {tmp_path / 'test-two-later-stages'} --stage "
                                            "polish\n")


def test_a_ctrl_c_while_the_command_loads_is_one_line_and_exit_130(tmp_path):
    """Torch and the commands take about a second to load; a Ctrl-C then broke an import midway (a traceback of
    dozens of lines, a RecursionError or SIGABRT, or an interrupt swallowed and the command run to its end). It is
    noted until they are loaded, then said as at any later time. `import vaekit` itself loads nothing."""
    import signal
    import time

    check = "import sys, vaekit; assert 'torch' not in sys.modules and vaekit.__version__; vaekit.VAE; " \
            "assert 'torch' in sys.modules and callable(vaekit.train) and callable(vaekit.data.binarize_static); " \
            "assert getattr(vaekit, 'x.y', 7) == 7 and not hasattr(vaekit, 'recipes')  # a data folder, no module"
    assert subprocess.run([sys.executable, "-c", check]).returncode == 0
    for delay in (0.15, 0.3):  # within the loading on any machine (torch alone takes longer)
        command = subprocess.Popen([sys.executable, "-m", "vaekit", "train", "--data", "digits", "--epochs", "50",
                                    "--no-progress", "--out", str(tmp_path / f"run{delay}")],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a terminal
        # starts it (a test worker may run with SIGINT ignored, which its children inherit)
        time.sleep(delay)
        command.send_signal(signal.SIGINT)
        out, err = command.communicate(timeout=120)
        assert command.returncode == 130 and err == "vaekit: interrupted\n", (delay, command.returncode, err)
    # a command started with SIGINT ignored (a script's background job) keeps ignoring it
    command = subprocess.Popen([sys.executable, "-m", "vaekit", "data", "list"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    time.sleep(0.15)
    command.send_signal(signal.SIGINT)
    out, err = command.communicate(timeout=120)
    assert command.returncode == 0 and "mnist-10k" in out, (command.returncode, err)


def test_mistakes_a_sweep_of_every_command_found_are_one_line_errors(small_run, tmp_path, capsys, caplog):
    """Each case was a traceback, a message naming another problem, a silent loss or a silent wrong result."""
    import logging

    run = str(small_run)
    (tmp_path / "afile").write_text("a file, not a folder")
    np.save(tmp_path / "complex.npy", np.ones((2, 2), np.complex64))
    np.save(tmp_path / "huge.npy", np.full((100, 10), 1e30, np.float32))  # finite, but no step can be taken on it
    (tmp_path / "codes").mkdir()
    (tmp_path / "attrs.csv").write_text("smile,hat\n" + "".join(f"{i % 3},{i % 2}\n" for i in range(300)))
    cases = [
        (["sample", run, "--seed", "99999999999999999999", "--out", "s.png"],  # ValueError: Overflow...
         "argument --seed: must be a whole number from -2^63 to 2^64 - 1, got '99999999999999999999'"),
        (["vary", run, "--seed", "1.5", "--out", "s.png"], "argument --seed: must be a whole number from -2^63"),
        (["traverse", run, "--top", "-1", "--out", "t.png"],  # blamed --steps, with a negative count
         "--top must be between 1 and the latent size 2, got -1"),
        (["traverse", run, "--range", "a,b", "--out", "t.png"], "--range must be comma-separated numbers, e.g. -3,3"),
        (["attribute", run, "--attr", "smile", "--attr-file", str(tmp_path / "attrs.csv"), "--split", "train",
          "--out", "a.png"], "line 4: smile is '2'; attribute values must be 0/1"),  # "lists 0 more than once"
        (["evaluate", run, "--iw-samples", "2", "--per-item", "p.csv", "--compare-to", "p.csv"],  # one was lost
         "--per-item and --compare-to name the same file, p.csv, and writing one would lose the other"),
        (["sample", run, "--n", "2", "--out", str(tmp_path / "afile" / "s.png")],  # "free some disk space"
         f"{tmp_path / 'afile'} is a file, not a folder: write elsewhere"),
        (["decode", run, str(tmp_path / "complex.npy"), "--out", "d.png"],  # the imaginary parts dropped silently
         "holds complex numbers: codes are real numbers"),
        (["decode", run, str(tmp_path / "codes"), "--out", "d.png"], "is a folder: give the .npy (or .npz) file"),
        (["train", "--data", str(tmp_path / "huge.npy"), "--epochs", "2", "--no-progress", "--out",
          str(tmp_path / "r4")],  # exit 0 and an untrained model
         "training took no step: the loss or the gradient was not finite at every one of the run's 2 steps"),
        (["compare", "--data", "digits", "--interpolation-pairs", "100000", "--out", str(tmp_path / "c")],
         "interpolation_pairs x interpolation_steps must be at most 100,000 decoded images per model"),
    ]
    _one_line_errors(cases, capsys)
    assert not (tmp_path / "codes" / "d.png").exists()
    # allowed, but said: an untrained run (it printed the run's folder alone), and data settings the data does not
    # use (ignored without a word: --image-size 14 on digits trained on 8x8). Warnings, not errors: a recipe or a
    # config file may set them for other data (--recipe shapes --data digits trains, as it did).
    for flags, says in ((["--epochs", "0"], ["--epochs 0: the run holds the untrained model"]),
                        (["--image-size", "14", "--label-column", "foo", "--impute", "mean", "--epochs", "1"],
                         ["--image-size (data.image_size) is unused: it sets the size of a folder's images (or of "
                          "generated shapes), and digits is vaekit's digits data set, read as it is",
                          "--label-column (data.label_column) is unused: digits is vaekit's digits data set, with "
                          "labels of its own", "--impute (data.impute): a setting of tables, unused"]),
                        (["--recipe", "shapes", "--epochs", "1"], ["--image-size (data.image_size) is unused"])):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert main(["train", "--data", "digits", "--limit", "100", "--hidden-dims", "8", *flags, "--out",
                         str(tmp_path / "r0"), "--overwrite", "--no-progress"]) == 0
        assert all(text in caplog.text for text in says), caplog.text


def test_flags_are_taken_only_as_spelled(capsys):
    """argparse's abbreviations took `--label 3` on a command without --label as --label-column 3 and ran on in
    silence: every flag must now be spelled out, and anything else is named as unrecognized."""
    from vaekit.cli import build_parser

    for argv, flag in ((["traverse", "RUN", "--out", "t.png", "--label", "3"], "--label 3"),
                       (["sample", "RUN", "--out", "s.png", "--lab", "3"], "--lab 3"),
                       (["train", "--data", "digits", "--npr", "2"], "--npr 2")):
        with pytest.raises(SystemExit) as stop:
            build_parser().parse_args(argv)
        assert stop.value.code == 2
        assert f"unrecognized arguments: {flag}" in capsys.readouterr().err


def test_a_setting_given_by_its_flag_and_by_set_with_two_values_is_warned_of(caplog, capsys):
    """`--lr 0.003 --set train.lr=0.0005` trained at 0.0005 without a word, in either order: --set's value is still
    used (a script's flags can be overridden so), with a warning; the same value twice, or --set choosing the family
    whose flag is given, passes without one."""
    import json as json_module

    base = ["train", "--data", "digits", "--print-config"]
    for given, path, used in ((["--lr", "0.003", "--set", "train.lr=0.0005"], "train.lr", 0.0005),
                              (["--set", "train.lr=0.0005", "--lr", "0.003"], "train.lr", 0.0005),
                              (["--hidden-dims", "64,32", "--set", "model.hidden_dims=[64,16]"], "model.hidden_dims",
                               [64, 16]),
                              (["--iwae-k", "3", "--set", "model.family=iwae", "--set", "model.iwae.k=5"],
                               "model.iwae.k", 5),
                              (["--model", "vae", "--iwae-k", "3", "--set", "model.family=iwae"], "model.family",
                               "iwae")):  # the flags alone are no whole config: still said, not an error
        caplog.clear()
        with caplog.at_level("WARNING"):
            assert main([*base, *given]) == 0, given
        value = json_module.loads(capsys.readouterr().out)
        for part in path.split("."):
            value = value[part]
        assert value == used and f"both set {path}: --set's value is used" in caplog.text, given
    for given in (["--lr", "0.003", "--set", "train.lr=0.003"], ["--hidden-dims", "64,32", "--set",
                  "model.hidden_dims=[64,32]"], ["--iwae-k", "5", "--set", "model.family=iwae", "--set",
                  "model.iwae.k=5"]):
        caplog.clear()
        with caplog.at_level("WARNING"):
            assert main([*base, *given]) == 0, given
        capsys.readouterr()
        assert "both set" not in caplog.text, given


def test_captions_over_narrow_tiles_are_wrapped_to_their_tiles(tmp_path):
    """Frey's 28x20 faces under captions ("a: item 0", "b: item 1", ...) ran their captions together: captioned
    tiles are at least MIN_CELL wide, and each caption line fits its tile (a single word too long stays whole)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath
    from PIL import Image

    from vaekit import viz

    prop, measure = FontProperties(size=7), TextToPath()
    pixels = lambda line: measure.get_text_width_height_descent(line, prop, ismath=False)[0] * 100 / 72  # noqa: E731
    captions = ["a: item 0", "b: item 1", "c: item 1234", "decoded a - b + c", "0\nunedited", "item 3\nquery",
                "supercalifragilistic x", "d=0.056"]
    for width in (40, 62, 90):
        for caption in captions:
            wrapped = viz._wrapped(caption, width, fontsize=7, least=4, whole_words=True)
            assert wrapped.replace("\n", " ").split() == caption.split(), (caption, wrapped)  # every word, in order
            assert all(pixels(line) <= width or " " not in line for line in wrapped.splitlines()), (caption, wrapped)
            if "\n" in caption:
                assert wrapped.startswith(caption.split("\n")[0] + "\n")  # its own line breaks kept
    viz.labelled_grid(torch.rand(8, 1, 28, 20), tmp_path / "g.png", ncol=8, captions=captions)
    assert Image.open(tmp_path / "g.png").size[0] >= 8 * (viz.MIN_CELL + 6)


def test_a_title_is_wrapped_at_the_widest_line_length_that_fits_the_picture():
    """Random titles of 2 to 30 words in pictures 150 to 800 pixels wide: the wrap is the one with the most
    characters per line whose every line fits (found by trying every length, as the wrap did before it started
    near the length the title's mean width allows)."""
    import random
    import textwrap

    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    from vaekit import viz

    prop, measure = FontProperties(size=10), TextToPath()
    pixels = lambda line: measure.get_text_width_height_descent(line, prop, ismath=False)[0] * 100 / 72  # noqa: E731
    words = ("a the quick brown fox jumps over lazy dog interpolation traversal attribute-vector smile glasses "
             "z[12] (row 2, column 4, number 3) WWWWWW iiii").split()
    chooser = random.Random(0)
    uneven = " ".join(["W" * 8, "i" * 40] * 4)  # wide short words and narrow long ones: no mean width says much
    cases = [(uneven, pixels("i" * 40)), (uneven.replace("W" * 8, "W" * 10), pixels("i" * 40)), ("WW " * 30, 200)]
    cases += [(" ".join(chooser.choice(words) for _ in range(chooser.randint(2, 30))),
               chooser.choice([150, 250, 400, 800])) for _ in range(40)]
    for title, width in cases:
        widest = next((textwrap.fill(title, chars) for chars in range(len(title), 11, -1)
                       if max(pixels(line) for line in textwrap.fill(title, chars).splitlines()) <= width),
                      textwrap.fill(title, 12))
        assert viz._wrapped(title, width) == widest, (title, width)


def test_the_install_hint_names_the_folder_or_file_vaekit_was_installed_from(monkeypatch):
    """An extra's pip command: by name for a copy from a package index; for one installed from a checkout or a wheel
    file (pip's direct_url.json), that folder or file, which no index knows as vaekit, quoted for the shell."""
    import importlib.metadata

    from vaekit.extras import install_hint

    class Installed:
        def __init__(self, record):
            self.record = record

        def read_text(self, name):
            assert name == "direct_url.json"
            return self.record

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    for record, expected in (
            (None, "pip install 'vaekit[hub]'"),  # from an index
            ('{"url": "https://files.example/vaekit-0.1.tar.gz", "archive_info": {}}', "pip install 'vaekit[hub]'"),
            ('{"url": "file:///home/me/vaekit", "dir_info": {"editable": true}}', "pip install '/home/me/vaekit[hub]'"),
            ('{"url": "file:///home/me/my%20code", "dir_info": {}}', "pip install '/home/me/my code[hub]'"),
            ('{"url": "file:///tmp/vaekit-0.1-py3-none-any.whl", "archive_info": {}}',
             "pip install '/tmp/vaekit-0.1-py3-none-any.whl[hub]'"),
            ("not json", "pip install 'vaekit[hub]'")):
        monkeypatch.setattr(importlib.metadata, "distribution", lambda name, record=record: Installed(record))
        assert install_hint("hub") == expected
    assert install_hint("onnx", "-U").startswith("pip install -U ")
    monkeypatch.setattr(importlib.metadata, "distribution", missing)  # a source tree on sys.path, not installed
    assert install_hint("hub") == "pip install 'vaekit[hub]'"
