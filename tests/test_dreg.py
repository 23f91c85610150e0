"""The doubly reparameterised gradient (DReG, Tucker et al. 2019) of the K-sample bound, for the iwae family and the
two-layer model: the same loss value and generative-model gradient as the bound's own at the same draws, the same
expected gradient for q's weights (paired draws: t tests along fixed directions, and weight by weight), and at the
exact posterior an encoder gradient of zero at every draw, where the bound's own is not; and DReG's gradient still
under --compile and bfloat16 autocast, and in two processes."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from torch import nn

import vaekit
from vaekit.config import RunConfig, override
from vaekit.data import load_dataset
from vaekit.models import build_model
from vaekit.runs import resolve_config

CASES = {  # name -> settings: the iwae family, the two-layer model both ways, and with a VampPrior on its top layer
    "iwae": ["model.family=iwae"],
    "hvae bottom-up": ["model.family=hvae", "model.hvae.k=5"],
    "hvae top-down": ["model.family=hvae", "model.hvae.k=5", "model.hvae.inference=top-down"],
    "hvae vamp top": ["model.family=hvae", "model.hvae.k=5", "model.hvae.top_prior=vamp",
                      "model.hvae.top_components=4"],
}


def model_for(case: str, gradient: str):
    family = CASES[case][0].split("=")[1]
    shape = ["model.hvae.top_dim=2", "model.hvae.top_hidden=8"] if family == "hvae" else []
    cfg = override(RunConfig(), ["data.name=digits", "model.network=mlp", "model.hidden_dims=16", "model.latent_dim=3",
                                 *CASES[case], *shape, f"model.{family}.gradient={gradient}"])
    dataset = load_dataset(cfg.data)
    cfg = resolve_config(cfg, dataset)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    model.init_from_data(dataset.x_train)
    return model, dataset


def pair(case: str):
    """The same model twice: the bound's own gradient and DReG."""
    standard, dataset = model_for(case, "standard")
    dreg, _ = model_for(case, "dreg")
    dreg.load_state_dict(standard.state_dict())
    return standard, dreg, dataset


def gradients(model, x: torch.Tensor, seed: int, kl_scale: float = 1.0) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the draws
    loss = model(x, kl_scale=kl_scale).loss
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() if p.grad is not None else torch.zeros_like(p)
                         for n, p in model.named_parameters()}


def generative(name: str, case: str) -> bool:
    """Parameters of p(x, z) only, which q's draws do not depend on: DReG leaves their gradient as it is."""
    if name.startswith(("decoder", "pseudo_inputs")):  # a vamp top prior's pseudo-inputs reach only log p(z2)
        return True
    return name.startswith("down") and case != "hvae top-down"  # top-down q(z1|z2, x) uses p(z1|z2)


@pytest.mark.parametrize("kl_scale", [1.0, 0.3])
@pytest.mark.parametrize("case", CASES)
def test_dreg_keeps_the_bound_and_the_generative_models_gradient(case, kl_scale):
    standard, dreg, dataset = pair(case)
    x = dataset.x_train[:64]
    loss_s, grad_s = gradients(standard, x, seed=1, kl_scale=kl_scale)
    loss_d, grad_d = gradients(dreg, x, seed=1, kl_scale=kl_scale)
    assert loss_d == pytest.approx(loss_s, rel=1e-6)
    names = [n for n in grad_s if generative(n, case)]
    assert any(n.startswith("decoder") for n in names)
    for name in names:
        torch.testing.assert_close(grad_d[name], grad_s[name], rtol=0, atol=0, msg=name)
    encoder = [n for n in grad_s if n.startswith("encoder")]
    assert any(not torch.allclose(grad_d[n], grad_s[n]) for n in encoder)  # it does change the encoder's


