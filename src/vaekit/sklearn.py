"""scikit-learn estimators: a VAE or an autoencoder as a dimensionality reducer (fit / transform / inverse_transform),
usable in a Pipeline and GridSearchCV, on numpy arrays (numeric columns) or pandas DataFrames (mixed column types).

Fitting leaves no global state changed: torch's random generator is restored and its thread count is not touched.
"""
from __future__ import annotations

import contextlib
import logging
import math
import numbers
import re
import warnings
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from . import latent, metrics
from .config import DataConfig, ModelConfig, RunConfig, TrainConfig, validate
from .data import Dataset
from .data.tables import RawTable, TableSchema, fit_schema, frame_table, parse_column_types
from .errors import VaekitError
from .runs import train

SCORE_SAMPLES = 16  # posterior draws per row in score(): the ELBO estimate, seeded, so score is repeatable
AUTO_STEPS, AUTO_MAX_EPOCHS = 3000, 2000  # epochs=None: about this many steps, in at most this many epochs


@contextlib.contextmanager
def _quiet(quiet: bool):
    """verbose=False: training's per-epoch log lines held back (an application logging at INFO would get one per
    epoch of every fit); warnings still pass."""
    logger = logging.getLogger("vaekit")
    level = logger.level
    if quiet and logger.getEffectiveLevel() < logging.WARNING:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _is_frame(X: Any) -> bool:
    return hasattr(X, "columns") and hasattr(X, "iloc")


# The command line's words in vaekit's messages, as the estimator's parameters (an estimator drops no rows).
_FLAGS_AS_PARAMETERS = [
    (re.compile(r" or --impute drop \([^)]*\)"), ""),
    (re.compile(r"pass --impute drop to drop those rows"), "drop those rows before fitting"),
    (re.compile(r"a value the model has not seen \(([^)]*)\): fix it, or train on data that has it"),
     r"a value not seen in fit (\1): fix it, fit on data that has it, or set handle_unknown='most_frequent'"),
    (re.compile(r"--impute (\w+)"), r"impute='\1'"),
    (re.compile(r"--column-types ([^\s)]+)"), r"column_types='\1'"),
    (re.compile(r"--device (\w+)"), r"device='\1'"),
    (re.compile(r"(use|or) device='cpu' or auto"), r"\1 device='cpu'"),
    (re.compile(r"keep --standardize on"), "keep standardize=True"),
    (re.compile(r"--no-standardize"), "standardize=False"),
    (re.compile(r"train longer, lower --beta, or use --kl-warmup-epochs"), "train longer (epochs) or lower beta"),
    (re.compile(r"a lower --lr or --beta"), "a lower lr or beta"),
    (re.compile(r"--(epochs|beta|lr|batch-size|latent-dim) (\S+)"),
     lambda m: f"{m.group(1).replace('-', '_')}={m.group(2)}"),
    (re.compile(r"--(epochs|beta|lr|batch-size|latent-dim)\b"), lambda m: m.group(1).replace("-", "_")),
]


def _in_estimator_terms(message: str) -> str:
    """A vaekit message that names command-line flags, naming the estimator's parameters instead; and a family's
    settings (model.FAMILY.NAME, FAMILY a registered family, not a column or a file named so) as family_options."""
    for pattern, replacement in _FLAGS_AS_PARAMETERS:
        message = pattern.sub(replacement, message)
    from .models import MODEL_FAMILIES

    families = "|".join(map(re.escape, sorted(MODEL_FAMILIES)))
    message = re.sub(rf"unknown config key model\.({families})\.(\w+)", r"family_options of \1: no setting '\2'",
                     message)
    setting = rf"(?<![\w.])(?:config )?model\.(?:{families})\.(\w+)"
    message = re.sub(setting + r"=(\S+):", r"family_options {'\1': \2}:", message)
    message = re.sub(setting, r"family_options['\1']", message)
    # a family setting's flag (--hvae-top-prior): "add FLAG VALUE", "drop FLAG", and elsewhere its family_options key
    flag = rf"--(?:{families})-([a-z][\w-]*)"
    message = re.sub(rf"add {flag} (\w+)", lambda m: f"set family_options {{'{m[1].replace('-', '_')}': '{m[2]}'}}",
                     message)
    message = re.sub(rf"drop {flag}", lambda m: f"leave '{m[1].replace('-', '_')}' out of family_options", message)
    return re.sub(flag, lambda m: f"family_options['{m[1].replace('-', '_')}']", message)


