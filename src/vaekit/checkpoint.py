"""Run folders on disk: config.json + model.safetensors (the model alone), resume state; atomic, no pickle."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .config import RunConfig, from_dict
from .errors import VaekitError
from .models import Model, build_model

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
RESUME_TENSORS = "resume.safetensors"
RESUME_STATE = "resume.json"
FORMAT = 1


def _atomic_write(path: Path, write: Any) -> None:
    """write(tmp_path) then rename over path: a crash leaves the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a run folder is read like any other file
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    _atomic_write(Path(path), lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))


def write_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    _atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def unwrap(model: torch.nn.Module) -> Model:
    """Strip DDP (.module) and torch.compile (._orig_mod) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model  # type: ignore[return-value]


def save_pretrained(model: torch.nn.Module, config: RunConfig, directory: str | Path) -> Path:
    directory = Path(directory)
    model = unwrap(model)
    write_tensors(directory / MODEL_FILE, model.state_dict(), {"format": str(FORMAT), "family": model.family})
    write_json(directory / CONFIG_FILE, {"vaekit_version": __version__, "format": FORMAT, **config.to_dict()})
    return directory


def load_config(directory: str | Path) -> RunConfig:
    directory = Path(directory)
    path = directory / CONFIG_FILE
    if not directory.exists():
        raise VaekitError(f"run folder not found: {directory} (train one with: vaekit train --out {directory})")
    if not path.is_file():
        raise VaekitError(f"{directory} holds no {CONFIG_FILE}: it is not a vaekit run folder (train one with vaekit train)")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise VaekitError(f"{path} is corrupt ({exc.__class__.__name__}): retrain, or restore it from a backup") from None
    if not isinstance(raw, dict):
        raise VaekitError(f"{path} is corrupt (not a JSON object): retrain, or restore it from a backup")
    raw.pop("vaekit_version", None)
    fmt = raw.pop("format", FORMAT)
    if not isinstance(fmt, int) or not all(isinstance(raw.get(k, {}), dict) for k in ("data", "model", "train")):
        raise VaekitError(f"{path} is corrupt (unexpected structure): retrain, or restore it from a backup")
    if fmt > FORMAT:
        raise VaekitError(f"{path} was written by a newer vaekit: upgrade vaekit to load it")
    model = raw.get("model", {})
    if isinstance(model.get("data_shape"), list):
        model["data_shape"] = tuple(model["data_shape"])
    return from_dict(raw)


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise VaekitError(f"{path} is missing: the run has no saved model yet (train it, or check the folder)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise VaekitError(f"{path} is corrupt ({str(exc).splitlines()[0][:80]}): retrain, or restore it from a backup") from None


def load(directory: str | Path, device: str | torch.device = "cpu") -> Model:
    """A trained model from a run folder, in eval mode."""
    directory = Path(directory)
    config = load_config(directory)
    model = build_model(config.model)
    state = read_tensors(directory / MODEL_FILE)
    missing, unexpected = set(model.state_dict()) - set(state), set(state) - set(model.state_dict())
    if missing or unexpected:
        raise VaekitError(
            f"{directory / MODEL_FILE} does not match {CONFIG_FILE} (missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}): the two files come from different runs"
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise VaekitError(f"{directory / MODEL_FILE} does not match {CONFIG_FILE}: {str(exc).splitlines()[-1].strip()}") from None
    return model.to(device).eval()


def save_resume(directory: str | Path, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    """Tensors first, then the JSON that names them: resume.json is the commit point."""
    directory = Path(directory)
    write_tensors(directory / RESUME_TENSORS, tensors, {"step": str(state["step"])})
    write_json(directory / RESUME_STATE, state)


def load_resume(directory: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    directory = Path(directory)
    state_path = directory / RESUME_STATE
    if not state_path.is_file():
        raise VaekitError(f"{directory} has no resume state ({RESUME_STATE}): start a new run with vaekit train --out DIR")
    try:
        state = json.loads(state_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise VaekitError(f"{state_path} is corrupt: start the run again") from None
    tensors = read_tensors(directory / RESUME_TENSORS)
    needed = ("step", "epoch", "optimizer_groups")
    if not isinstance(state, dict) or any(k not in state for k in needed) or "rng.torch" not in tensors:
        raise VaekitError(f"the resume state in {directory} is corrupt or incomplete: start the run again")
    return tensors, state
