"""Trainer behaviour: determinism, resume, schedules, checkpoints, metrics log."""
import json
import math
import os
import signal
from dataclasses import replace

import pytest
import torch

import vaekit
from vaekit import checkpoint
from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaekit.errors import Interrupted
from vaekit.train import kl_scale, learning_rate, planned_epochs


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_same_seed_same_weights(digits_config, tmp_path):
    a = vaekit.train(digits_config).model
    b = vaekit.train(digits_config).model
    for key, value in weights(a).items():
        assert torch.equal(value, b.state_dict()[key]), key
    c = vaekit.train(replace(digits_config, train=replace(digits_config.train, seed=1))).model
    assert not torch.equal(a.state_dict()["encoder.1.weight"], c.state_dict()["encoder.1.weight"])


@pytest.mark.parametrize("binarize", ["none", "dynamic"])
def test_resume_continues_bitwise(binarize, digits_config, tmp_path):
    cfg = replace(digits_config, data=replace(digits_config.data, binarize=binarize),
                  train=replace(digits_config.train, epochs=4))
    straight = vaekit.train(cfg, out=tmp_path / "straight")
    two = replace(cfg, train=replace(cfg.train, epochs=2))
    vaekit.train(two, out=tmp_path / "split")
    resumed = vaekit.resume(tmp_path / "split", epochs=4)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert [h.train_loss for h in straight.history] == [h.train_loss for h in resumed.history]
    lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]


def test_run_folder_and_metrics(digits_config, tmp_path):
    result = vaekit.train(digits_config, out=tmp_path / "run")
    run = tmp_path / "run"
    for name in ("config.json", "model.safetensors", "resume.json", "metrics.jsonl"):
        assert (run / name).is_file(), name
    tensors = list(run.glob("resume-*.safetensors"))
    assert len(tensors) == 1 and json.loads((run / "resume.json").read_text())["tensors"] == tensors[0].name
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == digits_config.train.epochs
    for row in rows:
        for key in ("epoch", "train_loss", "val_loss", "seconds", "images_per_s"):
            assert key in row and row[key] is not None
        assert row["images_per_s"] > 0
    loaded = vaekit.load(run)
    x = torch.rand(7, 1, 8, 8)
    torch.testing.assert_close(loaded.reconstruct(x), result.model.reconstruct(x), rtol=0, atol=0)
    assert not any(p.name.startswith(".") and p.name != ".lock" for p in run.iterdir()), "temporary files left behind"


def test_existing_run_is_not_overwritten(digits_config, tmp_path):
    vaekit.train(digits_config, out=tmp_path / "run")
    before = (tmp_path / "run" / "model.safetensors").read_bytes()
    with pytest.raises(vaekit.VaekitError, match="--resume"):
        vaekit.train(digits_config, out=tmp_path / "run")
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == before


def test_diverging_run_keeps_last_good_checkpoint(digits_config, tmp_path):
    vaekit.train(digits_config, out=tmp_path / "run")
    good = {name: (tmp_path / "run" / name).read_bytes() for name in ("model.safetensors", "config.json")}
    bad = replace(digits_config, train=replace(digits_config.train, lr=1e6, epochs=3))
    with pytest.raises(vaekit.VaekitError, match="lower --lr"):
        vaekit.train(bad, out=tmp_path / "run", overwrite=True)  # fails in its first epoch
    for name, content in good.items():
        assert (tmp_path / "run" / name).read_bytes() == content, name
    vaekit.load(tmp_path / "run")  # still a consistent, loadable model


def test_schedules():
    cfg = TrainConfig(lr=1.0, warmup_steps=10, schedule="cosine")
    assert learning_rate(cfg, 0, 110) == pytest.approx(0.1)
    assert learning_rate(cfg, 9, 110) == pytest.approx(1.0)
    assert learning_rate(cfg, 60, 110) == pytest.approx(0.5)
    assert learning_rate(cfg, 110, 110) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(TrainConfig(lr=0.3), 1000, 10) == 0.3
    assert kl_scale(TrainConfig(kl_warmup_epochs=2), 50, 100) == pytest.approx(0.25)
    assert kl_scale(TrainConfig(kl_warmup_epochs=2), 500, 100) == 1.0
    assert kl_scale(TrainConfig(), 0, 100) == 1.0


