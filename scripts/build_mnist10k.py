"""Rebuild src/vaekit/_data/mnist10k.npz from the original MNIST training files, verified by md5.

Usage: python scripts/build_mnist10k.py DIR   (DIR holds train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz])
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from vaekit.data.idx import read_idx, verify_md5

OUT = Path(__file__).resolve().parents[1] / "src" / "vaekit" / "_data" / "mnist10k.npz"
MD5 = {"train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb", "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624"}


def main(folder: str) -> None:
    arrays = {}
    for stem, md5 in MD5.items():
        path = next((p for p in (Path(folder) / stem, Path(folder) / f"{stem}.gz") if p.exists()), None)
        if path is None:
            sys.exit(f"{stem}[.gz] not found in {folder}")
        verify_md5(path, md5)
        arrays[stem] = read_idx(path)
    images = arrays["train-images-idx3-ubyte"][:10_000].astype(np.uint8)
    labels = arrays["train-labels-idx1-ubyte"][:10_000].astype(np.uint8)
    np.savez_compressed(OUT, images=images, labels=labels)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB): images {images.shape}, labels {labels.shape}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
