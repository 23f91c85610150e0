"""A model on the Hugging Face Hub: a Hub-ready folder (a run folder's config.json + model.safetensors, a model card
and a sample picture), loading from a folder or a repository through huggingface_hub's download and cache, pushing.
Saving a folder needs nothing more; the Hub itself needs the extra: pip install 'vaekit[hub]'."""
from __future__ import annotations

import errno
import importlib
import json
import logging
import math
import os
import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml

from .. import checkpoint, viz
from ..config import DataConfig, RunConfig
from ..errors import VaekitError
from ..extras import install_hint
from ..files import FIX, scratch_folder, write_advice
from ..models import Model
from ..runs import METRICS_FILE
from ..train import judged_loss, kept_index

log = logging.getLogger(__name__)

INSTALL = "vaekit with its hub extra, from a checkout of its source (it is not on PyPI): pip install '.[hub]'"  # the
# card's line for its readers, on other machines (this machine's own messages: extras.install_hint)
CARD_FILE = "README.md"
SAMPLES_FILE = "samples.png"
MODEL_FILES = (checkpoint.CONFIG_FILE, checkpoint.MODEL_FILE)  # all that loading needs, and all that is downloaded
SAMPLES, SAMPLE_COLUMNS, SAMPLE_SEED = 64, 8, 0  # the card's picture: prior draws, per row, from this seed
# vaekit data sets that are data sets on the Hub too, named in the card's front matter (links on the model's page)
HUB_DATASETS = {"mnist": "ylecun/mnist", "mnist-10k": "ylecun/mnist", "fashion-mnist": "zalando-datasets/fashion_mnist"}
# namespace/name as the Hub allows repository ids (huggingface_hub's validate_repo_id): each part 1-96 letters, digits,
# "_", "-" and ".", starting and ending with a letter, digit or "_", with no "--" or ".." (valid_repo_id)
REPO_ID = re.compile(r"[A-Za-z0-9](?:[\w.-]{0,94}\w)?/\w(?:[\w.-]{0,94}\w)?")


def valid_repo_id(text: str) -> bool:
    return isinstance(text, str) and bool(REPO_ID.fullmatch(text)) and ".." not in text and "--" not in text


@dataclass(frozen=True)
class HubFolder:
    """What save_pretrained wrote."""

    directory: Path
    config: Path  # config.json, exactly as a run folder holds it
    weights: Path  # model.safetensors, exactly as a run folder holds it
    card: Path  # README.md: the model card the Hub shows
    samples: Path | None  # samples.png, decoded prior draws; None for a model of tables or vectors


# ---- a Hub-ready folder ----------------------------------------------------------------------------------------
def save_pretrained(model: Model, directory: str | Path, *, config: RunConfig | None = None,
                    metrics: Mapping[str, float] | None = None, repo_id: str | None = None) -> HubFolder:
    """Write config.json and model.safetensors (a run folder's pair, so vaekit.load and from_pretrained read it),
    README.md (the model card: family, data, latent size, likelihood, `metrics` when given, how to load) and, for an
    image model, samples.png. `config`: the run's settings, for the data and training sections (default: the
    model's run_config, which vaekit.load attaches). `repo_id`: the repository the card's snippet loads from."""
    model = checkpoint.unwrap(model)
    config, recorded = _run_config(model, config)
    numbers = _check_metrics(metrics)
    if repo_id is not None:
        _check_repo_id(repo_id)
    directory = Path(directory)
    _prepare(directory)
    try:
        # Staged beside the target, then moved in: a failure leaves the folder's old files as they were.
        with scratch_folder(directory, "hub") as staged:
            try:
                checkpoint.save_pretrained(model, config, staged)
                samples = _write_samples(model, staged / SAMPLES_FILE)
            except VaekitError as exc:  # a failed write: the folder named, not its scratch copy, nor a run's advice
                written = re.match(r"cannot write .* \(([^()]*)\): ", str(exc))
                if written is None:
                    raise
                raise VaekitError(_unwritable(directory, written.group(1))) from None
            card = model_card(model, config, numbers, repo_id=repo_id, samples=samples, data_recorded=recorded)
            (staged / CARD_FILE).write_text(card)
            for name in (checkpoint.MODEL_FILE, checkpoint.CONFIG_FILE, *([SAMPLES_FILE] if samples is True else []),
                         CARD_FILE):
                os.replace(staged / name, directory / name)
            if samples is not True:  # an earlier model's picture would not be this one's
                (directory / SAMPLES_FILE).unlink(missing_ok=True)
    except OSError as exc:
        raise VaekitError(_unwritable(directory, exc.strerror or type(exc).__name__)) from None
    return HubFolder(directory, directory / checkpoint.CONFIG_FILE, directory / checkpoint.MODEL_FILE,
                     directory / CARD_FILE, directory / SAMPLES_FILE if samples is True else None)


