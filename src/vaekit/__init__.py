"""vaekit: autoencoders and variational autoencoders on PyTorch."""
__version__ = "0.1.0"

from .checkpoint import load, save_pretrained  # noqa: E402
from .config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from .data import Dataset, TensorData, load_dataset  # noqa: E402
from .errors import VaekitError  # noqa: E402
from .models import AE, VAE, LossOutput, Model, build_model  # noqa: E402
from .runs import resume, train  # noqa: E402
from .train import Trainer  # noqa: E402
from . import compare, disentangle, latent, metrics, viz  # noqa: E402  (vaekit.latent.interpolate, ...)
from .compare import CompareOptions, CompareResult  # noqa: E402

__all__ = [
    "AE", "VAE", "CompareOptions", "CompareResult", "DataConfig", "Dataset", "LossOutput", "Model", "ModelConfig",
    "RunConfig", "TensorData", "TrainConfig", "Trainer", "VaekitError", "__version__", "build_model", "compare",
    "disentangle", "latent", "load", "load_dataset", "metrics", "resume", "save_pretrained", "train", "viz",
]