def test_the_iwae_papers_steps():
    """Burda et al. 2016: 3^i epochs at lr * 10^(-i/7), i = 0..7, 3,280 epochs in all; at 7 steps an epoch, every
    step of a 3,280-epoch run gets the paper's rate, and a shorter run the same stages scaled."""
    cfg = TrainConfig(lr=1e-3, schedule="iwae-steps")
    first_epochs = [0, 1, 4, 13, 40, 121, 364, 1093]  # where stage i begins: (3^i - 1) / 2
    for epoch in range(3280):
        stage = max(i for i, first in enumerate(first_epochs) if epoch >= first)
        for step in (7 * epoch, 7 * epoch + 6):
            assert learning_rate(cfg, step, 7 * 3280) == pytest.approx(1e-3 * 10 ** (-stage / 7), rel=1e-12)
    assert learning_rate(cfg, 7 * 3280 + 50, 7 * 3280) == pytest.approx(1e-4)  # past the end: the last stage's
    scaled = [learning_rate(cfg, step, 3280) for step in range(3280)]  # one step an epoch: the same, step by step
    assert scaled == [learning_rate(cfg, 7 * step, 7 * 3280) for step in range(3280)]
    warm = TrainConfig(lr=1.0, schedule="iwae-steps", warmup_steps=10)  # the warm-up first, then the stages
    assert [learning_rate(warm, s, 10 + 3280) for s in (0, 9, 10, 11, 14, 10 + 1093)] == pytest.approx(
        [0.1, 1.0, 1.0, 10 ** (-1 / 7), 10 ** (-2 / 7), 0.1])


def test_dynamic_binarisation_trains_on_bits(digits_config):
    cfg = replace(digits_config, data=replace(digits_config.data, binarize="dynamic"))
    dataset = vaekit.load_dataset(cfg.data)
    assert set(dataset.x_test.unique().tolist()) == {0.0, 1.0}
    assert len(dataset.x_train.unique()) > 2  # the training set stays grey; each epoch draws fresh bits
    result = vaekit.train(cfg, dataset=dataset)
    assert math.isfinite(result.history[-1].val_loss)


def test_corrupt_checkpoint_is_a_clear_error(digits_config, tmp_path):
    vaekit.train(digits_config, out=tmp_path / "run")
    (tmp_path / "run" / "model.safetensors").write_bytes(b"\x00garbage" * 20)
    with pytest.raises(vaekit.VaekitError, match="corrupt"):
        vaekit.load(tmp_path / "run")
    (tmp_path / "run" / "config.json").write_text("{ not json")
    with pytest.raises(vaekit.VaekitError, match="corrupt"):
        checkpoint.load_config(tmp_path / "run")


def test_checkpoint_holds_no_pickle(digits_config, tmp_path):
    vaekit.train(digits_config, out=tmp_path / "run")
    for path in (tmp_path / "run").iterdir():
        assert path.suffix in (".json", ".safetensors", ".jsonl") or path.name == ".lock", path
        assert b"\x80\x04\x95" not in path.read_bytes()[:64]  # pickle protocol-4 header


def test_resume_rewrites_metrics_past_the_checkpoint_and_rejects_a_corrupt_state(digits_config, tmp_path):
    cfg = replace(digits_config, train=replace(digits_config.train, epochs=2))
    vaekit.train(cfg, out=tmp_path / "run")
    metrics = tmp_path / "run" / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"epoch": 3}\n')  # logged, then the process died before saving
    vaekit.resume(tmp_path / "run", epochs=3)
    assert [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()] == [1, 2, 3]
    assert oct((tmp_path / "run" / "model.safetensors").stat().st_mode & 0o044) != "0o0"  # readable by others
    (tmp_path / "run" / "resume.json").write_text("{}")
    with pytest.raises(vaekit.VaekitError, match="resume state"):
        vaekit.resume(tmp_path / "run", epochs=4)