def _unwritable(directory: Path, reason: str) -> str:
    """The message of a failed write into the Hub folder, its advice by the error (`reason`, its strerror) as every
    write's (files.write_advice)."""
    number = next((n for n in errno.errorcode if os.strerror(n) == reason), None)
    advice = write_advice(number, directory, FIX)
    return f"cannot write the Hub folder {directory} ({reason}): {advice}; its old files are kept"


def _run_config(model: Model, config: RunConfig | None) -> tuple[RunConfig, bool]:
    """The settings config.json records, and whether its data section is known. The model section is always the
    model's own, so config.json builds exactly these weights."""
    config = config if config is not None else model.run_config
    if config is not None:
        return replace(config, model=model.config), True
    log.warning("this model carries no run settings (it was not loaded from a run folder): config.json gets vaekit's "
                "default data and train sections and the card says the data is not recorded; pass config= (e.g. "
                "vaekit.train(...).config) to record them")
    return RunConfig(model=model.config), False


def _check_metrics(metrics: Mapping[str, float] | None) -> dict[str, float]:
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        raise VaekitError(f"metrics must map names to numbers, e.g. {{'val_elbo': -95.2}}, got {type(metrics).__name__}")
    numbers = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise VaekitError(f"metrics must map names to finite numbers, got {name!r}: {value!r}")
        numbers[name] = value
    return numbers


