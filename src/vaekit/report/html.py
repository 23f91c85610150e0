"""The comparison as one self-contained HTML page: inline CSS, images as base64 PNG data URIs, no links out."""
from __future__ import annotations

import base64
import html
import io
import re
from typing import TYPE_CHECKING

from PIL import Image

from ..config import RunConfig
from ..networks import resolve_network

if TYPE_CHECKING:  # the page only reads the result; compare.py imports this module, not the reverse
    from ..compare import CompareOptions, CompareResult, ModelScores

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.8em; }
.muted { color: #666; } .small { font-size: 0.9em; }
table { border-collapse: collapse; width: 100%; font-size: 0.93em; }
th, td { border-bottom: 1px solid #e4e4e4; padding: 0.35em 0.6em; vertical-align: top; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.better { font-weight: bold; background: #eef7ee; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 1.5em; align-items: start; }
.single { max-width: 540px; }
figure { margin: 0.5em 0; } figcaption { font-size: 0.9em; color: #444; margin-top: 0.3em; }
figure img { max-width: 100%; image-rendering: pixelated; border: 1px solid #ddd; }
figure img.plot { image-rendering: auto; }
ul.look li { margin-bottom: 0.3em; }
"""


def data_uri(picture: Image.Image) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def figure(picture: Image.Image, caption: str, css_class: str = "") -> str:
    """A picture with its caption, HTML already escaped; its alt text is the caption's text (escaped once)."""
    klass = f' class="{css_class}"' if css_class else ""
    text = html.unescape(re.sub(r"<[^>]+>", "", caption))
    return (f'<figure><img{klass} src="{data_uri(picture)}" alt="{html.escape(text)}">'
            f"<figcaption>{caption}</figcaption></figure>")


def pair(figures: dict, kind: str, captions: dict[str, str], css_class: str = "", layout: str = "pair") -> str:
    """The AE's and the VAE's picture of one kind: side by side ("pair") or one above the other ("stack")."""
    cells = "".join(figure(figures[family][kind], captions[family], css_class) for family in ("ae", "vae"))
    return f'<div class="{layout}">{cells}</div>'


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}g}" if abs(value) < 10 ** digits else f"{value:.0f}"


# (label, key of the number (compare.score_of), reference column, lower is better?, explanation)
Row = tuple[str, str, str, bool | None, str]


def rows(result: "CompareResult", cfg: RunConfig, options: "CompareOptions") -> list[Row]:
    steps = options.interpolation_steps
    even = _fmt(1 / (steps - 1))
    n = result.fcd_items
    accuracy = "n/a" if result.classifier_accuracy is None else f"{result.classifier_accuracy:.1%}"
    gmm = options.gmm_components
    by_class = result.ae.by_class or result.vae.by_class
    # where the compared model's prior takes the label, its draws are z ~ p(z | y), each draw's label given
    drawn = "z ~ p(z), or p(z | y) given each draw's label where the prior takes it" if result.vae.by_class \
        else "z ~ p(z)"
    priors = (f"N(0, I) for the AE, the {html.escape(result.vae.family)}'s own prior given the label" if
              result.vae.by_class else "N(0, I) for the AE and the VAE")
    table: list[Row] = [
        ("Reconstruction squared error", "recon_squared_error", "",
         True, "Sum over pixels of (x − x̂)², mean over the test images; x̂ decodes the posterior mean."),
        ("Reconstruction −log p(x|z)", "recon_nll", "", True,
         f"Nats per test image under each model's own {html.escape(cfg.model.likelihood)} likelihood, "
         "at z = the posterior mean."),
        ("FCD of prior samples", "fcd_prior", f"{_fmt(result.fcd_real)} (real)", True,
         f"Fréchet classifier distance (FCD) between {n} decoded draws {drawn} (each model's prior; {priors}) "
         f"and {n} test images, in the "
         f"hidden features of a small classifier vaekit trains on {html.escape(result.dataset)} "
         f"({accuracy} accuracy on the {html.escape(result.classifier_items)}); "
         "<em>not FID</em>. Reference: real training vs test images."),
    ]
    if gmm:
        fitted = (f"one {gmm}-component Gaussian mixture per class, fit afterwards on each model's encoded training "
                  "codes (posterior means) of that class, each draw from its label's" if by_class else
                  f"a {gmm}-component Gaussian mixture fit afterwards on each model's encoded training codes "
                  "(posterior means)")
        table.append(("FCD of mixture samples" + (" (per class)" if by_class else ""), "fcd_gmm",
                      f"{_fmt(result.fcd_real)} (real)", True,
                      f"The same for z drawn from {fitted}."))
    table.append(("Prior mass in holes", "prior_hole_fraction", f"{1 - options.hole_quantile:.2g} (filled)",
                  True, f"Share of {options.hole_draws} draws {drawn} farther from every encoded training code "
                  f"(one draw of q(z|x) per item) than {options.hole_quantile:.0%} of those codes are from their "
                  "nearest neighbour: prior mass where no data is encoded."))
    if gmm:
        table.append(("Mixture mass in holes" + (" (per class)" if by_class else ""), "gmm_hole_fraction",
                      f"{1 - options.hole_quantile:.2g} (filled)", True, "The same share for draws from the mixture."))
    table += [
        ("Interpolation: mean step", "interpolation.mean_jump", f"{even} (even)",
         True,
         "Mean ‖x<sub>t+1</sub> − x<sub>t</sub>‖ / ‖x<sub>end</sub> − x<sub>start</sub>‖ along decoded "
         "linear "
         f"paths between {result.interpolation_pairs or options.interpolation_pairs} random test pairs ({steps} "
         "images each); "
         "above the even value the path makes a detour."),
        ("Interpolation: largest step", "interpolation.max_jump", f"{even} (even)",
         True,
         "The largest single step / end-to-end distance, mean over the same paths; 1 if the whole change "
         "happens in one step."),
        ("Test KL(q(z|x) ‖ p(z))", "test_kl", "", None,
         "Nats per test image; the AE has no KL term, so its codes are free to sit anywhere."),
        ("Training time (s)", "train_seconds", "", None, f"{cfg.train.epochs} epochs each."),
    ]
    if result.fcd_real is None:  # no labels to train the FCD's classifier on: no FCD rows, rather than n/a ones
        table = [row for row in table if not row[0].startswith("FCD")]
    return table


def score_of(scores: "ModelScores", key: str) -> float | None:
    """A number of ModelScores by key: a field, or "interpolation.<field>" (None where the model has none)."""
    value = scores
    for part in key.split("."):
        value = None if value is None else getattr(value, part)
    return value


SEPARATED = 2.0  # standard errors of the difference by which one model must lead to be marked the better


def better_of(result: "CompareResult", key: str, lower_better: bool | None) -> str | None:
    """'ae' or 'vae' where one is better on this number: by more than SEPARATED standard errors of the difference
    where it has one; the lower (or higher) value where it has none; None for a tie or no direction."""
    ae, vae = score_of(result.ae, key), score_of(result.vae, key)
    if lower_better is None or ae is None or vae is None or ae == vae:
        return None
    gap = result.differences.get(key)
    if gap is not None and (gap["se"] is None or abs(gap["ae_minus_vae"]) <= SEPARATED * gap["se"]):
        return None
    return "ae" if (ae < vae) == lower_better else "vae"


def _cell(scores: "ModelScores", key: str, better: bool) -> str:
    value, se = score_of(scores, key), scores.standard_errors.get(key)
    shown = _fmt(value) if se is None or value is None else f"{_fmt(value)} ± {_fmt(se, 2)}"
    return f'<td class="num{" better" if better else ""}">{shown}</td>'


def numbers_table(result: "CompareResult", cfg: RunConfig, options: "CompareOptions") -> str:
    second = html.escape(result.vae.family.upper())
    lines = [f"<table><tr><th>Metric</th><th>AE</th><th>{second}</th><th>Reference</th><th>What it means</th></tr>"]
    for label, key, reference, lower_better, explanation in rows(result, cfg, options):
        better = better_of(result, key, lower_better)
        cells = _cell(result.ae, key, better == "ae") + _cell(result.vae, key, better == "vae")
        direction = "" if lower_better is None else " <span class='muted'>(lower is better)</span>"
        lines.append(f"<tr><td>{label}</td>{cells}<td class='num'>{reference}</td>"
                     f"<td>{explanation}{direction}</td></tr>")
    lines.append("</table>")
    fcd = "" if result.fcd_real is None else (" For an FCD it is the spread of the distance over bootstrap "
                                              "resamples of both image sets, paired between the two models.")
    lines.append(f"<p class='small muted'>± is one standard error of the mean over the test items (reconstruction), "
                 f"the draws (holes; Agresti-Coull, so that a share of none or all draws is not shown as exact) or "
                 f"the test pairs (interpolation).{fcd} A number is in bold where its model leads by more than "
                 f"{SEPARATED:g} standard errors of the difference (for reconstruction and interpolation, "
                 f"paired over the same test items and pairs); no bold is a tie at this sample size.</p>")
    return "\n".join(lines)


COLLAPSED_KL = 1.0  # nats per item: below this a family's codes say almost nothing about its items


def collapsed(scores: "ModelScores") -> bool:
    """Whether a family with a KL term ended with (almost) none: its posterior collapsed onto the prior."""
    return scores.test_kl is not None and scores.test_kl < COLLAPSED_KL


def verdict(result: "CompareResult") -> str:
    """One sentence per headline number, read off this run (not a claim made in advance)."""
    ae, vae = result.ae, result.vae
    name = html.escape(vae.family.upper())
    said = []
    if collapsed(vae):
        said.append(f"<b>Warning: the {name}'s posterior collapsed</b> (KL {vae.test_kl:.2g} nats per test item): its "
                    "codes carry almost nothing about the items, so its pictures and numbers below are those of a "
                    "model that has not learned a latent space yet, and the comparison says little. Train longer "
                    "(<code>--epochs</code>) or with a smaller <code>--beta</code>.")
    if ae.fcd_prior is not None and vae.fcd_prior is not None:
        winner = {"ae": "AE", "vae": name}.get(better_of(result, "fcd_prior", True))
        said.append(f"Prior samples: FCD {_fmt(ae.fcd_prior)} (AE) vs {_fmt(vae.fcd_prior)} ({name}): "
                    + (f"the {winner} generates closer to the test images from its prior." if winner else
                       "no clear difference at this sample size."))
    said.append(f"Prior mass in holes: {ae.prior_hole_fraction:.0%} (AE) vs {vae.prior_hole_fraction:.0%} ({name}).")
    if ae.fcd_gmm is not None and vae.fcd_gmm is not None:
        said.append(f"With the Gaussian-mixture sampler the AE's FCD goes from {_fmt(ae.fcd_prior)} to "
                    f"{_fmt(ae.fcd_gmm)}, the {name}'s from {_fmt(vae.fcd_prior)} to {_fmt(vae.fcd_gmm)}.")
    gap = result.differences.get("recon_squared_error")
    paired = "" if gap is None or gap["se"] is None else (
        f", a difference of {_fmt(gap['ae_minus_vae'])} ± {_fmt(gap['se'], 2)} over the same test items")
    said.append(f"Reconstruction squared error: {_fmt(ae.recon_squared_error)} (AE) vs "
                f"{_fmt(vae.recon_squared_error)} ({name}){paired}.")
    return "<ul>" + "".join(f"<li>{s}</li>" for s in said) + "</ul>"


INTRO = """
<p>An autoencoder (AE) and a variational autoencoder (VAE) with <em>the same</em> encoder and decoder networks,
trained on the same data for the same number of epochs. The AE only learns to reconstruct. The VAE also pays
KL(q(z|x) ‖ p(z)) per item (p(z) = N(0, I) for a plain VAE), which pulls its codes onto the prior it will later be
sampled from.</p>
<p>What to look for:</p>
<ul class="look">
<li><b>Reconstructions</b>: the AE, which spends nothing on the KL term, usually reconstructs a little sharper.</li>
<li><b>Prior samples</b>: decoding z ~ p(z) only works where training codes lie. The AE's codes fill an arbitrary
region with holes, so its prior samples are mostly unlike the data; the VAE's resemble it.</li>
<li><b>Mixture samples</b>: fitting a Gaussian mixture to the encoded codes afterwards and sampling from it
is what makes a plain AE generate at all; with its sharper decoder it can then beat the VAE, whose samples
are often blurry (Ghosh et al. 2020, "From variational to deterministic autoencoders").</li>
<li><b>Posterior variations</b>: the AE's posterior is a single point, so every draw is the same image; the
VAE's draws vary around the item.</li>
<li><b>Interpolations</b>: between two items the AE's path may pass through unlike images or jump; the
VAE's usually changes gradually.</li>
<li><b>Latent maps</b>: the codes projected to 2-D, beside the decoded plane; look for empty regions between
classes and for where N(0, I) would put its mass.</li>
</ul>
"""


def render_report(result: "CompareResult", cfg: RunConfig, options: "CompareOptions", figures: dict) -> str:
    name = html.escape(result.dataset)
    steps = options.interpolation_steps
    accuracy = result.classifier_accuracy
    classifier = ("none: the data have no labels" if accuracy is None
                  else f"{accuracy:.1%} accuracy on the {html.escape(result.classifier_items)}")
    second = html.escape(result.vae.family.upper())
    colour = "" if accuracy is None else " coloured by label"  # (the classifier's accuracy: None without labels)
    both = lambda text: {"ae": f"AE: {text}", "vae": f"{second}: {text}"}  # noqa: E731
    # the AE's own words where the VAE's are about a posterior: it has a code, a point (so has a second family
    # whose encoder gives points: a vqvae's, a Wasserstein AE's)
    each = lambda ae, vae: {"ae": f"AE: {ae}", "vae": f"{second}: {ae if result.vae.point_codes else vae}"}  # noqa
    sections = [
        f"<h1>AE vs {second} on {name}</h1>",
        f"<p class='muted'>vaekit compare · latent dimension {cfg.model.latent_dim} · {cfg.train.epochs} epochs · "
        f"seed {cfg.train.seed} · network {resolve_network(cfg.model)} · likelihood "
        f"{html.escape(cfg.model.likelihood)} · runs saved in <code>ae/</code> and <code>vae/</code></p>",
        INTRO,
        "<h2>Numbers</h2>", "<p>In this run:</p>", verdict(result), numbers_table(result, cfg, options),
        "<h2>Reconstructions</h2>",
        f'<div class="single">{figure(figures["data"]["inputs"], f"The first {options.shown_items} test items.")}'
        "</div>",
        pair(figures, "reconstructions", each("decoded codes of the inputs above.",
                                              "decoded posterior means of the inputs above.")),
        "<h2>Prior samples</h2>",
        pair(figures, "prior", {"ae": f"AE: decoded draws z ~ {html.escape(result.ae.prior)}.",
                                "vae": f"{second}: decoded draws z ~ p(z | y), the model's own prior given each "
                                       f"draw's label: {html.escape(result.vae.prior)}." if result.vae.by_class else
                                       f"{second}: decoded draws z ~ p(z), the model's own prior: "
                                       f"{html.escape(result.vae.prior)}."}),
    ]
    if "gmm" in figures["ae"]:
        sections += ["<h2>Gaussian-mixture samples</h2>",
                     pair(figures, "gmm", both(
                         f"decoded draws from {options.gmm_components}-component Gaussian mixtures, one per class fit "
                         "on that class's encoded training codes, each draw from its label's."
                         if result.ae.by_class or result.vae.by_class else
                         f"decoded draws from a {options.gmm_components}-component Gaussian mixture fit on the "
                         "encoded training codes."))]
    sections += [
        "<h2>Posterior variations of one item</h2>",
        f'<div class="single" style="max-width:120px">{figure(figures["data"]["vary_item"], "Test item 0.")}</div>',
        pair(figures, "vary", each(f"{options.shown_items} decodes of test item 0's code: a point, so every one "
                                   "is the same image.",
                                   f"{options.shown_items} decoded draws z ~ q(z|x) for test item 0.")),
        "<h2>Interpolations</h2>",
        pair(figures, "interpolation", each(f"one random test pair per row, {steps} decoded steps along the straight "
                                            "line between their codes.",
                                            f"one random test pair per row, {steps} decoded steps along the straight "
                                            "line between their posterior means.")),
        "<h2>Latent maps</h2>",
        pair(figures, "latent_map", each(f"left, the codes of the test items{colour} (PCA for more than 2 "
                                         "dimensions); right, the decoded plane.",
                                         f"left, posterior means of the test items{colour} (PCA for more than 2 "
                                         "dimensions); right, the decoded plane."),
             css_class="plot", layout="stack"),
        "<h2>Setup</h2>",
        "<p class='small'>Both runs use one config except the model family; the full config is in "
        "<code>ae/config.json</code> and <code>vae/config.json</code>, the numbers in <code>compare.json</code>. "
        + ("The data have no labels, so there is no FCD classifier and no FCD.</p>" if result.fcd_real is None else
           f"The FCD classifier ({classifier}) is trained by vaekit on the training split of {name}, seeded; "
           f"FCDs use {result.fcd_items} images per side, so compare them only with FCDs computed at the same "
           "size.</p>"),
    ]
    body = "\n".join(sections)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>vaekit compare: AE vs VAE on {name}</title><style>{STYLE}</style></head>\n"
            f"<body>\n{body}\n</body></html>\n")
