"""AE vs VAE comparison: the metrics on known answers, then one real comparison on digits end to end."""
import importlib
import json
import re
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

import vaekit
from vaekit.cli import main
from vaekit.compare import (
    CompareOptions, CompareResult, compare, feature_frechet_distance, frechet_distance, interpolation_smoothness,
    path_jumps, prior_hole_fraction, share_standard_error, standard_error,
)
from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaekit.errors import VaekitError

# ---- Fréchet distance ---------------------------------------------------------------------------------


def test_frechet_distance_diagonal_closed_form():
    # Diagonal covariances commute: tr(C1 + C2 - 2 (C1 C2)^1/2) = sum (s1 - s2)^2 over the standard deviations.
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    s1, s2 = np.array([1.0, 2.0, 0.5]), np.array([3.0, 0.5, 0.5])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((s1 - s2) ** 2)  # 1 + 0 + 6.25 + 4 + 2.25 + 0
    assert frechet_distance(mu1, np.diag(s1**2), mu2, np.diag(s2**2)) == pytest.approx(expected, rel=1e-10)
    assert expected == pytest.approx(13.5)
    assert frechet_distance(mu1, np.diag(s1**2), mu1, np.diag(s1**2)) == pytest.approx(0.0, abs=1e-10)


def test_frechet_distance_full_covariance_matches_sqrtm():
    from scipy import linalg

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    cov1, cov2 = a @ a.T, b @ b.T + 0.1 * np.eye(6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    reference = np.sum((mu1 - mu2) ** 2) + np.trace(cov1 + cov2 - 2 * linalg.sqrtm(cov1 @ cov2).real)
    assert frechet_distance(mu1, cov1, mu2, cov2) == pytest.approx(reference, rel=1e-8)


def test_feature_frechet_distance_estimates_the_gaussians():
    rng = np.random.default_rng(1)
    first = rng.normal([0.0, 0.0], [1.0, 2.0], size=(20000, 2))
    second = rng.normal([3.0, 0.0], [1.0, 1.0], size=(20000, 2))
    assert feature_frechet_distance(first, second) == pytest.approx(9.0 + 1.0, rel=0.03)
    with pytest.raises(VaekitError, match="feature sets"):
        feature_frechet_distance(first, second[:, :1])


# ---- prior holes --------------------------------------------------------------------------------------


def test_prior_hole_fraction_planted():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(2000, 4))  # the prior draws
    fills = rng.normal(size=(3000, 4))  # codes distributed like the prior
    assert prior_hole_fraction(fills, z) < 0.05
    far = rng.normal(size=(3000, 4)) * 0.5 + 6.0  # all codes far from the origin
    assert prior_hole_fraction(far, z) > 0.99
    # Codes on a thin shell leave the prior's centre empty: between the two extremes.
    shell = fills / np.linalg.norm(fills, axis=1, keepdims=True) * 3.0
    assert 0.3 < prior_hole_fraction(shell, z) < 0.99
    with pytest.raises(VaekitError, match="codes"):
        prior_hole_fraction(fills, z[:, :3])


# ---- interpolation smoothness ---------------------------------------------------------------------------


def test_interpolation_smoothness_ramp_step_and_detour():
    steps = 10
    t = torch.linspace(0, 1, steps)
    start, end = torch.rand(3, 1, 4, 4), torch.rand(3, 1, 4, 4)
    ramp = start[:, None] + t[None, :, None, None, None] * (end - start)[:, None]  # (3, steps, 1, 4, 4)
    even = interpolation_smoothness(ramp)
    assert even.mean_jump == pytest.approx(1 / (steps - 1), rel=1e-6)
    assert even.max_jump == pytest.approx(1 / (steps - 1), rel=1e-6)
    assert even.even == pytest.approx(1 / 9) and even.paths == 3 and even.steps == steps

    step = torch.where(t[None, :, None, None, None] < 0.5, start[:, None], end[:, None])  # all change in one step
    jumpy = interpolation_smoothness(step)
    assert jumpy.max_jump == pytest.approx(1.0)
    assert jumpy.max_jump > 5 * even.max_jump

    bump = torch.sin(torch.pi * t)[None, :, None, None, None] * 5.0  # a detour out and back on top of the ramp
    detour = interpolation_smoothness(ramp + bump)
    assert detour.mean_jump > 2 * even.mean_jump


