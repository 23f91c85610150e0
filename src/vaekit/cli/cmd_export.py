"""vaekit export: a run's networks in other formats (ONNX), or the run as a Hugging Face Hub folder."""
from __future__ import annotations

import argparse
import importlib.util

from ..errors import VaekitError
from ..extras import install_hint
from ..models import Model
from .common import add_threads, load_run


def register(sub: argparse._SubParsersAction) -> None:
    help = ("write a run's encoder and decoder as ONNX files (checked in onnxruntime against PyTorch), or the run as "
            "a Hugging Face Hub folder with its model card")
    p = sub.add_parser("export", help=help, description=help + ". --onnx needs the optional extra: pip install "
                       "'vaekit[onnx]'.")
    p.add_argument("run", help="run folder (or hf://USER/REPO[@REVISION], a model on the Hugging Face Hub, which "
                   "needs pip install 'vaekit[hub]')")
    p.add_argument("--onnx", metavar="FOLDER", help="where to write encoder.onnx, decoder.onnx and onnx.json")
    p.add_argument("--opset", type=int, help="ONNX opset version (default: the exporter's)")
    p.add_argument("--hub", metavar="FOLDER", help="where to write a Hugging Face Hub folder: config.json and "
                   "model.safetensors as in the run, README.md (a model card: data, family, the last epoch's metrics) "
                   "and samples.png; upload it with: hf upload USER/REPO FOLDER")
    p.add_argument("--repo-id", metavar="USER/REPO", help="the Hub repository the folder is for, named in the "
                   "card's how-to-load snippet")
    add_threads(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.onnx is None and args.hub is None:
        raise VaekitError("say what to write: --onnx FOLDER (ONNX files), --hub FOLDER (a Hugging Face Hub folder), "
                          "or both")
    if args.opset is not None and args.onnx is None:
        raise VaekitError("--opset sets the ONNX export's opset: add --onnx FOLDER, or drop --opset")
    if args.repo_id is not None and args.hub is None:
        raise VaekitError("--repo-id names the repository in the Hub folder's card: add --hub FOLDER, or drop "
                          "--repo-id")
    if args.opset is not None:
        from ..integrations.onnx import check_opset

        check_opset(args.opset)  # before loading the run
    model, metrics = _load(args.run, metrics=args.hub is not None)
    if args.onnx is not None:
        from ..integrations.onnx import export_onnx

        result = export_onnx(model, args.onnx, args.opset)
        for name, path in (("encoder", result.encoder), ("decoder", result.decoder)):
            print(f"{path}  (onnxruntime within {result.max_difference[name]:.1g} of PyTorch)")
        print(result.description)
    if args.hub is not None:
        from ..integrations.hub import save_pretrained

        folder = save_pretrained(model, args.hub, metrics=metrics, repo_id=args.repo_id)
        for path in (folder.config, folder.weights, folder.card, folder.samples):
            if path is not None:
                print(path)
        print(f"upload it with: hf upload {args.repo_id or 'USER/REPO'} {folder.directory}"
              + ("" if importlib.util.find_spec("huggingface_hub") else
                 f"  (the hf command comes with {install_hint('hub')})"))
    return 0


def _load(run: str, metrics: bool) -> tuple[Model, dict[str, float]]:
    """The model and, if asked for, its last epoch's metrics: from a run folder, or (hf://...) from the Hub, where
    a model keeps none."""
    if run.startswith("hf://"):
        from ..integrations.hub import from_pretrained

        return from_pretrained(run), {}
    from ..integrations.hub import read_metrics

    return load_run(run), read_metrics(run) if metrics else {}
