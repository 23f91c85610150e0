"""vaekit train --tensorboard: the run's numbers and pictures as TensorBoard event files in RUN/tensorboard."""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import TENSORBOARD_STAGING, unwrap
from ..errors import VaekitError
from ..extras import install_hint
from ..train import Callback, EpochResult, StepResult, Trainer

log = logging.getLogger(__name__)

PICTURES = 16  # samples and reconstructions drawn per epoch


def summary_writer() -> type:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise VaekitError(f"--tensorboard needs the tensorboard package: {install_hint('tensorboard')}") from None
    _quiet_writer_threads()
    return SummaryWriter


def _quiet_writer_threads() -> None:
    """An event file's write fails in TensorBoard's writer thread, which prints its traceback and leaves the error for
    the next write in the training thread: there vaekit says it in one line (TensorBoardLog._said), so the thread's
    own print of an OSError (a full disk) is dropped. Other threads' errors print as before."""
    try:
        from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread
    except ImportError:  # another tensorboard layout: its threads print as they do
        return
    previous = threading.excepthook
    if getattr(previous, "vaekit_quiet", False):
        return

    def hook(args: Any) -> None:
        if not (isinstance(args.thread, _AsyncWriterThread) and issubclass(args.exc_type, OSError)):
            previous(args)

    hook.vaekit_quiet = True  # type: ignore[attr-defined]
    threading.excepthook = hook


