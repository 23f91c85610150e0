"""AE vs VAE side by side: train both with the same networks, measure them, write one self-contained HTML report."""
from __future__ import annotations

import dataclasses

import logging
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from . import checkpoint, latent, runs, viz
from .config import COMPONENT_SETTINGS, RunConfig, without_options
from .data import Dataset, TensorData, hold_out, load_dataset
from .data.user import for_new_runs
from .errors import VaekitError
from .files import atomic_write, write_text
from .metrics import reconstruction_error
from .models import Model, build_model, draw_prior
from .progress import bar_timing
from .threads import as_torch
from .train import mean_terms
from .report.classifier import FeatureClassifier, train_feature_classifier
from .report.html import collapsed, render_report
from .report.metrics import (
    InterpolationSmoothness, feature_frechet_distance, frechet_distance, hole_flags, interpolation_smoothness,
    path_jumps, prior_hole_fraction, share_standard_error, standard_error,
)

log = logging.getLogger(__name__)
FAMILIES = ("ae", "vae")  # the report's two slots: the plain AE baseline first, then the probabilistic family
REPORT_FILE = "index.html"
METRICS_FILE = "compare.json"

__all__ = [
    "CompareOptions", "CompareResult", "InterpolationSmoothness", "ModelScores", "compare", "feature_frechet_distance",
    "frechet_distance", "interpolation_smoothness", "prior_hole_fraction",
]


MAX_PATH_IMAGES = 100_000  # decoded interpolation images per model (the default decodes 32 x 10)


@dataclass(frozen=True)
class CompareOptions:
    gmm_components: int = 10  # post-hoc Gaussian mixture on the training codes; 0 disables it
    classifier_steps: int = 1000  # training batches (rounded up to whole epochs) of the FCD feature classifier
    fcd_items: int = 10_000  # at most this many generated and real images per Fréchet distance
    hole_quantile: float = 0.99  # code-to-code nearest-neighbour distance that defines "near the data"
    hole_codes: int = 10_000  # at most this many training codes as the reference set of the hole metric
    hole_draws: int = 2_000  # prior (and mixture) draws tested for holes
    interpolation_pairs: int = 32  # random test pairs behind the smoothness numbers
    interpolation_steps: int = 10  # images per path, endpoints included
    shown_items: int = 16  # reconstructions and posterior draws shown
    shown_samples: int = 64  # prior and mixture samples shown
    shown_pairs: int = 6  # interpolation paths shown

    def __post_init__(self) -> None:
        checks = [
            (self.gmm_components >= 0, f"gmm_components must be >= 0 (0 disables it), got {self.gmm_components}"),
            (self.classifier_steps >= 1, f"classifier_steps must be >= 1, got {self.classifier_steps}"),
            (self.fcd_items >= 2, f"fcd_items must be >= 2, got {self.fcd_items}"),
            (0 < self.hole_quantile < 1, f"hole_quantile must be in (0, 1), got {self.hole_quantile}"),
            (self.hole_codes >= 2 and self.hole_draws >= 1, "hole_codes must be >= 2 and hole_draws >= 1"),
            (self.interpolation_pairs >= 1, f"interpolation_pairs must be >= 1, got {self.interpolation_pairs}"),
            (self.interpolation_steps >= 3, f"interpolation_steps must be >= 3, got {self.interpolation_steps}"),
            (self.interpolation_pairs * self.interpolation_steps <= MAX_PATH_IMAGES,
             f"interpolation_pairs x interpolation_steps must be at most {MAX_PATH_IMAGES:,} decoded images per "
             f"model, got {self.interpolation_pairs:,} x {self.interpolation_steps:,}: ask for fewer pairs"),
        ]
        for ok, message in checks:
            if not ok:
                raise VaekitError(f"compare: {message}")


