"""beta-TCVAE against the beta-VAE on `shapes`: MIG and reconstruction error, side by side, for several betas.

    python benchmarks/tcvae_mig.py [--vae-betas 1,2,4,6] [--tcvae-betas 1,4,6] [--seeds 0] [--set KEY=VALUE ...]
    python benchmarks/tcvae_mig.py --tables-from FILE [FILE ...] [--out FILE]    (tables from earlier runs)

Each model is the shipped `shapes` recipe (an MLP, a 6-number code, 15 epochs on 32x32 shapes) with only the family
and --beta changed (and any --set, alike for every model), trained in its own process. MIG (Chen et al. 2018) is
computed on 10,000 training shapes against all five factors in two ways: from the posteriors themselves, as Chen et
al. estimate it (`vaekit.disentangle.mig_posterior`: a code dimension whose posteriors have the prior's width
carries almost no information, however its means drift), and from binned posterior means (20 bins, as
disentanglement_lib; `mig`). The reconstruction error is the test split's recon term (nats per image) from the
run's last epoch. With several seeds (`--seeds 0,1,2`) the
table gives the mean and standard error of each over the seeds, and a second table sets each tcvae beta beside the
beta-VAE at matched reconstruction: the beta-VAE's MIG interpolated linearly in reconstruction error between the two
betas whose mean errors bracket the tcvae's (marked when outside the beta-VAE's range). A third table makes that
comparison within each seed (the tcvae against the same seed's beta-VAE runs) and gives the differences' mean and
standard error over the seeds, with Student's t against zero and its one-sided p (a test only where the seeds
were fixed before the run). Writes benchmarks/results/tcvae-mig-<date>.json and prints the Markdown tables.
About 45 s of training per model with the recipe's 15 epochs on 2 CPU cores, plus the scoring.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import stats  # scikit-learn's own dependency

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_common import machine, write_results  # noqa: E402

from vaekit import checkpoint, metrics  # noqa: E402
from vaekit.data import load_dataset  # noqa: E402
from vaekit.data.shapes import FACTOR_NAMES  # noqa: E402
from vaekit.disentangle import mig, mig_posterior  # noqa: E402

ITEMS = 10_000


def run(family: str, beta: float, seed: int, work: Path, sets: list[str] = ()) -> dict:
    out = work / f"{family}-{beta:g}"
    command = [sys.executable, "-m", "vaekit", "train", "--recipe", "shapes", "--model", family, "--beta", str(beta),
               "--seed", str(seed), "--out", str(out), "--no-progress", "--overwrite"]
    for item in sets:
        command += ["--set", item]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    model = checkpoint.load(out)
    dataset = load_dataset(checkpoint.load_config(out).data)
    loc, scale = (t.numpy() for t in metrics.posterior_loc_scale(model, dataset.x_train[:ITEMS]))
    factors = np.stack([dataset.attributes_train[name][:ITEMS].numpy() for name in FACTOR_NAMES], axis=1)
    result, posterior = mig(loc, factors), mig_posterior(loc, scale, factors, seed=seed)
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return {"family": family, "beta": beta, "seed": seed, "train_seconds": round(seconds, 1),
            "mig": round(result.score, 4), "mig_per_factor": dict(zip(FACTOR_NAMES, np.round(result.per_factor, 4)
                                                                        .tolist())),
            "mig_posterior": round(posterior.score, 4),
            "mig_posterior_per_factor": dict(zip(FACTOR_NAMES, np.round(posterior.per_factor, 4).tolist())),
            "test_recon": round(last["val_recon"], 3), "test_kl": round(last["val_kl"], 3),
            "test_elbo": round(last["val_elbo"], 3)}


def summary(runs: list[dict]) -> list[dict]:
    """Per (family, beta): the mean and standard error over seeds of both MIGs, reconstruction and KL."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["family"], r["beta"]), []).append(r)
    rows = []
    for (family, beta), group in groups.items():
        row = {"family": family, "beta": beta, "seeds": [r["seed"] for r in group]}
        for key in ("mig_posterior", "mig", "test_recon", "test_kl"):
            values = np.array([r[key] for r in group], dtype=float)
            row[key] = float(values.mean())
            row[key + "_se"] = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else None
        for key in ("mig_posterior_per_factor", "mig_per_factor"):
            row[key] = {name: float(np.mean([r[key][name] for r in group])) for name in FACTOR_NAMES}
        rows.append(row)
    return rows


