"""vaekit train --tensorboard, read back with TensorBoard's own event reader."""
from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

import vaekit
from vaekit.errors import VaekitError
from vaekit.extras import install_hint

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                        reason="tensorboard is not installed (pip install 'vaekit[tensorboard]')")


def read_events(directory):
    events = event_accumulator.EventAccumulator(str(directory), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def test_every_term_per_step_validation_per_epoch_and_pictures(digits_config, tmp_path):
    cfg = replace(digits_config, train=replace(digits_config.train, epochs=2, tensorboard=True))
    run = vaekit.train(cfg, out=tmp_path / "run")
    steps_per_epoch = run.history[0].step
    events = read_events(tmp_path / "run" / "tensorboard")
    tags = events.Tags()
    assert {"train/loss", "train/recon", "train/kl", "train/lr", "train/kl_scale", "val/loss", "val/elbo",
            "val/recon", "val/kl", "epoch/train_loss", "epoch/images_per_s"} <= set(tags["scalars"])
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == list(range(1, 2 * steps_per_epoch + 1))  # every step, once
    recon, kl = events.Scalars("train/recon"), events.Scalars("train/kl")
    # the logged loss is the step's objective: recon + kl for the VAE (beta 1, no warm-up), per step
    assert all(abs(l.value - (r.value + k.value)) < 1e-3 * abs(l.value) for l, r, k in zip(losses, recon, kl))
    # the epoch numbers are metrics.jsonl's
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for name in ("train_loss", "val_loss", "val_elbo"):
        tag = f"epoch/{name}" if name.startswith("train") else f"val/{name[4:]}"
        logged = [(e.step, e.value) for e in events.Scalars(tag)]
        assert logged == [(row["step"], pytest.approx(row[name], rel=1e-6)) for row in rows]
    assert set(tags["images"]) == {"samples", "reconstructions"}
    samples = events.Images("samples")
    assert [e.step for e in samples] == [row["step"] for row in rows]
    # a grid of 8x8 digits, enlarged and padded as the PNG files are: 8 to a row, 56 pixels or more each
    assert samples[0].width >= 8 * 56 and samples[0].height >= 2 * 56
    pairs = events.Images("reconstructions")[0]
    assert pairs.height >= 2 * 56 and pairs.width > 3 * pairs.height  # the items in one row, reconstructions below
    assert samples[0].encoded_image_string.startswith(b"\x89PNG")


def test_a_resumed_run_continues_the_same_log_each_step_once(digits_config, tmp_path):
    cfg = replace(digits_config, train=replace(digits_config.train, epochs=1, tensorboard=True))
    first = vaekit.train(cfg, out=tmp_path / "run")
    vaekit.runs.resume(tmp_path / "run", epochs=2)
    events = read_events(tmp_path / "run" / "tensorboard")
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == list(range(1, 2 * first.history[0].step + 1))
    assert [e.step for e in events.Scalars("val/loss")] == [first.history[0].step, 2 * first.history[0].step]


def test_an_overwrite_stopped_before_its_checkpoint_leaves_the_old_log_whole(digits_config, tmp_path):
    """--overwrite of a run with a log: until the new run's first checkpoint the old run's events stay as they were
    (the new run used to purge them from step 1 on); then the new run's log replaces them, whole."""
    from conftest import Killed, KillAt
    from vaekit.runs import train

    old = replace(digits_config, train=replace(digits_config.train, epochs=2, tensorboard=True))
    train(old, out=tmp_path / "run")
    log = tmp_path / "run" / "tensorboard"
    before = {p.name: p.read_bytes() for p in log.iterdir()}
    new = replace(old, train=replace(old.train, epochs=3, checkpoint_every=2, lr=old.train.lr / 3))
    with pytest.raises(Killed):
        train(new, out=tmp_path / "run", overwrite=True, callbacks=[KillAt(epoch=1)])
    assert {p.name: p.read_bytes() for p in log.iterdir()} == before
    vaekit.runs.resume(tmp_path / "run", epochs=2)  # the old run, still whole (finished: nothing to train)
    assert not (tmp_path / "run" / ".tensorboard-new").exists()
    replaced = train(new, out=tmp_path / "run", overwrite=True)
    events = read_events(log)
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == list(range(1, 3 * replaced.history[0].step + 1))  # the new run's, each step once
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [e.value for e in events.Scalars("val/loss")] == [pytest.approx(row["val_loss"], rel=1e-6) for row in rows]
    assert not (tmp_path / "run" / ".tensorboard-new").exists()


def test_tables_log_numbers_without_pictures(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    path = tmp_path / "table.csv"
    rows = ["a,b,c"] + [f"{x:.3f},{2 * x + 0.1 * e:.3f},{'yes' if x > 0 else 'no'}" for x, e in
                        zip(rng.normal(size=300), rng.normal(size=300))]
    path.write_text("\n".join(rows) + "\n")
    cfg = vaekit.config.override(vaekit.RunConfig(), [f"data.name={path}", "model.latent_dim=2", "train.epochs=1",
                                                      "train.progress=false", "train.tensorboard=true"])
    vaekit.train(cfg, out=tmp_path / "run")
    tags = read_events(tmp_path / "run" / "tensorboard").Tags()
    assert "train/loss" in tags["scalars"] and tags["images"] == []


def test_tensorboard_needs_a_run_folder_and_the_extra(digits_config, monkeypatch, tmp_path):
    from conftest import fail_import

    cfg = replace(digits_config, train=replace(digits_config.train, tensorboard=True))
    with pytest.raises(VaekitError, match="--tensorboard writes into the run folder: give --out"):
        vaekit.train(cfg)
    fail_import(monkeypatch, "torch.utils.tensorboard", ImportError("No module named 'tensorboard'"))
    with pytest.raises(VaekitError, match=re.escape(install_hint("tensorboard"))):
        vaekit.train(cfg, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()  # no half-made run that refuses the same command without --tensorboard


def test_a_run_resumed_from_an_older_checkpoint_logs_the_steps_trained_again_once(digits_config, tmp_path):
    """A run that logged epoch 3 but checkpointed only epoch 2 (it failed before its next checkpoint) trains epoch 3
    again on resume: its first events are dropped (purge), so each step appears once, with the new values."""

    class Fail(Exception):
        pass

    class FailAtEpoch3:
        def on_epoch_end(self, trainer, result):
            if result.epoch == 3:
                raise Fail

    cfg = replace(digits_config, train=replace(digits_config.train, epochs=4, checkpoint_every=2, tensorboard=True))
    with pytest.raises(Fail):
        vaekit.train(cfg, out=tmp_path / "run", callbacks=[FailAtEpoch3()])
    per_epoch = json.loads((tmp_path / "run" / "resume.json").read_text())["step"] // 2
    before = {e.step: e.value for e in read_events(tmp_path / "run" / "tensorboard").Scalars("train/loss")}
    assert max(before) == 3 * per_epoch  # epoch 3 was logged, not checkpointed
    vaekit.runs.resume(tmp_path / "run")
    events = read_events(tmp_path / "run" / "tensorboard")
    after = events.Scalars("train/loss")
    assert [e.step for e in after] == list(range(1, 4 * per_epoch + 1))
    assert [e.step for e in events.Scalars("val/loss")] == [per_epoch * k for k in (1, 2, 3, 4)]
    assert all(e.value == pytest.approx(before[e.step]) for e in after if e.step <= 2 * per_epoch)


def test_a_resume_may_start_the_log(digits_config, tmp_path):
    cfg = replace(digits_config, train=replace(digits_config.train, epochs=1))
    first = vaekit.train(cfg, out=tmp_path / "run")
    vaekit.runs.resume(tmp_path / "run", epochs=2, tensorboard=True)
    steps = [e.step for e in read_events(tmp_path / "run" / "tensorboard").Scalars("train/loss")]
    assert steps == list(range(first.history[0].step + 1, 2 * first.history[0].step + 1))
