"""What the model contract costs: training throughput of this tree against an earlier commit, in one run.

Both trees train the benchmark model (MLP 784-512-256, 16 Gaussian latents, Bernoulli likelihood, Adam 1e-3,
batch 128, dynamically binarised data) in child processes that alternate round-robin, so both see the same
machine state; the ratio of their median images/s is the contract's overhead. This tree also times the same
model as an IWAE at K = 5 and a label-conditioned VAE.

    python benchmarks/contract_overhead.py --base 0ed9e08 --repeats 5 --out benchmarks/results/contract.json
    python benchmarks/contract_overhead.py --in-process --repeats 20 --data mnist-10k

Training steps only (vaekit's own per-epoch images/s, validation excluded); the first epoch of every child is
dropped as warm-up. --in-process instead imports the earlier tree as a second package (vaekit_base) and
alternates single epochs of the two trainers in one process, so each pair of epochs runs seconds apart: on a
machine whose speed drifts by 10-20% between minutes, that pairs far more closely than separate processes.
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, torch, vaekit
from vaekit.config import override, RunConfig
torch.set_num_threads(int(sys.argv[1]))
cfg = override(RunConfig(), sys.argv[3:])
result = vaekit.train(cfg)
print(json.dumps([h.images_per_s for h in result.history][1:]))
"""

MODEL = ["model.network=mlp", "model.hidden_dims=512,256", "model.latent_dim=16", "model.likelihood=bernoulli",
         "data.binarize=dynamic", "train.batch_size=128", "train.lr=1e-3", "train.progress=false"]
VARIANTS = {  # name -> (tree, extra settings)
    "base vae": ("base", []),
    "vae": ("head", []),
    "iwae k=5": ("head", ["model.family=iwae", "model.iwae.k=5"]),
    "vae, label-conditioned": ("head", ["model.condition=label"]),
}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def child(src: Path, threads: int, settings: list[str]) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run([sys.executable, "-c", CHILD, str(threads), "--", *settings], env=env, text=True,
                          capture_output=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"a benchmark child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def in_process(base_src: Path, args: argparse.Namespace) -> dict[str, list[float]]:
    """Single epochs of the two trees' trainers, alternating in this process: {"base vae": [...], "vae": [...]}."""
    import importlib
    from dataclasses import replace

    import torch

    torch.set_num_threads(args.threads)
    aliases = Path(tempfile.mkdtemp(prefix="vaekit-alias-"))
    atexit.register(shutil.rmtree, aliases, ignore_errors=True)  # the base tree's alias, once the process ends
    (aliases / "vaekit_base").symlink_to(base_src / "vaekit")
    sys.path[:0] = [str(aliases), str(ROOT / "src")]
    trainers = {}
    for name, package in (("base vae", "vaekit_base"), ("vae", "vaekit")):
        kit = importlib.import_module(package)
        cfg = kit.config.override(kit.RunConfig(), [*MODEL, f"data.name={args.data}", "train.epochs=1"])
        dataset = kit.load_dataset(cfg.data)
        cfg = kit.runs.resolve_config(cfg, dataset)
        torch.manual_seed(0)
        trainer = kit.Trainer(kit.build_model(cfg.model), cfg.train)
        trainers[name] = (trainer, kit.data.train_data(dataset, cfg.data))
    speeds: dict[str, list[float]] = {name: [] for name in trainers}
    for repeat in range(args.repeats + 1):  # the first round is warm-up
        for name, (trainer, train) in trainers.items():
            trainer.cfg = replace(trainer.cfg, epochs=trainer.epoch + 1)
            speed = trainer.fit(train)[-1].images_per_s
            if repeat:
                speeds[name].append(speed)
                print(f"repeat {repeat}: {name:10s} {speed:8.0f} images/s", flush=True)
    return speeds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="0ed9e08", help="the commit to compare against (before the contract)")
    parser.add_argument("--data", default="mnist", help="mnist (full; `vaekit data get mnist`) or mnist-10k")
    parser.add_argument("--epochs", type=int, default=4, help="per child; the first is dropped")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--in-process", action="store_true",
                        help="alternate single epochs of the two trees in one process (the VAE only)")
    args = parser.parse_args()
    if args.epochs < 2 and not args.in_process:
        parser.error("--epochs must be at least 2: each child's first epoch (start-up) is left out of its median")
    with tempfile.TemporaryDirectory(prefix="vaekit-base-") as folder:
        base = Path(folder) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.base], check=True,
                       capture_output=True)
        try:
            if args.in_process:
                speeds = in_process(base / "src", args)
                return report(speeds, args)
            trees = {"base": base / "src", "head": ROOT / "src"}
            common = [*MODEL, f"data.name={args.data}", f"train.epochs={args.epochs}"]
            speeds: dict[str, list[float]] = {name: [] for name in VARIANTS}
            for repeat in range(args.repeats):
                for name, (tree, extra) in VARIANTS.items():
                    epochs = child(trees[tree], args.threads, common + extra)
                    speeds[name].append(statistics.median(epochs))
                    print(f"repeat {repeat + 1}: {name:24s} {speeds[name][-1]:8.0f} images/s", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], capture_output=True)
    return report(speeds, args)


def report(speeds: dict[str, list[float]], args: argparse.Namespace) -> int:
    medians = {name: statistics.median(values) for name, values in speeds.items()}
    paired = [head / old for head, old in zip(speeds["vae"], speeds["base vae"])]
    record = {
        "cpu": cpu_name(), "threads": args.threads, "data": args.data, "epochs": args.epochs, "base": args.base,
        "mode": "in-process" if args.in_process else "processes",
        "images_per_s": speeds, "median_images_per_s": medians,
        "vae_over_base_paired": paired, "vae_over_base_median": statistics.median(paired),
    }
    if "iwae k=5" in medians:
        record["iwae_over_vae"] = medians["iwae k=5"] / medians["vae"]
        record["conditioned_over_vae"] = medians["vae, label-conditioned"] / medians["vae"]
    print(json.dumps({k: v for k, v in record.items() if k != "images_per_s"}, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
