"""The hvae family (two stochastic layers): its bound against its layer terms and against a one-layer VAE's closed
form, the ladder merge, free bits, the IWAE bound on it, and a run end to end."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

import vaekit
from vaekit.config import RunConfig, override
from vaekit.data import load_dataset
from vaekit.distributions import DiagonalGaussian, draw_noise, standard_normal
from vaekit.hvae import merge
from vaekit.models import build_model
from vaekit.runs import resolve_config

INFERENCE = ["bottom-up", "top-down"]


def model_for(*settings: str):
    cfg = override(RunConfig(), ["data.name=digits", "model.family=hvae", "model.latent_dim=6",
                                 "model.hvae.top_dim=3", *settings])
    dataset = load_dataset(cfg.data)
    cfg = resolve_config(cfg, dataset)
    torch.manual_seed(0)
    return build_model(cfg.model), dataset


@pytest.mark.parametrize("inference", INFERENCE)
def test_the_bound_is_the_sum_of_its_layer_terms(inference):
    model, dataset = model_for(f"model.hvae.inference={inference}")
    model.eval()
    x = dataset.x_test[:300]
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(out.elbo, -(out.terms["recon"] + out.terms["kl_z1"] + out.terms["kl_z2"]))
        # at the same draws, the layers' terms add up to the evaluator's log q(z|x) - log p(z)
        qz = model.encode(x)
        noise = draw_noise(qz, (4,), generator=torch.Generator().manual_seed(0))
        z = qz.rsample_with(noise)
        terms = model.regularizer_terms(qz, z)
        _, log_ratio = model.importance_terms(x, 4, noise=noise)
    torch.testing.assert_close(terms["kl_z1"] + terms["kl_z2"], log_ratio, rtol=0, atol=1e-4)


def test_a_draw_edited_in_place_is_not_scored_with_its_old_conditional():
    model, dataset = model_for()
    qz = model.encode(dataset.x_test[:10])
    with torch.no_grad():
        z = qz.rsample()
        z[..., :6] += 1  # edited after the draw
        torch.testing.assert_close(qz.log_prob(z), qz.log_prob(z.clone()))


def silence_top_layer(model) -> None:
    """Zero the last layers of the networks between z1 and z2: q(z2|.) = p(z2) = N(0, I), p(z1|z2) = N(0, I)."""
    with torch.no_grad():
        for net in (model.up, model.down):
            net[-1].weight.zero_()
            net[-1].bias.zero_()


@pytest.mark.parametrize("inference", INFERENCE)
def test_with_a_silent_top_layer_the_model_is_a_one_layer_vae(inference):
    """Then kl_z2 is exactly 0 at every draw and kl_z1 averages to the closed-form KL of q(z1|x) against N(0, I):
    the bottom-up posterior's own, or (top-down) its merge with the prior N(0, I)."""
    model, dataset = model_for(f"model.hvae.inference={inference}")
    model.eval()
    silence_top_layer(model)
    x = dataset.x_test[:200]
    with torch.no_grad():
        estimate = model._gaussian(model.encoder_params(x))
        unit = DiagonalGaussian(torch.zeros(200, 6), torch.ones(200, 6))
        q1 = estimate if inference == "bottom-up" else merge(estimate, unit)
        direct = kl_divergence(q1, standard_normal(6, x))  # (200,)
        qz = model.encode(x)
        z = qz.rsample_with(draw_noise(qz, (2000,), generator=torch.Generator().manual_seed(1)))
        terms = model.regularizer_terms(qz, z)  # (2000, 200) each
    assert float(terms["kl_z2"].abs().max()) < 1e-5
    mean, stderr = terms["kl_z1"].double().mean(0), terms["kl_z1"].double().std(0) / math.sqrt(2000)
    assert float(direct.min()) > 1e-3
    assert float(((mean - direct) / stderr).abs().max()) < 4.5  # every item within 4.5 standard errors


