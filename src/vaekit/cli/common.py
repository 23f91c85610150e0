"""Shared CLI pieces: the flags that make a RunConfig, loading a run and its data, writing outputs."""
from __future__ import annotations

import argparse
import json
import logging
import math
import re
import weakref
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .. import checkpoint, config as config_module, files, runs, viz
from ..config import RunConfig
from ..data import Dataset, load_dataset, resolved_name, safe, user_file
from ..data.tables import model_table, run_table, write_rows
from ..errors import VaekitError
from ..models import Model

log = logging.getLogger(__name__)


def recipes() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("vaekit").joinpath("recipes").iterdir() if p.name.endswith(".yaml"))


def recipe_summaries() -> str:
    """Each shipped recipe and what it is for (its file's opening words, up to the first colon or full stop)."""
    lines = []
    for name in recipes():
        text = resources.files("vaekit").joinpath(f"recipes/{name}.yaml").read_text(encoding="utf-8")
        comment = " ".join(line.lstrip("# ").strip() for line in text.splitlines()
                           if line.startswith("#")).split("\n")[0]
        summary = re.split(r"(?<! al)\. ", comment.replace("vaekit's ", "", 1))[0].rstrip(".")  # its first sentence
        if len(summary) > 90:
            summary = summary[:summary.rfind(" ", 0, 88)] + " ..."
        lines.append(f"  {name:<12} {summary[:1].upper()}{summary[1:]}")
    return "recipes (--recipe NAME; flags override them):\n" + "\n".join(lines)


def _add_flags(parser: argparse.ArgumentParser, flags: list[config_module.Flag]) -> None:
    titles = {"data": "data", "model": "model", "train": "training"}
    groups: dict[str, argparse._ArgumentGroup] = {}
    for flag in flags:
        title = titles[flag.section] if len(flag.path) == 1 else f"settings of {flag.path[0]}"
        if title not in groups:
            groups[title] = parser.add_argument_group(title)
        groups[title].add_argument(flag.flag, dest=flag.dest, default=None, **flag.kwargs)


# data settings only training reads (what it holds out, a table's column types and standardising, fixed in the
# run's config.json): not for a trained run, whose commands would take and ignore them
TRAINING_ONLY = ("validation", "standardize", "column_types")


def add_data_flags(parser: argparse.ArgumentParser) -> None:
    """The data section's flags (--data, --data-dir, --binarize, ...), from the config declarations, for commands
    on a trained run: less those only training reads, which would be taken and ignored."""
    flags = [f for f in config_module.config_flags(("data",)) if f.path[-1] not in TRAINING_ONLY]
    # Each defaults to the run's own setting (run_dataset), not to the declaration's default a new run starts from.
    _add_flags(parser, [replace(f, kwargs={**f.kwargs, "help": _run_default(f)}) for f in flags])


def _run_default(flag: config_module.Flag) -> str | None:
    help_text = flag.kwargs.get("help")
    if help_text is None:
        return None
    head, _, _ = help_text.rpartition(" (default: ")
    default = "the run's own; for another file, none in place of the run's drop" if flag.path[-1] == "impute" else \
        "the run's own"  # run_dataset: dropping a new file's rows would leave fewer results than rows
    return f"{head or help_text} (default: {default})"


