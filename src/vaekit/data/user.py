"""The user's own data: a .npy/.npz array file, a table (CSV, TSV, Parquet), or a folder of images; and attribute
tables.

Conventions, chosen once here:
- Arrays. (N, D) is N vectors, used as they are (integers too: not scaled, which is said). (N, H, W) and (N, H, W, C) or (N, C, H, W) with C in {1, 3}
  are images: integers must lie in 0..255 and are scaled to [0, 1]; floats must already lie in [0, 1].
- .npy: one array, no labels.
- .npz: `x_train` and `x_test` (with optional `y_train`, `y_test`) give the split; otherwise `x` (with
  optional `y`) is split. A file holding one array under any other name is that `x`. Labels are class ids
  0..K-1, or strings, which become classes in sorted order.
- Tables (.csv, .tsv, .tab, .parquet): one item per row, columns of numbers or text, typed and encoded by
  vaekit.data.tables (numeric columns standardised with training statistics unless `standardize` is off).
  `label_column` names the class column (by header name, or by 0-based index without a header).
- A folder: image files (.png, .jpg, .bmp, .gif, .tif, .webp; a GIF's or TIFF's first frame), centre-cropped to a square and resized to image_size x image_size
  (default 64); grayscale if every image is, else RGB. Images in subfolders get the subfolder name as
  class; subfolders named train/ and test/ (in any case) give the split instead, and other split folders (val/)
  beside them are refused. An attribute table in the
  folder (`list_attr_celeba.txt` or `attributes.csv`, see load_attribute_table) fills the attributes.
- Without a split of its own, a fixed-seed random `test_fraction` of the items becomes the test set.
"""
from __future__ import annotations

import contextlib
import csv
import difflib
import logging
import math
import re
import struct
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

from ..config import DataConfig
from ..errors import VaekitError
from ..progress import bar_timing
from . import Dataset, safe, tables
from .builtin import images_to_tensor

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")  # Pillow reads them all
DEFAULT_IMAGE_SIZE = 64
# subfolders that name a split, not a class (in any case): train/ and test/ are read as the split, others refused
SPLIT_FOLDERS = {"train", "test", "val", "valid", "validation", "dev", "eval"}
ATTRIBUTE_FILES = ("list_attr_celeba.txt", "attributes.csv")
SPLIT_SEED = 0
_GRAYSCALE_MODES = {"1", "L", "LA", "I", "I;16", "F"}
# What Pillow raises on a damaged or hostile image: unknown format, cut-off data (OSError, EOFError), a broken chunk
# (SyntaxError, struct.error, zlib.error), a size over its decompression-bomb limit.
IMAGE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error,
                Image.DecompressionBombError)
_LANCZOS = getattr(Image, "Resampling", Image).LANCZOS  # Pillow < 9.1 has no Resampling enum


def load_user_data(cfg: DataConfig, table: tables.TableSchema | None = None, all_rows: bool = False,
                   label_given: bool = False) -> Dataset:
    """`table`: a trained model's columns, to read a table with its statistics instead of fitting new ones;
    all_rows: a new table for that model, every row in order as both splits."""
    path = Path(cfg.name).expanduser()
    if not path.exists():
        raise VaekitError(f"data path {path} does not exist: check the path, or use a registered data set name")
    if path.is_dir():
        return _read(path, _load_folder(path, cfg))
    loader = _FILE_LOADERS.get(path.suffix.lower())
    if table is not None and loader is not _load_table:
        raise VaekitError(f"{path} is not a table, but the model was trained on one: give a .csv, .tsv or .parquet "
                          "file with its columns")
    if loader is _load_table:
        return _load_table(path, cfg, table, all_rows=all_rows and isinstance(table, tables.TableSchema),
                           label_given=label_given)
    if loader is None:
        kind = "a single image is not a data set: give its folder" if path.suffix.lower() in IMAGE_SUFFIXES else (
            f"cannot read {path.suffix or 'files without a suffix'}"
        )
        raise VaekitError(f"{path}: {kind}; use a .npy, .npz, .csv, .tsv or .parquet file, or a folder of images")
    return _read(path, loader(path, cfg))


def _read(path: Path, dataset: Dataset) -> Dataset:
    """An array file or image folder, as read, said in one line (a table's summary says it for a table)."""
    classes = f", {len(dataset.label_names)} classes" if dataset.label_names else (
        ", labelled" if dataset.y_train is not None else "")
    log.info("%s: %s training and %s test items of shape %s%s", path, f"{len(dataset.x_train):,}",
             f"{len(dataset.x_test):,}", "x".join(map(str, dataset.shape)), classes)
    return dataset


