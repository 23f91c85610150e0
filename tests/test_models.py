"""The model contract, parametrised over every registered family, and training on real (bundled) data."""
import pytest
import torch

import vaekit
from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaekit.data import load_dataset
from vaekit.models import MODEL_FAMILIES, build_model
from vaekit.runs import resolve_config

SHAPES = {"vector": (12,), "image": (1, 12, 12)}


def make(family: str, shape: tuple, network: str = "auto", likelihood: str = "bernoulli") -> vaekit.Model:
    return build_model(ModelConfig(family=family, latent_dim=3, hidden_dims=(16,), conv_channels=(4, 8),
                                   data_shape=shape, network=network, likelihood=likelihood))


@pytest.mark.parametrize("family", sorted(MODEL_FAMILIES))
@pytest.mark.parametrize("kind", sorted(SHAPES))
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_contract(family, kind, likelihood):
    shape = SHAPES[kind]
    model = make(family, shape, likelihood=likelihood)
    x = torch.rand(5, *shape)
    qz = model.encode(x)
    assert qz.batch_shape == (5,) and qz.event_shape == (3,)
    px = model.decode(qz.mean)
    assert px.batch_shape == (5,) and px.event_shape == shape
    out = model.loss(x)
    assert out.loss.shape == () and torch.isfinite(out.loss)
    assert out.elbo.shape == (5,)
    torch.testing.assert_close(-out.elbo.mean(), out.recon + out.kl)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.sample(4, torch.Generator().manual_seed(0)).shape == (4, *shape)
    assert model.reconstruct(x).shape == x.shape


def test_ae_has_no_regularizer_and_vae_has_kl():
    x = torch.rand(4, 12)
    assert make("ae", (12,)).loss(x).kl.item() == 0.0
    assert make("vae", (12,)).loss(x).kl.item() > 0.0


def test_beta_weights_only_the_kl():
    x = torch.rand(4, 12)
    torch.manual_seed(0)
    base = build_model(ModelConfig(latent_dim=3, hidden_dims=(16,), data_shape=(12,), likelihood="bernoulli"))
    heavy = build_model(ModelConfig(latent_dim=3, hidden_dims=(16,), data_shape=(12,), likelihood="bernoulli", beta=4.0))
    heavy.load_state_dict(base.state_dict())
    torch.manual_seed(1)
    a = base.loss(x)
    torch.manual_seed(1)
    b = heavy.loss(x)
    torch.testing.assert_close(b.loss, a.recon + 4.0 * a.kl)
    torch.testing.assert_close(a.elbo, b.elbo)


def test_conv_decoder_restores_odd_sizes():
    for size in (8, 28, 32, 33):
        model = make("vae", (1, size, size), network="conv")
        assert model.decode(torch.zeros(2, 3)).mean.shape == (2, 1, size, size)


def test_log_importance_weights_with_one_sample_average_to_the_elbo():
    torch.manual_seed(0)
    model = make("vae", (12,))
    x = torch.bernoulli(torch.rand(6, 12))
    torch.manual_seed(3)
    log_w = model.log_importance_weights(x, k=20000)  # (K, B)
    assert log_w.shape == (20000, 6)
    torch.manual_seed(3)
    elbo = torch.stack([model.loss(x).elbo for _ in range(2000)]).mean(0)
    torch.testing.assert_close(log_w.mean(0), elbo, rtol=0.02, atol=0.1)


def test_training_lowers_the_loss_and_beats_the_mean_image(digits_config):
    cfg = digits_config
    result = vaekit.train(RunConfig(data=cfg.data, model=cfg.model, train=TrainConfig(epochs=30, batch_size=32, progress=False)))
    losses = [h.train_loss for h in result.history]
    assert losses[-1] < 0.8 * losses[0]
    data = load_dataset(cfg.data)
    x = data.x_test
    recon_error = ((result.model.reconstruct(x) - x) ** 2).sum((1, 2, 3)).mean()
    mean_image_error = ((data.x_train.mean(0, keepdim=True) - x) ** 2).sum((1, 2, 3)).mean()
    assert recon_error < 0.6 * mean_image_error


def test_likelihood_auto_follows_the_data_range():
    data = load_dataset(DataConfig(name="digits"))
    assert resolve_config(RunConfig(), data).model.likelihood == "bernoulli"
    shifted = vaekit.Dataset("z", data.x_train * 2 - 1, data.x_test * 2 - 1)
    assert resolve_config(RunConfig(), shifted).model.likelihood == "gaussian"


def test_bernoulli_on_out_of_range_data_is_a_clear_error():
    data = load_dataset(DataConfig(name="digits"))
    shifted = vaekit.Dataset("z", data.x_train * 2 - 1, data.x_test * 2 - 1)
    cfg = RunConfig(model=ModelConfig(likelihood="bernoulli"), train=TrainConfig(epochs=1, progress=False))
    with pytest.raises(vaekit.VaekitError, match="likelihood gaussian"):
        vaekit.train(cfg, dataset=shifted)