def _prepare(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise VaekitError(f"{directory} is a file: choose a folder for the Hub files")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VaekitError(f"cannot create {directory} ({exc.strerror or type(exc).__name__}): choose another folder for "
                          "the Hub files") from None
    if (directory / checkpoint.RESUME_STATE).exists():
        raise VaekitError(f"{directory} holds a training run ({checkpoint.RESUME_STATE}): write the Hub files to a "
                          "folder of their own, e.g. vaekit export RUN --hub hub/NAME")
    foreign = [name for name in (checkpoint.CONFIG_FILE, CARD_FILE) if not _written_by_vaekit(directory / name)]
    if foreign:
        raise VaekitError(f"{directory} holds {' and '.join(foreign)} that vaekit did not write, which the Hub files "
                          "would replace: write them to a folder of their own, e.g. vaekit export RUN --hub hub/NAME")


def _written_by_vaekit(path: Path) -> bool:
    """Whether a file the Hub folder would replace is absent or one vaekit wrote there (a run's config.json, a card
    whose front matter names vaekit), so that writing again loses nothing of the user's."""
    if not path.exists():
        return True
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    if path.name == CARD_FILE:
        return text.startswith("---\n") and "\nlibrary_name: vaekit\n" in text.split("\n---", 1)[0] + "\n"
    try:
        raw = json.loads(text)
    except ValueError:
        return False
    return isinstance(raw, dict) and "vaekit_version" in raw and isinstance(raw.get("model"), dict)


def _write_samples(model: Model, path: Path) -> bool | str:
    """A grid of decoded prior draws (each class in turn for a label-conditioned model): True; False for data that
    is not pictures (tables, vectors); why not, for a model that cannot sample yet (a vqvae before its prior)."""
    shape = model.data_shape
    if len(shape) != 3 or shape[0] not in (1, 3):
        try:  # no picture; but whether it can sample yet, which the card's lines follow
            model.prior()
        except (VaekitError, NotImplementedError) as exc:
            return str(exc) or f"its prior is not available ({type(exc).__name__})"
        return False
    was_training = model.training
    model.eval()
    try:
        y = torch.arange(SAMPLES) % model.num_labels if model.num_labels else None
        images = model.sample(SAMPLES, y=y, generator=torch.Generator().manual_seed(SAMPLE_SEED)).cpu()
    except VaekitError as exc:  # a model that cannot sample yet (a vqvae before its prior stage): no picture
        log.warning("the Hub folder gets no samples.png: %s", exc)
        return str(exc)
    finally:
        model.train(was_training)
    viz.image_grid(images, ncol=SAMPLE_COLUMNS).save(path)
    return True


def read_metrics(run: str | Path) -> dict[str, float]:
    """The numbers of the epoch whose weights a run holds (its last; with early stopping the kept one) from its
    metrics.jsonl: epoch, train_loss and val_loss, val_elbo and val_<term>, in nats per example, and epochs_trained
    where more epochs ran; {} for a run that has finished no epoch."""
    path = Path(run) / METRICS_FILE
    if not path.is_file():
        return {}
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        rows = [json.loads(line) for line in lines]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise VaekitError(f"{path} is unreadable ({type(exc).__name__}): continue the run (vaekit train --resume "
                          f"{run}), which rewrites it, or pass the metrics yourself") from None
    if not all(isinstance(row, dict) for row in rows):
        raise VaekitError(f"{path} is corrupt (a line is not a JSON object): continue the run (vaekit train "
                          f"--resume {run}), which rewrites it, or pass the metrics yourself")
    if not rows:
        return {}
    early_stopping = checkpoint.load_config(run).train.early_stopping if (Path(run) / checkpoint.CONFIG_FILE
                                                                           ).is_file() else None
    row = rows[kept_index([judged_loss(r, "val_") for r in rows], early_stopping)]
    numbers = {name: value for name, value in row.items()
               if (name in ("epoch", "train_loss") or name.startswith("val_")) and isinstance(value, (int, float))
               and not isinstance(value, bool) and math.isfinite(value)}
    if row is not rows[-1] and isinstance(rows[-1].get("epoch"), int):
        numbers["epochs_trained"] = rows[-1]["epoch"]
    return numbers


# ---- the model card --------------------------------------------------------------------------------------------
def model_card(model: Model, config: RunConfig, metrics: Mapping[str, float], *, repo_id: str | None = None,
               samples: bool | str = True, data_recorded: bool = True) -> str:
    """README.md for the Hub: YAML front matter (library_name, tags, datasets where the Hub has the data set; the
    license is left to the author), then what the model is, its numbers, its samples and how to load it.
    `samples`: whether samples.png shows draws (False: the data are not pictures; a text: why the model cannot
    sample yet)."""
    family, settings = model.family, model.config
    front: dict[str, Any] = {"library_name": "vaekit", "tags": ["vaekit", family, "autoencoder", "pytorch"]}
    if data_recorded and config.data.name in HUB_DATASETS:
        front["datasets"] = [HUB_DATASETS[config.data.name]]
    summary = family_summary(type(model))
    rows = [("family", f"`{family}`" + (f": {summary}" if summary else "")),
            ("data", _data_text(config.data) if data_recorded else "not recorded"),
            ("data shape", " x ".join(str(d) for d in settings.data_shape)),
            ("latent size", str(model.latent_dim)),
            ("likelihood", f"`{settings.likelihood}`"),
            ("beta", f"{settings.beta:g}"),
            ("networks", _networks_text(model)),
            ("conditioned on", "nothing" if not model.num_labels else f"the class label ({model.num_labels} classes"
             + ("; the prior too: p(z | y))" if model.prior_takes_labels else ")"))]
    if data_recorded:
        train = config.train
        trained = int(metrics.get("epochs_trained", metrics["epoch"])) if metrics and "epoch" in metrics else None
        # what ran, not what was planned
        epochs = f"{trained} epochs" if trained is not None else (
            f"up to {train.epochs} epochs" if train.minutes or train.early_stopping else f"{train.epochs} epochs")
        limit = f" within a limit of {train.minutes:g} minutes" if train.minutes else ""
        rows.append(("training", f"{epochs}{limit}, batch {train.batch_size}, {train.optimizer} at lr "
                                 f"{train.lr:g}, seed {train.seed}"))
    repo = repo_id or "USER/REPO"
    title = repo_id.split("/")[-1] if repo_id else f"vaekit {family} model"
    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "", f"# {title}", "",
             f"A `{family}` model trained with vaekit (autoencoders and VAEs on PyTorch).", "",
             "| | |", "|---|---|", *(f"| {name} | {_cell(value)} |" for name, value in rows), "",
             "## Metrics", ""]
    if metrics:
        if "epoch" in metrics:
            kept = "" if "epochs_trained" not in metrics else ", the one early stopping kept"
            lines += [f"The epoch whose weights these are ({int(metrics['epoch'])}{kept}), from the run's "
                      f"metrics.jsonl: `val_*` on "
                      f"{_judged_on(config) if data_recorded else 'the split the run judged its epochs on'}, "
                      "`train_loss` on the training data, in nats per example (`loss` is minimised, `elbo` "
                      "is higher-is-better).", ""]
        lines += ["| metric | value |", "|---|---|",
                  *(f"| {_cell(name)} | {value:.6g} |" for name, value in _ordered(metrics) if name != "epoch"), ""]
    else:
        lines += ["Not recorded (`vaekit export RUN --hub DIR` reads them from the run; `metrics=` in Python).", ""]
    lines += ["## Samples", ""]
    unready = samples if isinstance(samples, str) else None
    if unready is not None:
        lines += [f"No {'rows' if settings.likelihood == 'table' else 'picture'}: this model cannot draw samples yet "
                  f"({_cell(unready.rstrip('.'))}).", ""]
    elif samples:
        drawn = ("z ~ p(z | y), each class y in turn" if model.prior_takes_labels
                 else "z ~ p(z), decoded with each class in turn" if model.num_labels else "z ~ p(z)")
        lines += [f"![{SAMPLES} decoded draws from the prior]({SAMPLES_FILE})", "",
                  f"{SAMPLES} draws {drawn}, decoded to the likelihood's mean (seed {SAMPLE_SEED}).", ""]
    else:
        lines += ["No picture: the data are not images. `vaekit sample FOLDER --out rows.csv` draws rows.", ""]
    table = settings.likelihood == "table"
    given, of_class = (", y=0", ", of class 0") if model.num_labels else ("", "")
    draw = (f"rows = model_table(model.config).decode(model.sample(16{given}))  # decoded draws from the prior"
            f"{of_class}: column -> values, in your units" if table
            else f"images = model.sample(16{given})  # decoded draws from the prior{of_class}")
    if unready is not None:
        labels = ", y" if model.num_labels else ""
        items = ("rows as the model reads them (from vaekit.data.tables: schema = model_table(model.config); "
                 "schema.encode(read_table(path, expected=schema.names)))" if table else "items")
        draw = (f"codes = model.code(model.encode(x{labels}))  # x: a batch of {items}"
                f"{' (y: their classes)' * bool(labels)}; sampling waits for the prior's training (see Samples above)")
    imports = ["from vaekit import Model", *(["from vaekit.data.tables import model_table"] if table and unready is None
                                            else [])]
    folder = repo.split("/")[-1]
    trained = next((c for c in range(model.num_labels) if c not in model.config.untrained_labels), 0)  # (its example)
    command = (f"vaekit reconstruct {folder} --data YOUR.csv --out reconstructions.csv" if unready is not None and table
               else f"vaekit reconstruct {folder} --out reconstructions.png" if unready is not None
               else f"vaekit sample {folder} --out samples.csv" if table
               else f"vaekit sample {folder} --label {trained} --out samples.png" if model.num_labels
               else f"vaekit sample {folder} --out samples.png")
    lines += ["## How to load", "", *_family_source(model), "```python", f"# {INSTALL}", *imports, "",
              f'model = Model.from_pretrained("{repo}")  # the family config.json names, on the CPU, in eval mode',
              draw, "```", "",
              f"On the command line: `hf download {repo} --local-dir {folder}`, then any vaekit command "
              f"takes that folder as its run, e.g. `{command}`" + (" (rows in your units)" if table else "") + ".", "",
              "`config.json` holds vaekit's run settings and `model.safetensors` the weights (with their checksum), as "
              "in a vaekit run folder.", "",
              "## License", "", "Not set: add a `license:` line to the front matter above before publishing.", ""]
    return "\n".join(lines)


