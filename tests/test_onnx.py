"""vaekit export --onnx: encoder.onnx and decoder.onnx run in onnxruntime as the PyTorch networks do, at any batch
size, for every family and kind of model; mistakes are one-line errors; a failed check replaces nothing."""
from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest
import torch

onnxruntime = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install 'vaekit[onnx]'")
pytest.importorskip("onnxscript", reason="the onnx extra is not installed: pip install 'vaekit[onnx]'")
import onnx  # noqa: E402

from vaekit import checkpoint, latent  # noqa: E402
from vaekit.cli import main  # noqa: E402
from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from vaekit.errors import VaekitError  # noqa: E402
from vaekit.extras import install_hint  # noqa: E402
from vaekit.runs import train  # noqa: E402


def _run(tmp_path, **model) -> checkpoint.Path:
    out = tmp_path / "run"
    train(RunConfig(data=DataConfig(name="digits", limit=300), model=ModelConfig(latent_dim=3, **model),
                    train=TrainConfig(epochs=1, progress=False)), out=out)
    return out


def _compare(folder, model, batch: int = 5) -> None:
    """Both files in onnxruntime against the model in PyTorch, on a batch size the export never saw: the encoder's
    parameters and its codes (vaekit's own, which the decoder file takes), the decoder's means."""
    generator = torch.Generator().manual_seed(1)
    conditioned = bool(model.num_labels)
    labels = torch.arange(batch) % max(model.num_labels, 1)
    x = torch.rand(batch, *model.data_shape, generator=generator)
    z = torch.randn(batch, *model.code_shape, generator=generator)
    for name, value, expected in (
            ("encoder", x, lambda: model.encoder_params(x, labels if conditioned else None)),
            ("decoder", z, lambda: model.decode_code(z, labels if conditioned else None).mean)):
        path = folder / f"{name}.onnx"
        onnx.checker.check_model(str(path))
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: value.numpy()}
        if conditioned:
            feed["label"] = labels.numpy()
        outputs = session.run(None, feed)
        got = outputs[0]
        with torch.no_grad():
            want = expected().numpy()
        assert got.shape == want.shape and np.abs(got - want).max() < 1e-4, (name, np.abs(got - want).max())
        if name == "encoder":  # the item's code, as the latent tools take it, and decoded as vaekit decodes it
            assert [o.name for o in session.get_outputs()] == ["params", "code"]
            code = latent.encode_dataset(model, x, y=labels if conditioned else None).numpy()
            assert outputs[1].shape == code.shape and np.abs(outputs[1] - code).max() < 1e-4
            decoder = onnxruntime.InferenceSession(str(folder / "decoder.onnx"), providers=["CPUExecutionProvider"])
            feed = {"z": outputs[1], **({"label": labels.numpy()} if conditioned else {})}
            with torch.no_grad():
                rebuilt = model.decode_code(torch.from_numpy(code), labels if conditioned else None).mean.numpy()
            assert np.abs(decoder.run(None, feed)[0] - rebuilt).max() < 1e-4


