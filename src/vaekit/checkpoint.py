"""Run folders on disk: config.json + model.safetensors (the model alone), resume state; atomic, no pickle."""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import re
import secrets
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from . import __version__
from .config import COMPONENT_SETTINGS, MAX_THREADS, RunConfig, from_dict, with_defaults
from .errors import VaekitError
from .files import atomic_write
from .models import Model, build_model, model_shapes

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
RESUME_STATE = "resume.json"  # the commit point: names the tensors file it belongs to
DATA_FILE = "data.json"  # a run on the user's own data file: what it read (vaekit.data.fingerprint), checked on reads
RESUME_TENSORS = "resume.safetensors"  # format 1's single tensors file (read, never written)
CHECKSUM_KEY = "sha256"  # safetensors metadata: the checksum of the tensors (see checksum)
CONFIG_KEY = "config_sha256"  # model.safetensors metadata: the sha256 of the config.json written with it
IDENTITY_KEY = "config_identity"  # resume.json: the sha256 of what its config computes (identity_sha256)
RUN_KEY = "run_id"  # model.safetensors metadata and resume.json: the run (one `vaekit train`) that wrote them
RESUME_PATTERN = "resume-*.safetensors"  # resume-<step>-<token>.safetensors, one per committed state
FORMAT = 2  # 2: family and likelihood settings as model.<name> sections, label conditioning, checked resume

log = logging.getLogger(__name__)


def _atomic_write(path: Path, write: Any) -> None:
    """A run folder's file, written whole or not at all (vaekit.files.atomic_write)."""
    atomic_write(path, write, fix="free some disk space, or make the run folder writable (or train into another "
                                  "--out)", run_file=True)


def write_json(path: Path, data: Any) -> None:
    _atomic_write(Path(path), lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))


def write_lines(path: Path, lines: list[str]) -> None:
    _atomic_write(Path(path), lambda tmp: tmp.write_text("".join(line + "\n" for line in lines)))