def _family_source(model: Model) -> list[str]:
    """For a family vaekit does not ship, the card's paragraph on the code that registers it: loading needs it."""
    module = type(model).__module__
    if module == "vaekit" or module.startswith("vaekit."):
        return []
    family = model.family
    if module == "__main__":
        return [f"The `{family}` family is not part of vaekit: the script that trained this model registered it "
                "(`vaekit.register_family`), so loading needs that code too, run or imported first.", ""]
    from importlib.metadata import packages_distributions

    try:
        dists = packages_distributions().get(module.split(".")[0], [])
    except Exception:  # noqa: BLE001  (broken package metadata must not cost the card)
        dists = []
    where = f"the package `{dists[0]}` (`pip install {dists[0]}`), in its module `{module}`" if dists else \
        f"the Python module `{module}`"
    return [f"The `{family}` family is not part of vaekit: {where} registers it. Install it beside vaekit; unless it "
            "is a `vaekit.plugins` entry point, also import it before loading.", ""]


def _judged_on(config: RunConfig) -> str:
    """Which split a run's val_* measures come from, as vaekit.data.hold_out chooses it."""
    share = config.data.validation
    if share is None and config.train.early_stopping is not None:
        from ..data import EARLY_STOPPING_VALIDATION

        share = EARLY_STOPPING_VALIDATION
    if not share:
        return "the test split"
    held = f"{share:.0%} of the training items" if share < 1 else f"{int(share):,} training items"
    return f"a validation split ({held}, held out from training)"


