"""Run configuration: frozen dataclasses, built once from defaults, a YAML file and "a.b=value" overrides."""
from __future__ import annotations

import dataclasses
import difflib
import json
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from .errors import VaekitError


@dataclass(frozen=True)
class DataConfig:
    name: str = "mnist-10k"  # a registered dataset name, or a path to user data (.npy/.npz/.csv/folder)
    data_dir: str | None = None  # searched first for file-backed datasets
    binarize: str = "none"  # none | dynamic (fresh Bernoulli draw per epoch) | static (once, fixed seed)
    image_size: int | None = None  # for image folders and generated datasets
    label_column: str | None = None  # CSV: name of the label column
    test_fraction: float = 0.1  # user data without its own split
    limit: int | None = None  # keep only the first N training items (quick runs)


@dataclass(frozen=True)
class ModelConfig:
    family: str = "vae"  # ae | vae (the registry in models.py lists every family)
    latent_dim: int = 16
    network: str = "auto"  # auto (conv for images, mlp for vectors) | mlp | conv
    hidden_dims: tuple[int, ...] = (512, 256)  # MLP widths; conv channels come from conv_channels
    conv_channels: tuple[int, ...] = (32, 64)
    likelihood: str = "auto"  # auto (bernoulli for [0,1] data, else gaussian) | bernoulli | gaussian
    gaussian_std: float | None = None  # fixed observation std; None learns one per pixel/feature
    beta: float = 1.0  # weight of the KL term (beta-VAE when != 1)
    data_shape: tuple[int, ...] = ()  # filled in from the data set


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"  # adam | adamw
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | cosine
    warmup_steps: int = 0  # linear learning-rate warm-up
    kl_warmup_epochs: float = 0.0  # KL weight ramps 0 -> 1 over this many epochs
    grad_clip: float | None = None
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | mps
    threads: int | None = None  # torch CPU threads; None keeps torch's default
    # fp32, or bf16: the matrix products in bfloat16 (autocast), weights, optimiser, loss and evaluation in float32
    precision: str = "fp32"
    progress: bool = True
    checkpoint_every: int = 1  # epochs between resume checkpoints


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


def _close(name: str, options: list[str]) -> str:
    matches = difflib.get_close_matches(name, options, n=3)
    return f" (did you mean {', '.join(matches)}?)" if matches else f" (known: {', '.join(options)})"


def _coerce(section: type, name: str, value: Any) -> Any:
    """Turn a YAML/CLI value into the field's declared type, or explain why it cannot be."""
    hint = typing.get_type_hints(section)[name]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    optional = type(None) in args
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and optional):
        if optional:
            return None
        raise VaekitError(f"config {section.__name__}.{name} cannot be empty")
    base = [a for a in args if a is not type(None)][0] if optional else hint
    base_origin = typing.get_origin(base)
    try:
        if base_origin is tuple or origin is tuple:
            if isinstance(value, str):
                value = [v for v in value.replace(" ", "").split(",") if v]
            if isinstance(value, (int, float)):
                value = [value]
            return tuple(int(v) for v in value)
        if base is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if base is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if base is float:
            return float(value)
        if base is str:
            return str(value)
    except (TypeError, ValueError):
        pass
    else:
        return value
    raise VaekitError(f"config {section.__name__}.{name}: cannot read {value!r} as {getattr(base, '__name__', base)}")


def _apply(cfg: RunConfig, section_name: str, values: dict[str, Any]) -> RunConfig:
    if section_name not in _SECTIONS:
        raise VaekitError(f"unknown config section {section_name!r}{_close(section_name, list(_SECTIONS))}")
    section = _SECTIONS[section_name]
    names = [f.name for f in fields(section)]
    updates = {}
    for key, value in values.items():
        if key not in names:
            raise VaekitError(f"unknown config key {section_name}.{key}{_close(key, names)}")
        updates[key] = _coerce(section, key, value)
    return replace(cfg, **{section_name: replace(getattr(cfg, section_name), **updates)})


