"""A training run end to end: config + data -> model -> Trainer -> run folder (checkpoints, metrics)."""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import secrets
import shutil
import stat
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import torch

from . import checkpoint, distributed
from .config import ModelConfig, RunConfig, TrainConfig, validate, with_defaults
from .data import Dataset, TensorData, fingerprint, hold_out, load_dataset, resolved_name, train_data, user_file
from .data.user import check_data_flags, for_new_runs
from .data.tables import run_table
from .errors import Interrupted, VaekitError
from .models import MODEL_FAMILIES, Model, build_model, check_processes, model_shapes
from .train import Callback, EpochResult, MetricsLog, Trainer, planned_epochs, resolve_device

log = logging.getLogger(__name__)
METRICS_FILE = "metrics.jsonl"
LOCK_FILE = ".lock"
KL_WARNING = 3.0  # a table model's mean KL above this many times log N (at least 2) gets a warning (table_warnings)


@dataclass(frozen=True)
class RunResult:
    model: Model
    config: RunConfig
    history: list[EpochResult]
    directory: Path | None
    warnings: tuple[str, ...] = ()  # what the settings and data (a code larger than an item, classes without
    # training items) and the trained model's numbers (a table's: table_warnings) say went wrong


def resolve_config(cfg: RunConfig, dataset: Dataset, judged: TensorData | None = None) -> RunConfig:
    """Fill what the data decides: its shape, the number of classes of a label-conditioned model (and those without
    training items) and, for likelihood 'auto', bernoulli on [0, 1] else gaussian, or the table likelihood with the
    table's columns; the family's and likelihood's settings written out. `judged`: the validation split held out of
    the training items (hold_out), whose classes count too."""
    likelihood = cfg.model.likelihood
    options = dict(cfg.model.options)
    if dataset.table is not None:  # a table: each column its own likelihood, its columns stored with the model
        if likelihood not in ("auto", "table"):
            raise VaekitError(f"{dataset.name} is a table, modelled column by column by the table likelihood: drop "
                              f"--likelihood {likelihood} (--table-std sets a fixed std for its numeric columns)")
        likelihood = "table"
        options["table"] = replace(cfg.model.settings("table"), columns=dataset.table.to_dicts())
    elif likelihood == "table":
        raise VaekitError(f"the table likelihood needs a table, but {dataset.name} is not one: give a .csv, .tsv or "
                          ".parquet file, or choose another --likelihood")
    elif likelihood == "auto":
        low, high = dataset.value_range
        likelihood = "bernoulli" if low >= 0 and high <= 1 else "gaussian"
    num_labels, label_names, untrained = cfg.model.num_labels, cfg.model.label_names, cfg.model.untrained_labels
    if cfg.model.condition == "label":
        if not num_labels and dataset.label_names:  # a new run (a resumed one keeps what it was trained with)
            label_names = tuple(dataset.label_names)
        num_labels = max(num_labels, dataset_classes(dataset, judged))
        untrained = untrained_classes(dataset, num_labels)  # (resolved for new runs only: a resume keeps its config)
    family = MODEL_FAMILIES.get(cfg.model.family)
    if family is not None and family.Settings is not None:  # what the family's own settings take from the data
        options[family.family] = family.settings_from_data(cfg.model.settings(family.family), dataset)
    model = replace(cfg.model, data_shape=dataset.shape, likelihood=likelihood, num_labels=num_labels,
                    label_names=label_names, untrained_labels=untrained, options=options)
    return validate(replace(cfg, model=with_defaults(model)))


def dataset_classes(dataset: Dataset, judged: TensorData | None = None) -> int:
    """The number of classes of a labelled data set (and of its validation split held out, `judged`); a clear error
    for data without labels."""
    if dataset.y_train is None or dataset.y_test is None:
        raise VaekitError(f"--condition label needs class labels, but {dataset.name} has none: drop --condition "
                          "label, or give labelled data (e.g. --label-column for a CSV)")
    ys = (dataset.y_train, dataset.y_test, *([judged.y] if judged is not None and judged.y is not None else []))
    for y in ys:  # (a fraction was cut to a class in silence, merging two)
        if y.dtype == torch.bool or y.dtype.is_complex or (y.dtype.is_floating_point and y.numel() and not bool(
                torch.isfinite(y).all() and (y == y.round()).all())):
            raise VaekitError(f"--condition label needs class indices 0..N-1, but {dataset.name}'s labels are "
                              f"{'fractions' if y.dtype.is_floating_point else y.dtype}: relabel the classes 0..N-1 "
                              "(ints)")
    if dataset.label_names:
        classes = len(dataset.label_names)
        high = max((int(y.max()) for y in ys if y.numel()), default=0)
        low = min((int(y.min()) for y in ys if y.numel()), default=0)
        if low < 0 or high >= classes:  # (a compiled step takes the labels as checked here)
            raise VaekitError(f"{dataset.name} names {classes} classes, but its labels are in [{low}, {high}]: give "
                              f"labels 0..{classes - 1}, label i naming class label_names[i]")
    else:
        low = min((int(y.min()) for y in ys if y.numel()), default=0)
        high = max((int(y.max()) for y in ys if y.numel()), default=0)
        if low < 0 or high >= 10_000:
            raise VaekitError(f"--condition label needs class indices 0..N-1 (N below 10,000), but {dataset.name} "
                              f"has labels in [{low}, {high}]: relabel the classes 0..N-1")
        classes = high + 1
    if classes < 2:
        raise VaekitError(f"--condition label needs at least 2 classes, but {dataset.name} has one: there is "
                          "nothing to condition on; drop --condition label")
    return classes