def write_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Tensors with a sha256 of their names, dtypes, shapes and bytes in the metadata, which read_tensors checks."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    metadata = {**(metadata or {}), CHECKSUM_KEY: checksum(tensors)}
    _atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def checksum(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors in name order: name, dtype, shape and raw bytes of each."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())  # (its bytes in place: no copy of a tensor)
    return digest.hexdigest()


def unwrap(model: torch.nn.Module) -> Model:
    """Strip DDP (.module) and torch.compile (._orig_mod) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model  # type: ignore[return-value]


def save_pretrained(model: torch.nn.Module, config: RunConfig, directory: str | Path, run_id: str | None = None) -> Path:
    """model.safetensors, then config.json. The weights carry the sha256 of the config they belong to, so a crash
    between the two writes is found on loading (the resume state, written after both, still holds the old pair),
    and the id of the training run that wrote them, if any."""
    directory = Path(directory)
    model = unwrap(model)
    text = _config_text(config)
    metadata = {"format": str(FORMAT), "family": model.family, CONFIG_KEY: _sha256(text)}
    if run_id is not None:
        metadata[RUN_KEY] = run_id
    write_tensors(directory / MODEL_FILE, model.state_dict(), metadata)
    _atomic_write(directory / CONFIG_FILE, lambda tmp: tmp.write_text(text))
    return directory


def write_config(directory: str | Path, config: RunConfig) -> None:
    """config.json with the full settings of the model's family and likelihood written out."""
    _atomic_write(Path(directory) / CONFIG_FILE, lambda tmp: tmp.write_text(_config_text(config)))


def _config_text(config: RunConfig) -> str:
    full = replace(config, model=with_defaults(config.model))
    return json.dumps({"vaekit_version": __version__, "format": FORMAT, **full.to_dict()}, indent=2) + "\n"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


RUNTIME = ("epochs", "minutes", "device", "threads", "progress", "compile", "tensorboard")  # what a resume may
# change: where, how long and how it is watched. A resume writes config.json before it commits its state, so a
# setting it may change and the identity held must not differ by it: a stop between the two writes would leave a
# run that never resumes. Resume states written before "minutes" joined hold the identity with it (LEGACY_RUNTIME).
LEGACY_RUNTIME = tuple(name for name in RUNTIME if name != "minutes")


# Settings added after runs were first written: part of a run's identity only when set, so that runs from before
# they existed (whose identity never held them) still resume. A family's own settings, by family: their defaults
# are those it declares.
ADDED_LATER = {("train", "early_stopping"): None, ("model", "free_bits"): 0.0, ("data", "validation"): None,
               ("data", "header"): "auto", ("model", "label_names"): [], ("model", "untrained_labels"): []}
# ...and values that count as left out too: data.validation 0 holds nothing out, as runs before it did (load_config
# writes it for those with early stopping, which judged on the test split)
ADDED_LATER_ALSO = {("data", "validation"): (0,)}
FAMILY_SETTINGS_ADDED_LATER = {"hvae": ("top_prior", "top_components", "gradient"), "iwae": ("gradient",)}
# ...and family settings added later whose default is not what the runs written before them did: (family, name) ->
# their value for those runs, filled in where a config.json leaves them out (and, as above, not in the identity)
FAMILY_SETTINGS_BEFORE = {("vqvae", "prior"): "pixelcnn"}


def identities(directory: str | Path) -> set[str]:
    """The identities a resume state of this config.json may hold: today's, and the one vaekit wrote before (one
    read of config.json)."""
    settings = load_config(directory).to_dict()
    return {_identity(copy.deepcopy(settings)), _identity(settings, LEGACY_RUNTIME)}


def identity_sha256(directory: str | Path, runtime: tuple[str, ...] = RUNTIME) -> str:
    """The sha256 of what a run folder's config.json computes: its settings with defaults filled in, less the
    train settings a resume may change (RUNTIME), later settings left at their defaults (ADDED_LATER) and the edits
    section (used after training). A resume
    that rewrites config.json keeps it."""
    return _identity(load_config(directory).to_dict(), runtime)


def _identity(settings: dict[str, Any], runtime: tuple[str, ...] = RUNTIME) -> str:
    """identity_sha256 of a config's settings (RunConfig.to_dict(), changed in place)."""
    settings.pop("edits", None)  # how the trained model is edited afterwards, not what training computes
    for name in runtime:
        settings["train"].pop(name, None)
    for (section, name), default in ADDED_LATER.items():
        if settings[section].get(name, default) in (default, *ADDED_LATER_ALSO.get((section, name), ())):
            settings[section].pop(name, None)
    for family, names in FAMILY_SETTINGS_ADDED_LATER.items():
        values = settings["model"].get(family)
        if isinstance(values, dict):
            declared = COMPONENT_SETTINGS[family]()
            for name in names:
                if values.get(name, getattr(declared, name)) == getattr(declared, name):
                    values.pop(name, None)
    for (family, name), before in FAMILY_SETTINGS_BEFORE.items():
        values = settings["model"].get(family)
        if isinstance(values, dict) and values.get(name, before) == before:
            values.pop(name, None)
    return _sha256(json.dumps(settings, sort_keys=True))


def load_config(directory: str | Path) -> RunConfig:
    directory = Path(directory)
    path = directory / CONFIG_FILE
    if not directory.exists():
        raise VaekitError(f"run folder not found: {directory} (train one with: vaekit train --out {directory})")
    if directory.is_file():
        raise VaekitError(f"{directory} is a file, not a run folder: give the run's folder"
                          f"{f' ({directory.parent})' if (directory.parent / CONFIG_FILE).is_file() else ''}")
    if not path.is_file():
        raise VaekitError(f"{directory} holds no {CONFIG_FILE}: it is not a vaekit run folder (train one with vaekit train)")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, OSError) as exc:
        raise VaekitError(f"{path} is corrupt ({exc.__class__.__name__}): retrain, or restore it from a backup") from None
    if not isinstance(raw, dict):
        raise VaekitError(f"{path} is corrupt (not a JSON object): retrain, or restore it from a backup")
    raw.pop("vaekit_version", None)
    fmt = raw.pop("format", FORMAT)
    if not isinstance(fmt, int) or not all(isinstance(raw.get(k, {}), dict) for k in ("data", "model", "train", "edits")):
        raise VaekitError(f"{path} is corrupt (unexpected structure): retrain, or restore it from a backup")
    if fmt > FORMAT:
        raise VaekitError(f"{path} was written by a newer vaekit: upgrade vaekit to load it")
    if "validation" not in raw.get("data", {}) and raw.get("train", {}).get("early_stopping") is not None:
        # written before data.validation: its early stopping judged on the test split, and so it goes on (resumed
        # with a tenth held out, it would train on other items than before)
        raw.setdefault("data", {})["validation"] = 0
    threads = raw.get("train", {}).get("threads")
    if isinstance(threads, int) and not isinstance(threads, bool) and threads > MAX_THREADS:
        # a runtime setting vaekit bounded later: where the run trains, not what it is; one per core instead
        log.warning("%s asks for %d threads, more than vaekit now allows (%d): loading it with one per core",
                    path, threads, MAX_THREADS)
        raw["train"]["threads"] = None
    model = raw.get("model", {})
    if fmt < 2 and "gaussian_std" in model:  # format 1 kept the Gaussian's std beside the model's own fields
        std = model.pop("gaussian_std")
        if std is not None and model.get("likelihood") == "gaussian":  # elsewhere it had no effect
            model["gaussian"] = {"std": std}
    for (component, name), before in FAMILY_SETTINGS_BEFORE.items():
        if model.get("family") == component and isinstance(model.get(component, {}), dict):
            model.setdefault(component, {}).setdefault(name, before)
    family = model.get("family")
    if isinstance(family, str):
        from .models import MODEL_FAMILIES, load_plugins

        load_plugins()
        if family not in MODEL_FAMILIES:  # the run's own family: not a typo, a module not imported
            raise VaekitError(f"{directory} is a run of the family {family!r}, which no loaded module registers: from "
                              "Python, import the module that registers it (vaekit.register_family) before loading; "
                              "for the command line, install it as a plugin (entry-point group vaekit.plugins)")
    return from_dict(raw)


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a file, checked against the sha256 written with them (files from before checksums: unchecked)."""
    return read_checked(path)[0]


def read_checked(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of a file, read in one pass and checked against the sha256 in the metadata."""
    if not path.is_file():
        raise VaekitError(f"{path} is missing: the run has no saved model yet (train it, or check the folder)")
    try:
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise VaekitError(f"{path} is corrupt ({str(exc).splitlines()[0][:80]}): retrain, or restore it from a backup") from None
    expected = metadata.get(CHECKSUM_KEY)
    if expected is None:
        log.debug("%s carries no checksum (written by an older vaekit)", path)
    elif checksum(tensors) != expected:
        raise VaekitError(f"{path} is damaged (its contents do not match the checksum written with them): retrain, or "
                          "restore it from a backup")
    return tensors, metadata


