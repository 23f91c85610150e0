"""Trainer: optimiser, schedules, progress, resume state. It calls model.loss only and knows no family."""
from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from .config import TrainConfig
from .data import TensorData
from .errors import VaekitError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochResult:
    epoch: int  # 1-based: epochs completed
    step: int
    train_loss: float
    train_recon: float
    train_kl: float
    val_loss: float | None
    val_recon: float | None
    val_kl: float | None
    lr: float
    kl_scale: float
    seconds: float
    images_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Callback(Protocol):
    def on_epoch_end(self, trainer: "Trainer", result: EpochResult) -> None: ...


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


def check_precision(precision: str, device: torch.device) -> None:
    if precision != "bf16":
        return
    if device.type not in ("cpu", "cuda"):
        raise VaekitError(f"--precision bf16 runs on cpu and cuda, not {device.type}: "
                          "use --device cpu, or train with --precision fp32")
    if native_bf16(device) is False:
        log.warning("this %s has no native bfloat16 matrix products (CPU: AVX512-BF16 or AMX), so --precision bf16 "
                    "will likely be slower than fp32", device.type)


def learning_rate(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """Linear warm-up, then constant or cosine decay to zero; a pure function of the step (resume-safe)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "cosine" and total_steps > cfg.warmup_steps:
        progress = (step - cfg.warmup_steps) / (total_steps - cfg.warmup_steps)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr


def kl_scale(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """KL warm-up (Bowman et al. 2016; Sønderby et al. 2016): weight ramps linearly from 0 to 1."""
    if cfg.kl_warmup_epochs <= 0:
        return 1.0
    return min(1.0, step / (cfg.kl_warmup_epochs * steps_per_epoch))


class Trainer:
    """All training state lives here: model, optimiser, step, epoch, random generators, history."""

    def __init__(self, model: torch.nn.Module, cfg: TrainConfig, callbacks: list[Callback] | None = None) -> None:
        self.cfg = cfg
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        self.device = resolve_device(cfg.device)
        check_precision(cfg.precision, self.device)
        self.model = model.to(self.device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        # One fused kernel per step where torch has one (CPU, CUDA); else foreach: a few multi-tensor kernels.
        fused = self.device.type in ("cpu", "cuda") and all(p.dtype == torch.float32 for p in params)
        self.optimizer = optimizer(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                   **({"fused": True} if fused else {"foreach": True}))
        self.callbacks = list(callbacks or [])
        self.step = 0
        self.epoch = 0
        self.history: list[EpochResult] = []
        self.generator = torch.Generator().manual_seed(cfg.seed)  # shuffling and dynamic binarisation

    # ---- the loop -------------------------------------------------------------------------------
    def fit(self, train: TensorData, val: TensorData | None = None) -> list[EpochResult]:
        if len(train) == 0:
            raise VaekitError("the training set is empty: check --data and --limit")
        train = train.to(self.device)  # once, not per batch
        val = val.to(self.device) if val is not None else None
        steps_per_epoch = math.ceil(len(train) / self.cfg.batch_size)
        total_steps = steps_per_epoch * self.cfg.epochs
        while self.epoch < self.cfg.epochs:
            result = self._train_epoch(train, val, steps_per_epoch, total_steps)
            self.history.append(result)
            for callback in self.callbacks:
                callback.on_epoch_end(self, result)
        return self.history

    def _train_epoch(self, train: TensorData, val: TensorData | None, steps_per_epoch: int, total_steps: int) -> EpochResult:
        self.model.train()
        start = time.perf_counter()
        # Summed on the device: reading a GPU number every step would stall it; it is read every 25 steps.
        sums = torch.zeros(3, device=self.device)
        seen = 0
        bar = tqdm(
            total=len(train), desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}", unit="img", unit_scale=True,
            disable=not self.cfg.progress, leave=False, dynamic_ncols=True,
            mininterval=0.2 if sys.stderr.isatty() else 30.0,  # a log file gets a line every 30 s, not a flood
        )
        for x, y in train.batches(self.cfg.batch_size, self.generator, shuffle=True):
            lr = learning_rate(self.cfg, self.step, total_steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            scale = kl_scale(self.cfg, self.step, steps_per_epoch)
            with self.autocast():
                out = self.model.loss(x, y, kl_scale=scale)
            self.optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            if self.cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            self.optimizer.step()
            self.step += 1
            batch = x.shape[0]
            sums += torch.stack([out.loss.detach(), out.recon.detach(), out.kl.detach()]) * batch
            seen += batch
            bar.update(batch)
            if self.step % 25 == 0 or seen == len(train):
                loss, recon, kl = (sums / seen).tolist()
                if not math.isfinite(loss):
                    bar.close()
                    raise VaekitError(
                        f"the loss became {loss} at step {self.step}: lower --lr, or set train.grad_clip=1.0"
                    )
                bar.set_postfix(loss=f"{loss:.2f}", recon=f"{recon:.2f}", kl=f"{kl:.2f}",
                                img_s=f"{seen / (time.perf_counter() - start):.0f}", refresh=False)
        bar.close()
        seconds = time.perf_counter() - start
        self.epoch += 1
        loss, recon, kl = (sums / seen).tolist()
        val_loss = val_recon = val_kl = None
        if val is not None and len(val):
            val_loss, val_recon, val_kl = self.evaluate_loss(val)
        result = EpochResult(
            epoch=self.epoch, step=self.step, train_loss=loss, train_recon=recon, train_kl=kl,
            val_loss=val_loss, val_recon=val_recon, val_kl=val_kl, lr=lr, kl_scale=scale,
            seconds=seconds, images_per_s=seen / seconds,
        )
        log.info(
            "epoch %d/%d  loss %.3f (recon %.3f, kl %.3f)%s  %.1fs  %.0f img/s",
            self.epoch, self.cfg.epochs, loss, recon, kl,
            "" if val_loss is None else f"  val {val_loss:.3f}", seconds, result.images_per_s,
        )
        return result

    def autocast(self) -> torch.autocast:
        """bf16: the matrix products in bfloat16; the model casts its network outputs back to float32 for the loss."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16")

    @torch.no_grad()
    def evaluate_loss(self, data: TensorData, batch_size: int = 1000) -> tuple[float, float, float]:
        """Mean negative ELBO and its parts on data (beta and KL warm-up not applied: the true bound)."""
        self.model.eval()
        sums = torch.zeros(3, dtype=torch.float64)
        # A fixed generator for the one posterior sample keeps validation numbers comparable across epochs.
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(0)  # restored on exit, on every device: training's random stream is untouched
            for x, y in data.batches(batch_size):
                out = self.model.loss(x, y, kl_scale=1.0)
                recon, kl = out.recon.double().cpu(), out.kl.double().cpu()
                sums += torch.stack([recon + kl, recon, kl]) * x.shape[0]
        self.model.train()
        return tuple((sums / len(data)).tolist())  # type: ignore[return-value]

    # ---- state: one place, safetensors + JSON ----------------------------------------------------
    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
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
        tensors["rng.data"] = self.generator.get_state()
        if torch.cuda.is_available():
            for i, state in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = state
        meta = {
            "step": self.step,
            "epoch": self.epoch,
            "optimizer_groups": optimizer["param_groups"],
            "optimizer_scalars": scalars,
            "history": [r.to_dict() for r in self.history],
        }
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
        self.generator.set_state(tensors["rng.data"])
        cuda_states = [tensors[k] for k in sorted(t for t in tensors if t.startswith("rng.cuda."))]
        if cuda_states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda_states)
        self.step, self.epoch = int(meta["step"]), int(meta["epoch"])
        self.history = [EpochResult(**r) for r in meta.get("history", [])]


class MetricsLog:
    """Appends one JSON object per epoch to a file (metrics.jsonl)."""

    def __init__(self, path) -> None:
        self.path = path

    def on_epoch_end(self, trainer: Trainer, result: EpochResult) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(result.to_dict()) + "\n")
