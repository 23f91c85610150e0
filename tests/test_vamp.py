"""The vamp family (VampPrior): its mixture prior against direct computations, its pseudo-inputs, and a run end to
end."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal, kl_divergence

import vaekit
from vaekit.config import RunConfig, override
from vaekit.data import load_dataset
from vaekit.distributions import ClassMixture, GaussianMixture
from vaekit.errors import VaekitError
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
    assert main(["train", "--data", "digits", "--model", "vamp", "--condition", "label", "--vamp-components", "9",
                 "--out", str(tmp_path / "bad")]) == 2  # fewer pseudo-inputs than digits' 10 classes
    assert not (tmp_path / "bad").exists()
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


def test_the_class_mixture_equals_the_direct_computation_for_each_label(monkeypatch):
    """p(z | y): for each label, torch's own equal-weight mixture of the components of that class alone; density,
    moments and draws, in blocks as at once."""
    generator = torch.Generator().manual_seed(0)
    loc = torch.randn(30, 4, generator=generator, dtype=torch.float64) * 3
    scale = torch.rand(30, 4, generator=generator, dtype=torch.float64) + 0.2
    classes = torch.arange(30) % 3
    classes[:7] = 2  # classes of unequal sizes: 4, 9 and 17 components
    y = torch.tensor([0, 2, 1, 2, 0])
    given = ClassMixture(GaussianMixture(loc, scale), classes, y)
    assert given.batch_shape == (5,) and given.event_shape == (4,)
    z = torch.randn(6, 5, 4, generator=generator, dtype=torch.float64) * 3  # (*S, n, D)
    references = [reference_mixture(loc[classes == int(label)], scale[classes == int(label)]) for label in y]
    expected = torch.stack([reference.log_prob(z[:, b]) for b, reference in enumerate(references)], -1)
    torch.testing.assert_close(given.log_prob(z), expected, rtol=0, atol=1e-10)
    monkeypatch.setattr(GaussianMixture, "BLOCK", 30 * 5 * 2)  # two draws of all five labels at a time
    torch.testing.assert_close(given.log_prob(z), expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(given.log_prob(z[0, :1].expand(5, 4)), expected[0, :1].new_tensor(
        [references[b].log_prob(z[0, 0]) for b in range(5)]), rtol=0, atol=1e-10)  # one point, every label
    torch.testing.assert_close(given.mean, torch.stack([r.mean for r in references]))
    torch.testing.assert_close(given.variance, torch.stack([r.variance for r in references]))
    torch.manual_seed(0)
    draws = given.sample((100_000,))
    assert draws.shape == (100_000, 5, 4)
    error = (draws.mean(0) - given.mean) / (given.variance / 100_000).sqrt()
    assert error.abs().max() < 4.5  # each label's draws centred on its own class's mixture
    torch.testing.assert_close(draws.var(0), given.variance, rtol=0.03, atol=0)
    with pytest.raises(VaekitError, match="no mixture component has the label 3"):
        ClassMixture(GaussianMixture(loc, scale), classes, torch.tensor([0, 3]))


def conditioned_model(components: int):
    """A label-conditioned vamp on digits (10 classes): pseudo-input m has class m mod 10."""
    return model_for(f"model.vamp.components={components}", "model.condition=label")


def test_given_the_label_one_pseudo_input_per_class_equal_to_an_item_gives_the_direct_kl():
    """Label-conditioned, with one pseudo-input per class, p(z | y) = q(z | u_y, y): the objective's KL of an item
    of class y is log q(z|x, y) - log q(z|u_y, y) at its draw (0 for the item that is u_y); the importance weights
    and the evaluator hold it to the same prior, and the draws for a label come from its own class's component."""
    model, dataset = conditioned_model(10)
    model.eval()
    assert model.prior_takes_labels and model.pseudo_labels.tolist() == list(range(10))
    last = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(20)  # spread the items' posteriors, as training would
    x, y = dataset.x_test[:300].clamp(0.01, 0.99), dataset.y_test[:300]
    firsts = [int((y == k).nonzero()[0]) for k in range(10)]  # each class's first item is its pseudo-input
    with torch.no_grad():
        model.pseudo_inputs.copy_(torch.logit(x[firsts]))
        qz = model.encode(x, y)
        own = Independent(Normal(qz.base_dist.loc[firsts][y], qz.base_dist.scale[firsts][y]), 1)  # q(z|u_y, y)
        torch.manual_seed(1)
        out = model(x, y)
        torch.manual_seed(1)
        drawn = qz.rsample()
    direct = qz.log_prob(drawn) - own.log_prob(drawn)
    torch.testing.assert_close(out.terms["kl"], direct, rtol=0, atol=1e-4)
    assert float(out.terms["kl"][firsts].abs().max()) < 1e-4  # the items that are the pseudo-inputs
    other = torch.ones(300, dtype=torch.bool)
    other[firsts] = False
    assert float(kl_divergence(qz, own)[other].min()) > 1e-3  # the rest differ from their class's pseudo-input
    # the importance weights: log p(x|z) + log q(z|u_y, y) - log q(z|x, y) at given noise
    noise = torch.randn(3, 300, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        z = qz.base_dist.loc + qz.base_dist.scale * noise
        log_px = model.decode(z.flatten(0, 1), y.repeat(3)).log_prob(x.repeat(3, 1, 1, 1)).view(3, 300)
        weights = model.log_importance_weights(x, 3, y, noise)
    torch.testing.assert_close(weights, log_px + own.log_prob(z) - qz.log_prob(z), rtol=0, atol=1e-4)
    result = vaekit.metrics.evaluate(model, x, iw_samples=4, y=y)
    assert result.kl_estimator.startswith("monte carlo") and math.isfinite(result.nll)
    # the draws for a label: its class's one component, q(z|u_k, k)
    draws = model.sample_prior(20_000, torch.Generator().manual_seed(0), 7)
    component = qz.base_dist
    torch.testing.assert_close(draws.mean(0), component.loc[firsts[7]], rtol=0,
                               atol=float(4.5 * component.scale[firsts[7]].max() / math.sqrt(20_000)))
    torch.testing.assert_close(draws.std(0), component.scale[firsts[7]], rtol=0.03, atol=0)


def test_each_pseudo_input_starts_at_a_training_item_of_its_own_class():
    model, dataset = conditioned_model(50)
    torch.manual_seed(3)
    model.init_from_data(dataset.x_train, dataset.y_train)
    rows = model.pseudo().detach().flatten(1)
    items = dataset.x_train.flatten(1).clamp(0.01, 0.99)
    matches = ((rows[:, None, :] - items[None, :, :]).abs() < 1e-5).all(-1)  # (50, N)
    assert bool(matches.any(1).all())
    assert len({int(i) for i in matches.float().argmax(1)}) == 50  # fifty different items
    assert bool((matches.float() @ torch.nn.functional.one_hot(dataset.y_train, 10).float()  # the class of each
                 ).argmax(1).eq(model.pseudo_labels).all())
    assert torch.bincount(model.pseudo_labels).tolist() == [5] * 10  # every class its share


def test_a_label_conditioned_vamp_run_trains_samples_each_class_and_evaluates(tmp_path):
    """From the command line: train, sample given a label (from that class's pseudo-inputs), evaluate with the
    labels, load; on digits with the default networks."""
    from vaekit.cli import main

    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--model", "vamp", "--condition", "label", "--vamp-components", "50",
                 "--latent-dim", "4", "--epochs", "3", "--no-progress", "--out", str(run)]) == 0
    model = vaekit.load(run)
    assert model.prior_takes_labels and torch.bincount(model.pseudo_labels).tolist() == [5] * 10
    assert main(["sample", str(run), "--n", "8", "--label", "3", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0
    assert main(["evaluate", str(run), "--iw-samples", "20", "--no-progress", "--out", str(tmp_path / "e.json")]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["given_labels"] and math.isfinite(result["nll"]) and result["nll"] <= -result["elbo"] + 1e-6
    # the draws for a class are the mixture of its own components, built here from the prior's components of class 3
    with torch.no_grad():
        every = model.prior()
        three = model.pseudo_labels == 3
        own = reference_mixture(every.loc[three].double(), every.scale[three].double())
    z = model.sample_prior(20_000, torch.Generator().manual_seed(0), 3).double()
    error = (z.mean(0) - own.mean) / (own.variance / 20_000).sqrt()
    assert float(error.abs().max()) < 4.5
    torch.testing.assert_close(z.var(0), own.variance, rtol=0.05, atol=0)
    samples = tmp_path / "s.npy"
    assert main(["sample", str(run), "--n", "2000", "--label", "3", "--out", str(samples)]) == 0
    drawn = torch.from_numpy(np.load(samples)).flatten(1).mean(0)
    with torch.no_grad():  # the mean decoded draw of class 3's components, and of every class's
        of_three = model.decode(own.sample((2000,)).float(), 3).mean.flatten(1).mean(0)
        of_all = model.decode(every.sample((2000,)), 3).mean.flatten(1).mean(0)
    assert float((drawn - of_three).norm()) < 0.5 * float((drawn - of_all).norm())
