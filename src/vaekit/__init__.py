"""vaekit: autoencoders and variational autoencoders on PyTorch.

The names below load on first use (PEP 562), so that `import vaekit` alone costs nothing: the `vaekit` command
(vaekit.entry) can then take a Ctrl-C while torch loads, and `vaekit --version` answers at once."""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> the submodule that defines it; a name mapped to None is a submodule itself (vaekit.latent.interpolate, ...)
_EXPORTS: dict[str, str | None] = {
    "load": "checkpoint", "save_pretrained": "checkpoint",
    "DataConfig": "config", "ModelConfig": "config", "RunConfig": "config", "TrainConfig": "config",
    "setting": "config",
    "Dataset": "data", "TensorData": "data", "load_dataset": "data",
    "VaekitError": "errors",
    "Likelihood": "distributions", "register_likelihood": "distributions",
    "AE": "models", "IWAE": "models", "VAE": "models", "Model": "models", "Output": "models", "build_model": "models",
    "register_family": "models",
    "resume": "runs", "train": "runs", "train_stage": "runs",
    "Callback": "train", "EpochResult": "train", "StepResult": "train", "Trainer": "train",
    "CompareOptions": "compare", "CompareResult": "compare",
    "compare": None, "disentangle": None, "latent": None, "metrics": None, "viz": None,
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        if name.isidentifier() and not name.startswith("_"):
            spec = importlib.util.find_spec(f"{__name__}.{name}")
            if spec is not None and spec.origin not in (None, "namespace"):  # a module, not a folder of data
                return importlib.import_module(f".{name}", __name__)  # any submodule: vaekit.data, vaekit.runs, ...
        raise AttributeError(f"module 'vaekit' has no attribute {name!r}")
    home = _EXPORTS[name]
    if home is None:
        return importlib.import_module(f".{name}", __name__)  # the import sets it on the package too
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


class _Package(types.ModuleType):
    """vaekit.train is the function (vaekit.runs.train), as it always was, although a submodule vaekit.train holds
    the trainer: the import system's binding of that submodule on the package is declined (the module stays in
    sys.modules, so `from vaekit.train import Trainer` works)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "train" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:  # for type checkers and editors: the same names, imported eagerly
    from . import compare, disentangle, latent, metrics, viz  # noqa: F401
    from .checkpoint import load, save_pretrained  # noqa: F401
    from .compare import CompareOptions, CompareResult  # noqa: F401
    from .config import DataConfig, ModelConfig, RunConfig, TrainConfig, setting  # noqa: F401
    from .data import Dataset, TensorData, load_dataset  # noqa: F401
    from .distributions import Likelihood, register_likelihood  # noqa: F401
    from .errors import VaekitError  # noqa: F401
    from .models import AE, IWAE, VAE, Model, Output, build_model, register_family  # noqa: F401
    from .runs import resume, train, train_stage  # noqa: F401
    from .train import Callback, EpochResult, StepResult, Trainer  # noqa: F401
