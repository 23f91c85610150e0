"""vaekit export: a run's networks in other formats (ONNX)."""
from __future__ import annotations

import argparse

from ..errors import VaekitError
from .common import load_run


def register(sub: argparse._SubParsersAction) -> None:
    help = "write a run's encoder and decoder as ONNX files (checked in onnxruntime against PyTorch)"
    p = sub.add_parser("export", help=help, description=help + ". Needs the optional extra: pip install "
                       "'vaekit[onnx]'.")
    p.add_argument("run", help="run folder")
    p.add_argument("--onnx", required=True, metavar="FOLDER", help="where to write encoder.onnx, decoder.onnx and "
                   "onnx.json")
    p.add_argument("--opset", type=int, help="ONNX opset version (default: the exporter's)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..integrations.onnx import export_onnx

    if args.opset is not None and not 7 <= args.opset <= 30:
        raise VaekitError(f"--opset must be an ONNX opset number (7..30), got {args.opset}")
    result = export_onnx(load_run(args.run), args.onnx, args.opset)
    for name, path in (("encoder", result.encoder), ("decoder", result.decoder)):
        print(f"{path}  (onnxruntime within {result.max_difference[name]:.1g} of PyTorch)")
    print(result.description)
    return 0