@pytest.mark.parametrize("kl_scale", [1.0, 0.3])
@pytest.mark.parametrize("case", CASES)
def test_dreg_has_the_expected_gradient_of_the_bound(case, kl_scale):
    """R = 40 rounds of paired draws (the same noise for both), each round's gradient the mean over 512 copies of each
    of 4 items; the difference of the two gradients, for each group of q's weights (the encoder, q(z2|.), and for
    top-down inference p(z1|z2), which q's merge uses):
    - along 5 fixed random directions, a paired t test (R - 1 degrees of freedom) per direction: |t| < 4.5 (at most
      15 tests a case, each false alarm at odds of 6e-5);
    - weight by weight, the mean of the squared t statistics, (R-1)/(R-3) on average with no bias, held below 1.6
      times that. The weights' gradients are correlated, so its spread is not known in advance: 0.4-1.2 times here.
    Weighting the draws by w_k in place of w_k^2 (biased, Tucker et al. 2019, section 4) fails both by far (mean
    squared t 2,700-8,600 for the encoder, |t| along a direction up to 190)."""
    standard, dreg, dataset = pair(case)
    x = dataset.x_train[:4].repeat(512, *(1,) * (dataset.x_train.dim() - 1))
    rounds = 40
    names = [n for n, _ in standard.named_parameters()]
    groups = [g for g in ("encoder", "up", "down") if any(n.startswith(g + ".") for n in names)]
    groups = [g for g in groups if g != "down" or case == "hvae top-down"]
    diffs: dict[str, list[torch.Tensor]] = {g: [] for g in groups}
    for r in range(rounds):
        _, grad_s = gradients(standard, x, seed=100 + r, kl_scale=kl_scale)
        _, grad_d = gradients(dreg, x, seed=100 + r, kl_scale=kl_scale)
        for g in groups:
            diffs[g].append(torch.cat([(grad_d[n] - grad_s[n]).flatten() for n in grad_s if n.startswith(g + ".")]))
    mean_t2 = (rounds - 1) / (rounds - 3)
    directions = torch.Generator().manual_seed(0)
    checked = 0
    for g in groups:
        d = torch.stack(diffs[g]).double()
        mean, se = d.mean(0), d.std(0) / math.sqrt(rounds)
        t2 = (mean[se > 0] / se[se > 0]).square()  # a weight whose gradient no draw moved (a dead unit) agrees
        assert float(t2.mean()) < 1.6 * mean_t2, (g, float(t2.mean()))
        u = torch.randn(d.shape[1], 5, generator=directions, dtype=torch.float64)
        along = d @ u  # (R, 5)
        t = along.mean(0) / (along.std(0) / math.sqrt(rounds))
        assert float(t.abs().max()) < 4.5, (g, t.tolist())
        checked += 1
    assert checked == (1 if case == "iwae" else 3 if case == "hvae top-down" else 2)


def exact_posterior(model) -> None:
    """p(x|z) not depending on z (the decoder's first layer zeroed) and q(z|x) = p(z) = N(0, I) (the encoder's last
    layer and the top layer's networks zeroed): q is then the exact posterior p(z|x) = p(z)."""
    with torch.no_grad():
        first = next(m for m in model.decoder.modules() if isinstance(m, nn.Linear))
        first.weight.zero_()
        last = [m for m in model.encoder.modules() if isinstance(m, nn.Linear)][-1]
        last.weight.zero_()
        last.bias.zero_()
        for net in (getattr(model, "up", None), getattr(model, "down", None)):
            if net is not None:
                net[-1].weight.zero_()
                net[-1].bias.zero_()


@pytest.mark.parametrize("kl_scale", [1.0, 0.3])
@pytest.mark.parametrize("case", ["iwae", "hvae bottom-up"])
def test_at_the_exact_posterior_the_dreg_encoder_gradient_is_zero_at_every_draw(case, kl_scale):
    """Every log weight is then log p(x), whatever the draw, so the path gradient vanishes, and DReG has no
    score-function term: zero. The bound's own gradient keeps its score-function term, which is not zero at a draw."""
    standard, dreg, dataset = pair(case)
    for model in (standard, dreg):
        exact_posterior(model)
    x = dataset.x_train[:64]
    _, grad_s = gradients(standard, x, seed=3, kl_scale=kl_scale)
    _, grad_d = gradients(dreg, x, seed=3, kl_scale=kl_scale)
    inference = [n for n in grad_d if n.startswith(("encoder", "up"))]
    for name in inference:
        assert float(grad_d[name].abs().max()) < 1e-6, name
    assert max(float(grad_s[n].abs().max()) for n in inference) > 1e-3


def test_dreg_trains_from_the_cli_and_the_elbo_refuses_it(tmp_path, capsys):
    from vaekit.cli import main

    base = ["train", "--data", "digits", "--network", "mlp", "--hidden-dims", "32", "--latent-dim", "4", "--epochs",
            "1", "--no-progress"]
    assert main([*base, "--model", "iwae", "--iwae-gradient", "dreg", "--out", str(tmp_path / "iwae")]) == 0
    assert main([*base, "--model", "hvae", "--hvae-k", "3", "--hvae-gradient", "dreg", "--hvae-top-dim", "2",
                 "--out", str(tmp_path / "hvae")]) == 0
    for run in ("iwae", "hvae"):
        model = vaekit.load(tmp_path / run)
        assert model.settings.gradient == "dreg"
        assert model.settings.k > 1
    capsys.readouterr()
    assert main([*base, "--model", "hvae", "--hvae-gradient", "dreg", "--out", str(tmp_path / "elbo")]) == 2
    err = capsys.readouterr().err
    assert "--hvae-k" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "elbo" / "model.safetensors").exists()
    # the hvae-iwae recipe sets dreg itself: its errors sent a user from one flag to the other and back
    recipe = ["train", "--recipe", "hvae-iwae", "--data", "digits", "--epochs", "1", "--no-progress"]
    assert main([*recipe, "--free-bits", "0.5", "--out", str(tmp_path / "fb")]) == 2
    assert "--hvae-gradient standard" in capsys.readouterr().err
    assert main([*recipe, "--free-bits", "0.5", "--hvae-k", "1", "--out", str(tmp_path / "fb")]) == 2
    assert "pass --hvae-gradient standard" in capsys.readouterr().err
    assert main([*recipe, "--free-bits", "0.5", "--hvae-k", "1", "--hvae-gradient", "standard",
                 "--out", str(tmp_path / "fb")]) == 0