@dataclass(frozen=True)
class ModelScores:
    """One model's numbers; None where a number does not apply (no labels, mixture disabled)."""

    family: str
    recon_squared_error: float  # sum over pixels of (x - x_hat)^2, mean over test images; x_hat: decoded posterior mean
    recon_nll: float  # -log p(x | z = posterior mean), nats per test image
    fcd_prior: float | None  # Fréchet classifier distance: decoded prior draws z ~ p(z) vs test images
    fcd_gmm: float | None  # the same for z from the mixture fit on training codes
    prior_hole_fraction: float  # share of prior draws z ~ p(z) far from every training code
    gmm_hole_fraction: float | None  # the same for mixture draws
    interpolation: InterpolationSmoothness | None  # None where every decoded path is one image (a code ignored)
    test_kl: float | None  # KL(q(z|x) || p(z)) on the test split after training (None for the AE: it has none)
    test_terms: dict[str, float]  # every term the family reports, on the test split after training (loss, recon, ...)
    train_seconds: float
    prior: str = "N(0, I)"  # the prior p(z) its samples are drawn from, in words (Model.prior_text)
    point_codes: bool = False  # one code per item, no posterior to draw from (latent.point_codes): the AE's, a vqvae's
    # by class: its mixture draws came from one mixture per class (each draw its label's), as for a compared model whose
    # prior takes the label (whose prior draws were then given each draw's label too)
    by_class: bool = False
    # the standard error of each number above that has one (UNCERTAIN's keys: means over test items, draws or test
    # pairs; bootstrap for the FCDs)
    standard_errors: dict[str, float | None] = field(default_factory=dict)


# The numbers with a standard error, by key (a ModelScores field, or "interpolation.<field>"), and how the two models'
# difference is judged: "paired" over the same units (test items, test pairs), "unpaired" (draws from each model's own
# prior or mixture), "bootstrap" (an FCD: paired bootstrap replicates, SampleQuality.fcd_and_resamples).
UNCERTAIN = {
    "recon_squared_error": "paired", "recon_nll": "paired", "fcd_prior": "bootstrap", "fcd_gmm": "bootstrap",
    "prior_hole_fraction": "unpaired", "gmm_hole_fraction": "unpaired",
    "interpolation.mean_jump": "paired", "interpolation.max_jump": "paired",
}

SHARES = {"prior_hole_fraction", "gmm_hole_fraction"}  # shares of yes/no draws: share_standard_error


def spread(values: np.ndarray, key: str) -> float | None:
    """The standard error of a number from its values: per unit (NaN for a unit left out), or bootstrap replicates."""
    if UNCERTAIN[key] == "bootstrap":
        return float(np.std(values, ddof=1)) if len(values) > 1 else None
    return share_standard_error(values) if key in SHARES else standard_error(values)


def difference(key: str, ae: ModelScores, vae: ModelScores, ae_values: np.ndarray,
               vae_values: np.ndarray) -> dict[str, float | str | None]:
    """AE minus the other model on one number, with the standard error of that difference: over the shared units
    (units either model lacks, NaN, left out) or the paired replicates, else from the two standard errors."""
    how = UNCERTAIN[key]
    if how == "paired":
        d = ae_values - vae_values
        d = d[~np.isnan(d)]
        return {"ae_minus_vae": float(d.mean()), "se": standard_error(d), "how": how}
    gap = getattr(ae, key) - getattr(vae, key)
    if how == "bootstrap":
        return {"ae_minus_vae": gap, "se": spread(ae_values - vae_values, key), "how": how}
    a, b = ae.standard_errors.get(key), vae.standard_errors.get(key)
    return {"ae_minus_vae": gap, "se": None if a is None or b is None else float(np.hypot(a, b)), "how": how}


@dataclass(frozen=True)
class CompareResult:
    dataset: str
    ae: ModelScores
    vae: ModelScores
    classifier_accuracy: float | None  # accuracy of the FCD feature classifier, on the items classifier_checked_on
    # names (the test split, unless its classes are not the training split's)
    fcd_real: float | None  # FCD of real training images vs test images: the floor at this sample size
    fcd_items: int  # images per side in every FCD
    report: Path
    runs: dict[str, Path] = field(default_factory=dict)  # family -> run folder (vaekit.load it)
    classifier_checked_on: str | None = "test"  # which items classifier_accuracy is measured on
    # per UNCERTAIN key both models have: {"ae_minus_vae", "se" (of the difference), "how" (UNCERTAIN's value)}
    differences: dict[str, dict] = field(default_factory=dict)
    interpolation_pairs: int | None = None  # the test pairs drawn (fewer than asked where the test split is tiny)

    def scores(self) -> tuple[ModelScores, ModelScores]:
        return self.ae, self.vae

    @property
    def classifier_items(self) -> str:
        """The items the classifier's accuracy is measured on, in words, with why where they are not the test's."""
        if self.classifier_checked_on == "held-out training":
            return "held-out training items (the test split's classes are not the training split's)"
        return f"{self.classifier_checked_on or 'test'} items"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["report"] = str(self.report)
        data["runs"] = {family: str(path) for family, path in self.runs.items()}
        return data


