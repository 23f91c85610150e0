"""Metrics on known answers: a linear-Gaussian VAE (probabilistic PCA) with an exact marginal likelihood,
planted inactive latent dimensions, closed-form KLs; plus chunking, determinism and the CLI."""
import json
import math

import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal

import vaekit
from vaekit import metrics
from vaekit.cli import main
from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaekit.distributions import Likelihood
from vaekit.models import build_model

D, LATENT, SIGMA = 6, 2, 0.5
SCALES = torch.tensor([2.0, 1.0])  # column norms of W: orthogonal columns make M = W^T W + sigma^2 I diagonal


def ppca(imperfect: bool = False) -> tuple[vaekit.Model, MultivariateNormal]:
    """p(z) = N(0, I), p(x|z) = N(Wz + b, sigma^2 I) as a vaekit VAE; the encoder is the exact posterior
    N(M^-1 W^T (x - b), sigma^2 M^-1) unless imperfect. Returns the model and the exact marginal p(x)."""
    model = build_model(ModelConfig(network="mlp", hidden_dims=(), likelihood="gaussian", options={"gaussian": {"std": SIGMA}},
                                    data_shape=(D,), latent_dim=LATENT))
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linear) == 2 and not any(isinstance(m, nn.ReLU) for m in model.modules())  # purely linear
    encoder, decoder = linear
    generator = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(D, LATENT, generator=generator))
    w = q * SCALES  # (D, d), W^T W = diag(SCALES^2)
    b = torch.randn(D, generator=generator)
    m_inv = 1 / (SCALES**2 + SIGMA**2)  # diagonal of M^-1
    mean_weight = m_inv[:, None] * w.T  # (d, D)
    logvar = torch.log(SIGMA**2 * m_inv)
    if imperfect:
        mean_weight = mean_weight * 0.8
        logvar = logvar + 0.7
    with torch.no_grad():
        decoder.weight.copy_(w)
        decoder.bias.copy_(b)
        encoder.weight.copy_(torch.cat([mean_weight, torch.zeros(LATENT, D)]))
        encoder.bias.copy_(torch.cat([-mean_weight @ b, logvar]))
    exact = MultivariateNormal(b, covariance_matrix=w @ w.T + SIGMA**2 * torch.eye(D))
    return model.eval(), exact


def ppca_data(n: int, imperfect: bool = False, seed: int = 1) -> tuple[vaekit.Model, torch.Tensor, torch.Tensor]:
    """The model, n draws from its exact marginal, and their exact log p(x)."""
    model, exact = ppca(imperfect)
    generator = torch.Generator().manual_seed(seed)
    x = exact.loc + torch.randn(n, D, generator=generator) @ torch.linalg.cholesky(exact.covariance_matrix).T
    return model, x, exact.log_prob(x)


def test_exact_posterior_gives_the_exact_marginal_likelihood():
    model, x, log_px = ppca_data(50)
    for k in (1, 20):
        bounds = metrics.sampled_bounds(model, x, k)
        # With q = p(z|x) every weight p(x, z)/q(z|x) equals p(x): no Monte Carlo error at all.
        torch.testing.assert_close(bounds.log_likelihood, log_px.double(), atol=2e-4, rtol=0)
        torch.testing.assert_close(bounds.elbo, log_px.double(), atol=2e-4, rtol=0)
    result = metrics.evaluate(model, x, iw_samples=20)
    assert result.nll == pytest.approx(-float(log_px.double().mean()), abs=2e-4)
    assert result.elbo == pytest.approx(-result.nll, abs=2e-4)