def test_bf16_precision_multiplies_in_bfloat16_and_keeps_float32_state(digits_config):
    cfg = replace(digits_config, train=replace(digits_config.train, precision="bf16", epochs=3))
    dataset = vaekit.load_dataset(cfg.data)
    cfg = vaekit.runs.resolve_config(cfg, dataset)
    trainer = vaekit.Trainer(vaekit.build_model(cfg.model), cfg.train)
    x = dataset.x_train[:16]
    with trainer.autocast():
        hidden = trainer.model.encoder(x)
        out = trainer.model(x)
    assert hidden.dtype == torch.bfloat16  # the matrix products ran in bfloat16 ...
    assert out.loss.dtype == out.elbo.dtype == torch.float32  # ... the loss did not
    with trainer.autocast():
        z = torch.randn(4, cfg.model.latent_dim)
        assert trainer.model.decoder(z).dtype == torch.bfloat16
        assert trainer.model.decoder_params(z).dtype == torch.float32  # cast back before any distribution
        assert trainer.model.encode(x).base_dist.scale.dtype == torch.float32
    with trainer.autocast():
        exact = trainer.model.encoder_params(x)
    torch.testing.assert_close(exact, trainer.model.encoder_params(x), rtol=0.05, atol=0.05)
    history = trainer.fit(dataset.split("train"), dataset.split("test"))
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert all(v.dtype in (torch.float32, torch.int64) or v.dim() == 0
               for state in trainer.optimizer.state.values() for v in state.values() if torch.is_tensor(v))
    assert history[-1].train_loss < history[0].train_loss
    fp32 = vaekit.train(replace(cfg, train=replace(cfg.train, precision="fp32"))).history
    # bf16 rounding changes the numbers but not the learning: within a few percent of fp32 after 3 epochs.
    assert history[-1].val_loss == pytest.approx(fp32[-1].val_loss, rel=0.03)
    assert history[-1].val_loss != fp32[-1].val_loss


def test_precision_is_checked(digits_config, monkeypatch, caplog):
    import importlib

    train_module = importlib.import_module("vaekit.train")  # the module; vaekit.train is the function
    with pytest.raises(vaekit.VaekitError, match="train.precision='fp8' is not one of fp32, bf16, fp16, auto"):
        vaekit.config.override(digits_config, ["train.precision=fp8"])
    with pytest.raises(vaekit.VaekitError, match="use --device cpu, or train with --precision fp32"):
        train_module.check_precision("bf16", torch.device("mps"))
    with pytest.raises(vaekit.VaekitError, match="fp16 runs on cpu and cuda, not mps: use --precision fp32"):
        train_module.check_precision("fp16", torch.device("mps"))
    monkeypatch.setattr(train_module, "native_bf16", lambda device: False)
    with caplog.at_level("WARNING"):
        train_module.check_precision("bf16", torch.device("cpu"))
        train_module.check_precision("fp16", torch.device("cpu"))
    assert "slower than fp32" in caplog.text
    assert "fp16 on a CPU is slow" in caplog.text


@pytest.mark.parametrize("native,device,expected", [
    (True, "cpu", "bf16"), (False, "cpu", "fp32"), (None, "cpu", "fp32"), (True, "mps", "fp32")])
def test_precision_auto_picks_bf16_only_where_it_is_native(native, device, expected, digits_config, monkeypatch,
                                                           caplog):
    import importlib

    train_module = importlib.import_module("vaekit.train")
    monkeypatch.setattr(train_module, "native_bf16", lambda d: native)
    assert train_module.resolve_precision("auto", torch.device(device)) == expected
    for given in ("fp32", "bf16", "fp16"):  # the others as given
        assert train_module.resolve_precision(given, torch.device(device)) == given
    if device != "cpu":
        return
    cfg = vaekit.config.override(digits_config, ["train.precision=auto"])
    dataset = vaekit.load_dataset(cfg.data)
    cfg = vaekit.runs.resolve_config(cfg, dataset)
    with caplog.at_level("INFO"):
        trainer = vaekit.Trainer(vaekit.build_model(cfg.model), cfg.train)
    assert f"--precision auto: {expected}" in caplog.text
    with trainer.autocast():  # what the training steps run under
        hidden = trainer.model.encoder(dataset.x_train[:8])
    assert hidden.dtype == (torch.bfloat16 if expected == "bf16" else torch.float32)


