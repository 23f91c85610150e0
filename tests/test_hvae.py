"""The hvae family (two stochastic layers): its bound against its layer terms and against a one-layer VAE's closed
form, the ladder merge, free bits, the IWAE bound on it, the VampPrior on its top layer, and a run end to end."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal, kl_divergence

import vaekit
from vaekit.config import RunConfig, override
from vaekit.data import load_dataset
from vaekit.distributions import LOGVAR_MAX, LOGVAR_MIN, DiagonalGaussian, draw_noise, rsample_with, standard_normal
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


@pytest.mark.parametrize("top_prior", ["normal", "vamp"])
@pytest.mark.parametrize("inference", INFERENCE)
def test_the_bound_is_the_sum_of_its_layer_terms(inference, top_prior):
    model, dataset = model_for(f"model.hvae.inference={inference}", f"model.hvae.top_prior={top_prior}",
                               *(["model.hvae.top_components=9"] if top_prior == "vamp" else []))
    model.init_from_data(dataset.x_train)
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
    torch.testing.assert_close(model.kl(qz, z), log_ratio, rtol=0, atol=1e-4)  # Model.kl: both layers


@pytest.mark.parametrize("inference", INFERENCE)
def test_a_label_conditioned_hvae_takes_the_label_in_its_data_networks_and_its_bound_is_its_layer_terms(inference):
    """--condition label: the networks between x and z1 take the label, the layers above do not; the bound is
    still the sum of the layer terms, the K-sample bound uses the items' labels, the decoded mean moves with the
    label."""
    model, dataset = model_for(f"model.hvae.inference={inference}", "model.condition=label")
    assert model.num_labels == 10 and model.prior_takes_labels is False
    model.eval()
    x, y = dataset.x_test[:300], dataset.y_test[:300]
    with torch.no_grad():
        out = model(x, y)
        torch.testing.assert_close(out.elbo, -(out.terms["recon"] + out.terms["kl_z1"] + out.terms["kl_z2"]))
        qz = model.encode(x, y)
        noise = draw_noise(qz, (4,), generator=torch.Generator().manual_seed(0))
        terms = model.regularizer_terms(qz, qz.rsample_with(noise))
        log_px_z, log_ratio = model.importance_terms(x, 4, y, noise=noise)
        torch.testing.assert_close(terms["kl_z1"] + terms["kl_z2"], log_ratio, rtol=0, atol=1e-4)
        # the labels enter: another class gives another posterior and another decoded mean
        assert not torch.equal(model.encode(x, (y + 1) % 10).mean, qz.mean)
        z = model.sample_prior(5, torch.Generator().manual_seed(0))
        assert not torch.equal(model.decode(z, 1).mean, model.decode(z, 2).mean)


@pytest.mark.parametrize("inference", INFERENCE)
def test_a_label_conditioned_vamp_top_prior_holds_each_item_to_its_class_components(inference):
    """Label-conditioned, a vamp top prior's pseudo-input m has class m mod 10 and is encoded with it: p(z2 | y) is
    the mixture of the top posteriors at its class's pseudo-inputs (torch's own mixture, computed directly), the
    layer terms, the importance weights and evaluate use it, each class's draws come from it; with one pseudo-input
    per class equal to an item, top-down inference gives that item kl_z2 = 0 at every draw."""
    model, dataset = model_for(f"model.hvae.inference={inference}", "model.condition=label",
                               "model.hvae.top_prior=vamp", "model.hvae.top_components=20")
    assert model.prior_takes_labels and model.pseudo_labels.tolist() == [m % 10 for m in range(20)]
    torch.manual_seed(1)
    model.init_from_data(dataset.x_train, dataset.y_train)
    model.eval()
    u = model.pseudo_inputs.detach().sigmoid()
    x, y = dataset.x_test[:200], dataset.y_test[:200]
    with torch.no_grad():
        q = top_posteriors(model, u, model.pseudo_labels)  # (20, 3)
        z2 = torch.randn(200, 3) * 2
        direct = torch.stack([MixtureSameFamily(
            Categorical(logits=torch.zeros(2)), Independent(Normal(q.base_dist.loc[model.pseudo_labels == label],
                                                                   q.base_dist.scale[model.pseudo_labels == label]), 1)
        ).log_prob(z2[i]) for i, label in enumerate(y.tolist())])
        prior = model.prior_given(y)
        torch.testing.assert_close(prior.start.log_prob(z2), direct, rtol=0, atol=1e-5)
        qz = model.encode(x, y)
        noise = draw_noise(qz, (4,), generator=torch.Generator().manual_seed(0))
        z = qz.rsample_with(noise)
        terms = model.regularizer_terms(qz, z, y)
        q1, q2 = qz.layer_log_probs(z)
        p1, p2 = prior.layer_log_probs(z)
        torch.testing.assert_close(terms["kl_z2"], q2 - p2)
        torch.testing.assert_close(terms["kl_z1"], q1 - p1)
        _, log_ratio = model.importance_terms(x, 4, y, noise=noise)
        torch.testing.assert_close(terms["kl_z1"] + terms["kl_z2"], log_ratio, rtol=0, atol=1e-4)
        result = vaekit.metrics.evaluate(model, x, iw_samples=8, y=y)
        assert math.isfinite(result.nll) and result.nll <= -result.elbo + 1e-4
        draws = model.sample_prior(20_000, torch.Generator().manual_seed(0), 4)[:, 6:]  # z2 of class 4's draws
        own = model.prior_given(torch.tensor([4])).start
        torch.testing.assert_close(draws.mean(0), own.mean[0], rtol=0,
                                   atol=4.5 * float(own.variance.max().sqrt()) / 20_000 ** 0.5)
        assert model.sample(3, 4).shape == (3, 1, 8, 8)
    # each pseudo-input starts at a training item of its own class, and without a label the prior's moments are
    # those of every class in turn (its draws need a label)
    rows = model.pseudo_inputs.detach().sigmoid().flatten(1)  # what the encoder sees
    items = dataset.x_train.flatten(1).clamp(0.01, 0.99)
    nearest = ((rows[:, None, :] - items[None, :, :]).abs() < 1e-5).all(-1).float().argmax(1)
    assert torch.equal(dataset.y_train[nearest], model.pseudo_labels)
    mean, std = vaekit.latent.prior_moments(model)
    per_class = torch.stack([vaekit.latent.prior_moments(model, y=k)[0] for k in range(10)])
    assert mean.shape == std.shape == (6,)
    torch.testing.assert_close(mean, per_class.mean(0), rtol=0, atol=float(4.5 * std.max() / 10_000 ** 0.5))
    if inference == "top-down":  # one pseudo-input per class, equal to an item of it
        model, _ = model_for("model.hvae.inference=top-down", "model.condition=label", "model.hvae.top_prior=vamp",
                             "model.hvae.top_components=10")
        firsts = [int((y == k).nonzero()[0]) for k in range(10)]
        with torch.no_grad():
            model.pseudo_inputs.copy_(torch.logit(x[firsts].clamp(1e-6, 1 - 1e-6)))
            items = torch.tensor(firsts)
            qz = model.encode(x[items].clamp(1e-6, 1 - 1e-6), y[items])
            terms = model.regularizer_terms(qz, qz.rsample((50,)), y[items])
        assert float(terms["kl_z2"].abs().max()) < 1e-4
    with pytest.raises(vaekit.VaekitError, match="--hvae-top-components 10 or more"):
        model_for(f"model.hvae.inference={inference}", "model.condition=label", "model.hvae.top_prior=vamp",
                  "model.hvae.top_components=9")


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


def test_free_bits_floor_each_layer_by_its_own_size():
    """z1 of 6 dimensions has a floor of 30 nats, z2 of 3 one of 15: a z1 term of 10 counts as 30 without gradient,
    a z2 term of 25 as itself, with its gradient."""
    model, _ = model_for("model.free_bits=5")
    model.train()
    weights = torch.ones(2, requires_grad=True)
    total = model.regularizer_mean({"kl_z1": weights[0] * torch.full((4,), 10.0),
                                    "kl_z2": weights[1] * torch.full((4,), 25.0)})
    total.backward()
    assert float(total) == 55.0 and weights.grad.tolist() == [0.0, 25.0]


@pytest.mark.parametrize("inference", INFERENCE)
def test_evaluations_layer_terms_and_z2_means_average_many_draws(inference):
    """evaluate's per-layer KL terms, and the z2 means behind its active units, are averages over 16 posterior draws:
    about 4 times nearer than one draw to the average of 1,600 (on 200 items: asked to be at least 2 times)."""
    model, dataset = model_for(f"model.hvae.inference={inference}")
    model.eval()
    x = dataset.x_test[:200]

    def averaged(draws: int) -> dict[str, torch.Tensor]:
        qz = model.encode(x)
        terms = model.regularizer_terms(qz, rsample_with(qz, draw_noise(qz, (draws,))))
        if qz.first == "z1":  # bottom-up: E[z2|x] averages q(z2|z1) over draws of z1 (top-down has it exactly)
            terms["z2"] = qz.given(qz.start.rsample_with(draw_noise(qz.start, (draws,)))).mean
        return {name: value.mean(0) for name, value in terms.items()}

    with torch.no_grad():
        torch.manual_seed(0)
        reference, one = averaged(1600), averaged(1)
        given = {**model.evaluation_terms(x), **model.layer_means(x)}
    for name in reference:
        assert float((given[name] - reference[name]).abs().mean()) < 0.5 * float((one[name] - reference[name]).abs()
                                                                                   .mean()), name


def test_the_iwae_bound_on_the_two_layer_model_is_at_least_its_elbo():
    model, dataset = model_for("model.hvae.k=50")
    x = dataset.x_test[:300]
    model.eval()
    with torch.no_grad():
        torch.manual_seed(3)
        out = model(x)
    assert set(out.terms) == {"bound", "recon", "kl"}
    assert float((-out.terms["bound"]).mean()) > float(out.elbo.mean()) + 0.05  # tighter, by more than noise


def vamp_top(inference: str, components: int):
    model, dataset = model_for(f"model.hvae.inference={inference}", "model.hvae.top_prior=vamp",
                               f"model.hvae.top_components={components}")
    torch.manual_seed(1)
    model.init_from_data(dataset.x_train)
    return model, dataset


def top_posteriors(model, u: torch.Tensor, labels: torch.Tensor | None = None) -> DiagonalGaussian:
    """q(z2|u) computed directly: top-down, from u's bottom-up estimate; bottom-up, at the mean of q(z1|u) (given
    the pseudo-inputs' labels, one-hot, for a label-conditioned model)."""
    onehot = None if labels is None else torch.nn.functional.one_hot(labels, model.num_labels).float()
    loc, logvar = model.encoder(u, onehot).chunk(2, -1)
    log_scale = 0.5 * logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)
    features = loc if model.settings.inference == "bottom-up" else torch.cat([loc, log_scale], -1)
    top_loc, top_logvar = model.up(features).chunk(2, -1)
    return DiagonalGaussian(top_loc, (0.5 * top_logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)).exp())