def matched(rows: list[dict]) -> list[dict]:
    """Each tcvae row beside the beta-VAE's MIG (both estimates) at the same mean reconstruction error, interpolated
    linearly between the beta-VAE rows whose errors bracket it; None outside their range."""
    vae = sorted((r for r in rows if r["family"] == "vae"), key=lambda r: r["test_recon"])
    out = []
    for r in (r for r in rows if r["family"] == "tcvae"):
        row = {"beta": r["beta"], "test_recon": r["test_recon"]}
        for key in ("mig_posterior", "mig"):
            row[key], row[key + "_se"], row["vae_" + key + "_at_recon"] = r[key], r[key + "_se"], None
        for low, high in zip(vae, vae[1:]):
            if low["test_recon"] <= r["test_recon"] <= high["test_recon"]:
                span = high["test_recon"] - low["test_recon"]
                weight = (r["test_recon"] - low["test_recon"]) / span if span else 0.0
                for key in ("mig_posterior", "mig"):
                    row["vae_" + key + "_at_recon"] = low[key] + weight * (high[key] - low[key])
                break
        out.append(row)
    return out


def paired(runs: list[dict]) -> list[dict]:
    """The matched comparison within each seed (the tcvae beside the beta-VAE interpolated from the same seed's
    runs), then per tcvae beta the mean and standard error over the seeds of the difference (tcvae minus beta-VAE),
    for both MIGs; seeds where the tcvae falls outside that seed's beta-VAE range are left out and counted."""
    by_beta: dict[float, dict[str, list[float]]] = {}
    for seed in sorted({r["seed"] for r in runs}):
        for m in matched(summary([r for r in runs if r["seed"] == seed])):
            entry = by_beta.setdefault(m["beta"], {"mig_posterior": [], "mig": [], "outside": []})
            if m["vae_mig_posterior_at_recon"] is None:
                entry["outside"].append(seed)
                continue
            for key in ("mig_posterior", "mig"):
                entry[key].append(m[key] - m["vae_" + key + "_at_recon"])
    out = []
    for beta, entry in by_beta.items():
        row = {"beta": beta, "seeds_outside_range": entry["outside"]}
        for key in ("mig_posterior", "mig"):
            values = np.array(entry[key])
            row[key + "_differences"] = values.round(4).tolist()
            row[key + "_difference"] = float(values.mean()) if len(values) else None
            row[key + "_difference_se"] = (float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1
                                           else None)
            # Student's t of the mean difference against zero and its one-sided p (the tcvae above): a test,
            # where the seeds were fixed before the run
            se = row[key + "_difference_se"]
            row[key + "_t"] = float(values.mean() / se) if se else None
            row[key + "_p_one_sided"] = float(stats.t.sf(row[key + "_t"], len(values) - 1)) if se else None
        out.append(row)
    return out