def test_interpolation_smoothness_skips_and_rejects_closed_paths():
    loop = torch.zeros(2, 5, 3)
    loop[:, 2] = 1.0  # starts and ends at zero
    with pytest.raises(VaekitError, match="same image"):
        interpolation_smoothness(loop)
    mixed = torch.cat([loop, torch.linspace(0, 1, 5)[None, :, None].expand(1, 5, 3)])
    assert interpolation_smoothness(mixed).paths == 1
    mean_jumps, max_jumps = path_jumps(mixed)  # per path, NaN for the skipped ones
    assert np.isnan(mean_jumps[:2]).all() and np.isnan(max_jumps[:2]).all()
    assert mean_jumps[2] == pytest.approx(0.25) and max_jumps[2] == pytest.approx(0.25)


def test_standard_error_closed_form():
    assert standard_error(np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(np.sqrt(5 / 3) / 2)
    assert standard_error(np.array([1.0, np.nan, 3.0])) == pytest.approx(1.0)  # NaN: a unit left out
    assert standard_error(np.array([7.0])) is None and standard_error(np.ones(5)) == 0.0


def test_a_share_of_none_or_all_draws_is_not_known_exactly():
    """A share's standard error with two yeses and two noes added (Agresti-Coull): above 0 at a share of 0 or 1,
    where the plain binomial one, sqrt(p (1 - p) / n), says 0; near the plain one inside."""
    assert share_standard_error(np.zeros(2000)) == pytest.approx((2 / 2004 * 2002 / 2004 / 2004) ** 0.5)
    assert share_standard_error(np.ones(2000)) == pytest.approx(share_standard_error(np.zeros(2000)))
    flags = np.r_[np.ones(720), np.zeros(1280), np.nan]  # NaN: a draw left out
    assert share_standard_error(flags) == pytest.approx((722 / 2004 * 1282 / 2004 / 2004) ** 0.5)
    assert share_standard_error(flags) == pytest.approx(standard_error(flags), rel=0.01)
    assert share_standard_error(np.ones(1)) is None


# ---- the comparison on digits ---------------------------------------------------------------------------

# Settings found to separate the two models robustly on digits (VAE prior FCD about half the AE's, seeds 0-4):
# a small MLP and batch 32 give enough steps in 15 quick epochs.
DIGITS = RunConfig(
    data=DataConfig(name="digits"),
    model=ModelConfig(latent_dim=8, network="mlp", hidden_dims=(256, 128)),
    train=TrainConfig(epochs=15, batch_size=32, progress=False),
)
QUICK = CompareOptions(classifier_steps=300, interpolation_pairs=8, hole_draws=1000)


@pytest.fixture(scope="module")
def digits_report(tmp_path_factory) -> CompareResult:
    return compare(DIGITS, tmp_path_factory.mktemp("compare") / "report", options=QUICK)


def test_compare_digits_numbers(digits_report):
    ae, vae = digits_report.ae, digits_report.vae
    assert (ae.family, vae.family) == ("ae", "vae")
    assert ae.point_codes and not vae.point_codes  # the AE's code is a point, the VAE's a posterior's mean
    # What the report exists to show: N(0, I) decodes to data for the VAE, to mostly nothing for the AE.
    assert vae.fcd_prior < 0.8 * ae.fcd_prior
    assert vae.prior_hole_fraction < 0.1 < 0.5 < ae.prior_hole_fraction
    # The mixture sampler puts the AE's draws back on its codes, and makes it generate.
    assert ae.gmm_hole_fraction < 0.2 and ae.fcd_gmm < 0.5 * ae.fcd_prior
    assert ae.recon_squared_error < vae.recon_squared_error  # no KL to pay
    assert digits_report.classifier_accuracy > 0.9
    assert 0 < digits_report.fcd_real < vae.fcd_prior
    assert ae.test_kl is None and vae.test_kl > 0  # the AE has no KL term at all
    assert set(ae.test_terms) == {"loss", "recon"} and {"loss", "recon", "kl", "elbo"} <= set(vae.test_terms)
    assert vae.test_kl == pytest.approx(vae.test_terms["kl"], rel=1e-6)
    for scores in digits_report.scores():
        assert scores.interpolation.even <= scores.interpolation.mean_jump <= scores.interpolation.max_jump < 1


def test_a_collapsed_posterior_is_said_before_the_numbers(digits_report):
    """A VAE whose KL ended near 0 (too few epochs) makes a report of an untrained model: it says so."""
    from vaekit.report.html import verdict

    page = digits_report.report.read_text()
    assert digits_report.vae.test_kl > 1.0 and "collapsed" not in page
    # the AE's pictures are of its codes, not of a posterior it does not have
    assert "AE: decoded codes of the inputs above." in page and ">AE: decoded posterior means" not in page
    assert "a point, so every one is the same image" in page
    said = verdict(replace(digits_report, vae=replace(digits_report.vae, test_kl=0.02)))
    assert "Warning: the VAE's posterior collapsed</b> (KL 0.02 nats per test item)" in said
    assert said.index("collapsed") < said.index("Prior samples")


def test_compare_on_unlabelled_data_shows_no_fcd_anywhere(tmp_path, capsys):
    np.save(tmp_path / "unl.npy", np.random.default_rng(0).random((300, 1, 8, 8)).astype("float32"))
    assert main(["compare", "--data", str(tmp_path / "unl.npy"), "--epochs", "1", "--hidden-dims", "16", "--network",
                 "mlp", "--latent-dim", "2", "--no-progress", "--out", str(tmp_path / "cmp")]) == 0
    printed = capsys.readouterr().out
    assert "FCD" not in printed and "Prior mass in holes" in printed
    page = (tmp_path / "cmp" / "index.html").read_text()
    assert "The data have no labels, so there is no FCD classifier and no FCD." in page
    assert "FCD of" not in page and "coloured by label" not in page
    # its runs read the file their config names (not data given in Python): a changed file gets the file's message
    assert json.loads((tmp_path / "cmp" / "vae" / "data.json").read_text())["given_in_python"] is False


def test_compare_digits_report_is_self_contained(digits_report):
    page = digits_report.report.read_text()
    assert digits_report.report.name == "index.html"
    images = re.findall(r'<img[^>]*src="([^"]+)"', page)
    assert len(images) >= 12 and all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r"https?://", page)
    assert "<link" not in page and "<script" not in page
    assert "not FID" in page and "Fréchet classifier distance" in page
    assert "accuracy on the test items)" in page and "items items" not in page
    from vaekit.report.html import rows

    unlabelled = replace(digits_report, fcd_real=None, classifier_accuracy=None)  # e.g. Frey faces: no labels
    names = [row[0] for row in rows(unlabelled, DIGITS, QUICK)]
    assert not any(name.startswith("FCD") for name in names) and "Prior mass in holes" in names
    assert any(name.startswith("FCD") for name in (row[0] for row in rows(digits_report, DIGITS, QUICK)))
    held = replace(digits_report, classifier_checked_on="held-out training")
    assert held.classifier_items == "held-out training items (the test split's classes are not the training split's)"
    for value in (digits_report.ae.fcd_prior, digits_report.vae.fcd_prior):
        assert f"{value:.3g}" in page
    for heading in ("Reconstructions", "Prior samples", "Gaussian-mixture samples", "Posterior variations",
                    "Interpolations", "Latent maps"):
        assert f"<h2>{heading}" in page
    saved = json.loads((digits_report.report.parent / "compare.json").read_text())
    assert saved["vae"]["fcd_prior"] == pytest.approx(digits_report.vae.fcd_prior)
    for family in ("ae", "vae"):
        assert vaekit.load(digits_report.runs[family]).family == family