def untrained_classes(dataset: Dataset, classes: int) -> tuple[int, ...]:
    """The classes 0..classes-1 without training items: a conditioned model's embedding of their labels (and a
    prior's components of theirs) train on nothing."""
    seen = set(dataset.y_train.long().unique().tolist())
    return tuple(c for c in range(classes) if c not in seen)


def class_list(indices: Sequence[int], names: Sequence[str]) -> str:
    """"class 3" or "classes 3, 5, person 7 ...": the classes of `indices`, by name where `names` has one."""
    shown = [names[c] if c < len(names) else str(c) for c in indices]
    return f"class{'es' * (len(shown) > 1)} {', '.join(shown[:10])}{' ...' * (len(shown) > 10)}"


def untrained_warning(cfg: ModelConfig) -> str | None:
    """What a new conditioned run says of its classes without training items (resolve_config finds them)."""
    unseen, many = cfg.untrained_labels, len(cfg.untrained_labels) > 1
    if not unseen:
        return None
    return (f"{class_list(unseen, cfg.label_names)} {'have' if many else 'has'} no training items (of "
            f"{cfg.num_labels} classes{'' if cfg.label_names else ', numbered 0 to the largest label'}): a model "
            f"conditioned on {'them' if many else 'it'} decodes {'them' if many else 'it'} with what it never "
            f"learned; give each class training items"
            f"{'' if cfg.label_names else ', or number the classes 0..N-1 without gaps'}")


def table_warnings(model: Model, dataset: Dataset) -> list[str]:
    """What a trained table model's numbers say went wrong: no active latent units (posterior collapse), or a KL
    far above log N, the most information a code can carry about one of N training rows (unscaled features)."""
    from . import metrics  # late import: metrics builds on the models

    was_training = model.training
    model.eval()
    try:
        x, y = dataset.x_train, dataset.y_train if model.num_labels else None
        warnings = []
        if model.has_bound:
            kl = metrics.closed_form_kl(model, x, y)
            if kl is not None and float(kl.mean()) > KL_WARNING * max(math.log(len(x)), 2.0):
                warnings.append(
                    f"the mean KL on the training rows is {float(kl.mean()):.1f} nats, far above the "
                    f"{math.log(len(x)):.1f} nats (log N) a code needs to tell {len(x)} rows apart: the features are "
                    "likely on wildly different scales (keep standardisation on) or the model is far from converged")
        if x.shape[0] >= 2 and metrics.active_units(model, x, y=y) == 0:
            warnings.append("no latent dimension is active (posterior collapse): every row gets the same code, so the "
                            "latent space shows nothing; train longer, lower --beta, or use --kl-warmup-epochs")
        return warnings
    finally:
        model.train(was_training)


class Checkpointer(Callback):
    """Saves the model (loadable alone) and the resume state where the trainer says a checkpoint is due and its
    state is good (trainer.save_now: every train.checkpoint_every epochs, the last epoch, every
    train.checkpoint_steps steps), and when a stop is asked for; a failed run keeps the last good files. `run_id`
    names the run in what it writes; `saved`: whether the folder holds this run's state (a resumed run does)."""

    def __init__(self, directory: Path, config: RunConfig, run_id: str, saved: bool = False) -> None:
        self.directory, self.config, self.run_id, self.saved = directory, config, run_id, saved
        self.first_save: list[Any] = []  # called with the trainer once this run's first checkpoint has committed

    def save(self, trainer: Trainer) -> None:
        with trainer.keeping() as kept:  # the best epoch's weights under early stopping; the resume state the last
            checkpoint.save_pretrained(kept, self.config, self.directory, self.run_id)
        checkpoint.save_resume(self.directory, *trainer.state_dict(), self.run_id)
        first, self.saved = not self.saved, True
        for hook in self.first_save if first else ():
            hook(trainer)

    def on_epoch_end(self, trainer: Trainer, result: EpochResult) -> None:
        if trainer.save_now:
            self.save(trainer)

    def on_interrupt(self, trainer: Trainer) -> None:
        self.save(trainer)

    def on_rollback(self, trainer: Trainer) -> None:
        # The state rolled back to, with its lower learning rate, is what a resume continues; before this run's
        # first checkpoint the folder holds what it began with (and, under --overwrite, the old run stays whole).
        if self.saved:
            self.save(trainer)


class StepCheckpointer(Checkpointer):
    """Also every train.checkpoint_steps steps, inside epochs (a separate class: without it, no per-step hook)."""

    def on_step_end(self, trainer: Trainer, step) -> None:
        if trainer.save_now:
            self.save(trainer)


def checkpointer(directory: Path, config: RunConfig, run_id: str, saved: bool = False) -> Checkpointer:
    return (StepCheckpointer if config.train.checkpoint_steps else Checkpointer)(directory, config, run_id, saved)