def _as_fitted(values: Any, dtype: Any) -> Any:
    """Decoded values (a pandas Series) in the column's fitted dtype: an integer column's rounded to integers, a bool
    column's as bool, a categorical's as that categorical. Where they cannot be (NaN in a column the model left out,
    and an integer dtype that holds no missing value), the decoded values as they are."""
    try:
        if dtype.kind in "iu":  # numpy's and pandas' (Int64, UInt8, ...) integer dtypes: rounded, and within the
            # type's range (a decoded -15 of a uint8 column is 0, where a cast would wrap it to 241 or refuse it)
            limits = np.iinfo(getattr(dtype, "numpy_dtype", dtype))
            # the extremes as floats that the cast keeps (2^63 - 1 as a float is 2^63, which overflows int64)
            low, high = (np.nextafter(float(v), 0.0) if abs(int(float(v))) > abs(v) else float(v)
                         for v in (limits.min, limits.max))
            values = values.round().clip(low, high)
        return values.astype(dtype)
    except (TypeError, ValueError):
        return values


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


class _Autoencoder(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """What both estimators share; `family` says which model they fit."""

    family: ClassVar[str]
    handle_unknown = "error"  # (what an estimator pickled before this parameter did)

    def __init__(self, latent_dim: int = 2, hidden_dims: tuple[int, ...] = (128, 128), epochs: int | None = None,
                 batch_size: int = 128, lr: float = 1e-3, column_types: str | None = None, standardize: bool = True,
                 impute: str = "none", random_state: Any = None, verbose: bool = False, device: str = "cpu",
                 handle_unknown: str = "error") -> None:
        self.latent_dim = latent_dim
        self.hidden_dims = hidden_dims
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.column_types = column_types
        self.standardize = standardize
        self.impute = impute
        self.random_state = random_state
        self.verbose = verbose
        self.device = device
        self.handle_unknown = handle_unknown

    def _check_parameters(self) -> None:
        """The parameters' types and ranges, named as scikit-learn names them (a float latent_dim from a grid would
        fail inside torch; epochs=0 would return an untrained model)."""
        name = type(self).__name__
        hidden = self.hidden_dims
        checks = [
            ("latent_dim", _is_int(self.latent_dim) and self.latent_dim >= 1, "an int >= 1"),
            ("hidden_dims", isinstance(hidden, (tuple, list)) and all(_is_int(w) and w >= 1 for w in hidden),
             "a tuple of ints >= 1, such as (128, 128) (one hidden layer: (128,))"),
            ("epochs", self.epochs is None or (_is_int(self.epochs) and self.epochs >= 1), "None or an int >= 1"),
            ("batch_size", _is_int(self.batch_size) and self.batch_size >= 1, "an int >= 1"),
            ("lr", _is_real(self.lr) and self.lr > 0, "a number > 0"),
            ("beta", _is_real(getattr(self, "beta", 1.0)) and getattr(self, "beta", 1.0) >= 0, "a number >= 0"),
            ("standardize", isinstance(self.standardize, (bool, np.bool_)), "True or False"),
            ("impute", self.impute in ("none", "mean"), "'none' (missing values are an error) or 'mean' (an "
             "estimator drops no rows: transform gives a code for each; drop them before fitting)"),
            ("device", self.device in ("auto", "cpu", "cuda", "mps"), "'cpu', 'cuda', 'mps' or 'auto'"),
            ("handle_unknown", self.handle_unknown in ("error", "most_frequent"), "'error' (a category not seen in "
             "fit is an error) or 'most_frequent' (it takes its column's most frequent one, with a warning)"),
            *self._family_checks(),
        ]
        for parameter, ok, expected in checks:
            if not ok:
                raise ValueError(f"The {parameter!r} parameter of {name} must be {expected}. "
                                 f"Got {getattr(self, parameter)!r} instead.")

    def _family_checks(self) -> list[tuple[str, bool, str]]:
        return []

    def _options(self) -> dict[str, Any]:
        return {}

    def _epochs(self, rows: int) -> int:
        """epochs=None: enough passes for about AUTO_STEPS steps; a small table needs many passes to be learnt."""
        if self.epochs is not None:
            return self.epochs
        steps_per_epoch = max(1, math.ceil(rows / self.batch_size))
        return min(AUTO_MAX_EPOCHS, math.ceil(AUTO_STEPS / steps_per_epoch))

    def _config(self, schema: TableSchema, seed: int, rows: int) -> RunConfig:
        return validate(RunConfig(
            data=DataConfig(name="X", standardize=self.standardize, impute=self.impute),
            model=ModelConfig(family=self.family, latent_dim=self.latent_dim, network="mlp",
                              hidden_dims=tuple(self.hidden_dims), beta=getattr(self, "beta", 1.0),
                              data_shape=(schema.width,), options=self._options()),
            train=TrainConfig(epochs=self._epochs(rows), batch_size=self.batch_size, lr=self.lr, seed=seed,
                              device=self.device, progress=bool(self.verbose)),
        ))

    # ---- input -------------------------------------------------------------------------------------------------
    def _table(self, X: Any, reset: bool) -> RawTable:
        """X as a table: a DataFrame keeps its column types; an array is numbers, missing values as NaN. After fit,
        columns are matched by position, as scikit-learn does (it checks the names of a DataFrame's columns)."""
        if _is_frame(X):
            validate_data(self, X, reset=reset, skip_check_array=True)
            if X.shape[0] < 1:
                raise ValueError(f"Found array with 0 sample(s) (shape={X.shape}) while a minimum of 1 is required.")
            table = frame_table(X, source="X")
        else:
            X = validate_data(self, X, reset=reset, dtype=np.float64,
                              ensure_all_finite="allow-nan" if self.impute != "none" else True)
            table = frame_table(X, names=[f"x{i}" for i in range(X.shape[1])], source="X")
        if reset:
            self._input_names = table.names
        return replace(table, names=self._input_names)

    def _encode(self, X: Any) -> torch.Tensor:
        check_is_fitted(self)
        self._check_parameters()  # (handle_unknown may have been set since fit)
        unknown: dict[str, int] | None = {} if self.handle_unknown == "most_frequent" else None
        try:
            x = self.schema_.encode(self._table(X, reset=False), self.impute, unknown)
        except VaekitError as exc:
            raise ValueError(_in_estimator_terms(str(exc))) from None
        if unknown:
            listed = ", ".join(f"{name!r} ({count} row{'s' * (count != 1)})" for name, count in unknown.items())
            warnings.warn(f"Found categories not seen in fit in column(s) {listed}: each was encoded as its column's "
                          "most frequent category (handle_unknown='most_frequent')", UserWarning, stacklevel=3)
        return x

    # ---- the estimator API ---------------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None) -> "_Autoencoder":
        """Fit the model to the rows of X (y is ignored: the model is unsupervised)."""
        self._check_parameters()
        seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        try:
            table = self._table(X, reset=True)
            types = parse_column_types(self.column_types)
            if not _is_frame(X):  # an array's columns are numbers; its names are x0, x1, ...
                types = {**{name: "numeric" for name in table.names}, **types}
            schema = fit_schema(table, range(table.n_rows), types, self.standardize)
            x = schema.encode(table, self.impute)
            cfg = self._config(schema, seed, table.n_rows)
            dataset = Dataset("X", x, x[:0], table=schema)
            # train seeds torch's global generators (every GPU's too); give them back
            devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
            with torch.random.fork_rng(devices=devices), _quiet(not self.verbose):
                result = train(cfg, dataset=dataset, log_warnings=False)
        except VaekitError as exc:
            raise ValueError(_in_estimator_terms(str(exc))) from None
        for message in (*schema.notes, *result.warnings):
            warnings.warn(_in_estimator_terms(message), UserWarning, stacklevel=2)
        self.model_ = result.model.cpu().eval()
        self.schema_ = schema
        self.loss_curve_ = [row.train["loss"] for row in result.history]
        self._n_features_out = self.latent_dim
        self._frame_columns = list(X.columns) if _is_frame(X) else None  # as given (names need not be text)
        self._frame_dtypes = list(X.dtypes) if _is_frame(X) else None  # decoded rows come back in these
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Each row's code: the posterior mean for a VAE, (n_samples, latent_dim)."""
        x = self._encode(X)
        with torch.inference_mode():
            return latent.encode_dataset(self.model_, x).double().numpy()

    def inverse_transform(self, X: Any) -> Any:
        """Codes -> rows in the user's units (the decoder's most likely values); a DataFrame when fitted on one, with
        the codes' index where they are a DataFrame (set_output(transform="pandas")), so that it lines up with X."""
        check_is_fitted(self)
        codes = np.asarray(X, dtype=np.float64)
        if codes.ndim != 2 or codes.shape[1] != self.latent_dim:
            raise ValueError(f"X has shape {codes.shape}: expected codes of shape (n_samples, {self.latent_dim})")
        with torch.inference_mode():  # (a copy: a read-only array, as pandas gives, cannot back a tensor)
            means = latent.decode_mean(self.model_, torch.tensor(codes, dtype=torch.float32))
        return self._rows(means, index=X.index if _is_frame(X) else None)

    def sample(self, n_samples: int = 1, random_state: Any = None) -> Any:
        """n_samples new rows in the user's units: z from the prior, then x from p(x|z) (a numeric column's Gaussian,
        a category drawn by its probability), so the rows vary as the data does."""
        check_is_fitted(self)
        seed = int(check_random_state(random_state).randint(0, 2**31 - 1))
        generator = torch.Generator().manual_seed(seed)
        with torch.inference_mode(), torch.random.fork_rng(devices=[]):
            z = self.model_.sample_prior(n_samples, generator=generator)
            torch.manual_seed(seed)  # p(x|z)'s own draws, restored on exit
            draws = self.model_.decode(z).sample()
        return self._rows(draws)

    def _rows(self, means: torch.Tensor, index: Any = None) -> Any:
        """Decoded rows with every column fitted on, in its place: a column the model leaves out (one declared
        'ignore', or one with no values) is NaN, so the rows line up with X and with a Pipeline's earlier steps."""
        decoded = self.schema_.decode(means, whole=False)  # (a column's fitted dtype decides rounding here)
        rows = len(means)
        if self._frame_columns is None:
            return np.column_stack([np.asarray(decoded[name], dtype=np.float64) if name in decoded
                                    else np.full(rows, np.nan) for name in self._input_names])
        import pandas

        columns = {}
        # (an estimator pickled before the types were kept: the decoded values as they come)
        dtypes = getattr(self, "_frame_dtypes", None) or [None] * len(self._frame_columns)
        for column, dtype in zip(self._frame_columns, dtypes, strict=True):
            values = pandas.Series(decoded[str(column)] if str(column) in decoded else np.full(rows, np.nan),
                                   index=index)
            columns[column] = values if dtype is None else _as_fitted(values, dtype)
        return pandas.DataFrame(columns, index=index)

    def _log_jacobian(self) -> float:
        """log |d x_model / d x| per row: the standardisation's, so densities are of the data in the user's units."""
        return -self.schema_.log_scale

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = self.impute != "none"
        tags.non_deterministic = self.random_state is None
        return tags


def _bound_families() -> list[str]:
    """The registered families with a likelihood bound (an ELBO for score), installed plugins' included."""
    from .models import MODEL_FAMILIES, load_plugins

    load_plugins()
    return sorted(name for name, cls in MODEL_FAMILIES.items() if cls.has_bound)


class VAETransformer(_Autoencoder):
    """A variational autoencoder as a transformer: transform gives each row's code (the posterior mean), score the
    mean ELBO per row.

    Parameters: latent_dim (the size of the code), hidden_dims (the MLP widths), epochs (None: enough passes for about
    3000 steps, at most 2000 epochs), batch_size, lr, beta (the KL weight), column_types
    ("age=numeric,sex=categorical"; DataFrames are typed by vaekit's rules, arrays are numeric),
    standardize (numeric columns, with the training statistics), impute ("none": missing values are an error;
    "mean"), random_state, verbose (a progress bar), device, family (any family with a likelihood bound: "vae",
    "iwae", "vamp", "hvae", "tcvae" or a plugin's), family_options (that family's settings as `vaekit train --set
    model.FAMILY.NAME=VALUE` takes them, e.g. {"k": 10} for iwae, {"components": 50} for vamp; None: its defaults),
    handle_unknown (a value of a categorical or binary column that fit did not see: "error", the default, or
    "most_frequent", which encodes it as its column's most frequent training value and warns, so that transform and
    score read its row as a row holding that value).
    """

    family, family_options = "vae", None  # (what an estimator pickled before these parameters fitted)

    def __init__(self, latent_dim: int = 2, hidden_dims: tuple[int, ...] = (128, 128), epochs: int | None = None,
                 batch_size: int = 128, lr: float = 1e-3, beta: float = 1.0, column_types: str | None = None,
                 standardize: bool = True, impute: str = "none", random_state: Any = None, verbose: bool = False,
                 device: str = "cpu", family: str = "vae", family_options: dict[str, Any] | None = None,
                 handle_unknown: str = "error") -> None:
        super().__init__(latent_dim, hidden_dims, epochs, batch_size, lr, column_types, standardize, impute,
                         random_state, verbose, device, handle_unknown)
        self.beta = beta
        self.family = family
        self.family_options = family_options

    def _family_checks(self) -> list[tuple[str, bool, str]]:
        families = _bound_families()
        return [("family", isinstance(self.family, str) and self.family in families,
                 "a family with a likelihood bound, one of " + ", ".join(map(repr, families))
                 + " (an autoencoder: AETransformer; a vqvae has no bound)"),
                ("family_options", self.family_options is None or isinstance(self.family_options, dict),
                 "None or a dict of the family's settings, such as {'k': 10} for iwae")]

    def _options(self) -> dict[str, Any]:
        """family_options as the family's settings: an unknown name or a bad value is named by the config's checks;
        a family with no settings takes none."""
        from .config import COMPONENT_SETTINGS

        options = dict(self.family_options or {})
        if not options:
            return {}
        if self.family not in COMPONENT_SETTINGS:
            raise VaekitError(f"family {self.family!r} has no settings: leave family_options None, got {options!r}")
        return {self.family: options}

    def score(self, X: Any, y: Any = None) -> float:
        """The mean ELBO per row (nats, higher is better) of X in its own units, from seeded posterior draws."""
        x = self._encode(X)
        bounds = metrics.sampled_bounds(self.model_, x, SCORE_SAMPLES, seed=0)
        return float(bounds.elbo.mean()) + self._log_jacobian()


class AETransformer(_Autoencoder):
    """A plain autoencoder as a transformer: transform gives the codes; score the mean log-likelihood per row of the
    reconstruction (an autoencoder has no ELBO). Parameters as VAETransformer's, without beta."""

    family = "ae"

    def score(self, X: Any, y: Any = None) -> float:
        """The mean log-likelihood per row of X under its reconstruction, log p(x | z = code(x)) (nats)."""
        x = self._encode(X)
        return -float(metrics.reconstruction_error(self.model_, x).nll_at_mean.double().mean()) + self._log_jacobian()


__all__ = ["AETransformer", "VAETransformer"]