def test_fp16_trains_through_the_gradient_scaler(digits_config, monkeypatch):
    """fp16 is the GPU's format, but its code path (autocast to float16, the scaled loss, unscaled gradients before
    clipping, the scaler's skipped overflows) runs on a CPU too: it learns about as well as fp32."""
    steps = []
    real_step = torch.amp.GradScaler.step
    monkeypatch.setattr(torch.amp.GradScaler, "step", lambda self, *a, **k: steps.append(self.get_scale()) or
                        real_step(self, *a, **k))
    cfg = replace(digits_config, train=replace(digits_config.train, epochs=3, precision="fp16", grad_clip=5.0))
    history = vaekit.train(cfg).history
    fp32 = vaekit.train(replace(cfg, train=replace(cfg.train, precision="fp32"))).history
    assert len(steps) == history[-1].step and all(scale > 1 for scale in steps)  # every update went through it
    assert history[-1].train_loss < history[0].train_loss
    assert history[-1].val_loss == pytest.approx(fp32[-1].val_loss, rel=0.03)


def test_fp16_resumes_with_the_loss_scale_it_had(digits_config, tmp_path, monkeypatch):
    """The gradient scaler's state (its scale and the steps since it last changed) is part of the resume state. A
    scale that grows every 5 steps (not every 2,000) makes it change within this short run."""
    from safetensors.torch import load_file

    real_init = torch.amp.GradScaler.__init__
    monkeypatch.setattr(torch.amp.GradScaler, "__init__",
                        lambda self, *args, **kwargs: real_init(self, *args, **{**kwargs, "growth_interval": 5}))
    cfg = replace(digits_config, train=replace(digits_config.train, epochs=2, precision="fp16"))
    vaekit.train(cfg, out=tmp_path / "whole")
    vaekit.train(replace(cfg, train=replace(cfg.train, epochs=1)), out=tmp_path / "part")
    saved = json.loads((tmp_path / "part" / "resume.json").read_text())["grad_scaler"]
    # it moved from its start: a resume that started again there would differ
    assert (saved["scale"], saved["_growth_tracker"]) != (2.0**16, 0)
    vaekit.runs.resume(tmp_path / "part", epochs=2)
    whole, resumed = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("whole", "part"))
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_what_a_resume_may_change_leaves_the_runs_identity_alone(small_run, tmp_path):
    """Runs written before train.compile and train.tensorboard (or the edits section) existed (their config.json
    lacks them) resume, and so do resume states written while train.minutes was still part of the identity."""
    import hashlib
    import shutil

    from vaekit import checkpoint

    # the identity a resume state written before those settings existed carries: its settings had no such keys
    settings = checkpoint.load_config(small_run).to_dict()
    for name in ("epochs", "device", "threads", "progress", "compile", "tensorboard", "early_stopping"):
        settings["train"].pop(name)
    settings["model"].pop("free_bits")
    settings["model"].pop("label_names")
    settings["data"].pop("validation")
    settings["data"].pop("header")
    settings.pop("edits")  # a section added later, and never part of the identity
    written_before = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    assert checkpoint.identities(small_run) == {checkpoint.identity_sha256(small_run), written_before}
    settings["train"].pop("minutes")  # today's identity leaves out the time limit a resume may change
    assert checkpoint.identity_sha256(small_run) == hashlib.sha256(json.dumps(settings, sort_keys=True).encode()
                                                                   ).hexdigest()
    old = tmp_path / "old"
    shutil.copytree(small_run, old)
    on = json.loads((small_run / "config.json").read_text())
    on["train"].update(compile=True, tensorboard=True, epochs=9, minutes=12.5)
    (old / "config.json").write_text(json.dumps(on))
    assert checkpoint.identity_sha256(old) == checkpoint.identity_sha256(small_run)


@pytest.mark.parametrize("cpuinfo,expected", [
    ("processor : 0\nflags : fpu sse avx2 avx512f avx512_bf16\n", True),  # AMD Zen 4
    ("processor : 0\nflags : fpu sse avx2 avx512f amx_bf16 amx_tile\n", True),  # Intel Sapphire Rapids
    ("processor : 0\nflags : fpu sse avx2 fma\n", False),  # AVX2 only: emulated, slower
    ("processor : 0\nFeatures : fp asimd sve bf16 i8mm\n", True),  # Arm Neoverse V1
    ("processor : 0\n", None),
    (None, None),  # no /proc/cpuinfo (macOS, Windows)
])
def test_native_bf16_reads_the_cpu_flags(cpuinfo, expected, monkeypatch):
    import builtins
    import importlib
    import io

    train_module = importlib.import_module("vaekit.train")

    def fake_open(path, *args, **kwargs):
        if cpuinfo is None:
            raise FileNotFoundError(path)
        return io.StringIO(cpuinfo)

    monkeypatch.setattr(builtins, "open", fake_open)
    assert train_module.native_bf16(torch.device("cpu")) is expected


