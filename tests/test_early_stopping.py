"""Early stopping on the validation loss (train.early_stopping): when it stops, which weights the run keeps, that a
resume continues it exactly, and that it judges on held-out training items (data.validation), never the test split."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

import vaekit
from vaekit.cli import main
from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaekit.data import hold_out, load_dataset
from vaekit.runs import train
from vaekit.train import Trainer

# 60 digits to train on (100 more held out to judge) and a wide network: the validation loss turns upward within a
# few dozen epochs
OVERFIT = RunConfig(data=DataConfig(name="digits", limit=160, validation=100),
                    model=ModelConfig(latent_dim=8, hidden_dims=(512, 512)),
                    train=TrainConfig(epochs=150, batch_size=20, lr=5e-3, early_stopping=5, progress=False))


def val_losses(run) -> list[float]:
    return [json.loads(line)["val_loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def saved_val_loss(run) -> float:
    """The saved model's validation loss, by the trainer's own (fixed-draw) estimator, on the run's held-out items."""
    model = vaekit.load(run)
    cfg = vaekit.checkpoint.load_config(run)
    validation = hold_out(load_dataset(cfg.data), cfg.data, early_stopping=True)[1]
    trainer = Trainer(model, TrainConfig(progress=False))
    return trainer.evaluate_loss(validation)["loss"]


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
    """Stopped part-way (half-way to its best epoch, so before its early stop) and resumed, a run keeps the best
    weights it had seen in its resume state and ends as the run never stopped did."""
    part = tmp_path / "part"
    best = len(val_losses(stopped)) - 1 - OVERFIT.train.early_stopping  # index of the best epoch
    cut = (best + 1) // 2
    assert 2 <= cut < best  # stopped before its best epoch
    train(RunConfig(data=OVERFIT.data, model=OVERFIT.model, train=TrainConfig(**{
        **OVERFIT.train.__dict__, "epochs": cut})), out=part)
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