@contextlib.contextmanager
def run_lock(directory: Path):
    """Hold the run folder's lock (an flock on RUN/.lock) while writing to it: a second writer gets an error."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): no lock
        yield
        return
    path = directory / LOCK_FILE
    try:  # not through a symbolic link (a folder from elsewhere): the lock would empty the file it points to
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR):
            raise VaekitError(f"{path} is {'a symbolic link' if exc.errno == errno.ELOOP else 'a folder'}, where a "
                              "run keeps its lock file: remove it (vaekit writes nothing through it)") from None
        raise VaekitError(f"cannot write in {directory} ({exc.strerror}): choose a folder you can write to") from None
    held = os.fstat(descriptor)
    if not stat.S_ISREG(held.st_mode) or held.st_nlink > 1:  # (a hard link's other name may be a user's file)
        os.close(descriptor)
        what = "a special file" if not stat.S_ISREG(held.st_mode) else "a hard link to another file"
        raise VaekitError(f"{path} is {what}, where a run keeps its lock file: remove it (vaekit writes nothing "
                          "through it)")
    handle = os.fdopen(descriptor, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise VaekitError(f"{directory} is being written by another vaekit run ({holder}): wait for it to end, "
                              "or choose another --out") from None
        try:  # who holds it, for the next writer's message: best effort (a full disk is said by check_space)
            handle.truncate(0)
            os.write(handle.fileno(), f"pid {os.getpid()}".encode())
        except OSError:
            pass
        # every write makes a file beside its target first: said now, not after an epoch of training
        _write_probe(directory, f"cannot write in {directory}", "make the run folder writable")
        yield
    finally:
        handle.close()  # closing releases the lock


def check_out(out: Path) -> None:
    """--out must be a folder vaekit can create and write in: said before any training."""
    if out.exists() and not out.is_dir():
        raise VaekitError(f"--out {out} is a file, not a folder: choose a folder for the run")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise VaekitError(f"--out {out}: {parent} is a file, so no folder can be made under it")
            break
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VaekitError(f"cannot write in --out {out} ({exc.strerror or exc.__class__.__name__}): choose a folder "
                          "you can write to") from None
    _write_probe(out, f"cannot write in --out {out}", "choose a folder you can write to")


def _write_probe(directory: Path, problem: str, fix: str) -> None:
    """Make and remove a file in `directory`, or a VaekitError `problem (reason): fix`."""
    try:
        handle, probe = tempfile.mkstemp(prefix=".vaekit-write-test.", dir=directory)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise VaekitError(f"{problem} ({exc.strerror or exc.__class__.__name__}): {fix}") from None


def check_training_memory(model: Any, early_stopping: bool, device: torch.device, here: distributed.World,
                          fix: str) -> None:
    """Before a model is built to train: what training holds in this machine's memory must fit in half of it. On
    the CPU: the weights, their gradients and Adam's two moments, and the copy of weights and moments kept to roll
    back to (7 times the weights; 2 more with early stopping, its best weights and their copy); on a GPU, the live
    state is there and this machine holds the copy (4 times); in each of the processes on this machine. A model that passed the
    check of its weights alone was killed by the system at 23.8 GB (1.8G parameters: 6.9 GiB of weights)."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", here.size))  # --nproc's processes on this machine
    copies = ((7 if device.type == "cpu" else 4) + 2 * early_stopping) * local
    model_shapes(model, fix, copies=copies, what=f"training the model ({copies} times its weights: them, their "
                 "gradients, Adam's two moments and the copy kept to roll back to"
                 f"{', and the best epoch' if early_stopping else ''})")


def check_space(directory: Path, model: torch.nn.Module, early_stopping: bool = False,
                fix: str = "free some space, or choose another --out") -> None:
    """Before training: room for checkpoints, said now rather than after the first epoch. A run folder holds the
    model (model.safetensors) and a resume state (the model again and Adam's two moments: 3x); a new resume state is
    written beside the old one before the old goes, so at its peak the folder holds 7x the model's bytes. What the
    folder's checkpoint files take now counts as room."""
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    held = sum(path.stat().st_size for path in [directory / checkpoint.MODEL_FILE, *checkpoint.resume_files(directory)]
               if path.is_file())
    copies = 7 + (2 if early_stopping else 0)  # early stopping: each resume state holds the best weights too
    needed = copies * size + 2**20 - held  # and a megabyte for config, metrics and pictures
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return
    if free < needed:
        raise VaekitError(f"{directory} has {free / 2**20:.1f} MiB free, but checkpoints of this model need about "
                          f"{needed / 2**20:.1f} MiB: {fix}")


@contextlib.contextmanager
def _naming_run(directory: Path | None):
    """A stop signal's Interrupted, with the run folder it stopped (for the one line that says how to go on)."""
    try:
        yield
    except Interrupted as stop:
        stop.run = None if directory is None else str(directory)
        raise


def _stop_asked(trainer: Trainer, directory: Path | None) -> None:
    """A stop signal that came during a run's last step, validation or final checkpoint, honoured once the run is
    saved whole (it was dropped: vaekit compare went on to its next model and exited 0). A run kept in memory only
    (no folder: vaekit.train without out, scikit-learn's fit) is returned whole instead, not lost to the stop."""
    if trainer.stop_signal is not None and directory is not None:
        stop = Interrupted(trainer.stop_signal, trainer.step, finished=True)
        stop.run = None if directory is None else str(directory)
        raise stop


def _remove_empty_run(directory: Path) -> None:
    """A run folder this call made, with nothing in it but its lock: removed (anything else in it stays)."""
    try:
        (directory / LOCK_FILE).unlink(missing_ok=True)
        directory.rmdir()
    except OSError:
        pass