def test_imperfect_posterior_is_unbiased_within_standard_errors_and_the_elbo_is_below():
    model, x, log_px = ppca_data(40, imperfect=True)
    k = 2000
    bounds = metrics.sampled_bounds(model, x, k)
    # Monte Carlo standard error of log mean w per item (delta method): std(w~) / (sqrt(K) mean(w~)), w~ = exp(w - max)
    torch.manual_seed(5)
    with torch.no_grad():
        log_w = model.log_importance_weights(x, k).double()  # (K, N)
    weights = torch.exp(log_w - log_w.max(0).values)
    stderr = weights.std(0) / (math.sqrt(k) * weights.mean(0))
    error = bounds.log_likelihood - log_px.double()
    assert (error.abs() < 5 * stderr + 1e-3).all(), (error, stderr)
    assert abs(float(error.mean())) < 4 * float(stderr.pow(2).sum().sqrt() / len(x)) + 1e-3
    gap = log_px.double() - bounds.elbo  # KL(q || p(z|x)) > 0 for a wrong posterior
    assert (gap > 0.05).all()
    assert (bounds.log_likelihood > bounds.elbo).all()


def test_iwae_bound_is_never_worse_than_the_elbo_and_improves_with_k():
    model, x, log_px = ppca_data(200, imperfect=True)
    nll = {}
    for k in (1, 10, 100):
        bounds = metrics.sampled_bounds(model, x, k, seed=3)
        assert (bounds.log_likelihood >= bounds.elbo - 1e-6).all()  # log mean exp >= mean, per item
        if k == 1:
            torch.testing.assert_close(bounds.log_likelihood, bounds.elbo)
        nll[k] = float(-bounds.log_likelihood.mean())
    exact = float(-log_px.double().mean())
    assert nll[1] > nll[10] > nll[100] > exact - 0.01
    assert nll[1] - nll[100] > 0.1  # a real improvement, not noise


def test_active_units_count_exactly_the_informative_dimensions():
    model = build_model(ModelConfig(network="mlp", hidden_dims=(), likelihood="bernoulli", data_shape=(10,),
                                    latent_dim=5))
    encoder = model.encoder[1]
    with torch.no_grad():
        encoder.weight.normal_()
        encoder.weight[[1, 3]] = 0.0  # the means of dims 1 and 3 ignore the input
        encoder.weight[2] *= 0.01  # dim 2 varies, but too little: Cov_x(E[z_2]) ~ 1e-3 < 0.01
    x = torch.bernoulli(torch.full((500, 10), 0.5))
    variance = metrics.posterior_mean_variance(model, x)
    assert variance[1] == 0 and variance[3] == 0
    assert variance[2] < metrics.ACTIVE_THRESHOLD < variance[[0, 4]].min()
    assert metrics.active_units(model, x) == 2
    assert metrics.evaluate(model, x, iw_samples=2).active_units == 2


def test_kl_per_dim_matches_the_closed_form_and_sums_to_the_kl():
    model = build_model(ModelConfig(network="mlp", hidden_dims=(), likelihood="bernoulli", data_shape=(10,),
                                    latent_dim=3))
    mu, logvar = torch.tensor([0.0, 1.5, -2.0]), torch.tensor([0.0, -1.0, 0.5])
    with torch.no_grad():
        model.encoder[1].weight.zero_()
        model.encoder[1].bias.copy_(torch.cat([mu, logvar]))
    x = torch.bernoulli(torch.full((20, 10), 0.5))
    expected = 0.5 * (mu**2 + logvar.exp() - 1 - logvar)  # KL(N(mu, s^2) || N(0, 1)) per dimension
    kl_dims = metrics.kl_per_dim(model, x)
    torch.testing.assert_close(kl_dims.float(), expected)
    assert kl_dims[0] == pytest.approx(0.0, abs=1e-6)  # a collapsed dimension shows as zero

    # An input-dependent posterior: the per-dimension KLs add up to the model's own KL term.
    model = build_model(ModelConfig(network="mlp", hidden_dims=(16,), likelihood="bernoulli", data_shape=(10,),
                                    latent_dim=4))
    result = metrics.evaluate(model, x, iw_samples=5)
    assert len(result.kl_per_dim) == 4 and min(result.kl_per_dim) > 0
    assert sum(result.kl_per_dim) == pytest.approx(result.kl, rel=1e-5)
    assert result.kl == pytest.approx(float(metrics.closed_form_kl(model, x).double().mean()), rel=1e-6)
    assert result.kl_estimator == "closed form" and result.kl_per_dim_omitted is None
    assert result.recon == pytest.approx(-result.elbo - result.kl, abs=1e-6)


