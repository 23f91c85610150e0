"""Shared CLI pieces: the flags that make a RunConfig, loading a run and its data, writing outputs."""
from __future__ import annotations

import argparse
from dataclasses import replace
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .. import checkpoint, config as config_module
from ..config import RunConfig
from ..data import Dataset, load_dataset
from ..errors import VaekitError
from ..models import Model

# flag -> (section, field); a flag left unset keeps the value from --config / --recipe / the default.
CONFIG_FLAGS = {
    "data": ("data", "name"), "data_dir": ("data", "data_dir"), "binarize": ("data", "binarize"),
    "image_size": ("data", "image_size"), "label_column": ("data", "label_column"), "limit": ("data", "limit"),
    "model": ("model", "family"), "latent_dim": ("model", "latent_dim"), "network": ("model", "network"),
    "hidden_dims": ("model", "hidden_dims"), "conv_channels": ("model", "conv_channels"),
    "likelihood": ("model", "likelihood"), "gaussian_std": ("model", "gaussian_std"), "beta": ("model", "beta"),
    "epochs": ("train", "epochs"), "batch_size": ("train", "batch_size"), "lr": ("train", "lr"),
    "optimizer": ("train", "optimizer"), "schedule": ("train", "schedule"), "warmup_steps": ("train", "warmup_steps"),
    "kl_warmup_epochs": ("train", "kl_warmup_epochs"), "seed": ("train", "seed"), "device": ("train", "device"),
    "threads": ("train", "threads"), "precision": ("train", "precision"),
}


def recipes() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("vaekit").joinpath("recipes").iterdir() if p.name.endswith(".yaml"))


def add_data_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--data", help="dataset name (mnist-10k, digits, mnist, fashion-mnist, shapes, ...) or a path")
    group.add_argument("--data-dir", help="folder searched first for dataset files")
    group.add_argument("--binarize", choices=["none", "dynamic", "static"], help="binarise [0,1] data")
    group.add_argument("--image-size", type=int, help="image size for image folders and generated data")
    group.add_argument("--label-column", help="CSV: the label column's name")
    group.add_argument("--limit", type=int, help="use only the first N training items")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML run config; flags override it")
    parser.add_argument("--recipe", help="a shipped config by name (see 'vaekit train --help'); flags override it")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override any config field")
    add_data_flags(parser)
    model = parser.add_argument_group("model")
    model.add_argument("--model", help="model family: vae or ae")
    model.add_argument("--latent-dim", type=int)
    model.add_argument("--network", choices=["auto", "mlp", "conv"])
    model.add_argument("--hidden-dims", help="MLP widths, e.g. 512,256")
    model.add_argument("--conv-channels", help="conv channels, e.g. 32,64")
    model.add_argument("--likelihood", choices=["auto", "bernoulli", "gaussian"])
    model.add_argument("--gaussian-std", type=float, help="fixed Gaussian std (default: learned)")
    model.add_argument("--beta", type=float, help="KL weight (beta-VAE when != 1)")
    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--optimizer", choices=["adam", "adamw"])
    train.add_argument("--schedule", choices=["constant", "cosine"])
    train.add_argument("--warmup-steps", type=int)
    train.add_argument("--kl-warmup-epochs", type=float)
    train.add_argument("--seed", type=int)
    train.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"])
    train.add_argument("--threads", type=int, help="CPU threads for torch")
    train.add_argument("--precision", choices=["fp32", "bf16"],
                       help="bf16: matrix products in bfloat16, 1.25-1.6x faster on CPUs with AVX512-BF16 or AMX "
                            "(weights, loss and evaluation stay float32)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace, base: RunConfig | None = None) -> RunConfig:
    cfg = base or RunConfig()
    if getattr(args, "recipe", None):
        names = recipes()
        if args.recipe not in names:
            raise VaekitError(f"unknown recipe {args.recipe!r}: use one of {', '.join(names)}")
        with resources.as_file(resources.files("vaekit").joinpath(f"recipes/{args.recipe}.yaml")) as path:
            cfg = config_module.load_yaml(path, cfg)
    if getattr(args, "config", None):
        cfg = config_module.load_yaml(args.config, cfg)
    sections: dict[str, dict] = {}
    for flag, (section, name) in CONFIG_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            sections.setdefault(section, {})[name] = value
    if getattr(args, "no_progress", False):
        sections.setdefault("train", {})["progress"] = False
    cfg = config_module.from_dict(sections, cfg)
    return config_module.override(cfg, getattr(args, "set", []) or [])


def load_run(path: str) -> Model:
    return checkpoint.load(path)


def run_dataset(run: str, args: argparse.Namespace) -> Dataset:
    """The data a command works on: flags if given, else the run's own data set (with its binarisation)."""
    cfg = checkpoint.load_config(run).data
    updates = {name: getattr(args, flag) for flag, (section, name) in CONFIG_FLAGS.items()
               if section == "data" and getattr(args, flag, None) is not None}
    dataset = load_dataset(replace(cfg, **updates))
    model_shape = tuple(checkpoint.load_config(run).model.data_shape)
    if tuple(dataset.shape) != model_shape:
        raise VaekitError(f"the data has items of shape {dataset.shape}, but the model at {run} expects {model_shape}")
    return dataset


def split_x(dataset: Dataset, split: str) -> torch.Tensor:
    return dataset.split(split).x


def pick(x: torch.Tensor, index: int, what: str = "item") -> torch.Tensor:
    if not -len(x) <= index < len(x):
        raise VaekitError(f"{what} index {index} is out of range: the split has {len(x)} items (0..{len(x) - 1})")
    return x[index]


def load_array(path: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise VaekitError(f"file not found: {p}")
    try:
        if p.suffix == ".npz":
            with np.load(p) as archive:
                return archive[archive.files[0]]
        return np.load(p, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise VaekitError(f"cannot read {p} as a numpy array ({str(exc).splitlines()[0][:80]}): write it with numpy.save") from None


def add_out(parser: argparse.ArgumentParser, default: str | None = None, help: str = ".png picture or .npy arrays") -> None:
    parser.add_argument("--out", default=default, required=default is None, help=help)


def add_split(parser: argparse.ArgumentParser, default: str = "test") -> None:
    parser.add_argument("--split", choices=["train", "test"], default=default, help="which split to take items from")
