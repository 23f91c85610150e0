"""vaekit compare: train an AE and a VAE with the same networks, write one HTML report side by side."""
from __future__ import annotations

import argparse

from .. import compare as compare_module
from .common import add_config_flags, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="train an AE and a VAE (or --model FAMILY) on the same data and write an HTML report",
        description="Trains a plain AE and a VAE (or the family --model names) with identical networks (runs in "
                    "OUT/ae and OUT/vae) and writes "
                    "OUT/index.html (self-contained) and OUT/compare.json: reconstructions, prior and "
                    "Gaussian-mixture samples, posterior variations, interpolations, latent maps, and numbers.",
    )
    p.add_argument("--out", default="report", help="folder for the two runs and the report (default: report)")
    p.add_argument("--overwrite", action="store_true", help="replace runs already in OUT/ae and OUT/vae")
    add_config_flags(p)
    report = p.add_argument_group("report")
    defaults = compare_module.CompareOptions()
    report.add_argument("--gmm-components", type=int, default=defaults.gmm_components,
                        help="Gaussian-mixture sampler fit on the training codes; 0 disables it "
                             f"(default {defaults.gmm_components})")
    report.add_argument("--classifier-steps", type=int, default=defaults.classifier_steps,
                        help=f"training batches of the FCD feature classifier (default {defaults.classifier_steps})")
    report.add_argument("--interpolation-pairs", type=int, default=defaults.interpolation_pairs,
                        help="random test pairs behind the smoothness numbers "
                             f"(default {defaults.interpolation_pairs})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    options = compare_module.CompareOptions(
        gmm_components=args.gmm_components, classifier_steps=args.classifier_steps,
        interpolation_pairs=args.interpolation_pairs,
    )
    result = compare_module.compare(cfg, args.out, options=options, overwrite=args.overwrite)
    rows = [
        ("reconstruction squared error", "recon_squared_error"), ("reconstruction -log p(x|z)", "recon_nll"),
        ("FCD, prior samples", "fcd_prior"), ("FCD, mixture samples", "fcd_gmm"),
        ("prior mass in holes", "prior_hole_fraction"), ("mixture mass in holes", "gmm_hole_fraction"),
    ]
    if result.fcd_real is None:  # no labels for the FCD's classifier: said in the log, no rows of n/a
        rows = [row for row in rows if not row[0].startswith("FCD")]
    print(f"{'':32s} {'AE':>10s} {result.vae.family.upper():>10s}")
    for label, name in rows:
        values = [getattr(scores, name) for scores in result.scores()]
        print(f"{label:32s} " + " ".join("       n/a" if v is None else f"{v:10.4g}" for v in values))
    for label, name in (("interpolation mean step", "mean_jump"), ("interpolation largest step", "max_jump")):
        print(f"{label:32s} " + " ".join(f"{getattr(s.interpolation, name):10.4g}" if s.interpolation else
                                         f"{'n/a':>10s}" for s in result.scores()))
    if result.fcd_real is not None:
        print(f"FCD of real training vs test images: {result.fcd_real:.4g} "
              f"(classifier accuracy {result.classifier_accuracy:.1%} on the {result.classifier_items})")
    print(f"report: {result.report}")
    return 0