def test_compare_numbers_carry_their_standard_errors(digits_report):
    """Each number that is a mean over test items, draws or pairs has its standard error, and the AE-VAE difference
    its own (paired over the same test items); bold marks a lead only beyond two standard errors of it."""
    from vaekit.metrics import reconstruction_error
    from vaekit.report.html import numbers_table, verdict

    x_test = vaekit.data.load_dataset(DIGITS.data).x_test
    items = {family: reconstruction_error(vaekit.load(digits_report.runs[family]), x_test).squared_error.double()
             for family in ("ae", "vae")}
    for family, scores in zip(("ae", "vae"), digits_report.scores()):
        assert scores.recon_squared_error == pytest.approx(float(items[family].mean()), rel=1e-6)
        assert scores.standard_errors["recon_squared_error"] == pytest.approx(
            float(items[family].std() / len(x_test) ** 0.5), rel=1e-6)
        assert set(scores.standard_errors) == {"recon_squared_error", "recon_nll", "fcd_prior", "fcd_gmm",
                                               "prior_hole_fraction", "gmm_hole_fraction",
                                               "interpolation.mean_jump", "interpolation.max_jump"}
        assert 0 < scores.standard_errors["fcd_prior"] < scores.fcd_prior
        p = (scores.prior_hole_fraction * QUICK.hole_draws + 2) / (QUICK.hole_draws + 4)  # a share of draws:
        assert scores.standard_errors["prior_hole_fraction"] == pytest.approx(  # the Agresti-Coull standard error
            (p * (1 - p) / (QUICK.hole_draws + 4)) ** 0.5, rel=1e-6)
    gap = digits_report.differences["recon_squared_error"]
    d = items["ae"] - items["vae"]
    assert gap["how"] == "paired" and gap["ae_minus_vae"] == pytest.approx(float(d.mean()), rel=1e-6)
    assert gap["se"] == pytest.approx(float(d.std() / len(d) ** 0.5), rel=1e-6)
    # the same test items: the easy and hard ones are easy and hard for both, so pairing narrows the difference
    unpaired = np.hypot(digits_report.ae.standard_errors["recon_squared_error"],
                        digits_report.vae.standard_errors["recon_squared_error"])
    assert gap["se"] < unpaired
    page = digits_report.report.read_text()
    assert "standard errors of the difference" in page and f"{digits_report.vae.fcd_prior:.3g} ± " in page
    saved = json.loads((digits_report.report.parent / "compare.json").read_text())
    assert saved["differences"]["fcd_prior"]["how"] == "bootstrap" and saved["differences"]["fcd_prior"]["se"] > 0
    for key in ("prior_hole_fraction", "gmm_hole_fraction"):  # each model's own draws: the errors combine
        gap = digits_report.differences[key]
        assert gap["how"] == "unpaired" and gap["se"] == pytest.approx(np.hypot(
            digits_report.ae.standard_errors[key], digits_report.vae.standard_errors[key]))
    # a lead within two standard errors of the difference is a tie: no bold, no winner named
    fcd = digits_report.differences["fcd_prior"]
    tied = replace(digits_report, differences={**digits_report.differences,
                                               "fcd_prior": {**fcd, "se": abs(fcd["ae_minus_vae"])}})
    row = lambda page: re.search(r"<tr><td>FCD of prior samples</td>.*?</tr>", page).group(0)  # noqa: E731
    assert "num better" in row(numbers_table(digits_report, DIGITS, QUICK))
    assert "num better" not in row(numbers_table(tied, DIGITS, QUICK))
    assert "the VAE generates closer" in verdict(digits_report)
    assert "no clear difference at this sample size" in verdict(tied)


