"""Early stopping on the validation loss (train.early_stopping): when it stops, which weights the run keeps, and
that a resume continues it exactly."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import vaekit
from vaekit.cli import main
from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaekit.data import load_dataset
from vaekit.runs import train
from vaekit.train import Trainer

# 60 digits and a wide network: the validation loss turns upward within a few dozen epochs
OVERFIT = RunConfig(data=DataConfig(name="digits", limit=60),
                    model=ModelConfig(latent_dim=8, hidden_dims=(512, 512)),
                    train=TrainConfig(epochs=150, batch_size=20, lr=5e-3, early_stopping=5, progress=False))


def val_losses(run) -> list[float]:
    return [json.loads(line)["val_loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def saved_val_loss(run) -> float:
    """The saved model's validation loss, by the trainer's own (fixed-draw) estimator."""
    model = vaekit.load(run)
    dataset = load_dataset(vaekit.checkpoint.load_config(run).data)
    trainer = Trainer(model, TrainConfig(progress=False))
    return trainer.evaluate_loss(dataset.split("test"))["loss"]


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    run = tmp_path_factory.mktemp("early") / "run"
    train(OVERFIT, out=run)
    return run


def test_training_stops_once_the_validation_loss_has_not_improved_for_the_patience(stopped):
    losses = val_losses(stopped)
    best = losses.index(min(losses))
    assert len(losses) < OVERFIT.train.epochs  # it stopped early
    assert len(losses) - 1 - best == OVERFIT.train.early_stopping  # exactly `patience` epochs after the best
    assert all(loss >= losses[best] for loss in losses[best + 1 :])
    # and not sooner: every earlier stretch of `patience` epochs held an improvement
    for end in range(OVERFIT.train.early_stopping, len(losses) - 1):
        assert min(losses[: end + 1]) < min(losses[: end + 1 - OVERFIT.train.early_stopping])


def test_the_run_keeps_the_best_epochs_weights(stopped):
    losses = val_losses(stopped)
    assert saved_val_loss(stopped) == pytest.approx(min(losses), rel=1e-6)
    assert saved_val_loss(stopped) < losses[-1]  # not the last epoch's


def test_a_run_that_never_stops_early_also_keeps_its_best_epoch(stopped, tmp_path):
    epochs = len(val_losses(stopped)) - 1  # the same run, to one epoch before its stop: past its best epoch
    cfg = RunConfig(data=OVERFIT.data, model=OVERFIT.model, train=TrainConfig(**{
        **OVERFIT.train.__dict__, "epochs": epochs, "early_stopping": 1000}))
    train(cfg, out=tmp_path / "run")
    losses = val_losses(tmp_path / "run")
    assert len(losses) == epochs and losses == val_losses(stopped)[:epochs]
    assert losses.index(min(losses)) < epochs - 1  # its last epoch is not its best
    assert saved_val_loss(tmp_path / "run") == pytest.approx(min(losses), rel=1e-6)


def test_a_resumed_run_stops_where_and_as_the_whole_run_did(stopped, tmp_path, caplog):
    """Stopped part-way (at epoch 12, before its early stop) and resumed, a run keeps the best weights it had seen
    in its resume state and ends as the run never stopped did."""
    part = tmp_path / "part"
    assert 12 < len(val_losses(stopped)) - 1 - OVERFIT.train.early_stopping  # stopped before its best epoch
    train(RunConfig(data=OVERFIT.data, model=OVERFIT.model, train=TrainConfig(**{
        **OVERFIT.train.__dict__, "epochs": 12})), out=part)
    assert main(["train", "--resume", str(part), "--epochs", str(OVERFIT.train.epochs), "--no-progress"]) == 0
    assert val_losses(part) == val_losses(stopped)
    whole, resumed = load_file(str(stopped / "model.safetensors")), load_file(str(part / "model.safetensors"))
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    # a run that has stopped early trains no further, whatever --epochs says
    before = load_file(str(part / "model.safetensors"))
    with caplog.at_level("INFO"):
        assert main(["train", "--resume", str(part), "--epochs", "400", "--no-progress"]) == 0
    assert "stopped early" in caplog.text
    after = load_file(str(part / "model.safetensors"))
    assert len(val_losses(part)) == len(val_losses(stopped)) and all(torch.equal(before[k], after[k]) for k in after)


def test_early_stopping_needs_validation_data_and_a_positive_patience(tmp_path, capsys):
    dataset = load_dataset(DataConfig(name="digits", limit=50))
    model = vaekit.build_model(vaekit.runs.resolve_config(OVERFIT, dataset).model)
    with pytest.raises(vaekit.VaekitError, match="no validation data"):
        Trainer(model, TrainConfig(early_stopping=3, progress=False)).fit(dataset.split("train"), None)
    assert main(["train", "--data", "digits", "--early-stopping", "0", "--out", str(tmp_path / "run")]) == 2
    assert "early_stopping" in capsys.readouterr().err