# ---- the resume commit point, hooks and callbacks -----------------------------------------------------------

def test_a_crash_between_the_resume_writes_resumes_the_last_whole_state(digits_config, tmp_path, monkeypatch):
    cfg = replace(digits_config, train=replace(digits_config.train, epochs=3))
    straight = vaekit.train(cfg, out=tmp_path / "straight")
    real = checkpoint.write_json
    commits = []

    def crash_at_the_second_commit(path, data):
        if path.name == checkpoint.RESUME_STATE:
            commits.append(path)
            if len(commits) == 3:  # the start marker, epoch 1; epoch 2's tensors are on disk, its resume.json is not
                raise KeyboardInterrupt("killed between the two writes")
        real(path, data)

    monkeypatch.setattr(checkpoint, "write_json", crash_at_the_second_commit)
    with pytest.raises(KeyboardInterrupt):
        vaekit.train(cfg, out=tmp_path / "crashed")
    monkeypatch.setattr(checkpoint, "write_json", real)
    run = tmp_path / "crashed"
    assert len(list(run.glob("resume-*.safetensors"))) == 2  # the new tensors, uncommitted, beside the old
    assert json.loads((run / "resume.json").read_text())["epoch"] == 1
    with open(run / "metrics.jsonl", "a") as handle:  # and a line cut short by the crash
        handle.write('{"epoch": 2, "train_lo')
    resumed = vaekit.resume(run)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert len(list(run.glob("resume-*.safetensors"))) == 1  # the next commit cleaned the stray file
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert [row["train_loss"] for row in rows] == [h.train_loss for h in straight.history]


def test_resume_refuses_tensors_from_another_commit(digits_config, tmp_path):
    vaekit.train(digits_config, out=tmp_path / "a")
    vaekit.train(replace(digits_config, train=replace(digits_config.train, seed=3)), out=tmp_path / "b")
    state = json.loads((tmp_path / "a" / "resume.json").read_text())
    other = next((tmp_path / "b").glob("resume-*.safetensors"))
    other.rename(tmp_path / "a" / state["tensors"])  # same name, another commit's contents
    with pytest.raises(vaekit.VaekitError, match="does not belong"):
        vaekit.resume(tmp_path / "a", epochs=3)
    (tmp_path / "a" / state["tensors"]).unlink()
    with pytest.raises(vaekit.VaekitError, match="missing"):
        vaekit.resume(tmp_path / "a", epochs=3)


def test_user_callbacks_see_every_step_and_epoch_with_terms_as_tensors(digits_config):
    class Recorder(vaekit.Callback):
        def __init__(self):
            self.events, self.steps = [], []

        def on_fit_begin(self, trainer):
            self.events.append("begin")

        def on_step_end(self, trainer, step):
            self.steps.append(step)

        def on_epoch_end(self, trainer, result):
            self.events.append(("epoch", result.epoch, trainer.step))

        def on_fit_end(self, trainer):
            self.events.append("end")

    class OnlyEpochs:  # any object with some of the hooks
        def __init__(self):
            self.epochs = 0

        def on_epoch_end(self, trainer, result):
            self.epochs += 1

    recorder, epochs = Recorder(), OnlyEpochs()
    result = vaekit.train(digits_config, callbacks=[recorder, epochs])
    steps_per_epoch = math.ceil(1437 / digits_config.train.batch_size)
    assert recorder.events[0] == "begin" and recorder.events[-1] == "end" and epochs.epochs == 2
    assert [e for e in recorder.events if isinstance(e, tuple)] == [("epoch", 1, steps_per_epoch),
                                                                     ("epoch", 2, 2 * steps_per_epoch)]
    assert [s.step for s in recorder.steps] == list(range(1, 2 * steps_per_epoch + 1))
    last = recorder.steps[-1]
    assert set(last.terms) == {"recon", "kl"} and torch.is_tensor(last.loss)  # left on the device, not read
    assert all(torch.is_tensor(value) and value.shape == () for value in last.terms.values())
    assert torch.isclose(last.loss, last.terms["recon"] + last.terms["kl"])
    assert result.history[-1].train.keys() == {"loss", "recon", "kl"}