# ---- arrays ----------------------------------------------------------------------------------------------


def check_label_column(cfg: DataConfig) -> None:
    """A new run's --label-column, for a file that has one: a table's column or an .npz file's array of labels."""
    path = Path(cfg.name).expanduser()
    if cfg.label_column is None or not path.exists():
        return
    loader = None if path.is_dir() else _FILE_LOADERS.get(path.suffix.lower())
    if loader not in (_load_table, _load_npz):
        where = "class subfolders give a folder's labels" if path.is_dir() else (
            "save the items and their labels as x and y in an .npz file")
        raise VaekitError(f"--label-column names a table's label column or an .npz file's array of labels, but {path} "
                          f"is {'a folder' if path.is_dir() else 'not a table'}: drop it ({where})")


# Settings that only tables use, with their flags: on other data they were ignored without a word.
_TABLE_SETTINGS = (("header", "auto", "--header"), ("standardize", True, "--no-standardize"),
                   ("column_types", None, "--column-types"), ("impute", "none", "--impute"))


NEW_RUN: ContextVar[bool] = ContextVar("vaekit_new_run", default=False)  # data read for a new run (runs.train)


@contextlib.contextmanager
def for_new_runs(new: bool = True) -> Iterator[None]:
    """Data read inside is read for new runs (what only they say: the size a folder's images are read at)."""
    token = NEW_RUN.set(new)
    try:
        yield
    finally:
        NEW_RUN.reset(token)


def check_data_flags(cfg: DataConfig, say: bool = True) -> None:
    """A new run's data settings that its data does not use, said (they were ignored without a word: --image-size 14
    on digits trained on 8x8): the table settings on other data, --image-size beside folders of images and the
    generated data sets, --label-column on a built-in set. A warning, not an error, as a recipe or a config file may
    set them for other data. A file's --label-column that it cannot have stays an error (check_label_column)."""
    from . import DATASETS, SIZED, _import_loaders

    _import_loaders()
    path = Path(cfg.name).expanduser()
    builtin = cfg.name in DATASETS
    if not builtin and not path.exists():
        return  # said by load_dataset
    if not builtin:
        check_label_column(cfg)
    if not say:  # the warnings below: one process says them
        return
    loader = None if builtin or path.is_dir() else _FILE_LOADERS.get(path.suffix.lower())
    what = (f"vaekit's {cfg.name} data set" if builtin else "a folder of images" if path.is_dir()
            else f"a {path.suffix or 'file without a suffix'} file")
    unused = [] if loader is _load_table else [
        f"{flag} (data.{name})" for name, default, flag in _TABLE_SETTINGS if getattr(cfg, name) != default]
    if unused:
        log.warning("%s: a setting of tables, unused: %s is %s", ", ".join(unused), cfg.name, what)
    if cfg.image_size is not None and not (path.is_dir() and not builtin) and cfg.name not in SIZED:
        log.warning("--image-size (data.image_size) is unused: it sets the size of a folder's images (or of generated "
                    "shapes), and %s is %s, read as it is", cfg.name, what)
    if builtin and cfg.label_column is not None:
        log.warning("--label-column (data.label_column) is unused: %s is %s, with labels of its own", cfg.name, what)


def _load_npy(path: Path, cfg: DataConfig) -> Dataset:
    array = safe.load_npy(path)
    x, is_image = _items_tensor(array, f"{path}")
    del array  # the file's values, copied to float32: not held while the splits are made (safe's memory check)
    return _dataset(path.stem, x, None, None, None, None, is_image, cfg.test_fraction)


_NPZ_KEYS = ("x", "y", "x_train", "y_train", "x_test", "y_test")