def test_the_ladder_merge_is_the_normalised_product_of_the_two_gaussians():
    generator = torch.Generator().manual_seed(0)
    a = DiagonalGaussian(torch.randn(50, 4, generator=generator), torch.rand(50, 4, generator=generator) + 0.2)
    b = DiagonalGaussian(torch.randn(50, 4, generator=generator), torch.rand(50, 4, generator=generator) + 0.2)
    z = torch.randn(50, 4, generator=generator)
    # N(z; a) N(z; b) = N(z; merged) N(mu_a; mu_b, s_a^2 + s_b^2), per dimension
    evidence = Normal(b.base_dist.loc, (a.base_dist.scale.square() + b.base_dist.scale.square()).sqrt()).log_prob(
        a.base_dist.loc).sum(-1)
    torch.testing.assert_close(merge(a, b).log_prob(z), a.log_prob(z) + b.log_prob(z) - evidence)


def test_free_bits_count_each_layer_at_its_floor_without_gradient():
    model, dataset = model_for("model.free_bits=5")  # floors of 30 and 15 nats: far above an untrained KL
    x = dataset.x_train[:64]
    model.train()
    torch.manual_seed(2)
    out = model(x)
    torch.testing.assert_close(out.loss, out.terms["recon"].mean() + 5 * (6 + 3))
    out.loss.backward()
    assert all(p.grad is None or float(p.grad.abs().max()) == 0 for p in model.down.parameters())  # only the KL uses it
    model.eval()
    with torch.no_grad():
        torch.manual_seed(2)
        plain = model(x)
    torch.testing.assert_close(plain.loss, (-plain.elbo).mean())  # evaluation: the plain negative ELBO


def test_the_iwae_bound_on_the_two_layer_model_is_at_least_its_elbo():
    model, dataset = model_for("model.hvae.k=50")
    x = dataset.x_test[:300]
    model.eval()
    with torch.no_grad():
        torch.manual_seed(3)
        out = model(x)
    assert set(out.terms) == {"bound", "recon", "kl"}
    assert float((-out.terms["bound"]).mean()) > float(out.elbo.mean()) + 0.05  # tighter, by more than noise


def test_an_hvae_run_trains_samples_evaluates_and_loads(tmp_path):
    from vaekit.cli import main

    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--model", "hvae", "--latent-dim", "8", "--hvae-top-dim", "4",
                 "--hvae-top-hidden", "32,32", "--hvae-inference", "top-down", "--epochs", "3", "--no-progress",
                 "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["hvae"] == {"top_dim": 4, "top_hidden": [32, 32], "inference": "top-down", "k": 1}
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"train_kl_z1", "train_kl_z2", "val_kl_z1", "val_kl_z2", "val_elbo"} <= set(row)
    model = vaekit.load(run)
    assert model.family == "hvae" and model.code_shape == (8,) and model.sample(3).shape == (3, 1, 8, 8)
    # the code is z1, what the decoder reads: every code dimension's traversal changes the picture
    dataset = load_dataset(vaekit.checkpoint.load_config(run).data)
    traversal = vaekit.latent.traverse(model, dataset.x_test[0], top_n=8, data=dataset.x_test[:200],
                                       values=[-2, 2])
    assert all(float((row[0] - row[1]).abs().max()) > 1e-3 for row in traversal.images)
    assert vaekit.latent.encode_dataset(model, dataset.x_test[:5], sample=True).shape == (5, 8)
    assert main(["sample", str(run), "--n", "8", "--out", str(tmp_path / "s.png")]) == 0
    assert main(["evaluate", str(run), "--iw-samples", "20", "--no-progress", "--out", str(tmp_path / "e.json")]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert math.isfinite(result["nll"]) and result["nll"] <= -result["elbo"] + 1e-6
    for bad in (["--hvae-k", "5", "--free-bits", "0.5"], ["--condition", "label"], ["--hvae-top-dim", "0"]):
        assert main(["train", "--data", "digits", "--model", "hvae", *bad, "--out", str(tmp_path / "bad")]) == 2
    with pytest.raises(SystemExit) as exit:  # argparse's own choice check
        main(["train", "--data", "digits", "--model", "hvae", "--hvae-inference", "sideways"])
    assert exit.value.code == 2