def load(directory: str | Path, device: str | torch.device = "cpu") -> Model:
    """A trained model from a run folder, in eval mode, with its config.json as its run_config."""
    directory = Path(directory)
    config = load_config(directory)
    state, metadata = read_checked(directory / MODEL_FILE)
    belongs = metadata.get(CONFIG_KEY)
    if belongs is not None and belongs != _sha256((directory / CONFIG_FILE).read_text()):
        if not (directory / RESUME_STATE).is_file():  # no run's folder: an export (vaekit export --hub) cut off
            raise VaekitError(f"{directory / MODEL_FILE} was written for another {CONFIG_FILE}: an export into "
                              f"{directory} was cut off between the two, or one was edited: export the run again "
                              f"(vaekit export RUN --hub {directory}, or model.save_pretrained in Python)")
        raise VaekitError(f"{directory / MODEL_FILE} was written for another {CONFIG_FILE}: if you edited "
                          f"{CONFIG_FILE}, restore it (settings are changed with flags, e.g. vaekit train --resume "
                          f"{directory} --epochs N); if the run stopped between writing them, vaekit train --resume "
                          f"{directory} writes both again")
    # config.json's model against the weights' names and shapes before it takes memory (a config.json from elsewhere
    # cannot make the loader allocate what no weights back)
    shapes = model_shapes(config.model, f"{directory / CONFIG_FILE} asks for it: restore that file if it was edited")
    if shapes is not None and shapes != {name: tuple(tensor.shape) for name, tensor in state.items()}:
        _mismatch(directory, set(shapes), set(state),
                  sorted(name for name in set(shapes) & set(state) if shapes[name] != tuple(state[name].shape)))
    model = build_model(config.model, saved=True)
    if set(model.state_dict()) != set(state):
        _mismatch(directory, set(model.state_dict()), set(state), [])
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise VaekitError(f"{directory / MODEL_FILE} does not match {CONFIG_FILE}: {str(exc).splitlines()[-1].strip()}") from None
    model.run_config = config  # the data and training sections too, for what is written from it (a Hub folder's card)
    return model.to(device).eval()