def prepare_out(out: Path, overwrite: bool) -> None:
    check_out(out)
    if out.exists() and (out / checkpoint.CONFIG_FILE).exists() and not overwrite:
        raise VaekitError(
            f"{out} already holds a run: continue it with --resume {out} (Python: vaekit.resume), choose another "
            f"--out, or pass --overwrite (Python: overwrite=True)"
        )
    # With --overwrite the old run stays whole until the new one has its first checkpoint: that replaces the model
    # and config, commits a resume state that retires the old one, and rewrites metrics.jsonl (MetricsLog).


@contextlib.contextmanager
def main_first(here: distributed.World, what: str):
    """What only the main process does (it alone writes the run folder) before the others go on: they wait, and stop
    too if it failed."""
    if not here.main:
        distributed.agree(True, here, what)
        yield
        return
    try:
        yield
    except BaseException:
        distributed.agree(False, here, what)
        raise
    distributed.agree(True, here, what)


def extra_loggers(cfg: RunConfig, directory: Path, dataset: Dataset, until: Any = None) -> list[Any]:
    """The optional experiment logs a run's config asks for (the main process's). until: the checkpointer of a run
    replacing another (--overwrite), whose logs replace the old run's at its first checkpoint."""
    if not cfg.train.tensorboard:
        return []
    from .integrations.tensorboard import TensorBoardLog

    return [TensorBoardLog(directory / "tensorboard", dataset, until=until)]


def train(cfg: RunConfig, out: str | Path | None = None, overwrite: bool = False, dataset: Dataset | None = None,
          callbacks: list[Any] | None = None, log_warnings: bool = True, data_from_config: bool = False) -> RunResult:
    """Train a model as configured; with `out`, write the run folder as it goes. `callbacks`: objects with any of
    the Trainer's hooks (vaekit.train.Callback), called after vaekit's own (checkpoints, metrics.jsonl). The
    warnings about the settings (as training starts) and the trained model are logged (unless log_warnings is off)
    and returned in the result. `dataset`:
    data built in Python, which the run's config.json cannot name (data.json records what it held); or, with
    data_from_config, the data cfg.data names, already loaded.

    Under torchrun every process calls this; only process 0 writes the run folder (callbacks run in every process:
    trainer.world says which one)."""
    given = dataset is not None and not data_from_config  # data config.json cannot name
    if not given:
        check_data_flags(cfg.data, say=distributed.world().main)  # said once, not by every process of --nproc
    cfg = drop_unweighed(cfg, say=distributed.world().main)
    if cfg.train.epochs == 0:  # allowed (an untrained baseline), but said: it printed only the run's folder
        log.warning("--epochs 0: the run holds the untrained model, its weights as initialised")
    if dataset is None:
        with for_new_runs():
            dataset = load_dataset(cfg.data)
    # what a file of the user's, or data given in Python, held when the run trained: for data.json (its fingerprint,
    # not the data set: with a validation split held out below, that would keep a second copy of the training data)
    checked = fingerprint(dataset) if given or user_file(cfg.data.name) else None
    if checked is not None and not given:  # where the file is, for commands on the run from any folder (inputs_kept)
        checked = {**checked, "path": resolved_name(cfg.data.name)}
    # what each epoch is judged on: the test split, or training items held out (--validation; early stopping)
    dataset, judged = hold_out(dataset, cfg.data, cfg.train.early_stopping is not None)
    default = TrainConfig().batch_size  # (a small table under the default batch is trained in one step unsaid)
    if cfg.train.batch_size > max(len(dataset.x_train), default) and distributed.world().main:
        log.warning("--batch-size %d is more than the %s training items: each epoch is one step over all of them, "
                    "with their activations in memory at once; a smaller batch (the default, %d) takes more steps",
                    cfg.train.batch_size, f"{len(dataset.x_train):,}", default)
    cfg = resolve_config(cfg, dataset, judged)
    if cfg.train.tensorboard and out is None:
        raise VaekitError("--tensorboard writes into the run folder: give --out")
    if cfg.train.tensorboard:  # its package, before the run folder is made: a missing extra leaves no half-made run
        from .integrations.tensorboard import summary_writer

        summary_writer()
    here = distributed.setup(resolve_device(cfg.train.device))
    check_processes(cfg.model, here.size, cfg.train.batch_size)  # before the run folder
    check_training_memory(cfg.model, cfg.train.early_stopping is not None, resolve_device(cfg.train.device), here,
                          "choose a smaller --latent-dim, --hidden-dims or --conv-channels")
    torch.manual_seed(cfg.train.seed)  # weights and posterior samples: same seed, same run
    model = build_model(cfg.model)
    model.likelihood.check_support(dataset.x_train, "the training data")
    values = math.prod(cfg.model.data_shape)
    discrete = type(model).discrete_codes is not Model.discrete_codes  # (a codebook's code is its indices: the VQ-VAE)
    early = list(filter(None, [untrained_warning(cfg.model)]))
    if cfg.model.latent_dim > values and not discrete:  # a code as large as the data
        early.append(f"--latent-dim {cfg.model.latent_dim} is more than the {values} values "
                     f"{'a row is encoded as' if dataset.table is not None else 'of an item'}: the code cannot "
                     "compress the data (an autoencoder can copy it through; a VAE leaves the extra dimensions "
                     "unused); choose a smaller --latent-dim")
    for warning in early if log_warnings and distributed.world().main else ():
        log.warning("%s", warning)
    labels = _label_argument(model.init_from_data) if model.num_labels else None
    if labels == "positional":  # the labels its encoder takes
        model.init_from_data(dataset.x_train, dataset.y_train)
    elif labels == "keyword":
        model.init_from_data(dataset.x_train, y=dataset.y_train)
    else:  # (a family written before the hook took labels overrides init_from_data(self, x))
        model.init_from_data(dataset.x_train)
    own: list[Any] = []
    directory = None
    with contextlib.ExitStack() as held:
        if out is not None:
            directory = Path(out)
            with main_first(here, "prepare the run folder"):
                if here.main:
                    made = not directory.exists()
                    check_out(directory)
                    held.enter_context(run_lock(directory))
                    checkpoint.remove_temporaries(directory)
                    prepare_out(directory, overwrite)
                    try:
                        check_space(directory, model, cfg.train.early_stopping is not None)
                    except VaekitError:
                        if made:  # no run begun: the folder made for it goes (it held only its lock)
                            _remove_empty_run(directory)
                        raise
                    run_id = secrets.token_hex(8)
                    replacing = (directory / checkpoint.MODEL_FILE).exists()  # --overwrite of a run with weights
                    if not replacing:  # mark the folder as a run from the start
                        checkpoint.write_config(directory, cfg)
                        checkpoint.write_start(directory, run_id)
                        checkpoint.write_data_check(directory, checked, given)
                        # an --overwrite of a run stopped before any checkpoint (no weights to keep): its epochs'
                        # lines go now, as the folder is the new run's from here on
                        (directory / METRICS_FILE).unlink(missing_ok=True)
                    saver = checkpointer(directory, cfg, run_id)
                    if replacing:  # the old run's data.json stays with it until the new run's first checkpoint
                        saver.first_save.append(lambda _: checkpoint.write_data_check(directory, checked, given))
                    until = saver if replacing else None
                    own = [saver, MetricsLog(directory / METRICS_FILE, until=until),
                           *extra_loggers(cfg, directory, dataset, until)]
        trainer = Trainer(model, cfg.train, [*own, *(callbacks or [])])
        with _naming_run(directory):
            history = trainer.fit(train_data(dataset, cfg.data), judged)
        if directory is not None and not history and here.main:
            checkpoint.save_pretrained(trainer.model, cfg, directory, run_id)
        distributed.barrier(here)
        trainer.keep_best()
        _stop_asked(trainer, directory)
    after = table_warnings(checkpoint.unwrap(trainer.model), dataset) if dataset.table is not None and history else []
    for warning in after if log_warnings else ():
        log.warning("%s", warning)
    warnings = (*early, *after)
    model = checkpoint.unwrap(trainer.model).eval()
    model.run_config = cfg  # what save_pretrained writes beside it (the data and training too)
    return RunResult(model, cfg, history, directory, warnings)