def _check_face_set_file(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """A face set's own file (FOLDER/FOLDER.npz, its arrays) given as a path: read by its name, with its attributes,
    classes and fixed split. Refused for a new run (Frey's one array read as x took another split than `--data
    frey`'s, so the two runs' numbers could not be compared) and where it could not be read anyway (Olivetti's and
    SMILEsmileD's arrays are not named x); a run trained on such a path before goes on reading it."""
    from .faces import SPECS

    for spec in SPECS.values():
        if path.name == f"{spec.folder}.npz" and set(arrays) == set(spec.arrays) and (
                NEW_RUN.get() or not set(arrays) & set(_NPZ_KEYS) and len(arrays) > 1):
            raise VaekitError(f"{path} is the {spec.name} face set's own file: give --data {spec.name} (with "
                              f"--data-dir {path.parent.parent}), which reads it with its fixed split"
                              + (" and its labels" if len(spec.arrays) > 1 else ""))


def _load_npz(path: Path, cfg: DataConfig) -> Dataset:
    arrays = safe.load_npz(path)
    _check_face_set_file(path, arrays)
    if cfg.label_column is not None:  # the array of labels, by its own name
        if cfg.label_column not in arrays:
            raise VaekitError(f"{path} has no array {cfg.label_column!r} for --label-column: its arrays are "
                              f"{', '.join(sorted(arrays))}")
        if "y" in arrays and cfg.label_column != "y":
            raise VaekitError(f"{path} has labels y beside {cfg.label_column!r}: keep one array of labels")
        arrays["y"] = arrays.pop(cfg.label_column)
    if len(arrays) == 1 and not set(arrays) & set(_NPZ_KEYS):
        arrays = {"x": next(iter(arrays.values()))}
    unknown = sorted(set(arrays) - set(_NPZ_KEYS))
    if unknown:
        log.warning("%s: ignoring arrays %s (known keys: %s; an array of labels under another name: --label-column "
                    "NAME)", path, ", ".join(unknown), ", ".join(_NPZ_KEYS))
    has = {key for key in _NPZ_KEYS if key in arrays}
    for y_key, x_key in (("y", "x"), ("y_train", "x_train"), ("y_test", "x_test")):
        if y_key in has and x_key not in has:
            raise VaekitError(f"{path} has {y_key} but no {x_key}: labels need the data they label")
    if "x" in has and has & {"x_train", "x_test"}:
        raise VaekitError(f"{path} has both x and x_train/x_test: keep x (to be split) or x_train + x_test")
    if "x" not in has and "x_train" not in has:
        held = ", ".join(sorted(arrays)) or "no arrays"
        raise VaekitError(f"{path} holds {held}: name the data x, or x_train and x_test")
    if "x_train" in has and "x_test" not in has:
        raise VaekitError(f"{path} has x_train but no x_test: add x_test, or rename x_train to x to split it")
    if ("y_train" in has) != ("y_test" in has):
        raise VaekitError(f"{path} has labels for only one split: give both y_train and y_test, or neither")
    name = path.stem
    if "x" in has:
        x, is_image = _items_tensor(arrays.pop("x"), f"{path}[x]")  # (the file's values, not held beside x)
        y, label_names = _labels(arrays.get("y"), len(x), f"{path}[y]")
        return _dataset(name, x, y, label_names, None, None, is_image, cfg.test_fraction)
    x_train, is_image = _items_tensor(arrays["x_train"], f"{path}[x_train]")
    x_test, test_is_image = _items_tensor(arrays["x_test"], f"{path}[x_test]")
    if x_train.shape[1:] != x_test.shape[1:] or is_image != test_is_image:
        raise VaekitError(
            f"{path}: x_train items have shape {tuple(arrays['x_train'].shape[1:])} but x_test items "
            f"{tuple(arrays['x_test'].shape[1:])}: both splits need the same item shape and dtype kind"
        )
    y_train, y_test, label_names = None, None, None
    if "y_train" in has:
        if arrays["y_train"].shape != (len(x_train),) or arrays["y_test"].shape != (len(x_test),):
            raise VaekitError(
                f"{path}: y_train/y_test have shapes {arrays['y_train'].shape}/{arrays['y_test'].shape}, "
                f"expected ({len(x_train)},)/({len(x_test)},): one label per item"
            )
        # Labelled together, so class names map to the same ids in both splits.
        both, label_names = _labels(
            np.concatenate([arrays["y_train"], arrays["y_test"]]),
            len(x_train) + len(x_test),
            f"{path}[y_train, y_test]",
        )
        y_train, y_test = both[: len(x_train)], both[len(x_train) :]
    return Dataset(
        name, x_train, x_test, y_train, y_test, label_names=label_names, is_image=is_image,
        binary=_is_binary(x_train) and _is_binary(x_test),
    )


def _items_tensor(array: np.ndarray, source: str) -> tuple[torch.Tensor, bool]:
    """An (N, ...) array -> (float32 tensor, is_image), by the conventions in the module docstring."""
    kind = array.dtype.kind
    if kind not in "biuf":
        raise VaekitError(f"{source} has dtype {array.dtype}: expected numbers (integers or floats)")
    if array.ndim not in (2, 3, 4):
        raise VaekitError(
            f"{source} has shape {array.shape}: expected (N, D) vectors or (N, H, W), (N, H, W, C) images"
        )
    if len(array) == 0:
        raise VaekitError(f"{source} holds no items: expected an array of shape (N, ...) with N >= 1")
    if 0 in array.shape[1:]:
        raise VaekitError(f"{source} has shape {array.shape}: its items hold no values; expected e.g. (N, D) with "
                          "D >= 1")
    if kind == "f" and not np.isfinite(array).all():
        raise VaekitError(f"{source} contains NaN or infinite values: remove or impute them first")
    peak = max(abs(float(array.min())), abs(float(array.max()))) if kind == "f" and array.dtype.itemsize > 4 else 0.0
    if peak > tables.FLOAT32_MAX:  # (min and max: no copy of a large array, as np.abs would make)
        raise VaekitError(f"{source} holds values up to {peak:.3g}, beyond float32's range (3.4e38), which the model "
                          "computes in: rescale them")
    if array.ndim == 2:
        if array.dtype == np.uint8 and array.max() > 1:  # pixels, most likely: said, as images would be scaled
            log.warning("%s: (N, D) uint8 values are read as vectors, 0..255 as they are (images are scaled to [0, 1]: "
                        "give them as (N, H, W) for that)", source)
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)), False
    if array.ndim == 4:
        if array.shape[-1] in (1, 3):
            pass  # (N, H, W, C), numpy's and Pillow's layout
        elif array.shape[1] in (1, 3):
            array = array.transpose(0, 2, 3, 1)
        else:
            raise VaekitError(
                f"{source} has shape {array.shape}: images need 1 or 3 channels, first or last, e.g. (N, 28, 28, 1)"
            )
    low, high = array.min(), array.max()
    if kind == "f":
        if low < 0 or high > 1:
            raise VaekitError(
                f"{source} holds float images in [{low:g}, {high:g}]: "
                "scale them to [0, 1], or save them as uint8 0..255"
            )
        return images_to_tensor(array.astype(np.float32, copy=False), scale=1.0), True
    if kind == "b":
        return images_to_tensor(array.astype(np.uint8), scale=1.0), True
    if low < 0 or high > 255:
        raise VaekitError(f"{source} holds integer images in {low}..{high}: expected 0..255 (8-bit pixels)")
    return images_to_tensor(array.astype(np.uint8, copy=False)), True


