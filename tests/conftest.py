"""Shared fixtures: small, seeded data and models so tests stay fast on 2 CPU cores."""
from __future__ import annotations

import pytest
import torch

from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture
def digits_config() -> RunConfig:
    return RunConfig(
        data=DataConfig(name="digits"),
        model=ModelConfig(latent_dim=8, network="mlp", hidden_dims=(128, 64)),
        train=TrainConfig(epochs=2, batch_size=64, progress=False),
    )