# ---- the pieces, each a function of a trained model ------------------------------------------------

@torch.no_grad()
def decode_batches(model: Model, z: torch.Tensor, batch_size: int = 500, y: torch.Tensor | None = None,
                   codes: bool = False) -> torch.Tensor:
    """Decoded likelihood means of latents z (codes=True: of codes) in batches, with labels y where conditioned."""
    out = []
    for start in range(0, len(z), batch_size):
        batch = z[start:start + batch_size].to(model.device)
        yb = None if y is None else y[start:start + batch_size]
        px = model.decode_code(batch, yb) if codes else model.decode(batch, yb)
        out.append(px.mean.cpu())
    return torch.cat(out)


def prior_draws(model: Model, n: int, seed: int, y: torch.Tensor | None = None) -> torch.Tensor:
    """The codes of n draws from the model's own prior, seeded: (n, *code_shape), on the CPU; given the labels y
    (n,) where its prior takes them."""
    return model.draw_code(draw_prior(model, n, torch.Generator().manual_seed(seed), y)).cpu()


def label_draws(dataset: Dataset, model: Model, n: int, seed: int) -> torch.Tensor | None:
    """Labels for a label-conditioned model's draws, from the training labels' own frequencies; else None."""
    if not model.num_labels:
        return None
    index = torch.randint(0, len(dataset.y_train), (n,), generator=torch.Generator().manual_seed(seed + 7))
    return dataset.y_train[index]


def fit_mixture(codes: torch.Tensor, components: int, seed: int, of: str = "the codes"):
    """A full-covariance Gaussian mixture on codes: an explicit density to sample z from (Ghosh et al. 2020).
    scikit-learn's warning that the fit did not converge (codes on a few points) is said in one line, naming `of`."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    with warnings.catch_warnings(record=True) as caught, as_torch():
        warnings.simplefilter("always", ConvergenceWarning)
        mixture = GaussianMixture(components, covariance_type="full", random_state=seed).fit(codes.double().numpy())
    for warning in caught:
        if issubclass(warning.category, ConvergenceWarning):
            log.warning("the %d-component Gaussian mixture on %s did not converge (the codes lie on fewer distinct "
                        "points than components, or nearly): its draws are the fitted mixture's; fewer components "
                        "fit it better", components, of)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return mixture


def mixture_draws(mixture, n: int, seed: int) -> torch.Tensor:
    z, _ = mixture.sample(n)  # grouped by component: shuffle so that any prefix is a fair sample
    z = z[np.random.default_rng(seed).permutation(n)]
    return torch.from_numpy(z).float()


def class_mixture_draws(codes: torch.Tensor, code_labels: torch.Tensor, wanted: torch.Tensor, components: int,
                        seed: int, label_names: Sequence[str] = ()) -> torch.Tensor:
    """One draw for each label in `wanted` (n,), from a Gaussian mixture fitted to the codes (N, d) of that class
    alone (code_labels (N,)): for a model whose codes carry the class (a label-conditioned vqvae), where one mixture
    of all the codes would draw every class alike. (n, d). `label_names`: the classes' names, for messages."""
    z = torch.empty(len(wanted), codes.shape[1])
    for label in wanted.unique().tolist():
        own = codes[code_labels == label]
        name = label_names[label] if label < len(label_names) else str(label)
        if len(own) < max(components, 2):
            one = len(own) == 1
            raise VaekitError(f"{len(own)} training item{'' if one else 's'} of class {name} {'was' if one else 'were'} "
                              f"fitted, and a mixture of {components} component{'s' if components > 1 else ''} needs "
                              f"at least {max(components, 2)}: fit more items"
                              + (", or use fewer components" if components > 1 else ""))
        log.info("fitting a %d-component Gaussian mixture to the codes of the %d training items of class %s ...",
                 components, len(own), name)
        own_seed = seed + 1 + int(label)  # each class its own draws (one seed for all drew the same noise for each)
        mixture = fit_mixture(own, components, own_seed, f"the codes of class {name}")
        z[wanted == label] = mixture_draws(mixture, int((wanted == label).sum()), own_seed)
    return z