@pytest.mark.parametrize("model", [
    {"family": "vae"},  # conv networks (digits are 8x8 images)
    {"family": "iwae", "network": "mlp", "hidden_dims": (16,)},
    {"family": "ae", "network": "mlp", "hidden_dims": (16,)},
    {"family": "vae", "network": "mlp", "hidden_dims": (16,), "condition": "label"},
    {"family": "vae", "activation": "gelu"},  # every --activation exports: conv bodies
    {"family": "vae", "network": "mlp", "hidden_dims": (16, 8), "activation": "silu"},
    {"family": "vae", "network": "mlp", "hidden_dims": (16, 8), "activation": "softplus"},
    {"family": "vae", "network": "mlp", "hidden_dims": (16, 8), "activation": "elu"},
    {"family": "vae", "network": "mlp", "hidden_dims": (16, 8), "activation": "tanh"},
])
def test_both_networks_run_in_onnxruntime_as_in_pytorch(tmp_path, capsys, model):
    run = _run(tmp_path, **model)
    assert main(["export", str(run), "--onnx", str(tmp_path / "onnx")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith(f"{tmp_path / 'onnx' / 'encoder.onnx'}  (onnxruntime within ")
    loaded = checkpoint.load(run)
    _compare(tmp_path / "onnx", loaded)
    info = json.loads((tmp_path / "onnx" / "onnx.json").read_text())
    assert info["family"] == model["family"] and info["code_shape"] == [3]
    assert info["conditioned"] == (model.get("condition") == "label")
    assert all(f["max_difference_from_pytorch"] < 1e-4 for f in info["files"].values())
    import hashlib  # each file's digest, so that files of two exports (one cut off between renames) show

    assert {name: f["sha256"] for name, f in info["files"].items()} == {
        name: hashlib.sha256((tmp_path / "onnx" / name).read_bytes()).hexdigest() for name in info["files"]}


@pytest.mark.parametrize("flags", [
    ["--model", "vamp", "--set", "model.vamp.components=7"],
    ["--model", "hvae"],
    ["--model", "hvae", "--hvae-inference", "top-down", "--hvae-top-prior", "vamp", "--hvae-top-components", "5"],
    ["--model", "vqvae", "--set", "model.vqvae.codebook=16"],  # a spatial code: quantised in the encoder's file
    ["--model", "tcvae"],
])
def test_every_family_exports_its_codes_as_vaekit_computes_them(tmp_path, capsys, flags):
    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--limit", "300", "--latent-dim", "3", "--epochs", "1", "--out", str(run),
                 "--no-progress", *flags]) == 0
    assert main(["export", str(run), "--onnx", str(tmp_path / "onnx")]) == 0
    _compare(tmp_path / "onnx", checkpoint.load(run))
    info = json.loads((tmp_path / "onnx" / "onnx.json").read_text())
    assert info["files"]["encoder.onnx"]["output"]["code"] == ["batch", *checkpoint.load(run).code_shape]


def test_a_table_models_decoder_gives_its_model_space_means(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["size,colour"] + [f"{rng.normal(10, 3):.3f},{rng.choice(['red', 'blue'])}" for _ in range(200)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    assert main(["train", "--data", str(tmp_path / "t.csv"), "--latent-dim", "2", "--epochs", "1", "--out",
                 str(tmp_path / "run"), "--no-progress"]) == 0
    assert main(["export", str(tmp_path / "run"), "--onnx", str(tmp_path / "onnx")]) == 0
    _compare(tmp_path / "onnx", checkpoint.load(tmp_path / "run"))


def test_export_mistakes_are_one_line_and_a_failed_check_replaces_nothing(small_run, tmp_path, capsys, monkeypatch):
    assert main(["export", str(tmp_path / "nothing"), "--onnx", str(tmp_path / "o")]) == 2
    assert "Traceback" not in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["export", str(small_run), "--onnx", str(tmp_path / "file" / "o")]) == 2
    err = capsys.readouterr().err
    assert "cannot create" in err and err.count("\n") == 1
    for opset in ("13", "17", "99"):  # the exporter would fall back to 18 silently, or write a graph ort refuses
        assert main(["export", str(small_run), "--onnx", str(tmp_path / "o"), "--opset", opset]) == 2
        err = capsys.readouterr().err
        assert f"opset {opset} cannot be written: torch's ONNX exporter writes opsets 18 to" in err
        assert err.count("\n") == 1 and not (tmp_path / "o").exists()
    assert main(["export", str(small_run), "--onnx", str(tmp_path / "o20"), "--opset", "20"]) == 0
    assert json.loads((tmp_path / "o20" / "onnx.json").read_text())["opset"] == 20
    for name in ("encoder.onnx", "decoder.onnx"):
        assert [entry.version for entry in onnx.load(str(tmp_path / "o20" / name)).opset_import
                if entry.domain in ("", "ai.onnx")] == [20]
    from vaekit.integrations import onnx as export

    with pytest.raises(VaekitError, match="opset True cannot be written"):
        export.check_opset(True)
    capsys.readouterr()

    assert main(["export", str(small_run), "--onnx", str(tmp_path / "good")]) == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "good").iterdir()}
    from vaekit.integrations import onnx as export

    check = export._check
    monkeypatch.setattr(export, "_check", lambda path, *a: check(path, *a) if path.name == "encoder.onnx"
                        else _fails(path))  # the encoder passes, the decoder does not
    assert main(["export", str(small_run), "--onnx", str(tmp_path / "good")]) == 2
    assert "decoder.onnx differs from PyTorch" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (tmp_path / "good").iterdir()} == before  # nothing replaced or left