def test_iwae_runs_from_before_the_gradient_setting_keep_their_identity_and_resume(tmp_path):
    """Their config.json never held `gradient`: at its default it is left out of the identity; set, it is part of it."""
    from conftest import identity_written_before
    from vaekit import checkpoint
    from vaekit.cli import main

    base = ["train", "--data", "digits", "--model", "iwae", "--network", "mlp", "--hidden-dims", "16", "--latent-dim",
            "3", "--epochs", "1", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "standard")]) == 0
    run = tmp_path / "standard"
    assert identity_written_before(run, "iwae", {"gradient": "standard"}) in checkpoint.identities(run)
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
    assert main([*base, "--iwae-gradient", "dreg", "--out", str(tmp_path / "dreg")]) == 0
    assert checkpoint.identity_sha256(tmp_path / "dreg") != checkpoint.identity_sha256(tmp_path / "standard")


def test_the_hvae_iwae_recipe_is_the_hvae_recipe_on_the_dreg_bound():
    """What the README's 30-minute figure ran (`--recipe hvae --hvae-k 5 --hvae-gradient dreg`) is the shipped recipe."""
    from vaekit.cli.common import recipe_config

    flags = override(recipe_config("hvae"), ["model.hvae.k=5", "model.hvae.gradient=dreg"])
    assert recipe_config("hvae-iwae").to_dict() == flags.to_dict()


def encoder_differences(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest relative difference of two gradients of q's weights (the encoder and q(z2|z1))."""
    names = [n for n in a if n.startswith(("encoder", "up"))]
    return max(float((a[n] - b[n]).norm() / b[n].norm().clamp_min(1e-12)) for n in names)


@pytest.mark.parametrize("case", ["iwae", "hvae bottom-up", "hvae top-down"])
def test_dreg_survives_torch_compile(case):
    """`--compile` compiles the model's forward, where DReG puts its hook on the draws. AOT autograd traces the
    backward graph ahead of time (here with inductor's decompositions and partition, without its code generation,
    which takes 10-20 s a case on 2 cores and gave the same); the gradient is DReG's, not the bound's own, at the same
    draws. (The plain aot_eager backend fails on the two-layer model, either gradient, inside torch: a view of a
    non-contiguous tensor.)"""
    standard, dreg, dataset = pair(case)
    x = dataset.x_train[:64]
    _, grad_s = gradients(standard, x, seed=5)
    _, grad_d = gradients(dreg, x, seed=5)
    torch._dynamo.reset()
    _, grad_c = gradients(torch.compile(dreg, backend="aot_eager_decomp_partition"), x, seed=5)
    grad_c = {n.removeprefix("_orig_mod."): g for n, g in grad_c.items()}
    assert encoder_differences(grad_c, grad_d) < 1e-5
    assert encoder_differences(grad_s, grad_d) > 0.05  # what a lost hook would give


@pytest.mark.parametrize("case", ["iwae", "hvae bottom-up"])
def test_dreg_under_bfloat16_autocast(case):
    """`--precision bf16`: the matrix products in bfloat16, the networks' outputs cast back to float32, so the weights
    w_k and the hook's reweighing are float32. At the same draws the generative model's gradient is still exactly the
    bound's own, and q's gradient is fp32 DReG's to bfloat16's precision, much nearer it than the bound's own."""
    standard, dreg, dataset = pair(case)
    x = dataset.x_train[:64]
    _, grad_d32 = gradients(dreg, x, seed=7)
    _, grad_s32 = gradients(standard, x, seed=7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, grad_s = gradients(standard, x, seed=7)
        _, grad_d = gradients(dreg, x, seed=7)
    for name in (n for n in grad_s if generative(n, case)):
        torch.testing.assert_close(grad_d[name], grad_s[name], rtol=0, atol=0, msg=name)
    assert encoder_differences(grad_d, grad_d32) < 0.1 < encoder_differences(grad_s32, grad_d32)


def test_dreg_trains_in_two_processes_as_in_one(tmp_path):
    """torchrun with DReG: each process's hook reweighs its own draws before the gradients are averaged. Each process
    draws its own noise, so the weights differ from one process's; the learning does not."""
    from vaekit.cli import main

    flags = ["train", "--data", "mnist-10k", "--limit", "1280", "--network", "mlp", "--hidden-dims", "64",
             "--latent-dim", "4", "--batch-size", "64", "--no-progress", "--model", "iwae", "--iwae-gradient", "dreg",
             "--lr", "3e-3", "--epochs", "3"]
    assert main([*flags, "--out", str(tmp_path / "one")]) == 0
    result = subprocess.run([sys.executable, "-m", "vaekit", *flags, "--out", str(tmp_path / "two"), "--nproc", "2"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {name: [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
            for name in ("one", "two")}
    assert rows["two"][-1]["val_loss"] == pytest.approx(rows["one"][-1]["val_loss"], rel=0.03)
    assert rows["two"][-1]["val_loss"] < 0.8 * rows["two"][0]["train_loss"]  # it learned past its first epoch's mean
    assert vaekit.load(tmp_path / "two").settings.gradient == "dreg"