def test_bits_per_dim_only_where_the_likelihood_is_a_probability_mass():
    assert metrics.bits_per_dim(784 * math.log(2), (1, 28, 28)) == pytest.approx(1.0)
    image = build_model(ModelConfig(network="mlp", hidden_dims=(8,), likelihood="bernoulli", data_shape=(1, 4, 4),
                                    latent_dim=2))
    x = torch.bernoulli(torch.full((10, 1, 4, 4), 0.5))
    result = metrics.evaluate(image, x, iw_samples=4)
    assert result.bits_per_dim == pytest.approx(result.nll / (16 * math.log(2)))
    # bits/dim belongs to probability masses only: a density's log-likelihood is not a code length.
    density = build_model(ModelConfig(network="mlp", hidden_dims=(8,), likelihood="gaussian", data_shape=(16,),
                                      latent_dim=2))
    assert metrics.evaluate(density, x.flatten(1), iw_samples=4).bits_per_dim is None
    # a Bernoulli on grey levels is a cross-entropy, not the probability of x: no bits/dim either
    grey = torch.rand(10, 1, 4, 4)
    assert metrics.evaluate(image, grey, iw_samples=4).bits_per_dim is None
    grey[:, :, :2] = x[:, :, :2]  # grey levels beside exact 0s and 1s (real images have both): still no bits/dim
    assert metrics.evaluate(image, grey, iw_samples=4).bits_per_dim is None
    assert metrics.evaluate(image, x, iw_samples=4, image=False).bits_per_dim is None


def test_reconstruction_error_of_the_posterior_mean():
    model, x, _ = ppca_data(30)
    rec = metrics.reconstruction_error(model, x)
    with torch.no_grad():
        x_hat = model.decode(model.encode(x).mean).mean
    torch.testing.assert_close(rec.squared_error, (x - x_hat).square().sum(1))
    expected = 0.5 * (x - x_hat).square().sum(1) / SIGMA**2 + D * math.log(SIGMA) + 0.5 * D * math.log(2 * math.pi)
    torch.testing.assert_close(rec.nll_at_mean, expected)


def test_chunking_does_not_change_results_and_the_seed_decides_them():
    model = build_model(ModelConfig(network="mlp", hidden_dims=(16,), likelihood="bernoulli", data_shape=(1, 5, 5),
                                    latent_dim=3))
    x = torch.bernoulli(torch.full((9, 1, 5, 5), 0.4))
    rng_before = torch.get_rng_state()
    whole = metrics.sampled_bounds(model, x, 50, seed=7, max_rows=10**6)  # all items, all samples in one pass
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global RNG is neither used nor moved
    for max_rows in (7, 60, 120):  # K split in chunks of 7; 1 item x 50; 2 items x 50
        chunked = metrics.sampled_bounds(model, x, 50, seed=7, max_rows=max_rows)
        torch.testing.assert_close(chunked.log_likelihood, whole.log_likelihood, atol=1e-5, rtol=0)
        torch.testing.assert_close(chunked.elbo, whole.elbo, atol=1e-5, rtol=0)
    other = metrics.sampled_bounds(model, x, 50, seed=8)
    assert not torch.allclose(other.log_likelihood, whole.log_likelihood)


