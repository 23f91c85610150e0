"""The families stage: every likelihood-bound family trained under one budget on dynamically binarised MNIST, then
the test set's importance-sampled NLL (Burda et al. 2016's protocol: K = 5000 on all 10,000 test items).

    python benchmarks/families.py [--epochs 10 | --minutes 5] [--k 5000] [--test-items 10000] [--families vae,iwae,...]

Each family is its shipped recipe (`fast` for vae and tcvae, `iwae`, `vamp`, `hvae`, `vqvae`) with the same number
of epochs (the schedules stretch to fit), trained in its own process with the machine's threads. Writes
benchmarks/results/families-<date>.json and prints the README's table: family, recipe, minutes, epochs,
IS-NLL +- s.e., ELBO, active units, images/s. The vqvae has no likelihood bound: it trains its prior over codes
for as many epochs (its second stage) and gets a table of its own (reconstruction, codebook use, the prior's NLL
of the codes). A K-sample family costs about K decoder passes per item, so equal
epochs are not equal time: the minutes column says what each took. With `--minutes M` each family instead gets about
M minutes: a 3-epoch probe run times its epochs (the median of epochs 2 and 3, as the trainer reports them), and the
run gets as many epochs as fit in M minutes, so its schedule still ends on its last epoch. `--variant
'NAME=RECIPE FLAGS'` adds an entry for --families (a recipe with its own train flags). Each run keeps its items'
NLLs, and the table is followed by a paired one: each run's NLL minus the first's on the same items, with the
paired standard error (far below either NLL's own, since how hard each item is cancels); `--paired-with FILE`
brings an earlier results file's runs into it, the first of them as the reference. Needs MNIST (`vaekit data get
mnist`). `--device cuda` trains and scores on a GPU (auto, the default, picks one where torch sees it).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_common import machine, write_results  # noqa: E402

from vaekit import checkpoint, metrics  # noqa: E402
from vaekit.data import load_dataset  # noqa: E402
from vaekit.train import resolve_device  # noqa: E402

FAMILIES = {  # name -> (recipe, extra train flags)
    "vae": ("fast", []),
    "iwae": ("iwae", []),  # the fast recipe's networks and schedule, k = 5
    "vamp": ("vamp", []),
    "hvae": ("hvae", []),
    "hvae-iwae": ("hvae", ["--hvae-k", "5"]),
    "hvae-iwae-dreg": ("hvae-iwae", []),  # hvae with --hvae-k 5 --hvae-gradient dreg (doubly reparameterised)
    "iwae-dreg": ("iwae", ["--iwae-gradient", "dreg"]),
    "hvae-vamp": ("hvae", ["--hvae-top-prior", "vamp"]),  # p(z2) a VampPrior (500 pseudo-inputs)
    "tcvae": ("fast", ["--model", "tcvae"]),  # the fast recipe's networks and schedule, beta-TCVAE's objective at
    # its defaults (mutual information, total correlation and dimension-wise KL each weighed 1: the ELBO, estimated)
    "vqvae": ("vqvae", []),  # no likelihood bound: its own table (reconstruction, codebook, the prior's NLL of codes)
}
DISCRETE = {"vqvae"}  # families whose second stage (vaekit train-prior) trains a prior over their codes


def train_command(name: str, args: argparse.Namespace, epochs: int, out: Path) -> list[str]:
    recipe, extra = FAMILIES[name]
    return [sys.executable, "-m", "vaekit", "train", "--recipe", recipe, *extra, "--data", args.data,
            "--epochs", str(epochs), "--seed", str(args.seed), "--device", args.device, "--no-progress",
            "--out", str(out)]


def epochs_for(name: str, args: argparse.Namespace, work: Path) -> tuple[int, float]:
    """How many epochs of this family fit in --minutes, from a 3-epoch probe; and the probe's seconds per epoch."""
    out = work / f"{name}-probe"
    subprocess.run(train_command(name, args, 3, out), check=True, stdout=subprocess.DEVNULL)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    seconds = statistics.median(r["seconds"] for r in rows[1:])
    return max(1, int(args.minutes * 60 / seconds)), seconds