def _mismatch(directory: Path, names: set[str], held: set[str], resized: list[str]) -> None:
    """The error for weights that are not config.json's model's: `names` its tensors, `held` the file's, `resized`
    those of both whose shapes differ."""
    missing, unexpected = sorted(names - held), sorted(held - names)
    what = (f"missing {missing[:3]}, unexpected {unexpected[:3]}" if missing or unexpected
            else f"other shapes for {', '.join(resized[:3])}")
    raise VaekitError(f"{directory / MODEL_FILE} does not match {CONFIG_FILE} ({what}): the two files come from "
                      "different runs")


def save_resume(directory: str | Path, tensors: dict[str, torch.Tensor], state: dict[str, Any],
                run_id: str | None = None) -> None:
    """One commit: the tensors go to a new file named by step and a random token, then resume.json, which names
    that file and token, replaces the old one (the commit point), then older tensor files go. A crash before the
    commit leaves the previous state whole; the loader checks that the two files belong together."""
    directory = Path(directory)
    token = secrets.token_hex(8)
    name = f"resume-{int(state['step']):09d}-{token}.safetensors"
    # the state's own numbers are checked too: their sha256 travels with the tensors (_state_sha256)
    write_tensors(directory / name, tensors, {"step": str(state["step"]), "token": token,
                                              STATE_KEY: _state_sha256(state)})
    # the config this state continues (written just before, by save_pretrained), and the run that wrote it
    belongs = {IDENTITY_KEY: identity_sha256(directory)} if (directory / CONFIG_FILE).is_file() else {}
    if run_id is not None:
        belongs[RUN_KEY] = run_id
    write_json(directory / RESUME_STATE, {**state, "tensors": name, "token": token, **belongs})
    for old in [*directory.glob(RESUME_PATTERN), directory / RESUME_TENSORS]:
        if old.name != name:
            old.unlink(missing_ok=True)


STATE_KEY = "state_sha256"  # resume tensors' metadata: the sha256 of resume.json's training state (_state_sha256)
COMMIT_KEYS = ("tensors", "token", IDENTITY_KEY, RUN_KEY)  # what resume.json adds to the state when it commits


def _state_sha256(state: dict[str, Any]) -> str:
    """The sha256 of a resume state's own entries (step, epoch, optimiser settings, schedules ...), as JSON. Taken
    after a round trip through JSON, so that the state as given and as read back (tuples as lists, keys as text)
    hash alike."""
    entries = json.loads(json.dumps({k: v for k, v in state.items() if k not in COMMIT_KEYS}))
    return _sha256(json.dumps(entries, sort_keys=True))


def write_start(directory: str | Path, run_id: str) -> None:
    """A new run's resume.json before its first checkpoint: it names the run and its config and no tensors, so a
    run stopped before (or during) its first checkpoint is known to have trained nothing."""
    directory = Path(directory)
    write_json(directory / RESUME_STATE, {"started": True, RUN_KEY: run_id, IDENTITY_KEY: identity_sha256(directory)})