@pytest.mark.parametrize("inference", INFERENCE)
def test_a_vamp_top_prior_is_the_mixture_of_the_top_posteriors_at_its_pseudo_inputs(inference):
    """p(z2) = (1/M) sum_m q(z2|u_m): its density equals torch's MixtureSameFamily of the top posteriors computed
    from the pseudo-inputs directly, the pseudo-inputs start at training items, and the prior's draws have the
    mixture's mean and variance."""
    model, dataset = vamp_top(inference, 7)
    u = model.pseudo_inputs.detach().sigmoid()
    # each pseudo-input is a training item pulled 0.01 inside [0, 1]
    distance = torch.cdist(u.reshape(7, -1), dataset.x_train.reshape(len(dataset.x_train), -1).clamp(0.01, 0.99),
                           compute_mode="donot_use_mm_for_euclid_dist")
    assert float(distance.min(1).values.max()) < 1e-4
    with torch.no_grad():
        q = top_posteriors(model, u)
        mixture = MixtureSameFamily(Categorical(logits=torch.zeros(7)),
                                    Independent(Normal(q.base_dist.loc, q.base_dist.scale), 1))
        z2 = torch.randn(500, 3) * 2
        torch.testing.assert_close(model.top_prior().log_prob(z2), mixture.log_prob(z2), rtol=0, atol=1e-5)
        torch.manual_seed(2)
        draws = model.sample_prior(20_000)
    assert draws.shape == (20_000, 9)
    top = draws[:, 6:]
    assert torch.allclose(top.mean(0), mixture.mean, atol=4 * float(mixture.variance.max().sqrt()) / 20_000 ** 0.5)
    assert torch.allclose(top.var(0), mixture.variance, rtol=0.06)