def test_early_stopping_holds_out_a_tenth_of_the_training_items_by_default_never_the_test_split():
    # items that carry their own index, in x, y and an attribute
    n = 1000
    index = torch.arange(n, dtype=torch.float32)
    dataset = vaekit.data.Dataset(name="indexed", x_train=index[:, None], x_test=-1 - index[:100, None],
                                  y_train=torch.arange(n), y_test=torch.zeros(100, dtype=torch.long),
                                  attributes_train={"i": index}, attributes_test={"i": index[:100]})
    cfg = DataConfig(name="indexed")
    trained, judged = hold_out(dataset, cfg)  # without early stopping: nothing held out, the test split judges
    assert trained is dataset and judged.x is dataset.x_test
    trained, judged = hold_out(dataset, cfg, early_stopping=True)
    held, kept = judged.x[:, 0].long(), trained.x_train[:, 0].long()
    assert len(held) == n // 10 and len(kept) == n - n // 10
    assert set(held.tolist()).isdisjoint(kept.tolist()) and set(held.tolist()) | set(kept.tolist()) == set(range(n))
    assert (held >= 0).all()  # training items, none of the test split's
    assert torch.equal(judged.y, held) and torch.equal(trained.y_train, kept)
    assert torch.equal(trained.attributes_train["i"].long(), kept) and trained.x_test is dataset.x_test
    assert not torch.equal(held, torch.arange(n - n // 10, n))  # a random choice, not the last items
    again = hold_out(dataset, cfg, early_stopping=True)[1]
    assert torch.equal(again.x, judged.x)  # the same choice every time
    # a count, a share, and none at all even with early stopping
    assert len(hold_out(dataset, DataConfig(name="indexed", validation=300))[1]) == 300
    assert len(hold_out(dataset, DataConfig(name="indexed", validation=0.25))[1]) == 250
    assert hold_out(dataset, DataConfig(name="indexed", validation=0), early_stopping=True)[1].x is dataset.x_test


def test_a_run_with_early_stopping_is_judged_on_its_validation_items(tmp_path, caplog, capsys):
    run = tmp_path / "run"
    with caplog.at_level("INFO"):
        assert main(["train", "--data", "digits", "--epochs", "2", "--early-stopping", "5", "--out", str(run),
                     "--no-progress"]) == 0
    assert "holding out 144 of the 1437 training items" in caplog.text
    cfg = vaekit.checkpoint.load_config(run)
    dataset = load_dataset(cfg.data)
    validation = hold_out(dataset, cfg.data, early_stopping=True)[1]
    trainer = Trainer(vaekit.load(run), TrainConfig(progress=False))
    assert val_losses(run)[-1] == pytest.approx(trainer.evaluate_loss(validation)["loss"], rel=1e-5)
    assert val_losses(run)[-1] != pytest.approx(trainer.evaluate_loss(dataset.split("test"))["loss"], rel=1e-3)
    # evaluate: train is the items trained on (it counted the held-out ones too), validation the held-out ones
    for split, n, data in (("train", 1437 - 144, []), ("validation", 144, []), ("test", 360, []),
                           ("validation", 144, ["--data", "digits"])):  # the run's own data named
        capsys.readouterr()
        assert main(["evaluate", str(run), "--split", split, "--iw-samples", "2", "--no-progress", *data]) == 0
        assert json.loads(capsys.readouterr().out)["n_examples"] == n, split
    assert main(["evaluate", str(run), "--split", "validation", "--iw-samples", "2", "--no-progress", "--data",
                 "digits", "--limit", "500"]) == 2
    assert "items of another data set have no validation split" in capsys.readouterr().err
    # with dynamic binarisation the held-out items' bits are drawn once, like the test split's
    binarised = hold_out(load_dataset(DataConfig(name="digits", binarize="dynamic")),
                         DataConfig(name="digits", binarize="dynamic"), True)[1]
    assert set(binarised.x.unique().tolist()) == {0.0, 1.0}


def test_validation_mistakes_are_one_line_errors_and_zero_warns(tmp_path, capsys, caplog):
    for value, says in (("1.5", "a share between 0 and 1, or a whole number of items"),
                        ("5000", "would hold out 5000 of the 1437 training items"), ("-0.1", "a share")):
        assert main(["train", "--data", "digits", "--epochs", "1", "--validation", value, "--out",
                     str(tmp_path / "run"), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and says in err and "Traceback" not in err
        assert not (tmp_path / "run").exists()
    with caplog.at_level("WARNING"):
        assert main(["train", "--data", "digits", "--epochs", "1", "--early-stopping", "3", "--validation", "0",
                     "--out", str(tmp_path / "zero"), "--no-progress"]) == 0
    assert "early stopping chooses its epoch on the test split" in caplog.text


def test_a_run_from_before_validation_splits_resumes_on_the_items_it_trained_on(tmp_path):
    """A run folder written before data.validation existed (its config lacks it) trained on every training item
    and judged on the test split: resumed, it goes on so, to the end the whole run reaches."""
    old = RunConfig(data=DataConfig(name="digits", limit=60, validation=0), model=OVERFIT.model,
                    train=TrainConfig(**{**OVERFIT.train.__dict__, "epochs": 6, "early_stopping": 1000}))
    train(old, out=tmp_path / "whole")
    train(RunConfig(data=old.data, model=old.model, train=TrainConfig(**{**old.train.__dict__, "epochs": 3})),
          out=tmp_path / "part")
    config = json.loads((tmp_path / "part" / "config.json").read_text())
    del config["data"]["validation"]
    (tmp_path / "part" / "config.json").write_text(json.dumps(config))
    assert vaekit.checkpoint.load_config(tmp_path / "part").data.validation == 0
    assert main(["train", "--resume", str(tmp_path / "part"), "--epochs", "6", "--no-progress"]) == 0
    assert val_losses(tmp_path / "part") == val_losses(tmp_path / "whole")
    whole, resumed = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("whole", "part"))
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_a_plain_autoencoder_drops_beta_and_the_kl_warm_up_it_has_nothing_to_weigh(tmp_path, caplog):
    """--beta and --kl-warmup-epochs on the ae family were accepted without a word; the warm-up held back early
    stopping (a 6-epoch run trained 10). They are dropped with a warning: the run is the one trained without them."""
    cfg = RunConfig(data=DataConfig(name="digits"), model=ModelConfig(family="ae", latent_dim=2, hidden_dims=(32,)),
                    train=TrainConfig(epochs=12, lr=0.03, early_stopping=1, progress=False))
    plain = train(cfg, out=tmp_path / "plain")
    with caplog.at_level("WARNING", logger="vaekit"):
        weighed = train(replace(cfg, model=replace(cfg.model, beta=4.0),
                                train=replace(cfg.train, kl_warmup_epochs=10.0)), out=tmp_path / "weighed")
    assert "the ae family's objective has no regularizer to weigh: --beta 4 (model.beta) and --kl-warmup-epochs 10 " \
           "(train.kl_warmup_epochs) unused, dropped" in caplog.text
    assert len(weighed.history) == len(plain.history) < 10  # early stopping not held back by a warm-up
    for name, tensor in weighed.model.state_dict().items():
        assert torch.equal(tensor, plain.model.state_dict()[name]), name
    written = json.loads((tmp_path / "weighed" / "config.json").read_text())
    assert written["model"]["beta"] == 1.0 and written["train"]["kl_warmup_epochs"] == 0.0


def test_a_family_built_on_the_ae_with_a_penalty_of_its_own_keeps_its_beta():
    """has_regularizer was inherited from the AE, so such a family's --beta was dropped as weighing nothing."""
    from vaekit.models import AE
    from vaekit.runs import drop_unweighed

    class Penalised(AE):
        def regularizer_terms(self, qz, z):
            return {"l1": z.abs().sum(-1)}

    class L1:
        def regularizer_terms(self, qz, z):
            return {"l1": z.abs().sum(-1)}

    class Mixed(L1, AE):  # the penalty from a mixin
        pass

    class Plain(AE):
        pass

    assert Penalised.has_regularizer and Mixed.has_regularizer and not AE.has_regularizer
    assert not Plain.has_regularizer
    cfg = RunConfig(model=ModelConfig(family="ae", beta=5.0))
    assert drop_unweighed(cfg, say=False).model.beta == 1.0


def test_a_k_sample_family_stops_on_the_bound_it_trains_on(tmp_path, caplog):
    """An IWAE stopped on its -ELBO, which worsens while the K-sample bound it trains on improves: it kept an early
    epoch (1.5 nats worse on its own bound). It stops, and keeps its weights, by the validation bound."""
    import logging

    cfg = replace(OVERFIT, model=replace(OVERFIT.model, family="iwae"))
    with caplog.at_level(logging.INFO, logger="vaekit.train"):
        train(cfg, out=tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    bounds = [row["val_bound"] for row in rows]
    best = bounds.index(min(bounds))
    assert len(rows) < cfg.train.epochs and len(rows) - 1 - best == cfg.train.early_stopping
    assert "no lower validation bound for 5 epochs" in caplog.text
    model = vaekit.load(tmp_path / "run")
    validation = hold_out(load_dataset(cfg.data), cfg.data, early_stopping=True)[1]
    assert Trainer(model, TrainConfig(progress=False)).evaluate_loss(validation)["bound"] == \
        pytest.approx(bounds[best], rel=1e-6)


def test_evaluate_of_a_run_that_held_out_nothing_has_no_validation_split(small_run, capsys):
    assert main(["evaluate", str(small_run), "--split", "validation", "--iw-samples", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "this run held out no training items" in err and "--split test" in err


def _trainer_on_digits(**train_settings) -> tuple[Trainer, vaekit.Dataset]:
    """A small VAE on 300 digits and its trainer, with these training settings."""
    cfg = RunConfig(data=DataConfig(name="digits", limit=300), model=ModelConfig(latent_dim=4, hidden_dims=(32,)),
                    train=TrainConfig(progress=False, **train_settings))
    dataset = load_dataset(cfg.data)
    cfg = vaekit.runs.resolve_config(cfg, dataset)
    return Trainer(vaekit.build_model(cfg.model), cfg.train), dataset


def test_early_stopping_waits_for_the_kl_warm_up_to_end(monkeypatch):
    """A validation loss that rises from epoch 1 spends patience 1 at epoch 2, but the KL's weight ramps until epoch
    3 (a loss rising with it says nothing yet): the run stops at epoch 3."""
    trainer, dataset = _trainer_on_digits(epochs=6, batch_size=100, early_stopping=1, kl_warmup_epochs=3)
    losses = iter([5.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    monkeypatch.setattr(trainer, "evaluate_loss", lambda validation, batch_size=1000: {"loss": next(losses)})
    history = trainer.fit(dataset.split("train"), dataset.split("test"))
    assert len(history) == 3 and trainer.stopped_early


def test_a_non_finite_validation_loss_is_never_the_best(monkeypatch):
    trainer, dataset = _trainer_on_digits(epochs=10, batch_size=100, early_stopping=2)
    losses = iter([float("nan"), 5.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    monkeypatch.setattr(trainer, "evaluate_loss", lambda validation, batch_size=1000: {"loss": next(losses)})
    history = trainer.fit(dataset.split("train"), dataset.split("test"))
    assert len(history) == 4 and trainer.stopped_early  # the best is epoch 2's 5.0: two epochs of patience after it


def test_the_model_vaekit_train_returns_holds_the_best_epochs_weights(monkeypatch):
    """Validation losses 5, 4, 6, 7 with patience 2: the run stops after epoch 4, and the model returned (not only
    the run folder's file) is epoch 2's, to the bit."""
    losses = iter([5.0, 4.0, 6.0, 7.0])
    monkeypatch.setattr(Trainer, "evaluate_loss", lambda self, validation, batch_size=1000: {"loss": next(losses)})
    second = {}

    class Second(vaekit.Callback):
        def on_epoch_end(self, trainer, result):
            if result.epoch == 2:
                second.update({name: value.clone() for name, value in trainer.model.state_dict().items()})

    cfg = RunConfig(data=DataConfig(name="digits", limit=300, validation=50),
                    model=ModelConfig(latent_dim=2, hidden_dims=(16,)),
                    train=TrainConfig(epochs=10, batch_size=100, early_stopping=2, progress=False))
    result = train(cfg, callbacks=[Second()])
    assert len(result.history) == 4
    assert all(torch.equal(value, second[name]) for name, value in result.model.state_dict().items())
