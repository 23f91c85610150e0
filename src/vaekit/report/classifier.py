"""A small classifier trained on a data set's labels, whose hidden features stand in for Inception's in an FCD."""
from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch import nn

from ..data import Dataset
from ..errors import VaekitError

log = logging.getLogger(__name__)


class FeatureClassifier(nn.Module):
    """Conv body for images (two conv layers), MLP for vectors; `features` is the ReLU layer before the logits."""

    def __init__(self, data_shape: tuple[int, ...], classes: int, feature_dim: int = 64) -> None:
        super().__init__()
        if len(data_shape) == 3:
            channels, height, width = data_shape
            pool = [nn.MaxPool2d(2)] if min(height, width) >= 8 else []
            self.body = nn.Sequential(
                nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), *pool,
                nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                nn.Flatten(), nn.Linear(64 * 16, feature_dim), nn.ReLU(),
            )
        else:
            self.body = nn.Sequential(
                nn.Flatten(), nn.Linear(math.prod(data_shape), 256), nn.ReLU(), nn.Linear(256, feature_dim), nn.ReLU()
            )
        self.head = nn.Linear(feature_dim, classes)
        self.test_accuracy: float = float("nan")  # set by train_feature_classifier, on the items `checked_on` says
        self.checked_on = "test"
        self.epochs = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    @torch.no_grad()
    def features_of(self, x: torch.Tensor, batch_size: int = 1000) -> np.ndarray:
        """(N, feature_dim) float64 features, computed in eval mode on the CPU."""
        self.eval()
        return torch.cat([self.body(batch.cpu().float()) for batch in x.split(batch_size)]).double().numpy()

    @torch.no_grad()
    def accuracy(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
        self.eval()
        right = sum(int((self(xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(batch_size), y.split(batch_size)))
        return right / len(x)


def train_feature_classifier(dataset: Dataset, steps: int = 1000, seed: int = 0, batch_size: int = 128,
                             lr: float = 1e-3, progress: bool = False) -> FeatureClassifier:
    """Cross-entropy on the training labels with Adam, seeded, for whole epochs totalling at least `steps` batches
    (a fixed budget: 84 epochs of digits, 3 of MNIST). Test accuracy and epochs are stored on the result; `progress`:
    a bar of its steps."""
    from tqdm.auto import tqdm

    from ..progress import bar_timing

    if dataset.y_train is None or dataset.y_test is None:
        raise VaekitError(f"{dataset.name} has no labels: the feature classifier needs class labels to train on")
    classes = int(max(int(dataset.y_train.max()), int(dataset.y_test.max()))) + 1
    torch.manual_seed(seed)
    model = FeatureClassifier(dataset.shape, classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    x, y = dataset.x_train, dataset.y_train
    x_check, y_check = dataset.x_test, dataset.y_test
    if not set(dataset.y_test.tolist()) <= set(y.tolist()) and len(x) >= 20:
        # test classes the training split lacks (Olivetti keeps people apart): accuracy there is 0 by construction,
        # so it is measured on a tenth of the training items, held out from the classifier alone
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed + 1))
        held = len(x) // 10
        x_check, y_check, x, y = x[order[:held]], y[order[:held]], x[order[held:]], y[order[held:]]
        model.checked_on = "held-out training"  # items: the test split's classes are not the training split's
    epochs = max(1, math.ceil(steps / math.ceil(len(x) / batch_size)))
    model.train()
    with tqdm(total=epochs * math.ceil(len(x) / batch_size), desc="feature classifier", unit="step", leave=False,
              disable=not progress, dynamic_ncols=True, **bar_timing()) as bar:
        for _ in range(epochs):
            for index in torch.randperm(len(x), generator=generator).split(batch_size):
                loss = nn.functional.cross_entropy(model(x[index]), y[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                bar.update()
    model.test_accuracy = model.accuracy(x_check, y_check)
    model.epochs = epochs
    log.info("feature classifier: %.1f%% accuracy on the %s items of %s after %d epoch%s",
             100 * model.test_accuracy, model.checked_on, dataset.name, epochs, "" if epochs == 1 else "s")
    return model
