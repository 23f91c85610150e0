"""The model contract's conformance suite: every registered family x likelihood x network x conditioned or not
trains, saves and loads, samples, reconstructs, encodes and decodes, evaluates, and goes through the latent
tools and compare's measurements. Two families are registered here, outside the package, to prove the contract
takes what the built-in ones do not show: a prior that does not factorise, and a latent of two groups."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.distributions import Distribution, MultivariateNormal, constraints

import vaekit
from vaekit import VaekitError
from vaekit import checkpoint, compare, latent, metrics
from vaekit.config import DataConfig, ModelConfig, RunConfig
from vaekit.data import load_dataset, tables
from vaekit.distributions import LIKELIHOODS, draw_noise, rsample_with
from vaekit.models import MODEL_FAMILIES, VAE, Model, build_model, register_family
from vaekit.runs import RunResult


# ---- two families the package does not have ----------------------------------------------------------------

@register_family("test-fullcov-prior")
class FullCovariancePrior(VAE):
    """A learned full-covariance Gaussian prior: no factorisation, no closed-form KL against the posterior."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        d = config.latent_dim
        self.prior_tril = nn.Parameter(torch.eye(d) + 0.3 * torch.tril(torch.ones(d, d), -1))

    def prior(self) -> Distribution:
        tril = torch.tril(self.prior_tril, -1) + torch.diag(nn.functional.softplus(self.prior_tril.diagonal()) + 0.1)
        return MultivariateNormal(torch.zeros_like(tril[0]), scale_tril=tril)


