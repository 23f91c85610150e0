"""A trained model's networks as ONNX files, checked in onnxruntime against PyTorch.

encoder.onnx: inputs (B, *data_shape) -> the posterior's parameters (B, ...), as the family reads them (a VAE: the
means, then the log-variances, of its Gaussian), and each item's code (B, *code_shape), as vaekit's latent tools
take it and decoder.onnx reads it (the posterior's mean; the hvae's z1, after top-down inference where the model
uses it; the vqvae's quantised grid, flattened). decoder.onnx: codes (B, *code_shape) -> the likelihood's mean
(B, *data_shape), the picture or row vaekit shows. A label-conditioned model's files also take `label` (B,) int64.
The batch size is free in both. Needs the extra: pip install 'vaekit[onnx]' (onnx, onnxruntime, onnxscript).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.tables import TableSchema, model_table
from ..errors import VaekitError
from ..extras import install_hint
from ..files import scratch_folder
from ..models import Model

log = logging.getLogger(__name__)

CHECK_BATCHES = (1, 7)  # batch sizes run through both runtimes: one, and one the export never saw
# |onnxruntime - PyTorch| accepted per value: float32 rounding, in the outputs' own units and relative to their size
# (float32 holds about 7 digits: a code of 4e4 rounds in its 3rd decimal)
TOLERANCE, RELATIVE_TOLERANCE = 1e-4, 1e-5


@dataclass(frozen=True)
class OnnxExport:
    encoder: Path
    decoder: Path
    description: Path  # onnx.json: inputs, outputs and shapes of both files
    max_difference: dict[str, float]  # per file: the largest |onnxruntime - PyTorch| over the checked batches


class _Encoder(torch.nn.Module):
    def __init__(self, model: Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, label: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        params = self.model.encoder_params(x, label)
        return params, self.model.code(self.model.posterior(params))


class _Decoder(torch.nn.Module):
    def __init__(self, model: Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.decode_code(z, label).mean


ONNX_FILES = ("encoder.onnx", "decoder.onnx", "onnx.json")


def _check_folder(directory: Path) -> None:
    """That the export replaces no file of the user's: encoder.onnx, decoder.onnx and onnx.json there are absent, or
    beside an onnx.json vaekit wrote (a JSON object naming the family and its files)."""
    present = [name for name in ONNX_FILES if (directory / name).exists()]
    if not present:
        return
    try:
        description = json.loads((directory / "onnx.json").read_text(encoding="utf-8"))
        ours = isinstance(description, dict) and {"family", "files", "code_shape"} <= set(description)
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise VaekitError(f"{directory} holds {' and '.join(present)} that vaekit did not write, which the export "
                          "would replace: export to a folder of its own, e.g. vaekit export RUN --onnx onnx/NAME")


def export_onnx(model: Model, directory: str | Path, opset: int | None = None) -> OnnxExport:
    """Write encoder.onnx, decoder.onnx and onnx.json to `directory`, each checked in onnxruntime against PyTorch
    at batch sizes 1 and 7 before it replaces any file already there."""
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
    except ImportError as exc:
        if exc.name not in ("onnxruntime", "onnxscript", "onnx"):  # installed, but its own import failed
            raise VaekitError(f"the ONNX packages are installed but do not import ({str(exc).splitlines()[0][:160]}): "
                              f"reinstall them to match your numpy and torch: "
                              f"{install_hint('onnx', '--force-reinstall')}") from None
        raise VaekitError(f"ONNX export needs {exc.name}: {install_hint('onnx')}") from None
    check_opset(opset)
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VaekitError(f"cannot create {directory} ({exc.strerror}): choose another --onnx folder") from None
    _check_folder(directory)
    if model.device.type != "cpu":  # exported from the CPU, leaving the caller's model where it is
        import copy

        model = copy.deepcopy(model).cpu()
    was_training = model.training
    model.eval()
    conditioned = bool(model.num_labels)
    generator = torch.Generator().manual_seed(0)
    low, high = _value_range(model)
    parts = {
        "encoder": (_Encoder(model), "x", lambda b: low + (high - low) * torch.rand(b, *model.data_shape,
                                                                                     generator=generator),
                    ["params", "code"]),
        "decoder": (_Decoder(model), "z", lambda b: torch.randn(b, *model.code_shape, generator=generator),
                    ["mean"]),
    }
    try:
        with _traceable_labels(model):
            return _export(model, directory, opset, conditioned, parts)
    except OSError as exc:  # the folder's scratch space or the final renames: nothing of the old files is lost
        raise VaekitError(f"cannot write the ONNX files to {directory} ({exc.strerror or type(exc).__name__}): free "
                          "some disk space or choose another --onnx folder") from None
    finally:
        model.train(was_training)


FIRST_OPSET = 18  # torch.onnx's exporter (dynamo) writes opset 18 and later; for an earlier one it falls back


def check_opset(opset: int | None) -> None:
    """An opset the exporter writes as asked: FIRST_OPSET up to the newest the installed onnx knows."""
    if opset is None:
        return
    try:
        import onnx
    except ImportError:
        raise VaekitError(f"ONNX export needs onnx: {install_hint('onnx')}") from None
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not FIRST_OPSET <= opset <= newest:
        raise VaekitError(f"opset {opset!r} cannot be written: torch's ONNX exporter writes opsets {FIRST_OPSET} to "
                          f"{newest} (the newest this onnx {onnx.__version__} knows); choose one of those, or leave "
                          "it out for the exporter's default")


def _opset_of(path: Path) -> int:
    import onnx

    return next(entry.version for entry in onnx.load(str(path), load_external_data=False).opset_import
                if entry.domain in ("", "ai.onnx"))


def _export(model: Model, directory: Path, opset: int | None, conditioned: bool, parts: dict) -> OnnxExport:
    differences: dict[str, float] = {}
    description: dict = {"family": model.config.family, "data_shape": list(model.data_shape),
                         "code_shape": list(model.code_shape), "conditioned": conditioned, "files": {}}
    if conditioned:  # a label outside the classes is refused by the runtime (_traceable_labels' Gather)
        refused = "any other value, negative ones too, is refused by the runtime (indices out of data bounds)"
        description["labels"] = {"count": model.num_labels,
                                 "how": f"a class index 0..{model.num_labels - 1}; {refused}"}
        if model.config.label_names:
            description["labels"]["names"] = list(model.config.label_names)
            description["labels"]["how"] = f"label i is the class names[i], i in 0..{model.num_labels - 1}; {refused}"

    schema = model_table(model.config)
    if schema is not None:
        description["table"] = table_layout(schema)
    # Every file is written and checked in a scratch folder first; only when all pass do they replace the old ones.
    with scratch_folder(directory, "onnx") as scratch:
        for name, (module, input_name, draw, output_names) in parts.items():
            staged = Path(scratch) / f"{name}.onnx"
            example = draw(3)
            labels = torch.zeros(3, dtype=torch.int64) if conditioned else None
            batch = torch.export.Dim("batch", min=1, max=1 << 20)
            inputs = (example, labels) if conditioned else (example,)
            shapes = ({0: batch}, {0: batch}) if conditioned else ({0: batch},)
            names = [input_name, "label"] if conditioned else [input_name]
            try:
                with torch.no_grad(), _quiet():
                    program = torch.onnx.export(module.eval(), inputs, dynamic_shapes=shapes, input_names=names,
                                                output_names=output_names, dynamo=True, opset_version=opset,
                                                external_data=False, verbose=False)
                    program.save(str(staged))
            except (VaekitError, OSError):  # an OSError is the disk's (a full one), said as such by export_onnx
                raise
            except ModuleNotFoundError as exc:  # the exporter's own packages, older than this torch's exporter needs
                raise VaekitError(f"torch's ONNX exporter cannot run: {exc} (onnxscript or onnx older than this torch "
                                  f"needs): {install_hint('onnx', '-U')}") from None
            except Exception as exc:  # noqa: BLE001  (the exporter raises many kinds; each means "cannot export")
                raise VaekitError(f"the {model.config.family} family's {name} does not export to ONNX "
                                  f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
            written = _opset_of(staged)
            if opset is not None and written != opset:
                raise VaekitError(f"the exporter wrote opset {written}, not the {opset} asked for: choose another "
                                  "--opset, or leave it out")
            try:
                differences[name] = _check(staged, module, draw, names, model)
            except VaekitError:
                raise
            except Exception as exc:  # noqa: BLE001  (onnxruntime refusing the graph: the opset, or the runtime's age)
                raise VaekitError(f"onnxruntime cannot run the exported {name} (opset {written}; "
                                  f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}): choose another --opset, "
                                  "or update onnxruntime") from None
            description["opset"] = written
            description["files"][staged.name] = {
                "inputs": {input_name: ["batch", *(model.data_shape if name == "encoder" else model.code_shape)],
                           **({"label": ["batch"]} if conditioned else {})},
                "output": ({"params": "the posterior's parameters, as the family reads them",
                            "code": ["batch", *model.code_shape]} if name == "encoder"
                           else {"mean": ["batch", *model.data_shape]}),
                "max_difference_from_pytorch": differences[name],
                # the set is replaced file by file, onnx.json first (so that every .onnx file vaekit left has one
                # beside it: _check_folder): files of two exports (one cut off between its renames) show as a digest
                # that is not the file's
                "sha256": hashlib.sha256(staged.read_bytes()).hexdigest()}
        (Path(scratch) / "onnx.json").write_text(json.dumps(description, indent=2) + "\n")
        _check_folder(directory)  # again, just before: the export took a while
        for file in ("onnx.json", "encoder.onnx", "decoder.onnx"):
            os.replace(Path(scratch) / file, directory / file)
    return OnnxExport(directory / "encoder.onnx", directory / "decoder.onnx", directory / "onnx.json", differences)


def table_layout(schema: TableSchema) -> dict:
    """Where each column of a table sits in x (and in the decoder's mean), and how its values become numbers, so that
    the ONNX files can be used without vaekit."""
    columns, start = [], 0
    for column in schema.columns:
        entry = {"name": column.name, "kind": column.kind, "positions": [start, start + column.width]}
        if column.kind == "numeric":
            entry.update(mean=column.mean, std=column.std)
        else:
            entry["values"] = list(column.values)
        columns.append(entry)
        start += column.width
    return {
        "columns": columns,
        "how": "x[:, positions[0]:positions[1]] holds one column: a numeric column as (value - mean) / std; a binary "
               "column as 0 for values[0] and 1 for values[1]; a categorical one one-hot over values, in order. The "
               "decoder's mean has the same layout: value = mean + std * x for a numeric column, the probability of "
               "values[1] for a binary one, each value's probability for a categorical one.",
    }


@contextlib.contextmanager
def _traceable_labels(model: Model):
    """The labels' one-hot code without the checks that read label values on the host (which an exported graph
    cannot hold): as a Gather of the identity's rows, so that a runtime refuses a label outside 0..num_labels-1 (the
    one-hot function gave such a label no class, in silence)."""
    if not model.num_labels:
        yield
        return
    classes = model.num_labels

    def label_features(y: torch.Tensor, batch: int) -> torch.Tensor:
        # a row of the identity per label (a Gather, which onnxruntime refuses for an index outside the rows); a
        # negative label, which Gather would count from the end, is sent outside them too
        index = torch.where(y.long() < 0, torch.full_like(y.long(), classes), y.long())
        return torch.index_select(torch.eye(classes, device=y.device), 0, index)

    model.label_features = label_features
    try:
        yield
    finally:
        del model.label_features


@contextlib.contextmanager
def _quiet():
    """The exporter's pass-by-pass notes (logged at INFO, which the CLI shows) and its library warnings, hidden."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _check(path: Path, module: torch.nn.Module, draw, names: list[str], model: Model) -> float:
    """Run the file in onnxruntime at each of CHECK_BATCHES and compare with PyTorch; a mismatch is an error."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # --threads, as torch's own work here
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    worst, excess = 0.0, None  # the largest difference; a value beyond its tolerance, the furthest in its batch
    for b in CHECK_BATCHES:
        x = draw(b)
        labels = torch.arange(b, dtype=torch.int64) % max(model.num_labels, 1) if len(names) == 2 else None
        feed = {names[0]: x.numpy()}
        if labels is not None:
            feed["label"] = labels.numpy()
        outputs = session.run(None, feed)
        with torch.no_grad():
            wanted = module(x, labels) if labels is not None else module(x)
        wanted = wanted if isinstance(wanted, tuple) else (wanted,)
        if len(outputs) != len(wanted):
            raise VaekitError(f"{path.name} gives {len(outputs)} outputs, PyTorch {len(wanted)}: not exported")
        for got, want in zip(outputs, (w.numpy() for w in wanted)):
            if got.shape != want.shape:
                raise VaekitError(f"{path.name} gives shape {got.shape} at batch {b}, PyTorch {want.shape}: not "
                                  "exported")
            difference = np.abs(got.astype(np.float64) - want)
            worst = max(worst, float(difference.max()))
            beyond = difference - (TOLERANCE + RELATIVE_TOLERANCE * np.abs(want))
            if not (beyond <= 0).all():  # (NaN included)
                i = np.unravel_index(np.nanargmax(np.where(np.isnan(beyond), np.inf, beyond)), beyond.shape)
                excess = (float(difference[i]), float(want[i]))
    if excess is not None:
        raise VaekitError(f"{path.name} differs from PyTorch by {excess[0]:.3g} where PyTorch gives {excess[1]:.3g} "
                          f"(more than {TOLERANCE:g} + {RELATIVE_TOLERANCE:g} of the value) in onnxruntime: not "
                          "exported")
    return worst


def _value_range(model: Model) -> tuple[float, float]:
    """Inputs to check the encoder with: [0, 1] for images and binary data, else standardised values."""
    return (0.0, 1.0) if len(model.data_shape) == 3 else (-2.0, 2.0)