def drop_unweighed(cfg: RunConfig, say: bool = True) -> RunConfig:
    """A new run of a family without a regularizer (a plain AE): model.beta and train.kl_warmup_epochs weigh nothing
    there, yet the warm-up held back early stopping. They are dropped, with a warning (a recipe may set them for
    other families), so that config.json records what the run did."""
    family = MODEL_FAMILIES.get(cfg.model.family)
    if family is None or family.has_regularizer:
        return cfg
    unused = [f"{flag} {value:g} ({name})" for flag, name, value in (
        ("--beta", "model.beta", cfg.model.beta if cfg.model.beta != 1.0 else None),
        ("--kl-warmup-epochs", "train.kl_warmup_epochs", cfg.train.kl_warmup_epochs or None)) if value is not None]
    if unused and say:
        log.warning("the %s family's objective has no regularizer to weigh: %s unused, dropped", cfg.model.family,
                    " and ".join(unused))
    return replace(cfg, model=replace(cfg.model, beta=1.0), train=replace(cfg.train, kl_warmup_epochs=0.0))


# The training settings a resumed run may change (resume's keywords): its length, and where and how fast it runs
RESUMABLE = ("epochs", "minutes", "device", "threads", "progress", "compile", "tensorboard")


def resume(directory: str | Path, epochs: int | None = None, device: str | None = None,
           threads: int | None = None, progress: bool | None = None, callbacks: list[Any] | None = None,
           compile: bool | None = None, tensorboard: bool | None = None, minutes: float | None = None,
           dataset: Dataset | None = None, data: str | Path | None = None) -> RunResult:
    """Continue a run from its last resume state, optionally to a new total number of epochs or a new time limit
    (minutes, counting the run's training so far); where it runs (device, threads, compile), its progress bar and its
    TensorBoard log may change, what it computes may not. `dataset`: the data a run trained with train(dataset=...)
    was given, again; by default the run's config.json names its data. `data`: the path the run's own data file or
    folder has moved to, read as the run read it and checked against the run's record of it (data.json); config.json
    keeps the path it trained from (other commands take the new one as --data)."""
    directory = Path(directory)
    cfg = checkpoint.load_config(directory)
    if data is not None and dataset is not None:
        raise VaekitError("give the run's data as a moved file (data=) or as data in Python (dataset=), not both")
    progress = TrainConfig().progress if progress is None else progress  # this call's bar, not the run's last call's
    given = dict(epochs=epochs, minutes=minutes, device=device, threads=threads, progress=progress, compile=compile,
                 tensorboard=tensorboard)
    runtime = {k: given[k] for k in RESUMABLE if given[k] is not None}
    if checkpoint.never_checkpointed(directory):
        # stopped before or during its first checkpoint: nothing was kept, so the run starts again from its config
        log.warning("%s has no checkpoint yet: training it from the start", directory)
        moved = {} if data is None else {"data": replace(cfg.data, name=str(data))}  # a fresh start reads it there
        return train(replace(cfg, train=replace(cfg.train, **runtime), **moved), out=directory, overwrite=True,
                     callbacks=callbacks, dataset=dataset)
    if data is not None:
        dataset = moved_data(directory, cfg, str(data))
    here = distributed.setup(resolve_device(device or cfg.train.device))
    check_processes(cfg.model, here.size)
    with contextlib.ExitStack() as held:
        with main_first(here, "open the run folder"):
            if here.main:
                held.enter_context(run_lock(directory))
                checkpoint.remove_temporaries(directory)
        return _resume(directory, cfg, runtime, callbacks, here, dataset)


