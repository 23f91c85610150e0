"""Training in several processes (torchrun, gloo on CPUs): the same weights as one process, stop and resume; and the
GPU paths (CUDA, bf16/fp16, NCCL), which run wherever a GPU is present and skip visibly elsewhere."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import vaekit
from vaekit import distributed
from vaekit.data import TensorData
from vaekit.errors import VaekitError
from vaekit.train import process_seed

TRAIN = sys.modules["vaekit.train"]  # the module (vaekit.train is the training function)

# 1,280 MNIST digits (bundled) in batches of 64: 20 steps an epoch, every batch full, so one process and two see the same batches.
FLAGS = ["--data", "mnist-10k", "--limit", "1280", "--network", "mlp", "--hidden-dims", "64", "--latent-dim", "4",
         "--batch-size", "64", "--no-progress"]
NO_GPU = "no CUDA GPU here: the GPU paths run on a machine with one"


def vaekit_cli(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vaekit", *args], capture_output=True, text=True, timeout=300,
                          **kwargs)


def weights(run) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def largest_difference(a, b) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def one_process(tmp_path, name, *extra):
    from vaekit.cli import main

    assert main(["train", *FLAGS, *extra, "--out", str(tmp_path / name)]) == 0
    return tmp_path / name


def test_shares_of_a_batch_make_up_the_batch_of_one_process():
    """DistributedSampler's rule: a padded permutation, every processes-th item; batch k of all processes is batch k
    of one process with a batch that many times larger."""
    data = TensorData(torch.arange(23.0).reshape(23, 1))
    whole = [x.flatten().tolist() for x, _ in data.batches(6, torch.Generator().manual_seed(5), shuffle=True)]
    shares = [[x.flatten().tolist() for x, _ in data.batches(2, torch.Generator().manual_seed(5), shuffle=True,
                                                              shard=(rank, 3))] for rank in range(3)]
    assert len({len(share) for share in shares}) == 1  # as many steps in every process: none waits at the end
    for k, batch in enumerate(whole):
        together = sorted(item for share in shares for item in share[k])
        if k < len(whole) - 1:
            assert together == sorted(batch)
        else:  # the last: padded with the permutation's first items to a share each
            assert set(batch) <= set(together) and len(together) == 3 * len(shares[0][k])
    # dynamic binarisation: each process its own draws
    probabilities = TensorData(torch.full((64, 16), 0.5), dynamic_binarize=True)
    draws = [next(probabilities.batches(32, torch.Generator().manual_seed(1), shuffle=True, shard=(rank, 2)))[0]
             for rank in range(2)]
    assert not torch.equal(draws[0], draws[1])
    assert len({process_seed(0, rank) for rank in range(8)}) == 8


def test_two_processes_train_the_weights_one_process_trains(tmp_path):
    """A 2-process gloo run through torchrun ends where a 1-process run with the same global batch and seed ends (an
    AE: no posterior noise, so the two runs compute the same thing); process 0 alone writes the run folder."""
    single = one_process(tmp_path, "one", "--model", "ae", "--epochs", "2")
    result = vaekit_cli("train", *FLAGS, "--model", "ae", "--epochs", "2", "--out", str(tmp_path / "two"),
                        "--nproc", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "launching 2 processes" in result.stderr
    assert result.stderr.count("epoch 2/2") == 1  # one progress report, from process 0
    assert result.stdout.count('"run"') == 1
    assert largest_difference(weights(single), weights(tmp_path / "two")) < 1e-5
    lines = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    reference = [json.loads(line) for line in (single / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in lines] == [20, 40]  # the global batch: 20 steps an epoch, as one process
    for row, ref in zip(lines, reference):  # numbers reduced over the processes: the whole data's means
        assert row["train_loss"] == pytest.approx(ref["train_loss"], rel=1e-5)
        assert row["val_loss"] == pytest.approx(ref["val_loss"], rel=1e-5)
    assert vaekit.load(tmp_path / "two").family == "ae"


def test_a_vae_in_two_processes_learns_as_in_one(tmp_path):
    """With posterior noise and dynamic binarisation each process draws its own, so the weights differ; the
    learning does not."""
    flags = ["--epochs", "3", "--binarize", "dynamic"]
    single = one_process(tmp_path, "one", *flags)
    result = vaekit_cli("train", *FLAGS, *flags, "--out", str(tmp_path / "two"), "--nproc", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    last = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()][-1]
    ref = [json.loads(line) for line in (single / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["val_loss"] == pytest.approx(ref["val_loss"], rel=0.03)
    assert largest_difference(weights(single), weights(tmp_path / "two")) > 1e-4


def test_two_processes_stop_on_sigterm_and_resume_in_two_and_in_one(tmp_path):
    """SIGTERM to `vaekit train --nproc 2`: every process stops at the same step, process 0 saves, exit 143. The run
    resumes in two processes and then in one, and ends where an uninterrupted run ends."""
    run = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "vaekit", "train", *FLAGS, "--model", "ae", "--epochs", "500",
                                "--checkpoint-steps", "7", "--out", str(run), "--nproc", "2"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "metrics.jsonl").exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert err.count("stopped by SIGTERM") == 1 and "Traceback" not in err
    stopped = json.loads((run / "resume.json").read_text())["step"]
    assert 20 <= stopped < 500 * 20
    epochs = stopped // 20 + 3
    resumed = vaekit_cli("train", "--resume", str(run), "--epochs", str(epochs), "--nproc", "2")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    from vaekit.cli import main

    assert main(["train", "--resume", str(run), "--epochs", str(epochs + 1)]) == 0  # one process now
    single = one_process(tmp_path, "single", "--model", "ae", "--epochs", str(epochs + 1))
    assert largest_difference(weights(single), weights(run)) < 1e-5
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == list(range(1, epochs + 2))


def _worker(launcher: int, rank: int) -> int | None:
    """The pid of the training process of `rank` that torchrun started under `launcher`, if it runs yet."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == launcher and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the workers through /proc (Linux)")