class TensorBoardLog(Callback):
    """Per step: the loss, every term the family reports, the learning rate and the KL weight (train/...). Per epoch:
    the validation numbers (val/...), the epoch means (epoch/...), images per second, and for image data a grid of
    prior samples and one of test items above their reconstructions (the same noise and items every epoch).

    A resumed or rolled-back run continues the same files: events past the step it continues from are dropped
    (TensorBoard's purge_step), so each step appears once. `until` (the run's checkpointer, under --overwrite of a
    run): the new run logs into a hidden folder beside `directory`, which replaces the old run's log once the new
    run's first checkpoint commits (a stop before it leaves the old run's log whole, as its other files)."""

    def __init__(self, directory: str | Path, dataset: Any = None, until: Any = None) -> None:
        self.directory = Path(directory)
        if self.directory.is_symlink():  # (a run folder from elsewhere: its events would go where the link points)
            raise VaekitError(f"{self.directory} is a symbolic link, where a run keeps its TensorBoard events: remove "
                              "it (vaekit writes nothing through it)")
        self.final: Path | None = None
        if until is not None:
            self.final, self.directory = self.directory, self.directory.parent / TENSORBOARD_STAGING
            if self.directory.is_symlink():  # (the link itself goes, not what it points to)
                self.directory.unlink()
            shutil.rmtree(self.directory, ignore_errors=True)  # what a new run stopped before its checkpoint left
            until.first_save.append(self._commit)
        self.writer_class = summary_writer()  # a missing extra is said before training, not after the first epoch
        self.writer: Any = None
        self.pending: list[tuple] = []  # steps not yet written: (step, names, values on the device, lr, kl_scale)
        self.items = None
        self.said_no_samples = False
        if dataset is not None and dataset.is_image:
            count = min(PICTURES // 2, len(dataset.x_test))
            self.items = (dataset.x_test[:count], None if dataset.y_test is None else dataset.y_test[:count])

    @contextlib.contextmanager
    def _said(self):
        """An event file that cannot be written (a full disk): one line, after the epoch's checkpoint is kept."""
        try:
            yield
        except OSError as exc:
            raise VaekitError(f"cannot write TensorBoard events in {self.directory} ({exc.strerror or exc}): free some "
                              f"space, then continue from the last checkpoint (vaekit train --resume "
                              f"{self.directory.parent})") from None

    def _open(self, trainer: Trainer) -> None:
        with self._said():
            self._reopen(trainer)

    def _reopen(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self._flush_steps()
            self.writer.close()
        # TensorBoard reads a folder's event files in name order, and a name starts with the second it was made in:
        # a new file must sort after the files already there for its purge to apply to them.
        newest = max((int(m.group(1)) for path in self.directory.glob("events.out.tfevents.*")
                      if (m := re.match(r"events\.out\.tfevents\.(\d+)\.", path.name))), default=0)
        if newest <= time.time() < newest + 1:  # (a file from a clock ahead of this one is not waited for)
            time.sleep(max(0.0, newest + 1 - time.time()))
        # Events from this step on, in files a stopped run (or one --overwrite replaces) left, are dropped.
        self.writer = self.writer_class(str(self.directory), purge_step=trainer.step + 1)

    def on_fit_begin(self, trainer: Trainer) -> None:
        self._open(trainer)

    def _commit(self, trainer: Trainer) -> None:
        """The new run's first checkpoint has committed: its log replaces the old run's, and it goes on in a new event
        file there (TensorBoard's writer reopens its file by name)."""
        if self.final is None:
            return
        with self._said():
            if self.writer is not None:
                self._flush_steps()
                self.writer.close()
                self.writer = None
            shutil.rmtree(self.final, ignore_errors=True)
            os.replace(self.directory, self.final)
            self.directory, self.final = self.final, None
            self._reopen(trainer)

    def on_rollback(self, trainer: Trainer) -> None:
        self._open(trainer)  # the steps after the state rolled back to are trained again: their old events go

    def on_step_end(self, trainer: Trainer, step: StepResult) -> None:
        # Kept on the device and read in one go where the trainer reads it anyway (every step on a CPU, every 25
        # steps on a GPU), so logging adds no wait for the GPU.
        values = torch.stack([step.loss.float(), *(v.float() for v in step.terms.values())])
        self.pending.append((step.step, ["loss", *step.terms], values, step.lr, step.kl_scale))
        if trainer.read_every_step or step.step % 25 == 0:
            self._flush_steps()

    def _flush_steps(self) -> None:
        if not self.pending:
            return
        with self._said():
            self._write_steps()

    def _write_steps(self) -> None:
        numbers = torch.stack([values for _, _, values, _, _ in self.pending]).tolist()
        add = self.writer.add_scalar
        for (step, names, _, lr, kl_scale), row in zip(self.pending, numbers):
            for name, value in zip(names, row):
                add(f"train/{name}", value, step)
            add("train/lr", lr, step)
            add("train/kl_scale", kl_scale, step)
        self.pending = []

    def on_epoch_end(self, trainer: Trainer, result: EpochResult) -> None:
        self._flush_steps()
        with self._said():
            self._write_epoch(trainer, result)

    def _write_epoch(self, trainer: Trainer, result: EpochResult) -> None:
        add = self.writer.add_scalar
        for name, value in result.train.items():
            add(f"epoch/train_{name}", value, result.step)
        for name, value in (result.val or {}).items():
            add(f"val/{name}", value, result.step)
        add("epoch/images_per_s", result.images_per_s, result.step)
        add("epoch/skipped_steps", result.skipped, result.step)
        if self.items is not None:
            samples, pairs = self.pictures(trainer)
            # the PNG files' grids: enlarged to a readable size, padded; inputs in the top row, their
            # reconstructions below
            if samples is not None:
                self._add_grid("samples", samples, 8, result.step)
            self._add_grid("reconstructions", pairs, len(pairs) // 2, result.step)
        self.writer.flush()

    def _add_grid(self, tag: str, images: np.ndarray, ncol: int, step: int) -> None:
        from ..viz import image_grid

        grid = np.asarray(image_grid(images, ncol=ncol))
        self.writer.add_image(tag, grid, step, dataformats="HW" if grid.ndim == 2 else "HWC")

    @torch.no_grad()
    def pictures(self, trainer: Trainer) -> tuple[np.ndarray | None, np.ndarray]:
        """(N, C, H, W) in [0, 1]: prior samples (fixed noise; None while the model cannot sample, e.g. a vqvae before
        its prior stage), and the test items above their reconstructions."""
        model = unwrap(trainer.model)
        was_training = model.training
        model.eval()
        try:
            generator = torch.Generator().manual_seed(0)
            labels = (torch.arange(PICTURES) % model.num_labels).to(model.device) if model.num_labels else None
            try:
                samples = model.sample(PICTURES, labels, generator=generator)
            except VaekitError as exc:
                if not self.said_no_samples:
                    log.info("TensorBoard gets no samples: %s", exc)
                    self.said_no_samples = True
                samples = None
            x, y = self.items
            x = x.to(model.device)
            y = None if y is None or not model.num_labels else y.to(model.device)
            pairs = torch.cat([x, model.reconstruct(x, y)])
        finally:
            model.train(was_training)
        return (None if samples is None else samples.float().clamp(0, 1).cpu().numpy(),
                pairs.float().clamp(0, 1).cpu().numpy())

    def on_interrupt(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self._flush_steps()
            with self._said():
                self.writer.flush()

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self._flush_steps()
            with self._said():
                self.writer.close()
            self.writer = None