def _data_text(data: DataConfig) -> str:
    from ..data import available_datasets  # late import: the registry fills on first use

    known = available_datasets()
    text = f"`{data.name}`: {known[data.name]}" if data.name in known else f"a user file, `{Path(data.name).name}`"
    extras = [f"first {data.limit:,} training items" if data.limit else "",
              f"binarised ({data.binarize})" if data.binarize != "none" else ""]
    return ", ".join([text, *filter(None, extras)])


def family_summary(cls: type) -> str:
    """The first sentence of a family's docstring, its lines joined (the first line alone stopped mid-phrase)."""
    paragraph = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
    return re.split(r"(?<=[.!?])\s+(?=[A-Z`])", paragraph, maxsplit=1)[0]  # not at "et al. 2016", "e.g. a"


def _networks_text(model: Model) -> str:
    from ..networks import resolve_network

    settings = model.config
    widths = ", ".join(map(str, settings.hidden_dims)) or "none"
    if resolve_network(settings) == "conv":
        return f"conv (channels {', '.join(map(str, settings.conv_channels))}; dense width {settings.hidden_dims[-1]})"
    return f"mlp (widths {widths})"


def _ordered(metrics: Mapping[str, float]) -> list[tuple[str, float]]:
    first = ("val_loss", "val_elbo")
    return sorted(metrics.items(), key=lambda item: (item[0] not in first, first.index(item[0]) if item[0] in first
                                                     else 0, not item[0].startswith("val_"), item[0]))


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# ---- loading ---------------------------------------------------------------------------------------------------
def from_pretrained(source: str | Path, *, revision: str | None = None, cache_dir: str | Path | None = None,
                    token: str | bool | None = None, local_files_only: bool = False, force_download: bool = False,
                    device: str | torch.device = "cpu") -> Model:
    """A model from a local folder (a run folder or a Hub folder) or a Hub repository (see resolve), in eval mode:
    the family its config.json names, with that config as its run_config."""
    folder = resolve(source, revision=revision, cache_dir=cache_dir, token=token, local_files_only=local_files_only,
                     force_download=force_download)
    if _reference(source) is None:
        return checkpoint.load(folder, device)
    try:
        return checkpoint.load(folder, device)
    except VaekitError as exc:  # a run folder's advice (retrain, resume) does not fit a download
        message = str(exc).replace(str(folder), "the download")
        if "which no loaded module registers" in message:  # a plugin's family: its advice (import, install) stands
            raise VaekitError(f"the model downloaded from {source} does not load: {message}") from None
        problem = without_advice(message)
        again = "download it again (force_download=True, or hf download --force-download)"
        if "does not match" in problem or "was written for another" in problem:  # the two files, not one of them
            advice = f"its {checkpoint.CONFIG_FILE} and weights do not belong together: {again}, or tell its owner"
        elif checkpoint.MODEL_FILE in problem:  # the weights: a broken download is the likely cause
            advice = f"{again}, or tell the repository's owner"
        else:  # its config.json, as the repository holds it: a new download gives the same file
            advice = (f"the repository's {checkpoint.CONFIG_FILE} is at fault, not the download: tell its owner (or, "
                      "for a model of a newer vaekit, upgrade vaekit)")
        raise VaekitError(f"the model downloaded from {source} does not load ({problem}): {advice}") from None