@pytest.mark.parametrize("inference", INFERENCE)
def test_a_vamp_top_prior_at_one_item_gives_its_own_top_posterior(inference):
    """With one pseudo-input equal to a data item x, p(z2) is q(z2|x)'s top layer: top-down, kl_z2 is exactly 0 at
    every draw; bottom-up, p(z2) is q(z2|z1) at z1 = the mean of q(z1|x), so kl_z2 is 0 at the mean path's z1."""
    model, dataset = vamp_top(inference, 1)
    x = dataset.x_test[:1]
    with torch.no_grad():
        model.pseudo_inputs.copy_(torch.logit(x.clamp(1e-6, 1 - 1e-6)))
        qz = model.encode(x)
        z = qz.rsample((100,)) if inference == "top-down" else \
            torch.cat([qz.start.mean.expand(100, 1, 6), qz.given(qz.start.mean).rsample((100,))], -1)
        terms = model.regularizer_terms(qz, z)
    assert float(terms["kl_z2"].abs().max()) < 1e-4
    assert float(terms["kl_z1"].abs().max()) > 1e-3  # the lower layer still pays its own KL


@pytest.mark.parametrize("k", [1, 5])
def test_a_vamp_top_prior_learns_its_pseudo_inputs(k):
    """The ELBO's gradient (k = 1) and the IWAE bound's (k > 1) reach the pseudo-inputs; its draws are not
    reparameterised, and asking for them says so."""
    model, dataset = model_for("model.hvae.top_prior=vamp", "model.hvae.top_components=5", f"model.hvae.k={k}")
    model.init_from_data(dataset.x_train)
    model(dataset.x_train[:64]).loss.backward()
    assert float(model.pseudo_inputs.grad.abs().sum(tuple(range(1, model.pseudo_inputs.dim()))).min()) > 0
    with pytest.raises(vaekit.VaekitError, match="use sample"):
        model.prior().rsample((2,))


