"""The vamp family (VampPrior): its mixture prior against direct computations, its pseudo-inputs, and a run end to
end."""
from __future__ import annotations

import json
import math

import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal, kl_divergence

import vaekit
from vaekit.config import RunConfig, override
from vaekit.data import load_dataset
from vaekit.distributions import GaussianMixture
from vaekit.models import build_model
from vaekit.runs import resolve_config


def reference_mixture(loc: torch.Tensor, scale: torch.Tensor) -> MixtureSameFamily:
    """torch's own equal-weight mixture of diagonal Gaussians, the direct computation."""
    weights = Categorical(logits=torch.zeros(loc.shape[0], dtype=loc.dtype))
    return MixtureSameFamily(weights, Independent(Normal(loc, scale), 1))


def test_the_mixture_density_and_moments_equal_the_direct_computation(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    loc = torch.randn(37, 5, generator=generator, dtype=torch.float64) * 2
    scale = torch.rand(37, 5, generator=generator, dtype=torch.float64) + 0.1
    z = torch.randn(3, 41, 5, generator=generator, dtype=torch.float64) * 3  # (*S, D), any leading shape
    mixture, reference = GaussianMixture(loc, scale), reference_mixture(loc, scale)
    expected = reference.log_prob(z)
    torch.testing.assert_close(mixture.log_prob(z), expected, rtol=0, atol=1e-10)
    monkeypatch.setattr(GaussianMixture, "BLOCK", 37 * 4)  # blocks of 4 draws: the same numbers
    torch.testing.assert_close(mixture.log_prob(z), expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(mixture.mean, reference.mean)
    torch.testing.assert_close(mixture.variance, reference.variance)
    torch.manual_seed(0)
    draws = mixture.sample((200_000,))
    assert draws.shape == (200_000, 5)
    error = (draws.mean(0) - reference.mean) / (reference.variance / 200_000).sqrt()
    assert error.abs().max() < 4.5  # every dimension's mean within 4.5 standard errors
    torch.testing.assert_close(draws.var(0), reference.variance, rtol=0.03, atol=0)


def model_for(*settings: str):
    cfg = override(RunConfig(), ["data.name=digits", "model.family=vamp", "model.latent_dim=4", *settings])
    dataset = load_dataset(cfg.data)
    cfg = resolve_config(cfg, dataset)
    torch.manual_seed(0)
    return build_model(cfg.model), dataset


def test_one_pseudo_input_equal_to_an_item_gives_the_direct_kl():
    """With one pseudo-input u, p(z) = q(z|u): the Monte Carlo KL of item x averages to the closed-form
    KL(q(z|x) || q(z|u)) of two diagonal Gaussians, and is exactly 0 at every draw for x = u."""
    model, dataset = model_for("model.vamp.components=1")
    model.eval()
    last = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(20)  # spread the items' posteriors, as training would
    x = dataset.x_test[:200].clamp(0.01, 0.99)  # items the sigmoid of finite logits can equal
    with torch.no_grad():
        model.pseudo_inputs.copy_(torch.logit(x[:1]))
        torch.testing.assert_close(model.pseudo(), x[:1])
        qz, prior = model.encode(x), model.prior()
        one = Independent(Normal(prior.loc[0], prior.scale[0]), 1)
        direct = kl_divergence(qz, one)  # (200,)
        draws = qz.sample((4000,))
        estimate = model.kl(qz, draws)  # (4000, 200)
    assert float(estimate[:, 0].abs().max()) < 1e-4  # the item itself: log q(z|x) - log q(z|x)
    mean, stderr = estimate.double().mean(0), estimate.double().std(0) / math.sqrt(4000)
    assert float(direct[1:].min()) > 1e-3  # the other items' posteriors differ from the pseudo-input's
    assert float(((mean - direct) / stderr.clamp_min(1e-6)).abs().max()) < 4.5  # 199 items, each within 4.5 s.e.
    # the training objective's KL is that same estimator at its own draw
    with torch.no_grad():
        torch.manual_seed(1)
        out = model(x)
    assert set(out.terms) == {"recon", "kl"}
    with torch.no_grad():  # the objective's KL: that estimator at the objective's own draw
        torch.manual_seed(1)
        drawn = qz.rsample()
    torch.testing.assert_close(out.terms["kl"], model.kl(qz, drawn))


def test_the_pseudo_inputs_start_at_distinct_training_items_and_stay_in_the_datas_range():
    model, dataset = model_for("model.vamp.components=50")
    torch.manual_seed(3)
    model.init_from_data(dataset.x_train)
    rows = model.pseudo().detach().flatten(1)  # what the encoder sees
    items = dataset.x_train.flatten(1).clamp(0.01, 0.99)  # the items, a hair inside [0, 1]
    matches = ((rows[:, None, :] - items[None, :, :]).abs() < 1e-5).all(-1)  # (50, N)
    assert bool(matches.any(1).all())  # each one a training item
    assert len({int(i) for i in matches.float().argmax(1)}) == 50  # fifty different ones
    with torch.no_grad():
        model.pseudo_inputs.mul_(100)  # pushed far by training
    seen = model.pseudo().detach()
    assert float(seen.min()) >= 0 and float(seen.max()) <= 1  # the encoder sees data's range


def test_every_pixel_of_the_pseudo_inputs_learns_on_binary_data():
    """Started at binary items (all 0s and 1s), the pseudo-inputs still move everywhere."""
    model, dataset = model_for("model.vamp.components=20")
    x = (dataset.x_train > 0.5).float()
    torch.manual_seed(4)
    model.init_from_data(x)
    before = model.pseudo_inputs.detach().clone()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for start in range(0, 640, 64):
        optimizer.zero_grad()
        model(x[start : start + 64]).loss.backward()
        optimizer.step()
    moved = (model.pseudo_inputs.detach() != before).float().mean()
    assert float(moved) > 0.99


def test_a_vamp_run_trains_samples_evaluates_and_loads(tmp_path):
    from vaekit.cli import main

    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--model", "vamp", "--vamp-components", "40", "--latent-dim", "4",
                 "--epochs", "3", "--no-progress", "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["vamp"] == {"components": 40}
    model = vaekit.load(run)
    assert model.family == "vamp" and model.pseudo_inputs.shape == (40, 1, 8, 8)
    # training moved the pseudo-inputs away from the items they started at
    dataset = load_dataset(vaekit.checkpoint.load_config(run).data)
    rows = model.pseudo_inputs.detach().flatten(1)
    assert not bool((rows[:, None, :] == dataset.x_train.flatten(1)[None]).all(-1).any())
    assert main(["sample", str(run), "--n", "8", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0
    assert main(["evaluate", str(run), "--iw-samples", "20", "--no-progress", "--out", str(tmp_path / "e.json")]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert math.isfinite(result["nll"]) and result["nll"] <= -result["elbo"] + 1e-6
    assert main(["train", "--data", "digits", "--model", "vamp", "--condition", "label", "--out",
                 str(tmp_path / "bad")]) == 2
    assert main(["train", "--data", "digits", "--model", "vamp", "--vamp-components", "0", "--out",
                 str(tmp_path / "bad")]) == 2


def test_an_evaluation_builds_the_prior_once_with_the_same_numbers(monkeypatch):
    """The VampPrior encoded its pseudo-inputs for every pass of the importance sampler (a conv model's evaluation
    took a fifth longer); it is built once per evaluation, and the numbers are those of a prior built in every pass.
    Held for the evaluating thread only: another thread, a copy or a pickle of the model builds its own (a first
    version set it on the model, where a deep copy kept it for good and pickling failed)."""
    import copy
    import io
    import threading

    from vaekit import metrics, models
    from vaekit.vamp import VampPrior

    model, dataset = model_for()
    model.eval()
    x = dataset.x_test[:20]
    built = []
    prior = VampPrior.prior
    monkeypatch.setattr(VampPrior, "prior", lambda self: built.append(1) or prior(self))
    once = metrics.sampled_bounds(model, x, 30, seed=1, max_rows=60)  # 10 passes
    assert len(built) == 1
    with models.held_prior(model):
        twin = copy.deepcopy(model)
        torch.save(model, io.BytesIO())  # picklable as ever
        models._prior_of(twin)
        elsewhere = threading.Thread(target=models._prior_of, args=(model,))
        elsewhere.start()
        elsewhere.join()
        models._prior_of(model)  # this thread's: held
    assert len(built) == 4  # held once, then the copy's and the other thread's own
    monkeypatch.setattr(VampPrior, "fixed_prior", False)  # a prior that may read its batch: built in every pass
    every = metrics.sampled_bounds(model, x, 30, seed=1, max_rows=60)
    assert len(built) == 14
    torch.testing.assert_close(once.log_likelihood, every.log_likelihood, rtol=0, atol=1e-6)