def test_an_export_replaces_no_onnx_file_of_the_users(small_run, tmp_path, capsys):
    """encoder.onnx (or onnx.json) in the folder without vaekit's onnx.json beside it is the user's: refused in one
    line before the export, the file kept; a folder of vaekit's own export is written again."""
    for own in ("encoder.onnx", "onnx.json"):
        folder = tmp_path / own.replace(".", "-")
        folder.mkdir()
        (folder / own).write_bytes(b"my own model")
        assert main(["export", str(small_run), "--onnx", str(folder)]) == 2
        err = capsys.readouterr().err
        assert f"holds {own} that vaekit did not write" in err and err.count("\n") == 1
        assert (folder / own).read_bytes() == b"my own model" and [p.name for p in folder.iterdir()] == [own]
    assert main(["export", str(small_run), "--onnx", str(tmp_path / "ours")]) == 0
    ours = tmp_path / "ours"
    description = json.loads((ours / "onnx.json").read_text())
    (ours / "onnx.json").write_text(json.dumps({**description, "stale": True}))  # an earlier export of vaekit's
    (ours / "encoder.onnx").write_bytes(b"an earlier export's encoder")
    assert main(["export", str(small_run), "--onnx", str(ours)]) == 0
    assert "stale" not in json.loads((ours / "onnx.json").read_text())
    assert onnx.load(str(ours / "encoder.onnx")).graph.input  # written again


def test_without_the_extra_export_says_how_to_install_it(small_run, tmp_path, monkeypatch):
    from vaekit.integrations.onnx import export_onnx

    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(VaekitError, match=re.escape(f"ONNX export needs onnxscript: {install_hint('onnx')}")):
        export_onnx(checkpoint.load(small_run), tmp_path / "o")


def _fails(path):
    raise VaekitError(f"{path.name} differs from PyTorch by 1 (planted): not exported")


def test_a_table_models_files_are_usable_without_vaekit(tmp_path):
    """onnx.json said only x: [batch, 3]: no column order, scaling or one-hot layout. Its table layout alone now turns
    a CSV row into x, and the decoder's mean back into values, as vaekit does."""
    rng = np.random.default_rng(0)
    lines = ["size,colour,shade,kind"] + [f"{rng.normal(10, 3):.3f},{rng.choice(['red', 'blue'])},"
                                          f"{rng.choice(['a', 'b', 'c'])},{rng.choice(['x', 'y'])}" for _ in range(200)]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    assert main(["train", "--data", str(tmp_path / "t.csv"), "--latent-dim", "2", "--epochs", "1", "--label-column",
                 "kind", "--condition", "label", "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert main(["export", str(tmp_path / "run"), "--onnx", str(tmp_path / "onnx"), "--threads", "1"]) == 0
    described = json.loads((tmp_path / "onnx" / "onnx.json").read_text())
    layout = described["table"]
    assert [c["name"] for c in layout["columns"]] == ["size", "colour", "shade"]
    assert described["labels"]["names"] == ["x", "y"] and described["labels"]["count"] == 2
    assert "i in 0..1; any other value, negative ones too, is refused" in described["labels"]["how"]
    rows = [line.split(",") for line in lines[1:]]
    x = np.zeros((len(rows), described["data_shape"][0]), np.float32)
    for column in layout["columns"]:
        start, end = column["positions"]
        i = [c["name"] for c in layout["columns"]].index(column["name"])
        for r, row in enumerate(rows):
            if column["kind"] == "numeric":
                x[r, start] = (float(row[i]) - column["mean"]) / column["std"]
            elif column["kind"] == "binary":
                x[r, start] = column["values"].index(row[i])
            else:
                x[r, start + column["values"].index(row[i])] = 1
    labels = np.array([described["labels"]["names"].index(row[3]) for row in rows], np.int64)
    model = checkpoint.load(tmp_path / "run")
    from vaekit.data.tables import frame_table, model_table

    cells = np.array([[float(row[0]), row[1], row[2]] for row in rows], dtype=object)
    table = frame_table(cells, names=["size", "colour", "shade"], source="t")
    np.testing.assert_allclose(x, model_table(model.config).encode(table, "none").numpy(), atol=1e-6)
    encoder = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "encoder.onnx"), providers=["CPUExecutionProvider"])
    code = encoder.run(None, {"x": x, "label": labels})[1]
    want = latent.encode_dataset(model, torch.from_numpy(x), y=torch.from_numpy(labels)).numpy()
    np.testing.assert_allclose(code, want, atol=1e-5)
    decoder = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "decoder.onnx"), providers=["CPUExecutionProvider"])
    mean = decoder.run(None, {"z": code, "label": labels})[0]
    for wrong in (2, -1):  # not a class: refused, as vaekit refuses it, rather than decoded with no class
        bad = labels.copy()
        bad[5] = wrong
        with pytest.raises(Exception, match="out of data bounds"):
            encoder.run(None, {"x": x, "label": bad})
        with pytest.raises(Exception, match="out of data bounds"):
            decoder.run(None, {"z": code, "label": bad})
    size = layout["columns"][0]
    decoded = model_table(model.config).decode(torch.from_numpy(mean))
    np.testing.assert_allclose(size["mean"] + size["std"] * mean[:, 0], decoded["size"], rtol=1e-5)


