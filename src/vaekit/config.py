"""Run configuration: frozen dataclasses whose fields are declared once, with their help, choices and checks.

Defaults, a YAML file, "a.b=value" overrides, CLI flags, validation and --help all come from the declarations.
A model family or likelihood declares its own settings (a frozen dataclass registered under its name); they
live in the model section under that name: `model.iwae.k`, YAML `model: {iwae: {k: 5}}`, flag `--iwae-k`.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import math
import typing
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

import yaml

from .errors import VaekitError

log = logging.getLogger(__name__)

MAX_WIDTH = 2**20  # a layer wider than this (or a code longer) would not fit in memory beside its neighbours
MAX_CHANNELS = 2**14
MAX_THREADS = 1024  # more CPU threads than this, OpenMP fails (20,000) or the process crashes (100,000)
Check = tuple[Callable[[Any], bool], str]  # (predicate on a set value, what a valid value is)


def setting(default: Any = MISSING, help: str = "", *, choices: tuple | Callable[[], tuple] | None = None,
            check: Check | None = None, flag: str | None = None, cli: bool = True, from_data: bool = False,
            needs: tuple[str, Any] | None = None, default_factory: Any = MISSING) -> Any:
    """A config field with everything the CLI and the validator need to know about it, declared in one place.

    choices: the allowed values (or a function returning them, for registries); check: (predicate, requirement)
    for a set value; flag: the CLI flag when not --field-name; cli=False: no flag (set by recipes, --config, --set or
    vaekit); from_data: filled in from the training data by vaekit (implies cli=False), so --set refuses it; needs:
    (other setting of the same section, value) without which this one does nothing, so that a value given for it
    then is refused (the validator: a value other than the default; the CLI: its flag given at all). The validator
    also reads stored runs: declare it only where such a value was refused from the start, or old runs stop loading.
    """
    metadata = {"help": help, "choices": choices, "check": check, "flag": flag, "cli": cli and not from_data,
                "from_data": from_data, "needs": needs}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def positive(v: Any) -> bool:
    return v > 0 and math.isfinite(v)


def non_negative(v: Any) -> bool:
    return v >= 0 and math.isfinite(v)


def _column_types(text: str) -> bool:
    from .data.tables import parse_column_types  # late import: the rule lives with the tables

    parse_column_types(text)
    return True


@dataclass(frozen=True)
class DataConfig:
    name: str = setting("mnist-10k", "data set name (mnist-10k, digits, mnist, fashion-mnist, shapes, ...) or a path "
                        "to a .npy/.npz file, a table (.csv, .tsv, .parquet) or an image folder", flag="--data")
    data_dir: str | None = setting(None, "folder searched first for data set files")
    binarize: str = setting("none", "binarise [0, 1] data: dynamic draws fresh bits every epoch, static once",
                            choices=("none", "dynamic", "static"))
    image_size: int | None = setting(None, "image size for image folders and generated data",
                                     check=(lambda v: v >= 4, "at least 4"))
    label_column: str | None = setting(None, "tables: the label column (its name, or its 0-based index without a "
                                       "header)")
    header: str = setting("auto", "tables: whether a CSV's first row names its columns (auto: when it holds text "
                          "names, distinct whole numbers far outside their columns' values, or 0, 1, 2, ...)",
                          choices=("auto", "yes", "no"))
    standardize: bool = setting(True, "tables: leave numeric columns as they are (default: standardised with "
                                "training statistics, decoded back to your units)", flag="--no-standardize")
    column_types: str | None = setting(None, "tables: override inferred column types, e.g. "
                                       "age=numeric,sex=categorical,id=ignore (types: numeric, binary, categorical, "
                                       "ignore)", check=(_column_types, "NAME=TYPE pairs, comma-separated"))
    impute: str = setting("none", "tables: missing values are an error (none), take the training mean or most "
                          "frequent value (mean), or drop their rows (drop)", choices=("none", "mean", "drop"))
    test_fraction: float = setting(0.1, "share of user data held out as the test split (data without its own split)",
                                   check=(lambda v: 0 < v < 1, "between 0 and 1"))
    limit: int | None = setting(None, "use only the first N training items", check=(lambda v: v >= 1, "at least 1"))
    validation: float | None = setting(
        None, "training items held out to judge each epoch (the val_ measures; early stopping's choice of epoch) "
        "instead of the test split: a share below 1 or a count; default none, and a tenth with --early-stopping "
        "(0: none even then)", check=(lambda v: v >= 0 and math.isfinite(v) and (v < 1 or float(v).is_integer()),
                                      "a share between 0 and 1, or a whole number of items"))


def _families() -> tuple[str, ...]:
    from .models import MODEL_FAMILIES, load_plugins  # late import: the registry lives with the models

    load_plugins()
    return tuple(sorted(MODEL_FAMILIES))


def _likelihoods() -> tuple[str, ...]:
    from .distributions import LIKELIHOODS

    return ("auto", *sorted(LIKELIHOODS))


def _activations() -> tuple[str, ...]:
    from .networks import ACTIVATIONS

    return tuple(ACTIVATIONS)


# name -> the settings dataclass of a model family or likelihood; filled by their registries.
COMPONENT_SETTINGS: dict[str, type] = {}
COMPONENT_KINDS: dict[str, str] = {}  # name -> "family" or "likelihood": the two share model.<name> and --<name>-*


def check_unclaimed(registry: dict[str, type], name: str, cls: type, kind: str) -> None:
    """That `name` is free for `cls` as a family or likelihood: held by another class (a built-in one, or another
    plugin's), it is refused, as every run of that name would silently build the newcomer. The same class registered
    again (its module imported twice) is no clash."""
    held = registry.get(name)
    if held is not None and (held.__module__, held.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"{name!r} already names the {kind} {held.__module__}.{held.__qualname__}, so "
                         f"{cls.__module__}.{cls.__qualname__} would replace it for every run of that name: register "
                         f"it under another name")


def register_settings(name: str, settings: type | None, kind: str = "family") -> None:
    """Declare the settings of the family or likelihood `name` (kind), kept as model.<name>.<setting>: a name the
    other kind holds, or a model setting's, is refused, as their settings would be mixed up."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a {kind} needs a non-empty name, got {name!r}")
    if COMPONENT_KINDS.get(name, kind) != kind:
        raise ValueError(f"{name!r} already names a {COMPONENT_KINDS[name]}, and a {kind} of the same name would share "
                         f"its settings (model.{name}): register the {kind} under another name")
    if name in {f.name for f in fields(ModelConfig)}:
        raise ValueError(f"{name!r} is a model setting (model.{name}): register the {kind} under another name")
    COMPONENT_KINDS[name] = kind
    if settings is not None:
        if not dataclasses.is_dataclass(settings):
            raise TypeError(f"the settings of {name!r} must be a frozen dataclass, got {settings!r}")
        COMPONENT_SETTINGS[name] = settings


@dataclass(frozen=True)
class ModelConfig:
    family: str = setting("vae", "model family", choices=_families, flag="--model")
    latent_dim: int = setting(16, "size of the latent code", check=(lambda v: 1 <= v <= MAX_WIDTH,
                                                                     f"between 1 and {MAX_WIDTH:,}"))
    network: str = setting("auto", "encoder/decoder bodies: auto (conv for images of 8x8 and up, mlp otherwise)",
                           choices=("auto", "mlp", "conv"))
    hidden_dims: tuple[int, ...] = setting((512, 256), "MLP widths, e.g. 512,256 (conv: the last is the dense width)",
                                           check=(lambda v: all(1 <= h <= MAX_WIDTH for h in v),
                                                  f"widths from 1 to {MAX_WIDTH:,}, e.g. 512,256 (none: a linear "
                                                  "MLP)"))
    activation: str = setting("relu", "the non-linearity after each hidden layer of the encoder and decoder bodies",
                              choices=_activations)
    conv_channels: tuple[int, ...] = setting((32, 64), "channels of the stride-2 convolutions, e.g. 32,64",
                                             check=(lambda v: len(v) >= 1 and all(1 <= c <= MAX_CHANNELS for c in v),
                                                    f"one or more channel counts from 1 to {MAX_CHANNELS:,}, e.g. "
                                                    "32,64"))
    likelihood: str = setting("auto", "p(x|z): auto picks bernoulli for [0, 1] data, gaussian otherwise",
                              choices=_likelihoods)
    beta: float = setting(1.0, "weight of the regularizer (beta-VAE when != 1)", check=(non_negative, ">= 0"))
    free_bits: float = setting(0.0, "free bits (Kingma et al. 2016): in training, each regularizer term (each "
                               "layer's KL) counts as at least this many nats per latent dimension of its layer, with "
                               "no gradient below that", check=(non_negative, ">= 0"))
    condition: str = setting("none", "condition the encoder and decoder on the class label (every family: ae, vae, "
                             "iwae, tcvae, hvae; vamp, vqvae and an hvae with a vamp top prior, whose prior takes it "
                             "too)",
                             choices=("none", "label"))
    num_labels: int = setting(0, check=(lambda v: v >= 0, ">= 0"), from_data=True)  # classes of a label-conditioned
    # model; filled in from the data
    label_names: tuple[str, ...] = setting((), check=(lambda v: all(isinstance(n, str) for n in v), "class names"),
                                           from_data=True)  # a conditioned model's classes by name, in class order,
    # where the data names them (a table's label column of text, an image folder's subfolders): new files map onto them
    untrained_labels: tuple[int, ...] = setting(
        (), check=(lambda v: all(c >= 0 for c in v) and len(set(v)) == len(v), "distinct class indices >= 0"),
        from_data=True)  # a conditioned model's classes that had no training items (what it makes of their labels
    # is untrained): the commands that decode or encode with one warn; left out of config.json where there are none
    data_shape: tuple[int, ...] = setting((), check=(lambda v: all(0 < d < 2**31 for d in v), "positive sizes"),
                                          from_data=True)  # filled in from the data set
    # Settings of the family and the likelihood in use, by component name (see COMPONENT_SETTINGS).
    options: dict[str, Any] = setting(default_factory=dict, cli=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", {name: _settings(name, values) for name, values in self.options.items()})

    def settings(self, name: str) -> Any:
        """The settings of component `name` (a family or likelihood), defaults filled in; None if it has none."""
        if name not in COMPONENT_SETTINGS:
            return None
        return self.options.get(name) or COMPONENT_SETTINGS[name]()

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "options"}
        data["data_shape"], data["label_names"] = list(self.data_shape), list(self.label_names)
        data["untrained_labels"] = list(self.untrained_labels)
        if not self.untrained_labels:  # (left out where none: a vaekit from before it refuses keys it does not know)
            del data["untrained_labels"]
        data["hidden_dims"], data["conv_channels"] = list(self.hidden_dims), list(self.conv_channels)
        data.update({name: dataclasses.asdict(values) for name, values in sorted(self.options.items())})
        return data


def _settings(name: str, values: Any) -> Any:
    if name not in COMPONENT_SETTINGS:
        known = sorted(COMPONENT_SETTINGS)
        raise VaekitError(f"model.{name}: no family or likelihood {name!r} has settings{_close(name, known)}")
    kind = COMPONENT_SETTINGS[name]
    if isinstance(values, kind):
        return values
    if not isinstance(values, dict):
        raise VaekitError(f"model.{name} must be a mapping of settings, got {values!r}")
    return _build(kind, f"model.{name}", values)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = setting(10, "passes over the training data (with --minutes, the most it may train)",
                          check=(lambda v: v >= 0, ">= 0"))
    minutes: float | None = setting(None, "a time limit for training: after every epoch the run plans as many more "
                                    "of its --epochs as fit, at the mean time of the epochs so far (validation and "
                                    "checkpoints included), and the learning-rate schedule ends on the last one. The "
                                    "number of epochs then depends on the machine's speed",
                                    check=(positive, "> 0 (minutes), e.g. 30"))
    batch_size: int = setting(128, "items per step", check=(lambda v: v >= 1, "at least 1"))
    lr: float = setting(1e-3, "learning rate", check=(positive, "> 0, e.g. 1e-3"))
    optimizer: str = setting("adam", "optimiser", choices=("adam", "adamw"))
    weight_decay: float = setting(0.0, "weight decay", check=(non_negative, ">= 0"))
    schedule: str = setting("constant", "learning-rate schedule after the warm-up: constant; cosine, a cosine decay "
                            "to zero; iwae-steps, the IWAE paper's 8 steps (lr * 10^(-i/7) for 3^i of every 3,280 "
                            "epochs, i = 0..7)", choices=("constant", "cosine", "iwae-steps"))
    warmup_steps: int = setting(0, "steps of linear learning-rate warm-up", check=(lambda v: v >= 0, ">= 0"))
    kl_warmup_epochs: float = setting(0.0, "epochs over which the regularizer's weight ramps from 0 to beta",
                                      check=(non_negative, ">= 0"))
    grad_clip: float | None = setting(None, "clip the gradient norm to this value", check=(positive, "> 0"))
    early_stopping: int | None = setting(None, "stop when the validation loss (a K-sample family's: its training "
                                         "bound) has not improved for this many epochs (no stop while the KL warm-up "
                                         "lasts); the run's model keeps the best epoch's weights",
                                         check=(lambda v: v >= 1, "at least 1 (epochs)"))
    seed: int = setting(0, "seeds weights, shuffling and draws: same seed, same run",
                        check=(lambda v: 0 <= v < 2**63, "between 0 and 2^63 - 1"))
    device: str = setting("auto", "where to train", choices=("auto", "cpu", "cuda", "mps"))
    threads: int | None = setting(None, "CPU threads for torch, numpy, SciPy and scikit-learn (default: one per core)",
                                  check=(lambda v: 1 <= v <= MAX_THREADS, f"between 1 and {MAX_THREADS}"))
    precision: str = setting("fp32", "bf16: matrix products in bfloat16, 1.25-2.1x faster on CPUs with AVX512-BF16 "
                             "or AMX; fp16: in float16 with a gradient scaler, for GPUs (weights, loss and evaluation "
                             "stay float32); auto: bf16 where the CPU or GPU multiplies bfloat16 natively, else fp32",
                             choices=("fp32", "bf16", "fp16", "auto"))
    compile: bool = setting(False, "torch.compile the model for training (a compile of tens of seconds first; see "
                            "the README for when it pays). A CPU needs a C++ compiler for it (a GPU, Triton): "
                            "without one, training warns and runs uncompiled")
    tensorboard: bool = setting(False, "also log to TensorBoard in RUN/tensorboard: every loss term per step, "
                                "validation per epoch, samples and reconstructions (needs vaekit[tensorboard])")
    progress: bool = setting(True, "no progress bar", flag="--no-progress")
    checkpoint_every: int = setting(1, "epochs between resume checkpoints", check=(lambda v: v >= 1, "at least 1"))
    checkpoint_steps: int | None = setting(None, "also checkpoint every N steps inside epochs (a stop signal always "
                                           "checkpoints)", check=(lambda v: v >= 1, "at least 1"))
    nan_skips: int = setting(10, "a step whose loss or gradient is not finite is skipped; after this many in a row, "
                             "training rolls back to the last good checkpoint", check=(lambda v: v >= 1, "at least 1"))
    nan_rollbacks: int = setting(3, "rollbacks before training stops with an error", check=(lambda v: v >= 0, ">= 0"))
    nan_lr_factor: float = setting(0.5, "each rollback multiplies the learning rate by this",
                                   check=(lambda v: 0 < v <= 1, "in (0, 1]"))


EDIT_METHODS = ("mean-diff", "linear", "local")


@dataclass(frozen=True)
class EditsConfig:
    method: str = setting("mean-diff", "the attribute edits' default direction for this run's model (vaekit attribute, "
                          "the explorer): the mean difference of the codes, the normal of a linear classifier, or "
                          "local (each code's nearest training codes with minus without, followed step by step)",
                          choices=EDIT_METHODS, cli=False)


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    edits: EditsConfig = field(default_factory=EditsConfig)

    def to_dict(self) -> dict[str, Any]:
        return {"data": dataclasses.asdict(self.data), "model": self.model.to_dict(),
                "train": dataclasses.asdict(self.train), "edits": dataclasses.asdict(self.edits)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "edits": EditsConfig}


def _close(name: str, options: list[str]) -> str:
    matches = difflib.get_close_matches(name, options, n=3)
    return f" (did you mean {', '.join(matches)}?)" if matches else f" (known: {', '.join(options)})"


def _coerce(path: str, hint: Any, value: Any) -> Any:
    """Turn a YAML/CLI value into the field's declared type, or explain why it cannot be."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    optional = type(None) in args
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and optional):
        if optional:
            return None
        raise VaekitError(f"config {path} cannot be empty")
    base = [a for a in args if a is not type(None)][0] if optional else hint
    given = value
    try:
        if typing.get_origin(base) is tuple and typing.get_args(base)[0] is not int:
            if not isinstance(value, (list, tuple)):  # e.g. a table's columns: entries kept as they are
                raise ValueError(value)
            return tuple(value)
        if typing.get_origin(base) is tuple or origin is tuple:
            if isinstance(value, str):
                text = value.replace(" ", "")
                value = [] if text.lower() in ("none", "null") else [v for v in text.split(",") if v]
            if isinstance(value, (int, float)):
                value = [value]
            return tuple(_integer(v) for v in value)
        if base is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            if not isinstance(value, (bool, int)):
                raise ValueError(value)
            return bool(value)
        if base is int:
            return _integer(value)
        if base is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if base is str:
            if not isinstance(value, (str, int, float)):
                raise ValueError(value)
            return str(value)
    except (TypeError, ValueError, OverflowError):
        pass
    else:
        return value
    shown = given[0] if isinstance(given, list) and len(given) == 1 else given  # a flag's value arrives in a list
    if typing.get_origin(base) is tuple or origin is tuple:
        raise VaekitError(f"{path}: cannot read {shown!r} as whole numbers separated by commas, e.g. 512,256")
    wanted = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}
    raise VaekitError(f"{path}: cannot read {shown!r} as {wanted.get(base, getattr(base, '__name__', base))}")


def _integer(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(value)
    return int(value)


def _build(kind: type, path: str, values: dict[str, Any], base: Any = None) -> Any:
    """A `kind` instance from raw values (unknown keys named with a suggestion), on top of `base` or the defaults."""
    hints = typing.get_type_hints(kind)
    names = [f.name for f in fields(kind)]
    updates = {}
    for key, value in values.items():
        if key not in names:
            raise VaekitError(f"unknown config key {path}.{key}{_close(str(key), names)}")
        updates[key] = _coerce(f"{path}.{key}", hints[key], value)
    return replace(base, **updates) if base is not None else kind(**updates)


def _apply(cfg: RunConfig, section_name: str, values: dict[str, Any]) -> RunConfig:
    if section_name not in SECTIONS:
        raise VaekitError(f"unknown config section {section_name!r}{_close(section_name, list(SECTIONS))}")
    values = dict(values)
    section = getattr(cfg, section_name)
    if section_name == "model":
        options = dict(section.options)
        for key in [k for k in values if k in COMPONENT_SETTINGS]:
            raw = values.pop(key)
            if not isinstance(raw, dict):
                raise VaekitError(f"model.{key} holds the settings of {key}: give a mapping, e.g. model.{key}.NAME=VALUE")
            options[key] = _build(COMPONENT_SETTINGS[key], f"model.{key}", raw, options.get(key))
        section = replace(section, options=options)
        known = [f.name for f in fields(ModelConfig) if f.name != "options"]
        for key in values:
            if key not in known:
                raise VaekitError(f"unknown config key model.{key}{_close(str(key), known + sorted(COMPONENT_SETTINGS))}")
    return replace(cfg, **{section_name: _build(type(section), section_name, values, section)})


def _load_plugins() -> None:
    from .models import load_plugins  # late import: plugins register families and their settings

    load_plugins()


def from_dict(raw: dict[str, Any], base: RunConfig | None = None) -> RunConfig:
    if not isinstance(raw, dict):
        raise VaekitError("a config must be a mapping with sections data/model/train/edits")
    for section_name, values in raw.items():
        if not isinstance(values, dict):
            raise VaekitError(f"config section {section_name!r} must be a mapping, got {values!r}")
    return _layer(base or RunConfig(), [raw])


def _layer(cfg: RunConfig, raws: list[dict[str, Any]]) -> RunConfig:
    """Raw mappings applied in order over cfg (a recipe, a config file, the defaults), validated once as a whole.
    A family chosen here over cfg's leaves out cfg's settings for its old family, which do not apply to the new one;
    settings for the old family given here still reach validation, and are refused there with the fix."""
    _load_plugins()
    families = [raw["model"]["family"] for raw in raws if isinstance(raw.get("model"), dict) and "family" in raw["model"]]
    if families and isinstance(families[-1], str) and families[-1] not in _families():
        # before its settings (model.<family>) are refused as unknown keys: a run of a family registered by a
        # module the user has not imported is the likelier cause
        close = difflib.get_close_matches(families[-1], _families(), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise VaekitError(f"unknown model family {families[-1]!r}: {hint}use one of {', '.join(_families())}, or "
                          "import the module that registers it (vaekit.register_family) first")
    old = cfg.model.family
    if families and families[-1] != old and old in cfg.model.options:
        log.info("model.%s (from the recipe or config) left out: the model is now %s", old, families[-1])
        options = {name: values for name, values in cfg.model.options.items() if name != old}
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, options=options))
    for raw in raws:
        for section_name, values in raw.items():
            cfg = _apply(cfg, section_name, values)
    return validate(cfg)


def load_yaml(path: str | Path, base: RunConfig | None = None) -> RunConfig:
    path = Path(path)
    if path.is_dir():
        raise VaekitError(f"{path} is a folder, not a config file: give --config a YAML file")
    if not path.is_file():
        raise VaekitError(f"config file not found: {path} (check the path given to --config)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise VaekitError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise VaekitError(f"cannot read config file {path} ({exc.__class__.__name__}): give a UTF-8 YAML file") from None
    except RecursionError:
        raise VaekitError(f"config file {path} nests too deeply to read: a run's settings are sections of keys, e.g. "
                          "train: {lr: 3.0e-4}") from None
    return from_dict(raw, base)


def assignment(item: str) -> dict[str, Any]:
    """"model.iwae.k=5" -> {"model": {"iwae": {"k": 5}}}."""
    key, sep, value = item.partition("=")
    parts = [p.strip() for p in key.split(".")]
    if not sep or len(parts) < 2 or not all(parts):
        raise VaekitError(f"override {item!r} must look like section.key=value, e.g. train.lr=3e-4 or model.iwae.k=5")
    try:
        nested: Any = yaml.safe_load(value) if value else value
    except yaml.YAMLError:
        raise VaekitError(f"override {item!r}: cannot read {value!r} as a value (quote text, e.g. key='[a')") from None
    for part in reversed(parts):
        nested = {part: nested}
    return nested


def filled_from_data(item: str) -> str | None:
    """The setting a "section.key=value" assignment gives that vaekit fills in from the training data (the data's
    shape, a tcvae's training-set size, a table's columns, ...), which a value given for it would not change, as
    section.key; also where the value is a mapping that holds it (model.tcvae={dataset_size: 5}). None if none."""
    def leaves(prefix: tuple[str, ...], value: Any) -> list[tuple[str, ...]]:
        if isinstance(value, dict) and value:
            return [path for key, inner in value.items() for path in leaves((*prefix, str(key)), inner)]
        return [prefix]

    try:
        paths = leaves((), assignment(item))
    except VaekitError:
        return None  # (a malformed assignment: override names it)
    for path in paths:
        owner, parts = SECTIONS.get(path[0]), path
        if owner is ModelConfig and len(parts) == 3:  # model.<family or likelihood>.<setting>
            owner, parts = COMPONENT_SETTINGS.get(parts[1]), parts[1:]
        if owner is None or len(parts) != 2:
            continue
        found = owner.__dataclass_fields__.get(parts[1])
        if found is not None and found.metadata.get("from_data"):
            return ".".join(path)
    return None


def override(cfg: RunConfig, assignments: list[str], flags: dict[str, Any] | None = None) -> RunConfig:
    """Apply "section.key=value" strings, e.g. "train.lr=3e-4" or "model.iwae.k=5", after the raw mapping of
    command-line flags if given (from_flags); the result is validated once, as a whole, so that a family chosen by
    one (--set model.family=tcvae) admits its settings given by the other (--tcvae-gamma 0.5)."""
    return _layer(cfg, [flags or {}, *(assignment(item) for item in assignments)])


def unmet_need(instance: Any, name: str, path: str) -> str | None:
    """Where setting `name` of `instance` (the section or component settings at config path `path`) needs another
    setting's value it does not have (setting(needs=...)): what to tell the user, naming both as they are given."""
    declared = {f.name: f for f in fields(instance)}
    needs = declared[name].metadata.get("needs")
    if needs is None or getattr(instance, needs[0]) == needs[1]:
        return None
    other, wanted = declared[needs[0]], needs[1]
    value = _as_typed(wanted)
    given = _given_as(declared[name], path)
    if other.metadata.get("cli", True) and not isinstance(wanted, bool):
        fix = f"{_given_as(other, path)} {value}"
    else:
        fix = f"--set {path}.{other.name}={value}"
    return (f"{given} applies only where {path}.{other.name} is {value}, and it is "
            f"{_as_typed(getattr(instance, other.name))}: add {fix}, or drop {given}")


def _as_typed(value: Any) -> str:
    return "true" if value is True else "false" if value is False else _show(value)


def _given_as(f: Any, path: str) -> str:
    """How a user gives setting f of the section or component settings at `path`: its flag, or --set PATH.NAME."""
    if not f.metadata.get("cli", True):
        return f"--set {path}.{f.name}"
    component = path.split(".", 1)[1] + "-" if "." in path else ""
    return f.metadata.get("flag") or f"--{component}{f.name}".replace("_", "-")


def check_needs(instance: Any, path: str) -> None:
    """Refuse a setting of `instance` (the section or component settings at config path `path`) given a value other
    than its default where the setting it needs (setting(needs=...)) does not have the value it needs: the
    validator's check, also made by Model.__init__ for a family's settings (a model built without validate_model)."""
    for f in fields(instance):
        if f.metadata.get("needs") is not None and f.default is not MISSING and getattr(instance, f.name) != f.default:
            unmet = unmet_need(instance, f.name, path)
            if unmet is not None:
                raise VaekitError(unmet)


def _check_fields(instance: Any, path: str) -> None:
    check_needs(instance, path)
    for f in fields(instance):
        value = getattr(instance, f.name)
        choices, check = f.metadata.get("choices"), f.metadata.get("check")
        choices = choices() if callable(choices) else choices
        if choices is not None and value not in choices:
            raise VaekitError(f"{path}.{f.name}={value!r} is not one of {', '.join(map(str, choices))}")
        if check is not None and value is not None:
            predicate, requirement = check
            try:
                ok = bool(predicate(value))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise VaekitError(f"{path}.{f.name}={value!r}: must be {requirement}")


def validate(cfg: RunConfig) -> RunConfig:
    """Check every value against its declaration, once, at the boundary, with messages that name the fix."""
    for section_name in SECTIONS:
        if section_name != "model":
            _check_fields(getattr(cfg, section_name), section_name)
    validate_model(cfg.model)
    return cfg


def validate_model(model: ModelConfig) -> ModelConfig:
    """validate()'s checks of the model section alone (vaekit.build_model makes them too)."""
    _check_fields(model, "model")
    for name, values in model.options.items():
        _check_fields(values, f"model.{name}")
    from .distributions import LIKELIHOODS

    for name in sorted(model.options):
        if name in (model.family, model.likelihood):
            continue
        if name in LIKELIHOODS and model.likelihood == "auto":
            continue  # checked once the data has decided the likelihood
        kind, flag = ("likelihood", "--likelihood") if name in LIKELIHOODS else ("family", "--model")
        raise VaekitError(f"model.{name} sets {name}'s settings, but the model uses family {model.family} and "
                          f"likelihood {model.likelihood}: drop them, or choose the {name} {kind} ({flag} {name})")
    return model


def without_options(model: ModelConfig, *names: str) -> ModelConfig:
    return replace(model, options={k: v for k, v in model.options.items() if k not in names})


def with_defaults(model: ModelConfig) -> ModelConfig:
    """The model config with the full settings of its family and likelihood written out (for config.json)."""
    options = dict(model.options)
    for name in (model.family, model.likelihood):
        if name in COMPONENT_SETTINGS and name not in options:
            options[name] = COMPONENT_SETTINGS[name]()
    return replace(model, options=options)


# ---- the CLI's view of the declarations --------------------------------------------------------------------

@dataclass(frozen=True)
class Flag:
    """One generated CLI flag: where its value goes (section, key path) and how argparse reads it."""

    flag: str
    dest: str
    section: str
    path: tuple[str, ...]
    kwargs: dict[str, Any]


def _flag_for(f: dataclasses.Field, hint: Any, section: str, path: tuple[str, ...], flag: str) -> Flag:
    meta = f.metadata
    default = f.default if f.default is not MISSING else None
    dest = "__".join(("cfg", section, *path))
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    base = [a for a in args if a is not type(None)][0] if type(None) in args else hint
    help_text = meta.get("help", "")
    if base is bool:
        return Flag(flag, dest, section, path, {"action": "store_const", "const": not default, "help": help_text})
    # A help text that says its default in words keeps it (threads: "one per core", not "none").
    shown = help_text if "(default:" in help_text else f"{help_text} (default: {_show(default)})"
    kwargs: dict[str, Any] = {"help": shown if help_text else None}
    choices = meta.get("choices")
    choices = choices() if callable(choices) else choices
    if choices is not None:
        kwargs["choices"] = list(choices)
    elif base is int and origin is not tuple and typing.get_origin(base) is not tuple:
        kwargs["type"] = int
    elif base is float:
        kwargs["type"] = float
    if typing.get_origin(base) is tuple or origin is tuple:
        kwargs["metavar"] = "N,N,..."
    elif choices is None:
        kwargs["metavar"] = f.name.upper()
    return Flag(flag, dest, section, path, kwargs)


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return "none" if value is None else str(value)


def config_flags(sections: tuple[str, ...] = ("data", "model", "train"), components: bool = True) -> list[Flag]:
    """Every CLI flag the declarations define: the sections' fields, then each component's settings."""
    flags = []
    for section in sections:
        kind = SECTIONS[section]
        hints = typing.get_type_hints(kind)
        for f in fields(kind):
            if f.metadata.get("cli", True):
                name = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
                flags.append(_flag_for(f, hints[f.name], section, (f.name,), name))
    if components and "model" in sections:
        for component, kind in sorted(COMPONENT_SETTINGS.items()):
            hints = typing.get_type_hints(kind)
            for f in fields(kind):
                if not f.metadata.get("cli", True):
                    continue
                name = f.metadata.get("flag") or f"--{component}-{f.name}".replace("_", "-")
                flags.append(_flag_for(f, hints[f.name], "model", (component, f.name), name))
    return flags


def from_flags(values: dict[str, Any], flags: list[Flag]) -> dict[str, Any]:
    """argparse values (dest -> value, None when unset) -> a raw config mapping for from_dict."""
    raw: dict[str, Any] = {}
    for flag in flags:
        value = values.get(flag.dest)
        if value is None:
            continue
        target = raw.setdefault(flag.section, {})
        for part in flag.path[:-1]:
            target = target.setdefault(part, {})
        target[flag.path[-1]] = value
    return raw