def without_advice(message: str) -> str:
    """A vaekit error's problem, less its advice: the text before its last ": " outside brackets (the advice of a run
    folder, such as retrain or resume); the whole message where it has none."""
    depth, cut = 0, len(message)
    for i, char in enumerate(message):
        depth += {"(": 1, "[": 1, ")": -1, "]": -1}.get(char, 0)
        if depth == 0 and message.startswith(": ", i):
            cut = i
    return message[:cut]


def resolve(source: str | Path, *, revision: str | None = None, cache_dir: str | Path | None = None,
            token: str | bool | None = None, local_files_only: bool = False, force_download: bool = False) -> Path:
    """The local folder of a model: `source` itself when it is a folder here (or a Path); else a Hub repository,
    "namespace/name" or "hf://namespace/name[@revision]", downloaded into huggingface_hub's cache (only config.json
    and model.safetensors) by snapshot_download, which HF_ENDPOINT, HF_HOME, HF_HUB_OFFLINE and HF_TOKEN steer."""
    reference = _reference(source)
    if reference is None:
        if revision is not None:
            raise VaekitError(f"revision={revision!r} is for Hub repositories, but {source} is a local folder: drop it")
        return Path(source)
    repo_id, named_revision, explicit = reference
    if named_revision is not None and revision is not None and named_revision != revision:
        raise VaekitError(f"{source} names revision {named_revision!r} but revision={revision!r} was given: give one")
    revision = revision or named_revision
    folder = _download(repo_id, revision, cache_dir, token, local_files_only, force_download, explicit)
    _check_snapshot(folder, repo_id + (f"@{revision}" if revision else ""))
    return folder


def _reference(source: str | Path) -> tuple[str, str | None, bool] | None:
    """(repo id, revision, whether it was written hf://) for a Hub source; None for a local folder."""
    if isinstance(source, Path):
        return None
    text = os.fspath(source)
    if text.startswith("hf://"):
        body = text[len("hf://"):].removeprefix("models/")
        if body.split("/")[0] in ("datasets", "spaces", "buckets", "kernels"):
            raise VaekitError(f"{text} is not a model repository: vaekit models live in model repositories "
                              "(hf://namespace/name)")
        repo_id, at, revision = body.partition("@")
        if not valid_repo_id(repo_id) or (at and not revision):
            raise VaekitError(f"{text} is not a Hub model: write hf://namespace/name or hf://namespace/name@revision")
        return repo_id, revision or None, True
    if Path(text).exists() or not valid_repo_id(text):
        return None  # a folder here, or a path that is not one (vaekit.load says so)
    return text, None, False


