"""Training speed on this machine: one process, two processes (torchrun, gloo) and torch.compile, side by side.

    python benchmarks/scaling.py [--epochs 4] [--data mnist-10k] [--setups cpu|gpu]

Each configuration trains the same model from the same seed in a fresh process (`vaekit train`); the speed is the
median images/s of the epochs after the first (the first holds start-up and, with --compile, the compile itself,
reported separately). Two models: the `fast` recipe (an MLP) and the default VAE (conv networks for 28x28 images).
`--setups gpu` times one CUDA GPU instead: fp32, bf16, fp16 and --compile. Writes
benchmarks/results/scaling-<date>.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import torch  # noqa: E402
from bench_common import machine, write_results  # noqa: E402

MODELS = {
    "fast recipe (MLP 512-256, latent 32, batch 256)": ["--recipe", "fast"],
    "default VAE (conv 32-64, latent 16, batch 128)": [],
}
SETUPS = {
    "cpu": {
        "1 process, 2 threads": ["--device", "cpu"],
        "2 processes (gloo), 1 thread each": ["--device", "cpu", "--nproc", "2"],
        "1 process, 2 threads, --compile": ["--device", "cpu", "--compile"],
    },
    "gpu": {  # one GPU: the precisions and torch.compile (several GPUs: --nproc N, NCCL; not among these)
        "1 GPU, fp32": ["--device", "cuda"],
        "1 GPU, bf16": ["--device", "cuda", "--precision", "bf16"],
        "1 GPU, fp16": ["--device", "cuda", "--precision", "fp16"],
        "1 GPU, fp32, --compile": ["--device", "cuda", "--compile"],
    },
}


def train(model: list[str], setup: list[str], args: argparse.Namespace, out: Path) -> dict:
    command = [sys.executable, "-m", "vaekit", "train", *model, *setup, "--data", args.data, "--epochs",
               str(args.epochs), "--out", str(out), "--no-progress", "--overwrite"]
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    wall = time.perf_counter() - start
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"command": " ".join(["vaekit", "train", *model, *setup, "--data", args.data, "--epochs",
                                 str(args.epochs)]),
            "wall_s": round(wall, 1), "first_epoch_s": round(rows[0]["seconds"], 2),
            "images_per_s": round(statistics.median(r["images_per_s"] for r in rows[1:]), 1),
            "epoch_s": [round(r["seconds"], 2) for r in rows], "val_loss": rows[-1]["val_loss"]}


def markdown(results: dict) -> str:
    gpu = f", GPU: {results['gpu']}" if results.get("gpu") else ""
    lines = [f"Training speed ({results['machine']['cpu_label']}, {results['machine']['cores']} cores{gpu}, "
             f"{results['data']}, {results['epochs']} epochs)", "",
             "| model | setup | images/s (after epoch 1) | vs the first setup | first epoch s | wall s |",
             "|---|---|---|---|---|---|"]
    for model, setups in results["runs"].items():
        base = next(iter(setups.values()))["images_per_s"]
        for name, r in setups.items():
            lines.append(f"| {model} | {name} | {r['images_per_s']:.0f} | {r['images_per_s'] / base:.2f}x | "
                         f"{r['first_epoch_s']:.1f} | {r['wall_s']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--data", default="mnist-10k")
    parser.add_argument("--setups", choices=sorted(SETUPS), default="cpu",
                        help="cpu: one process, two processes, --compile; gpu: one GPU in fp32, bf16, fp16 and "
                             "with --compile")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch (start-up, a compile) is left out of the median")
    if args.setups == "gpu" and not torch.cuda.is_available():
        parser.error("--setups gpu, but torch sees no CUDA GPU here")
    results = {"machine": {**machine(), "cores": os.cpu_count()}, "data": args.data, "epochs": args.epochs,
               "gpu": torch.cuda.get_device_name() if args.setups == "gpu" else None, "runs": {}}
    with tempfile.TemporaryDirectory() as work:
        for model_name, model in MODELS.items():
            results["runs"][model_name] = {}
            for setup_name, setup in SETUPS[args.setups].items():
                result = train(model, setup, args, Path(work) / "run")
                results["runs"][model_name][setup_name] = result
                print(f"{model_name} | {setup_name}: {result}", file=sys.stderr)
    write_results("scaling", results, args.out, markdown(results))


if __name__ == "__main__":
    main()