def test_rows_per_pass_are_chosen_from_the_decoders_widest_activation():
    """By default a pass holds as many decoded rows as keep the decoder's widest activation near 16 MB: all 4096 for
    an MLP on 28x28, fewer for a conv decoder's feature maps (4096 rows of them made evaluation 1.8x slower), and
    the numbers are those of any other chunking."""
    mlp = build_model(ModelConfig(network="mlp", likelihood="bernoulli", data_shape=(1, 28, 28), latent_dim=16))
    conv = build_model(ModelConfig(network="conv", likelihood="bernoulli", data_shape=(1, 28, 28), latent_dim=16))
    x = torch.bernoulli(torch.full((3, 1, 28, 28), 0.3))
    assert metrics.auto_max_rows(mlp, x[:1]) == metrics.DEFAULT_MAX_ROWS
    rows = metrics.auto_max_rows(conv, x[:1])
    widest = 32 * 14 * 14 * 4  # bytes per row of the conv decoder's widest map: 32 channels at 14x14, float32
    assert rows * widest <= metrics.ROW_BUDGET_BYTES < 2 * rows * widest and rows < metrics.DEFAULT_MAX_ROWS
    elsewhere = build_model(conv.config).to("meta")  # probed where the model is (a GPU's noise, not the CPU's)
    assert metrics.auto_max_rows(elsewhere, x[:1].to("meta")) == rows
    assert metrics.sampled_bounds(conv, x[:0], 40).log_likelihood.shape == (0,)  # no items: nothing to probe
    for model in (mlp, conv):
        auto = metrics.sampled_bounds(model, x, 40, seed=3)
        fixed = metrics.sampled_bounds(model, x, 40, seed=3, max_rows=7)
        torch.testing.assert_close(auto.log_likelihood, fixed.log_likelihood, atol=1e-4, rtol=0)