def never_checkpointed(directory: str | Path) -> bool:
    """Whether the run in config.json has certainly committed no checkpoint, so that continuing it means starting
    it: its start marker, no checkpoint files at all (older vaekit), or an --overwrite stopped during its first
    checkpoint (the weights and config.json written by a new run, the committed resume state by an earlier run).
    Anything less certain is False: a trained run is never started again by accident."""
    directory = Path(directory)
    try:
        known = identities(directory)
        config = _sha256((directory / CONFIG_FILE).read_text())
        state = json.loads((directory / RESUME_STATE).read_text()) if (directory / RESUME_STATE).is_file() else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError, VaekitError):
        return False  # load_resume names what is wrong
    if isinstance(state, dict) and state.get("started") is True:
        return state.get(IDENTITY_KEY) in known
    if not any(path.exists() for path in resume_files(directory)):
        return not (directory / MODEL_FILE).exists()
    if not isinstance(state, dict) or not {"step", "epoch", "optimizer_groups"} <= set(state):
        return False  # not a committed state (damaged): load_resume says so
    try:
        with safe_open(str(directory / MODEL_FILE), "pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError):
        return False
    writer = metadata.get(RUN_KEY)
    return writer is not None and writer != state.get(RUN_KEY) and metadata.get(CONFIG_KEY) == config


TENSORBOARD_STAGING = ".tensorboard-new"  # an --overwrite run's TensorBoard log until its first checkpoint commits


def write_data_check(directory: str | Path, held: dict[str, Any] | None, given: bool = False) -> None:
    """data.json: what the run read from the user's data file, or was given in Python (`given`: vaekit.train's
    dataset=, which config.json cannot name), as vaekit.data.fingerprint gives it. None: a registered data set, which
    needs no check (an older data.json goes)."""
    path = Path(directory) / DATA_FILE
    if held is None:
        path.unlink(missing_ok=True)
    else:
        write_json(path, {**held, "given_in_python": bool(given)})


def check_data(directory: str | Path, dataset: Any, name: str | None, cli: bool = False) -> None:
    """That `dataset` is what the run trained on (its data.json, where it has one). `name`: the data its config
    names, which it was read from (None: data given in Python as dataset=); `cli`: said to a command on the run, which
    takes --data FILE for other data."""
    from .data import fingerprint

    path = Path(directory) / DATA_FILE
    if not path.is_file():
        return
    try:
        raw = json.loads(path.read_text())
        then = {key: raw[key] for key in ("train_items", "test_items", "sha256")}
        given = raw.get("given_in_python") is True
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError):
        log.warning("%s is damaged: the data cannot be checked against what the run trained on", path)
        return
    now = fingerprint(dataset)
    if now == then:
        return
    other = ", give --data FILE to work on other data" if cli else ""
    if given and name is not None:
        again = "give it again from Python (dataset=)" if cli else "give it again as dataset="
        raise VaekitError(f"the run in {directory} was trained on data given in Python (vaekit.train(..., dataset=)), "
                          f"not on {name}, which its config.json names: {again}{other.replace(', ', ', or ', 1)}")
    sizes = (then["train_items"], then["test_items"]), (now["train_items"], now["test_items"])
    changes = []
    try:
        trained = tuple(load_config(directory).model.data_shape)
    except VaekitError:  # a config that cannot be read: the items' shape goes unchecked
        trained = ()
    shape = tuple(getattr(dataset, "shape", ()) or ())
    if trained and shape and shape != trained:
        changes.append(f"its items are of shape {shape}, the run's of {trained}")
    if sizes[0] != sizes[1]:
        changes.append(f"it had {sizes[0][0]:,} training and {sizes[0][1]:,} test items then, {sizes[1][0]:,} and "
                       f"{sizes[1][1]:,} now")
    change = "; ".join(changes) or "its values changed"
    if name is None:
        raise VaekitError(f"the dataset= given is not the data the run in {directory} was trained on ({change}): give "
                          "the run's own data, or train a new run on this one")
    raise VaekitError(f"{name} is not the data the run in {directory} was trained on ({change}, so its split is not "
                      f"the run's): restore the file the run trained on{other}, or train a new run on this one")


def labels_as_read(directory: str | Path, cfg: RunConfig, dataset: Any) -> Any:
    """A table run's data with its labels as the run read them. Before vaekit named a table's whole-number labels as
    written (1, 2, 3: three classes in sorted order), it took them as class indices (classes 1, 2 and 3 of 0..3): a
    label-conditioned run of then records no class names, and one without conditioning is told by its data.json (its
    labels' fingerprint)."""
    from .data import fingerprint
    from .data.tables import model_table

    names = getattr(dataset, "label_names", None)
    if not names or model_table(cfg.model) is None or not all(re.fullmatch(r"[0-9]+", name) for name in names):
        return dataset
    index = torch.tensor([int(name) for name in names], dtype=torch.int64)
    indexed = replace(dataset, label_names=None, y_train=None if dataset.y_train is None else index[dataset.y_train],
                      y_test=None if dataset.y_test is None else index[dataset.y_test])
    if cfg.model.condition == "label":
        if cfg.model.label_names:
            return dataset
        if int(index.max()) >= cfg.model.num_labels:
            raise VaekitError(f"{dataset.name} has labels the model was not trained on (its classes are 0.."
                              f"{cfg.model.num_labels - 1}, as class indices): drop those items")
        return indexed
    try:
        raw = json.loads((Path(directory) / DATA_FILE).read_text())
        then = {key: raw[key] for key in ("train_items", "test_items", "sha256")}
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return dataset
    return indexed if fingerprint(dataset) != then and fingerprint(indexed) == then else dataset