def from_dict(raw: dict[str, Any], base: RunConfig | None = None) -> RunConfig:
    cfg = base or RunConfig()
    if not isinstance(raw, dict):
        raise VaekitError("a config must be a mapping with sections data/model/train")
    for section_name, values in raw.items():
        if not isinstance(values, dict):
            raise VaekitError(f"config section {section_name!r} must be a mapping, got {values!r}")
        cfg = _apply(cfg, section_name, values)
    return validate(cfg)


def load_yaml(path: str | Path, base: RunConfig | None = None) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise VaekitError(f"config file not found: {path} (check the path given to --config)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise VaekitError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    return from_dict(raw, base)


def override(cfg: RunConfig, assignments: list[str]) -> RunConfig:
    """Apply "section.key=value" strings, e.g. "train.lr=3e-4"."""
    for item in assignments:
        key, sep, value = item.partition("=")
        section_name, dot, name = key.partition(".")
        if not sep or not dot:
            raise VaekitError(f"override {item!r} must look like section.key=value, e.g. train.lr=3e-4")
        cfg = _apply(cfg, section_name.strip(), {name.strip(): yaml.safe_load(value) if value else value})
    return validate(cfg)


_CHOICES = {
    ("data", "binarize"): ("none", "dynamic", "static"),
    ("model", "network"): ("auto", "mlp", "conv"),
    ("model", "likelihood"): ("auto", "bernoulli", "gaussian"),
    ("train", "optimizer"): ("adam", "adamw"),
    ("train", "schedule"): ("constant", "cosine"),
    ("train", "device"): ("auto", "cpu", "cuda", "mps"),
    ("train", "precision"): ("fp32", "bf16"),
}


def validate(cfg: RunConfig) -> RunConfig:
    """Check values once, at the boundary, with messages that name the fix."""
    for (section_name, name), options in _CHOICES.items():
        value = getattr(getattr(cfg, section_name), name)
        if value not in options:
            raise VaekitError(f"{section_name}.{name}={value!r} is not one of {', '.join(options)}")
    from .models import MODEL_FAMILIES  # late import: the registry lives with the models

    if cfg.model.family not in MODEL_FAMILIES:
        raise VaekitError(
            f"unknown model family {cfg.model.family!r}{_close(cfg.model.family, sorted(MODEL_FAMILIES))}"
        )
    checks = [
        (cfg.model.latent_dim >= 1, "model.latent_dim must be at least 1"),
        (all(h >= 1 for h in cfg.model.hidden_dims), "model.hidden_dims must be positive widths, e.g. 512,256"),
        (all(c >= 1 for c in cfg.model.conv_channels), "model.conv_channels must be positive, e.g. 32,64"),
        (cfg.model.beta >= 0, "model.beta must be >= 0"),
        (cfg.model.gaussian_std is None or cfg.model.gaussian_std > 0, "model.gaussian_std must be > 0"),
        (cfg.train.epochs >= 0, "train.epochs must be >= 0"),
        (cfg.train.batch_size >= 1, "train.batch_size must be >= 1"),
        (cfg.train.lr > 0, "train.lr must be > 0, e.g. 1e-3"),
        (cfg.train.warmup_steps >= 0, "train.warmup_steps must be >= 0"),
        (cfg.train.kl_warmup_epochs >= 0, "train.kl_warmup_epochs must be >= 0"),
        (cfg.train.threads is None or cfg.train.threads >= 1, "train.threads must be >= 1"),
        (cfg.train.checkpoint_every >= 1, "train.checkpoint_every must be >= 1"),
        (0 < cfg.data.test_fraction < 1, "data.test_fraction must be between 0 and 1"),
        (cfg.data.limit is None or cfg.data.limit >= 1, "data.limit must be >= 1"),
        (cfg.data.image_size is None or cfg.data.image_size >= 4, "data.image_size must be >= 4"),
    ]
    for ok, message in checks:
        if not ok:
            raise VaekitError(message)
    return cfg