def test_chunking_keeps_each_items_label_with_it():
    """A label-conditioned model's labels follow their items through every pass (a pass that reread the first items'
    labels changed nothing a test looked at)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(network="mlp", hidden_dims=(16,), likelihood="bernoulli", data_shape=(1, 5, 5),
                                    latent_dim=3, condition="label", num_labels=3))
    x = torch.bernoulli(torch.full((9, 1, 5, 5), 0.4))
    y = torch.tensor([0, 1, 2, 2, 1, 0, 1, 2, 0])
    whole = metrics.sampled_bounds(model, x, 50, seed=7, max_rows=10**6, y=y)
    for max_rows in (7, 60, 120):
        chunked = metrics.sampled_bounds(model, x, 50, seed=7, max_rows=max_rows, y=y)
        torch.testing.assert_close(chunked.log_likelihood, whole.log_likelihood, atol=1e-5, rtol=0)
        torch.testing.assert_close(chunked.elbo, whole.elbo, atol=1e-5, rtol=0)
    assert not torch.allclose(metrics.sampled_bounds(model, x, 50, seed=7, y=y.roll(1)).elbo, whole.elbo)


def test_bernoulli_sampled_log_likelihood_keeps_float32_precision_at_confident_logits():
    """A trained decoder is confident and mostly right: each pixel's term is near 0. The per-sample log p(x|z) of
    784 pixels against float64, for logits of size 10 to 1000 (a difference of two large sums lost 1e-3 to 0.1)."""
    from vaekit.distributions import BernoulliLikelihood

    likelihood = BernoulliLikelihood((784,))
    generator = torch.Generator().manual_seed(0)
    x = (torch.rand(50, 784, generator=generator) < 0.2).float()
    for size in (10.0, 30.0, 100.0, 1000.0):
        right = torch.rand(20, 50, 784, generator=generator) > 0.002  # a few pixels wrong
        spread = 0.5 + torch.rand(20, 50, 784, generator=generator)
        logits = torch.where(right, 2 * x - 1, 1 - 2 * x) * size * spread
        exact = (logits.double() * x.double() - torch.nn.functional.softplus(logits.double())).sum(-1)
        got = likelihood.log_prob_samples(logits.flatten(0, 1), x)
        assert ((got.double() - exact).abs() <= 1e-6 * exact.abs() + 1e-4).all(), size  # float32: 1.2e-7 a term


@pytest.mark.parametrize("likelihood,std", [("bernoulli", None), ("gaussian", 0.3), ("gaussian", None)])
@pytest.mark.parametrize("shape", [(7,), (1, 4, 4)])
def test_likelihood_fast_path_equals_the_generic_path(likelihood, std, shape):
    model = build_model(ModelConfig(network="mlp", hidden_dims=(8,), likelihood=likelihood, options={"gaussian": {"std": std}} if std else {},
                                    data_shape=shape, latent_dim=2))
    x = torch.rand(5, *shape)
    if likelihood == "bernoulli":
        x = torch.bernoulli(x)
    z = torch.randn(4, 5, 2)  # (K, B, D)
    params = model.decoder_params(z.flatten(0, 1))
    fast = model.likelihood.log_prob_samples(params, x)
    generic = Likelihood.log_prob_samples(model.likelihood, params, x)
    tiled = model.decode(z.flatten(0, 1)).log_prob(x.repeat(4, *[1] * len(shape))).view(4, 5)
    assert fast.shape == (4, 5)
    torch.testing.assert_close(fast, generic)
    torch.testing.assert_close(fast, tiled)
    model.log_importance_weights(x, 3).sum().backward()  # the IWAE loss trains through the same path
    assert all(p.grad is not None for p in model.parameters())


def test_evaluate_restores_training_mode_and_checks_inputs():
    model = build_model(ModelConfig(network="mlp", hidden_dims=(8,), likelihood="bernoulli", data_shape=(6,),
                                    latent_dim=2)).train()
    x = torch.bernoulli(torch.full((8, 6), 0.5))
    metrics.evaluate(model, x, iw_samples=2)
    assert model.training
    with pytest.raises(vaekit.VaekitError, match="shape"):
        metrics.evaluate(model, torch.rand(8, 5))
    with pytest.raises(vaekit.VaekitError, match="bernoulli"):
        metrics.evaluate(model, x * 3)


REQUIRED = {"elbo", "recon", "kl", "nll", "nll_stderr", "iw_samples", "active_units", "kl_per_dim", "elbo_stderr",
            "bits_per_dim", "squared_error", "n_examples", "split", "seconds"}


def tiny_run(tmp_path, family: str, condition: str = "none"):
    cfg = RunConfig(data=DataConfig(name="digits"),
                    model=ModelConfig(family=family, latent_dim=4, network="mlp", hidden_dims=(32,), condition=condition),
                    train=TrainConfig(epochs=1, batch_size=128, progress=False))
    return vaekit.train(cfg, out=tmp_path / f"{family}-{condition}").directory


def test_cli_evaluate_writes_json(tmp_path, capsys):
    run = tiny_run(tmp_path, "vae")
    out = tmp_path / "eval.json"
    before = torch.get_num_threads()
    wanted = 1 if before > 1 else 2  # a value different from the current one, so the flag must take effect
    try:
        assert main(["evaluate", str(run), "--iw-samples", "20", "--n", "100", "--out", str(out), "--no-progress",
                     "--threads", str(wanted)]) == 0
        assert torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(before)
    result = json.loads(out.read_text())
    assert REQUIRED <= set(result)
    assert result["split"] == "test" and result["n_examples"] == 100 and result["iw_samples"] == 20
    assert result["nll"] <= -result["elbo"] and len(result["kl_per_dim"]) == 4
    assert result["bits_per_dim"] is None  # digits are grey levels: the Bernoulli gives no code length on them
    assert json.loads(capsys.readouterr().out)["nll"] == result["nll"]


def test_cli_evaluate_rejects_zero_threads(tmp_path, capsys):
    run = tiny_run(tmp_path, "vae")
    assert main(["evaluate", str(run), "--threads", "0", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--threads" in err


def test_cli_evaluate_autoencoder_skips_the_nll_by_default_and_refuses_one_asked_for(tmp_path, capsys):
    run = tiny_run(tmp_path, "ae")
    assert main(["evaluate", str(run), "--iw-samples", "10", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--iw-samples 0" in err
    for flags in ([], ["--iw-samples", "0"]):  # the default is 0 for a family with no bound
        assert main(["evaluate", str(run), *flags, "--no-progress"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["nll"] is None and result["elbo"] is None and result["kl_per_dim"] is None
        assert result["squared_error"] > 0 and 0 <= result["active_units"] <= 4
        assert result["iw_samples"] == 0
    # the same default from Python
    x = vaekit.data.load_dataset(DataConfig(name="digits")).x_test[:50]
    assert metrics.evaluate(vaekit.load(run), x).iw_samples == 0


def test_posterior_loc_scale_is_the_encoders_gaussian_and_refuses_other_posteriors():
    x = torch.rand(7, 10)
    model = build_model(ModelConfig(network="mlp", hidden_dims=(8,), likelihood="bernoulli", data_shape=(10,),
                                    latent_dim=3))
    loc, scale = metrics.posterior_loc_scale(model, x)
    qz = model.encode(x)
    torch.testing.assert_close(loc, qz.base_dist.loc)
    torch.testing.assert_close(scale, qz.base_dist.scale)
    ae = build_model(ModelConfig(family="ae", network="mlp", hidden_dims=(8,), likelihood="bernoulli",
                                 data_shape=(10,), latent_dim=3))
    with pytest.raises(vaekit.VaekitError, match="PointMass posterior, not a factorised Gaussian"):
        metrics.posterior_loc_scale(ae, x)


# ---- per-item tables and paired comparisons ---------------------------------------------------------------------

def test_per_item_values_are_the_closed_form_and_paired_differences_are_exact(tmp_path):
    """With the exact posterior each item's NLL estimate is its exact -log p(x); a model against the same model with a
    worse encoder gives, item by item, exactly the difference of the two per-item tables, and pairing removes the
    items' spread: the difference's standard error is far below either mean's."""
    n = 400
    exact_model, x, log_px = ppca_data(n)
    worse_model, _, _ = ppca_data(n, imperfect=True)
    exact = metrics.evaluate(exact_model, x, iw_samples=20)
    worse = metrics.evaluate(worse_model, x, iw_samples=20)
    assert set(exact.per_item) == set(metrics.ITEM_MEASURES) and "per_item" not in exact.to_dict()
    torch.testing.assert_close(exact.per_item["nll"], -log_px.double(), atol=2e-4, rtol=0)
    assert float(exact.per_item["nll"].mean()) == pytest.approx(exact.nll, abs=1e-9)
    assert float(exact.per_item["kl"].mean()) == pytest.approx(exact.kl, abs=1e-9)

    table = tmp_path / "exact.csv"
    vaekit.checkpoint.write_lines(table, metrics.item_lines(exact, x))
    lines = table.read_text().splitlines()
    assert lines[0] == "item,data_sha256,iw_samples,nll,elbo,kl,recon_at_mean,squared_error,given_labels"
    assert len(lines) == n + 1 and lines[1].endswith(",0")
    read = metrics.read_items(table, x)
    torch.testing.assert_close(read["nll"], exact.per_item["nll"], atol=0, rtol=0)  # repr round-trips floats

    result = metrics.paired(worse, read)
    diff = worse.per_item["nll"] - exact.per_item["nll"]
    assert result["items"] == n and result["iw_samples"] == result["other_iw_samples"] == 20
    assert result["nll"]["difference"] == pytest.approx(worse.nll - exact.nll, abs=1e-9)
    assert result["nll"]["stderr"] == pytest.approx(float(diff.std()) / math.sqrt(n), rel=1e-9)
    assert result["nll"]["this_lower"] == pytest.approx(float((diff < 0).double().mean()))
    # the worse encoder cannot beat the exact marginal on average: the IS bound is an upper bound in expectation
    assert result["nll"]["difference"] > -3 * result["nll"]["stderr"]
    assert result["nll"]["stderr"] < 0.2 * min(exact.nll_stderr, worse.nll_stderr)
    itself = metrics.paired(exact, read)
    assert all(itself[m]["difference"] == 0 and itself[m]["stderr"] == 0 for m in metrics.ITEM_MEASURES)


