"""vaekit: autoencoders and variational autoencoders on PyTorch."""
__version__ = "0.1.0"

from .checkpoint import load, save_pretrained  # noqa: E402
from .config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from .data import Dataset, TensorData, load_dataset  # noqa: E402
from .errors import VaekitError  # noqa: E402
from .models import AE, VAE, LossOutput, Model, build_model  # noqa: E402
from .runs import resume, train  # noqa: E402
from .train import Trainer  # noqa: E402

__all__ = [
    "AE", "VAE", "DataConfig", "Dataset", "LossOutput", "Model", "ModelConfig", "RunConfig", "TensorData",
    "TrainConfig", "Trainer", "VaekitError", "build_model", "load", "load_dataset", "resume", "save_pretrained",
    "train", "__version__",
]
