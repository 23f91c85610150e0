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


def test_the_kl_warm_up_ramps_all_three_parts():
    model, dataset, _ = model_for("model.beta=6", "model.tcvae.alpha=0.5", "model.tcvae.gamma=2")
    x = dataset.x_train[:256]
    for scale in (0.0, 0.5):
        torch.manual_seed(1)
        with torch.no_grad():
            out = model(x, kl_scale=scale)
        t = out.terms
        weighed = 0.5 * t["mi"] + 6 * t["tc"] + 2 * t["dwkl"]
        torch.testing.assert_close(out.loss, (t["recon"] + scale * weighed).mean())


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


def test_evaluate_reports_each_part_of_the_kl_as_a_direct_computation_gives_it(monkeypatch):
    """evaluate gave tcvae no mutual information, total correlation or dimension-wise KL (its terms were empty). Each
    part is checked on its own against log-densities computed here from the batch's posteriors (the batch is the
    aggregate: q(z) = (1/B) sum_j q(z|x_j)), at the draws evaluate's seed gives; a last batch of one item joins the
    batch before it (alone it has no aggregate, and its item went unmeasured)."""
    from torch.distributions import Normal

    from vaekit import metrics

    monkeypatch.setattr(metrics, "ENCODE_BATCH", 100)
    model, dataset, _ = model_for()
    model.eval()
    x = dataset.x_test[:201]  # batches of 100 and 101
    evaluation = metrics.evaluate(model, x, iw_samples=4, seed=5)
    expected = {"mi": [], "tc": [], "dwkl": []}
    torch.manual_seed(5)
    with torch.no_grad():
        for batch in (x[:100], x[100:]):
            qz = model.encode(batch)
            loc, scale = qz.base_dist.loc.double(), qz.base_dist.scale.double()
            z = loc + scale * torch.randn(loc.shape).double()
            each = Normal(loc[None], scale[None]).log_prob(z[:, None])  # (draw i, posterior j, dimension)
            log_b = torch.log(torch.tensor(float(len(batch)), dtype=torch.float64))
            joint = torch.logsumexp(each.sum(-1), 1) - log_b
            marginals = (torch.logsumexp(each, 1) - log_b).sum(-1)
            own = each.diagonal(dim1=0, dim2=1).sum(0)
            prior = Normal(0.0, 1.0).log_prob(z).sum(-1)
            for name, value in (("mi", own - joint), ("tc", joint - marginals), ("dwkl", marginals - prior)):
                expected[name].append(value)
    for name, values in expected.items():
        assert evaluation.terms[name] == pytest.approx(float(torch.cat(values).mean()), rel=1e-4, abs=1e-5), name
    assert metrics.evaluate(model, x, iw_samples=4, seed=6).terms != evaluation.terms  # the seed reaches the draws


def test_a_batch_of_one_item_is_refused_for_training(tmp_path, capsys):
    """--batch-size 1 trained a plain VAE in silence: each batch's KL counted as information, tc 0, --beta unused."""
    from vaekit.cli import main

    assert main(["train", "--data", "digits", "--model", "tcvae", "--beta", "6", "--batch-size", "1", "--epochs", "1",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "use --batch-size 2 or more" in err and not (tmp_path / "run").exists()