def test_cli_per_item_and_compare_to(tmp_path, capsys):
    first, second = tiny_run(tmp_path, "vae"), tiny_run(tmp_path, "iwae")
    table = tmp_path / "first.csv"
    common = ["--iw-samples", "20", "--n", "300", "--no-progress"]
    assert main(["evaluate", str(first), *common, "--per-item", str(table)]) == 0
    mine = json.loads(capsys.readouterr().out)
    assert len(table.read_text().splitlines()) == 301
    assert main(["evaluate", str(second), *common, "--compare-to", str(table)]) == 0
    theirs = json.loads(capsys.readouterr().out)
    paired = theirs["paired"]
    assert paired["against"] == str(table) and paired["items"] == 300
    assert paired["nll"]["this"] == pytest.approx(theirs["nll"], abs=1e-9)
    assert paired["nll"]["other"] == pytest.approx(mine["nll"], abs=1e-9)
    assert paired["nll"]["difference"] == pytest.approx(theirs["nll"] - mine["nll"], abs=1e-9)
    assert 0 < paired["nll"]["stderr"] < min(theirs["nll_stderr"], mine["nll_stderr"])
    assert paired["elbo"]["difference"] == pytest.approx(theirs["elbo"] - mine["elbo"], abs=1e-9)
    assert theirs["given_labels"] is mine["given_labels"] is False and "note" not in paired
    # a label-conditioned model's densities are of x given its label: said in its results, and in a pairing with a
    # model without labels
    conditioned = tiny_run(tmp_path, "vae", condition="label")
    assert main(["evaluate", str(conditioned), *common, "--compare-to", str(table)]) == 0
    given = json.loads(capsys.readouterr().out)
    assert given["given_labels"] is True
    assert given["paired"]["note"].startswith("this model's measures are of x given its label (-log p(x|y)), the "
                                              "other's of x alone")
    # and the other way round: the model without labels is this one
    assert main(["evaluate", str(conditioned), *common, "--per-item", str(tmp_path / "given.csv")]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(first), *common, "--compare-to", str(tmp_path / "given.csv")]) == 0
    assert json.loads(capsys.readouterr().out)["paired"]["note"].startswith(
        "the other model's measures are of x given its label (-log p(x|y)), this one's of x alone")