class TwoGroupPosterior(Distribution):
    """q(z2|x) q(z1|x, z2) over z = [z1, z2]: z2 ~ N(m2, s2), z1 ~ N(m1 + W z2, s1). Draws its own noise."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, m1, s1, m2, s2, w) -> None:
        self.m1, self.s1, self.m2, self.s2, self.w = m1, s1, m2, s2, w
        super().__init__(batch_shape=m1.shape[:1], event_shape=(m1.shape[1] + m2.shape[1],), validate_args=False)

    @property
    def noise_shape(self) -> torch.Size:
        return self.event_shape

    def rsample_with(self, noise: torch.Tensor) -> torch.Tensor:
        d1 = self.m1.shape[1]
        z2 = self.m2 + self.s2 * noise[..., d1:]
        z1 = self.m1 + z2 @ self.w.T + self.s1 * noise[..., :d1]
        return torch.cat([z1, z2], -1)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        return self.rsample_with(draw_noise(self, tuple(sample_shape)))

    @property
    def mean(self) -> torch.Tensor:
        return torch.cat([self.m1 + self.m2 @ self.w.T, self.m2], -1)

    def group_log_probs(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d1 = self.m1.shape[1]
        z1, z2 = z[..., :d1], z[..., d1:]
        normal = torch.distributions.Normal
        log_q1 = normal(self.m1 + z2 @ self.w.T, self.s1).log_prob(z1).sum(-1)
        return log_q1, normal(self.m2, self.s2).log_prob(z2).sum(-1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return sum(self.group_log_probs(z))


class TwoGroupPrior(Distribution):
    """p(z2) = N(0, I), p(z1|z2) = N(V z2, I)."""

    arg_constraints: dict = {}
    support = constraints.real_vector

    def __init__(self, v: torch.Tensor) -> None:
        self.v = v
        super().__init__(event_shape=(v.shape[0] + v.shape[1],), validate_args=False)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            z2 = torch.randn(*sample_shape, self.v.shape[1], device=self.v.device)
            return torch.cat([z2 @ self.v.T + torch.randn(*sample_shape, self.v.shape[0], device=self.v.device), z2], -1)

    def group_log_probs(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d1 = self.v.shape[0]
        normal = torch.distributions.Normal
        z1, z2 = z[..., :d1], z[..., d1:]
        return normal(z2 @ self.v.T, 1.0).log_prob(z1).sum(-1), normal(0.0, 1.0).log_prob(z2).sum(-1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return sum(self.group_log_probs(z))


@register_family("test-two-groups")
class TwoGroups(Model):
    """A latent of two groups, z1 (latent_dim) below z2 (2), with a KL term per group (kl_z1, kl_z2)."""

    TOP = 2

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.w = nn.Parameter(0.1 * torch.randn(config.latent_dim, self.TOP))
        self.v = nn.Parameter(0.1 * torch.randn(config.latent_dim, self.TOP))

    @property
    def code_shape(self) -> tuple[int, ...]:
        return (self.latent_dim + self.TOP,)

    def build_networks(self):
        from vaekit.networks import build_networks

        size = self.latent_dim + self.TOP
        return build_networks(self.config, 2 * size, size, self.likelihood.param_channels, self.num_labels)

    def posterior(self, params: torch.Tensor) -> Distribution:
        d1 = self.latent_dim
        loc, logvar = params.chunk(2, dim=-1)
        scale = torch.exp(0.5 * logvar.clamp(-10, 5))
        return TwoGroupPosterior(loc[:, :d1], scale[:, :d1], loc[:, d1:], scale[:, d1:], self.w)

    def prior(self) -> Distribution:
        return TwoGroupPrior(self.v)

    def regularizer_terms(self, qz, z):
        q1, q2 = qz.group_log_probs(z)
        p1, p2 = self.prior().group_log_probs(z)
        return {"kl_z1": q1 - p1, "kl_z2": q2 - p2}


# ---- the suite -----------------------------------------------------------------------------------------------

SHAPE = (1, 8, 8)
LABELS = 3


def tiny_dataset() -> vaekit.Dataset:
    generator = torch.Generator().manual_seed(0)
    y = torch.randint(0, LABELS, (96,), generator=generator)
    # Images on the 8-bit grid in [0, 1] whose brightness depends on the label: every likelihood accepts them.
    base = torch.rand(96, *SHAPE, generator=generator) * 0.5 + 0.25 * y.view(-1, 1, 1, 1)
    x = (base.clamp(0, 1) * 255).round() / 255
    return vaekit.Dataset("tiny", x[:64], x[64:], y[:64], y[64:], is_image=True)


def tiny_table() -> vaekit.Dataset:
    """A table of mixed columns (numeric, binary, categorical) whose values depend on the label."""
    generator = torch.Generator().manual_seed(0)
    y = torch.randint(0, LABELS, (96,), generator=generator)
    noise = torch.randn(96, 2, generator=generator)
    columns = {"size": (noise[:, 0] + y).tolist(), "weight": (noise[:, 1] - y).tolist(),
               "flag": ["yes" if (a + b) > 0 else "no" for a, b in noise.tolist()],
               "kind": [["a", "b", "c", "d"][(int(label) + (a > 1)) % 4] for label, (a, _) in zip(y, noise.tolist())]}
    table = tables.RawTable("tiny table", tuple(columns), tuple(tuple(v) for v in columns.values()))
    schema = tables.fit_schema(table, range(64))
    x = schema.encode(table)
    return vaekit.Dataset("tiny-table", x[:64], x[64:], y[:64], y[64:], table=schema)


DATA = tiny_dataset()
TABLE = tiny_table()
OPTIONS = compare.CompareOptions(gmm_components=2, classifier_steps=10, fcd_items=16, hole_codes=32, hole_draws=16,
                                 interpolation_pairs=2, interpolation_steps=3, shown_items=4, shown_samples=4,
                                 shown_pairs=1)


@pytest.fixture(scope="module")
def quality():
    measured = compare.SampleQuality(DATA, OPTIONS, seed=0)
    measured.RESAMPLES = 20  # the bootstrap's replicates: what the suite checks is that they are made, not their 200
    return measured


def config(family: str, likelihood: str, network: str, conditioned: bool) -> ModelConfig:
    table = {"table": {"columns": TABLE.table.to_dicts()}} if likelihood == "table" else {}
    return ModelConfig(family=family, latent_dim=3, network=network, hidden_dims=(32,), conv_channels=(4, 8),
                       likelihood=likelihood, condition="label" if conditioned else "none",
                       num_labels=LABELS if conditioned else 0, data_shape=TABLE.shape if table else SHAPE,
                       options=table)


@torch.no_grad()
def seeded_loss(model: Model, x, y) -> float:
    with torch.random.fork_rng():
        torch.manual_seed(123)
        return float(model(x, y).loss)


@pytest.mark.parametrize("conditioned", [False, True], ids=["plain", "label"])
@pytest.mark.parametrize("network", ["mlp", "conv"])
@pytest.mark.parametrize("likelihood", sorted(LIKELIHOODS))
@pytest.mark.parametrize("family", sorted(MODEL_FAMILIES))
def test_conformance(family, likelihood, network, conditioned, quality, tmp_path):
    if likelihood == "table" and network == "conv":
        pytest.skip("a table row has no image to convolve: tables get MLPs")
    data = TABLE if likelihood == "table" else DATA
    shape = data.shape  # images, or table rows
    torch.manual_seed(0)
    cfg = config(family, likelihood, network, conditioned)
    if conditioned and not MODEL_FAMILIES[family].takes_labels:
        with pytest.raises(VaekitError, match="cannot be conditioned on labels"):
            build_model(cfg)
        return
    model = build_model(cfg)
    x, y = data.x_train[:32], data.y_train[:32] if conditioned else None

    # forward: the objective and named per-example terms
    out = model(x, y)
    assert out.loss.shape == () and torch.isfinite(out.loss)
    assert out.terms and all(t.shape == (32,) and torch.isfinite(t).all() for t in out.terms.values())
    assert (out.elbo is not None) == model.has_bound
    if out.elbo is not None:
        assert out.elbo.shape == (32,)

    # a few steps lower the loss (the same posterior draws before and after)
    before = seeded_loss(model, x, y)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(30):
        optimizer.zero_grad()
        model(x, y).loss.backward()
        optimizer.step()
    assert seeded_loss(model, x, y) < before
    # the family's later stages (a vqvae's prior over its codes): each lowers its own objective, the rest frozen
    for stage in model.stages:
        model.set_stage(stage)
        frozen = {name: p.detach().clone() for name, p in model.named_parameters() if not p.requires_grad}
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
        stage_before = seeded_loss(model, x, y)
        for _ in range(30):
            optimizer.zero_grad()
            model(x, y).loss.backward()
            optimizer.step()
        assert seeded_loss(model, x, y) < stage_before
        assert all(torch.equal(p, frozen[name]) for name, p in model.named_parameters() if name in frozen)
        model.set_stage(None)
    with pytest.raises(VaekitError, match="no training stage"):
        model.set_stage("no-such-stage")
    model.eval()

    # save and load: identical outputs
    checkpoint.save_pretrained(model, RunConfig(model=cfg), tmp_path / "run")
    loaded = checkpoint.load(tmp_path / "run")
    assert type(loaded) is type(model)
    torch.testing.assert_close(loaded.reconstruct(x, y), model.reconstruct(x, y), rtol=0, atol=0)
    if model.has_bound:
        qz = model.encode(x, y)
        noise = draw_noise(qz, (2,), generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(loaded.log_importance_weights(x, 2, y, noise),
                                   model.log_importance_weights(x, 2, y, noise), rtol=0, atol=0)

    # sample, reconstruct, encode / decode
    labels = torch.arange(5) % LABELS if conditioned else None
    samples = model.sample(5, labels, torch.Generator().manual_seed(0))
    assert samples.shape == (5, *shape) and torch.isfinite(samples).all()
    assert torch.equal(samples, model.sample(5, labels, torch.Generator().manual_seed(0)))
    assert model.reconstruct(x, y).shape == x.shape
    codes = latent.encode_dataset(model, x, y=y)
    assert codes.shape == (32, *model.code_shape)
    assert latent.decode_mean(model, codes, y).shape == x.shape
    draws = latent.encode_dataset(model, x, y=y, sample=True, generator=torch.Generator().manual_seed(0))
    assert draws.shape[0] == 32 and torch.isfinite(draws).all()

    # evaluate, where the family has a bound; its reconstruction and latent space otherwise
    k = 8 if model.has_bound else 0
    y_test = data.y_test if conditioned else None
    result = metrics.evaluate(model, data.x_test, iw_samples=k, y=y_test)
    assert result.latent_dim == math.prod(model.code_shape)
    if model.has_bound:
        assert math.isfinite(result.nll) and result.kl_estimator in ("closed form", "monte carlo (8 samples)")
        assert (result.bits_per_dim is not None) == model.likelihood.is_mass_on(data.x_test)
        # The evaluator's per-item ELBO (its own seeded draws, any latent shape) and the objective's estimator
        # (the model's own draws) estimate the same expectation: paired over items, the difference is noise.
        bounds = metrics.sampled_bounds(model, data.x_test, 64, y=y_test)
        with torch.no_grad():
            forward = torch.stack([model(data.x_test, y_test).elbo for _ in range(64)]).double().mean(0)
        gap = bounds.elbo - forward
        assert abs(float(gap.mean())) < 4 * float(gap.std() / math.sqrt(len(gap))) + 1e-3
    else:
        assert result.elbo is None and result.kl_per_dim_omitted

    # the latent tools
    y0 = None if y is None else y[0]
    y1 = None if y is None else y[1]
    assert latent.interpolate(model, x[0], x[1], 4, y1=y0, y2=y1).shape == (4, *shape)
    assert latent.interpolate(model, x[0], x[1], 4, "slerp", y1=y0, y2=y1).shape == (4, *shape)
    traversal = latent.traverse(model, x[0], top_n=2, data=x, y=y0, data_labels=y, values=[-1, 0, 1])
    assert traversal.images.shape == (2, 3, *shape)
    mask = torch.arange(32) % 2 == 0
    vector = latent.attribute_vector(model, x, mask, y=y)
    assert latent.apply_attribute(model, x[0], vector, [-1, 0, 1], y=y0).shape == (3, *shape)
    assert latent.vary(model, x[0], 3, torch.Generator().manual_seed(0), y=y0).shape == (3, *shape)
    labels3 = None if y is None else [int(y[0]), int(y[1]), int(y[2])]
    assert latent.arithmetic(model, x[0], x[1], x[2], labels3).shape == shape
    assert latent.latent_map(model, x, y, y=y).points.shape == (32, 2)

    assert (result.columns is not None) == (likelihood == "table")
    if result.columns is not None:
        assert list(result.columns) == list(TABLE.table.names)

    # compare's measurements of a trained model (of images: its report is pictures)
    if likelihood == "table":
        return
    run = RunResult(model=model, config=RunConfig(model=cfg), history=[], directory=None)
    pairs = compare.random_pairs(len(DATA.x_test), OPTIONS.interpolation_pairs, 0)
    scores, figures, units = compare.measure(run, DATA, quality, pairs, OPTIONS, seed=0)
    assert scores.family == family and math.isfinite(scores.recon_squared_error)
    assert 0 <= scores.prior_hole_fraction <= 1 and {"prior", "reconstructions", "latent_map"} <= set(figures)
    assert scores.standard_errors.keys() == units.keys() and len(units["recon_nll"]) == len(DATA.x_test)


def test_the_suite_covers_the_test_families_and_every_likelihood():
    assert {"vae", "iwae", "ae", "test-fullcov-prior", "test-two-groups"} <= set(MODEL_FAMILIES)
    assert {"bernoulli", "gaussian", "continuous_bernoulli", "discretized_logistic"} <= set(LIKELIHOODS)


def test_a_non_factorised_prior_gets_a_monte_carlo_kl_and_no_kl_per_dimension():
    torch.manual_seed(0)
    model = build_model(config("test-fullcov-prior", "bernoulli", "mlp", False)).eval()
    x = DATA.x_test
    assert model.closed_form_kl(model.encode(x)) is None
    result = metrics.evaluate(model, x, iw_samples=2000)
    assert result.kl_estimator == "monte carlo (2000 samples)"
    assert result.kl_per_dim is None and "does not factorise" in result.kl_per_dim_omitted
    # The Monte Carlo KL against a direct computation: KL(N(m, S) || N(0, P)) of two Gaussians in closed form.
    qz, pz = model.encode(x), model.prior()
    q_full = MultivariateNormal(qz.base_dist.loc, scale_tril=torch.diag_embed(qz.base_dist.scale))
    exact = torch.distributions.kl_divergence(q_full, pz).detach().double().mean()
    assert result.kl == pytest.approx(float(exact), abs=0.02)
    # samples come from this prior, not N(0, I), and reports do not caption it N(0, I)
    assert model.prior_text == "the test-fullcov-prior family's prior"
    assert build_model(config("vae", "bernoulli", "mlp", False)).prior_text == "N(0, I)"
    z = model.sample_prior(20000, torch.Generator().manual_seed(0))
    torch.testing.assert_close(torch.cov(z.T), pz.covariance_matrix.detach(), atol=0.05, rtol=0.05)


def test_two_latent_groups_report_a_term_per_group_and_their_sum_is_the_bound():
    torch.manual_seed(0)
    model = build_model(config("test-two-groups", "bernoulli", "mlp", False))
    x = DATA.x_train[:16]
    out = model(x)
    assert set(out.terms) == {"recon", "kl_z1", "kl_z2"}
    torch.testing.assert_close(out.elbo, -(out.terms["recon"] + out.terms["kl_z1"] + out.terms["kl_z2"]))
    # the evaluator's noise is the posterior's own shape (both groups), and results do not depend on batching
    one = metrics.sampled_bounds(model, x, 6, seed=2, max_rows=6)
    whole = metrics.sampled_bounds(model, x, 6, seed=2, max_rows=10**6)
    torch.testing.assert_close(one.log_likelihood, whole.log_likelihood, atol=1e-5, rtol=0)
    qz = model.encode(x)
    noise = draw_noise(qz, (3,))
    assert noise.shape == (3, 16, 5) and rsample_with(qz, noise).shape == (3, 16, 5)


def test_labels_reach_every_path_in_item_order():
    torch.manual_seed(0)
    model = build_model(config("vae", "bernoulli", "mlp", True)).eval()
    x, y = DATA.x_test[:6], torch.tensor([0, 1, 2, 2, 1, 0])
    qz = model.encode(x, y)
    noise = draw_noise(qz, (3,), generator=torch.Generator().manual_seed(4))
    together = model.log_importance_weights(x, 3, y, noise)  # K*B codes, labels expanded sample-major
    apart = torch.cat([model.log_importance_weights(x[i:i + 1], 3, y[i:i + 1], noise[:, i:i + 1]) for i in range(6)], 1)
    torch.testing.assert_close(together, apart)
    # the label changes what is decoded, encoded and sampled
    z = torch.zeros(3, 3)
    assert not torch.allclose(model.decode(z, torch.tensor([0, 0, 0])).mean, model.decode(z, torch.tensor([1, 1, 1])).mean)
    assert not torch.allclose(model.encode(x, y).mean, model.encode(x, (y + 1) % LABELS).mean)
    one = model.sample(4, 2, torch.Generator().manual_seed(0))
    torch.testing.assert_close(one, model.sample(4, torch.full((4,), 2), torch.Generator().manual_seed(0)))
    assert not torch.allclose(one, model.sample(4, 1, torch.Generator().manual_seed(0)))
    # one label for the whole batch in the importance weights too
    torch.testing.assert_close(model.log_importance_weights(x, 3, 1, noise),
                               model.log_importance_weights(x, 3, torch.ones(6, dtype=torch.long), noise))
    with pytest.raises(vaekit.VaekitError, match="labels"):
        model.sample(2)
    with pytest.raises(vaekit.VaekitError, match="class indices 0..2"):
        model.sample(2, 5)


VARIANTS = {"hvae-top-down": ("hvae", {"hvae": {"inference": "top-down", "top_dim": 2, "top_hidden": (8,)}}),
            "hvae-vamp-k3": ("hvae", {"hvae": {"top_prior": "vamp", "top_components": 4, "k": 3, "top_dim": 2,
                                               "top_hidden": (8,)}}),
            "vqvae-ema": ("vqvae", {"vqvae": {"ema": True, "codebook": 8, "positions": 2}})}


@pytest.mark.parametrize("variant", sorted(MODEL_FAMILIES) + sorted(VARIANTS))
def test_every_family_trains_and_evaluates_in_float64(variant):
    """model.double() works for every family and option, as for gradcheck or reference values, and agrees with
    float32 (hvae cast its layers' outputs to float32, and a vqvae's EMA update mixed the two)."""
    family, options = VARIANTS.get(variant, (variant, {}))
    torch.manual_seed(0)
    cfg = ModelConfig(family=family, latent_dim=3, network="mlp", hidden_dims=(16,), likelihood="bernoulli",
                      data_shape=SHAPE, options=options)
    single = build_model(cfg)
    double = build_model(cfg).double()
    double.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in single.state_dict().items()})
    x = DATA.x_train[:16]
    double.eval(), single.eval()
    assert double.encode(x.double()).mean.dtype == torch.float64
    torch.testing.assert_close(double.reconstruct(x.double()).float(), single.reconstruct(x), atol=1e-5, rtol=1e-4)
    if double.has_bound:
        bound = metrics.sampled_bounds(double, x.double(), 4)
        assert torch.isfinite(bound.elbo).all() and torch.isfinite(bound.log_likelihood).all()
    double.train()  # (a vqvae's training forward moves its codebook: last)
    out = double(x.double())
    assert out.loss.dtype == torch.float64 and all(t.dtype == torch.float64 for t in out.terms.values())
    out.loss.backward()
    assert all(p.grad is None or (p.grad.dtype == torch.float64 and torch.isfinite(p.grad).all())
               for p in double.parameters())


def test_a_family_whose_init_from_data_takes_the_items_alone_still_trains_label_conditioned():
    """init_from_data(x) was the hook's whole signature before it took the labels: a family written then, trained
    with --condition label, gets the items alone; one that takes y gets the training labels."""
    from vaekit.config import DataConfig, TrainConfig

    seen: dict = {}

    class ItemsAlone(VAE):
        def init_from_data(self, x):
            seen["alone"] = x.shape

    class WithLabels(VAE):
        def init_from_data(self, x, y=None):
            seen["labels"] = None if y is None else y.shape

    class KeywordOnly(VAE):
        def init_from_data(self, x, *, y=None):
            seen["keyword"] = None if y is None else y.shape

    class AnyKeywords(VAE):
        def init_from_data(self, x, **more):
            seen["more"] = sorted(more)

    register_family("test-init-items-alone")(ItemsAlone)
    register_family("test-init-with-labels")(WithLabels)
    register_family("test-init-keyword-only")(KeywordOnly)
    register_family("test-init-any-keywords")(AnyKeywords)
    for family in ("test-init-items-alone", "test-init-with-labels", "test-init-keyword-only",
                   "test-init-any-keywords"):
        cfg = RunConfig(data=DataConfig(name="digits"),
                        model=ModelConfig(family=family, latent_dim=2, network="mlp", hidden_dims=(16,),
                                          condition="label"),
                        train=TrainConfig(epochs=1, progress=False))
        assert vaekit.train(cfg).model.num_labels == 10
    assert seen["alone"][1:] == (1, 8, 8) and seen["labels"] == seen["keyword"] == (seen["alone"][0],)
    assert seen["more"] == ["y"]


def test_a_family_with_a_class_conditional_gaussian_prior_draws_one_code_for_each_label():
    """prior_given(y), a Gaussian of batch (n,) (the hook's contract): sample_prior draws one code per label, from
    that label's Gaussian, and sample decodes them; a family that overrides sample_prior(self, n, generator) as it
    was before labels still samples when it is not conditioned."""
    from vaekit.distributions import DiagonalGaussian

    class ClassPrior(VAE):
        def __init__(self, config):
            super().__init__(config)
            self.class_means = nn.Parameter(torch.arange(config.num_labels * self.latent_dim, dtype=torch.float32)
                                            .view(config.num_labels, self.latent_dim))

        def prior_given(self, y):
            return DiagonalGaussian(self.class_means[y], torch.ones_like(self.class_means[y]))

    class OwnSampler(VAE):
        def sample_prior(self, n, generator=None):
            return super().sample_prior(n, generator)

    class Deferring(VAE):  # overrides the hook, but its prior is the same for every label (batch ())
        def prior_given(self, y):
            return super().prior_given(y)

    register_family("test-class-gaussian-prior")(ClassPrior)
    register_family("test-own-sampler")(OwnSampler)
    register_family("test-prior-given-deferring")(Deferring)
    shape = dict(data_shape=(1, 8, 8), latent_dim=2, hidden_dims=(8,), likelihood="bernoulli", network="mlp")
    model = build_model(ModelConfig(family="test-class-gaussian-prior", condition="label", num_labels=3, **shape))
    assert model.prior_takes_labels
    z = model.sample_prior(4000, torch.Generator().manual_seed(0), 2)
    assert z.shape == (4000, 2)
    torch.testing.assert_close(z.mean(0), model.class_means[2].detach(), rtol=0, atol=4 / math.sqrt(4000))
    labels = torch.tensor([0, 1, 2, 0])
    assert model.sample_prior(4, torch.Generator().manual_seed(0), labels).shape == (4, 2)
    assert model.sample(4, labels).shape == (4, 1, 8, 8)
    with pytest.raises(VaekitError, match="pass the labels"):
        model.sample_prior(4)
    own = build_model(ModelConfig(family="test-own-sampler", **shape))
    assert own.sample(4, generator=torch.Generator().manual_seed(0)).shape == (4, 1, 8, 8)
    own = build_model(ModelConfig(family="test-own-sampler", condition="label", num_labels=3, **shape))
    assert own.sample(4, 1, torch.Generator().manual_seed(0)).shape == (4, 1, 8, 8)  # its prior takes no label
    # the traversal's prior moments of an item of class 2 are class 2's prior's
    mean, std = latent.prior_moments(model, y=2)
    torch.testing.assert_close(mean, model.class_means[2].detach())
    torch.testing.assert_close(std, torch.ones(2))
    deferring = build_model(ModelConfig(family="test-prior-given-deferring", condition="label", num_labels=3, **shape))
    assert deferring.sample_prior(5, torch.Generator().manual_seed(0), 1).shape == (5, 2)
    assert deferring.sample(5, 1).shape == (5, 1, 8, 8)


def test_the_objective_holds_each_item_to_its_class_prior_where_the_prior_takes_the_label():
    """A family whose prior takes the label (prior_given) trains against it: the ELBO's KL is the closed form against
    the item's class Gaussian, the importance weights' log p(z) is the class's, the KL per dimension too, and
    training moves the class means (they were never trained: the KL was against prior(), the standard normal). A
    family hook written without y is refused where the prior takes the label (its KL would miss it), and one of a
    family whose prior takes no label is still called as written."""
    from torch.distributions import Independent, Normal, kl_divergence

    from vaekit.distributions import DiagonalGaussian

    class ClassMeans(VAE):
        def __init__(self, config):
            super().__init__(config)
            self.class_means = nn.Parameter(3.0 * torch.randn(config.num_labels, self.latent_dim))

        def prior_given(self, y):
            return DiagonalGaussian(self.class_means[y], torch.ones_like(self.class_means[y]))

    class OldKL(ClassMeans):
        def kl(self, qz, z):  # as written before the hooks took labels
            return qz.log_prob(z) - self.prior().log_prob(z)

    class OldTerms(VAE):  # a prior without the label: its hook, written without y, is called as it was
        calls = 0

        def regularizer_terms(self, qz, z):
            OldTerms.calls += 1
            return super().regularizer_terms(qz, z)

    register_family("test-class-means-prior")(ClassMeans)
    register_family("test-old-kl-class-prior")(OldKL)
    register_family("test-old-terms")(OldTerms)
    shape = dict(data_shape=(1, 8, 8), latent_dim=2, hidden_dims=(16,), likelihood="bernoulli", network="mlp",
                 condition="label", num_labels=3)
    torch.manual_seed(0)
    model = build_model(ModelConfig(family="test-class-means-prior", **shape))
    x, y = DATA.x_train[:64], DATA.y_train[:64] % 3
    qz = model.encode(x, y)
    out = model(x, y)
    class_prior = Independent(Normal(model.class_means[y], torch.ones(64, 2)), 1)
    torch.testing.assert_close(out.terms["kl"], kl_divergence(qz, class_prior))
    standard = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)
    assert float((out.terms["kl"] - kl_divergence(qz, standard)).detach().abs().min()) > 0.01  # not N(0, I)'s
    noise = torch.randn(4, 64, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        z = qz.base_dist.loc + qz.base_dist.scale * noise
        log_px = model.decode(z.flatten(0, 1), y.repeat(4)).log_prob(x.repeat(4, 1, 1, 1)).view(4, 64)
        torch.testing.assert_close(model.log_importance_weights(x, 4, y, noise),
                                   log_px + class_prior.log_prob(z) - qz.log_prob(z))
    torch.testing.assert_close(metrics.kl_per_item_and_dim(model, x, y).sum(1), kl_divergence(qz, class_prior).detach())
    before = model.class_means.detach().clone()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(5):
        optimizer.zero_grad()
        model(x, y).loss.backward()
        optimizer.step()
    assert not torch.equal(model.class_means.detach(), before)
    with pytest.raises(VaekitError, match="its kl does not take the labels"):
        build_model(ModelConfig(family="test-old-kl-class-prior", **shape))
    assert build_model(ModelConfig(family="test-old-kl-class-prior", **{**shape, "condition": "none",
                                                                        "num_labels": 0}))  # no labels: as before
    old = build_model(ModelConfig(family="test-old-terms", **shape))
    assert torch.isfinite(old(x, y).loss) and OldTerms.calls == 1


def test_a_family_that_cannot_be_label_conditioned_with_some_settings_says_why_in_one_line(tmp_path, capsys):
    """labels_refused(settings): build_model, and so train and the command line, refuse the combination with the
    family's own reason, before anything is written; other settings build."""
    from dataclasses import dataclass

    from vaekit.cli import main
    from vaekit.config import setting

    class Picky(VAE):
        @dataclass(frozen=True)
        class Settings:
            plain: bool = setting(False, "a setting under which the family takes no label", cli=False)

        @classmethod
        def labels_refused(cls, settings):
            return "picky cannot take labels when plain: drop --condition label" if settings.plain else None

    register_family("test-picky-labels")(Picky)
    shape = dict(data_shape=(1, 8, 8), latent_dim=2, hidden_dims=(8,), likelihood="bernoulli", network="mlp",
                 condition="label", num_labels=3)
    assert build_model(ModelConfig(family="test-picky-labels", **shape)).num_labels == 3
    with pytest.raises(VaekitError, match="^picky cannot take labels when plain: drop --condition label$"):
        build_model(ModelConfig(family="test-picky-labels", options={"test-picky-labels": {"plain": True}}, **shape))
    out = tmp_path / "run"
    assert main(["train", "--data", "digits", "--model", "test-picky-labels", "--condition", "label",
                 "--set", "model.test-picky-labels.plain=true", "--out", str(out)]) == 2
    assert "picky cannot take labels when plain" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("family", sorted(MODEL_FAMILIES))
def test_every_conditioned_familys_objective_compiles_as_one_graph(family):
    """--compile's step of a label-conditioned model is one graph: the label checks (.item() on the CPU), a class
    mixture's and the hvae's cached draw split it in two (conditioned steps ran slower compiled than eager)."""
    options = {"vamp": {"vamp": {"components": 6}}, "hvae": {"hvae": {"top_prior": "vamp", "top_components": 6}}}
    model = build_model(ModelConfig(family=family, data_shape=(1, 8, 8), latent_dim=2, hidden_dims=(8,),
                                    likelihood="bernoulli", network="mlp", condition="label", num_labels=3,
                                    options=options.get(family, {})))
    x, y = DATA.x_train[:16], DATA.y_train[:16] % 3
    torch._dynamo.reset()
    for stage in [None, *model.stages]:
        model.set_stage(stage)
        twin = copy.deepcopy(model)  # (a step may update the model's state: a vqvae's codebook)
        step = torch.compile(lambda x, y: model(x, y).loss, backend="eager", fullgraph=True)
        torch.manual_seed(0)
        compiled = step(x, y)
        torch.manual_seed(0)
        torch.testing.assert_close(compiled, twin(x, y).loss, rtol=0, atol=1e-5)


def test_a_compiled_step_of_a_conditioned_model_does_not_compile_again_when_other_families_are_made():
    """Which objective hooks take the labels is read once per class: a compiled step reads its class's constant,
    and later families (their hooks read too) do not make it compile again (a cache that grew did)."""
    shape = dict(data_shape=(1, 8, 8), latent_dim=2, hidden_dims=(8,), likelihood="bernoulli", network="mlp",
                 condition="label", num_labels=3)
    torch.manual_seed(0)
    model = build_model(ModelConfig(family="vae", **shape))
    step = torch.compile(model, backend="eager")
    x, y = DATA.x_train[:16], DATA.y_train[:16] % 3
    step(x, y)

    class Later(VAE):
        def kl(self, qz, z, y=None):
            return super().kl(qz, z, y)

    register_family("test-later-family")(Later)
    later = build_model(ModelConfig(family="test-later-family", **shape))
    assert torch.isfinite(later(x, y).loss)
    with torch._dynamo.config.patch(error_on_recompile=True):
        torch.manual_seed(1)
        compiled = step(x, y).loss
    torch.manual_seed(1)
    torch.testing.assert_close(compiled, model(x, y).loss, rtol=0, atol=1e-5)


def test_a_saved_run_of_a_family_whose_hook_misses_the_label_its_prior_takes_still_opens(tmp_path, monkeypatch,
                                                                                        caplog):
    """A run trained before build_model refused such a family (its kl written without y, its prior taking the
    label) loads, evaluates and resumes with a warning that names the hook; a new run of it is refused."""
    from torch.distributions import Normal

    from vaekit import models
    from vaekit.cli import main
    from vaekit.distributions import DiagonalGaussian

    class OldStyle(VAE):
        def __init__(self, config):
            super().__init__(config)
            self.class_means = nn.Parameter(torch.zeros(config.num_labels, self.latent_dim))

        def prior_given(self, y):
            return DiagonalGaussian(self.class_means[y], torch.ones_like(self.class_means[y]))

        def kl(self, qz, z):
            return qz.log_prob(z) - Normal(torch.zeros_like(z), 1.0).log_prob(z).sum(-1)

    register_family("test-old-style-class-prior")(OldStyle)
    run = tmp_path / "run"
    args = ["train", "--data", "digits", "--model", "test-old-style-class-prior", "--condition", "label",
            "--latent-dim", "2", "--hidden-dims", "16", "--epochs", "1", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "new")]) == 2 and not (tmp_path / "new").exists()
    with monkeypatch.context() as before:  # as the code was before the check
        before.setattr(models, "hook_missing_labels", lambda cls: None)
        assert main([*args, "--out", str(run)]) == 0
    caplog.set_level("WARNING")
    model = vaekit.load(run)
    assert "its kl does not take the labels: this run is opened as it trained" in caplog.text
    assert model.sample(3, 1).shape == (3, 1, 8, 8)
    # its importance weights hold the codes to the prior its KL trained against (N(0, I)), not to its class means
    with torch.no_grad():
        model.class_means.add_(3.0)  # far from N(0, I): the two priors' weights differ
        x, y = load_dataset(DataConfig(name="digits")).x_test[:6], torch.arange(6) % 3
        qz = model.encode(x, y)
        noise = draw_noise(qz, (2,), generator=torch.Generator().manual_seed(0))
        z = rsample_with(qz, noise)
        direct = model.decode(z.flatten(0, 1), y.repeat(2)).log_prob(x.repeat(2, 1, 1, 1)).view(2, 6) \
            + Normal(0.0, 1.0).log_prob(z).sum(-1) - qz.log_prob(z)
        torch.testing.assert_close(model.log_importance_weights(x, 2, y, noise), direct)
    assert main(["evaluate", str(run), "--iw-samples", "2", "--no-progress", "--out", str(tmp_path / "e.json")]) == 0
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
    # a comparison of it, cut off after its runs were made, continues (its models are checked as saved runs)
    report = tmp_path / "cmp"
    compare_args = ["compare", "--data", "digits", "--model", "test-old-style-class-prior", "--condition", "label",
                    "--latent-dim", "2", "--hidden-dims", "16", "--epochs", "1", "--gmm-components", "2",
                    "--classifier-steps", "20", "--interpolation-pairs", "2", "--no-progress", "--out", str(report)]
    with monkeypatch.context() as before:
        before.setattr(models, "hook_missing_labels", lambda model: None)
        assert main(compare_args) == 0
    assert main([*compare_args, "--resume"]) == 0
    assert main([*compare_args[:-1], str(tmp_path / "cmp-new")]) == 2  # a new comparison of it is refused


def test_a_subclass_hook_without_y_is_refused_only_where_the_models_prior_takes_the_label():
    """The check reads the built model's prior_takes_labels: an hvae subclass whose regularizer_terms predates y
    builds label-conditioned with the N(0, I) top prior (which takes no label), and is refused with a vamp top prior
    (which does)."""
    from vaekit.hvae import HVAE

    class OldHVAE(HVAE):
        def regularizer_terms(self, qz, z):
            return super().regularizer_terms(qz, z)

    register_family("test-old-hvae-terms")(OldHVAE)
    shape = dict(data_shape=(1, 8, 8), latent_dim=2, hidden_dims=(8,), likelihood="bernoulli", network="mlp",
                 condition="label", num_labels=3)
    model = build_model(ModelConfig(family="test-old-hvae-terms", **shape))
    assert not model.prior_takes_labels and torch.isfinite(model(DATA.x_train[:8], DATA.y_train[:8] % 3).loss)
    with pytest.raises(VaekitError, match="its regularizer_terms does not take the labels"):
        build_model(ModelConfig(family="test-old-hvae-terms",
                                options={"test-old-hvae-terms": {"top_prior": "vamp", "top_components": 6}},
                                **shape))