def test_the_processes_of_a_launcher_killed_by_sigkill_stop_and_the_run_resumes(tmp_path):
    """SIGKILL to `vaekit train --nproc 2` itself, which cannot pass it on: its processes (each in a session of its
    own) trained on unseen and held the run's lock, so --resume was refused. They now stop, as at a SIGTERM."""
    import fcntl

    run = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "vaekit", "train", *FLAGS, "--model", "ae", "--epochs", "500",
                                "--checkpoint-steps", "7", "--out", str(run), "--nproc", "2"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (run / "metrics.jsonl").exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    workers = [_worker(process.pid, rank) for rank in (0, 1)]
    assert process.poll() is None and None not in workers
    process.kill()
    process.wait()
    deadline = time.monotonic() + 60
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)  # gone, not training on for 500 epochs
    with open(run / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free
    stopped = json.loads((run / "resume.json").read_text())["step"]
    resumed = vaekit_cli("train", "--resume", str(run), "--epochs", str(stopped // 20 + 2))
    assert resumed.returncode == 0, resumed.stderr[-2000:]


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the worker through /proc (Linux)")
def test_a_process_killed_from_outside_is_named_in_one_line(tmp_path):
    """SIGKILL to process 1 (as the out-of-memory killer would): exit 137 and one line naming it; process 0, whose
    collective broke, says so in one line, not a traceback."""
    process = subprocess.Popen([sys.executable, "-m", "vaekit", "train", *FLAGS, "--epochs", "500", "--out",
                                str(tmp_path / "run"), "--nproc", "2"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    metrics = tmp_path / "run" / "metrics.jsonl"
    while not metrics.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    victim = _worker(process.pid, 1)
    assert victim is not None and process.poll() is None
    os.kill(victim, signal.SIGKILL)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGKILL, err[-3000:]
    assert err.count("process 1 was killed by SIGKILL (out of memory?)") == 1 and "Traceback" not in err, err[-3000:]


def test_two_processes_under_a_time_limit_stop_together_where_the_schedule_ends(tmp_path):
    """--minutes under torchrun: every process plans from process 0's clock, so all stop after the same epoch (a
    process planning one epoch more would wait for the others forever: the call's time limit would fail the test), and
    the cosine schedule ends on the last epoch trained."""
    result = vaekit_cli("train", *FLAGS, "--model", "ae", "--epochs", "100000", "--minutes", "0.1", "--schedule",
                        "cosine", "--out", str(tmp_path / "run"), "--nproc", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == list(range(1, len(rows) + 1)) and len(rows) < 100000
    assert rows[-1]["lr"] < 0.01 * rows[0]["lr"]  # the cosine's end (its first epoch: near the top)
    assert result.stderr.count("planning") <= 1 and "Traceback" not in result.stderr


def test_mistakes_are_said_once_before_any_process_starts(tmp_path, capsys, monkeypatch):
    from vaekit.cli import main

    assert main(["train", *FLAGS, "--data", str(tmp_path / "missing.npy"), "--out", str(tmp_path / "r"),
                 "--nproc", "2"]) == 2
    assert "missing.npy" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main(["train", *FLAGS, "--out", str(tmp_path / "r"), "--nproc", "0"])
    assert stop.value.code == 2
    assert "--nproc takes a number of processes from 1 to 1024, got '0'" in capsys.readouterr().err
    assert main(["train", *FLAGS, "--batch-size", "63", "--out", str(tmp_path / "odd"), "--nproc", "2"]) == 2
    assert "--batch-size 63 is the batch of all 2 processes together and must split evenly between them: use a " \
           "multiple of 2" in capsys.readouterr().err
    assert not (tmp_path / "odd").exists()  # said before anything was written
    assert main(["train", "--resume", str(tmp_path / "odd"), "--lr", "0.1", "--nproc", "2"]) == 2
    assert "--lr cannot change it" in capsys.readouterr().err
    # and checked again by every process, before training
    monkeypatch.setattr(distributed, "setup", lambda device: distributed.World(rank=0, size=3))
    cfg = vaekit.config.override(vaekit.RunConfig(), ["data.name=mnist-10k", "data.limit=100", "train.batch_size=64"])
    with pytest.raises(VaekitError, match="must split evenly between them: use a multiple of 3"):
        vaekit.train(cfg)


def test_a_family_the_started_processes_would_not_know_is_refused_before_they_start(tmp_path, capsys, monkeypatch):
    """A family registered by the calling script (or a module of its own) is unknown to the processes --nproc starts
    (python -m vaekit): refused in one line, before a run folder (each process said --model was an invalid choice);
    vaekit's own families and an installed plugin's are launched."""
    from vaekit.cli import main

    vaekit.register_family("test-script-family")(type("Mine", (vaekit.VAE,), {"__module__": "__main__"}))
    assert main(["train", *FLAGS, "--model", "test-script-family", "--out", str(tmp_path / "r"), "--nproc", "2"]) == 2
    err = capsys.readouterr().err
    assert "the family 'test-script-family' is registered by __main__, which the 2 processes --nproc starts (python " \
           "-m vaekit) do not import: install it as a plugin (entry-point group vaekit.plugins), or train in one " \
           "process" in err and err.count("\n") == 1, err
    assert not (tmp_path / "r").exists()
    config = vaekit.config.override(vaekit.RunConfig(), ["model.family=test-script-family"]).model
    monkeypatch.setattr(vaekit.models, "_PLUGIN_PACKAGES", {"__main__"})  # as if a plugin had registered it
    vaekit.models.check_launchable(config, 2)
    vaekit.models.check_launchable(vaekit.RunConfig().model, 2)


def test_families_that_train_in_one_process_are_refused_before_a_run_folder_is_made(tmp_path, capsys, monkeypatch):
    from vaekit.cli import main

    for family, says in (("tcvae", "the tcvae family estimates the aggregate posterior from the whole batch"),
                         ("vqvae", "the vqvae's EMA codebook and code restarts follow each process's own share")):
        assert main(["train", *FLAGS, "--model", family, "--out", str(tmp_path / family), "--nproc", "2"]) == 2
        err = capsys.readouterr().err
        assert says in err and "drop --nproc" in err and err.count("\n") == 1, err
        assert not (tmp_path / family).exists()  # so the fix (drop --nproc) works as said
    # a vqvae without restarts or EMA trains in several processes
    vaekit.models.check_processes(vaekit.config.override(vaekit.RunConfig(), [
        "model.family=vqvae", "model.vqvae.restart=false"]).model, 2)
    # and every process checks again, before the run folder
    monkeypatch.setattr(distributed, "setup", lambda device: distributed.World(rank=0, size=2))
    cfg = vaekit.config.override(vaekit.RunConfig(), ["data.name=mnist-10k", "data.limit=100", "model.family=tcvae"])
    with pytest.raises(VaekitError, match="train it in one process"):
        vaekit.train(cfg, out=tmp_path / "python")
    assert not (tmp_path / "python").exists()


def test_process_0s_own_error_is_said_once_under_nproc(tmp_path):
    """Process 0 fails preparing the run folder (another run holds its lock): its own one-line error, said once;
    the others stop quietly (they used to replace it with "process 0 could not ...: see its message", twice)."""
    import fcntl

    run = one_process(tmp_path, "run", "--epochs", "1")
    with open(run / ".lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.truncate(0)
        held.write("pid 12345")
        held.flush()
        result = vaekit_cli("train", "--resume", str(run), "--epochs", "2", "--nproc", "2")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert sum("is being written by another vaekit run (pid 12345)" in line for line in lines) == 1, lines
    assert not any("see its message" in line or "exitcode" in line for line in lines), lines


def test_a_mistake_every_process_finds_is_said_once_under_nproc(tmp_path):
    """A damaged resume state is found by each process as it loads it (after the launch): one line for the run, not
    one per process, and no second line about the exit code."""
    run = one_process(tmp_path, "run", "--epochs", "1")
    state = json.loads((run / "resume.json").read_text())
    (run / "resume.json").write_text(json.dumps({**state, "epoch": 5}))
    result = vaekit_cli("train", "--resume", str(run), "--epochs", "2", "--nproc", "2")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("launching")]
    assert lines == [f"vaekit: error: {run}/resume.json is damaged (its entries do not match the checksum written "
                     "with its tensors): restore it from a backup, or start the run again with --overwrite"], lines


def test_the_exit_code_of_several_processes_names_the_first_real_failure(capsys):
    from types import SimpleNamespace as Failure

    assert distributed._failure_code({0: Failure(exitcode=2, timestamp=5), 1: Failure(exitcode=2, timestamp=1)}) == 2
    # a process killed (out of memory): the launcher stops the rest with SIGTERM, which is not the run's failure
    killed = {0: Failure(exitcode=-15, timestamp=2), 1: Failure(exitcode=-9, timestamp=1)}
    assert distributed._failure_code(killed) == 137
    assert "process 1 was killed by SIGKILL (out of memory?); the others were stopped" in capsys.readouterr().err
    stopped_by_the_launcher = {1: Failure(exitcode=1, timestamp=3), 0: Failure(exitcode=-15, timestamp=4)}
    assert distributed._failure_code(stopped_by_the_launcher) == 1
    # the same second (torchrun's timestamps are whole seconds): process 0 dies of the broken collective (SIGABRT in
    # gloo's teardown, or its traceback's 1), yet the run failed because process 1 was killed
    for zero in (Failure(exitcode=-6, timestamp=100), Failure(exitcode=1, timestamp=100)):
        capsys.readouterr()
        assert distributed._failure_code({0: zero, 1: Failure(exitcode=-9, timestamp=100)}) == 137
        assert "process 1 was killed by SIGKILL" in capsys.readouterr().err
    # a mistake said by the process that found it wins over the others' aftermath
    mistake = {0: Failure(exitcode=2, timestamp=1), 1: Failure(exitcode=-15, timestamp=1)}
    assert distributed._failure_code(mistake) == 2


def test_launch_helpers(monkeypatch):
    from vaekit.cli.cmd_train import _without_nproc

    argv = ["train", "--data", "x", "--nproc", "2", "--nproc=3", "--no-progress", "--n", "5"]
    assert _without_nproc(argv) == ["train", "--data", "x", "--no-progress", "--n", "5"]
    # another process's failure seen here, and this process's own
    assert distributed.broken_collective(RuntimeError("[gloo/transport/tcp/pair.cc:534] Connection closed by peer"))
    assert distributed.broken_collective(torch.distributed.DistBackendError("NCCL error"))
    assert not distributed.broken_collective(torch.OutOfMemoryError("CUDA out of memory"))
    assert not distributed.broken_collective(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    for name, value in (("WORLD_SIZE", "2"), ("RANK", "0"), ("LOCAL_RANK", "0")):  # as torchrun sets them
        monkeypatch.setenv(name, value)
    with pytest.raises(VaekitError, match="not mps: use --device cpu or cuda"):
        distributed.setup(torch.device("mps"))


def test_a_compiled_model_trains_and_saves_plain_weights(tmp_path, monkeypatch):
    """--compile wraps the training step in torch.compile; the checkpoint holds the plain module's weights. (Dynamo's
    eager backend here: inductor's code generation takes a minute on 2 cores; benchmarks/scaling.py times it.)"""
    compiled = []
    real_compile = torch.compile

    def eager_compile(module, **kwargs):
        compiled.append(module)
        return real_compile(module, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    monkeypatch.setattr(TRAIN, "compile_unavailable", lambda device: None)  # the eager backend needs no C++
    plain = one_process(tmp_path, "plain", "--model", "vae", "--epochs", "1", "--seed", "3")
    run = one_process(tmp_path, "compiled", "--model", "vae", "--epochs", "1", "--seed", "3", "--compile")
    assert len(compiled) == 1 and isinstance(compiled[0], vaekit.Model)
    assert set(weights(run)) == set(weights(plain))  # no _orig_mod. prefix
    assert largest_difference(weights(plain), weights(run)) < 1e-4
    assert vaekit.load(run).family == "vae"


def test_compile_without_a_cpp_compiler_warns_and_trains_uncompiled(tmp_path):
    """On a CPU torch.compile builds C++; where no compiler is on the PATH (a bare machine), `--compile` (which the
    vae-wide recipe sets) warns, naming the fix, and trains the same weights uncompiled instead of failing at its
    first step. A fresh inductor cache, so no code compiled earlier is found."""
    plain = one_process(tmp_path, "plain", "--model", "vae", "--epochs", "1", "--seed", "3")
    bare = tmp_path / "bin"
    bare.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("CXX", "CC")}
    env.update(PATH=str(bare), TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"))
    result = vaekit_cli("train", *FLAGS, "--model", "vae", "--epochs", "1", "--seed", "3", "--compile",
                        "--out", str(tmp_path / "bare"), env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "no C++ compiler found (install g++" in result.stderr and "training without compiling" in result.stderr
    assert "Traceback" not in result.stderr
    assert largest_difference(weights(plain), weights(tmp_path / "bare")) < 1e-4


def test_compile_unavailable_names_what_is_missing(monkeypatch):
    """Where torch's compiler lookup fails, the reason names the fix; where it finds one, nothing is missing."""
    from torch._inductor import cpp_builder

    def no_compiler():
        raise RuntimeError("No working C++ compiler found")

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", no_compiler)
    assert "install g++" in TRAIN.compile_unavailable(torch.device("cpu"))
    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", lambda: "g++")
    assert TRAIN.compile_unavailable(torch.device("cpu")) is None
    assert TRAIN.compile_unavailable(torch.device("meta")) is None  # elsewhere torch decides


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU)
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_training_in_each_precision(tmp_path, precision):
    run = one_process(tmp_path, precision, "--epochs", "2", "--device", "cuda", "--precision", precision)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] and rows[-1]["skipped_steps"] == 0
    assert vaekit.load(run).family == "vae"


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU)
def test_cuda_auto_device_and_compile(tmp_path):
    run = one_process(tmp_path, "auto", "--epochs", "1", "--device", "auto", "--compile")
    assert json.loads((run / "config.json").read_text())["train"]["device"] == "auto"
    assert vaekit.load(run, device="cuda").device.type == "cuda"


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="fewer than 2 CUDA GPUs here: NCCL across GPUs needs two")
def test_two_gpus_with_nccl_train_the_weights_one_gpu_trains(tmp_path):
    single = one_process(tmp_path, "one", "--model", "ae", "--epochs", "2", "--device", "cuda")
    result = vaekit_cli("train", *FLAGS, "--model", "ae", "--epochs", "2", "--device", "cuda",
                        "--out", str(tmp_path / "two"), "--nproc", "2", env={**os.environ})
    assert result.returncode == 0, result.stderr[-2000:]
    assert largest_difference(weights(single), weights(tmp_path / "two")) < 1e-4


def _free_bits_share(rank: int, world: int, port: int, values: torch.Tensor, out: str) -> None:
    """One process of test_free_bits_decide_on_the_whole_batch: its share's gradient of the floored KL mean."""
    from vaekit.config import ModelConfig
    from vaekit.models import build_model

    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        model = build_model(ModelConfig(data_shape=(4,), latent_dim=2, hidden_dims=(4,), likelihood="gaussian",
                                        free_bits=1.0)).train()
        weight = torch.ones(1, requires_grad=True)
        share = values[rank::world]
        model.regularizer_mean({"kl": weight * share}).backward()
        grad = weight.grad.clone()
        torch.distributed.all_reduce(grad)  # as DDP averages the processes' gradients
        torch.save(grad / world, f"{out}.{rank}")
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.parametrize("values", [[0.5, 3.5, 0.5, 3.5], [0.1, 1.5, 0.1, 1.5]])
def test_free_bits_decide_on_the_whole_batch_in_several_processes(tmp_path, values):
    """The floor (free bits: 1 nat x 2 dimensions) is applied to the whole batch's mean KL, as one process applies it,
    not to each process's share: the averaged gradient is one process's. Shares [0.5, 0.5] and [3.5, 3.5]: the whole
    mean, 2.0, is not below the floor, so the gradient is 2.0, where floors per share gave (0 + 3.5) / 2; shares
    [0.1, 0.1] and [1.5, 1.5]: the whole mean, 0.8, is below it, no gradient either way."""
    import socket

    from vaekit.config import ModelConfig
    from vaekit.models import build_model

    values = torch.tensor(values)
    model = build_model(ModelConfig(data_shape=(4,), latent_dim=2, hidden_dims=(4,), likelihood="gaussian",
                                    free_bits=1.0)).train()
    weight = torch.ones(1, requires_grad=True)
    model.regularizer_mean({"kl": weight * values}).backward()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    torch.multiprocessing.spawn(_free_bits_share, args=(2, port, values, str(tmp_path / "grad")), nprocs=2)
    for rank in range(2):
        assert torch.equal(torch.load(tmp_path / f"grad.{rank}"), weight.grad), (values, weight.grad)


def test_the_launchers_pid_is_named_to_its_processes_only(monkeypatch):
    """VAEKIT_LAUNCHER_PID was left in the launcher's environment: a later torchrun from the same process (a
    notebook) gave it to processes that were no children of it, which stopped at once."""
    from torch.distributed import run as torchrun

    seen = []
    monkeypatch.setattr(torchrun, "run", lambda args: seen.append(os.environ.get(distributed.LAUNCHER_PID)))
    monkeypatch.delenv(distributed.LAUNCHER_PID, raising=False)
    assert distributed._launch(["train"], 2) == 0
    assert seen == [str(os.getpid())] and distributed.LAUNCHER_PID not in os.environ
