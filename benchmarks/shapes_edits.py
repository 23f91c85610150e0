"""How reliably attribute edits move what they claim on `shapes`: the shipped recipe trained with several seeds,
each scored on all 2,000 test shapes at strengths -1, 0, 1 (strictly monotone, and end to end), by each edit
method (mean-diff, linear, local).

    python benchmarks/shapes_edits.py [--seeds 0,1,2,3] [--recipe shapes] [--threads 1] [--set KEY=VALUE ...]

Writes benchmarks/results/shapes-<date>.json (or --out) and prints a Markdown table. Each seed trains for 65-80 s
on one thread here (AMD EPYC, the tcvae recipe).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_common import machine, write_results  # noqa: E402

from vaekit import checkpoint, edits  # noqa: E402
from vaekit.data import load_dataset  # noqa: E402

ATTRIBUTES = ("scale", "x", "y")


def run_seed(seed: int, args: argparse.Namespace, work: Path) -> dict:
    out = work / f"seed{seed}"
    command = [sys.executable, "-c", "import sys; from vaekit.cli import main; sys.exit(main())", "train",
               "--recipe", args.recipe, "--seed", str(seed), "--out", str(out), "--no-progress", "--overwrite"]
    if args.threads:
        command += ["--threads", str(args.threads)]
    for item in args.set:
        command += ["--set", item]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    model = checkpoint.load(out)
    dataset = load_dataset(checkpoint.load_config(out).data)
    record = {"seed": seed, "train_s": round(seconds, 1)}
    for name in ATTRIBUTES:
        for method in edits.METHODS:
            score = edits.score_attribute(model, dataset, name, (-1, 0, 1), method=method)
            record[f"{name}/{method}"] = {"monotone": round(score.monotone, 4), "ends": round(score.ends, 4),
                                          "items": score.items}
    for name, column in (("x", 0), ("y", 1)):
        record[f"{name}/where"] = where_it_fails(model, dataset, name, column)
    return record


def where_it_fails(model, dataset, name: str, column: int) -> dict:
    """Mean-difference edits of a position: how many of the failures (not strictly rising along -1, 0, 1) sit at
    the two outermost grid values at each end of the range, and the strict share for items inside 0.1..0.9."""
    import numpy as np

    from vaekit import latent
    from vaekit.data import shapes

    direction = edits.attribute_direction(latent.encode_dataset(model, dataset.x_train),
                                          latent.find_attribute(dataset, "train", name))
    codes = latent.encode_dataset(model, dataset.x_test)
    values = np.stack([shapes.centre_of_mass(latent.decode_mean(model, codes + s * direction))[:, column]
                       for s in (-1, 0, 1)])
    rising = (np.diff(values, axis=0) > 0).all(0)
    factor = dataset.attributes_test[name].numpy()
    edge = (factor <= 1 / 31 + 1e-9) | (factor >= 30 / 31 - 1e-9)
    inside = (factor > 0.1) & (factor < 0.9)
    return {"failures": int((~rising).sum()), "failures_at_edges": int((~rising & edge).sum()),
            "edge_items": int(edge.sum()), "monotone_inside_0.1_0.9": round(float(rising[inside].mean()), 4)}


def markdown(results: dict) -> str:
    methods = [m for m in edits.METHODS if f"{ATTRIBUTES[0]}/{m}" in results["seeds"][0]]
    lines = [f"shapes edits, recipe `{results['recipe']}` ({results['machine']['cpu_label']}; monotone % "
             f"{' / '.join(methods)}, end to end in brackets, in the same order)", "",
             "| seed | train s | " + " | ".join(ATTRIBUTES) + " |", "|---|---|" + "---|" * len(ATTRIBUTES)]
    for r in results["seeds"]:
        cells = []
        for name in ATTRIBUTES:
            scores = [r[f"{name}/{m}"] for m in methods]
            cells.append(" / ".join(f"{100 * a['monotone']:.1f}" for a in scores)
                         + " (" + " / ".join(f"{100 * a['ends']:.1f}" for a in scores) + ")")
        lines.append(f"| {r['seed']} | {r['train_s']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2,3")
    parser.add_argument("--recipe", default="shapes")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--set", action="append", default=[], help="a config override, as vaekit train --set")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        seeds = [run_seed(int(seed), args, Path(work)) for seed in args.seeds.split(",")]
    results = {"machine": machine(), "recipe": args.recipe,
               "threads": args.threads, "set": args.set, "seeds": seeds}
    write_results("shapes", results, args.out, markdown(results))


if __name__ == "__main__":
    main()
