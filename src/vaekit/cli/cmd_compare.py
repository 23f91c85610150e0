"""vaekit compare: train an AE and a VAE with the same networks, write one HTML report side by side."""
from __future__ import annotations

import argparse

from .. import compare as compare_module
from ..errors import Interrupted
from ..report.html import SEPARATED, better_of, rows as report_rows, score_of
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
    p.add_argument("--resume", action="store_true",
                   help="continue a comparison cut off in OUT, given its settings again: a finished run is kept, one "
                        "cut off continues from its last checkpoint (--epochs may set a new total)")
    add_config_flags(p)
    report = p.add_argument_group("report")
    defaults = compare_module.CompareOptions()
    report.add_argument("--gmm-components", type=int, default=defaults.gmm_components,
                        help="Gaussian-mixture sampler fit on the training codes (one mixture per class where "
                             "the compared model's prior takes the label); 0 disables it "
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
    try:
        result = compare_module.compare(cfg, args.out, options=options, overwrite=args.overwrite, resume=args.resume)
    except Interrupted as stop:
        stop.again = "the same vaekit compare command with --resume continues the comparison"
        raise
    # the report's rows (no FCD rows without labels for its classifier), each value ± its standard error, * marking
    # the model that leads by more than the report's margin
    shown = [row for row in report_rows(result, cfg, options) if row[1] not in ("test_kl", "train_seconds")]
    width = max(30, *(len(row[0]) for row in shown))  # a row's whole name ("... (per class)")
    print(f"{'':{width}s} {'AE':>18s} {result.vae.family.upper():>18s}")
    for label, key, _, lower_better, _ in shown:
        better = better_of(result, key, lower_better)
        cells = []
        for family, scores in zip(compare_module.FAMILIES, result.scores(), strict=True):
            value, se = score_of(scores, key), scores.standard_errors.get(key)
            text = "n/a" if value is None else f"{value:.4g}" + ("" if se is None else f" ± {se:.2g}")
            cells.append(f"{text + ('*' if better == family else ' '):>18s}")
        print(f"{label:{width}s} " + " ".join(cells))
    print(f"± one standard error; * leads by more than {SEPARATED:g} standard errors of the difference")
    if result.fcd_real is not None:
        print(f"FCD of real training vs test images: {result.fcd_real:.4g} "
              f"(classifier accuracy {result.classifier_accuracy:.1%} on the {result.classifier_items})")
    print(f"report: {result.report}")
    return 0