def _download(repo_id: str, revision: str | None, cache_dir: str | Path | None, token: str | bool | None,
              local_files_only: bool, force_download: bool, explicit: bool) -> Path:
    hub = _import_hub()
    from huggingface_hub import constants
    from huggingface_hub.utils import (
        EntryNotFoundError, GatedRepoError, HfHubHTTPError, HFValidationError, LocalEntryNotFoundError,
        RepositoryNotFoundError, RevisionNotFoundError,
    )

    where = repo_id + (f"@{revision}" if revision else "")
    cache = cache_dir or constants.HF_HUB_CACHE
    # A repo id is also a relative path: when it was not written hf://, say that no such folder is here either.
    nothing_here = "" if explicit else f"there is no folder {repo_id} here, and "
    try:
        return Path(hub.snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, token=token,
                                          allow_patterns=list(MODEL_FILES), local_files_only=local_files_only,
                                          force_download=force_download))
    except HFValidationError as exc:  # what huggingface_hub refuses beyond valid_repo_id's rules
        raise VaekitError(f"{where} is not a Hub model reference ({_first_line(exc)}): check the name") from None
    except GatedRepoError:
        raise VaekitError(f"{repo_id} is a gated repository: accept its conditions on its Hub page, then log in (hf "
                          "auth login) or pass token=") from None
    except RepositoryNotFoundError:
        raise VaekitError(f"{nothing_here}the Hub ({constants.ENDPOINT}) has no model repository {repo_id} that can "
                          "be read: check the name; for a private one log in (hf auth login) or pass token=") from None
    except RevisionNotFoundError:
        raise VaekitError(f"{repo_id} has no revision {revision!r}: give a branch, tag or commit it has (the "
                          "default is main)") from None
    except LocalEntryNotFoundError:
        if local_files_only or constants.HF_HUB_OFFLINE:
            raise VaekitError(f"{nothing_here}{where} is not in the Hugging Face cache ({cache}) and downloads are off "
                              "(HF_HUB_OFFLINE=1 or local_files_only=True): download it once online") from None
        raise VaekitError(f"{nothing_here}cannot reach the Hub at {constants.ENDPOINT} to download {where}, and it is "
                          f"not in the cache ({cache}): check the connection (or HF_ENDPOINT) and try again") from None
    except EntryNotFoundError as exc:
        raise VaekitError(f"{where} lacks a file it lists ({_first_line(exc)}): it is incomplete; push it again") \
            from None
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            raise VaekitError(f"the Hub ({constants.ENDPOINT}) refused the token for {repo_id} ({status}): log in "
                              "again (hf auth login) or pass another token=") from None
        raise VaekitError(f"the Hub ({constants.ENDPOINT}) answered {status} for {where} ({_first_line(exc)}): "
                          "try again later") from None
    except _transport_errors():
        raise VaekitError(f"{nothing_here}cannot reach the Hub at {constants.ENDPOINT} to download {where}: check the "
                          "connection (or HF_ENDPOINT) and try again") from None
    except OSError as exc:
        raise VaekitError(f"cannot write the Hugging Face cache {cache} ({exc.strerror or type(exc).__name__}): free "
                          "some space, or choose another cache_dir (or HF_HOME)") from None