def markdown(results: dict) -> str:
    seeds = ", ".join(str(s) for s in results["seeds"])
    sets = "".join(f", --set {item}" for item in results.get("set", []))
    lines = [f"beta-TCVAE vs beta-VAE on shapes ({results['machine']['cpu_label']}; recipe `shapes`{sets}, seeds "
             f"{seeds}; MIG on {ITEMS:,} training shapes from the posteriors and from binned means (20 bins); mean ± "
             "s.e. over the seeds)", "",
             "| family | beta | MIG (posteriors) | MIG (binned means) | test recon (nats) | test KL | MIG (posteriors) per "
             "factor: shape, scale, orientation, x, y |", "|---|---|---|---|---|---|---|"]

    def value(row: dict, key: str, digits: int) -> str:
        se = row.get(key + "_se")
        return f"{row[key]:.{digits}f}" + (f" ± {se:.{digits}f}" if se is not None else "")

    def at(row: dict, key: str) -> str:
        value = row["vae_" + key + "_at_recon"]
        return "outside the beta-VAE's range" if value is None else f"{value:.3f}"

    for r in results["summary"]:
        per = ", ".join(f"{v:.2f}" for v in r["mig_posterior_per_factor"].values())
        lines.append(f"| {r['family']} | {r['beta']:g} | {value(r, 'mig_posterior', 3)} | {value(r, 'mig', 3)} | "
                     f"{value(r, 'test_recon', 2)} | {value(r, 'test_kl', 2)} | {per} |")
    if results["matched"]:
        lines += ["", "| tcvae beta | test recon (nats) | tcvae MIG (posteriors) | beta-VAE's at that recon | "
                  "tcvae MIG (binned means) | beta-VAE's at that recon |", "|---|---|---|---|---|---|"]
        for m in results["matched"]:
            lines.append(f"| {m['beta']:g} | {m['test_recon']:.2f} | {value(m, 'mig_posterior', 3)} | "
                         f"{at(m, 'mig_posterior')} | {value(m, 'mig', 3)} | {at(m, 'mig')} |")
    if results.get("paired") and len(results["seeds"]) > 1:
        lines += ["", "| tcvae beta | MIG (posteriors) minus the beta-VAE's, per seed | mean ± s.e. | MIG (binned means) "
                  "minus the beta-VAE's, per seed | mean ± s.e. |", "|---|---|---|---|---|"]
        for p in results["paired"]:
            cells = []
            for key in ("mig_posterior", "mig"):
                se = p[key + "_difference_se"]
                mean = "" if p[key + "_difference"] is None else f"{p[key + '_difference']:+.3f}"
                test = (f" (t {p[key + '_t']:.2f}, one-sided p {p[key + '_p_one_sided']:.3f})"
                        if p.get(key + "_t") is not None else "")
                cells += [", ".join(f"{d:+.3f}" for d in p[key + "_differences"]),
                          mean + (f" ± {se:.3f}" if se is not None else "") + test]
            outside = f" ({len(p['seeds_outside_range'])} seeds outside the range)" if p["seeds_outside_range"] else ""
            lines.append(f"| {p['beta']:g}{outside} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tables(results: dict) -> dict:
    results["summary"] = summary(results["runs"])
    results["matched"] = matched(results["summary"])
    results["paired"] = paired(results["runs"])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae-betas", default="1,2,4,6")
    parser.add_argument("--tcvae-betas", default="1,4,6")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds; each model is trained with each")
    parser.add_argument("--set", action="append", default=[],
                        help="a config override for every model, as vaekit train --set (e.g. model.latent_dim=10)")
    parser.add_argument("--out")
    parser.add_argument("--tables-from", metavar="FILE", nargs="+",
                        help="train nothing: recompute the tables from the runs in earlier results files (several: "
                             "their runs together, e.g. more seeds; the same --set in each), printed, and written "
                             "to --out if given (a results file read is never rewritten)")
    args = parser.parse_args()
    if args.tables_from:
        parts = [json.loads(Path(name).read_text()) for name in args.tables_from]
        if len({json.dumps(part.get("set", [])) for part in parts}) > 1:
            parser.error("--tables-from: the files were run with different --set overrides; tables mix like with like")
        if len(parts) > 1 and not args.out:
            parser.error("--tables-from with several files needs --out for the merged results")
        runs = [run for part in parts for run in part["runs"]]
        keys = [(run["family"], run["beta"], run["seed"]) for run in runs]
        if len(set(keys)) < len(keys):
            parser.error("--tables-from: the same family, beta and seed appear more than once; merge distinct runs")
        results = parts[0] | {"runs": runs, "seeds": sorted({seed for part in parts for seed in part["seeds"]})}
        if len(parts) > 1:
            results["merged_from"] = [{"file": name, "machine": part["machine"]}
                                      for name, part in zip(args.tables_from, parts)]
        if args.out:
            write_results("tcvae-mig", tables(results), args.out, markdown(results))
        else:
            tables(results)
            print(markdown(results))
        return
    plan = [("vae", float(b)) for b in args.vae_betas.split(",")] + [("tcvae", float(b))
                                                                       for b in args.tcvae_betas.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    results = {"machine": machine(), "seeds": seeds, "set": args.set, "runs": []}
    with tempfile.TemporaryDirectory() as work:
        for seed in seeds:
            for family, beta in plan:
                results["runs"].append(run(family, beta, seed, Path(work), args.set))
                print(results["runs"][-1], file=sys.stderr)
    write_results("tcvae-mig", tables(results), args.out, markdown(results))


if __name__ == "__main__":
    main()