def test_a_time_limit_plans_the_epochs_that_fit():
    cfg = TrainConfig(epochs=100, minutes=2.0)  # 120 s
    assert planned_epochs(cfg, 0, 0.0) == 100  # nothing timed yet: the most it may train
    assert planned_epochs(cfg, 1, 10.0) == 12  # 110 s left at 10 s an epoch: 11 more
    assert planned_epochs(cfg, 4, 50.0) == 9  # 12.5 s an epoch: 70 s left holds 5.6 of them
    assert planned_epochs(cfg, 3, 130.0) == 3  # spent: none more, none undone
    assert planned_epochs(cfg, 1, 0.5) == 100  # the limit allows more than --epochs
    assert planned_epochs(replace(cfg, minutes=None), 5, 1e9) == 100


class FakeClock(vaekit.Callback):
    """The trainer's clock advances one second per optimiser step, so an epoch of the digits (1437 items, batch 64)
    takes 23 seconds whatever the machine."""

    def __init__(self):
        self.now = 1000.0

    def on_fit_begin(self, trainer):
        trainer.clock = lambda: self.now

    def on_step_end(self, trainer, step):
        self.now += 1.0


def test_a_time_limit_stops_at_the_epochs_that_fit_and_the_schedule_ends_on_the_last(digits_config, tmp_path):
    # 6 epochs of 23 s fit in 143 s, a seventh does not; one epoch of warm-up, then the cosine to the sixth.
    train = replace(digits_config.train, epochs=100, minutes=143 / 60, schedule="cosine", warmup_steps=23)
    cfg = replace(digits_config, train=train)
    result = vaekit.train(cfg, callbacks=[FakeClock()])
    assert [r.epoch for r in result.history] == [1, 2, 3, 4, 5, 6]
    assert [r.lr for r in result.history] == [pytest.approx(learning_rate(train, r.step - 1, 6 * 23))
                                              for r in result.history]
    assert result.history[-1].lr < 1e-3 * train.lr  # the last step's rate: the cosine's end, not its middle
    # Under the limit --epochs is the most it trains; a limit spent by the first epoch stops there.
    assert len(vaekit.train(replace(cfg, train=replace(train, epochs=4)), callbacks=[FakeClock()]).history) == 4
    assert len(vaekit.train(replace(cfg, train=replace(train, minutes=0.1)), callbacks=[FakeClock()]).history) == 1
    # The time spent is kept with the run: stopped by a cap of 3 epochs (69 s) and resumed without it, the run
    # trains on to the sixth epoch, as the whole run did.
    vaekit.train(replace(cfg, train=replace(train, epochs=3)), out=tmp_path / "run", callbacks=[FakeClock()])
    assert checkpoint.load_resume(tmp_path / "run")[1]["train_seconds"] == 69.0
    resumed = vaekit.resume(tmp_path / "run", epochs=100, callbacks=[FakeClock()])
    assert [r.epoch for r in resumed.history] == [1, 2, 3, 4, 5, 6]
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4, 5, 6]
    # A resume with a longer limit trains on; one whose limit is spent trains nothing.
    longer = vaekit.resume(tmp_path / "run", minutes=200 / 60, callbacks=[FakeClock()])
    assert len(longer.history) == 8  # 138 s spent, 62 s left: two more epochs of 23 s
    assert len(vaekit.resume(tmp_path / "run", callbacks=[FakeClock()]).history) == 8


class StopAt(FakeClock):
    """The fake clock, and a stop asked for (as by Ctrl-C) after one step."""

    def __init__(self, step):
        super().__init__()
        self.stop_step = step

    def on_step_end(self, trainer, step):
        super().on_step_end(trainer, step)
        if step.step == self.stop_step:
            trainer.stop_signal = signal.SIGINT