def test_the_fcds_bootstrap_replicates_are_seeded_and_paired():
    """Replicate i resamples the same real features and the same positions for every model: the same images give the
    same replicates, and two models' difference varies far less than either FCD where the images differ little."""
    from vaekit.compare import SampleQuality

    class Flat:
        def features_of(self, images):
            return images.flatten(1).double().numpy()

    rng = np.random.default_rng(0)
    quality = SampleQuality.__new__(SampleQuality)
    quality.items, quality.seed, quality.classifier = 400, 3, Flat()
    quality.real_features = rng.normal(size=(400, 4))
    a = torch.tensor(rng.normal(size=(400, 4)) + 0.5)
    b = a + 0.05  # nearly the same images
    value, replicates = quality.fcd_and_resamples(a)
    again = quality.fcd_and_resamples(a)[1]
    assert value == pytest.approx(feature_frechet_distance(a.numpy(), quality.real_features))
    assert len(replicates) == SampleQuality.RESAMPLES and np.array_equal(replicates, again)
    other = quality.fcd_and_resamples(b)[1]
    assert np.std(replicates - other, ddof=1) < 0.2 * np.hypot(np.std(replicates, ddof=1), np.std(other, ddof=1))


def test_compare_refuses_to_overwrite_runs(digits_report):
    with pytest.raises(VaekitError, match="--overwrite"):
        compare(DIGITS, digits_report.report.parent, options=QUICK)


