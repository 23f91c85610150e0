"""The vqvae family: known answers for the quantiser (an exact codebook, straight-through gradients, the EMA update,
restarts), the perplexity, the autoregressive prior over codes (causal, and learning a known distribution), and
the two stages from the command line to sampling and evaluation."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

import vaekit
from vaekit.cli import main
from vaekit.config import ModelConfig
from vaekit.distributions import perplexity
from vaekit.models import build_model
from vaekit.vqvae import CodePrior, GatedCodePrior, GridDecoder, GridEncoder

SHAPE = (1, 8, 8)


def model(**settings) -> vaekit.Model:
    options = {"vqvae": {"codebook": 64, **settings}}
    cfg = ModelConfig(family="vqvae", latent_dim=3, network="conv", hidden_dims=(16,), conv_channels=(4, 8),
                      likelihood="bernoulli", data_shape=SHAPE, options=options)
    return build_model(cfg)


def images(n: int, seed: int = 0) -> torch.Tensor:
    return (torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed)) > 0.5).float()


def test_the_grid_is_spatial_for_images_and_a_row_otherwise():
    m = model()
    assert isinstance(m.encoder, GridEncoder) and isinstance(m.decoder, GridDecoder)
    assert m.grid == (2, 2) and m.code_shape == (2 * 2 * 3,)
    assert m.discrete_codes(images(5)).shape == (5, 2, 2)
    mlp = build_model(ModelConfig(family="vqvae", latent_dim=3, network="mlp", hidden_dims=(16,), likelihood="bernoulli",
                                  data_shape=SHAPE, options={"vqvae": {"positions": 5}}))
    assert mlp.grid == (1, 5) and mlp.code_shape == (15,)


def test_a_codebook_holding_the_exact_codes_reconstructs_without_error_and_commits_nothing():
    torch.manual_seed(0)
    m = model(codebook=16, restart=False).eval()
    x = images(4)
    vectors = m._vectors(m.encoder_params(x))  # (4, 4 positions, 3)
    with torch.no_grad():
        m.codebook.copy_(vectors.reshape(16, 3))
    out = m(x)
    assert torch.equal(out.terms["commitment"], torch.zeros(4))
    assert torch.equal(m.discrete_codes(x).flatten(1), torch.arange(16).view(4, 4))
    # quantising lost nothing: the quantised grid is the encoder's output, bit for bit ...
    assert torch.equal(m.lookup(m.discrete_codes(x)), vectors.flatten(1))
    # ... so the decoded codes are the decoded encoder outputs, up to float32 rounding (the grid reaches the decoder
    # in another memory layout, and the convolution may then sum in another order: 1 ulp apart on an AVX2 CPU)
    unquantised = m.likelihood(m.decoder(m.encoder(x))).mean
    torch.testing.assert_close(m.reconstruct(x), unquantised)
    torch.testing.assert_close(out.terms["recon"], m.likelihood.nll(m.decoder(m.encoder(x)), x))


def test_gradients_pass_straight_through_the_quantiser_plus_the_commitment_pull():
    torch.manual_seed(0)
    m = model(restart=False)
    x = images(6)
    captured = {}

    def keep(name):
        def hook(module, inputs, output):
            tensor = inputs[0] if name == "decoder_in" else output
            tensor.retain_grad()
            captured[name] = tensor
        return hook

    m.encoder.register_forward_hook(keep("encoder_out"))
    m.decoder.register_forward_hook(keep("decoder_in"))
    out = m(x)
    out.loss.backward()
    encoder_out, decoder_in = captured["encoder_out"], captured["decoder_in"]
    quantised = m.codebook[m.discrete_codes(x)].permute(0, 3, 1, 2)  # (B, D, H, W)
    torch.testing.assert_close(decoder_in.detach(), quantised.detach())  # the decoder reads the codes
    pull = 2 * 0.25 * (encoder_out.detach() - quantised.detach()) / 6  # commitment 0.25, batch mean
    torch.testing.assert_close(encoder_out.grad, decoder_in.grad + pull)
    # the codebook loss moves each used code towards the encoder outputs it received: 2 (e_k - sum z) / B
    codes = m.discrete_codes(x).reshape(-1)
    vectors = encoder_out.detach().permute(0, 2, 3, 1).reshape(-1, 3)
    expected = torch.zeros_like(m.codebook)
    expected.index_add_(0, codes, 2 * (m.codebook.detach()[codes] - vectors) / 6)
    torch.testing.assert_close(m.codebook.grad, expected)


def test_the_ema_update_is_the_papers_moving_average():
    torch.manual_seed(0)
    m = model(ema=True, decay=0.9, restart=False, codebook=8).train()
    x = images(10)
    book, count, total = m.codebook.clone(), m.ema_count.clone(), m.ema_sum.clone()
    with torch.no_grad():
        vectors = m._vectors(m.encoder_params(x)).reshape(-1, 3)
    codes = m.nearest(vectors)
    m(x)
    n = torch.bincount(codes, minlength=8).float()
    sums = torch.zeros(8, 3).index_add_(0, codes, vectors)
    count = 0.9 * count + 0.1 * n
    total = 0.9 * total + 0.1 * sums
    smoothed = (count + 1e-5) / (count.sum() + 8e-5) * count.sum()
    torch.testing.assert_close(m.ema_count, count)
    torch.testing.assert_close(m.codebook, total / smoothed[:, None])
    assert not torch.equal(m.codebook, book)
    assert not any(p is m.codebook for p in m.parameters())  # EMA codes are not learned by gradients


def test_codes_unused_for_long_restart_at_encoder_outputs_and_used_ones_stay():
    torch.manual_seed(0)
    m = model(codebook=8).train()
    x = images(10)
    with torch.no_grad():
        vectors = m._vectors(m.encoder_params(x)).reshape(-1, 3)
        m.codebook.copy_(torch.cat([vectors.mean(0, keepdim=True), torch.full((7, 3), 1e3)]))  # one code near all
        m.usage.fill_(0.5)  # every code under the threshold (1 use per step), the used one too
    used = m.codebook[0].clone()
    m(x)
    assert torch.equal(m.codebook[0], used)  # used by every position this step, though its decayed use is low
    for row in m.codebook[1:]:  # each far code now sits on one of this batch's encoder outputs
        assert (row[None] - vectors).abs().amax(1).min() < 1e-6
    assert torch.equal(m.usage[1:], torch.ones(7))


def test_a_codes_decayed_use_is_the_moving_average_of_its_uses_per_step():
    """usage <- decay usage + (1 - decay) n_k, n_k the positions that took code k in the step; a code below one use
    per step that no position took restarts, counted as used once."""
    torch.manual_seed(0)
    m = model(codebook=8, decay=0.99).train()
    x = images(10)
    with torch.no_grad():
        vectors = m._vectors(m.encoder_params(x)).reshape(-1, 3)
    codes = m.nearest(vectors)
    before = m.usage.clone()
    m(x)
    n = torch.bincount(codes, minlength=8).float()
    decayed = 0.99 * before + 0.01 * n
    restarted = (decayed < 1) & (n == 0)
    assert restarted.any() and (n > 0).any()
    torch.testing.assert_close(m.usage, torch.where(restarted, torch.ones(8), decayed))


def test_beta_and_the_warm_up_weigh_the_codebook_and_commitment_terms_together():
    """loss = recon + beta x warm-up x (commitment x 0.25 + the codebook loss, of the same value; EMA: no codebook
    loss)."""
    for ema, weight in ((False, 1.25), (True, 0.25)):
        torch.manual_seed(0)
        m = model(ema=ema)
        m = build_model(replace(m.config, beta=2.0)).train()
        out = m(images(10), kl_scale=0.25)
        expected = out.terms["recon"] + 2.0 * 0.25 * weight * out.terms["commitment"]
        torch.testing.assert_close(out.loss, expected.mean())


def test_a_code_without_uses_keeps_a_finite_place_under_the_ema_update():
    """Laplace smoothing of the counts: a code whose decayed count has reached 0 is not divided by 0."""
    torch.manual_seed(0)
    m = model(ema=True, restart=False, codebook=8).train()
    with torch.no_grad():
        m.codebook[3] = 1e3  # taken by no position
        m.ema_count[3], m.ema_sum[3] = 0.0, 0.0
    m(images(10))
    assert torch.isfinite(m.codebook).all()


def test_perplexity_is_the_exponential_of_the_usage_entropy():
    assert float(perplexity(torch.tensor([5.0, 5.0, 5.0, 5.0, 0.0]))) == pytest.approx(4.0)
    assert float(perplexity(torch.tensor([0.0, 7.0, 0.0]))) == pytest.approx(1.0)
    p = torch.tensor([0.5, 0.25, 0.25])
    assert float(perplexity(p * 40)) == pytest.approx(math.exp(-(p * p.log()).sum().item()))


def labelled(prior: torch.nn.Module, label: int):
    """The prior given one class, its class biases drawn at random (they start at zero), as a function of codes."""
    for bias in prior.conditions:
        torch.nn.init.normal_(bias.weight)
    return lambda codes: prior(codes, torch.full((codes.shape[0],), label))


@pytest.mark.parametrize("labels", [0, 3])
@pytest.mark.parametrize("network", [CodePrior, GatedCodePrior])
def test_the_prior_over_codes_sees_only_the_codes_before_each_position(network, labels):
    """Also for a prior given a class (its biases the same at every position)."""
    torch.manual_seed(0)
    prior = network(codebook=5, channels=8, layers=3, labels=labels)
    prior = labelled(prior, 2) if labels else prior
    codes = torch.randint(5, (1, 4, 4))
    logits = prior(codes)
    changed_any_earlier = False
    for position in range(16):
        i, j = divmod(position, 4)
        later = codes.clone().view(-1)
        later[position:] = (later[position:] + 1) % 5  # this position and every one after it
        torch.testing.assert_close(prior(later.view(1, 4, 4))[:, :, i, j], logits[:, :, i, j], rtol=0, atol=0)
        if position:
            earlier = codes.clone().view(-1)
            earlier[position - 1] = (earlier[position - 1] + 1) % 5
            changed_any_earlier |= not torch.equal(prior(earlier.view(1, 4, 4))[:, :, i, j], logits[:, :, i, j])
    assert changed_any_earlier


@pytest.mark.parametrize("labels", [0, 3])
@pytest.mark.parametrize("network", [CodePrior, GatedCodePrior])
def test_the_rows_above_give_the_same_logits_as_the_whole_grid_so_sampling_leaves_out_the_rows_below(network, labels):
    """The sampler computes row i's logits from rows 0..i alone: they must equal the whole grid's, to float32's
    rounding (a convolution over fewer rows may take another kernel: 3e-8 apart on an Intel Xeon of family 6,
    model 167, bit-equal on others; a row below leaking in would move them by the logits' own size)."""
    torch.manual_seed(0)
    prior = network(codebook=6, channels=8, layers=4, labels=labels)
    call = labelled(prior, 1) if labels else prior
    codes = torch.randint(6, (3, 7, 5))
    with torch.no_grad():
        whole = call(codes)
        for i in range(7):
            torch.testing.assert_close(call(codes[:, : i + 1]), whole[:, :, : i + 1], rtol=1e-5, atol=1e-6)
        # and the sampler draws what one reading the whole grid at every position draws, from the same seed
        y = torch.full((20,), 1) if labels else None
        torch.manual_seed(5)
        drawn = prior.sample(20, (7, 5), torch.device("cpu"), y)
        torch.manual_seed(5)
        expected = torch.zeros(20, 7, 5, dtype=torch.long)
        for i in range(7):
            for j in range(5):
                logits = prior(expected, y)[:, :, i, j]
                expected[:, i, j] = torch.multinomial(torch.softmax(logits.double(), -1), 1).squeeze(1)
    assert torch.equal(drawn, expected)


def earlier_positions_out_of_sight(prior, height: int, width: int) -> int:
    """Pairs (an earlier position, a later one) where changing the earlier code leaves the later logits unchanged."""
    torch.manual_seed(1)
    codes = torch.randint(5, (1, height, width))
    with torch.no_grad():
        logits = prior(codes)
        unseen = 0
        for position in range(height * width):
            changed = codes.clone().view(-1)
            changed[position] = (changed[position] + 1) % 5
            moved = (prior(changed.view(1, height, width)) - logits).abs().amax(1).view(-1)
            assert not moved[: position + 1].any()  # causal
            unseen += int((moved[position + 1:] == 0).sum())
    return unseen


def test_the_gated_prior_sees_every_earlier_position_of_the_recipes_grid_where_masks_leave_a_blind_spot():
    """The vqvae recipe's 7x7 grid at the default depth: the gated PixelCNN's logits at each position depend on every
    earlier code; the masked convolutions' miss some above and to the right (their blind spot)."""
    torch.manual_seed(0)
    layers = vaekit.vqvae.VQVAE.Settings().prior_layers
    assert earlier_positions_out_of_sight(GatedCodePrior(5, 8, layers).double(), 7, 7) == 0
    assert earlier_positions_out_of_sight(GatedCodePrior(5, 8, layers).double(), 1, 8) == 0  # an MLP's row
    assert earlier_positions_out_of_sight(labelled(GatedCodePrior(5, 8, layers, labels=3).double(), 1), 7, 7) == 0
    assert earlier_positions_out_of_sight(CodePrior(5, 8, layers).double(), 7, 7) >= 105  # its blind spot


@pytest.mark.parametrize("network", [CodePrior, GatedCodePrior])
def test_the_prior_learns_a_known_distribution_of_code_grids_and_samples_it(network):
    torch.manual_seed(0)
    a = torch.tensor([[0, 1, 2], [3, 0, 1], [2, 3, 0]])
    b = torch.tensor([[3, 2, 1], [0, 3, 2], [1, 0, 3]])
    grids = torch.stack([a if torch.rand(()) < 0.7 else b for _ in range(1000)])
    prior = network(codebook=4, channels=16, layers=2)
    optimizer = torch.optim.Adam(prior.parameters(), lr=1e-2)
    for _ in range(300):  # on all the grids at every step: to the maximum-likelihood fit, without minibatch noise
        optimizer.zero_grad()
        prior.nll(grids).mean().backward()
        optimizer.step()
    share_a = float((grids == a).all(-1).all(-1).float().mean())
    # all the randomness is in the first code: the entropy of the data's own shares is the best -log p there is
    exact = -(share_a * math.log(share_a) + (1 - share_a) * math.log(1 - share_a))
    with torch.no_grad():
        assert float(prior.nll(grids).mean()) == pytest.approx(exact, abs=0.01)
        assert float(torch.softmax(prior(a[None])[0, :, 0, 0], 0)[0]) == pytest.approx(share_a, abs=0.02)
    samples = prior.sample(2000, (3, 3), torch.device("cpu"))
    is_a, is_b = (samples == a).all(-1).all(-1), (samples == b).all(-1).all(-1)
    assert float((is_a | is_b).float().mean()) > 0.99
    assert float(is_a.float().mean()) == pytest.approx(share_a, abs=0.04)  # 4 standard errors at 2000 draws


@pytest.mark.parametrize("network", [CodePrior, GatedCodePrior])
def test_a_prior_given_the_class_learns_each_class_own_distribution_and_samples_it(network):
    """Two classes with the same two grids in other shares (0.7 / 0.3 and 0.2 / 0.8): trained to the
    maximum-likelihood fit, -log p(codes | y) is the classes' own entropy, the first code's probability each class's
    share, and draws given a class come in its shares; a prior without the label could do no better than the pooled
    shares' entropy, and the label moves it there."""
    torch.manual_seed(0)
    a = torch.tensor([[0, 1, 2], [3, 0, 1], [2, 3, 0]])
    b = torch.tensor([[3, 2, 1], [0, 3, 2], [1, 0, 3]])
    shares = {0: 0.7, 1: 0.2}
    y = torch.arange(1000) % 2
    grids = torch.stack([a if torch.rand(()) < shares[int(label)] else b for label in y])
    prior = network(codebook=4, channels=16, layers=2, labels=2)
    with torch.no_grad():  # the class biases start at zero: the same distribution for either class
        torch.testing.assert_close(prior(a[None], torch.tensor([0])), prior(a[None], torch.tensor([1])))
    optimizer = torch.optim.Adam(prior.parameters(), lr=1e-2)
    for _ in range(300):
        optimizer.zero_grad()
        prior.nll(grids, y).mean().backward()
        optimizer.step()
    entropy = lambda p: -(p * math.log(p) + (1 - p) * math.log(1 - p))  # noqa: E731
    found = {c: float((grids[y == c] == a).all(-1).all(-1).float().mean()) for c in (0, 1)}
    exact = sum(entropy(found[c]) * float((y == c).float().mean()) for c in (0, 1))
    pooled = float((grids == a).all(-1).all(-1).float().mean())
    assert exact < entropy(pooled) - 0.1  # the label tells something here
    with torch.no_grad():
        assert float(prior.nll(grids, y).mean()) == pytest.approx(exact, abs=0.01)
        for c in (0, 1):
            assert float(torch.softmax(prior(a[None], torch.tensor([c]))[0, :, 0, 0], 0)[0]) == pytest.approx(
                found[c], abs=0.02)
    for c in (0, 1):
        samples = prior.sample(2000, (3, 3), torch.device("cpu"), torch.full((2000,), c))
        is_a, is_b = (samples == a).all(-1).all(-1), (samples == b).all(-1).all(-1)
        assert float((is_a | is_b).float().mean()) > 0.99
        assert float(is_a.float().mean()) == pytest.approx(found[c], abs=0.04)  # 4 standard errors at 2000 draws


def test_a_prior_refuses_labels_it_does_not_take_and_wants_those_it_does():
    codes = torch.zeros(2, 3, 3, dtype=torch.long)
    with pytest.raises(vaekit.VaekitError, match="not conditioned on labels: leave them out"):
        GatedCodePrior(4, 8, 1)(codes, torch.tensor([0, 1]))
    with pytest.raises(vaekit.VaekitError, match="conditioned on labels \\(0..2\\): pass the labels"):
        GatedCodePrior(4, 8, 1, labels=3)(codes)
    with pytest.raises(vaekit.VaekitError, match="one label per code grid: got \\(1,\\) for 2 grids"):
        CodePrior(4, 8, 1, labels=3)(codes, torch.tensor([1]))


def test_sampling_waits_for_the_prior_stage():
    m = model().eval()
    with pytest.raises(vaekit.VaekitError, match="vaekit train-prior RUN"):
        m.sample(2)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    command = "import sys; from vaekit.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", command, *args], capture_output=True, text=True, timeout=300)


