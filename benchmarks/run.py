"""vaekit side by side with its peers, in one run on one machine: `make bench`.

Stages (all by default; pick with --stages):
  throughput  the same model (MLP 784-512-256 -> 16, Bernoulli, Adam 1e-3, batch 128, dynamic
              binarisation) trained for --epochs by vaekit (its CLI), pythae 0.1.2 (its pipeline)
              and a plain PyTorch loop, round-robin with the matrix products timed alone
              (matmul_bound.py); vaekit also with --precision bf16 where the CPU multiplies
              bfloat16 natively (--precisions); images/s, s/epoch, peak memory, ratios repeat by
              repeat; then every model scored by vaekit's evaluator on the same test binarisation
              (ELBO, IS-NLL with K samples), and pythae's own get_nll timed on --pythae-nll-images
              images.
  quality     time to quality: pythae's training sized to --pythae-minutes, against vaekit's `fast`
              recipe given a quarter of the time pythae used (--quality-margin of it filled by
              probe-sized epochs); both scored by the evaluator.
  best        vaekit's `fast` recipe stretched to --best-minutes, scored with K=--best-k on the
              full test set (the README's baselines; the IWAE paper's one-layer VAE: 86.76 nats).
              The datasets train at once, one single-thread process pinned to each core.
Each peer runs in its own process; peak memory is that process's VmHWM. Headline numbers are
ratios vaekit / peer from the same run, since absolute times drift on a shared machine.
Writes benchmarks/results/<date>.json and .md; a rerun on the same day replaces only the tables of
the stages and datasets it ran (--fresh starts a new file).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import bench_common  # noqa: E402

import vaekit  # noqa: E402
from vaekit import metrics  # noqa: E402
from vaekit.config import DataConfig, ModelConfig  # noqa: E402
from vaekit.data import load_dataset  # noqa: E402
from vaekit.train import native_bf16  # noqa: E402

PYTHON = sys.executable
VAEKIT = str(Path(PYTHON).with_name("vaekit"))


def peak_rss_mib(pid: int) -> float | None:
    """VmHWM of a running process: the high-water mark of its own memory since exec (ru_maxrss of a child would
    also count the parent's pages it was forked with)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def run_child(argv: list[str], log_path: Path) -> tuple[float, float]:
    """Run one peer in its own process; returns (wall seconds, peak RSS in MiB of that process)."""
    return run_pinned([(argv, log_path, None)])[0]


def peer_model(weights: Path) -> vaekit.Model:
    """A vaekit VAE holding a peer's weights (layout in bench_common.py); mu and logvar heads stacked."""
    layers = load_file(str(weights))
    model = vaekit.build_model(ModelConfig(family="vae", network="mlp", hidden_dims=(512, 256), latent_dim=16,
                                           likelihood="bernoulli", data_shape=(1, 28, 28)))
    state = {
        "encoder.1.weight": layers["enc0.w"], "encoder.1.bias": layers["enc0.b"],
        "encoder.3.weight": layers["enc1.w"], "encoder.3.bias": layers["enc1.b"],
        "encoder.5.weight": torch.cat([layers["enc2.w"], layers["enc3.w"]]),
        "encoder.5.bias": torch.cat([layers["enc2.b"], layers["enc3.b"]]),
        "decoder.0.weight": layers["dec0.w"], "decoder.0.bias": layers["dec0.b"],
        "decoder.2.weight": layers["dec1.w"], "decoder.2.bias": layers["dec1.b"],
        "decoder.4.weight": layers["dec2.w"], "decoder.4.bias": layers["dec2.b"],
    }
    model.load_state_dict(state)
    return model.eval()


def score(model: vaekit.Model, x_test: torch.Tensor, k: int) -> dict:
    started = time.perf_counter()
    result = metrics.evaluate(model, x_test, iw_samples=k, seed=0, split="test", progress=False)
    return {"elbo": result.elbo, "nll": result.nll, "nll_stderr": result.nll_stderr, "iw_samples": k,
            "active_units": result.active_units, "eval_images": x_test.shape[0],
            "eval_seconds": time.perf_counter() - started}


def vaekit_argv(data: str, out: Path, epochs: int, recipe: str, threads: int = 2, precision: str = "fp32") -> list[str]:
    return [VAEKIT, "train", "--recipe", recipe, "--data", data, "--epochs", str(epochs), "--threads", str(threads),
            "--precision", precision, "--out", str(out), "--overwrite", "--no-progress"]


def vaekit_name(precision: str) -> str:
    return "vaekit" if precision == "fp32" else f"vaekit-{precision}"


def vaekit_record(out: Path, wall: float, rss: float, precision: str = "fp32") -> dict:
    """A finished vaekit run's speed from its metrics.jsonl (training steps only, validation excluded)."""
    rows = epochs_of(out)
    seconds = sum(row["seconds"] for row in rows)
    return {"peer": vaekit_name(precision), "epochs": len(rows), "seconds_per_epoch": seconds / len(rows),
            "images_per_s": 60000 * len(rows) / seconds, "train_seconds": seconds, "wall_seconds": wall,
            "peak_rss_mib": rss, "run": str(out)}


def train_vaekit(data: str, out: Path, epochs: int, recipe: str, logs: Path, precision: str = "fp32") -> dict:
    wall, rss = run_child(vaekit_argv(data, out, epochs, recipe, precision=precision), logs / f"{out.name}.log")
    return vaekit_record(out, wall, rss, precision)


def train_peer(script: str, data: str, out: Path, epochs: int, logs: Path, extra: list[str] = ()) -> dict:
    record_path = out.with_suffix(".json")
    argv = [PYTHON, str(HERE / script), "--data", data, "--epochs", str(epochs), "--out", str(record_path), *extra]
    wall, rss = run_child(argv, logs / f"{out.name}.log")
    record = json.loads(record_path.read_text())
    return {"peer": record["peer"], "epochs": epochs, "seconds_per_epoch": record["seconds_per_epoch_mean"],
            "images_per_s": record["train_images_per_second"], "train_seconds": sum(record["epoch_seconds"]),
            "wall_seconds": wall, "peak_rss_mib": rss, "weights": str(out.with_suffix(".safetensors")),
            "record": record}


def throughput(data: str, args: argparse.Namespace, work: Path, x_test: torch.Tensor) -> dict:
    """Each repeat trains every peer in turn (round robin), so a slow spell of a shared machine hits all of them;
    the table reports the median over repeats and scores the last repeat's models."""
    # pythae's estimator takes its samples in batches that divide them: 100, or the largest divisor under it
    nll_batch = max(d for d in range(1, 101) if args.iw_samples % d == 0)
    pythae_extra = ["--nll-samples", str(args.iw_samples), "--nll-batch-size", str(nll_batch)]
    repeats: dict[str, list[dict]] = {}
    bounds: dict[str, list[float]] = {}  # the matrix products alone, timed in the same rotation, per precision
    for repeat in range(args.repeats):
        last = repeat == args.repeats - 1
        runs = [train_vaekit(data, work / f"{vaekit_name(precision)}-{data}-{repeat}", args.epochs, "paper-mlp", work,
                             precision) for precision in args.precisions]
        for script, extra in (("peer_pythae.py", pythae_extra), ("peer_plain.py", [])):
            nll = ["--nll-images", str(args.pythae_nll_images if last else 0)] if script == "peer_pythae.py" else []
            runs.append(train_peer(script, data, work / f"{script[5:-3]}-{data}-{repeat}", args.epochs, work,
                                   [*extra, *nll]))
        for row in runs:
            repeats.setdefault(row["peer"], []).append(row)
        for precision in args.precisions:
            bounds.setdefault(precision, []).append(
                matmul_bound(work / f"bound-{precision}-{data}-{repeat}.json", work, precision))
    rows = []
    for peer, tries in repeats.items():
        row = dict(tries[-1])
        speeds = sorted(t["images_per_s"] for t in tries)
        row["images_per_s_repeats"] = [t["images_per_s"] for t in tries]
        row["images_per_s"] = speeds[len(speeds) // 2]
        row["seconds_per_epoch"] = sorted(t["seconds_per_epoch"] for t in tries)[len(tries) // 2]
        row["peak_rss_mib"] = max(t["peak_rss_mib"] for t in tries)
        model = vaekit.load(row["run"]) if peer.startswith("vaekit") else peer_model(Path(row["weights"]))
        row.update(score(model, x_test, args.iw_samples))
        record = row.pop("record", None)
        if record and record.get("get_nll"):
            row["own_nll"] = record["get_nll"]
        for t in tries:
            t.pop("record", None)
        rows.append(row)
    # ratio of each vaekit variant to each peer, repeat by repeat: {"vaekit-bf16": {"pythae": [...], ...}, ...}
    paired = {mine: {peer: [a["images_per_s"] / b["images_per_s"] for a, b in zip(repeats[mine], tries)]
                     for peer, tries in repeats.items() if not peer.startswith("vaekit")}
              for mine in repeats if mine.startswith("vaekit")}
    return {"dataset": data, "epochs": args.epochs, "repeats": args.repeats, "rows": rows,
            "matmul_bounds": {precision: {"images_per_s": statistics.median(times), "repeats": times}
                              for precision, times in bounds.items()},
            "paired_ratios": paired}


def matmul_bound(out: Path, logs: Path, precision: str = "fp32") -> float:
    """images/s the six layers' matrix products alone allow at batch 128 and 2 threads (benchmarks/matmul_bound.py)."""
    run_child([PYTHON, str(HERE / "matmul_bound.py"), "--threads", "2", "--repeats", "100", "--trials", "5",
               "--dtype", precision, "--out", str(out)], logs / f"{out.stem}.log")
    return json.loads(out.read_text())["images_per_second_bound"]


def quality(data: str, args: argparse.Namespace, work: Path, x_test: torch.Tensor, per_epoch: dict) -> dict:
    """pythae trains for its time budget; vaekit's fast recipe gets a quarter of it."""
    pythae_epochs = max(1, math.floor(args.pythae_minutes * 60 / per_epoch["pythae"]))
    pythae = train_peer("peer_pythae.py", data, work / f"quality-pythae-{data}", pythae_epochs, work, ["--nll-images", "0"])
    pythae.pop("record")
    pythae.update(score(peer_model(Path(pythae["weights"])), x_test, args.iw_samples))
    budget = pythae["train_seconds"] / 4
    # The fast recipe's per-epoch time at batch 256, measured by a 1-epoch probe, sets how many epochs fit; the
    # margin leaves room for the machine slowing down after the probe (a 2-core VM's speed drifts by minutes).
    probe = train_vaekit(data, work / f"probe-{data}", 1, "fast", work)
    epochs = max(1, math.floor(budget * args.quality_margin / probe["seconds_per_epoch"]))
    fast = train_vaekit(data, work / f"quality-vaekit-{data}", epochs, "fast", work)
    fast.update(score(vaekit.load(fast["run"]), x_test, args.iw_samples))
    fast["within_budget"] = fast["train_seconds"] <= budget
    # When vaekit's per-epoch test loss (the negative ELBO with one posterior draw, seed 0, logged by the trainer)
    # first reached the peer's final test ELBO: a second, schedule-independent view of time to quality.
    elapsed = 0.0
    for row in epochs_of(Path(fast["run"])):
        elapsed += row["seconds"]
        if row["val_loss"] is not None and row["val_loss"] <= -pythae["elbo"]:
            fast["reached_peer_elbo"] = {"epoch": row["epoch"], "train_seconds": elapsed, "val_loss": row["val_loss"]}
            break
    return {"dataset": data, "pythae": pythae, "vaekit_fast": fast, "vaekit_budget_seconds": budget,
            "pythae_minutes": args.pythae_minutes}


def run_pinned(jobs: list[tuple[list[str], Path, int | None]]) -> list[tuple[float, float]]:
    """Run several children at once, each pinned to its own core (or unpinned when core is None);
    returns (wall seconds, peak RSS MiB) per child, in order."""
    started = time.perf_counter()
    children, handles = [], []
    for argv, log_path, core in jobs:
        handle = open(log_path, "w")
        pin = (lambda c=core: os.sched_setaffinity(0, {c})) if core is not None else None
        children.append(subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, preexec_fn=pin))
        handles.append(handle)
    peaks = [0.0] * len(children)
    walls = [0.0] * len(children)
    while any(walls[i] == 0.0 for i in range(len(children))):
        for i, child in enumerate(children):
            if walls[i] == 0.0:
                if child.poll() is None:
                    peaks[i] = max(peaks[i], peak_rss_mib(child.pid) or 0.0)
                else:
                    walls[i] = time.perf_counter() - started
        time.sleep(0.2)
    for handle in handles:
        handle.close()
    for (argv, log_path, _), child in zip(jobs, children):
        if child.returncode != 0:
            tail = log_path.read_text().splitlines()[-15:]
            raise SystemExit(f"{' '.join(argv[:4])} ... failed (exit {child.returncode}); log {log_path}:\n"
                             + "\n".join(tail))
    return list(zip(walls, peaks))


def epochs_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def best(datasets: list[str], args: argparse.Namespace, work: Path) -> list[dict]:
    """The fast recipe given --best-minutes of training per dataset, then scored with K=--best-k on the full test
    set. With at least as many cores as datasets, the datasets run at once, one single-thread process pinned to
    each core (so each model gets one core, half of what the 2-core target allows); else one after another with
    every core. A one-epoch probe, run the same way, sets the epochs; --best-margin leaves room for the machine
    slowing down after the probe."""
    cores = sorted(os.sched_getaffinity(0))
    parallel = len(datasets) > 1 and len(cores) >= len(datasets)
    threads = 1 if parallel else len(cores)

    def stage(jobs: list[tuple[list[str], Path, int | None]]) -> list[tuple[float, float]]:
        if parallel:
            return run_pinned(jobs)
        return [run_pinned([job])[0] for job in jobs]

    pins = [cores[i] if parallel else None for i in range(len(datasets))]
    probes = [work / f"probe-best-{data}" for data in datasets]
    stage([(vaekit_argv(d, out, 1, "fast", threads), work / f"{out.name}.log", pin) for d, out, pin in zip(datasets, probes, pins)])
    epochs = [max(1, math.floor(args.best_minutes * 60 * args.best_margin / epochs_of(out)[0]["seconds"]))
              for out in probes]
    outs = [work / f"best-{data}" for data in datasets]
    trained = stage([(vaekit_argv(d, out, n, "fast", threads), work / f"{out.name}.log", pin)
                     for d, out, n, pin in zip(datasets, outs, epochs, pins)])
    evals = [out / "test-eval.json" for out in outs]
    scored = stage([([VAEKIT, "evaluate", str(out), "--iw-samples", str(args.best_k), "--seed", "0", "--threads",
                      str(threads), "--no-progress", "--out", str(path)], work / f"eval-{out.name}.log", pin)
                    for out, path, pin in zip(outs, evals, pins)])
    tables = []
    for data, out, path, (wall, rss), (eval_wall, _) in zip(datasets, outs, evals, trained, scored):
        result = json.loads(path.read_text())
        run = {**vaekit_record(out, wall, rss), "recipe": "fast", "threads": threads, "parallel": parallel,
               "elbo": result["elbo"], "nll": result["nll"], "nll_stderr": result["nll_stderr"],
               "iw_samples": result["iw_samples"], "active_units": result["active_units"],
               "eval_images": result["n_examples"], "eval_seconds": eval_wall}
        tables.append({"dataset": data, "vaekit_fast": run})
    return tables


def fmt(value, digits=1):
    return "–" if value is None else f"{value:,.{digits}f}"


def markdown(results: dict) -> str:
    lines = [f"# Benchmark {results['date']}", "", f"Machine: {results['machine']['cpu']}, "
             f"{results['machine']['cpu_count']} cores, torch {results['machine']['torch']}, "
             f"load average at start {results['machine']['loadavg_1_5_15'][0]:.2f}.", ""]
    for table in results.get("throughput", []):
        rows = {row["peer"]: row for row in table["rows"]}
        vk = rows["vaekit"]
        mine = [name for name in rows if name.startswith("vaekit")]
        lines += [f"## {table['dataset']}: same model, batch 128, median of {table.get('repeats', 1)} round-robin "
                  f"repeats of {table['epochs']} epochs", "",
                  "| | train images/s | s/epoch | peak MiB | test ELBO | test IS-NLL (K) | eval s | "
                  + " | ".join(f"{name} speed-up" for name in mine) + " |",
                  "|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(mine)]
        for name, row in rows.items():
            ratios = " | ".join(f"{rows[m]['images_per_s'] / row['images_per_s']:.2f}x" for m in mine)
            lines.append(f"| {name} | {fmt(row['images_per_s'], 0)} | {fmt(row['seconds_per_epoch'], 2)} | "
                         f"{fmt(row['peak_rss_mib'], 0)} | {fmt(row['elbo'], 2)} | {fmt(row['nll'], 2)} ± "
                         f"{fmt(row['nll_stderr'], 2)} ({row['iw_samples']}) | {fmt(row['eval_seconds'], 1)} | "
                         f"{ratios} |")
        bounds = table.get("matmul_bounds", {})
        for precision, bound in bounds.items():
            lines.append(f"| matrix products alone, {precision} (bound) | " + fmt(bound["images_per_s"], 0) + " |"
                         + " – |" * (5 + len(mine)))
        lines.append("")
        for precision, bound in bounds.items():
            name = vaekit_name(precision)
            if name in rows:
                lines.append(f"- {name} trains at {100 * rows[name]['images_per_s'] / bound['images_per_s']:.0f}% of "
                             f"the {precision} matrix-product bound timed in the same rotation (per repeat: "
                             + ", ".join(fmt(b, 0) for b in bound["repeats"]) + " images/s).")
        for name, peers in table.get("paired_ratios", {}).items():
            for peer, ratios in peers.items():
                lines.append(f"- {name} / {peer}, repeat by repeat: " + ", ".join(f"{r:.2f}x" for r in ratios)
                             + f" (median {statistics.median(ratios):.2f}x).")
        own = rows.get("pythae", {}).get("own_nll")
        if own:
            lines += ["", f"pythae's own `get_nll` (K={own.get('n_samples')}): "
                      f"{fmt(own.get('seconds_per_1000_images'), 1)} s per 1,000 images; vaekit's evaluator: "
                      f"{fmt(vk['eval_seconds'] / vk['eval_images'] * 1000, 1)} s per 1,000 images (ELBO, NLL, "
                      f"active units together)."]
        lines.append("")
    for table in results.get("quality", []):
        p, f = table["pythae"], table["vaekit_fast"]
        budget = table["vaekit_budget_seconds"]
        lines += [f"## Time to quality, {table['dataset']}", "",
                  "| | training s | share of pythae's time | epochs | test ELBO | test IS-NLL (K) |",
                  "|---|---:|---:|---:|---:|---:|",
                  f"| pythae (Adam 1e-3, batch 128) | {fmt(p['train_seconds'], 0)} | 100% | {p['epochs']} | "
                  f"{fmt(p['elbo'], 2)} | {fmt(p['nll'], 2)} ± {fmt(p['nll_stderr'], 2)} ({p['iw_samples']}) |",
                  f"| vaekit `--recipe fast` | {fmt(f['train_seconds'], 0)} | "
                  f"{100 * f['train_seconds'] / p['train_seconds']:.1f}% | {f['epochs']} | {fmt(f['elbo'], 2)} | "
                  f"{fmt(f['nll'], 2)} ± {fmt(f['nll_stderr'], 2)} ({f['iw_samples']}) |"]
        first = table.get("vaekit_fast_first_attempt")
        if first:  # a rerun of vaekit's side is shown with the attempt it replaced
            lines.append(f"| vaekit `--recipe fast`, first attempt (over budget) | {fmt(first['train_seconds'], 0)} | "
                         f"{100 * first['train_seconds'] / p['train_seconds']:.1f}% | {first['epochs']} | "
                         f"{fmt(first['elbo'], 2)} | {fmt(first['nll'], 2)} ± {fmt(first['nll_stderr'], 2)} "
                         f"({first['iw_samples']}) |")
        lines.append("")
        lines += [f"pythae's epochs were sized to {table.get('pythae_minutes', 25.0):g} minutes by its speed in the "
                  f"throughput stage; its run took {fmt(p['train_seconds'] / 60, 1)} min, and vaekit's budget is a "
                  f"quarter of what pythae actually used ({fmt(budget, 0)} s).", ""]
        for attempt, name in ((f, "vaekit's run"), (first, "the first attempt")):
            if attempt and attempt.get("train_seconds", 0) > budget:
                lines += [f"{name[0].upper()}{name[1:]} was sized to a quarter of pythae's time ({fmt(budget, 0)} s) by a "
                          f"one-epoch probe and took {fmt(attempt['train_seconds'], 0)} s, over the budget.", ""]
        reached = f.get("reached_peer_elbo")
        if reached:
            lines += [f"vaekit's per-epoch test loss first reached pythae's final test ELBO ({fmt(p['elbo'], 2)}) after "
                      f"{fmt(reached['train_seconds'], 0)} s of training (epoch {reached['epoch']}), "
                      f"{100 * reached['train_seconds'] / p['train_seconds']:.1f}% of pythae's time.", ""]
    for table in results.get("best", []):
        f = table["vaekit_fast"]
        how = (f"{f['threads']} thread, pinned to its own core while the other datasets trained on the others"
               if f.get("parallel") else f"{f.get('threads', 2)} threads")
        lines += [f"## Best recipe, {table['dataset']}: {fmt(f['train_seconds'] / 60, 1)} min of training, "
                  f"{f['epochs']} epochs ({how})", "",
                  f"Test IS-NLL {fmt(f['nll'], 2)} ± {fmt(f['nll_stderr'], 2)} nats (K={f['iw_samples']}, "
                  f"{f['eval_images']} test images, binarised once with seed 0), ELBO {fmt(f['elbo'], 2)}.", ""]
    return "\n".join(lines)


def merge(results: dict, stage: str, tables: list[dict]) -> None:
    """Add a stage's tables, replacing any earlier table of that stage for the same dataset."""
    current = {t["dataset"]: t for t in results.get(stage, [])}
    new = {t["dataset"]: t for t in tables}
    results[stage] = [new.pop(name, t) for name, t in current.items()] + list(new.values())  # keeps the order


def write(stem: Path, results: dict) -> None:
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(results) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="mnist,fashion-mnist")
    parser.add_argument("--stages", default="throughput,quality,best")
    parser.add_argument("--epochs", type=int, default=5, help="throughput stage: epochs per peer and repeat")
    parser.add_argument("--repeats", type=int, default=3, help="throughput stage: round-robin repeats (median)")
    parser.add_argument("--precisions", default=None,
                        help="throughput stage: vaekit's --precision values to time, e.g. fp32,bf16 (default: fp32, "
                             "and bf16 where the CPU multiplies bfloat16 natively)")
    parser.add_argument("--iw-samples", type=int, default=1000)
    parser.add_argument("--eval-images", type=int, default=10000, help="test images scored per model")
    parser.add_argument("--pythae-nll-images", type=int, default=1000)
    parser.add_argument("--pythae-minutes", type=float, default=25.0)
    parser.add_argument("--quality-margin", type=float, default=0.9,
                        help="quality stage: fraction of vaekit's quarter-time budget the probe-sized epochs may fill")
    parser.add_argument("--best-minutes", type=float, default=30.0)
    parser.add_argument("--best-k", type=int, default=5000)
    parser.add_argument("--best-margin", type=float, default=0.9,
                        help="best stage: fraction of --best-minutes the probe-sized epochs may fill")
    parser.add_argument("--fresh", action="store_true",
                        help="start a new results file rather than replacing stage tables in today's")
    parser.add_argument("--out", default=None, help="results file stem (default benchmarks/results/<date>)")
    args = parser.parse_args()
    native = native_bf16(torch.device("cpu"))
    args.precisions = args.precisions.split(",") if args.precisions else ["fp32"] + (["bf16"] if native else [])
    if args.precisions[0] != "fp32" or len(set(args.precisions)) != len(args.precisions) \
            or not set(args.precisions) <= {"fp32", "bf16"}:
        parser.error(f"--precisions {','.join(args.precisions)}: use fp32 or fp32,bf16 (fp32 first: the headline "
                     "ratios are vaekit's float32 training)")
    torch.set_num_threads(2)
    date = datetime.date.today().isoformat()
    stem = Path(args.out) if args.out else HERE / "results" / date
    stem.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="vaekit-bench-"))
    results: dict = {"date": date, "machine": bench_common.machine_record(), "args": vars(args), "work": str(work)}
    if stem.with_suffix(".json").exists() and not args.fresh:  # same day: rerun stages replace their own tables
        earlier = json.loads(stem.with_suffix(".json").read_text())
        results.update({k: earlier[k] for k in ("throughput", "quality", "best") if k in earlier})
        results["earlier_runs"] = earlier.get("earlier_runs", []) + [{k: earlier.get(k) for k in ("machine", "args")}]
    stages = args.stages.split(",")
    datasets = args.datasets.split(",")
    for data in datasets:
        dataset = load_dataset(DataConfig(name=data, binarize="dynamic"))  # test set: one draw, seed 0
        x_test = dataset.x_test[: args.eval_images]
        per_epoch = {}
        if "throughput" in stages:
            table = throughput(data, args, work, x_test)
            merge(results, "throughput", [table])
            per_epoch = {row["peer"]: row["seconds_per_epoch"] for row in table["rows"]}
        if "quality" in stages:
            if "pythae" not in per_epoch:
                probe = train_peer("peer_pythae.py", data, work / f"probe-pythae-{data}", 1, work, ["--nll-images", "0"])
                per_epoch["pythae"] = probe["seconds_per_epoch"]
            merge(results, "quality", [quality(data, args, work, x_test, per_epoch)])
        write(stem, results)  # after every dataset
    if "best" in stages:
        merge(results, "best", best(datasets, args, work))
    results["machine_at_end"] = {"loadavg_1_5_15": list(os.getloadavg())}
    write(stem, results)
    print(markdown(results))
    print(f"\nwrote {stem.with_suffix('.json')} and {stem.with_suffix('.md')}")


if __name__ == "__main__":
    main()