def test_compare_refuses_the_ae_as_the_family_to_compare(tmp_path, capsys):
    """It trained a VAE instead, without a word."""
    assert main(["compare", "--data", "digits", "--model", "ae", "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err
    assert "compare trains a plain AE itself, beside the family --model names: name a probabilistic family" in err
    assert err.count("\n") == 1 and not (tmp_path / "report").exists()


def test_compare_cli_without_mixture(tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["compare", "--data", "digits", "--latent-dim", "4", "--epochs", "1", "--limit", "300",
                 "--network", "mlp", "--hidden-dims", "32", "--gmm-components", "0", "--classifier-steps", "20",
                 "--interpolation-pairs", "2", "--no-progress", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "FCD of prior samples" in printed and " ± " in printed and str(out / "index.html") in printed
    page = (out / "index.html").read_text()
    assert "<h2>Prior samples" in page and "Gaussian-mixture samples" not in page
    assert json.loads((out / "compare.json").read_text())["ae"]["fcd_gmm"] is None


def test_measuring_shows_a_bar_over_its_stages(tmp_path, monkeypatch):
    """Measuring each model (a minute or more on MNIST) showed nothing after its line; it shows a bar naming the stage
    it is at, on a terminal, for work over a second (its delay made 0 here)."""
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    shown = Terminal()
    monkeypatch.setattr(sys, "stderr", shown)
    monkeypatch.setattr(importlib.import_module("vaekit.compare"), "bar_timing", lambda interval=0.1, delay=0.0: {"mininterval": 0, "delay": 0})
    assert main(["compare", "--data", "digits", "--latent-dim", "4", "--epochs", "1", "--limit", "300", "--network",
                 "mlp", "--hidden-dims", "32", "--classifier-steps", "20", "--interpolation-pairs", "2", "--out",
                 str(tmp_path / "report")]) == 0
    for family in ("AE", "VAE"):
        bar = " ".join(line for line in re.split(r"[\r\n]", shown.getvalue()) if f"measuring the {family}:" in line)
        for name in ("reconstructions", "codes", "mixture", "holes", "interpolations", "test ELBO", "FCD", "pictures"):
            assert f"stage/s, {name}]" in bar or f"stage, {name}]" in bar or f"s/stage, {name}]" in bar, (family, name)
        assert "8/8" in bar, family


def test_where_the_compared_prior_takes_the_label_both_mixture_rows_are_per_class_and_the_report_says_so(tmp_path,
                                                                                                         capsys):
    """compare --model vamp --condition label: the VAMP's prior draws are given each draw's label, and both models'
    mixture rows fit one mixture per class (the AE's too: one method for the row); the report says p(z | y) and
    one mixture per class, and its alt texts are the captions' text, escaped once. A comparison whose prior takes
    no label keeps one pooled mixture per model and says so."""
    import re

    out = tmp_path / "report"
    args = ["compare", "--data", "digits", "--latent-dim", "2", "--epochs", "1", "--network", "mlp",
            "--hidden-dims", "32", "--gmm-components", "2", "--classifier-steps", "20", "--interpolation-pairs", "2",
            "--condition", "label", "--no-progress"]
    assert main([*args, "--model", "vamp", "--vamp-components", "20", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "FCD of mixture samples (per class)" in printed and "Mixture mass in holes (per class)" in printed
    saved = json.loads((out / "compare.json").read_text())
    assert saved["ae"]["by_class"] and saved["vae"]["by_class"]
    page = (out / "index.html").read_text()
    assert "decoded draws z ~ p(z | y), the model&#x27;s own prior given each draw&#x27;s label" in page
    assert "mixtures, one per class fit on that class&#x27;s encoded training codes" in page
    assert "given the label, its class&#x27;s 2)" in page
    assert "draws z ~ p(z), or p(z | y) given each draw's label where the prior takes it farther" in page
    alts = re.findall(r'alt="([^"]*)"', page)
    assert alts and not any("&amp;" in alt for alt in alts)  # (the caption's entities were escaped again)
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0  # a conditioned vae: N(0, I) takes no label
    saved = json.loads((tmp_path / "plain" / "compare.json").read_text())
    assert not saved["ae"]["by_class"] and not saved["vae"]["by_class"]
    page = (tmp_path / "plain" / "index.html").read_text()
    assert "one per class" not in page and "(per class)" not in page and "decoded draws z ~ p(z), the model" in page


def test_compare_measures_the_compared_model_on_the_test_split_and_survives_a_code_ignored(tmp_path, monkeypatch):
    """With a validation split the epochs are judged on held-out training items, but the report's test numbers are
    the saved model's on the test split; free bits reach the VAE only; the prior is named as the family has it; an
    AE whose decoder ignores its code gets a report with its interpolation numbers left out, not an error."""
    from vaekit import checkpoint, compare as compare_module
    from vaekit.data import TensorData, load_dataset
    from vaekit.train import mean_terms

    paths = compare_module.interpolation_paths

    def ae_ignores_its_code(model, *args, **kwargs):
        found = paths(model, *args, **kwargs)
        return torch.zeros_like(found) if model.family == "ae" else found

    monkeypatch.setattr(compare_module, "interpolation_paths", ae_ignores_its_code)
    cfg = RunConfig(data=DataConfig(name="digits", validation=0.3),
                    model=ModelConfig(family="vamp", latent_dim=2, network="mlp", hidden_dims=(32,), free_bits=0.1,
                                      options={"vamp": {"components": 10}}),
                    train=TrainConfig(epochs=2, progress=False))
    options = CompareOptions(classifier_steps=20, interpolation_pairs=2, hole_draws=200, gmm_components=0)
    result = compare(cfg, tmp_path / "report", options=options)
    dataset = load_dataset(DataConfig(name="digits"))
    expected = mean_terms(checkpoint.load(tmp_path / "report" / "vae"), TensorData(dataset.x_test))
    assert result.vae.test_terms == pytest.approx(expected, rel=1e-9)
    last = json.loads((tmp_path / "report" / "vae" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["val_loss"] != pytest.approx(expected["loss"], rel=1e-6)  # that was the validation split's
    assert checkpoint.load_config(tmp_path / "report" / "ae").model.free_bits == 0.0
    assert result.ae.interpolation is None and result.vae.interpolation is not None
    page = (tmp_path / "report" / "index.html").read_text()
    assert "the VampPrior, a mixture of the posteriors at 10 learned pseudo-inputs" in page
    assert "AE: decoded draws z ~ N(0, I), which an autoencoder was never trained towards" in page


def test_a_second_family_whose_codes_are_points_is_captioned_as_such(digits_report):
    """A vqvae's or a Wasserstein AE's encoder gives points: its pictures are captioned as the AE's are (they spoke
    of posterior means and draws z ~ q(z|x), which it does not have)."""
    from PIL import Image

    from vaekit.models import build_model
    from vaekit.report.html import render_report

    shape = dict(data_shape=(1, 8, 8), latent_dim=2, hidden_dims=(8,), likelihood="bernoulli", network="mlp")
    assert vaekit.latent.point_codes(build_model(ModelConfig(family="vqvae", **shape)), torch.rand(4, 1, 8, 8))
    assert not vaekit.latent.point_codes(build_model(ModelConfig(family="vae", **shape)), torch.rand(4, 1, 8, 8))
    blank = Image.new("RGB", (4, 4))
    kinds = ("reconstructions", "prior", "vary", "interpolation", "latent_map", "gmm")
    figures = {"ae": dict.fromkeys(kinds, blank), "vae": dict.fromkeys(kinds, blank),
               "data": {"inputs": blank, "vary_item": blank}}
    for point, says in ((False, ("VAE: 16 decoded draws z ~ q(z|x) for test item 0.",
                                 "VAE: decoded posterior means of the inputs above.")),
                        (True, ("VAE: 16 decodes of test item 0's code: a point, so every one is the same image.",
                                "VAE: decoded codes of the inputs above."))):
        result = replace(digits_report, vae=replace(digits_report.vae, point_codes=point))
        page = render_report(result, DIGITS, QUICK, figures)
        assert all(caption in page for caption in says), point


def test_the_fcd_classifier_is_checked_on_held_out_training_items_when_the_test_classes_are_new():
    from vaekit.data import Dataset, load_dataset
    from vaekit.report.classifier import train_feature_classifier

    digits = load_dataset(DataConfig(name="digits"))
    seen, new = digits.y_train < 8, digits.y_test >= 8  # as Olivetti keeps people apart
    split = Dataset("split", digits.x_train[seen], digits.x_test[new], digits.y_train[seen], digits.y_test[new],
                    is_image=True)
    classifier = train_feature_classifier(split, steps=300)
    assert classifier.checked_on == "held-out training" and classifier.test_accuracy > 0.8
    assert train_feature_classifier(digits, steps=20).checked_on == "test"


def test_interpolation_pairs_are_different_pairs_of_different_items():
    """Pairs were drawn with replacement: on 2 test items all 32 were one path (or its reverse), so the standard error
    of the smoothness read 0 and named a winner."""
    from vaekit.compare import random_pairs

    for n_items, n_pairs in ((2, 32), (5, 32), (9, 32), (100, 32), (10_000, 32)):
        pairs = random_pairs(n_items, n_pairs, seed=0)
        unordered = {tuple(sorted(p)) for p in pairs.tolist()}
        assert len(unordered) == len(pairs) == min(n_pairs, n_items * (n_items - 1) // 2)
        assert (pairs[:, 0] != pairs[:, 1]).all() and pairs.min() >= 0 and pairs.max() < n_items
    assert np.array_equal(random_pairs(100, 32, seed=4), random_pairs(100, 32, seed=4))


def test_a_tiny_test_split_says_how_many_pairs_its_paths_are(tmp_path):
    """Three test items make three pairs: the report said "between 32 random test pairs"."""
    digits = vaekit.data.load_dataset(DataConfig(name="digits"))
    tiny = replace(digits, name="tiny", x_train=digits.x_train[:300], y_train=digits.y_train[:300],
                   x_test=digits.x_test[:3], y_test=digits.y_test[:3])
    cfg = replace(DIGITS, train=replace(DIGITS.train, epochs=1))
    result = compare(cfg, tmp_path / "r", options=replace(QUICK, classifier_steps=20), dataset=tiny)
    assert result.interpolation_pairs == 3 and all(s.interpolation.paths <= 3 for s in result.scores())
    assert "paths between 3 random test pairs" in result.report.read_text()


def test_an_out_folder_holding_runs_is_refused_in_one_line_that_says_what_overwrite_does(small_run, tmp_path,
                                                                                        capsys):
    import shutil

    shutil.copytree(small_run, tmp_path / "out" / "ae")
    assert main(["compare", "--data", "digits", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "ae already holds a run: pass --resume to continue that comparison (its finished runs kept), " \
           "--overwrite to train both models again, or choose another --out" in err and err.count("\n") == 1


def test_a_comparison_cut_off_continues_where_it_stopped(digits_report, tmp_path, monkeypatch):
    """A stop during the VAE's training lost the comparison: the same command refused the folder (or, with
    --overwrite, trained both models again). --resume keeps the finished AE, continues the VAE from its last
    checkpoint, and reports what an uninterrupted comparison reports."""
    import os
    import signal

    from vaekit import checkpoint, runs
    from vaekit.errors import Interrupted

    class StopMidway:
        def on_step_end(self, trainer, step):
            if step.step == 200:  # digits at batch 32: about 50 steps an epoch, 15 epochs
                os.kill(os.getpid(), signal.SIGTERM)

    out = tmp_path / "report"
    train = runs.train

    def cut_off(cfg, directory, **kwargs):
        return train(cfg, directory, callbacks=[StopMidway()] if directory.name == "vae" else None, **kwargs)

    monkeypatch.setattr(runs, "train", cut_off)
    with pytest.raises(Interrupted):
        compare(DIGITS, out, options=QUICK)
    with pytest.raises(VaekitError, match="pass --resume to continue that comparison"):
        compare(DIGITS, out, options=QUICK)
    ae_weights = checkpoint.load(out / "ae").state_dict()
    monkeypatch.setattr(runs, "train", lambda *args, **kwargs: pytest.fail("a run was trained afresh"))
    with pytest.raises(VaekitError, match=r"holds a run of other settings \(model\.latent_dim\)"):
        compare(replace(DIGITS, model=replace(DIGITS.model, latent_dim=4)), out, options=QUICK, resume=True)
    with pytest.raises(VaekitError, match="drop one of them"):
        compare(DIGITS, out, options=QUICK, resume=True, overwrite=True)
    resumed = compare(DIGITS, out, options=QUICK, resume=True)
    for run, expected in ((out / "ae", ae_weights),  # kept, not trained again
                          (out / "vae", checkpoint.load(digits_report.runs["vae"]).state_dict())):  # as if never cut
        for name, tensor in checkpoint.load(run).state_dict().items():
            assert torch.equal(tensor, expected[name]), (run, name)
    for family in ("ae", "vae"):
        ours, theirs = (getattr(r, family).__dict__ for r in (resumed, digits_report))
        assert {k: v for k, v in ours.items() if k != "train_seconds"} == \
            {k: v for k, v in theirs.items() if k != "train_seconds"}, family


def test_a_comparison_from_before_the_ae_dropped_its_warm_up_resumes(tmp_path, monkeypatch):
    """Its AE run recorded --beta and --kl-warmup-epochs (a comparison started before they were dropped): --resume
    refused it as a run of other settings, though the command was the same."""
    from vaekit import runs

    cfg = replace(DIGITS, model=replace(DIGITS.model, beta=2.0),
                  train=replace(DIGITS.train, epochs=2, kl_warmup_epochs=1.0))
    dropping = runs.drop_unweighed
    monkeypatch.setattr(runs, "drop_unweighed", lambda cfg, say=True: cfg)  # the code before
    compare(cfg, tmp_path / "report", options=QUICK)
    monkeypatch.setattr(runs, "drop_unweighed", dropping)
    resumed = compare(cfg, tmp_path / "report", options=QUICK, resume=True)
    assert resumed.ae.family == "ae"


def test_a_resumed_comparison_reads_its_data_as_a_resume_does(tmp_path, caplog):
    """What only a new run says of its data (pictures that are not square, cropped) is said by a new comparison and
    not again by its --resume, which continues runs that read the data so already."""
    from PIL import Image

    folder = tmp_path / "oblong"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, size=(12, 8), dtype=np.uint8)).save(folder / f"{i}.png")
    cfg = replace(DIGITS, data=DataConfig(name=str(folder), image_size=8),
                  model=replace(DIGITS.model, latent_dim=2, hidden_dims=(16,)), train=replace(DIGITS.train, epochs=1))
    caplog.set_level("INFO")
    compare(cfg, tmp_path / "report", options=QUICK)
    assert caplog.text.count("its images of 8x12 are not square") == 1
    caplog.clear()
    compare(replace(cfg, train=replace(cfg.train, epochs=2)), tmp_path / "report", options=QUICK, resume=True)
    assert "not square" not in caplog.text
    for family in ("ae", "vae"):  # continued, one epoch more
        assert len((tmp_path / "report" / family / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("flags", [["--model", "vamp", "--vamp-components", "9"],  # fewer than digits' 10 classes
                                   ["--model", "hvae", "--hvae-top-prior", "vamp", "--hvae-top-components", "9"]])
def test_a_family_that_cannot_be_label_conditioned_is_refused_before_the_ae_trains(tmp_path, capsys, flags):
    out = tmp_path / "cmp"
    assert main(["compare", "--data", "digits", *flags, "--condition", "label", "--epochs", "1", "--out", str(out),
                 "--no-progress"]) == 2
    assert "label" in capsys.readouterr().err and not (out / "ae").exists()


def test_per_class_mixture_draws_are_each_class_own_and_refuse_a_class_too_small_to_fit():
    """class_mixture_draws: draw i comes from the mixture of wanted[i]'s class; the classes' draws do not share their
    noise (two classes whose codes differ by a shift do not give draws that differ by it); a class of one item
    (a mixture needs two) or of fewer items than components is refused in one line."""
    from vaekit.compare import class_mixture_draws

    generator = torch.Generator().manual_seed(0)
    base = torch.randn(200, 3, generator=generator)
    codes = torch.cat([base, base + 10.0])  # class 1: class 0's codes shifted
    labels = torch.cat([torch.zeros(200, dtype=torch.long), torch.ones(200, dtype=torch.long)])
    wanted = torch.arange(400) % 2
    z = class_mixture_draws(codes, labels, wanted, 2, seed=0)
    assert bool((z[wanted == 0].mean(1) < 5).all()) and bool((z[wanted == 1].mean(1) > 5).all())
    assert not torch.allclose(z[wanted == 1] - z[wanted == 0], torch.full((200, 3), 10.0), atol=1e-3)
    torch.testing.assert_close(class_mixture_draws(codes, labels, wanted, 2, seed=0), z)  # seeded
    few = torch.tensor([0] * 200 + [1])
    with pytest.raises(vaekit.VaekitError, match=r"^1 training item of class 1 was fitted, and a mixture of 1 "
                                                 r"component needs at least 2: fit more items$"):
        class_mixture_draws(codes[:201], few, torch.tensor([0, 1]), 1, seed=0)
    with pytest.raises(vaekit.VaekitError, match="^2 training items of class seven were fitted, and a mixture of 3 "
                                                 "components needs at least 3: fit more items, or use fewer components"):
        class_mixture_draws(codes[:202], torch.tensor([0] * 200 + [1, 1]), torch.tensor([1]), 3, seed=0,
                            label_names=("six", "seven"))


def test_a_mixture_that_does_not_converge_is_said_in_one_line(caplog):
    """Codes on fewer distinct points than components: scikit-learn's multi-line ConvergenceWarning becomes one line
    naming the class (it reached stderr as it was)."""
    import warnings

    from vaekit.compare import class_mixture_draws

    codes = torch.tensor([[0.0, 0.0], [1.0, 1.0]]).repeat(20, 1)  # two points, four components
    caplog.set_level("WARNING")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none reaches the user as a Python warning
        z = class_mixture_draws(codes, torch.zeros(40, dtype=torch.long), torch.zeros(5, dtype=torch.long), 4, seed=0,
                                label_names=("smile",))
    assert z.shape == (5, 2) and torch.isfinite(z).all()
    assert "the 4-component Gaussian mixture on the codes of class smile did not converge" in caplog.text