def _check_snapshot(folder: Path, where: str) -> None:
    missing = [name for name in MODEL_FILES if not (folder / name).is_file()]
    if missing:
        raise VaekitError(f"{where} is not a vaekit model: it holds no {' and no '.join(missing)} (vaekit's "
                          "model.push_to_hub, or hf upload of a folder from vaekit export --hub, puts them there)")
    try:
        settings = json.loads((folder / checkpoint.CONFIG_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise VaekitError(f"{where} holds a damaged {checkpoint.CONFIG_FILE} ({type(exc).__name__}): download it "
                          "again (force_download=True, or hf download --force-download), or tell the repository's "
                          "owner") from None
    if not isinstance(settings, dict) or not isinstance(settings.get("model"), dict):
        raise VaekitError(f"{where} is not a vaekit model: its {checkpoint.CONFIG_FILE} holds no vaekit settings "
                          "(a model of another library?)")


# ---- pushing ---------------------------------------------------------------------------------------------------
def push_to_hub(model: Model, repo_id: str, *, config: RunConfig | None = None,
                metrics: Mapping[str, float] | None = None, private: bool | None = None,
                token: str | bool | None = None, revision: str | None = None, commit_message: str | None = None,
                create_pr: bool = False) -> str:
    """Create the model repository if it is new (HfApi.create_repo) and upload the Hub-ready folder to it in one
    commit (HfApi.upload_folder): files of the same name are replaced, others kept, except an earlier samples.png
    where this model has none. Returns the commit's URL."""
    _check_repo_id(repo_id)
    hub = _import_hub()
    from huggingface_hub import constants
    from huggingface_hub.utils import HfHubHTTPError, HFValidationError, RepositoryNotFoundError, RevisionNotFoundError

    api = hub.HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="vaekit-hub-") as scratch:
        written = save_pretrained(model, scratch, config=config, metrics=metrics, repo_id=repo_id)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            # a model that is not of pictures has no samples.png: an earlier model's would not be this one's
            info = api.upload_folder(repo_id=repo_id, folder_path=scratch, revision=revision, create_pr=create_pr,
                                     commit_message=commit_message or f"Upload a vaekit {model.family} model",
                                     delete_patterns=None if written.samples else [SAMPLES_FILE])
        except HFValidationError as exc:
            raise VaekitError(f"cannot push to {repo_id} ({_first_line(exc)}): check the repository id and "
                              "revision") from None
        except RevisionNotFoundError:
            raise VaekitError(f"{repo_id} has no branch {revision!r} to push to: create it first (hf repo branch "
                              f"create {repo_id} {revision}) or push to main") from None
        except RepositoryNotFoundError:
            raise VaekitError(f"cannot push to {repo_id}: the Hub ({constants.ENDPOINT}) gives this token no write "
                              "access to it: log in with a write token (hf auth login) or pass token=") from None
        except HfHubHTTPError as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status in (401, 403):
                raise VaekitError(f"cannot push to {repo_id}: the Hub ({constants.ENDPOINT}) refused the token "
                                  f"({status}): log in with a write token (hf auth login) or pass token=") from None
            raise VaekitError(f"the Hub ({constants.ENDPOINT}) answered {status} while pushing to {repo_id} "
                              f"({_first_line(exc)}): try again later") from None
        except _transport_errors():
            raise VaekitError(f"cannot reach the Hub at {constants.ENDPOINT} to push to {repo_id}: check the "
                              "connection (or HF_ENDPOINT) and try again") from None
    return info.pr_url if create_pr and info.pr_url else info.commit_url


def _check_repo_id(repo_id: str) -> None:
    if not valid_repo_id(repo_id):
        raise VaekitError(f"repo_id must be a Hub repository id, namespace/name (e.g. your-name/digits-vae), got "
                          f"{repo_id!r}")


# ---- huggingface_hub, imported when used -----------------------------------------------------------------------
def _import_hub():
    try:
        import huggingface_hub
    except ImportError:
        raise VaekitError(f"the Hugging Face Hub needs huggingface_hub: {install_hint('hub')}") from None
    return huggingface_hub


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's own errors (refused connections, timeouts), which huggingface_hub passes on: httpx2 (2.x),
    httpx (1.x) or requests (0.x), whichever is installed."""
    errors = []
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"), ("requests", "ConnectionError"),
                         ("requests", "Timeout")):
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:160] if lines else type(exc).__name__