def moved_data(directory: Path, cfg: RunConfig, path: str) -> Dataset:
    """The run's own data read from where it moved to, as the run read it, and checked to be the same items."""
    from .data import DATASETS, _import_loaders

    _import_loaders()
    if cfg.data.name in DATASETS:
        raise VaekitError(f"{directory} trained on vaekit's {cfg.data.name} data set, which has no file to move: drop "
                          "--data")
    if not (directory / checkpoint.DATA_FILE).is_file():
        raise VaekitError(f"{directory} keeps no record of the data it trained on ({checkpoint.DATA_FILE}), so {path} "
                          f"cannot be checked to be that data: put the data back where config.json names it "
                          f"({cfg.data.name}), or train a new run on {path}")
    dataset = load_dataset(replace(cfg.data, name=path), run_table(cfg, replace(cfg.data, name=path)))
    dataset = checkpoint.labels_as_read(directory, cfg, dataset)
    checkpoint.check_data(directory, dataset, path)
    log.info("resuming on %s, checked to be the data the run trained on (its config.json still names %s)", path,
             cfg.data.name)
    try:  # where the data is now, which commands on the run keep their outputs off (cli.common.command_inputs)
        record = json.loads((directory / checkpoint.DATA_FILE).read_text())
        if isinstance(record, dict) and distributed.world().main:
            checkpoint.write_json(directory / checkpoint.DATA_FILE, {**record, "path": resolved_name(path)})
    except (OSError, ValueError):
        pass
    return dataset


def run_data(directory: Path, cfg: RunConfig, dataset: Dataset | None, what: str) -> Dataset:
    """The data a run trained on, to `what` it (resume it, train a stage): `dataset` if given, else what its config
    names, a table read with the run's own statistics, checked against what the run read (data.json); both checked
    against the model's data shape."""
    if dataset is None:
        dataset = checkpoint.labels_as_read(directory, cfg, load_dataset(cfg.data, run_table(cfg)))
        checkpoint.check_data(directory, dataset, cfg.data.name)
    else:
        checkpoint.check_data(directory, dataset, None)
    if tuple(dataset.shape) != tuple(cfg.model.data_shape):
        raise VaekitError(f"the data to {what} the run on has items of shape {tuple(dataset.shape)}, but the run was "
                          f"trained on {tuple(cfg.model.data_shape)}: give its own data (from Python, a run trained on "
                          "a Dataset takes it again as dataset=)")
    return dataset