def interpolation_paths(model: Model, x: torch.Tensor, pairs: np.ndarray, steps: int,
                        y: torch.Tensor | None = None) -> torch.Tensor:
    """Decoded linear paths between the codes of test pairs: (P, steps, *data_shape)."""
    label = (lambda i: None) if y is None else (lambda i: y[i])  # noqa: E731
    return torch.stack([latent.interpolate(model, x[i], x[j], steps, y1=label(i), y2=label(j)).cpu()
                        for i, j in pairs])


def random_pairs(n_items: int, n_pairs: int, seed: int) -> np.ndarray:
    """n_pairs different pairs of different test items (a pair and its reverse draw one path): (P, 2). Every pair,
    in random order, where the items make fewer than n_pairs; so the paths behind a standard error are distinct."""
    if n_items < 2:
        raise VaekitError(f"interpolation needs at least 2 test items, got {n_items}")
    rng = np.random.default_rng(seed)
    possible = n_items * (n_items - 1) // 2
    if possible <= n_pairs:
        first, second = np.triu_indices(n_items, 1)
        order = rng.permutation(possible)
        return np.stack([first[order], second[order]], 1)
    first = rng.integers(0, n_items, n_pairs)
    second = (first + rng.integers(1, n_items, n_pairs)) % n_items  # never the same item twice
    pairs, seen = [], set()
    for a, b in zip(first.tolist(), second.tolist(), strict=True):
        if (min(a, b), max(a, b)) not in seen:
            seen.add((min(a, b), max(a, b)))
            pairs.append((a, b))
    while len(pairs) < n_pairs:  # a pair drawn twice: another in its place
        a = int(rng.integers(0, n_items))
        b = (a + int(rng.integers(1, n_items))) % n_items
        if (min(a, b), max(a, b)) not in seen:
            seen.add((min(a, b), max(a, b)))
            pairs.append((a, b))
    return np.array(pairs, dtype=np.int64)


def subset_index(items: int, n: int, seed: int) -> torch.Tensor:
    if items <= n:
        return torch.arange(items)
    return torch.randperm(items, generator=torch.Generator().manual_seed(seed))[:n]