def _labels(
    values: np.ndarray | None, n: int, source: str
) -> tuple[torch.Tensor | None, tuple[str, ...] | None]:
    """Class ids 0..K-1 (label_names None) or strings (classes in sorted order, named)."""
    if values is None:
        return None, None
    values = np.asarray(values)
    if values.shape != (n,):
        raise VaekitError(f"{source} has shape {values.shape}, expected ({n},): one label per item")
    if values.dtype.kind in "US":
        names, ids = np.unique(values.astype(str), return_inverse=True)
        return torch.from_numpy(ids.astype(np.int64)), tuple(names.tolist())
    if values.dtype.kind == "f":
        if not (np.isfinite(values).all() and (values == np.round(values)).all()):
            raise VaekitError(f"{source} holds non-integer labels: labels must be class ids 0, 1, 2, ...")
    elif values.dtype.kind not in "biu":
        raise VaekitError(f"{source} has dtype {values.dtype}: labels must be class ids or class names")
    if values.min() < 0:
        raise VaekitError(f"{source} holds negative labels ({values.min()}): labels must be class ids 0, 1, 2, ...")
    if values.max() >= 2**31:
        raise VaekitError(f"{source} holds the label {values.max():g}: class ids must be below 2^31; relabel the "
                          "classes 0, 1, 2, ... or use class names")
    return torch.from_numpy(values.astype(np.int64)), None


def _is_binary(x: torch.Tensor, chunk: int = 4096) -> bool:
    """Whether every value is 0 or 1, a chunk of items at a time (the comparisons' masks of a whole data set took
    three bytes per value)."""
    return all(bool(((part == 0) | (part == 1)).all()) for part in torch.split(x, chunk))


