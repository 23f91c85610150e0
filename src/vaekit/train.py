"""Trainer: optimiser, schedules, progress, hooks, resume state. It calls model(x, y) only and knows no family."""
from __future__ import annotations

import contextlib
import copy
import errno
import hashlib
import json
import logging
import math
import os
import re
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from . import distributed
from .checkpoint import unwrap, write_lines
from .config import TrainConfig
from .data import TensorData
from .errors import Interrupted, VaekitError
from .models import Model
from .progress import bar_timing
from .threads import use_threads

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochResult:
    """One epoch's numbers: the objective and every term the family reports, as means over items (nats)."""

    epoch: int  # 1-based: epochs completed
    step: int
    train: dict[str, float]  # "loss" and each term, e.g. recon, kl; or bound; or kl_z1, kl_z2
    val: dict[str, float] | None  # the same on the data fit judges on (the test split, or a validation split:
    # vaekit.data.hold_out) at full weight (beta = 1, no warm-up), plus "elbo"
    lr: float
    kl_scale: float
    seconds: float
    images_per_s: float
    skipped: int = 0  # steps whose update was skipped (non-finite loss or gradient); not in the means

    @property
    def train_loss(self) -> float:
        return self.train["loss"]

    @property
    def val_loss(self) -> float | None:
        """-ELBO on the data each epoch is judged on where the family has one, else its objective."""
        return None if self.val is None else self.val["loss"]

    @property
    def judged(self) -> float | None:
        """What early stopping judges the epoch by (judged_loss): the validation loss, or a K-sample family's bound."""
        return judged_loss(self.val)

    def to_dict(self) -> dict[str, Any]:
        """Flat, for metrics.jsonl: train_loss, train_<term>..., val_loss, val_<term>..., val_elbo."""
        row: dict[str, Any] = {"epoch": self.epoch, "step": self.step}
        # null, not NaN (not JSON), for the means of an epoch whose every step was skipped, or a non-finite val_
        row.update({f"train_{name}": json_number(value) for name, value in self.train.items()})
        row.update({f"val_{name}": json_number(value) for name, value in (self.val or {"loss": None}).items()})
        row.update(lr=self.lr, kl_scale=self.kl_scale, seconds=self.seconds, images_per_s=self.images_per_s,
                   skipped_steps=self.skipped)
        return row

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> "EpochResult":
        row = dict(row)
        skipped = int(row.pop("skipped_steps", 0) or 0)
        # null (a mean that was not finite) back to NaN, as the epoch had it
        train = {k[len("train_"):]: math.nan if v is None else v for k, v in row.items() if k.startswith("train_")}
        val = {k[len("val_"):]: v for k, v in row.items() if k.startswith("val_")}
        # no judged data: val_loss alone, null; judged, with its terms beside it (their nulls: not finite)
        val = None if set(val) <= {"loss"} and val.get("loss") is None else {
            k: math.nan if v is None else v for k, v in val.items()}
        return cls(epoch=int(row["epoch"]), step=int(row["step"]), train=train,
                   val=val, lr=float(row["lr"]),
                   kl_scale=float(row["kl_scale"]), seconds=float(row["seconds"]),
                   images_per_s=float(row["images_per_s"]), skipped=skipped)


def term_sums(model: Model, data: TensorData, batch_size: int = 1000) -> dict[str, torch.Tensor]:
    """Sums over `data` of the model's terms at full weight (beta = 1, no warm-up) and "loss": -ELBO where the family
    has one, else its objective; "elbo" too where defined. Float64 on the CPU; the model as it is (eval mode is the
    caller's), its posterior draws from torch's generator."""
    sums: dict[str, torch.Tensor] = {}
    for x, y in data.batches(batch_size):
        out = model(x, y if model.num_labels else None, kl_scale=1.0)  # a data set's labels, for a model that takes them
        parts = dict(out.terms)
        if out.elbo is not None:
            parts = {"loss": -out.elbo, **parts, "elbo": out.elbo}
        else:
            parts = {"loss": out.loss.expand(x.shape[0]), **parts}
        for name, value in parts.items():
            total = value.detach().double().sum().cpu()
            sums[name] = sums[name] + total if name in sums else total
    return sums


@torch.no_grad()
def mean_terms(model: Model, data: TensorData, batch_size: int = 1000, seed: int = 0) -> dict[str, float]:
    """The means over `data` of term_sums, in eval mode, the posterior draws from `seed` (torch's generators are
    restored): what an epoch's val_ measures are, for any model and data."""
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
            torch.manual_seed(seed)
            sums = term_sums(model, data.to(model.device), batch_size)
    finally:
        model.train(was_training)
    return {name: float(total) / len(data) for name, total in sums.items()}


def judged_loss(val: Mapping[str, Any] | None, prefix: str = "") -> float | None:
    """What early stopping judges an epoch by, from its val_ measures (`prefix` "val_" for a metrics.jsonl row): the
    objective the family trains on at full weight where that is a K-sample bound (its `bound` term: iwae, hvae with
    k above 1; their -ELBO worsens as the bound improves, so it kept too early an epoch), else the validation loss
    (-ELBO, or the objective of a family without a bound)."""
    if val is None:
        return None
    value = val.get(f"{prefix}bound", val.get(f"{prefix}loss"))
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def kept_index(val_losses: list[float | None], early_stopping: int | None) -> int:
    """Which epoch's weights a run keeps, as an index into its history: with early stopping the first epoch at the
    lowest finite judged loss (judged_loss: the trainer's choice), else (or with none finite) the last."""
    finite = [(v, i) for i, v in enumerate(val_losses) if v is not None and math.isfinite(v)]
    if early_stopping is None or not finite:
        return len(val_losses) - 1
    return min(finite)[1]