def run(name: str, args: argparse.Namespace, work: Path) -> dict:
    recipe, extra = FAMILIES[name]
    out = work / name
    epochs, probe_seconds = epochs_for(name, args, work) if args.minutes else (args.epochs, None)
    command = train_command(name, args, epochs, out)
    print(" ".join(command[2:]), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    minutes = (time.perf_counter() - start) / 60
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    if name in DISCRETE:
        return run_discrete(name, args, out, minutes, rows)
    model = checkpoint.load(out, device=resolve_device(args.device))
    dataset = load_dataset(checkpoint.load_config(out).data)
    x = dataset.x_test[: args.test_items]
    began = time.perf_counter()
    result = metrics.evaluate(model, x, iw_samples=args.k, seed=0, progress=False)
    record = {"family": name, "recipe": recipe, "flags": extra, "epochs": len(rows), "train_minutes": round(minutes, 2),
              "images_per_s": round(statistics.median(r["images_per_s"] for r in rows[1:] or rows)),
              "test_items": int(x.shape[0]), "k": args.k, "nll": result.nll, "nll_stderr": result.nll_stderr,
              "elbo": result.elbo, "active_units": result.active_units, "latent_dim": result.latent_dim,
              "eval_minutes": round((time.perf_counter() - began) / 60, 2), "probe_seconds_per_epoch": probe_seconds,
              "val_loss": [r["val_loss"] for r in rows],
              # each test item's NLL estimate, for paired differences (paired_table), with the items' digest:
              # only runs on the same items are paired
              "items_sha256": hashlib.sha256("".join(metrics.item_digests(x)).encode()).hexdigest(),
              "item_nll": [round(v, 4) for v in result.per_item["nll"].tolist()]}
    print(json.dumps({k: v for k, v in record.items() if k not in ("val_loss", "item_nll")}), flush=True)
    return record


def run_discrete(name: str, args: argparse.Namespace, out: Path, minutes: float, rows: list[dict]) -> dict:
    """The second stage (the prior over the codes, as many epochs as the first), then the test set's reconstruction,
    codebook usage and the prior's -log p of each item's codes."""
    command = [sys.executable, "-m", "vaekit", "train-prior", str(out), "--epochs", str(len(rows)), "--device",
               args.device, "--no-progress"]
    print(" ".join(command[2:]), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    prior_minutes = (time.perf_counter() - start) / 60
    model = checkpoint.load(out, device=resolve_device(args.device))
    dataset = load_dataset(checkpoint.load_config(out).data)
    x = dataset.x_test[: args.test_items]
    result = metrics.evaluate(model, x, iw_samples=0, seed=0, progress=False)
    positions = model.positions
    prior_nll = result.terms["prior_nll"]
    record = {"family": name, "recipe": FAMILIES[name][0], "flags": FAMILIES[name][1], "epochs": len(rows),
              "train_minutes": round(minutes, 2), "prior_minutes": round(prior_minutes, 2),
              "images_per_s": round(statistics.median(r["images_per_s"] for r in rows[1:] or rows)),
              "test_items": int(x.shape[0]), "recon_at_code": result.recon_at_mean,
              "squared_error": result.squared_error, "codes_used": result.codes_used,
              "codebook": model.settings.codebook, "perplexity": result.codebook_perplexity,
              "prior_nll": prior_nll, "prior_bits_per_code": prior_nll / (positions * math.log(2)),
              "positions": positions, "val_loss": [r["val_loss"] for r in rows]}
    print(json.dumps({k: v for k, v in record.items() if k != "val_loss"}), flush=True)
    return record


def device_label(name: str) -> str:
    device = resolve_device(name)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def gpu(results: dict) -> str:
    device = results.get("device", "cpu")
    return "" if device in ("cpu", "mps") else f"; GPU: {device}"


def markdown(results: dict, earlier: list[dict] = ()) -> str:
    budget = f"about {results['minutes']:g} minutes" if results.get("minutes") else f"{results['epochs']} epochs"
    lines = [f"families on `{results['data']}`, {budget} each, IS-NLL with K = {results['k']} on "
             f"{results['runs'][0]['test_items']:,} test items ({results['machine']['cpu_label']}, "
             f"{results['machine']['cpu_count']} cores{gpu(results)})", "",
             "| family | recipe | minutes | epochs | IS-NLL (nats) | ELBO | active units | images/s |",
             "|---|---|---|---|---|---|---|---|"]
    discrete = [r for r in results["runs"] if r["family"] in DISCRETE]
    if len(discrete) == len(results["runs"]):
        lines = lines[:2]
    for r in results["runs"]:
        if r in discrete:
            continue
        flags = " ".join(r["flags"])
        lines.append(f"| {r['family']} | `{r['recipe']}`{' ' + flags if flags else ''} | {r['train_minutes']:.1f} | "
                     f"{r['epochs']} | {r['nll']:.2f} ± {r['nll_stderr']:.2f} | {r['elbo']:.2f} | "
                     f"{r['active_units']}/{r['latent_dim']} | {r['images_per_s']:,} |")
    if discrete:
        lines += ["", "| family | recipe | minutes (model + prior) | epochs | test recon at the codes (nats) | squared "
                  "error | codes used | perplexity | prior -log p(codes) (nats; bits per code) | images/s |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in discrete:
            lines.append(f"| {r['family']} | `{r['recipe']}` | {r['train_minutes']:.1f} + {r['prior_minutes']:.1f} | "
                         f"{r['epochs']} | {r['recon_at_code']:.2f} | {r['squared_error']:.2f} | "
                         f"{r['codes_used']}/{r['codebook']} | {r['perplexity']:.1f} | {r['prior_nll']:.2f} "
                         f"({r['prior_bits_per_code']:.2f}) | {r['images_per_s']:,} |")
    return "\n".join(lines + paired_table(results["runs"], list(earlier)))


def paired_table(runs: list[dict], earlier: list[dict]) -> list[str]:
    """Each run's NLL minus the reference's (the first run of the --paired-with files, else of this one) on the same
    items with the same K, with the paired standard error: how hard each item is leaves the comparison, so the
    difference's s.e. is far below either NLL's own."""
    scored = [r for r in [*earlier, *runs] if "item_nll" in r]
    if len(scored) < 2:
        return []
    reference = scored[0]
    lines = ["", f"Paired against {reference['family']} ({reference.get('source', 'this run')}): NLL difference "
             f"on the same {reference['test_items']:,} items, K = {reference['k']}", "",
             "| family | source | NLL minus the reference's (nats) | items where lower |", "|---|---|---|---|"]
    base = torch.tensor(reference["item_nll"], dtype=torch.float64)
    for r in scored[1:]:
        if r["items_sha256"] != reference["items_sha256"] or r["k"] != reference["k"]:
            lines.append(f"| {r['family']} | {r.get('source', 'this run')} | not paired: other items or K | |")
            continue
        difference = torch.tensor(r["item_nll"], dtype=torch.float64) - base
        mean, stderr = metrics.mean_and_stderr(difference)
        lines.append(f"| {r['family']} | {r.get('source', 'this run')} | {mean:+.3f} ± {stderr:.3f} | "
                     f"{float((difference < 0).double().mean()):.1%} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default="vae,iwae,vamp,hvae")
    parser.add_argument("--data", default="mnist")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=int, default=10, help="the same number of epochs for every family")
    budget.add_argument("--minutes", type=float, default=None,
                        help="about the same training time for every family (epochs from a timed probe)")
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--test-items", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                        help="where every family trains and is scored (auto: a GPU if torch sees one)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=RECIPE [FLAGS]",
                        help="a further entry for --families: a recipe with its own train flags, e.g. "
                             "'vae-wide=fast --hidden-dims 1024,512' (repeatable)")
    parser.add_argument("--paired-with", action="append", default=[], metavar="FILE",
                        help="an earlier results file of this script: its runs' per-item NLLs join the paired table "
                             "(the first of them is the reference; repeatable)")
    args = parser.parse_args()
    earlier = []
    for path in args.paired_with:
        try:
            earlier += [{**r, "source": Path(path).name} for r in json.loads(Path(path).read_text())["runs"]
                        if "item_nll" in r]
        except (OSError, ValueError, KeyError) as e:
            parser.error(f"--paired-with {path}: not a results file of this script ({e})")
    for variant in args.variant:
        name, _, spec = variant.partition("=")
        words = shlex.split(spec)
        if not name or not words or name in FAMILIES:
            parser.error(f"--variant {variant!r}: give NAME=RECIPE [FLAGS], with a name not already a family")
        FAMILIES[name] = (words[0], words[1:])
    unknown = set(args.families.split(",")) - set(FAMILIES)
    if unknown:
        parser.error(f"unknown families {sorted(unknown)}: choose from {', '.join(FAMILIES)}")
    if args.minutes is not None and args.minutes <= 0:
        parser.error("--minutes must be above 0")
    with tempfile.TemporaryDirectory() as work:
        runs = [run(name, args, Path(work)) for name in args.families.split(",")]
    results = {"machine": machine(), "device": device_label(args.device),
               "command": " ".join(shlex.quote(a) for a in sys.argv), "data": args.data,
               "epochs": None if args.minutes else args.epochs,
               "minutes": args.minutes, "k": args.k, "seed": args.seed, "runs": runs,
               "paired_with": args.paired_with}
    write_results("families", results, args.out, markdown(results, earlier))


if __name__ == "__main__":
    main()
