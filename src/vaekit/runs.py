"""A training run end to end: config + data -> model -> Trainer -> run folder (checkpoints, metrics)."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from . import checkpoint
from .config import RunConfig, validate
from .data import Dataset, load_dataset, train_data
from .errors import VaekitError
from .models import Model, build_model
from .train import EpochResult, MetricsLog, Trainer

log = logging.getLogger(__name__)
METRICS_FILE = "metrics.jsonl"


@dataclass(frozen=True)
class RunResult:
    model: Model
    config: RunConfig
    history: list[EpochResult]
    directory: Path | None


def resolve_config(cfg: RunConfig, dataset: Dataset) -> RunConfig:
    """Fill what the data decides: its shape and, for likelihood 'auto', bernoulli on [0, 1] else gaussian."""
    likelihood = cfg.model.likelihood
    if likelihood == "auto":
        low, high = dataset.value_range
        likelihood = "bernoulli" if low >= 0 and high <= 1 else "gaussian"
    model = replace(cfg.model, data_shape=dataset.shape, likelihood=likelihood)
    return validate(replace(cfg, model=model))


class Checkpointer:
    """Saves the model (loadable alone) and the resume state; a failed run keeps the last good files."""

    def __init__(self, directory: Path, config: RunConfig) -> None:
        self.directory, self.config = directory, config

    def on_epoch_end(self, trainer: Trainer, result: EpochResult) -> None:
        last = result.epoch == trainer.cfg.epochs
        if result.epoch % trainer.cfg.checkpoint_every == 0 or last:
            checkpoint.save_pretrained(trainer.model, self.config, self.directory)
            checkpoint.save_resume(self.directory, *trainer.state_dict())


def prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and (out / checkpoint.CONFIG_FILE).exists() and not overwrite:
        raise VaekitError(
            f"{out} already holds a run: continue it with --resume {out}, choose another --out, or pass --overwrite"
        )
    if out.exists() and overwrite:
        # The old model and its config stay until the new run's first checkpoint replaces both, so a run that
        # fails early loses nothing; the old resume state and metrics belong to the old run only.
        for name in (checkpoint.RESUME_STATE, checkpoint.RESUME_TENSORS, METRICS_FILE):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def train(cfg: RunConfig, out: str | Path | None = None, overwrite: bool = False, dataset: Dataset | None = None) -> RunResult:
    """Train a model as configured; with `out`, write the run folder as it goes."""
    dataset = dataset if dataset is not None else load_dataset(cfg.data)
    cfg = resolve_config(cfg, dataset)
    torch.manual_seed(cfg.train.seed)  # weights and posterior samples: same seed, same run
    model = build_model(cfg.model)
    model.likelihood.check_support(dataset.x_train, "the training data")
    callbacks = []
    directory = None
    if out is not None:
        directory = Path(out)
        prepare_out(directory, overwrite)
        if not (directory / checkpoint.MODEL_FILE).exists():  # mark the folder as a run from the start
            checkpoint.write_json(directory / checkpoint.CONFIG_FILE, {"format": checkpoint.FORMAT, **cfg.to_dict()})
        callbacks = [Checkpointer(directory, cfg), MetricsLog(directory / METRICS_FILE)]
    trainer = Trainer(model, cfg.train, callbacks)
    history = trainer.fit(train_data(dataset, cfg.data), dataset.split("test"))
    if directory is not None and not history:
        checkpoint.save_pretrained(trainer.model, cfg, directory)
    return RunResult(checkpoint.unwrap(trainer.model).eval(), cfg, history, directory)


def resume(directory: str | Path, epochs: int | None = None, device: str | None = None,
           threads: int | None = None, progress: bool | None = None) -> RunResult:
    """Continue a run from its last resume state, optionally to a new total number of epochs; where it runs
    (device, threads, progress bar) may change, what it computes may not."""
    directory = Path(directory)
    cfg = checkpoint.load_config(directory)
    runtime = {k: v for k, v in (("epochs", epochs), ("device", device), ("threads", threads),
                                 ("progress", progress)) if v is not None}
    cfg = validate(replace(cfg, train=replace(cfg.train, **runtime)))
    tensors, meta = checkpoint.load_resume(directory)
    metrics = directory / METRICS_FILE
    if metrics.exists():  # epochs logged after the last checkpoint will be trained, and logged, again
        kept = [line for line in metrics.read_text().splitlines()
                if line.strip() and json.loads(line).get("epoch", 0) <= meta["epoch"]]
        metrics.write_text("".join(line + "\n" for line in kept))
    dataset = load_dataset(cfg.data)
    if tuple(dataset.shape) != tuple(cfg.model.data_shape):
        raise VaekitError(f"the data now has shape {dataset.shape}, the run was trained on {cfg.model.data_shape}")
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model)
    callbacks = [Checkpointer(directory, cfg), MetricsLog(directory / METRICS_FILE)]
    trainer = Trainer(model, cfg.train, callbacks)
    try:
        trainer.load_state_dict(tensors, meta)
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise VaekitError(f"the resume state in {directory} does not fit its model ({exc.__class__.__name__}): "
                          "it is corrupt or from another run; start the run again") from None
    if trainer.epoch >= cfg.train.epochs:
        log.info("%s already finished %d epochs: pass --epochs N to train further", directory, trainer.epoch)
    history = trainer.fit(train_data(dataset, cfg.data), dataset.split("test"))
    if trainer.epoch == meta["epoch"]:
        checkpoint.save_pretrained(trainer.model, cfg, directory)  # config may carry the new epoch count
    return RunResult(checkpoint.unwrap(trainer.model).eval(), cfg, history, directory)