def test_both_stages_from_the_command_line_then_sample_evaluate_load_and_resume(tmp_path, capsys, caplog):
    run = tmp_path / "vq"
    assert main(["train", "--data", "digits", "--model", "vqvae", "--latent-dim", "4", "--epochs", "2", "--out",
                 str(run), "--no-progress", "--set", "model.vqvae.codebook=32"]) == 0
    capsys.readouterr()
    refused = run_cli("sample", str(run), "--out", str(tmp_path / "s.png"))
    assert refused.returncode == 2 and "vaekit train-prior" in refused.stderr
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert main(["train-prior", str(run), "--epochs", "2", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["stage"] == "prior" and summary["epochs"] == 2 and summary["val_prior_nll"] > 0
    lines = (run / "prior-metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2] and "train_prior_nll" in json.loads(lines[0])
    assert main(["sample", str(run), "--n", "9", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--no-progress"]) == 0  # no bound, so no NLL by default
    result = json.loads(capsys.readouterr().out)
    assert result["nll"] is None and result["iw_samples"] == 0
    assert 1 <= result["codes_used"] <= 32 and 1 <= result["codebook_perplexity"] <= result["codes_used"]
    assert result["terms"]["prior_nll"] == pytest.approx(summary["val_prior_nll"], rel=0.05)
    loaded = vaekit.load(run)
    assert loaded.sample(3, generator=torch.Generator().manual_seed(0)).shape == (3, 1, 8, 8)
    # the same stage from Python: one more epoch, its own metrics file rewritten
    result = vaekit.train_stage(run, "prior", epochs=1, progress=False)
    assert len(result.history) == 1 and result.model.sample(2).shape == (2, 1, 8, 8)
    assert len((run / "prior-metrics.jsonl").read_text().splitlines()) == 1
    loaded = vaekit.load(run)
    # the run's resume state holds the prior too: a resume with nothing to train keeps it whole
    prior = {k: v.clone() for k, v in loaded.prior_net.state_dict().items()}
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
    again = vaekit.load(run)
    assert all(torch.equal(v, prior[k]) for k, v in again.prior_net.state_dict().items())
    assert again.sample(2).shape == (2, 1, 8, 8)
    # training the model further moves its codes: the prior keeps its weights but no longer counts as trained, so
    # sampling (and its evaluation) waits for train-prior, which starts from those weights
    with caplog.at_level("WARNING"):
        assert main(["train", "--resume", str(run), "--epochs", "3", "--no-progress"]) == 0
    assert "no longer fits" in caplog.text
    again = vaekit.load(run)
    assert int(again.prior_net.trained) == 0 and all(
        torch.equal(v, prior[k]) for k, v in again.prior_net.state_dict().items() if k != "trained")
    assert not torch.equal(again.codebook, loaded.codebook) or not all(
        torch.equal(v, w) for v, w in zip(again.encoder.parameters(), loaded.encoder.parameters()))
    refused = run_cli("sample", str(run), "--out", str(tmp_path / "s2.png"))
    assert refused.returncode == 2 and "vaekit train-prior" in refused.stderr and "Traceback" not in refused.stderr
    capsys.readouterr()
    assert main(["evaluate", str(run), "--no-progress"]) == 0
    assert "prior_nll" not in json.loads(capsys.readouterr().out)["terms"]
    assert main(["train-prior", str(run), "--epochs", "1", "--no-progress"]) == 0
    assert vaekit.load(run).sample(2).shape == (2, 1, 8, 8)


def test_train_prior_takes_its_own_epochs_not_the_time_limit_of_the_run(tmp_path, capsys, monkeypatch):
    run = tmp_path / "vq"
    # a run under a time limit (it trains at least one epoch): the prior stage is not held to it, counted anew
    assert main(["train", "--data", "digits", "--model", "vqvae", "--latent-dim", "4", "--epochs", "3", "--minutes",
                 "0.0001", "--out", str(run), "--no-progress", "--set", "model.vqvae.codebook=16"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    capsys.readouterr()
    assert main(["train-prior", str(run), "--epochs", "3", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["epochs"] == 3 and len((run / "prior-metrics.jsonl").read_text().splitlines()) == 3
    # too little room for its checkpoints is said before an epoch of training (it was said after one)
    from collections import namedtuple

    from vaekit import runs

    before = (run / "model.safetensors").read_bytes()
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(runs.shutil, "disk_usage", lambda path: usage(2**30, 2**30 - 1024, 1024))
    assert main(["train-prior", str(run), "--epochs", "1", "--no-progress"]) == 2
    assert "free, but checkpoints of this model need about" in capsys.readouterr().err
    assert (run / "model.safetensors").read_bytes() == before


def test_train_prior_mistakes_are_one_line_errors(tmp_path, small_run, capsys):
    for args, says in (([str(small_run)], "the vae family has no training stage 'prior': it trains in one stage"),
                       ([str(tmp_path / "none")], "run folder not found"),
                       ([str(small_run), "--epochs", "0"], "--epochs must be at least 1, got 0")):
        assert main(["train-prior", *args]) == 2
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1, err


def test_restarts_are_on_by_default_and_the_flag_turns_them_off():
    from vaekit.cli import build_parser
    from vaekit.cli.common import config_from_args

    def settings(*flags):
        args = build_parser().parse_args(["train", "--data", "digits", "--model", "vqvae", *flags])
        return config_from_args(args).model.settings("vqvae")

    assert settings().restart is True
    assert settings("--vqvae-no-restart").restart is False


def test_codes_are_chosen_in_full_precision_under_autocast():
    torch.manual_seed(0)
    m = model(codebook=512)
    m.init_from_data(images(64))
    with torch.no_grad():
        vectors = m._vectors(m.encoder_params(images(64, seed=1)))
    exact = m.nearest(vectors)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(m.nearest(vectors), exact)
        out = m.train()(images(64, seed=1))
    assert torch.isfinite(out.loss)


def test_a_model_that_cannot_sample_yet_still_logs_and_exports(tmp_path, capsys):
    run = tmp_path / "vq"
    assert main(["train", "--data", "digits", "--model", "vqvae", "--epochs", "1", "--out", str(run), "--no-progress",
                 "--tensorboard"]) == 0  # the TensorBoard pictures: reconstructions only, until the prior is trained
    assert list((run / "tensorboard").glob("events.*"))
    folder = vaekit.load(run).save_pretrained(tmp_path / "hub")
    assert folder.samples is None and not (tmp_path / "hub" / "samples.png").exists()
    before = vaekit.load(run).state_dict()
    assert main(["train-prior", str(run), "--epochs", "1", "--no-progress"]) == 0
    after = vaekit.load(run).state_dict()  # the second stage changed the prior and nothing else
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("prior_net.") for k in changed)
    assert vaekit.load(run).save_pretrained(tmp_path / "hub2").samples is not None


def test_compare_trains_the_prior_stage_before_drawing(tmp_path):
    from vaekit import compare
    from vaekit.config import DataConfig, ModelConfig as Model, RunConfig, TrainConfig

    cfg = RunConfig(data=DataConfig(name="digits"), model=Model(family="vqvae", latent_dim=4),
                    train=TrainConfig(epochs=5, progress=False))
    options = compare.CompareOptions(gmm_components=2, classifier_steps=10, fcd_items=16, hole_codes=32,
                                     hole_draws=16, interpolation_pairs=2, interpolation_steps=3)
    result = compare.compare(cfg, tmp_path / "cmp", options)
    assert result.vae.family == "vqvae" and 0 <= result.vae.prior_hole_fraction <= 1
    assert (tmp_path / "cmp" / "vae" / "prior-metrics.jsonl").exists()


def test_a_comparison_from_before_the_gated_prior_resumes_with_its_masked_one(tmp_path):
    """compare --resume of a vqvae comparison made before model.vqvae.prior refused its run as one of other settings
    (the default is now gated); it continues the run as it was. A setting asked for otherwise is named, to the key."""
    from vaekit import compare
    from vaekit.config import DataConfig, ModelConfig as Model, RunConfig, TrainConfig

    def config(prior: str | None, epochs: int) -> RunConfig:
        options = {"vqvae": vaekit.vqvae.VQVAE.Settings(prior=prior)} if prior else {}
        return RunConfig(data=DataConfig(name="digits"), model=Model(family="vqvae", latent_dim=3, options=options),
                         train=TrainConfig(epochs=epochs, progress=False))

    options = compare.CompareOptions(gmm_components=2, classifier_steps=10, fcd_items=16, hole_codes=32,
                                     hole_draws=16, interpolation_pairs=2, interpolation_steps=3)
    compare.compare(config("pixelcnn", 1), tmp_path / "cmp", options)
    as_written_before_the_gated_prior(tmp_path / "cmp" / "vae")
    resumed = compare.compare(config(None, 2), tmp_path / "cmp", options, resume=True)  # the command as it was
    assert resumed.vae.family == "vqvae"
    assert type(vaekit.load(tmp_path / "cmp" / "vae").prior_net) is CodePrior
    assert len((tmp_path / "cmp" / "vae" / "metrics.jsonl").read_text().splitlines()) == 2
    compare.compare(config(None, 3), tmp_path / "cmp", options, resume=True)  # and again, its config.json rewritten
    assert type(vaekit.load(tmp_path / "cmp" / "vae").prior_net) is CodePrior
    other = replace(config(None, 3).model, options={"vqvae": vaekit.vqvae.VQVAE.Settings(prior_layers=2)})
    with pytest.raises(vaekit.VaekitError, match=r"holds a run of other settings \(model\.vqvae\.prior_layers\)"):
        compare.compare(replace(config(None, 3), model=other), tmp_path / "cmp", options, resume=True)


def test_a_comparison_cut_off_in_the_prior_stage_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch):
    """compare --resume trained a prior cut off midway for its epochs again from the weights it had reached (about
    twice the training the report named, and other numbers): it restarts the stage from its initial weights."""
    import os
    import signal

    from vaekit import checkpoint, compare, runs
    from vaekit.config import DataConfig, ModelConfig as Model, RunConfig, TrainConfig
    from vaekit.errors import Interrupted

    cfg = RunConfig(data=DataConfig(name="digits"), model=Model(family="vqvae", latent_dim=4),
                    train=TrainConfig(epochs=3, progress=False))
    options = compare.CompareOptions(gmm_components=2, classifier_steps=10, fcd_items=16, hole_codes=32,
                                     hole_draws=16, interpolation_pairs=2, interpolation_steps=3)
    whole = compare.compare(cfg, tmp_path / "whole", options)

    class StopMidway:
        def on_step_end(self, trainer, step):
            if step.step == 30:  # in the prior stage's third epoch (12 steps an epoch)
                os.kill(os.getpid(), signal.SIGTERM)

    stage = runs.train_stage
    monkeypatch.setattr(runs, "train_stage", lambda *args, **kwargs: stage(*args, callbacks=[StopMidway()], **kwargs))
    with pytest.raises(Interrupted):
        compare.compare(cfg, tmp_path / "cut", options)
    monkeypatch.setattr(runs, "train_stage", stage)
    resumed = compare.compare(cfg, tmp_path / "cut", options, resume=True)
    expected = checkpoint.load(tmp_path / "whole" / "vae").state_dict()
    for name, tensor in checkpoint.load(tmp_path / "cut" / "vae").state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    assert resumed.vae.prior_hole_fraction == whole.vae.prior_hole_fraction


def test_the_prior_stage_of_a_run_with_early_stopping_saves_and_resumes(tmp_path):
    """Early stopping keeps best weights in the resume state; the prior stage writes its weights there as both the
    last and the best, each its own tensor (safetensors refuses tensors that share memory)."""
    run = tmp_path / "vq"
    assert main(["train", "--data", "digits", "--model", "vqvae", "--latent-dim", "4", "--epochs", "2",
                 "--early-stopping", "3", "--out", str(run), "--no-progress", "--set", "model.vqvae.codebook=32"]) == 0
    assert main(["train-prior", str(run), "--epochs", "1", "--no-progress"]) == 0
    assert main(["train", "--resume", str(run), "--epochs", "3", "--no-progress"]) == 0


def test_traverse_of_a_spatial_code_sweeps_its_most_used_numbers(tmp_path, caplog):
    """A vqvae's 7x7 grid of 4-number vectors is 196 numbers: traverse made a row of each by default (784 rows, a
    picture 60,000 pixels high, for the recipe's); it sweeps the 16 most used and says so; --top and --dims as asked."""
    run = tmp_path / "vq"
    assert main(["train", "--data", "mnist-10k", "--limit", "200", "--model", "vqvae", "--latent-dim", "4",
                 "--epochs", "1", "--out", str(run), "--no-progress"]) == 0
    with caplog.at_level("INFO"):
        assert main(["traverse", str(run), "--steps", "3", "--out", str(tmp_path / "t.npy")]) == 0
    assert np.load(tmp_path / "t.npy").shape[:2] == (16, 3)
    assert "the 16 most used of the code's 196 numbers" in caplog.text
    assert main(["traverse", str(run), "--steps", "3", "--top", "20", "--out", str(tmp_path / "t.npy")]) == 0
    assert np.load(tmp_path / "t.npy").shape[:2] == (20, 3)
    caplog.clear()
    with caplog.at_level("INFO"):
        assert main(["traverse", str(run), "--steps", "3", "--dims", "0,195", "--out", str(tmp_path / "t.npy")]) == 0
    assert np.load(tmp_path / "t.npy").shape[:2] == (2, 3)
    # each number with its place in the 7x7 grid of 4-number vectors
    assert "dimensions z[0] (row 0, column 0, number 0), z[195] (row 6, column 6, number 3)" in caplog.text


def test_the_prior_draws_its_grids_a_chunk_at_a_time(monkeypatch):
    """Sampling ran the prior over all n grids at once (1.7 GB and no word for 6,000 draws): chunks of SAMPLE_CHUNK,
    every grid of the last, partial chunk drawn too, the same draws as one chunk where n fits in one."""
    from vaekit import vqvae

    prior = vqvae.CodePrior(8, 4, 1)
    torch.manual_seed(0)
    whole = prior.sample(3, (3, 3), torch.device("cpu"))
    monkeypatch.setattr(vqvae, "SAMPLE_CHUNK", 3)
    torch.manual_seed(0)
    chunked = prior.sample(7, (3, 3), torch.device("cpu"))
    assert torch.equal(chunked[:3], whole)
    assert all(bool(grid.any()) for grid in chunked)  # none left at its zeros (chance: 8^-9 each)
    assert len({tuple(grid.flatten().tolist()) for grid in chunked}) == 7


def test_sample_draws_from_a_mixture_of_the_codes_before_the_prior_is_trained(tmp_path, capsys):
    """The error before train-prior pointed to compare's mixture sampler, which cannot sample a user's run: `vaekit
    sample --sampler mixture` fits it to the run's training codes (an ae's too), seeded, and decodes its draws."""
    run = tmp_path / "vq"
    assert main(["train", "--data", "digits", "--model", "vqvae", "--latent-dim", "4", "--epochs", "2", "--out",
                 str(run), "--no-progress", "--set", "model.vqvae.codebook=32"]) == 0
    capsys.readouterr()
    assert main(["sample", str(run), "--n", "8", "--out", str(tmp_path / "s.npy")]) == 2
    assert "vaekit sample RUN --sampler mixture" in capsys.readouterr().err
    out = [tmp_path / f"m{i}.npy" for i in range(3)]
    for path, seed in zip(out, ("0", "0", "1")):
        assert main(["sample", str(run), "--n", "200", "--sampler", "mixture", "--components", "3", "--seed", seed,
                     "--out", str(path)]) == 0
    first, again, other = (np.load(path) for path in out)
    assert first.shape == (200, 1, 8, 8) and np.array_equal(first, again) and not np.array_equal(first, other)
    # the draws are spread as the codes are: their mean picture is that of the training items' reconstructions
    # (the decoded codes), within a tenth of the pixel range
    from vaekit.config import DataConfig
    from vaekit.data import load_dataset

    model = vaekit.load(run)
    with torch.no_grad():
        decoded = model.reconstruct(load_dataset(DataConfig(name="digits")).x_train).numpy()
    assert np.abs(first.mean(0) - decoded.mean(0)).max() < 0.1
    assert main(["sample", str(run), "--n", "8", "--sampler", "mixture", "--components", "5000",
                 "--out", str(tmp_path / "s.npy")]) == 2
    assert "exceeds the 1437 training items" in capsys.readouterr().err


def test_training_the_prior_of_an_unfinished_run_is_warned_of(tmp_path, caplog):
    """train-prior took a run cut off midway in silence; its next `train --resume` then marked that prior outdated."""
    import os
    import signal

    from vaekit import runs
    from vaekit.config import DataConfig, ModelConfig as Model, RunConfig, TrainConfig
    from vaekit.errors import Interrupted

    class StopMidway:
        def on_step_end(self, trainer, step):
            if step.step == 15:  # in the second of 3 epochs (12 steps an epoch)
                os.kill(os.getpid(), signal.SIGTERM)

    cfg = RunConfig(data=DataConfig(name="digits"), model=Model(family="vqvae", latent_dim=4),
                    train=TrainConfig(epochs=3, progress=False))
    with pytest.raises(Interrupted):
        runs.train(cfg, tmp_path / "cut", callbacks=[StopMidway()])
    runs.train(cfg, tmp_path / "whole")
    for run, warned in (("cut", True), ("whole", False)):
        caplog.clear()
        with caplog.at_level("WARNING"):
            runs.train_stage(tmp_path / run, "prior", epochs=1, progress=False)
        assert ("stopped after 1 of its 3 epochs: its prior stage is trained on a model that is not finished"
                in caplog.text) == warned, run


def test_a_damaged_resume_state_of_a_finished_run_does_not_block_its_prior_stage(tmp_path, caplog):
    """train-prior refused a finished run whose resume state was damaged, though it needs only the model file: it now
    trains the stage, says the run cannot be resumed, and leaves the damaged file as it was."""
    from vaekit import runs
    from vaekit.config import DataConfig, ModelConfig as Model, RunConfig, TrainConfig

    cfg = RunConfig(data=DataConfig(name="digits"), model=Model(family="vqvae", latent_dim=4),
                    train=TrainConfig(epochs=1, progress=False))
    runs.train(cfg, tmp_path / "run")
    state, = (tmp_path / "run").glob("resume-*.safetensors")
    damaged = bytearray(state.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    state.write_bytes(bytes(damaged))
    before = vaekit.load(tmp_path / "run").state_dict()
    with caplog.at_level("WARNING"):
        runs.train_stage(tmp_path / "run", "prior", epochs=1, progress=False)
    assert "is damaged" in caplog.text and "the prior stage trains all the same" in caplog.text, caplog.text
    assert state.read_bytes() == bytes(damaged)
    after = vaekit.load(tmp_path / "run").state_dict()
    changed = {key.split(".")[0] for key in before if not torch.equal(before[key], after[key])}
    assert changed == {"prior_net"}, changed  # the prior stage alone


def as_written_before_the_gated_prior(run) -> None:
    """A vqvae run trained with model.vqvae.prior=pixelcnn, rewritten as vaekit wrote it before that setting existed:
    no model.vqvae.prior in config.json, and the model file naming that text."""
    import hashlib

    from safetensors.torch import save_file

    from vaekit import checkpoint

    raw = json.loads((run / "config.json").read_text())
    assert raw["model"]["vqvae"].pop("prior") == "pixelcnn"
    text = json.dumps(raw, indent=2)
    (run / "config.json").write_text(text)
    tensors, metadata = checkpoint.read_checked(run / "model.safetensors")
    save_file(tensors, str(run / "model.safetensors"),
              metadata={**metadata, checkpoint.CONFIG_KEY: hashlib.sha256(text.encode()).hexdigest()})


def test_a_run_from_before_the_gated_prior_keeps_its_masked_convolutions(tmp_path, capsys):
    """model.vqvae.prior came with the gated PixelCNN as its default: a run written before it (its config.json without
    the setting) loads, trains its prior stage and resumes with the masked convolutions it was made with."""
    run = tmp_path / "old"
    common = ["--no-progress", "--set", "model.vqvae.codebook=16"]
    assert main(["train", "--data", "digits", "--model", "vqvae", "--latent-dim", "3", "--epochs", "1", "--out",
                 str(run), "--set", "model.vqvae.prior=pixelcnn", *common]) == 0
    as_written_before_the_gated_prior(run)
    assert type(vaekit.load(run).prior_net) is CodePrior
    assert main(["train-prior", str(run), "--epochs", "1", "--no-progress"]) == 0
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0  # its resume state fits
    assert type(vaekit.load(run).prior_net) is CodePrior
    assert main(["train", "--data", "digits", "--model", "vqvae", "--latent-dim", "3", "--epochs", "1", "--out",
                 str(tmp_path / "new"), *common]) == 0
    assert type(vaekit.load(tmp_path / "new").prior_net) is GatedCodePrior  # the default now


def test_a_label_conditioned_vqvae_from_the_command_line_draws_codes_given_the_class(tmp_path, capsys):
    """--condition label: encoder, decoder and the prior over codes take the label; sample --label K draws codes
    from p(codes | K) and decodes them with K; evaluate's prior_nll is -log p(codes | y); sampling without a label
    is refused in one line (the CLI cycles through the classes instead)."""
    run = tmp_path / "vq"
    assert main(["train", "--data", "digits", "--model", "vqvae", "--condition", "label", "--latent-dim", "4",
                 "--epochs", "2", "--out", str(run), "--no-progress", "--set", "model.vqvae.codebook=32"]) == 0
    assert main(["train-prior", str(run), "--epochs", "2", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["sample", str(run), "--label", "3", "--n", "4", "--out", str(tmp_path / "threes.png")]) == 0
    assert main(["sample", str(run), "--n", "20", "--out", str(tmp_path / "each.png")]) == 0  # each class in turn
    capsys.readouterr()
    assert main(["evaluate", str(run), "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["given_labels"] and result["terms"]["prior_nll"] == pytest.approx(summary["val_prior_nll"], rel=0.05)
    model = vaekit.load(run)
    assert model.num_labels == 10 and model.prior_net.labels == 10 and model.prior_takes_labels
    with pytest.raises(vaekit.VaekitError, match="conditioned on labels .*pass the labels"):
        model.sample(2)
    draw = lambda label: model.sample_prior(64, torch.Generator().manual_seed(0), label)  # noqa: E731
    torch.testing.assert_close(draw(3), draw(3), rtol=0, atol=0)  # seeded
    # the codes drawn are the codebook's, and the prior's density of them is the one it is given the class with
    codes = model.nearest(draw(3).view(64, -1, 4))
    with torch.no_grad():  # trained, the prior's distribution moves with the class
        grids = codes.view(64, *model.grid)
        threes, fours = torch.full((64,), 3), torch.full((64,), 4)
        assert not torch.equal(model.prior_net(grids, threes), model.prior_net(grids, fours))
    torch.testing.assert_close(model.codebook[codes].flatten(1), draw(3))
    given = model.prior_given(torch.full((64,), 3))
    torch.testing.assert_close(given.log_prob(draw(3)), -model.prior_net.nll(codes.view(64, *model.grid),
                                                                             torch.full((64,), 3)))
    refused = run_cli("sample", str(run), "--label", "12", "--out", str(tmp_path / "bad.png"))
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr


def test_the_mixture_sampler_of_a_label_conditioned_vqvae_fits_each_class_own_codes(tmp_path):
    """Its codes carry the class (the decoder's label adds little), so `sample --label K --sampler mixture` fits the
    mixture to class K's codes alone: each decoded draw's nearest training image (in pixels) is of class K, for
    every class, where one mixture of all the codes drew every class alike."""
    from vaekit.data import load_dataset
    from vaekit.config import DataConfig

    run = tmp_path / "vq"
    assert main(["train", "--data", "digits", "--model", "vqvae", "--condition", "label", "--epochs", "10", "--out",
                 str(run), "--no-progress"]) == 0
    data = load_dataset(DataConfig(name="digits"))
    out = tmp_path / "mixture.npy"  # without --label: each class in turn, 20 draws of each
    assert main(["sample", str(run), "--sampler", "mixture", "--components", "3", "--n", "200", "--out",
                 str(out)]) == 0
    images = torch.from_numpy(np.load(out)).flatten(1).float()
    nearest = data.y_train[torch.cdist(images, data.x_train.flatten(1)).argmin(1)]
    asked = torch.arange(200) % 10
    for label in range(10):
        assert float((nearest[asked == label] == label).float().mean()) >= 0.9, (label, nearest[asked == label])
