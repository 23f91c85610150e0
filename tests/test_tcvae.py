"""The tcvae family (beta-TCVAE): its objective, its data-filled setting, and a run end to end."""
from __future__ import annotations

import json

import pytest
import torch

import vaekit
from vaekit.config import RunConfig, override
from vaekit.data import load_dataset
from vaekit.models import build_model
from vaekit.runs import resolve_config


def model_for(*settings: str):
    cfg = override(RunConfig(), ["data.name=digits", "model.family=tcvae", "model.latent_dim=4", *settings])
    dataset = load_dataset(cfg.data)
    cfg = resolve_config(cfg, dataset)
    torch.manual_seed(0)
    return build_model(cfg.model), dataset, cfg


def test_the_objective_weighs_mi_tc_and_dimension_kl_and_the_elbo_is_the_vaes():
    model, dataset, cfg = model_for("model.beta=6", "model.tcvae.alpha=0.5", "model.tcvae.gamma=2")
    assert cfg.model.settings("tcvae").dataset_size == len(dataset.x_train)  # filled from the data
    x = dataset.x_train[:256]
    torch.manual_seed(1)
    with torch.no_grad():
        out = model(x)
    terms = out.terms
    assert set(terms) == {"recon", "kl", "mi", "tc", "dwkl"}
    expected = (terms["recon"] + 0.5 * terms["mi"] + 6 * terms["tc"] + 2 * terms["dwkl"]).mean()
    assert torch.allclose(out.loss, expected)
    assert torch.allclose(out.elbo, -(terms["recon"] + terms["kl"]))  # the exact KL, as the VAE reports it
    # the three estimates add up to a Monte Carlo KL whose batch mean is close to the exact one
    estimate = (terms["mi"] + terms["tc"] + terms["dwkl"]).mean()
    assert float(estimate) == pytest.approx(float(terms["kl"].mean()), abs=0.15 * float(terms["kl"].mean()) + 0.1)


def test_the_terms_add_up_to_the_kl_at_the_models_own_draw():
    """mi + tc + dwkl is log q(z|x) - log p(z) at the draw the objective used, whatever the posterior's widths: the
    posterior's scales reach the estimator as scales (its variances there passed the test above, whose untrained
    model has scales near 1)."""
    model, dataset, _ = model_for()
    with torch.no_grad():
        qz = model.encode(dataset.x_train[:256])
    # posteriors ten times narrower (scales near 0.1): a scale and its square are far apart
    narrow = torch.distributions.Independent(torch.distributions.Normal(qz.base_dist.loc, 0.1 * qz.base_dist.scale), 1)
    model.encode = lambda x, y=None: narrow
    torch.manual_seed(1)
    with torch.no_grad():
        out = model(dataset.x_train[:256])
    torch.manual_seed(1)
    z = narrow.rsample()
    prior = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    total = out.terms["mi"] + out.terms["tc"] + out.terms["dwkl"]
    torch.testing.assert_close(total, narrow.log_prob(z) - prior, rtol=1e-5, atol=1e-3)


def test_a_batch_of_one_reports_the_same_terms():
    model, dataset, _ = model_for()
    out = model(dataset.x_train[:1])
    assert set(out.terms) == {"recon", "kl", "mi", "tc", "dwkl"}
    assert float(out.terms["tc"]) == 0 and torch.equal(out.terms["mi"], out.terms["kl"])


def test_a_tcvae_run_trains_saves_and_loads(tmp_path):
    from vaekit.cli import main

    assert main(["train", "--data", "digits", "--model", "tcvae", "--beta", "6", "--latent-dim", "4", "--epochs",
                 "2", "--no-progress", "--out", str(tmp_path / "run")]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"]["tcvae"] == {"alpha": 1.0, "gamma": 1.0, "dataset_size": 1437}  # digits: 1,437 training items
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"train_mi", "train_tc", "train_dwkl", "val_tc", "val_elbo"} <= set(row)
    model = vaekit.load(tmp_path / "run")
    assert model.family == "tcvae" and model.sample(3).shape == (3, 1, 8, 8)
    assert main(["train", "--data", "digits", "--model", "tcvae", "--tcvae-alpha", "-1", "--out",
                 str(tmp_path / "bad")]) == 2


def test_training_weighs_a_batch_against_the_training_set_and_evaluation_against_itself(monkeypatch):
    import vaekit.tcvae as tcvae

    sizes = []
    real = tcvae.decomposition
    monkeypatch.setattr(tcvae, "decomposition", lambda z, loc, scale, size: sizes.append(size) or
                        real(z, loc, scale, size))
    model, dataset, _ = model_for()
    model.train()
    model(dataset.x_train[:64])
    model.eval()
    with torch.no_grad():
        model(dataset.x_test[:100])
    assert sizes == [len(dataset.x_train), 100]


def test_evaluate_reports_the_kls_split_and_it_adds_up_to_the_kl():
    """evaluate gave tcvae no mutual information, total correlation or dimension-wise KL (its terms were empty). Per
    item the three add up to log q(z|x) - log p(z) at a draw, whose mean difference from the exact KL is within four
    standard errors of zero."""
    from vaekit import metrics

    model, dataset, _ = model_for()
    model.eval()
    x = dataset.x_test[:300]
    with torch.no_grad():
        parts = model.evaluation_terms(x)
        qz = model.encode(x)
        exact = model.kl(qz, qz.mean)  # closed form: the draw is not used
    assert set(parts) == {"mi", "tc", "dwkl"}
    difference = (parts["mi"] + parts["tc"] + parts["dwkl"] - exact).double()
    assert abs(float(difference.mean())) < 4 * float(difference.std()) / len(x) ** 0.5
    evaluation = metrics.evaluate(model, x, iw_samples=8)
    assert evaluation.terms == pytest.approx({name: float(value.double().mean()) for name, value in parts.items()})