def test_a_run_under_a_time_limit_stopped_inside_an_epoch_resumes_to_the_same_end(digits_config, tmp_path):
    """Its resume state keeps the plan: resumed, it trains the epochs the whole run did, on the same schedule (a
    plan made again would count the half-done epoch's seconds as a whole epoch's), to the same weights."""
    train = replace(digits_config.train, epochs=100, minutes=143 / 60, schedule="cosine")
    cfg = replace(digits_config, train=train)
    whole = vaekit.train(cfg, callbacks=[FakeClock()])
    assert [r.epoch for r in whole.history] == [1, 2, 3, 4, 5, 6]
    for stop in (89, 130):  # inside the fourth epoch; inside the sixth, the last
        run = tmp_path / f"stop-{stop}"
        with pytest.raises(Interrupted):
            vaekit.train(cfg, out=run, callbacks=[StopAt(stop)])
        assert checkpoint.load_resume(run)[1]["in_epoch"]["batches"] > 0
        resumed = vaekit.resume(run, callbacks=[FakeClock()])
        assert [r.epoch for r in resumed.history] == [1, 2, 3, 4, 5, 6]
        assert [r.lr for r in resumed.history] == [r.lr for r in whole.history]
        assert all(torch.equal(v, resumed.model.state_dict()[k]) for k, v in whole.model.state_dict().items())


def test_a_hook_set_on_a_callback_instance_runs(tmp_path):
    """The docstring: any object with some of the methods works; a Callback whose hook is set on the instance too
    (it was skipped as Callback's own no-op)."""
    seen = []
    callback = vaekit.Callback()
    callback.on_epoch_end = lambda trainer, result: seen.append(result.epoch)
    cfg = vaekit.RunConfig(data=vaekit.DataConfig(name="digits", limit=200),
                           model=vaekit.ModelConfig(latent_dim=2, hidden_dims=(8,), network="mlp"),
                           train=vaekit.TrainConfig(epochs=2, progress=False))
    vaekit.train(cfg, callbacks=[callback])
    assert seen == [1, 2]