def _resume(directory: Path, cfg: RunConfig, runtime: dict[str, Any], callbacks: list[Any] | None,
            here: distributed.World, given: Dataset | None = None) -> RunResult:
    planned = cfg.train.epochs
    epochs = runtime.get("epochs")
    cfg = validate(replace(cfg, train=replace(cfg.train, **runtime)))
    tensors, meta = checkpoint.load_resume(directory)
    # metrics.jsonl is rewritten from the history saved with the resume state: lines of epochs trained after the
    # last checkpoint (trained again now), a line lost or cut short by a crash, all come out as committed.
    history = meta.get("history", [])
    needed = {"epoch", "step", "train_loss", "val_loss", "lr", "kl_scale", "seconds", "images_per_s"}

    def number(value: Any) -> bool:
        return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))

    if (not isinstance(history, list) or not all(isinstance(row, dict) and needed <= set(row)
                                                 and all(number(v) for v in row.values()) for row in history)
            or not isinstance(meta["epoch"], int) or not isinstance(meta["step"], int)
            or meta["epoch"] != len(history) or meta["step"] < meta["epoch"]
            or [row["epoch"] for row in history] != list(range(1, len(history) + 1))):
        raise VaekitError(f"the resume state in {directory} is corrupt (its epoch, step and history disagree): "
                          "start the run again")
    if epochs is not None and epochs < meta["epoch"]:
        raise VaekitError(f"{directory} has already trained {meta['epoch']} epochs: --epochs counts all epochs, so give "
                          f"at least {meta['epoch']} (its config keeps {planned})")
    dataset = run_data(directory, cfg, given, "resume")
    dataset, judged = hold_out(dataset, cfg.data, cfg.train.early_stopping is not None)  # the run's own split
    # config.json's model against the resume state's tensors before it takes memory (as checkpoint.load does)
    shapes = model_shapes(cfg.model, f"{directory / checkpoint.CONFIG_FILE} asks for it: restore that file if it was "
                                     "edited")
    held = {name[len("model."):]: tuple(tensor.shape) for name, tensor in tensors.items() if name.startswith("model.")}
    if shapes is not None and shapes != held:
        raise VaekitError(f"the resume state in {directory} does not fit its model (its tensors are of another "
                          "model): it is corrupt or from another run; start the run again")
    check_training_memory(cfg.model, cfg.train.early_stopping is not None, resolve_device(cfg.train.device), here,
                          "resume it on a machine with more memory")
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, saved=True)
    run_id = meta.get(checkpoint.RUN_KEY)  # the run continues under its own id (None: written before run ids)
    run_id = run_id if isinstance(run_id, str) else None
    own: list[Any] = []
    with main_first(here, "prepare the run folder"):
        if here.main:
            check_space(directory, model, cfg.train.early_stopping is not None)
            own = [checkpointer(directory, cfg, run_id, saved=True), MetricsLog(directory / METRICS_FILE),
                   *extra_loggers(cfg, directory, dataset)]
            checkpoint.write_lines(directory / METRICS_FILE, [json.dumps(row) for row in history])
    trainer = Trainer(model, cfg.train, [*own, *(callbacks or [])])
    try:
        trainer.load_state_dict(tensors, meta)
        del tensors  # (loaded into the model and its optimiser: not held beside them for the whole run)
    except (KeyError, RuntimeError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise VaekitError(f"the resume state in {directory} does not fit its model ({exc.__class__.__name__}): "
                          "it is corrupt or from another run; start the run again") from None
    if trainer.stopped_early:
        log.info("%s stopped early after %d epochs (its validation loss stopped improving): nothing to train; start "
                 "a new run for more", directory, trainer.epoch)
    elif trainer.epoch >= cfg.train.epochs:
        log.info("%s already finished %d epochs: pass --epochs N to train further", directory, trainer.epoch)
    elif trainer.epoch >= planned_epochs(cfg.train, trainer.epoch, trainer.seconds):
        log.info("%s has spent its %g minutes of training (%d epochs): pass --minutes M (all of its training) to train "
                 "further", directory, cfg.train.minutes, trainer.epoch)
    with _naming_run(directory):
        history = trainer.fit(train_data(dataset, cfg.data), judged)
    if trainer.epoch == meta["epoch"] and here.main:  # nothing trained; the config may carry a new epoch count: commit both again
        with trainer.keeping() as kept:
            checkpoint.save_pretrained(kept, cfg, directory, run_id)
        checkpoint.save_resume(directory, *trainer.state_dict(), run_id)
    distributed.barrier(here)
    trainer.keep_best()
    _stop_asked(trainer, directory)
    model = checkpoint.unwrap(trainer.model).eval()
    model.run_config = cfg
    return RunResult(model, cfg, history, directory)


class StageSaver(Callback):
    """Writes the run folder's model file (the whole model, its later stage's weights included) after every epoch
    of a later stage and when a stop is asked for, atomically, under the run's own id."""

    def __init__(self, directory: Path, config: RunConfig, run_id: str | None, resume_readable: bool = True) -> None:
        self.directory, self.config, self.run_id = directory, config, run_id
        self.resume_readable = resume_readable  # False: a damaged resume state, left as it is

    def save(self, trainer: Trainer) -> None:
        model = checkpoint.unwrap(trainer.model)
        checkpoint.save_pretrained(model, self.config, self.directory, self.run_id)
        # The run's resume state gets the stage's weights too, so continuing the run keeps them: the state of every
        # top-level module whose parameters the stage trains.
        owned = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
        if self.resume_readable and (self.directory / checkpoint.RESUME_STATE).is_file() and \
                not checkpoint.never_checkpointed(self.directory):
            tensors, meta = checkpoint.load_resume(self.directory)
            for key, value in model.state_dict().items():
                if key.split(".")[0] in owned:
                    tensors[f"model.{key}"] = value
                    if f"best.{key}" in tensors:  # early stopping's best weights: the model file's, with the stage's
                        tensors[f"best.{key}"] = value.clone()  # a tensor of its own (safetensors refuses shared)
            state = {k: v for k, v in meta.items() if k not in checkpoint.COMMIT_KEYS}
            checkpoint.save_resume(self.directory, tensors, state, meta.get(checkpoint.RUN_KEY))

    def on_epoch_end(self, trainer: Trainer, result: EpochResult) -> None:
        if trainer.save_now:
            self.save(trainer)

    def on_interrupt(self, trainer: Trainer) -> None:
        self.save(trainer)


def stage_metrics_file(stage: str) -> str:
    return f"{stage}-metrics.jsonl"


def _warn_if_unfinished(directory: Path, state: dict[str, Any], stage: str) -> None:
    """A warning where the run stopped before the end of its training (a Ctrl-C, a crash): a later stage trained on
    its model now is trained on what further training will change (and a resume marks it outdated)."""
    plan, epoch = state.get("plan"), state.get("epoch")
    planned = plan.get("planned") if isinstance(plan, dict) else None
    if not isinstance(epoch, int) or not isinstance(planned, int) or state.get("stopped_early"):
        return
    if epoch < planned or state.get("in_epoch"):
        log.warning("%s stopped after %d of its %d epochs: its %s stage is trained on a model that is not finished "
                    "(vaekit train --resume %s finishes it first; resuming it later marks this %s as outdated)",
                    directory, epoch, planned, stage, directory, stage)


def _label_argument(hook: Any) -> str | None:
    """How a bound hook takes the labels beside the items: "positional" (a second positional parameter, or *args),
    "keyword" (a keyword-only y, or **kwargs), or None (the items alone, or a signature that cannot be read)."""
    import inspect

    try:
        parameters = list(inspect.signature(hook).parameters.values())
    except (TypeError, ValueError):
        return None
    kind = inspect.Parameter
    positional = [p for p in parameters if p.kind in (kind.POSITIONAL_ONLY, kind.POSITIONAL_OR_KEYWORD)]
    bound = getattr(hook, "keywords", {}) or {}  # a functools.partial's keywords are taken already
    if "y" in bound:
        return None
    if len(positional) >= 2 or any(p.kind is kind.VAR_POSITIONAL for p in parameters):
        return "positional"
    if any((p.kind is kind.KEYWORD_ONLY and p.name == "y") or p.kind is kind.VAR_KEYWORD for p in parameters):
        return "keyword"
    return None


def train_stage(directory: str | Path, stage: str, epochs: int = 10, batch_size: int | None = None,
                lr: float | None = None, device: str | None = None, threads: int | None = None,
                progress: bool | None = None, callbacks: list[Any] | None = None,
                dataset: Dataset | None = None, grad_clip: float | None = None,
                data: str | Path | None = None, restart: bool = False) -> RunResult:
    """Train a later stage of a finished run (Model.stages: the vqvae's "prior" over its codes) on the run's own
    training data, the rest of the model frozen: its schedule is the run's (optimiser, seed, clipping) with these
    epochs, batch size and learning rate, and no warm-up or early stopping. The run folder's model file is
    rewritten with the stage's weights after each epoch; RUN/<stage>-metrics.jsonl holds this training's epochs
    (the stage's loss, e.g. prior_nll, on the training and test data). The stage trains on from the weights it has
    (a second train-prior trains it further); `restart`: from the weights the run's model was built with (its
    seeded initialisation), as a stage cut off and trained again for its epochs must. `dataset`, `data`: as for
    resume()."""
    directory = Path(directory)
    cfg = checkpoint.load_config(directory)
    family = MODEL_FAMILIES.get(cfg.model.family)
    if family is not None and stage not in family.stages:
        have = f"its stages are {', '.join(family.stages)}" if family.stages else "it trains in one stage"
        raise VaekitError(f"the {cfg.model.family} family has no training stage {stage!r}: {have}")
    updates = {k: v for k, v in (("batch_size", batch_size), ("lr", lr), ("device", device), ("threads", threads),
                                 ("progress", TrainConfig().progress if progress is None else progress),
                                 ("grad_clip", grad_clip))
               if v is not None}
    # its own epochs, not the run's time limit (which would count again from zero)
    train_cfg = replace(cfg.train, epochs=epochs, minutes=None, early_stopping=None, kl_warmup_epochs=0.0,
                        warmup_steps=0, checkpoint_steps=None, checkpoint_every=1, compile=False, tensorboard=False,
                        **updates)
    validate(replace(cfg, train=train_cfg))
    with run_lock(directory):
        checkpoint.remove_temporaries(directory)
        model = checkpoint.load(directory)
        check_space(directory, model, fix="free some space on its disk")  # before an epoch of training, not after
        resume_readable = True
        if (directory / checkpoint.RESUME_STATE).is_file() and not checkpoint.never_checkpointed(directory):
            try:
                state = checkpoint.load_resume(directory)[1]
            except VaekitError as exc:  # the model file is whole: the stage needs only it
                resume_readable = False
                log.warning("%s; the %s stage trains all the same, from the model file, and leaves that state as it "
                            "is (the run cannot be resumed with vaekit train --resume until it is restored)",
                            str(exc).partition(": ")[0], stage)
            else:
                _warn_if_unfinished(directory, state, stage)
        run_id = checkpoint.read_checked(directory / checkpoint.MODEL_FILE)[1].get(checkpoint.RUN_KEY)
        if data is not None:
            if dataset is not None:
                raise VaekitError("give the run's data as a moved file (data=) or as data in Python (dataset=), "
                                  "not both")
            dataset = moved_data(directory, cfg, str(data))
        dataset = run_data(directory, cfg, dataset, "train a stage of")
        # the run's own split (its config's early stopping, which holds out a validation split by default)
        dataset, judged = hold_out(dataset, cfg.data, cfg.train.early_stopping is not None)
        if restart:
            torch.manual_seed(cfg.train.seed)  # as train() built the model: the stage's initial weights
            model.stage_module(stage).load_state_dict(build_model(cfg.model, saved=True).to(model.device)
                                                      .stage_module(stage).state_dict())
        torch.manual_seed(cfg.train.seed)
        model.set_stage(stage)
        own = [StageSaver(directory, cfg, run_id, resume_readable), MetricsLog(directory / stage_metrics_file(stage))]
        trainer = Trainer(model.train(), train_cfg, [*own, *(callbacks or [])])
        try:
            with _naming_run(directory):
                history = trainer.fit(train_data(dataset, cfg.data), judged)
        finally:
            model.set_stage(None)
        _stop_asked(trainer, directory)
    model = checkpoint.unwrap(trainer.model).eval()
    model.run_config = cfg
    return RunResult(model, cfg, history, directory)