def _split_indices(n: int, test_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed-seed permutation, so the split is the same on every run and machine."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_test = min(max(1, round(n * test_fraction)), n - 1)
    return order[n_test:], order[:n_test]


def _dataset(
    name: str,
    x: torch.Tensor,
    y: torch.Tensor | None,
    label_names: tuple[str, ...] | None,
    attributes: dict[str, torch.Tensor] | None,
    split: tuple[torch.Tensor, torch.Tensor] | None,
    is_image: bool,
    test_fraction: float,
) -> Dataset:
    """Split one pool of items (by `split`, or at random by test_fraction) into a Dataset."""
    if split is None and len(x) < 2:
        raise VaekitError(f"data set {name!r} has {len(x)} item: need at least 2 (some to train, some to test)")
    train, test = split if split is not None else _split_indices(len(x), test_fraction)
    attributes = attributes or {}
    binary = _is_binary(x)
    return Dataset(
        name,
        x[train],
        x[test],
        None if y is None else y[train],
        None if y is None else y[test],
        label_names=label_names,
        attributes_train={key: value[train] for key, value in attributes.items()},
        attributes_test={key: value[test] for key, value in attributes.items()},
        is_image=is_image,
        binary=binary,
    )


# ---- tables (CSV, TSV, Parquet) ------------------------------------------------------------------------------


def _load_table(path: Path, cfg: DataConfig, schema: tables.TableSchema | None = None,
                all_rows: bool = False, label_given: bool = False) -> Dataset:
    """A table file -> Dataset with its schema: the columns' types, statistics of the training split (or the given
    schema's, for a trained model), missing cells handled by cfg.impute, the label column as classes.

    all_rows: new data for a trained model (`schema` given): every row, in the file's order, is both splits, and a
    label column is optional unless `label_given` (named by the user, not the run's own)."""
    as_written = schema == tables.AS_WRITTEN  # a run from before tables (tables.run_table): read as it read it
    if as_written:
        schema = None
        first = tables.read_table(path, "no").take([0]) if cfg.header == "auto" else None
        if first is not None and any(isinstance(column[0], float) for column in first.columns):
            cfg = replace(cfg, header="no")  # a first row with a number was data then
    table = tables.read_table(path, cfg.header, () if schema is None else schema.names)
    if all_rows and not label_given and cfg.label_column is not None and cfg.label_column not in table.names:
        cfg = replace(cfg, label_column=None)  # new rows to encode need no labels (unless the model is conditioned)
    label = _label_name(cfg.label_column, table, path)
    types = tables.parse_column_types(cfg.column_types)
    if as_written:  # every column a number, as written
        types, cfg = {name: "numeric" for name in table.names if name != label}, replace(cfg, standardize=False)
    for name in types if schema is None else ():
        if name not in table.names:
            close = difflib.get_close_matches(name, list(table.names), n=3)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise VaekitError(f"{path} has no column {name!r} for --column-types: {hint}its columns are "
                              f"{', '.join(table.names)}")
    features = schema.names if schema is not None else [
        name for name, cells in zip(table.names, table.columns, strict=True)
        if name != label and types.get(name) != "ignore"
        and any(cell is not None for cell in cells)]  # a column without values is ignored
    if cfg.impute == "drop":
        gone = sorted({row for rows in tables.missing_cells(table, [*features, *([label] if label else [])]).values()
                       for row in rows})
        if gone:
            shown = ", ".join(table.where(row) for row in gone[:5]) + (" ..." if len(gone) > 5 else "")
            log.warning("%s: dropped %d of %d rows with missing values (--impute drop): %s", path, len(gone),
                        table.n_rows, shown)
            keep = set(gone)
            table = table.take([row for row in range(table.n_rows) if row not in keep])
    elif label is not None:
        missing = tables.missing_cells(table, [label]).get(label)
        if missing and all_rows:  # a file for a trained run, whose labels only a label-conditioned model needs
            log.warning("%s: the label column %r is missing at %s%s: the file's labels are left out", path, label,
                        table.where(missing[0]), f" and {len(missing) - 1} more rows" if len(missing) > 1 else "")
            label = None
        elif missing:
            raise VaekitError(f"{path}: the label column {label!r} is missing at {table.where(missing[0])}"
                              f"{f' and {len(missing) - 1} more rows' if len(missing) > 1 else ''}: fill it in, or "
                              "pass --impute drop to drop those rows")
    if table.n_rows < (1 if all_rows else 2):
        raise VaekitError(f"{path} has {table.n_rows} data rows: need at least {1 if all_rows else 2} (some to train, "
                          "some to test)" if not all_rows else f"{path} has no data rows to read")
    if all_rows:
        train = test = torch.arange(table.n_rows)
    else:
        train, test = _split_indices(table.n_rows, cfg.test_fraction)
    summarise = schema is None
    if schema is None:
        schema = tables.fit_schema(table, train.tolist(), types, cfg.standardize, label)
    x = schema.encode(table, cfg.impute)
    y, label_names = None, None
    if label is not None:
        y, label_names = _table_labels(table.column(label), f"{path} label column {label!r}")
        if as_written and all(re.fullmatch(r"[0-9]+", name) for name in label_names):  # class indices then
            y, label_names = torch.tensor([int(name) for name in label_names], dtype=torch.int64)[y], None
    if summarise and not as_written:  # once the table is read whole: a refused table gets its one-line error alone
        for note in schema.notes:
            log.warning("%s: %s", path, note)
        log.info("%s", schema.summary(len(train), len(test), str(path)))
    dataset = _dataset(path.stem, x, y, label_names, None, (train, test), False, cfg.test_fraction)
    return dataset if as_written else replace(dataset, table=schema)


def _table_labels(cells: Sequence[Any], source: str) -> tuple[torch.Tensor, tuple[str, ...]]:
    """A label column's classes: its values as written, numbers too ("1", not "1.0"; -1 and 1, or 1, 2, 3, are two
    and three classes, in numeric order), so that no class is made up (labels 1..3 taken as indices made a class 0)
    and a new file's classes map to a run's by name."""
    numeric = all(isinstance(cell, (int, float)) and not isinstance(cell, bool) for cell in cells)

    def whole(cell: float) -> bool:  # (beyond 2^53 a float no longer holds the number as written)
        return math.isfinite(cell) and float(cell).is_integer() and abs(cell) < 2**53

    if numeric and not all(whole(cell) for cell in cells):
        shown = next(cell for cell in cells if not whole(cell))
        raise VaekitError(f"{source} holds the label {shown:g}, which is no class: labels are classes, named by text "
                          "or by whole numbers below 2^53; choose a column of classes")
    written = [str(int(c)) if isinstance(c, (int, float)) and not isinstance(c, bool) and float(c).is_integer()
               else str(c) for c in cells]
    names = sorted(set(written), key=int) if numeric else sorted(set(written))
    index = {name: i for i, name in enumerate(names)}
    return torch.tensor([index[name] for name in written], dtype=torch.int64), tuple(names)


def _label_name(label_column: str | None, table: tables.RawTable, path: Path) -> str | None:
    if label_column is None:
        return None
    if label_column in table.names:
        return label_column
    if table.names == tuple(str(i) for i in range(len(table.names))):
        raise VaekitError(f"{path} has no header row, so data.label_column must be a 0-based column index below "
                          f"{len(table.names)}, not {label_column!r}; or add a header row")
    close = difflib.get_close_matches(label_column, list(table.names), n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise VaekitError(f"{path} has no column {label_column!r}: {hint}columns are {', '.join(table.names)}")


# ---- image folders ---------------------------------------------------------------------------------------


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan(folder: Path) -> tuple[list[Path], list[str | None]]:
    """Image files and their class (subfolder name), or None for images directly in folder."""
    direct = _image_files(folder)
    classes = {sub.name: files for sub in _subfolders(folder) if (files := _image_files(sub))}
    if direct and classes:
        raise VaekitError(
            f"{folder} has images both directly inside and in subfolders ({', '.join(classes)}): "
            "put every image in a class subfolder, or none"
        )
    if classes:
        pairs = [(file, name) for name, files in classes.items() for file in files]
        return [file for file, _ in pairs], [name for _, name in pairs]
    return direct, [None] * len(direct)


def _load_folder(folder: Path, cfg: DataConfig) -> Dataset:
    size = cfg.image_size or DEFAULT_IMAGE_SIZE
    subfolders = {sub.name.lower(): sub for sub in _subfolders(folder)}
    splits = sorted(name for name in subfolders if name in SPLIT_FOLDERS)
    if len(splits) >= 2 and not _image_files(folder) and set(subfolders) != {"train", "test"}:
        names = ", ".join(f"{subfolders[name].name}/" for name in sorted(subfolders))
        raise VaekitError(f"{folder} holds the folders {names}: vaekit reads a split from train/ and test/ alone (and "
                          "holds out its own validation items from train/ with --validation): move the other "
                          "folders' images into train/ or test/")
    if set(subfolders) == {"train", "test"} and not _image_files(folder):
        parts = {part: _scan(subfolders[part]) for part in ("train", "test")}
        files = parts["train"][0] + parts["test"][0]
        classes = parts["train"][1] + parts["test"][1]
        n_train = len(parts["train"][0])
        if n_train == 0 or len(files) == n_train:
            raise VaekitError(f"{subfolders['train']} and {subfolders['test']} must both hold images "
                              f"({'/'.join(IMAGE_SUFFIXES)})")
        split = (torch.arange(n_train), torch.arange(n_train, len(files)))
    else:
        files, classes = _scan(folder)
        split = None
    if not files:
        raise VaekitError(
            f"{folder} holds no images: put image files ({'/'.join(IMAGE_SUFFIXES)}) in it, or in one subfolder per "
            "class"
        )
    if len(files) < 2:
        raise VaekitError(f"{folder} holds 1 image: need at least 2 (some to train, some to test)")
    if (None in classes) and any(c is not None for c in classes):
        raise VaekitError(f"{folder}: train/ and test/ must both use class subfolders, or neither")
    x, sizes = _read_images(files, size)
    own = next(iter(sizes)) if len(sizes) == 1 else (0, 1)
    oblong = sorted(f"{width}x{height}" for width, height in sizes if width != height)
    if NEW_RUN.get() and oblong:  # (said by the new run that reads them so; a model of a folder is square)
        log.info("%s: its images of %s%s are not square: each is cropped about its centre to a square before it is "
                 "resized, the ends of its longer side left out; crop them yourself to keep another part", folder,
                 ", ".join(oblong[:3]), " and other sizes" if len(oblong) > 3 else "")
    if NEW_RUN.get() and cfg.image_size is None and own[0] == own[1] >= 4 and size * size >= 1.5 * own[0] * own[1]:
        log.info("%s: its images are %dx%d, read at %dx%d (the default --image-size): --image-size %d trains on them "
                 "as they are, with %.1f times fewer pixels", folder, own[0], own[1], size, size, own[0],
                 size * size / (own[0] * own[1]))
    y, label_names = (None, None) if classes[0] is None else _labels(np.array(classes), len(files), f"{folder}")
    attributes = _folder_attributes(folder, files)
    return _dataset(folder.name, x, y, label_names, attributes, split, True, cfg.test_fraction)


def _read_images(files: list[Path], size: int) -> tuple[torch.Tensor, set[tuple[int, int]]]:
    """The images at size x size, and the sizes (width, height) they have in their files."""
    headers = [_image_header(path) for path in files]
    modes = [mode for mode, _ in headers]
    gray = all(mode in _GRAYSCALE_MODES for mode in modes)
    # the uint8 pixels, their float32 copy and its split into training and test items, and one image being resized
    safe.check_memory(len(files) * size * size * (1 if gray else 3) * 9 + size * size * 16,
                      f"{len(files)} images of {size}x{size}", "choose a smaller --image-size")
    mode = "L" if gray else "RGB"
    pixels = np.empty((len(files), size, size) if gray else (len(files), size, size, 3), dtype=np.uint8)
    # a bar for a folder that takes more than a second to read (thousands of photos to decode and shrink)
    for i, path in enumerate(tqdm(files, desc="reading images", unit="img", leave=False,
                                  **bar_timing(0.2, delay=1.0))):
        with _open_image(path) as image:
            try:
                converted = _converted(upright(image), mode)
            except IMAGE_ERRORS as exc:
                raise VaekitError(f"cannot decode image {path} ({exc}): remove it or re-save it as PNG") from None
            pixels[i] = np.asarray(_square(converted, size))
    return images_to_tensor(pixels), {own for _, own in headers}


def upright(image: Image.Image) -> Image.Image:
    """The picture turned as its EXIF orientation says, as viewers show it (as stored where the EXIF is damaged)."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001  (Pillow raises many kinds for a damaged EXIF block)
        return image


def _converted(image: Image.Image, mode: str) -> Image.Image:
    """The image in `mode` (L or RGB); 16-bit grey (a PNG's I;16, or I) scaled from 0..65535 to 0..255, where
    Pillow's own conversion would clip it at 255."""
    if image.mode == "I" or image.mode.startswith("I;16"):
        values = np.clip(np.rint(np.asarray(image, dtype=np.float64) / 257.0), 0, 255).astype(np.uint8)
        image = Image.fromarray(values, "L")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        # transparent pixels are the white a viewer shows, not whatever colour they hide
        image = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image.convert("RGBA"))
    return image.convert(mode)


def _image_header(path: Path) -> tuple[str, tuple[int, int]]:
    """The image's mode and size, read from its header alone: cheap."""
    with _open_image(path) as image:
        return image.mode, image.size


def _open_image(path: Path) -> Image.Image:
    try:
        with warnings.catch_warnings():  # a large photo is read (and shrunk) all the same: no warning's source line
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except Image.DecompressionBombError as exc:
        raise VaekitError(f"cannot read image {path}: it is larger than Pillow's safety limit for one image ({exc}"
                          "): downscale it, or remove it") from None
    except IMAGE_ERRORS as exc:
        problem = exc.__class__.__name__
        raise VaekitError(f"cannot read image {path} ({problem}): remove it or re-save it as PNG") from None


def _square(image: Image.Image, size: int) -> Image.Image:
    """Centre-crop to a square, then resize: faces and objects keep their proportions."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.resize((size, size), _LANCZOS, box=(left, top, left + side, top + side))


def _folder_attributes(folder: Path, files: list[Path]) -> dict[str, torch.Tensor]:
    tables = [folder / name for name in ATTRIBUTE_FILES if (folder / name).is_file()]
    if not tables:
        return {}
    names, attributes = load_attribute_table(tables[0])
    row = {name: i for i, name in enumerate(names)}
    keys = [file.relative_to(folder).as_posix() for file in files]
    index = [row.get(key, row.get(Path(key).name)) for key in keys]
    absent = [key for key, i in zip(keys, index, strict=True) if i is None]
    if absent:
        raise VaekitError(
            f"{tables[0]} has no row for {len(absent)} image(s), e.g. {absent[0]}: "
            "add rows for them, or remove the table"
        )
    order = torch.tensor(index)
    return {name: values[order] for name, values in attributes.items()}


# ---- attribute tables ------------------------------------------------------------------------------------


def load_attribute_table(path: str | Path) -> tuple[list[str], dict[str, torch.Tensor]]:
    """File keys and 0/1 attribute columns (float32, (N,)) from a CSV or CelebA's list_attr_celeba.txt.

    CSV: a header row, then the first column the file name and the others 0/1, or only 0/1 columns (rows are
    items in order, keyed "row 1", "row 2", ...). CelebA: line 1 the row count,
    line 2 the attribute names, then `file v1 v2 ...` separated by spaces. In both, -1 means 0.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise VaekitError(f"cannot read attribute table {path} ({exc}); check the path") from None
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise VaekitError(f"attribute table {path} is empty: expected a header and one row per file")
    if lines[0].strip().isdigit():
        count = int(lines[0])
        header = lines[1].split() if len(lines) > 1 else []
        rows = [line.split() for line in lines[2:]]
        if len(rows) != count:
            raise VaekitError(
                f"{path} says {count} rows but has {len(rows)}: the file is truncated or edited; get it again"
            )
        # CelebA's header names only the attributes; the file-name column is unnamed.
        first_line = 3
    else:
        table = list(csv.reader(lines, delimiter=tables.sniff_delimiter(Path(path), "\n".join(lines))))
        rows = [[cell.strip() for cell in row] for row in table[1:]]
        first_line = 2
        if rows and all(row and re.fullmatch(r"-?\d*", row[0]) for row in rows):
            # no file-name column (file names have a suffix), only 0/1 columns: rows are items in order, keyed by
            # their row number; a cell other than 0/1/-1 there, or an empty one, is named below as a bad value
            header = [cell.strip() for cell in table[0]]
            rows = [[f"row {number}", *row] for number, row in enumerate(rows, start=1)]
        else:
            header = [cell.strip() for cell in table[0]][1:]
    if not header:
        raise VaekitError(f"{path} names no attributes: expected a header row of attribute names")
    if not rows:
        raise VaekitError(f"{path} has no rows: expected one row per file")
    width = len(header) + 1
    for number, row in enumerate(rows, start=first_line):
        if len(row) != width:
            raise VaekitError(
                f"{path} line {number} has {len(row)} fields, expected {width} (file name + {len(header)} attributes)"
            )
    keys = [row[0] for row in rows]
    duplicates = [key for key, count in Counter(keys).items() if count > 1]
    if duplicates:
        duplicate = duplicates[0]
        raise VaekitError(f"{path} lists {duplicate} more than once: keep one row per file")
    cells = np.array([row[1:] for row in rows])
    values = np.zeros(cells.shape, dtype=np.float32)
    for text, value in (("1", 1.0), ("0", 0.0), ("-1", 0.0)):
        values[cells == text] = value
    bad = ~np.isin(cells, ("1", "0", "-1"))
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise VaekitError(
            f"{path} line {row + first_line}: {header[column]} is {str(cells[row, column])!r}; "
            "attribute values must be 0/1 (or -1/1)"
        )
    attributes = {name: torch.from_numpy(values[:, i].copy()) for i, name in enumerate(header)}
    return keys, attributes


_FILE_LOADERS: dict[str, Callable[[Path, DataConfig], Dataset]] = {
    ".npy": _load_npy,
    ".npz": _load_npz,
    **{suffix: _load_table for suffix in tables.TABLE_SUFFIXES},
}
FILE_SUFFIXES = tuple(_FILE_LOADERS)  # the data files vaekit reads (besides image folders)