@pytest.mark.parametrize("case", ["missing", "fewer", "other split", "not a table", "not numbers"])
def test_cli_compare_to_mistakes_fail_before_evaluating(tmp_path, capsys, case):
    run = tiny_run(tmp_path, "vae")
    table = tmp_path / "t.csv"
    assert main(["evaluate", str(run), "--iw-samples", "5", "--n", "50", "--no-progress",
                 "--per-item", str(table)]) == 0
    capsys.readouterr()
    flags = ["--n", "50"]
    if case == "missing":
        table = tmp_path / "absent.csv"
    elif case == "fewer":
        flags = ["--n", "40"]
    elif case == "other split":
        flags = ["--n", "50", "--split", "train"]
    elif case == "not a table":
        table.write_text("a,b\n1,2\n")
    else:
        header, first, *rest = table.read_text().splitlines()
        table.write_text("\n".join([header, ",".join(first.split(",")[:3] + ["oops"] * 5), *rest]) + "\n")
    out = tmp_path / "kept.json"
    out.write_text("earlier results\n")
    assert main(["evaluate", str(run), "--iw-samples", "5", "--no-progress", "--out", str(out),
                 "--compare-to", str(table), *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and str(table) in err
    assert {"missing": "--per-item", "fewer": "--n", "other split": "same data and split",
            "not a table": "--per-item", "not numbers": "not a number"}[case] in err
    assert out.read_text() == "earlier results\n"  # nothing already written is lost
