"""vaekit: autoencoders and variational autoencoders on PyTorch."""
__version__ = "0.1.0"

from .checkpoint import load, save_pretrained  # noqa: E402
from .config import DataConfig, ModelConfig, RunConfig, TrainConfig, setting  # noqa: E402
from .data import Dataset, TensorData, load_dataset  # noqa: E402
from .errors import VaekitError  # noqa: E402
from .distributions import Likelihood, register_likelihood  # noqa: E402
from .models import AE, IWAE, VAE, Model, Output, build_model, register_family  # noqa: E402
from .runs import resume, train, train_stage  # noqa: E402
from .train import Callback, EpochResult, StepResult, Trainer  # noqa: E402
from . import compare, disentangle, latent, metrics, viz  # noqa: E402  (vaekit.latent.interpolate, ...)
from .compare import CompareOptions, CompareResult  # noqa: E402

__all__ = [
    "AE", "IWAE", "VAE", "Callback", "CompareOptions", "CompareResult", "DataConfig", "Dataset", "EpochResult",
    "Likelihood", "Model", "ModelConfig", "Output", "RunConfig", "StepResult", "TensorData", "TrainConfig", "Trainer",
    "VaekitError", "__version__", "build_model", "compare", "disentangle", "latent", "load", "load_dataset", "metrics",
    "register_family", "register_likelihood", "resume", "save_pretrained", "setting", "train", "train_stage", "viz",
]