def test_runs_from_before_the_vamp_top_prior_keep_their_identity_and_resume(tmp_path):
    """An hvae run's identity (what its resume state must match) leaves out top_prior, top_components and gradient
    at their defaults, as config.json files written before they existed never held them; set, they are part of it."""
    from conftest import identity_written_before
    from vaekit import checkpoint
    from vaekit.cli import main

    base = ["train", "--data", "digits", "--model", "hvae", "--latent-dim", "4", "--hvae-top-dim", "2",
            "--hvae-top-hidden", "16", "--epochs", "1", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "normal")]) == 0
    later = {"top_prior": "normal", "top_components": 500, "gradient": "standard"}
    run = tmp_path / "normal"
    assert identity_written_before(run, "hvae", later) in checkpoint.identities(run)
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
    assert main([*base, "--hvae-top-prior", "vamp", "--out", str(tmp_path / "vamp")]) == 0
    assert main([*base, "--hvae-top-prior", "vamp", "--hvae-top-components", "7", "--out", str(tmp_path / "seven")]) == 0
    assert main([*base, "--hvae-k", "2", "--out", str(tmp_path / "k2")]) == 0
    assert main([*base, "--hvae-k", "2", "--hvae-gradient", "dreg", "--out", str(tmp_path / "dreg")]) == 0
    identities = {checkpoint.identity_sha256(tmp_path / name) for name in ("normal", "vamp", "seven", "k2", "dreg")}
    assert len(identities) == 5


def test_an_hvae_run_trains_samples_evaluates_and_loads(tmp_path):
    from vaekit.cli import main

    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--model", "hvae", "--latent-dim", "8", "--hvae-top-dim", "4",
                 "--hvae-top-hidden", "32,32", "--hvae-inference", "top-down", "--hvae-top-prior", "vamp",
                 "--hvae-top-components", "16", "--epochs", "3", "--no-progress", "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["hvae"] == {"top_dim": 4, "top_hidden": [32, 32], "inference": "top-down", "k": 1,
                                       "top_prior": "vamp", "top_components": 16, "gradient": "standard"}
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
    assert model.pseudo_inputs.shape == (16, 1, 8, 8)
    for bad in (["--hvae-k", "5", "--free-bits", "0.5"],
                ["--condition", "label", "--hvae-top-prior", "vamp", "--hvae-top-components", "9"],  # < 10 classes
                ["--hvae-top-dim", "0"],
                ["--hvae-top-components", "0"], ["--hvae-top-components", "10"],
                ["--hvae-top-components", "500"]):  # the default, but given for a prior that has no pseudo-inputs
        assert main(["train", "--data", "digits", "--model", "hvae", *bad, "--out", str(tmp_path / "bad")]) == 2
    with pytest.raises(SystemExit) as exit:  # argparse's own choice check
        main(["train", "--data", "digits", "--model", "hvae", "--hvae-inference", "sideways"])
    assert exit.value.code == 2


