"""Which prior over a VQ-VAE's codes? The two of model.vqvae.prior trained on the same trained model's codes: the first
PixelCNN's masked convolutions (`pixelcnn`, with its blind spot) and the gated PixelCNN (`gated`), each for the same
epochs of `vaekit train-prior`, then each one's -log p of the test set's codes, paired item by item (the same codes:
the model and its encoder are shared).

    python benchmarks/vqvae_prior.py RUN [--epochs 10] [--priors pixelcnn,gated] [--threads N]

RUN is a trained vqvae run (`vaekit train --recipe vqvae --data mnist --out RUN`); it is not changed: each prior
trains in a copy of its model (saved as vaekit's Hub folders are, in a temporary folder, or under --keep DIR), its
weights built with the run's seed; each epoch's validation -log p and seconds are recorded, for equal-time readings.
The test codes are those of one binarisation of the test images (seeded), for dynamically binarised data. Writes
benchmarks/results/vqvae-prior-<date>.json and prints the table.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

torch.set_flush_denormal(True)  # as `vaekit` does, before any torch work, so that torch's threads inherit it

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_common import machine, write_results  # noqa: E402

import vaekit  # noqa: E402
from vaekit import checkpoint, runs  # noqa: E402
from vaekit.data import load_dataset  # noqa: E402
from vaekit.models import build_model  # noqa: E402
from vaekit.vqvae import PRIOR_NETWORKS  # noqa: E402


def prior_copy(run: Path, prior: str, folder: Path) -> None:
    """RUN's model with `prior` as its (untrained) prior over codes, saved in `folder`."""
    trained = checkpoint.load(run)
    cfg = trained.run_config
    settings = replace(cfg.model.settings("vqvae"), prior=prior)
    model_cfg = replace(cfg.model, options={**cfg.model.options, "vqvae": settings})
    torch.manual_seed(cfg.train.seed)
    model = build_model(model_cfg)
    own = {k: v for k, v in trained.state_dict().items() if not k.startswith("prior_net.")}
    missing, unexpected = model.load_state_dict(own, strict=False)
    assert not unexpected and all(k.startswith("prior_net.") for k in missing), (missing, unexpected)
    checkpoint.save_pretrained(model.eval(), replace(cfg, model=model_cfg), folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a trained vqvae run folder")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of train-prior for each prior (default 10)")
    parser.add_argument("--priors", default=",".join(reversed(PRIOR_NETWORKS)),
                        help=f"comma-separated, of {', '.join(PRIOR_NETWORKS)} (default: both, pixelcnn first)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: one per core)")
    parser.add_argument("--keep", type=Path, default=None, help="keep each prior's model folder here (DIR/PRIOR)")
    parser.add_argument("--out", type=Path, default=None, help="results file (default benchmarks/results/"
                        "vqvae-prior-<date>.json)")
    args = parser.parse_args()
    priors = args.priors.split(",")
    if not set(priors) <= set(PRIOR_NETWORKS) or args.epochs < 1:
        parser.error(f"--priors must name some of {', '.join(PRIOR_NETWORKS)} and --epochs be at least 1")
    if checkpoint.load_config(args.run).model.family != "vqvae":
        parser.error(f"{args.run} is not a vqvae run")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or HERE / "results" / f"vqvae-prior-{time.strftime('%Y-%m-%d')}.json"
    scratch = tempfile.TemporaryDirectory(prefix="vaekit-vqvae-prior-")
    folders = args.keep or Path(scratch.name)

    cfg = checkpoint.load_config(args.run)
    dataset = load_dataset(cfg.data)
    x = dataset.x_test.float()
    if cfg.data.binarize != "none":
        x = torch.bernoulli(x, generator=torch.Generator().manual_seed(0))
    rows, per_item = {}, {}
    for prior in priors:
        folder = folders / prior
        prior_copy(args.run, prior, folder)
        start = time.perf_counter()
        result = runs.train_stage(folder, "prior", epochs=args.epochs, threads=args.threads, progress=False)
        minutes = (time.perf_counter() - start) / 60
        model = vaekit.load(folder)
        with torch.no_grad():
            codes = torch.cat([model.discrete_codes(batch) for batch in x.split(1000)])
            nll = torch.cat([model.prior_net.nll(batch) for batch in codes.split(1000)]).double()
        per_item[prior] = nll
        positions = codes[0].numel()
        rows[prior] = {
            "prior": prior, "epochs": args.epochs, "minutes": round(minutes, 2),
            "parameters": sum(p.numel() for p in model.prior_net.parameters()),
            "train_prior_nll_last_epoch": result.history[-1].train.get("prior_nll"),
            "test_prior_nll": float(nll.mean()), "test_prior_nll_se": float(nll.std() / math.sqrt(len(nll))),
            "bits_per_code": float(nll.mean()) / positions / math.log(2), "items": len(nll),
            "val_prior_nll_per_epoch": [r.val.get("prior_nll") for r in result.history],
            "seconds_per_epoch": [r.seconds for r in result.history],
        }
        print(json.dumps(rows[prior]), flush=True)
    paired = {}
    if len(priors) == 2:
        first, second = priors
        difference = per_item[second] - per_item[first]
        paired = {"difference": f"{second} - {first}", "mean": float(difference.mean()),
                  "se": float(difference.std() / math.sqrt(len(difference))),
                  "lower_share": float((difference < 0).double().mean())}
    lines = ["| prior | epochs | minutes | parameters | test -log p(codes), nats (bits per code) |",
             "|---|---|---|---|---|"]
    for row in rows.values():
        lines.append(f"| `{row['prior']}` | {row['epochs']} | {row['minutes']:.1f} | {row['parameters']:,} | "
                     f"{row['test_prior_nll']:.2f} ± {row['test_prior_nll_se']:.2f} ({row['bits_per_code']:.2f}) |")
    if paired:
        lines.append(f"\n{paired['difference']}: {paired['mean']:+.2f} ± {paired['se']:.2f} nats per item, lower on "
                     f"{paired['lower_share']:.1%} of the {len(per_item[priors[0]]):,} test items")
    write_results("vqvae-prior", {"benchmark": "vqvae_prior", "run": str(args.run), "machine": machine(),
                                  "threads": torch.get_num_threads(), "rows": list(rows.values()), "paired": paired},
                  str(out), "\n".join(lines))
    scratch.cleanup()


if __name__ == "__main__":
    main()
