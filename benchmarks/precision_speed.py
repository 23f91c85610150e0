"""Training speed of the `vae-wide` recipe in fp32 and bf16, compiled or not: each variant trains 6 epochs of full
MNIST one after another (`vaekit train --recipe vae-wide --data mnist --epochs 6 --set train.minutes=null`), and its
speed is the median images/s of epochs 4-6 (compilation and warm-up fall in the first ones).

    python benchmarks/precision_speed.py [--epochs 6] [--out FILE]

Writes benchmarks/results/precision-speed-<date>.json (or --out) with the ratios to fp32 measured in the same run,
and prints a Markdown table. About 4 minutes on 2 cores with AMX; bf16 is emulated (slow) on CPUs without it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_common import machine, write_results  # noqa: E402

VARIANTS = {"fp32": ["--precision", "fp32"], "fp32 compiled": ["--precision", "fp32", "--set", "train.compile=true"],
            "bf16": ["--precision", "bf16"], "bf16 compiled": ["--precision", "bf16", "--set", "train.compile=true"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.epochs < 4:
        parser.error("--epochs must be at least 4: the speed is the median of epochs 4 onward (the compile and "
                     "warm-up fall in the first ones)")
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name, flags in VARIANTS.items():
            out = Path(work) / name.replace(" ", "-")
            command = [sys.executable, "-m", "vaekit", "train", "--recipe", "vae-wide", "--data", "mnist", "--epochs",
                       str(args.epochs), "--set", "train.minutes=null", "--set", "train.compile=false", *flags,
                       "--no-progress", "--out", str(out)]
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
            speeds = [row["images_per_s"] for row in history]
            rows.append({"variant": name, "flags": flags, "wall_seconds": round(time.perf_counter() - start, 1),
                         "images_per_s_by_epoch": [round(v) for v in speeds],
                         "median_images_per_s": round(statistics.median(speeds[3:])),
                         "last_val_loss": history[-1].get("val_loss")})
    base = rows[0]["median_images_per_s"]
    for row in rows:
        row["ratio_to_fp32"] = round(row["median_images_per_s"] / base, 2)
    results = {"machine": machine(), "epochs": args.epochs, "variants": rows}
    table = "\n".join([f"vae-wide, full MNIST, median of epochs 4-{args.epochs} ({results['machine']['cpu_label']})",
                       "", "| variant | images/s | vs fp32 |", "|---|---|---|"]
                      + [f"| {r['variant']} | {r['median_images_per_s']:,} | {r['ratio_to_fp32']:.2f}x |"
                         for r in rows])
    write_results("precision-speed", results, args.out, table)


if __name__ == "__main__":
    main()