def json_number(value: Any) -> Any:
    """A number as JSON can hold it: a non-finite float (NaN, infinity) as None (null); anything else as it is."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


@dataclass(frozen=True)
class StepResult:
    """One optimiser step, as step hooks see it. Tensors stay on the device (reading them syncs a GPU)."""

    step: int  # steps completed
    epoch: int  # the epoch in progress, 0-based
    batch_size: int
    loss: torch.Tensor  # () detached
    terms: dict[str, torch.Tensor]  # name -> () batch mean, detached
    lr: float
    kl_scale: float
    skipped: torch.Tensor | None = None  # () bool: the update was skipped (non-finite loss or gradient)


class Callback:
    """Hooks into training; override any of them. Pass instances to vaekit.train(..., callbacks=[...]) or Trainer.
    Any object with some of these methods works too."""

    def on_fit_begin(self, trainer: "Trainer") -> None: ...

    def on_step_end(self, trainer: "Trainer", step: StepResult) -> None: ...

    def on_epoch_end(self, trainer: "Trainer", result: EpochResult) -> None: ...

    def on_fit_end(self, trainer: "Trainer") -> None: ...

    def on_interrupt(self, trainer: "Trainer") -> None:
        """A stop was asked for (SIGINT, SIGTERM) and the current step is done: the last chance to save."""

    def on_rollback(self, trainer: "Trainer") -> None:
        """Training diverged and the trainer has gone back to its last good state with a lower learning rate (the
        step, epoch and history are those of that state)."""


class _RolledBack(Exception):
    """Internal: the epoch in progress was abandoned for the last good state."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise VaekitError("--device cuda, but torch sees no CUDA GPU here: use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise VaekitError("--device mps, but this torch has no usable MPS backend: use --device cpu or auto")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool | None:
    """Whether the device multiplies bfloat16 matrices natively (x86: AVX512-BF16 or AMX; Arm: BF16); None if
    unknown (no /proc/cpuinfo, as on macOS)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    try:
        with open("/proc/cpuinfo") as handle:
            lines = [line for line in handle if line.startswith(("flags", "Features"))]
    except OSError:
        return None
    if not lines:
        return None
    flags = set(lines[0].split(":", 1)[-1].split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto`: bf16 where the device multiplies bfloat16 natively (a CPU with AVX512-BF16 or AMX, a CUDA GPU from
    Ampere on), else fp32 (also where that is unknown). Any other value as given."""
    if precision != "auto":
        return precision
    return "bf16" if device.type in ("cpu", "cuda") and native_bf16(device) else "fp32"


def compile_unavailable(device: torch.device) -> str | None:
    """Why torch.compile's default backend cannot build code for this device here (a CPU needs a C++ compiler, a
    CUDA GPU needs Triton), as a user-facing fix; None where it can, or where that cannot be told (torch decides)."""
    if device.type == "cpu":
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler
            get_cpp_compiler()  # raises InvalidCxxCompiler when no working compiler is found
        except ImportError:
            return None
        except Exception:  # noqa: BLE001 - torch's private API: any failure here means it would fail when compiling
            return "no C++ compiler found (install g++, e.g. `apt-get install g++`, or set CXX)"
        return None
    if device.type == "cuda":
        try:
            from torch.utils._triton import has_triton
        except ImportError:
            return None
        return None if has_triton() else "Triton is not installed (`pip install triton`)"
    return None


def check_precision(precision: str, device: torch.device) -> None:
    if precision == "fp16":
        if device.type not in ("cpu", "cuda"):
            raise VaekitError(f"--precision fp16 runs on cpu and cuda, not {device.type}: use --precision fp32")
        if device.type == "cpu":
            log.warning("--precision fp16 on a CPU is slow (few CPUs multiply float16 natively): it is the GPU's "
                        "format; on a CPU use bf16 or fp32")
        return
    if precision != "bf16":
        return
    if device.type not in ("cpu", "cuda"):
        raise VaekitError(f"--precision bf16 runs on cpu and cuda, not {device.type}: "
                          "use --device cpu, or train with --precision fp32")
    if native_bf16(device) is False:
        log.warning("this %s has no native bfloat16 matrix products (CPU: AVX512-BF16 or AMX), so --precision bf16 "
                    "will likely be slower than fp32", device.type)


def process_seed(seed: int, rank: int, step: int = 0) -> int:
    """A seed for process `rank`'s own random stream (its posterior samples) from the run's seed: distinct streams
    for distinct processes, and a fresh one when a run resumes with another number of processes."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{rank}/{step}".encode()).digest()[:8], "little") >> 1


IWAE_STAGES = 8  # Burda et al. 2016: stage i (i = 0..7) lasts 3^i epochs at lr * 10^(-i/7); 3,280 epochs in all
IWAE_EPOCHS = (3**IWAE_STAGES - 1) // 2


def learning_rate(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """Linear warm-up, then constant, cosine decay to zero, or the IWAE paper's steps (their epochs scaled from 3,280
    to the steps after the warm-up, so that a 3,280-epoch run steps at exactly its epochs); a pure function of the
    step (resume-safe)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    after, span = step - cfg.warmup_steps, total_steps - cfg.warmup_steps
    if cfg.schedule == "cosine" and span > 0:
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, after / span)))
    if cfg.schedule == "iwae-steps" and span > 0:
        # stage i begins where after / span reaches (3^i - 1) / 2 / 3,280; integers, so the boundaries are exact
        stage = 0
        while stage < IWAE_STAGES - 1 and 2 * IWAE_EPOCHS * after >= span * (3 ** (stage + 1) - 1):
            stage += 1
        return cfg.lr * 10 ** (-stage / (IWAE_STAGES - 1))
    return cfg.lr


def planned_epochs(cfg: TrainConfig, epoch: int, seconds: float) -> int:
    """The epochs a run plans to train, given `epoch` done in `seconds` of training: cfg.epochs; under a time limit
    (cfg.minutes), as many of them as fit in what is left of it at those epochs' mean time (none more once it is
    spent), and never fewer than those done."""
    if cfg.minutes is None or epoch == 0 or seconds <= 0:
        return cfg.epochs
    more = math.floor((cfg.minutes * 60 - seconds) / (seconds / epoch))
    return max(epoch, min(cfg.epochs, epoch + max(0, more)))