def remove_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporaries of writes a killed process left (`.NAME.XXXX` beside a run file). Only for a folder
    whose lock is held: nothing else is writing there."""
    directory = Path(directory)
    names = (CONFIG_FILE, MODEL_FILE, RESUME_STATE, DATA_FILE, "metrics.jsonl", "resume-")
    stale = [path for path in directory.glob(".*") if path.is_file()
             and any(path.name.startswith(f".{name}") and path.name != f".{name}" for name in names)]
    for path in stale:
        path.unlink(missing_ok=True)
    staging = directory / TENSORBOARD_STAGING  # the TensorBoard log of an --overwrite run stopped before it committed
    if staging.is_dir():
        shutil.rmtree(staging, ignore_errors=True)
        stale.append(staging)
    return stale


def resume_files(directory: str | Path) -> list[Path]:
    """Every file of a run's resume state (for --overwrite to remove)."""
    directory = Path(directory)
    return [directory / RESUME_STATE, directory / RESUME_TENSORS, *directory.glob(RESUME_PATTERN)]


def load_resume(directory: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    directory = Path(directory)
    state_path = directory / RESUME_STATE
    if not state_path.is_file():
        raise VaekitError(f"{directory} has no resume state ({RESUME_STATE}): start a new run with vaekit train --out DIR")
    try:
        state = json.loads(state_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise VaekitError(f"{state_path} is corrupt: start the run again") from None
    if not isinstance(state, dict):
        raise VaekitError(f"{state_path} is corrupt (not a JSON object): start the run again")
    if state.get("started") is True:
        raise VaekitError(f"{directory} has no checkpoint yet and its {CONFIG_FILE} has changed since the run started: "
                          "start the run again with --overwrite")
    name = state.get("tensors", RESUME_TENSORS)
    if not isinstance(name, str) or Path(name).name != name:
        raise VaekitError(f"{state_path} is corrupt (names tensors {name!r}): start the run again")
    path = directory / name
    if not path.is_file():
        raise VaekitError(f"{state_path} names {name}, which is missing: the resume state is incomplete; "
                          "start the run again")
    tensors, metadata = read_checked(path)
    if "token" in state:
        if metadata.get("token") != state["token"]:
            raise VaekitError(f"{path} does not belong to {state_path} (a different commit): the resume state "
                              "is inconsistent; start the run again")
    else:
        log.warning("%s has a resume state from an older vaekit, which cannot be checked for consistency", directory)
    if STATE_KEY in metadata and metadata[STATE_KEY] != _state_sha256(state):
        raise VaekitError(f"{state_path} is damaged (its entries do not match the checksum written with its tensors): "
                          "restore it from a backup, or start the run again with --overwrite")
    config = directory / CONFIG_FILE
    if IDENTITY_KEY in state:
        edited = config.is_file() and state[IDENTITY_KEY] not in identities(directory)
    else:  # a state from earlier today's format: the raw text's hash, if any
        belongs = state.get(CONFIG_KEY)
        edited = belongs is not None and config.is_file() and belongs != _sha256(config.read_text())
    if edited:
        raise VaekitError(f"the resume state in {directory} was written for another {CONFIG_FILE} (was it edited?): "
                          "restore it, or start the run again with --overwrite")
    needed = ("step", "epoch", "optimizer_groups")
    if any(k not in state for k in needed) or "rng.torch" not in tensors:
        raise VaekitError(f"the resume state in {directory} is corrupt or incomplete: start the run again")
    return tensors, state