def subset(x: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    return x[subset_index(len(x), n, seed)]


# ---- the comparison ----------------------------------------------------------------------------------

class SampleQuality:
    """FCD against a fixed set of real test images; every method returns None when the data has no labels."""

    RESAMPLES = 200  # bootstrap resamples behind an FCD's standard error

    def __init__(self, dataset: Dataset, options: CompareOptions, seed: int, progress: bool = False) -> None:
        self.items, self.seed = min(options.fcd_items, len(dataset.x_test)), seed
        self.classifier: FeatureClassifier | None = None
        self.real_features = self.train_vs_test = None
        if dataset.y_train is None or dataset.y_test is None:
            log.warning("%s has no labels: no classifier to compute the FCD with; those numbers are left out",
                        dataset.name)
            return
        log.info("training the feature classifier for the FCD (%d steps, rounded up to whole epochs) ...",
                 options.classifier_steps)
        self.classifier = train_feature_classifier(dataset, steps=options.classifier_steps, seed=seed,
                                                   progress=progress)
        self.real_features = self.classifier.features_of(subset(dataset.x_test, self.items, seed))
        self.train_vs_test = self.fcd(subset(dataset.x_train, self.items, seed + 1))

    @property
    def accuracy(self) -> float | None:
        return None if self.classifier is None else self.classifier.test_accuracy

    @property
    def checked_on(self) -> str | None:
        return None if self.classifier is None else self.classifier.checked_on

    def fcd(self, images: torch.Tensor) -> float | None:
        """The FCD alone (the real images' floor needs no standard error)."""
        if self.classifier is None:
            return None
        return feature_frechet_distance(self.classifier.features_of(images[:self.items]), self.real_features)

    def fcd_and_resamples(self, images: torch.Tensor) -> tuple[float | None, np.ndarray | None]:
        """The FCD, and its value on RESAMPLES bootstrap resamples of both image sets. The resamples are drawn from one
        seed, so two models' replicates are paired: replicate i resamples the same real images and the same draw
        positions for both."""
        if self.classifier is None:
            return None, None
        generated = self.classifier.features_of(images[:self.items])
        value = feature_frechet_distance(generated, self.real_features)
        rng = np.random.default_rng(self.seed)
        replicates = np.array([
            feature_frechet_distance(generated[rng.integers(0, len(generated), len(generated))],
                                     self.real_features[rng.integers(0, len(self.real_features),
                                                                     len(self.real_features))])
            for _ in range(self.RESAMPLES)
        ])
        return value, replicates


def latent_map_picture(model: Model, dataset: Dataset, point: bool) -> Image.Image:
    latent_map = latent.latent_map(model, dataset.x_test, dataset.y_test, y=_labels(model, dataset.y_test))
    with tempfile.TemporaryDirectory(prefix="vaekit-compare-") as folder:
        path = viz.plot_latent_map(latent_map, Path(folder) / "map.png", label_names=dataset.label_names,
                                   manifold=model, split="test", codes="codes" if point else "posterior means")
        return Image.open(path).convert("RGB")  # convert() reads the file before the folder goes


def test_kl(terms: dict[str, float]) -> float | None:
    """The regularizer, whatever the family calls its parts (kl, kl_z1 + kl_z2, ...): -ELBO - recon, from the means
    of mean_terms. None for a family without a bound (the AE)."""
    if terms.get("elbo") is None or terms.get("recon") is None:
        return None
    return -terms["elbo"] - terms["recon"]


def _smoothness(paths: torch.Tensor, family: str) -> InterpolationSmoothness | None:
    """The paths' smoothness; None (said, not raised: both models are trained by now) where every path is one
    image, a decoder that ignores its code."""
    try:
        return interpolation_smoothness(paths)
    except VaekitError:
        log.warning("the %s decodes every test pair's path to one image (its decoder ignores the code): the report "
                    "shows no interpolation numbers for it", family.upper())
        return None


def _labels(model: Model, y: torch.Tensor | None) -> torch.Tensor | None:
    return y if model.num_labels else None


def measure(run: runs.RunResult, dataset: Dataset, quality: SampleQuality, pairs: np.ndarray,
            options: CompareOptions, seed: int, by_class: bool | None = None, progress: bool = False
            ) -> tuple[ModelScores, dict[str, Image.Image], dict[str, np.ndarray]]:
    """One trained model's numbers, pictures, and the values behind their standard errors (UNCERTAIN's keys: per
    test item, draw or pair, NaN for a pair it skips; an FCD's bootstrap replicates); the same draws, pairs and real
    images for every model. `progress`: a bar over its stages (on a terminal; in a log file, a line every 30 s)."""
    stages = ["reconstructions", "codes", *(["mixture"] if options.gmm_components else []), "holes",
              "interpolations", "test ELBO", "FCD", "pictures"]
    with tqdm(total=len(stages), desc=f"measuring the {run.model.family.upper()}", unit="stage", leave=False,
              postfix=stages[0], disable=not progress, dynamic_ncols=True, **bar_timing()) as bar:
        def stage(name: str) -> None:  # the stage about to run, after the one before it is done (a refresh of
            if name != stages[0]:      # its own would show the bar in a log file, past tqdm's delay)
                bar.set_postfix_str(name, refresh=False)
                bar.update(1)

        measured = _measure(run, dataset, quality, pairs, options, seed, by_class, stage)
        bar.update(1)
        return measured


def _measure(run: runs.RunResult, dataset: Dataset, quality: SampleQuality, pairs: np.ndarray,
             options: CompareOptions, seed: int, by_class: bool | None, stage: Any
             ) -> tuple[ModelScores, dict[str, Image.Image], dict[str, np.ndarray]]:
    stage("reconstructions")
    model, x_test, x_train = run.model, dataset.x_test, dataset.x_train
    y_test, y_train = _labels(model, dataset.y_test), _labels(model, dataset.y_train)
    n_draws = max(options.hole_draws, quality.items)
    errors = reconstruction_error(model, x_test, y_test)
    units = {"recon_squared_error": errors.squared_error.double().numpy(),
             "recon_nll": errors.nll_at_mean.double().numpy()}
    stage("codes")
    # The decoder was trained on draws from q(z|x): one per item samples the aggregate posterior the prior should cover.
    chosen = subset_index(len(x_train), options.hole_codes, seed)
    codes = latent.encode_dataset(model, x_train[chosen], sample=True, generator=torch.Generator().manual_seed(seed),
                                  y=None if y_train is None else y_train[chosen]).flatten(1).numpy()
    shown = max(quality.items, options.shown_samples)
    # by class (the default where the model's prior takes the label; compare asks it of both models where either's
    # does, so that their mixture rows are one method): one mixture per class, each draw from its label's
    by_class = (model.prior_takes_labels if by_class is None else by_class) and bool(model.num_labels) \
        and y_train is not None
    if model.prior_takes_labels or by_class:  # each draw's label, which the shown draws are decoded with too
        prior_labels = label_draws(dataset, model, n_draws, seed)
        draw_labels = prior_labels[:shown]
        z_prior = prior_draws(model, n_draws, seed, prior_labels if model.prior_takes_labels else None)
    else:
        z_prior, draw_labels = prior_draws(model, n_draws, seed), label_draws(dataset, model, shown, seed)
    prior_images = decode_batches(model, z_prior[:shown], y=draw_labels, codes=True)
    gmm_images = fcd_gmm = None
    if options.gmm_components:
        stage("mixture")
        train_codes = latent.encode_dataset(model, x_train, y=y_train).flatten(1)
        if by_class:  # codes that carry the class: each draw from its own class's mixture
            z_gmm = class_mixture_draws(train_codes, y_train, prior_labels, options.gmm_components, seed,
                                        model.config.label_names)
        else:
            z_gmm = mixture_draws(fit_mixture(train_codes, options.gmm_components, seed), n_draws, seed)
        z_gmm = z_gmm.reshape(-1, *model.code_shape)
        gmm_images = decode_batches(model, z_gmm[:shown], y=draw_labels, codes=True)
        units["gmm_hole_fraction"] = hole_flags(codes, z_gmm[:options.hole_draws].flatten(1).numpy(),
                                                options.hole_quantile).astype(np.float64)
        fcd_gmm, units["fcd_gmm"] = quality.fcd_and_resamples(gmm_images)
    stage("holes")
    units["prior_hole_fraction"] = hole_flags(codes, z_prior[:options.hole_draws].flatten(1).numpy(),
                                              options.hole_quantile).astype(np.float64)
    stage("interpolations")
    paths = interpolation_paths(model, x_test, pairs, options.interpolation_steps, y_test)
    smoothness = _smoothness(paths, model.family)
    if smoothness is not None:
        units["interpolation.mean_jump"], units["interpolation.max_jump"] = path_jumps(paths)
    # the compared model (early stopping's best epoch, where it kept one) on the test split, whatever each epoch
    # was judged on
    stage("test ELBO")
    terms = mean_terms(model, TensorData(x_test, y_test))
    stage("FCD")
    fcd_prior, units["fcd_prior"] = quality.fcd_and_resamples(prior_images)
    units = {key: values for key, values in units.items() if values is not None}  # no FCDs without labels
    mean = lambda key: float(np.nanmean(units[key])) if key in units else None  # noqa: E731
    scores = ModelScores(
        family=model.family, recon_squared_error=mean("recon_squared_error"), recon_nll=mean("recon_nll"),
        fcd_prior=fcd_prior, fcd_gmm=fcd_gmm,
        prior_hole_fraction=mean("prior_hole_fraction"), gmm_hole_fraction=mean("gmm_hole_fraction"),
        interpolation=smoothness, prior=model.prior_text, point_codes=latent.point_codes(model, x_test, y_test),
        by_class=by_class,
        test_kl=test_kl(terms), test_terms=terms,
        train_seconds=sum(r.seconds for r in run.history),
        standard_errors={key: spread(values, key) for key, values in units.items()},
    )
    stage("pictures")
    shown_x = x_test[:options.shown_items]
    shown_y = None if y_test is None else y_test[:options.shown_items]
    figures = {
        "reconstructions": viz.image_grid(model.reconstruct(shown_x.to(model.device), shown_y).cpu(), ncol=8),
        "prior": viz.image_grid(prior_images[:options.shown_samples]),
        "vary": viz.image_grid(
            latent.vary(model, x_test[0], options.shown_items, torch.Generator().manual_seed(seed),
                        y=None if y_test is None else y_test[0]).cpu(), ncol=8
        ),
        "interpolation": viz.image_grid(paths[:options.shown_pairs].flatten(0, 1), ncol=options.interpolation_steps),
        "latent_map": latent_map_picture(model, dataset, scores.point_codes),
    }
    if gmm_images is not None:
        figures["gmm"] = viz.image_grid(gmm_images[:options.shown_samples])
    return scores, figures, units


def _check_out(out: Path, overwrite: bool, resume: bool) -> None:
    if overwrite and resume:
        raise VaekitError("--overwrite trains both models afresh and --resume continues them: drop one of them")
    held = [out / family for family in FAMILIES if (out / family / checkpoint.CONFIG_FILE).exists()]
    if held and not overwrite and not resume:
        raise VaekitError(f"{held[0]} already holds a run: pass --resume to continue that comparison (its finished runs "
                          "kept), --overwrite to train both models again, or choose another --out")


def _continued(directory: Path, cfg: RunConfig, dataset: Dataset, loaded: bool) -> runs.RunResult:
    """The run in `directory`, continued (or, finished, loaded as it is): it must be the run `cfg` would train; a
    setting that differs is named (the comparison would not be of the models asked for)."""
    held = runs.drop_unweighed(checkpoint.load_config(directory), say=False)  # (an AE recorded before they dropped)
    planned = runs.resolve_config(cfg, *hold_out(dataset, cfg.data, cfg.train.early_stopping is not None))
    ours, theirs = planned.to_dict(), held.to_dict()
    if not theirs["model"].get("untrained_labels"):  # (none, or a run written before they were kept: its data is
        ours["model"].pop("untrained_labels", None)   # checked apart)
    # a run that has the value a family setting gave runs written before it existed (a vqvae's masked prior) goes on
    # with it where the comparison asks for that setting's default: the command that made it asked for no other
    for (family, name), before in checkpoint.FAMILY_SETTINGS_BEFORE.items():
        asked, held_values = ours["model"].get(family), theirs["model"].get(family)
        if isinstance(asked, dict) and isinstance(held_values, dict) and held_values.get(name) == before and \
                asked.get(name) == getattr(COMPONENT_SETTINGS[family](), name):
            asked[name] = before
    differ = [f"{section}.{key}" + (f".{inner}" if inner else "") for section in ("data", "model", "train")
              for key in sorted(set(ours[section]) | set(theirs[section]))
              if not (section == "train" and key in runs.RESUMABLE)
              and ours[section].get(key) != theirs[section].get(key)
              for inner in _differing_keys(ours[section].get(key), theirs[section].get(key))]
    if differ:
        raise VaekitError(f"{directory} holds a run of other settings ({', '.join(differ[:4])}"
                          f"{' ...' if len(differ) > 4 else ''}): give the comparison's own settings to continue it, "
                          "or --overwrite to train both models again")
    return runs.resume(directory, **{name: getattr(cfg.train, name) for name in runs.RESUMABLE},
                       dataset=None if loaded else dataset)  # (--epochs a new total; --minutes all its training)


def _differing_keys(ours: Any, theirs: Any) -> list[str]:
    """The keys of two settings mappings (a family's) whose values differ; [""] for values that are not both ones."""
    if not (isinstance(ours, dict) and isinstance(theirs, dict)):
        return [""]
    return [key for key in sorted(set(ours) | set(theirs)) if ours.get(key) != theirs.get(key)] or [""]


def _stage_done(directory: Path, stage: str, epochs: int) -> bool:
    """Whether a later stage finished its epochs (its metrics file holds one line per epoch trained)."""
    path = directory / runs.stage_metrics_file(stage)
    return path.is_file() and len(path.read_text().splitlines()) >= epochs


def compare(
    cfg: RunConfig,
    out: str | Path,
    options: CompareOptions = CompareOptions(),
    overwrite: bool = False,
    dataset: Dataset | None = None,
    resume: bool = False,
) -> CompareResult:
    """Train a plain AE and the configured family (a VAE unless cfg.model.family names another) with the same
    networks, measure both, write out/index.html. `resume`: continue a comparison cut off in `out` with the same
    settings: a finished run is kept, one cut off continues from its last checkpoint, a missing one is trained."""
    if cfg.model.family == "ae":
        raise VaekitError("compare trains a plain AE itself, beside the family --model names: name a probabilistic "
                          "family (vae, iwae, vamp, hvae, tcvae, vqvae), or leave --model out for a VAE")
    out = Path(out)
    _check_out(out, overwrite, resume)
    loaded = dataset is None  # the data cfg.data names (else data given in Python, which its runs record so)
    if dataset is None:
        with for_new_runs(not resume):
            dataset = load_dataset(cfg.data)
    if not dataset.is_image:
        raise VaekitError(
            f"vaekit compare draws images, but {dataset.name} holds vectors of shape {dataset.shape}: "
            "use an image data set (digits, mnist-10k, fashion-mnist, ...)"
        )
    if options.gmm_components > len(dataset.x_train):
        raise VaekitError(f"--gmm-components {options.gmm_components} exceeds the {len(dataset.x_train)} training "
                          "items: use fewer components")
    seed = cfg.train.seed
    probabilistic = cfg.model.family
    # the AE: the same networks, none of the family's own settings, and no KL for free bits to floor
    # (nor a beta or a KL warm-up for a regularizer it lacks: runs.drop_unweighed, without its warning)
    ae = replace(cfg, model=replace(without_options(cfg.model, probabilistic), family="ae", free_bits=0.0))
    configs = {"ae": runs.drop_unweighed(ae, say=False),
               "vae": replace(cfg, model=replace(cfg.model, family=probabilistic))}
    for slot in FAMILIES:  # each model's own refusals (a family or setting that cannot be label-conditioned, ...)
        saved = resume and (out / slot / checkpoint.CONFIG_FILE).exists()  # a run that continues: as a resume checks
        build_model(runs.resolve_config(configs[slot], dataset).model, saved=saved)  # before the first trains
    trained = {}
    for slot in FAMILIES:
        family = configs[slot].model.family
        log.info("training the %s (%d epoch%s on %s) ...", family.upper(), cfg.train.epochs,
                 "" if cfg.train.epochs == 1 else "s", dataset.name)
        if resume and (out / slot / checkpoint.CONFIG_FILE).exists():
            trained[slot] = _continued(out / slot, configs[slot], dataset, loaded)
        else:
            trained[slot] = runs.train(configs[slot], out / slot, overwrite=overwrite, dataset=dataset,
                                       data_from_config=loaded)
        for stage in trained[slot].model.stages:  # a family's later stages (a vqvae's prior over codes): its samples
            if resume and _stage_done(out / slot, stage, max(1, cfg.train.epochs)):
                continue
            log.info("training the %s's %s stage (%d epochs) ...", family.upper(), stage, cfg.train.epochs)
            # from its initial weights: a stage cut off (its weights in the model file part-trained) trains again
            later = runs.train_stage(out / slot, stage, epochs=max(1, cfg.train.epochs), progress=cfg.train.progress,
                                     dataset=dataset, restart=resume)
            trained[slot] = dataclasses.replace(trained[slot], model=later.model)  # the model's own history stays
    quality = SampleQuality(dataset, options, seed, progress=cfg.train.progress)
    pairs = random_pairs(len(dataset.x_test), options.interpolation_pairs, seed)
    scores, figures, units = {}, {}, {}
    by_class = any(trained[family].model.prior_takes_labels for family in FAMILIES)  # both models' mixtures alike
    for family in FAMILIES:
        log.info("measuring the %s ...", configs[family].model.family.upper())
        scores[family], figures[family], units[family] = measure(trained[family], dataset, quality, pairs, options,
                                                                 seed, by_class, cfg.train.progress)
    figures["data"] = {
        "inputs": viz.image_grid(dataset.x_test[:options.shown_items], ncol=8),
        "vary_item": viz.image_grid(dataset.x_test[:1]),
    }

    result = CompareResult(
        dataset=dataset.name, ae=scores["ae"], vae=scores["vae"], classifier_accuracy=quality.accuracy,
        classifier_checked_on=quality.checked_on,
        fcd_real=quality.train_vs_test, fcd_items=quality.items, report=out / REPORT_FILE,
        runs={family: out / family for family in FAMILIES},
        differences={key: difference(key, scores["ae"], scores["vae"], units["ae"][key], units["vae"][key])
                     for key in UNCERTAIN if key in units["ae"] and key in units["vae"]},
        interpolation_pairs=len(pairs),
    )
    if collapsed(result.vae):
        log.warning("the %s's posterior collapsed (KL %.2g nats per test item): the report compares a model that has "
                    "not learned a latent space yet; train longer (--epochs) or with a smaller --beta",
                    result.vae.family.upper(), result.vae.test_kl)
    write_text(out / REPORT_FILE, render_report(result, trained["vae"].config, options, figures))
    # The same pictures as files too (out/figures/<ae|vae|data>_<kind>.png), for slides and READMEs.
    for owner, pictures in figures.items():
        for kind, picture in pictures.items():
            atomic_write(out / "figures" / f"{owner}_{kind}.png", lambda tmp, p=picture: p.save(tmp, format="PNG"))
    checkpoint.write_json(out / METRICS_FILE, result.to_dict())
    log.debug("wrote %s", out / REPORT_FILE)
    return result