@pytest.mark.parametrize("inference", INFERENCE)
def test_evaluate_reports_each_layers_kl_and_they_add_up_to_the_kl(inference):
    """evaluate gave hvae no per-layer KL (its terms were empty): kl_z1 and kl_z2 are each layer's log q - log p,
    averaged over seeded draws; per item, their sum and the evaluator's Monte Carlo KL estimate one KL, so their mean
    difference is within four standard errors of zero."""
    from vaekit import metrics

    model, dataset = model_for(f"model.hvae.inference={inference}")
    model.eval()
    x = dataset.x_test[:300]
    with torch.no_grad():
        layers = model.evaluation_terms(x)
    assert set(layers) == {"kl_z1", "kl_z2"}
    difference = (layers["kl_z1"] + layers["kl_z2"]).double() - metrics.sampled_bounds(model, x, 64).kl
    assert abs(float(difference.mean())) < 4 * float(difference.std()) / math.sqrt(len(x))
    evaluation = metrics.evaluate(model, x, iw_samples=8, seed=3)
    assert metrics.evaluate(model, x, iw_samples=8, seed=4).terms != evaluation.terms  # the seed reaches the draws
    # each term is its layer's: with a silent top layer, kl_z2 is 0 and kl_z1 the one-layer closed form
    silence_top_layer(model)
    with torch.no_grad():
        estimate = model._gaussian(model.encoder_params(x))
        q1 = estimate if inference == "bottom-up" else merge(estimate, standard_normal(6, x))
        direct = kl_divergence(q1, standard_normal(6, x)).double()
        silent = model.evaluation_terms(x)
    assert float(silent["kl_z2"].abs().max()) < 1e-5
    difference = silent["kl_z1"].double() - direct
    assert abs(float(difference.mean())) < 4 * float(difference.std()) / math.sqrt(len(x))


@pytest.mark.parametrize("inference", INFERENCE)
def test_evaluate_counts_the_active_units_of_each_layer(inference):
    """evaluate counted z1's active units only, so a collapsed z2 went unseen (the IWAE paper counts each layer). With
    a silent top layer z2 has none; with one z2 mean made to follow the data (the others held at 0), exactly one."""
    from vaekit import metrics

    model, dataset = model_for(f"model.hvae.inference={inference}")
    model.eval()
    x = dataset.x_test[:300]
    evaluation = metrics.evaluate(model, x, iw_samples=2)
    assert evaluation.active_units_per_layer["code"] == evaluation.active_units
    silence_top_layer(model)
    assert metrics.evaluate(model, x, iw_samples=2).active_units_per_layer["z2"] == 0
    with torch.no_grad():
        model.up[-1].weight[0].normal_(0, 100.0)  # z2's first mean (the loc: the first top_dim outputs); the
        # untrained encoder's estimates vary little over items, so a large weight: a variance of 1 or more
    assert metrics.evaluate(model, x, iw_samples=2).active_units_per_layer["z2"] == 1
    one_layer = build_model(resolve_config(override(RunConfig(), ["data.name=digits"]), dataset).model)
    assert metrics.evaluate(one_layer, x, iw_samples=2).active_units_per_layer is None


def test_a_model_built_directly_refuses_a_setting_given_where_it_does_nothing():
    """The validator refuses top_components without a vamp top prior; a model built without it (HVAE(config)) checks
    its settings' needs too, in Model.__init__, for every family."""
    from vaekit.config import ModelConfig
    from vaekit.hvae import HVAE

    config = ModelConfig(family="hvae", likelihood="bernoulli", data_shape=(1, 8, 8),
                         options={"hvae": HVAE.Settings(top_components=9)})
    with pytest.raises(vaekit.VaekitError, match="--hvae-top-components applies only where model.hvae.top_prior"):
        HVAE(config)
    settings = HVAE.Settings(top_prior="vamp", top_components=9)
    assert HVAE(ModelConfig(family="hvae", likelihood="bernoulli", data_shape=(1, 8, 8),
                            options={"hvae": settings})).pseudo_inputs.shape[0] == 9
