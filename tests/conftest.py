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


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """A finished 2-epoch run folder on 300 digits (a tiny MLP): tests copy it before changing anything in it."""
    from vaekit.runs import train

    out = tmp_path_factory.mktemp("small") / "run"
    train(RunConfig(data=DataConfig(name="digits", limit=300), model=ModelConfig(latent_dim=2, hidden_dims=(16,)),
                    train=TrainConfig(epochs=2, progress=False)), out=out)
    return out