def test_a_warm_up_longer_than_the_run_is_warned_of(digits_config, tmp_path, caplog):
    """The hvae recipe cut to 3 epochs never left its 500-step learning-rate warm-up nor its KL warm-up, in silence:
    the model ended trained at a fraction of --lr on a down-weighted KL."""
    from vaekit.cli import main

    steps = math.ceil(1437 / digits_config.train.batch_size) * 2  # digits' 1,437 training items, 2 epochs
    for warmup, kl_epochs, said in ((steps, 0.0, ["never reaches --lr"]), (0, 2.5, ["ends at 0.78"]),
                                    (steps - 1, 2.0, [])):
        cfg = replace(digits_config, train=replace(digits_config.train, warmup_steps=warmup, schedule="cosine",
                                                   kl_warmup_epochs=kl_epochs))
        caplog.clear()
        with caplog.at_level("WARNING"):
            vaekit.train(cfg)
        warned = [r.getMessage() for r in caplog.records if "warm" in r.getMessage()]
        assert len(warned) == len(said) and all(s in w for s, w in zip(said, warned)), warned
    caplog.clear()
    assert main(["train", "--recipe", "hvae", "--data", "digits", "--epochs", "3", "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 0
    assert "--warmup-steps 500 is at least the run's 18 steps (3 epochs of 6)" in caplog.text
    assert "--kl-warmup-epochs" in caplog.text


def test_a_batch_larger_than_the_training_items_is_warned_of(digits_config, caplog):
    """--batch-size 100000 on 1,437 items trained one step per epoch with every item's activations at once, unsaid;
    a small table under the default batch is not warned of."""
    for batch, limit, said in ((100_000, None, True), (1437, None, False), (128, 60, False)):
        cfg = replace(digits_config, data=replace(digits_config.data, limit=limit),
                      train=replace(digits_config.train, epochs=1, batch_size=batch))
        caplog.clear()
        with caplog.at_level("WARNING"):
            vaekit.train(cfg)
        assert ("--batch-size 100000 is more than the 1,437 training items: each epoch is one step" in caplog.text) \
            == said == ("is more than the" in caplog.text), (batch, caplog.text)


def test_a_code_larger_than_the_data_is_warned_of(digits_config, caplog):
    """An 8x8 digit holds 64 values: a 65-number code compresses nothing (the AE can copy the data through), said once
    the model is built; 64 is not warned of, nor a VQ-VAE (its code is its codebook indices)."""
    for latent, family, said in ((65, "vae", True), (64, "vae", False), (80, "ae", True), (80, "vqvae", False)):
        cfg = replace(digits_config, model=replace(digits_config.model, latent_dim=latent, family=family),
                      data=replace(digits_config.data, limit=200), train=replace(digits_config.train, epochs=1))
        caplog.clear()
        with caplog.at_level("WARNING"):
            vaekit.train(cfg)
        assert (f"--latent-dim {latent} is more than the 64 values of an item" in caplog.text) == said


def test_a_run_given_threads_limits_torch_and_numpys_thread_pools(digits_config):
    """TrainConfig(threads=N) (train --threads N) holds numpy's BLAS and the OpenMP libraries to N threads as well as
    torch: scikit-learn's fits after training (a mixture sampler's, a PCA) took one thread per core."""
    from threadpoolctl import threadpool_info

    wanted = 1 if torch.get_num_threads() > 1 else 2  # not the current value, so the setting must take effect
    vaekit.train(replace(digits_config, train=replace(digits_config.train, epochs=1, threads=wanted)))
    assert torch.get_num_threads() == wanted  # (conftest gives the next test its threads back)
    assert {pool["num_threads"] for pool in threadpool_info()} == {wanted}


def test_scikit_learn_loaded_later_takes_the_threads_and_the_environment_stays():
    """--threads N (use_threads) holds the libraries loaded then; scikit-learn's and SciPy's, loaded when first used,
    take torch's count where vaekit fits with them (threads.as_torch); scikit-learn's OpenMP also in a thread
    started later (the explorer's: threadpoolctl's limit reaches the calling thread's OpenMP only); the thread
    variables other processes read are left as they were (a first version set them for good)."""
    import subprocess
    import sys

    code = """
import json, os, threading
import numpy, torch
from threadpoolctl import threadpool_info
from vaekit.threads import use_threads
before = {pool["filepath"] for pool in threadpool_info()}
use_threads(1)
import sklearn.mixture
from vaekit.compare import fit_mixture
seen, real = {}, sklearn.mixture.GaussianMixture.fit
def fit(self, *args, **kwargs):
    where = "main" if threading.current_thread() is threading.main_thread() else "thread"
    seen[where] = [pool["num_threads"] for pool in threadpool_info() if pool["filepath"] not in before
                   and (where == "main" or pool["user_api"] == "openmp")]
    return real(self, *args, **kwargs)
sklearn.mixture.GaussianMixture.fit = fit
fit_mixture(torch.randn(200, 2), 2, 0)
thread = threading.Thread(target=lambda: fit_mixture(torch.randn(200, 2), 2, 0))
thread.start()
thread.join()
print(json.dumps({**seen, "variable": os.environ.get("OMP_NUM_THREADS")}))
"""
    environment = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=120)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["main"] and seen["thread"] and set(seen["main"] + seen["thread"]) == {1}, seen
    assert seen["variable"] is None


def test_an_epochs_training_means_weigh_each_step_by_its_items():
    """300 digits in batches of 64: the last holds 44. metrics.jsonl's train loss and KL are the means over items."""
    cfg = RunConfig(data=DataConfig(name="digits", limit=300), model=ModelConfig(latent_dim=4, hidden_dims=(32,)),
                    train=TrainConfig(epochs=1, batch_size=64, progress=False))
    seen = []

    class Steps(vaekit.Callback):
        def on_step_end(self, trainer, step):
            seen.append((float(step.loss), float(step.terms["kl"]), step.batch_size))

    [row] = vaekit.train(cfg, callbacks=[Steps()]).history
    items = sum(size for *_, size in seen)
    assert items == 300 and [size for *_, size in seen] == [64, 64, 64, 64, 44]
    assert row.train["loss"] == pytest.approx(sum(loss * size for loss, _, size in seen) / items, rel=1e-5)
    assert row.train["kl"] == pytest.approx(sum(kl * size for _, kl, size in seen) / items, rel=1e-5)


def test_gradient_clipping_scales_the_whole_gradient_to_the_clip_norm():
    clip = 1e-3  # far below an untrained VAE's gradient norm: every step is clipped
    cfg = RunConfig(data=DataConfig(name="digits", limit=300), model=ModelConfig(latent_dim=4, hidden_dims=(32,)),
                    train=TrainConfig(epochs=1, batch_size=64, grad_clip=clip, progress=False))
    norms = []

    class Norms(vaekit.Callback):
        def on_step_end(self, trainer, step):
            grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
            norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    vaekit.train(cfg, callbacks=[Norms()])
    assert len(norms) == 5 and all(norm == pytest.approx(clip, rel=1e-4) for norm in norms)