def kl_scale(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """KL warm-up (Bowman et al. 2016; Sønderby et al. 2016): weight ramps linearly from 0 to 1."""
    if cfg.kl_warmup_epochs <= 0:
        return 1.0
    return min(1.0, step / (cfg.kl_warmup_epochs * steps_per_epoch))


class Trainer:
    """All training state lives here: model, optimiser, step, epoch, random generators, history. It calls
    model(x, y, kl_scale=...) and records whatever terms the model reports: it knows no family."""

    def __init__(self, model: torch.nn.Module, cfg: TrainConfig, callbacks: list[Any] | None = None) -> None:
        self.cfg = cfg
        if cfg.threads is not None:
            use_threads(cfg.threads)
        device = resolve_device(cfg.device)
        # Under torchrun: one process of several, each with its share of every batch (world.size 1 otherwise).
        self.world = distributed.setup(device)
        self.device = distributed.device_for(device, self.world)  # cuda:LOCAL_RANK under torchrun
        if cfg.batch_size % self.world.size:
            raise VaekitError(f"--batch-size {cfg.batch_size} is the batch of all {self.world.size} processes together "
                              f"and must split evenly between them: use a multiple of {self.world.size}")
        self.precision = resolve_precision(cfg.precision, self.device)  # what autocast uses: never `auto`
        if cfg.precision == "auto" and self.world.rank == 0:
            log.info("--precision auto: %s (%s)", self.precision, f"this {self.device.type} multiplies bfloat16 "
                     "natively" if self.precision == "bf16" else f"no native bfloat16 known on this {self.device.type}")
        check_precision(self.precision, self.device)
        self.model = model.to(self.device)
        self.labelled = bool(getattr(model, "num_labels", 0))  # whether steps pass the data's labels to the model
        # What a training step calls: the model, wrapped for gradient averaging across processes and compiled if
        # asked; self.model stays the plain module (its state_dict keys are the checkpoint's).
        self.forward: torch.nn.Module = self.model
        if self.world.size > 1:
            self.forward = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            torch.manual_seed(process_seed(cfg.seed, self.world.rank))  # each process its own posterior samples
        if cfg.compile:
            missing = compile_unavailable(self.device)
            if missing:
                if self.world.rank == 0:
                    log.warning("--compile needs what torch.compile builds its code with: %s; training without "
                                "compiling (the same training, only slower)", missing)
            else:
                self.forward = torch.compile(self.forward)
        # fp16: the loss scaled up before backward so small gradients survive float16, and scaled back before clipping.
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None
        # Every process's generator states at the last remember(): [CPU states by rank, GPU states by rank (CUDA)].
        self.rank_rng: list[list[torch.Tensor]] | None = None
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        # One fused kernel per step where torch has one (CPU, CUDA); else foreach: a few multi-tensor kernels.
        fused = self.device.type in ("cpu", "cuda") and all(p.dtype == torch.float32 for p in params)
        self.optimizer = optimizer(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                   **({"fused": True} if fused else {"foreach": True}))
        self.fused = fused  # a fused step takes found_inf: skipping a non-finite update needs no host sync
        self.callbacks = list(callbacks or [])
        self.step = 0
        self.epoch = 0
        self.history: list[EpochResult] = []
        self.generator = torch.Generator().manual_seed(cfg.seed)  # shuffling and dynamic binarisation
        # The epoch in progress, enough to continue it exactly: the data generator as the epoch began (it draws the
        # permutation and the binarisation seed then), batches done, and the running sums of the loss and terms.
        self.epoch_start_rng: torch.Tensor | None = None
        self.batches_done = 0
        self.partial: dict[str, Any] | None = None
        self.partial_view: tuple | None = None  # (term names, sums, items seen, seconds) after the last step
        self.stop_signal: int | None = None
        # Divergence: non-finite steps are skipped; after cfg.nan_skips in a row, back to the last good state.
        self.lr_scale = 1.0  # each rollback multiplies it by cfg.nan_lr_factor; kept in the resume state
        self.rollbacks = 0
        self.good: tuple[dict[str, torch.Tensor], dict[str, Any], tuple] | None = None  # on the CPU, with the history
        self.streak: torch.Tensor | None = None  # () non-finite steps in a row, on the device
        self.worst: torch.Tensor | None = None  # () the longest streak since the host last read it
        self.save_now = False  # a checkpoint is due after this step or epoch, and the state is good to keep
        self.read_every_step = self.device.type == "cpu"  # reading a CPU value costs nothing; a GPU's, a sync
        self.flags: torch.Tensor | None = None  # which of loss, terms, gradient were non-finite at the last bad step
        # Early stopping: the weights of the epoch with the lowest validation loss so far (on the CPU), and whether
        # training has stopped for want of improvement (kept in the resume state: a resume does not train on).
        self.best: dict[str, torch.Tensor] | None = None
        self.stopped_early = False
        # Training time (seconds, kept in the resume state) for a time limit (cfg.minutes): `seconds` up to `mark`,
        # a reading of `clock` while fit runs (None otherwise); and the epochs the run plans to train.
        self.clock = time.perf_counter
        self.seconds = 0.0
        self.mark: float | None = None
        self.planned = cfg.epochs
        self.replanned = False  # the plan has changed in this fit (and said so)
        self.saved_plan: dict[str, Any] | None = None  # the plan a resume state holds, with the limits it was made for

    def _hooks(self, name: str) -> list:
        """The callbacks' methods for one event, skipping Callback's own no-ops (so an epoch-only callback costs
        the step loop nothing)."""
        hooks = []
        for callback in self.callbacks:
            method = getattr(callback, name, None)
            # Callback's own no-op, found through the class or bound to an instance, costs nothing; a hook set on an
            # instance (cb.on_epoch_end = ...) is the user's and runs
            if callable(method) and getattr(method, "__func__", method) is not getattr(Callback, name):
                hooks.append(method)
        return hooks

    # ---- the loop -------------------------------------------------------------------------------
    def fit(self, train: TensorData, val: TensorData | None = None) -> list[EpochResult]:
        if len(train) == 0:
            raise VaekitError("the training set is empty: check --data and --limit")
        if self.cfg.early_stopping is not None and (val is None or len(val) == 0):
            raise VaekitError("--early-stopping watches the validation loss, and this run has no validation data: "
                              "give data with a test split (e.g. --test-fraction 0.1), or drop --early-stopping")
        train = train.to(self.device)  # once, not per batch
        val = val.to(self.device) if val is not None else None
        # The same for any number of processes: each takes batch_size / processes items of every batch.
        steps_per_epoch = math.ceil(len(train) / self.cfg.batch_size)
        if self.epoch == 0:
            self._check_warmups(steps_per_epoch)
        for hook in self._hooks("on_fit_begin"):
            hook(self)
        self.mark = self.clock()
        self.replanned = False
        plan, self.saved_plan = self.saved_plan, None  # used once, by the fit that follows the load
        if plan is not None and plan.get("minutes") == self.cfg.minutes and plan.get("epochs") == self.cfg.epochs:
            # resumed under the same limits: the run's own plan, as it stood when the state was saved (planning
            # again now would count a half-done epoch's time as a whole epoch's and shorten the schedule)
            self.planned = max(self.epoch, int(plan["planned"]))
        else:
            self._plan()
        epoch_hooks = self._hooks("on_epoch_end")
        self.remember()
        with self._signals():
            while self.epoch < self.planned and not self.stopped_early:
                try:
                    result = self._train_epoch(train, val, steps_per_epoch, steps_per_epoch * self.planned)
                except _RolledBack:
                    continue
                self.history.append(result)
                if self.cfg.minutes is not None and self.epoch < self.planned:  # this epoch's time, then the plan
                    self._plan()
                last = self._watch_validation() or self.epoch == self.planned
                if last and all(math.isnan(row.train["loss"]) for row in self.history):
                    # every step skipped, in a run too short for a streak to reach nan_skips: nothing was learned
                    raise VaekitError(
                        f"training took no step: the loss or the gradient was not finite at every one of the run's "
                        f"{self.step} steps, so the model is untrained: check the data for values of extreme size, "
                        f"or start again with a lower --lr or --beta")
                self.save_now = (self.epoch % self.cfg.checkpoint_every == 0 or last) and (
                    self._healthy() or (last and self._finite_weights()))  # the end: finite weights are kept
                if self.save_now:
                    self.remember()
                for hook in epoch_hooks:
                    hook(self, result)
                if self._stop_agreed() and not last:
                    self._stop()
        self.seconds, self.mark = self.spent(), None
        for hook in self._hooks("on_fit_end"):
            hook(self)
        distributed.barrier(self.world)  # process 0's last checkpoint is written before any process goes on
        return self.history

    def spent(self) -> float:
        """Seconds of training so far, over every fit of this run (a resumed run's included)."""
        return self.seconds + (self.clock() - self.mark if self.mark is not None else 0.0)

    def _plan(self) -> None:
        """The epochs to train (see planned_epochs), on every process from process 0's clock (all stop together)."""
        spent = self.spent()
        if self.cfg.minutes is not None and self.world.size > 1:
            spent = float(distributed.all_sum(torch.tensor([spent if self.world.main else 0.0], dtype=torch.float64,
                                                           device=self.device), self.world).item())
        planned = planned_epochs(self.cfg, self.epoch, spent)
        if planned != self.planned and self.epoch:  # said once a fit; the epoch lines show the count after
            log.log(logging.DEBUG if self.replanned else logging.INFO, "epoch %d: %.1f of %g minutes spent: planning "
                    "%d epochs in all", self.epoch, spent / 60, self.cfg.minutes, planned)
            self.replanned = True
        self.planned = planned

    @contextlib.contextmanager
    def _signals(self):
        """SIGINT and SIGTERM ask for a stop after the current step (see _stop); a second one stops at once. Only
        the main thread can take signals; elsewhere they keep their handlers."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def ask(signum, frame):
            # The second: stop now (atomic writes leave no half files). Not under torchrun: every process must stop
            # at the same step, and the launcher, which passes on each signal it gets, kills them after a grace time.
            if self.stop_signal is not None and self.world.size == 1:
                signal.signal(signum, signal.SIG_DFL)
                raise Interrupted(signum, self.step, saved=False)
            self.stop_signal = signum

        previous = {signum: signal.signal(signum, ask) for signum in (signal.SIGINT, signal.SIGTERM)
                    if signal.getsignal(signum) is not signal.SIG_IGN}  # ignored (a script's background job): left so
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _stop(self) -> None:
        """After a step, on a stop signal: let the callbacks save (on_interrupt), then end with Interrupted. Inside a
        streak of non-finite steps, the state saved is the last good one (the run passed through it: a resume from
        it meets the same streak)."""
        if self.streak is not None and int(self.streak) > 0 and self.good is not None:
            self._restore_good()
        else:
            self._gather_rng()
        for hook in self._hooks("on_interrupt"):
            hook(self)
        distributed.barrier(self.world)  # no process leaves before process 0 has saved
        raise Interrupted(self.stop_signal, self.step)

    # ---- divergence: skip, roll back, give up ----------------------------------------------------------------
    def _stop_agreed(self) -> bool:
        """Whether any process was asked to stop (every process then stops at the same step: none is left waiting)."""
        asked = self.stop_signal is not None
        if self.world.size == 1:
            return asked
        agreed = bool(distributed.all_sum(torch.tensor([float(asked)], device=self.device), self.world).item())
        if agreed and not asked:
            self.stop_signal = signal.SIGTERM  # another process's signal: stop with it
        return agreed

    def _gather_rng(self) -> None:
        """Every process's generator states (the CPU's, and its GPU's), for the checkpoint (rank 0 writes it; each
        process resumes with its own)."""
        if self.world.size > 1:
            states = [torch.get_rng_state()]
            if self.device.type == "cuda":
                states.append(torch.cuda.get_rng_state(self.device))
            self.rank_rng = [[s.cpu() for s in distributed.all_gather(state.to(self.device), self.world)]
                             for state in states]

    def remember(self) -> None:
        """Keep the current state (on the CPU) as the one to roll back to. Called at the start and wherever a
        checkpoint is written (save_now), so that the last good state is the last checkpoint."""
        self._gather_rng()
        tensors, meta = self.state_dict(history=False)  # the history as it is: its rows are frozen, no copy needed
        self.good = None  # the old copy let go before the new one is made: one copy of the state at a time
        self.good = ({k: v.detach().to("cpu", copy=True) for k, v in tensors.items()}, copy.deepcopy(meta),
                     tuple(self.history))

    def _check_warmups(self, steps_per_epoch: int) -> None:
        """A warning where a warm-up outlasts the run (its most epochs, under a time limit): the learning rate never
        reaches --lr (nor starts its decay), or the model ends trained on a down-weighted regularizer, not its bound."""
        total = steps_per_epoch * self.cfg.epochs
        if self.cfg.warmup_steps >= total and self.cfg.warmup_steps > 1:
            log.warning("--warmup-steps %d is at least the run's %d steps (%d epochs of %d): the learning rate never "
                        "reaches --lr %g%s: lower --warmup-steps or train more epochs", self.cfg.warmup_steps, total,
                        self.cfg.epochs, steps_per_epoch, self.cfg.lr,
                        "" if self.cfg.schedule == "constant" else
                        f" and its {self.cfg.schedule} schedule never starts")
        if self.cfg.kl_warmup_epochs > self.cfg.epochs and unwrap(self.model).has_bound:
            log.warning("--kl-warmup-epochs %g is more than the run's %d epochs: the regularizer's weight ends at %.2f "
                        "of its full value, so the model is trained on a down-weighted KL, not its bound: lower "
                        "--kl-warmup-epochs or train more epochs", self.cfg.kl_warmup_epochs, self.cfg.epochs,
                        kl_scale(self.cfg, total - 1, steps_per_epoch))

    def _watch_validation(self) -> bool:
        """With early stopping: keep the weights of a new best judged loss (judged_loss: the validation loss, or a
        K-sample family's bound), and say whether the last `early_stopping` epochs have all failed to improve on it (a
        non-finite loss never improves)."""
        patience = self.cfg.early_stopping
        if patience is None:
            return False
        what = "bound" if self.history and self.history[-1].val and "bound" in self.history[-1].val else "loss"
        losses = [r.judged if r.judged is not None and math.isfinite(r.judged) else math.inf for r in self.history]
        best = losses.index(min(losses))  # the first epoch at the lowest loss
        if best == len(losses) - 1:
            self.best = None  # the old best let go before the new one is made
            self.best = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        if len(losses) - 1 - best >= patience and self.epoch >= self.cfg.kl_warmup_epochs:  # not while the KL's
            # weight still ramps up (the validation loss is at full weight, and may rise while it does)
            self.stopped_early = True
            log.info("epoch %d: no lower validation %s for %d epochs: stopping early, keeping epoch %d's weights "
                     "(validation %s %.3f)", self.epoch, what, patience, best + 1, what, losses[best])
        elif self.epoch == self.planned and best != len(losses) - 1:
            log.info("keeping epoch %d's weights, its validation %s %.3f the lowest", best + 1, what, losses[best])
        return self.stopped_early

    @contextlib.contextmanager
    def keeping(self):
        """The model holds the weights the run keeps for the time of the block: the best epoch's under early
        stopping (what the run folder's model file gets), else its own; training goes on from its own after."""
        if self.best is None:
            yield self.model
            return
        own = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.best)
        try:
            yield self.model
        finally:
            self.model.load_state_dict(own)

    def keep_best(self) -> None:
        """Load the weights the run keeps for good (at the end: what the caller gets back)."""
        if self.best is not None:
            self.model.load_state_dict(self.best)

    def _finite_weights(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.model.parameters())

    def _healthy(self) -> bool:
        """No non-finite step since the last good one, and finite weights: a state worth keeping (a host sync, at
        checkpoints only)."""
        return (self.streak is None or int(self.streak) == 0) and self._finite_weights()

    def _restore_good(self) -> None:
        """Back to the last good state, keeping the learning-rate scale and the rollbacks made since."""
        scale, rollbacks, seconds = self.lr_scale, self.rollbacks, self.seconds  # time spent stays spent
        tensors, meta, history = self.good
        self.load_state_dict({k: v.clone() for k, v in tensors.items()}, copy.deepcopy(meta))
        self.history = list(history)
        self.lr_scale, self.rollbacks, self.seconds = scale, rollbacks, seconds
        self.streak = self.worst = None

    def _diverged(self, names: list[str], streak: int) -> None:
        """cfg.nan_skips non-finite steps in a row, or non-finite weights at a checkpoint: back to the last good state
        with a lower learning rate, or, after cfg.nan_rollbacks rollbacks, an error naming the step, the terms and
        the fix."""
        flags = dict(zip(["loss", *names, "gradient"], self.flags.tolist()))
        terms = [n for n in names if flags[n]]
        parts = ([f"the loss terms {', '.join(terms)}"] if terms else ["the loss"] if flags["loss"] else [])
        parts += ["the gradient"] if flags["gradient"] else []
        what = f"{' and '.join(parts) or 'the loss'} {'were' if len(parts) > 1 or len(terms) > 1 else 'was'} not " \
               f"finite for {streak} step{'s' * (streak != 1)} in a row"
        if streak < self.cfg.nan_skips:
            what += " and the weights are no longer finite"
        if self.rollbacks >= self.cfg.nan_rollbacks or self.good is None:
            lr = self.cfg.lr * self.lr_scale
            raise VaekitError(
                f"training diverged: {what} at step {self.step}"
                f"{f' after {self.rollbacks} rollbacks to a lower learning rate (now {lr:.3g})' if self.rollbacks else ''}:"
                f" start again with a lower --lr (e.g. {lr / 10:.3g}, a tenth of the last one tried)"
                f"{'' if self.cfg.grad_clip else ' or with --grad-clip 1.0'}, or check the data; the last good "
                "checkpoint is kept")
        step = self.step
        self.lr_scale *= self.cfg.nan_lr_factor
        self.rollbacks += 1
        self._restore_good()
        log.warning("%s at step %d: rolled back to step %d with the learning rate lowered to %.3g (rollback %d of %d)",
                    what, step, self.step, self.cfg.lr * self.lr_scale, self.rollbacks, self.cfg.nan_rollbacks)
        for hook in self._hooks("on_rollback"):
            hook(self)
        raise _RolledBack

    def _train_epoch(self, train: TensorData, val: TensorData | None, steps_per_epoch: int, total_steps: int) -> EpochResult:
        self.model.train()
        processes = self.world.size
        items = len(train) if processes == 1 else processes * math.ceil(len(train) / processes)  # padded to a share each
        step_hooks = self._hooks("on_step_end")
        start = time.perf_counter()
        names: list[str] | None = None
        # Summed on the device (a GPU is read every 25 steps): the loss and each term times the batch size, the items
        # of steps that counted, and the steps skipped for a non-finite loss or gradient.
        sums: torch.Tensor | None = None
        missed: torch.Tensor | None = None
        seen = 0
        skip = 0
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        if self.partial is not None:  # continue the epoch a checkpoint left: same permutation, draws and sums
            self.generator.set_state(self.epoch_start_rng)
            skip, seen, names = self.batches_done, self.partial["seen"], self.partial["names"]
            sums = self.partial["sums"].to(self.device)
            if sums.numel() == len(names) + 1:  # saved before skipped steps were counted: every item counted
                sums = torch.cat([sums, sums.new_tensor([seen, 0])])
            if sums.shape != (len(names) + 3,):
                raise VaekitError(f"the resume state's running sums have shape {tuple(sums.shape)} for "
                                  f"{len(names)} terms: it is corrupt; start the run again")
            start -= self.partial["seconds"]
            self.partial = None
            if skip > steps_per_epoch:
                raise VaekitError(f"the resume state says {skip} batches of this epoch were done, but an epoch has "
                                  f"{steps_per_epoch}: it is corrupt; start the run again")
        else:
            self.epoch_start_rng = self.generator.get_state()
            self.batches_done = 0
        bar = tqdm(
            total=items, initial=seen, desc=f"epoch {self.epoch + 1}/{self.planned}", unit="img",
            unit_scale=True, disable=not (self.cfg.progress and self.world.main), leave=False, dynamic_ncols=True,
            **bar_timing(0.2),
        )
        if skip:  # the last step's values, for an epoch whose every batch was done before the checkpoint
            lr = learning_rate(self.cfg, self.step - 1, total_steps) * self.lr_scale
            scale = kl_scale(self.cfg, self.step - 1, steps_per_epoch)
        batches = train.batches(self.cfg.batch_size // processes, self.generator, shuffle=True, skip=skip,
                                shard=(self.world.rank, processes))
        for index, (x, y) in enumerate(batches, start=skip):
            lr = learning_rate(self.cfg, self.step, total_steps) * self.lr_scale
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            scale = kl_scale(self.cfg, self.step, steps_per_epoch)
            with self.autocast():
                out = self.forward(x, y if self.labelled else None, kl_scale=scale)
            self.optimizer.zero_grad(set_to_none=True)
            (out.loss if self.scaler is None else self.scaler.scale(out.loss)).backward()
            if names is None:
                names = list(out.terms)
            elif list(out.terms) != names:
                bar.close()
                raise VaekitError(f"the model reported terms {list(out.terms)} after {names}: a family must report "
                                  "the same terms every step")
            means = torch.stack([out.loss.detach(), *(term.detach().mean() for term in out.terms.values())])
            stop = False
            if processes > 1:  # the means over all processes (equal shares), and whether any was asked to stop
                shared = distributed.all_sum(torch.cat([means.float(), means.new_tensor(
                    [float(self.stop_signal is not None)], dtype=torch.float32)]), self.world)
                means, stop = shared[:-1] / processes, shared[-1]
            skipped = self._update(means, params)
            self.step += 1
            batch = x.shape[0] * processes
            counted = torch.cat([means * batch, means.new_ones(1) * batch, means.new_zeros(1)])  # no host copy
            if missed is None:  # what a skipped step adds: its count, once per epoch
                missed = torch.zeros_like(counted)
                missed[-1] = 1
            added = torch.where(skipped, missed, counted)  # a skipped step adds nothing but its count
            sums = added if sums is None else sums + added
            seen += batch
            self.batches_done = index + 1
            self.partial_view = (names, sums, seen, time.perf_counter() - start)
            bar.update(batch)
            # Where the host reads the device (every step on the CPU, every 25 steps and at checkpoints elsewhere): a
            # streak of non-finite steps long enough, or one that has reached the weights at a checkpoint, goes
            # back to the last good state. The longest streak since the last read counts, so none is missed.
            point = bool(self.cfg.checkpoint_steps and self.step % self.cfg.checkpoint_steps == 0)
            end = index + 1 == steps_per_epoch
            if self.read_every_step or point or end or self.step % 25 == 0:
                worst = int(self.worst)
                self.worst = self.streak.clone()
                if worst >= self.cfg.nan_skips or ((point or end) and int(self.streak) > 0
                                                   and not self._finite_weights()):
                    bar.close()
                    self._diverged(names, max(worst, int(self.streak)))
            self.save_now = point and self._healthy()
            if self.save_now:
                self.remember()
            if step_hooks:
                step = StepResult(self.step, self.epoch, batch, means[0], dict(zip(names, means[1:])), lr, scale,
                                  skipped)
                for hook in step_hooks:
                    hook(self, step)
            if self.step % 25 == 0 or end:
                values = (sums[:-2] / sums[-2]).tolist()
                shown = {"loss": values[0], **dict(zip(names, values[1:]))}
                bar.set_postfix({k: f"{v:.2f}" for k, v in shown.items()},
                                img_s=f"{seen / (time.perf_counter() - start):.0f}", refresh=False)
            if processes > 1:  # read where every process reads the device (all stop at the same step)
                if (self.read_every_step or point or end or self.step % 25 == 0) and bool(stop):
                    self.stop_signal = self.stop_signal or signal.SIGTERM
                    if not end:
                        bar.close()
                        self._stop()
            elif self.stop_signal is not None and not end:
                bar.close()
                self._stop()
        bar.close()
        seconds = time.perf_counter() - start
        self.epoch += 1
        self.batches_done = 0
        self.partial_view = None
        *totals, counted_items, skipped_steps = sums.tolist()
        values = [total / counted_items if counted_items else math.nan for total in totals]
        train_means = {"loss": values[0], **dict(zip(names, values[1:]))}
        val_means = self.evaluate_loss(val) if val is not None and len(val) else None
        result = EpochResult(epoch=self.epoch, step=self.step, train=train_means, val=val_means, lr=lr,
                             kl_scale=scale, seconds=seconds, images_per_s=seen / seconds, skipped=int(skipped_steps))
        if result.skipped:
            log.warning("epoch %d: %d steps skipped for a non-finite loss or gradient", self.epoch, result.skipped)
        log.info(
            "epoch %d/%d  loss %.3f (%s)%s  %.1fs  %.0f items/s",
            self.epoch, self.planned, train_means["loss"],
            ", ".join(f"{k} {v:.3f}" for k, v in train_means.items() if k != "loss"),
            "" if val_means is None else f"  val {val_means['loss']:.3f}" + (
                f" (bound {val_means['bound']:.3f})" if "bound" in val_means else ""), seconds, result.images_per_s,
        )
        return result

    def _update(self, means: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
        """Clip and step, unless the loss or the gradient is not finite: then the update is skipped. With a fused
        optimiser the skip happens on the device (found_inf, as AMP's gradient scaler does), so no step waits for
        the host. `means`: the loss and each term, batch means. Returns the () bool "skipped" and keeps the streak
        and the flags of what went non-finite (loss, each term, gradient)."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # clipping and the norm see the true gradient
        grads = [p.grad for p in params if p.grad is not None]
        if self.cfg.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        elif grads:  # torch picks the multi-tensor kernels where the device has them (not on MPS)
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])) if not hasattr(
                torch.nn.utils, "get_total_norm") else torch.nn.utils.get_total_norm(grads)
        else:
            norm = means.new_zeros(())
        flags = ~torch.isfinite(torch.cat([means.float(), norm.float().reshape(1).to(means.device)]))
        skipped = flags.any()
        if self.scaler is not None:
            # A float16 gradient overflowing is the scaler's business: it skips that update and lowers the scale. A
            # non-finite loss or term is divergence, counted as in full precision (and its gradient is not finite).
            skipped = flags[:-1].any()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        elif self.fused:
            self.optimizer.found_inf = skipped.float()
            self.optimizer.step()
        elif not skipped.item():
            self.optimizer.step()
        self.streak = torch.where(skipped, (self.streak if self.streak is not None else 0) + 1, 0)
        self.worst = self.streak if self.worst is None else torch.maximum(self.worst, self.streak)
        self.flags = flags if self.flags is None or self.flags.shape != flags.shape else torch.where(skipped, flags, self.flags)
        return skipped

    def autocast(self) -> torch.autocast:
        """bf16 / fp16: the matrix products in bfloat16 / float16; the model casts its network outputs back to float32
        for the loss."""
        dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype, enabled=self.precision != "fp32")

    @torch.no_grad()
    def evaluate_loss(self, data: TensorData, batch_size: int = 1000) -> dict[str, float]:
        """Means over data of the model's terms at full weight (beta = 1, no warm-up) and "loss": -ELBO where the
        family has one (the true bound), else its objective; "elbo" too where defined."""
        self.model.eval()
        # Each process its share of the items, summed over processes below (every process, when too few items).
        processes = self.world.size if len(data) >= self.world.size else 1
        part = data.part(self.world.rank, processes)
        # A fixed generator for the posterior samples keeps validation numbers comparable across epochs.
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(process_seed(0, self.world.rank) if processes > 1 else 0)  # restored on exit, on every
            # device: training's random stream is untouched
            sums = term_sums(unwrap(self.model), part, batch_size)
        self.model.train()
        if processes > 1:
            totals = distributed.all_sum(torch.stack(list(sums.values())).to(self.device), self.world).cpu()
            sums = dict(zip(sums, totals))
        return {name: float(total) / len(data) for name, total in sums.items()}

    # ---- state: one place, safetensors + JSON ----------------------------------------------------
    def state_dict(self, history: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        optimizer = self.optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for index, slots in optimizer["state"].items():
            for name, value in slots.items():
                if torch.is_tensor(value):
                    tensors[f"optimizer.{index}.{name}"] = value
                else:
                    scalars.setdefault(str(index), {})[name] = value
        tensors["rng.torch"] = torch.get_rng_state()
        if self.world.size > 1 and self.rank_rng is not None:  # each process's own, to resume with
            for kind, states in zip(("torch", "cuda"), self.rank_rng):
                tensors.update({f"rng.rank.{rank}.{kind}": state for rank, state in enumerate(states)})
        tensors["rng.data"] = self.generator.get_state()
        if torch.cuda.is_available():
            for i, state in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = state
        meta = {
            "step": self.step,
            "epoch": self.epoch,
            "optimizer_groups": optimizer["param_groups"],
            "optimizer_scalars": scalars,
            "history": [r.to_dict() for r in self.history] if history else [],
            "lr_scale": self.lr_scale,
            "rollbacks": self.rollbacks,
            "train_seconds": self.spent(),
            "plan": {"planned": self.planned, "minutes": self.cfg.minutes, "epochs": self.cfg.epochs},
        }
        if self.scaler is not None:  # fp16: the loss scale it has settled on, and its count towards the next growth
            meta["grad_scaler"] = self.scaler.state_dict()
        if self.best is not None:  # early stopping: the best epoch's weights, and whether it has stopped
            tensors.update({f"best.{k}": v for k, v in self.best.items()})
            meta["stopped_early"] = self.stopped_early
        if self.batches_done and self.partial_view is not None:  # inside an epoch: how to continue it exactly
            names, sums, seen, seconds = self.partial_view
            tensors["rng.epoch_start"] = self.epoch_start_rng
            tensors["epoch.sums"] = sums.detach().to("cpu")
            meta["in_epoch"] = {"batches": self.batches_done, "seen": seen, "names": names, "seconds": seconds}
        return tensors, meta

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        self.model.load_state_dict(model_state)
        slots: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                slots.setdefault(int(index), {})[name] = value
        for index, extra in meta.get("optimizer_scalars", {}).items():
            slots.setdefault(int(index), {}).update(extra)
        self.optimizer.load_state_dict({"state": slots, "param_groups": meta["optimizer_groups"]})
        torch.set_rng_state(tensors["rng.torch"])
        cuda_states = [tensors[k] for k in sorted((t for t in tensors if re.fullmatch(r"rng\.cuda\.\d+", t)),
                                                  key=lambda name: int(name.rsplit(".", 1)[1]))]
        if cuda_states and torch.cuda.is_available() and self.world.size == 1:
            torch.cuda.set_rng_state_all(cuda_states)
        if self.world.size > 1:  # this process's own streams: as saved by as many processes, else fresh ones
            rank = self.world.rank
            if len([k for k in tensors if re.fullmatch(r"rng\.rank\.\d+\.torch", k)]) == self.world.size:
                torch.set_rng_state(tensors[f"rng.rank.{rank}.torch"])
                if self.device.type == "cuda":
                    if f"rng.rank.{rank}.cuda" in tensors:
                        torch.cuda.set_rng_state(tensors[f"rng.rank.{rank}.cuda"], self.device)
                    else:  # saved by processes without GPUs: a fresh stream here
                        torch.cuda.manual_seed(process_seed(self.cfg.seed, rank, int(meta["step"])))
            else:
                torch.manual_seed(process_seed(self.cfg.seed, rank, int(meta["step"])))  # the CPU's and every GPU's
        self.generator.set_state(tensors["rng.data"])
        self.step, self.epoch = int(meta["step"]), int(meta["epoch"])
        self.history = [EpochResult.from_dict(r) for r in meta.get("history", [])]
        self.lr_scale, self.rollbacks = float(meta.get("lr_scale", 1.0)), int(meta.get("rollbacks", 0))
        self.seconds = float(meta.get("train_seconds", 0.0))  # a state saved before it was kept: the limit counts from now
        if not math.isfinite(self.seconds) or self.seconds < 0:
            raise ValueError("the training time is not a time")
        plan = meta.get("plan")  # a state saved before it was kept: planned again from the time spent
        if plan is not None and not (isinstance(plan, dict) and isinstance(plan.get("planned"), int)
                                     and not isinstance(plan.get("planned"), bool) and plan["planned"] >= 0):
            raise ValueError("the plan is not a number of epochs")
        self.saved_plan = plan
        if self.scaler is not None and meta.get("grad_scaler"):
            self.scaler.load_state_dict(meta["grad_scaler"])
        best = {k[len("best."):]: v for k, v in tensors.items() if k.startswith("best.")}
        self.best = best or None
        self.stopped_early = bool(meta.get("stopped_early", False)) and self.best is not None
        if self.best is not None and set(self.best) != set(self.model.state_dict()):
            raise ValueError("the best weights are another model's")
        if not (0 < self.lr_scale <= 1) or self.rollbacks < 0:
            raise ValueError("lr_scale or rollbacks out of range")
        in_epoch = meta.get("in_epoch")
        if in_epoch is not None:
            self.epoch_start_rng = tensors["rng.epoch_start"]
            self.batches_done = int(in_epoch["batches"])
            self.partial = {"seen": int(in_epoch["seen"]), "names": list(in_epoch["names"]),
                            "sums": tensors["epoch.sums"], "seconds": float(in_epoch["seconds"])}
            self.partial_view = (self.partial["names"], self.partial["sums"], self.partial["seen"],
                                 self.partial["seconds"])
        else:
            self.partial, self.batches_done, self.partial_view = None, 0, None


class MetricsLog(Callback):
    """One JSON object per epoch in a file (metrics.jsonl). The first epoch of a fit replaces the file with the
    trainer's whole history; later epochs append. `until` (an object with `saved`, the run's checkpointer, given
    under --overwrite): the old run's lines stay until the new run's first checkpoint has replaced its weights and
    config, so that a stop before it leaves the old run whole."""

    def __init__(self, path, until: Any = None) -> None:
        self.path = path
        self.started = False
        self.written = 0  # epochs of the history in the file
        self.until = until
        if until is not None and hasattr(until, "first_save"):  # a stop or a step checkpoint may commit first
            until.first_save.append(self._rewrite)

    def _rewrite(self, trainer: Trainer) -> None:
        """The file becomes this fit's whole history (atomically)."""
        write_lines(self.path, [json.dumps(row.to_dict()) for row in trainer.history])
        self.started, self.written = True, len(trainer.history)

    def on_rollback(self, trainer: Trainer) -> None:
        # The epochs rolled back over are trained again: the file follows the history now. Before this fit's first
        # epoch end it is left alone (under --overwrite it still holds the old run's lines).
        if self.started:
            self._rewrite(trainer)

    def on_epoch_end(self, trainer: Trainer, result: EpochResult) -> None:
        if not self.started:
            if self.until is not None and not self.until.saved:
                return  # the old run's lines until the new run has a checkpoint (then its whole history at once)
            self._rewrite(trainer)
            return
        if len(trainer.history) <= self.written:
            return  # in the file already: written when this epoch's checkpoint committed the run
        if os.path.islink(self.path):  # put there since the file was written: replaced, not written through
            self._rewrite(trainer)
            return
        try:  # (O_NOFOLLOW: a link put there from now on is refused, not written through)
            descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        except OSError as exc:
            raise VaekitError(f"cannot add epoch {result.epoch} to {self.path} ({exc.strerror}): make it a file of "
                              f"the run again, then continue from the last checkpoint (vaekit train --resume "
                              f"{os.path.dirname(self.path) or '.'})") from None
        try:
            size = os.fstat(descriptor).st_size
            line = (json.dumps(result.to_dict()) + "\n").encode()
            if os.write(descriptor, line) != len(line):  # (a short write: the disk filled)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:  # a full disk: the file as it was, not half a line
            with contextlib.suppress(OSError):
                os.ftruncate(descriptor, size)
            raise VaekitError(f"cannot add epoch {result.epoch} to {self.path} ({exc.strerror}): free some space, "
                              f"then continue from the last checkpoint (vaekit train --resume "
                              f"{os.path.dirname(self.path) or '.'})") from None
        finally:
            os.close(descriptor)
        self.written = len(trainer.history)
