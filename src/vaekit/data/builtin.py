"""Data sets that need no download: the embedded MNIST subset and scikit-learn's 8x8 digits."""
from __future__ import annotations

from importlib import resources

import numpy as np
import torch

from ..config import DataConfig
from . import Dataset, register_dataset

DIGIT_NAMES = tuple(str(d) for d in range(10))


def images_to_tensor(images: np.ndarray, scale: float = 255.0) -> torch.Tensor:
    """(N, H, W) or (N, H, W, C) integers -> float32 (N, C, H, W) in [0, 1]."""
    x = torch.from_numpy(np.array(images, dtype=np.float32)).div_(scale)  # a writable copy
    return x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()


@register_dataset("mnist-10k", "first 10,000 MNIST training digits, embedded (9,000 train / 1,000 test)")
def load_mnist_10k(cfg: DataConfig) -> Dataset:
    with resources.files("vaekit").joinpath("_data/mnist10k.npz").open("rb") as handle:
        arrays = np.load(handle)
        images, labels = arrays["images"], arrays["labels"]
    x = images_to_tensor(images)
    y = torch.from_numpy(labels.astype(np.int64))
    return Dataset("mnist-10k", x[:9000], x[9000:], y[:9000], y[9000:], label_names=DIGIT_NAMES, is_image=True)


@register_dataset("digits", "scikit-learn's bundled 8x8 digits (1,797 images; 1,437 train / 360 test)")
def load_digits(cfg: DataConfig) -> Dataset:
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = images_to_tensor(bunch.images, scale=16.0)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    # A fixed permutation so both splits hold every class; the same on every machine.
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    n_test = 360
    return Dataset("digits", x[n_test:], x[:n_test], y[n_test:], y[:n_test], label_names=DIGIT_NAMES, is_image=True)


from . import idx_datasets  # noqa: E402,F401  (registers mnist and fashion-mnist)
from . import shapes  # noqa: E402,F401  (registers shapes)