def test_the_check_is_relative_to_the_outputs_size_and_still_catches_a_difference(small_run, tmp_path):
    """A model whose codes reach 4e4 was refused for a float32 rounding of 0.01; a real difference is refused."""
    from vaekit.integrations import onnx as export
    from vaekit.models import build_model

    model = checkpoint.load(small_run)
    big = build_model(model.config)
    big.load_state_dict({k: v + 0.25 if v.is_floating_point() else v for k, v in model.state_dict().items()})
    result = export.export_onnx(big.eval(), tmp_path / "big")
    with torch.no_grad():
        largest = big.encoder_params(torch.ones(1, *big.data_shape)).abs().max()
    assert largest > 1000 and result.max_difference["encoder"] > 0
    other = build_model(model.config)
    other.load_state_dict({k: v + 1e-3 if v.is_floating_point() else v for k, v in big.state_dict().items()})
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(VaekitError, match="encoder.onnx differs from PyTorch by .* where PyTorch gives"):
        export._check(tmp_path / "big" / "encoder.onnx", export._Encoder(other.eval()),
                      lambda b: torch.rand(b, *big.data_shape, generator=generator), ["x"], other)


def test_onnx_packages_that_fail_to_import_are_named_as_such(small_run, tmp_path, monkeypatch):
    """An onnxruntime built for another numpy said "ONNX export needs None"."""
    from conftest import fail_import
    from vaekit.integrations.onnx import export_onnx

    fail_import(monkeypatch, "onnxruntime", ImportError("numpy.core.multiarray failed to import"))
    with pytest.raises(VaekitError, match=r"the ONNX packages are installed but do not import \(numpy.core"):
        export_onnx(checkpoint.load(small_run), tmp_path / "o")


def test_an_exporter_missing_its_own_modules_says_to_update_the_extra(small_run, tmp_path, monkeypatch):
    """onnxscript 0.2 under torch 2.13 said "the vae family's encoder does not export to ONNX (ModuleNotFoundError:
    No module named 'onnx_ir')", blaming the family."""
    from vaekit.integrations.onnx import export_onnx

    def old_onnxscript(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'onnx_ir'", name="onnx_ir")

    monkeypatch.setattr(torch.onnx, "export", old_onnxscript)
    with pytest.raises(VaekitError, match=r"torch's ONNX exporter cannot run: No module named 'onnx_ir' .*"
                                          + re.escape(install_hint("onnx", "-U"))):
        export_onnx(checkpoint.load(small_run), tmp_path / "o")


def test_a_full_disk_during_the_export_is_said_as_such(small_run, tmp_path, monkeypatch):
    """The exporter's OSError (no space left) said "the vae family's encoder does not export to ONNX", blaming the
    model and giving no fix."""
    import errno

    from vaekit.integrations.onnx import export_onnx

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch.onnx, "export", full)
    with pytest.raises(VaekitError, match=r"cannot write the ONNX files to .* \(No space left on device\): free some "
                                          r"disk space or choose another --onnx folder"):
        export_onnx(checkpoint.load(small_run), tmp_path / "o")


def test_the_exports_check_runs_onnxruntime_on_the_threads_asked_for(small_run, tmp_path, monkeypatch):
    """export --threads N: onnxruntime's session checking the files takes N threads too (it took one per core)."""
    import onnxruntime

    made = []
    real = onnxruntime.InferenceSession

    def session(path, options=None, *args, **kwargs):
        made.append(None if options is None else options.intra_op_num_threads)
        return real(path, options, *args, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", session)
    wanted = 1 if torch.get_num_threads() > 1 else 2  # not the current value (conftest gives the next test its own)
    assert main(["export", str(small_run), "--onnx", str(tmp_path / "o"), "--threads", str(wanted)]) == 0
    assert made and set(made) == {wanted}