def add_config_flags(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """--config/--recipe/--set and one flag per declared setting (data, model, training, family and likelihood
    settings), with the declarations' help and choices. exclude: dests left out (e.g. cfg__model__family)."""
    parser.add_argument("--config", help="YAML run config; flags override it")
    parser.add_argument("--recipe", help="a shipped config by name (listed, with what each is for, at the end of "
                        "'vaekit train --help'); flags override it")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override any config field, e.g. train.lr=3e-4 or model.iwae.k=5")
    _add_flags(parser, [f for f in config_module.config_flags() if f.dest not in exclude])


def recipe_config(name: str, base: RunConfig | None = None) -> RunConfig:
    """A shipped recipe (src/vaekit/recipes/NAME.yaml) on top of base or the defaults."""
    names = recipes()
    if name not in names:
        raise VaekitError(f"unknown recipe {name!r}: use one of {', '.join(names)}")
    with resources.as_file(resources.files("vaekit").joinpath(f"recipes/{name}.yaml")) as path:
        return config_module.load_yaml(path, base)


def config_from_args(args: argparse.Namespace, base: RunConfig | None = None) -> RunConfig:
    cfg = base or RunConfig()
    if getattr(args, "recipe", None):
        cfg = recipe_config(args.recipe, cfg)
    if getattr(args, "config", None):
        cfg = config_module.load_yaml(args.config, cfg)
    flags = config_module.from_flags(vars(args), config_module.config_flags())
    assignments = getattr(args, "set", []) or []
    for item in assignments:
        key = config_module.filled_from_data(item)
        if key is not None:
            given = item.partition("=")[0].strip()
            fix = f"drop --set {key}" if key == given else f"drop it from --set {given}"
            raise VaekitError(f"--set {key}: vaekit fills this in from the training data, and a value given for it "
                              f"would not be used: {fix}")
    result = config_module.override(cfg, assignments, flags)
    _check_one_value_each(args, cfg, flags, assignments, result)
    for flag in config_module.config_flags():  # a flag given for a setting that does nothing here, at its default too
        if getattr(args, flag.dest, None) is not None and len(flag.path) == 2 and flag.path[0] in result.model.options:
            unmet = config_module.unmet_need(result.model.options[flag.path[0]], flag.path[1],
                                             f"model.{flag.path[0]}")
            if unmet is not None:
                raise VaekitError(unmet)
    return result


def _check_one_value_each(args: argparse.Namespace, base: RunConfig, flags: dict, assignments: list[str],
                          result: RunConfig) -> None:
    """A warning where a setting is given by its flag and by --set with another value: --set's is used, in either
    order on the command line (as a script's flags can be overridden), which was done in silence."""
    given = {(f.section, *f.path): f for f in config_module.config_flags() if getattr(args, f.dest, None) is not None}
    conflicting = [(item, given[path]) for item in assignments
                   if (path := tuple(p.strip() for p in item.partition("=")[0].split("."))) in given]
    if not conflicting:
        return
    others = [item for item in assignments if item not in dict(conflicting)]  # (one may choose the family)
    try:
        by_flags = json.loads(config_module.override(base, others, flags).to_json())
    except VaekitError:  # the flags alone are no whole config (--model vae --iwae-k 3 --set model.family=iwae)
        by_flags = None
    by_both = json.loads(result.to_json())
    for item, flag in conflicting:
        path, ours, theirs = (flag.section, *flag.path), by_flags, by_both
        for part in path:
            ours, theirs = None if ours is None else ours.get(part), theirs.get(part)
        if by_flags is None or ours != theirs:
            log.warning("%s %s and --set %s both set %s: --set's value is used", flag.flag, getattr(args, flag.dest),
                        item, ".".join(path))


def set_flags(args: argparse.Namespace) -> list[str]:
    """The config flags given on this command line, as typed (--lr, --iwae-k, ...)."""
    return [f.flag for f in config_module.config_flags() if getattr(args, f.dest, None) is not None]


OUTPUT_ARGUMENTS = ("out", "per_item", "onnx", "hub")  # the arguments naming what a command writes
DATA_ARGUMENTS = ("cfg__data__name", "data")  # --data's (demo's own is `data`)


def command_inputs(args: argparse.Namespace) -> dict[str, str]:
    """The files a command reads, path -> what it is, which none of its outputs may replace (files.inputs_kept): every
    argument naming a file (--data, the codes to decode, --compare-to, --config), and the data file the run it works
    on trained on (which a command on the run need not read, but is the user's)."""
    inputs: dict[str, str] = {}
    for name, value in vars(args).items():
        if name in OUTPUT_ARGUMENTS or name == "argv":
            continue
        for item in value if isinstance(value, list) else [value]:
            if not (isinstance(item, str) and item and not item.startswith("hf://")):
                continue
            if name in DATA_ARGUMENTS and not user_file(item):  # a registered data set's name, not this file
                continue
            if _exists(item, file=True):
                inputs[item] = "an input of this command"
            elif name in DATA_ARGUMENTS and _exists(item):  # an image folder (not the run's, nor --data-dir)
                inputs[item] = "the data folder this command reads"
    run = getattr(args, "run", None)
    folder = Path(run).expanduser() if isinstance(run, str) and not run.startswith("hf://") else None
    if folder is not None and (folder / checkpoint.CONFIG_FILE).is_file():
        # where the data was when the run trained (data.json); where that is gone (a project folder moved with the
        # run), the name its config gives it, read from here as the command reads it
        try:
            recorded = json.loads((folder / checkpoint.DATA_FILE).read_text()).get("path")
        except (OSError, ValueError, AttributeError):
            recorded = None
        name = recorded if isinstance(recorded, str) and _exists(recorded) else None
        if name is None:
            try:
                name = checkpoint.load_config(folder).data.name
            except VaekitError:  # a damaged config: the command says so itself
                name = None
        if name and user_file(name):  # a file, or an image folder
            inputs.setdefault(name, f"the data the run in {run} trained on")
    return inputs


def check_output_folders(args: argparse.Namespace) -> None:
    """That no folder a command writes into (compare's and demo's --out, export's --onnx and --hub) is inside a data
    folder it reads: said before the work (files.check_target says it of each file it writes)."""
    folders = ("onnx", "hub") if getattr(args, "out_is_file", False) else ("out", "onnx", "hub")  # a file --out:
    for name in folders:  # check_target checked it
        value = getattr(args, name, None)
        if isinstance(value, str) and value:
            files.check_outside_inputs(Path(value))


def _exists(text: str, file: bool = False) -> bool:
    """Whether an argument names a file or folder (a file: `file`), ~ expanded as the loaders expand it (not a value
    such as --strengths', which may be too long for a name)."""
    try:
        path = Path(text).expanduser()
        return path.is_file() if file else path.exists()
    except (OSError, ValueError, RuntimeError):
        return False


def run_folder(path: str) -> Path:
    """A RUN argument's folder: the folder itself, or for hf://USER/REPO[@REVISION] a model on the Hugging Face Hub,
    downloaded once into huggingface_hub's cache (needs vaekit[hub])."""
    if path.startswith("hf://"):
        from ..integrations.hub import resolve

        return resolve(path)
    return Path(path)


def load_run(path: str) -> Model:
    if path.startswith("hf://"):  # with the Hub's advice for a download that does not load
        from ..integrations.hub import from_pretrained

        return from_pretrained(path)
    return checkpoint.load(run_folder(path))


def data_flags_given(args: argparse.Namespace) -> dict[str, Any]:
    """The data flags given on the command line: data setting -> value (--data is "name")."""
    return {f.path[-1]: getattr(args, f.dest) for f in config_module.config_flags(("data",))
            if getattr(args, f.dest, None) is not None}


def own_data(run_cfg: RunConfig, args: argparse.Namespace) -> bool:
    """Whether a command on a run reads the run's own data: no data flags, or only --data naming the run's own."""
    given = data_flags_given(args)
    return not given or (set(given) == {"name"} and resolved_name(given["name"]) == resolved_name(run_cfg.data.name))


def run_dataset(run: str, args: argparse.Namespace, whole: bool = False) -> Dataset:
    """The data a command works on: flags if given, else the run's own data set (with its binarisation). whole: a
    table file (the run's own too) read whole and in its order, as a new file is."""
    run_cfg = checkpoint.load_config(run_folder(run))
    updates = data_flags_given(args)
    table = model_table(run_cfg.model)
    folder = run_folder(run)
    if whole and table is not None:
        updates.setdefault("name", run_cfg.data.name)
    named = updates.get("name")
    if run_cfg.model.condition == "label" and table is not None and updates.get("label_column") in table.names:
        # (a model without labels takes any column's values as labels: a latent map coloured by an input column)
        raise VaekitError(f"--label-column {updates['label_column']} is one of the model's input columns, but this "
                          "model is conditioned on the label: give the file's column of classes, or leave "
                          "--label-column out for the run's own")
    dataset = None
    if named is not None and set(updates) == {"name"} and not (whole and table is not None):
        # the run's own file named with --data (however spelled, from whatever folder) is its own data, read and split
        # as the run read it, unless it changed since (then it is new data, read as such)
        own_spelling = resolved_name(named) == resolved_name(run_cfg.data.name)
        if own_spelling or (folder / checkpoint.DATA_FILE).is_file():
            try:
                candidate = checkpoint.labels_as_read(folder, run_cfg, _read_for_run(run_cfg, updates, table, False))
                checkpoint.check_data(folder, candidate, named, cli=True)
                dataset, updates = candidate, {}
                if not own_spelling or table is not None:  # a copy, or a table whose rows the user may expect whole
                    whole_rows = table is not None and getattr(args, "command", None) == "encode"
                    log.info("--data %s holds the data the run trained on: read as the run read it, in its training "
                             "and test splits%s", named, " (--split all: every row, in order)" if whole_rows else "")
            except VaekitError:
                if own_spelling and not (folder / checkpoint.DATA_FILE).is_file():
                    raise  # the run's own file as it names it, which cannot be read: said as it is
    if dataset is None:
        dataset = _read_for_run(run_cfg, updates, table, new_file="name" in updates)
        if not updates:  # the run's own data, as it read it: the same items, so the same split
            dataset = checkpoint.labels_as_read(folder, run_cfg, dataset)
            checkpoint.check_data(folder, dataset, run_cfg.data.name, cli=True)
    new_file = "name" in updates
    if (new_file and table is not None and run_cfg.model.condition == "label" and not run_cfg.model.label_names
            and dataset.label_names and all(re.fullmatch(r"[0-9]+", name) for name in dataset.label_names)):
        # a run that took a table's numeric labels as class indices (before they were named as written): so again
        dataset = relabel(dataset, tuple(str(i) for i in range(run_cfg.model.num_labels)))
        dataset = replace(dataset, label_names=None)
    if new_file and run_cfg.model.condition == "label" and run_cfg.model.label_names and dataset.label_names:
        dataset = relabel(dataset, run_cfg.model.label_names)
    elif (new_file and run_cfg.model.condition == "label" and dataset.label_names is not None
            and len(dataset.label_names) != run_cfg.model.num_labels):
        # Class names are numbered by sorting each file's own names and the run keeps only their count: a file with
        # fewer (or other) names would map them to other classes than the training data's.
        raise VaekitError(f"{dataset.name} names {len(dataset.label_names)} classes, the run was trained on "
                          f"{run_cfg.model.num_labels}: class names are numbered in sorted order within each file, so "
                          f"give every class, or the labels as class indices 0..{run_cfg.model.num_labels - 1}")
    model_shape = tuple(run_cfg.model.data_shape)
    if tuple(dataset.shape) != model_shape:
        hints = []
        if len(model_shape) == 3 and len(dataset.shape) == 3 and dataset.shape[0] != model_shape[0]:
            kind = {1: "grey", 3: "RGB"}.get(model_shape[0], f"{model_shape[0]}-channel")
            hints.append(f"its pictures are {kind}: convert yours, e.g. with Pillow's Image.convert; attribute "
                         "--pictures and the explorer's upload convert a picture themselves")
        if len(model_shape) == 3 and len(dataset.shape) == 3 and model_shape[1] == model_shape[2] and \
                tuple(dataset.shape[1:]) != model_shape[1:] and Path(str(updates.get("name", ""))).is_dir():
            hints.append(f"read the folder at the model's size with --image-size {model_shape[1]}")
        hint = f" ({'; '.join(hints)})" if hints else ""
        raise VaekitError(f"the data has items of shape {dataset.shape}, but the model at {run} expects {model_shape}"
                          f"{hint}: give data of that shape, or leave out the data flags for the run's own")
    return dataset


def _read_for_run(run_cfg: RunConfig, updates: dict, table, new_file: bool) -> Dataset:
    """The data `updates` (data flags) make of the run's: a table with the run's columns and statistics; a new table
    file (new_file) whole and in its own order (any --split), so that the codes line up with its rows."""
    data = config_module.validate(replace(run_cfg, data=replace(run_cfg.data, **updates))).data  # as train checks
    if table is not None and new_file and data.impute == "drop" and "impute" not in updates:
        data = replace(data, impute="none")  # the run's drop would leave codes that no longer line up with the rows
    return load_dataset(data, run_table(run_cfg, data), all_rows=table is not None and new_file,
                        label_given="label_column" in updates)


def relabel(dataset: Dataset, names: tuple[str, ...]) -> Dataset:
    """A data set whose classes are named in its own files, its labels renumbered to a model's classes (`names`, in
    the model's order): a new file may hold any of the model's classes, and no other."""
    unknown = [name for name in dataset.label_names if name not in names]
    if unknown:
        shown = ", ".join(repr(name) for name in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise VaekitError(f"{dataset.name} has classes the model was not trained on ({shown}): the model knows "
                          f"{', '.join(names[:10])}{' ...' if len(names) > 10 else ''}; drop those items")
    index = torch.tensor([names.index(name) for name in dataset.label_names], dtype=torch.int64)
    return replace(dataset, label_names=tuple(names), y_train=None if dataset.y_train is None else
                   index[dataset.y_train], y_test=None if dataset.y_test is None else index[dataset.y_test])


MAX_VALUES = 2**28  # decoded values one command holds at once: 1 GiB of float32


def decoded_count(model: Model, n: int, what: str, per: int = 1) -> int:
    """n, checked: at least 1, and n * per decoded items of the model fit in MAX_VALUES (a command asking for more
    would be killed for memory, or fail inside torch)."""
    if n < 1:
        raise VaekitError(f"{what} must be at least 1, got {n}")
    size = math.prod(model.data_shape) * per
    most = max(1, MAX_VALUES // size)
    if n > most:
        raise VaekitError(f"{what} {n:,} asks for {n * size:,} decoded values, more than fit in 1 GiB: ask for at "
                          f"most {most:,} per command")
    return n


def pick(x: torch.Tensor, index: int, what: str = "item") -> torch.Tensor:
    if not -len(x) <= index < len(x):
        raise VaekitError(f"{what} index {index} is out of range: the split has {len(x)} items (0..{len(x) - 1}, or "
                          f"-{len(x)}..-1 counting from the end)")
    return x[index]


def load_array(path: str) -> np.ndarray:
    p = Path(path)
    if p.is_dir():
        raise VaekitError(f"{p} is a folder: give the .npy (or .npz) file of codes in it")
    if not p.is_file():
        raise VaekitError(f"file not found: {p}")
    if p.suffix == ".npz":
        arrays = safe.load_npz(p)
        if not arrays:
            raise VaekitError(f"{p} holds no arrays: save the codes with numpy.save (or numpy.savez)")
        return next(iter(arrays.values()))
    return safe.load_npy(p)


def save_output(model: Model, values: torch.Tensor, path: str, ncol: int | None = None,
                y: torch.Tensor | int | None = None, described: dict[str, list] | None = None) -> Path:
    """Decoded items to --out: rows in the user's units for a table model (.csv or .npy; `described`, what each row
    is, as first CSV columns; `y`, the class (one, or one per row) a label-conditioned model decoded them for, as the
    next), else pictures or arrays."""
    table = model_table(model.config)
    if table is not None:
        names, labels = model.config.label_names, None
        if y is not None:
            classes = torch.as_tensor(y).reshape(-1).tolist()
            classes = classes * len(values) if len(classes) == 1 else classes  # one class for every row
            labels = [names[i] if i < len(names) else str(i) for i in classes]
        column = model.run_config.data.label_column if model.run_config is not None else None
        return write_rows(table, values, path, labels, column if column not in table.names else None, described)
    return viz.save_images(values, path, ncol)


def add_out(parser: argparse.ArgumentParser, default: str | None = None,
            help: str = ".png picture or .npy arrays (a table model: .csv rows in your units)") -> None:
    parser.add_argument("--out", default=default, required=default is None, help=help)
    parser.set_defaults(out_is_file=True)  # checked before any work (vaekit.cli.main): a folder or a run's own file


def seed(text: str) -> int:
    """--seed: a whole number torch's generators take, -2^63 to 2^64 - 1 (beyond them, torch raised a traceback)."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not -2 ** 63 <= value < 2 ** 64:
        raise argparse.ArgumentTypeError(f"must be a whole number from -2^63 to 2^64 - 1, got {text!r}")
    return value


def add_seed(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    parser.add_argument("--seed", type=seed, default=0, help=help or "seed of the random draws (default 0)")


def add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int,
                        help="CPU threads for torch, numpy, SciPy, scikit-learn and onnxruntime "
                        "(default: one per core)")


def set_threads(threads: int | None) -> None:
    """--threads, checked and applied before any torch work (None: torch's own choice)."""
    if threads is not None:
        if not 1 <= threads <= config_module.MAX_THREADS:
            raise VaekitError(f"--threads must be between 1 and {config_module.MAX_THREADS}, got {threads}")
        from ..threads import use_threads

        use_threads(threads)


def add_split(parser: argparse.ArgumentParser, default: str = "test", validation: bool = False) -> None:
    if validation:
        parser.add_argument("--split", choices=["train", "validation", "test"], default=default,
                            help="which split to take items from: of a run that held out training items "
                            "(--validation, --early-stopping), train is the items it trained on and validation the "
                            "held-out ones")
    else:
        parser.add_argument("--split", choices=["train", "test"], default=default,
                            help="which split to take items from")


def add_label(parser: argparse.ArgumentParser, help: str = "class label to decode with (a label-conditioned "
              "model; default: each item's own)") -> None:
    parser.add_argument("--label", help=help)


def split_labels(model: Model, dataset: Dataset, split: str) -> torch.Tensor | None:
    """The split's labels where the model is label-conditioned, else None."""
    if not model.num_labels:
        return None
    y = dataset.split(split).y
    if y is None:
        raise no_labels(model, dataset)
    return y


def no_labels(model: Model, dataset: Dataset) -> VaekitError:
    """The error for data without labels given to a label-conditioned model: a table's names the column it needs."""
    column = model.run_config.data.label_column if model.run_config is not None else None
    if dataset.table is not None and column is not None:
        return VaekitError(f"the model is conditioned on labels, but {dataset.name} gives no labels in a column "
                           f"{column!r} (the column is missing, or a cell of it blank): give every row's class in "
                           f"{column!r}, or name the file's column of classes with --label-column")
    return VaekitError(f"the model is conditioned on labels, but {dataset.name} has none: give labelled data")


def parse_label(model: Model, text: str | None, label_names: tuple[str, ...] | None = None) -> int | None:
    """--label as a class index or name, checked against the model; None when not given."""
    if text is None:
        return None
    if not model.num_labels:
        raise VaekitError("--label needs a label-conditioned model (train with --condition label)")
    label_names = label_names or tuple(model.config.label_names) or None  # the names the run was trained with
    if label_names and text in label_names:
        index = label_names.index(text)
    else:
        try:
            index = int(text) if text.strip().isascii() else -1
        except ValueError:
            index = -1
    if not 0 <= index < model.num_labels:
        names = (f" or a class name ({', '.join(f'{i}={name}' for i, name in enumerate(label_names))})"
                 if label_names else "")
        raise VaekitError(f"--label must be a class index 0..{model.num_labels - 1}{names}, got {text!r}")
    warn_untrained_labels(model, [index], chosen=True)
    return index


_UNTRAINED_SAID: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> the classes said of it


def warn_untrained_labels(model: Model, labels: Sequence[int], chosen: bool = False) -> None:
    """A warning where `labels` (those items are encoded or decoded with) hold classes the run had no training items
    of; each class said once per model loaded. `chosen`: the user's --label, which could be another."""
    untrained = set(model.config.untrained_labels) & set(labels)
    said = _UNTRAINED_SAID.setdefault(model, set())
    new = sorted(untrained - said)
    if new:
        many = len(new) > 1
        log.warning("%s had no training items in this run: what the model makes of %s label%s is untrained%s",
                    runs.class_list(new, model.config.label_names), "their" if many else "its", "s" * many,
                    "; choose a class it trained on" if chosen else "")
        said.update(new)
