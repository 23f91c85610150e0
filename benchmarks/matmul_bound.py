"""Upper bound on training speed from the matrix products alone, on this machine.

The issue's model is six Linear layers when the mu and logvar heads are one 256 -> 32 product
(784-512, 512-256, 256-32 | 16-256, 256-512, 512-784); with --heads separate it is seven
(256-16 twice), same FLOPs, one more small product. Per training step at batch B we count,
for a layer Y = X W^T with W of shape (out, in):
    forward       Y      = X      @ W^T     (B x in) @ (in x out)     2*B*in*out FLOPs
    backward      dX     = dY     @ W       (B x out) @ (out x in)    2*B*in*out
    backward      dW     = dY^T   @ X       (out x B) @ (B x in)      2*B*in*out
except that the first layer needs no dX (the data needs no gradient). With fused heads that is
6 + 5 + 6 = 17 GEMMs and 5.66 MFLOP per image. Bias adds, activations, the loss, sampling,
Adam and all framework overhead are not counted: a real step can only be slower.

Prints and optionally writes (--out) per-GEMM times, GFLOP/s and the implied images/s bound.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

LAYERS = {  # heads -> [(in_features, out_features), ...] in forward order
    "fused": [(784, 512), (512, 256), (256, 32), (16, 256), (256, 512), (512, 784)],
    "separate": [(784, 512), (512, 256), (256, 16), (256, 16), (16, 256), (256, 512), (512, 784)],
}


@dataclass(frozen=True)
class Gemm:
    name: str
    m: int
    k: int
    n: int

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n


def training_step_gemms(layers: list[tuple[int, int]], batch: int) -> list[Gemm]:
    gemms = []
    for index, (fan_in, fan_out) in enumerate(layers):
        label = f"L{index} {fan_in}->{fan_out}"
        gemms.append(Gemm(f"{label} forward Y=XW^T", batch, fan_in, fan_out))
        if index > 0:
            gemms.append(Gemm(f"{label} backward dX=dY W", batch, fan_out, fan_in))
        gemms.append(Gemm(f"{label} backward dW=dY^T X", fan_out, batch, fan_in))
    return gemms


def operands(gemm: Gemm, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Operands in the memory layouts autograd uses for nn.Linear (transposes are views)."""
    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, dtype=dtype)

    if "forward" in gemm.name:  # X (m, k) @ W^T, W stored (n, k)
        left, right = rand(gemm.m, gemm.k), rand(gemm.n, gemm.k).t()
    elif "dX" in gemm.name:  # dY (m, k) @ W, W stored (k, n)
        left, right = rand(gemm.m, gemm.k), rand(gemm.k, gemm.n)
    else:  # dY^T (m, k) @ X, dY stored (k, m), X stored (k, n)
        left, right = rand(gemm.k, gemm.m).t(), rand(gemm.k, gemm.n)
    return left, right, torch.empty(gemm.m, gemm.n, dtype=dtype)


def seconds_per_call(calls, repeats: int, trials: int) -> float:
    """Median over trials of the mean time of `repeats` runs of every call in `calls`."""
    for call in calls:  # warm up MKL/oneDNN kernels and caches
        call()
    samples = []
    for _ in range(trials):
        start = time.perf_counter()
        for _ in range(repeats):
            for call in calls:
                call()
        samples.append((time.perf_counter() - start) / repeats)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--heads", choices=sorted(LAYERS), default="fused")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32",
                        help="bf16: the products as vaekit --precision bf16 runs them (bfloat16 operands and results)")
    parser.add_argument("--repeats", type=int, default=200, help="steps per timing trial")
    parser.add_argument("--trials", type=int, default=7)
    parser.add_argument("--out", default=None, help="optional JSON record")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    gemms = training_step_gemms(LAYERS[args.heads], args.batch)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    bound = [(gemm, operands(gemm, dtype)) for gemm in gemms]
    calls = [lambda l=l, r=r, o=o: torch.mm(l, r, out=o) for _, (l, r, o) in bound]
    rows = []
    for gemm, call in zip(gemms, calls):
        seconds = seconds_per_call([call], args.repeats, args.trials)
        rows.append({**asdict(gemm), "flops": gemm.flops, "seconds": seconds,
                     "gflop_per_second": gemm.flops / seconds / 1e9})
    step_seconds = seconds_per_call(calls, args.repeats, args.trials)
    step_flops = sum(gemm.flops for gemm in gemms)
    record = {
        "batch": args.batch,
        "heads": args.heads,
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "gemms_per_step": len(gemms),
        "flops_per_image": step_flops / args.batch,
        "step_seconds": step_seconds,
        "gflop_per_second": step_flops / step_seconds / 1e9,
        "images_per_second_bound": args.batch / step_seconds,
        "loadavg_1_5_15": list(os.getloadavg()),
        "gemms": rows,
    }
    for row in rows:
        print(f"{row['name']:<34} {row['m']:>4}x{row['k']:<4}x{row['n']:<4} "
              f"{row['seconds'] * 1e6:8.1f} us {row['gflop_per_second']:6.1f} GFLOP/s")
    print(f"{len(gemms)} GEMMs/step, {step_flops / args.batch / 1e6:.2f} MFLOP/image: "
          f"{step_seconds * 1e3:.3f} ms/step, {record['gflop_per_second']:.1f} GFLOP/s, "
          f"bound {record['images_per_second_bound']:.0f} images/s "
          f"(load average {record['loadavg_1_5_15'][0]:.2f} on {os.cpu_count()} cores)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
