"""Tables: read CSV / TSV / Parquet files (or arrays and DataFrames), decide each column's type, and encode rows as
the vectors a model sees (numeric columns standardised, two-valued columns 0/1, categories one-hot), and back.

The rules, chosen once here:
- A cell is missing when empty or one of MISSING_TOKENS (any case), or null / NaN in a Parquet file or DataFrame.
- Column types: exactly two distinct values -> binary (Bernoulli; the sorted values map to 0 and 1); only numbers
  -> numeric (Gaussian), except integers with 3..min(10, sqrt(rows)) distinct values -> categorical; text -> categorical
  (at most MAX_CATEGORIES values). A column mixing numbers and text is an error unless declared categorical.
  `column_types` ("age=numeric,sex=categorical,id=ignore") overrides the inference.
- Statistics (mean and std of numeric columns, the values that fill missing cells) come from the training rows only;
  the categories of a column are every value the file holds.
"""
from __future__ import annotations

import contextlib
import csv
import difflib
import io
import logging
import math
import numbers
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import VaekitError
from ..extras import install_hint
from ..files import atomic_write, write_text
from ..progress import bar_timing
from .safe import check_memory

log = logging.getLogger(__name__)

FLOAT32_MAX = float(np.finfo(np.float32).max)  # larger values become infinite in the model's float32
EXACT_INTEGERS = 2**53  # float64 holds every integer up to this; larger ones are LargeInteger cells


class LargeInteger(str):
    """An integer cell beyond what a float holds exactly, kept as written: a number in a numeric column (timestamps in
    nanoseconds, byte counts), text where distinct ones would merge as floats (IDs). infer_kind decides."""


def _text(cell: Cell) -> bool:
    """A cell of text, not a number (a LargeInteger counts as a number)."""
    return isinstance(cell, str) and not isinstance(cell, LargeInteger)

TABLE_SUFFIXES = (".csv", ".tsv", ".tab", ".parquet", ".pq")
MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})
KINDS = ("numeric", "binary", "categorical")
MAX_CATEGORIES = 50  # distinct values a categorical column may have
MAX_INTEGER_CATEGORIES = 10  # an integer column with at most this many values (and at most sqrt(rows)) is categorical
CONSTANT_STD = 1e-12  # a numeric column whose training std is below this (relative to its scale) carries nothing
ID_ROWS = 20  # from this many rows, an integer column unique in every row and numbered or beyond 2^53 looks like an ID
SNIFF_BYTES = 65536

Cell = Any  # float (a number), str (text) or None (missing)


# ---- a table as read: named columns of cells ----------------------------------------------------------------

@dataclass(frozen=True)
class RawTable:
    """Columns of parsed cells as read from a file or a frame; `where(i)` names row i for messages."""

    source: str
    names: tuple[str, ...]
    columns: tuple[tuple[Cell, ...], ...]
    unit: str = "row"  # how messages count rows: "line" (of a file) or "row"
    numbers: tuple[int, ...] | None = None  # each row's line or row number; None: 1, 2, 3, ...

    @property
    def n_rows(self) -> int:
        return len(self.columns[0]) if self.columns else 0

    def where(self, row: int) -> str:
        return f"{self.unit} {row + 1 if self.numbers is None else self.numbers[row]}"

    def column(self, name: str) -> tuple[Cell, ...]:
        return self.columns[self.names.index(name)]

    def take(self, rows: Sequence[int]) -> "RawTable":
        """The given rows, which keep their numbers in messages."""
        numbers = tuple(i + 1 if self.numbers is None else self.numbers[i] for i in rows)
        return RawTable(self.source, self.names, tuple(tuple(col[i] for i in rows) for col in self.columns),
                        self.unit, numbers)


def parse_cell(text: str) -> Cell:
    text = text.strip()
    if text.lower() in MISSING_TOKENS:
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    if abs(value) >= EXACT_INTEGERS and text.lstrip("+-").isdigit() and abs(int(text)) > EXACT_INTEGERS:
        return LargeInteger(text)  # a float cannot hold it exactly: as written, until its column's kind is known
    return value if math.isfinite(value) else text  # "inf" stays text: reported as not a finite number


def _python_cell(value: Any) -> Cell:
    """A value from a Parquet column or a DataFrame as a cell."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, (int, np.integer)) and abs(int(value)) > EXACT_INTEGERS:
        return LargeInteger(str(value))  # as parse_cell
    if isinstance(value, (int, float, np.integer, np.floating, numbers.Real)):
        value = float(value)
        return None if math.isnan(value) else (value if math.isfinite(value) else str(value))
    if isinstance(value, str):
        return parse_cell(value) if value.strip().lower() in MISSING_TOKENS else value
    try:  # pandas' NA / NaT
        import pandas

        if pandas.isna(value):
            return None
    except (ImportError, TypeError, ValueError):
        pass
    return str(value)  # dates, times and the like: text, so categorical, or ignored with --column-types


HEADER_CHOICES = ("auto", "yes", "no")


def read_table(path: str | Path, header: str = "auto", expected: Sequence[str] = ()) -> RawTable:
    """A CSV/TSV (any delimiter csv.Sniffer finds; its first row a header as `header` says: yes, no, or auto, as
    `first_row_is_header` decides) or a Parquet file (with pyarrow; its column names are its header). `expected`:
    the columns a trained model reads, by which auto decides where only one reading of the first row has them all:
    as names, or as data where it is all numbers (a headerless run's columns are 0, 1, ...: a new file starting with
    whole numbers far outside their columns, as 400,410,..., is data for it, as it was for runs trained before auto
    took such a row for names)."""
    path = Path(path)
    if header not in HEADER_CHOICES:
        raise VaekitError(f"header must be one of {', '.join(HEADER_CHOICES)}, not {header!r}")
    if path.suffix.lower() in (".parquet", ".pq"):
        return _read_parquet(path)
    return _read_delimited(path, header, tuple(expected))


def first_row_is_header(first: Sequence[str], body: Sequence[Sequence[str]]) -> bool:
    """Whether a file's first row names its columns, when the file does not say. It does when:
    - it holds no numbers and none of its cells recurs in its column (text names over values); or
    - its numbers are whole and distinct, and each lies far outside its column's values below it, by more than
      their range (years or wavelengths over measurements; at least two rows below, and two such numbers or a
      text cell beside them that does not recur in its column, as "sample,400,450": so that an outlying value, or
      the first row of a sorted table, is not taken for a name); or
    - it reads 0, 1, 2, ... (the unnamed columns pandas writes): with three or more columns always (a data row
      reads so by chance rarely), with one or two unless each of those numbers also occurs in its column
      (headerless bits starting 0,1 are as likely as a header); a warning says which was taken where it could be
      either (`ambiguous_indices`)."""
    width = len(first)
    if not body:  # a file of one row: names (text) over no data, or one row of data
        return not any(isinstance(parse_cell(cell), float) for cell in first)
    parsed = [parse_cell(cell) for cell in first]
    texts = [c for c in range(width) if not isinstance(parsed[c], float)]
    fresh = not any(first[c] and any(row[c] == first[c] for row in body) for c in texts)  # no text name recurs
    if len(texts) == width:
        return fresh
    columns = [[value for value in (parse_cell(row[c]) for row in body) if isinstance(value, float)]
               for c in range(width)]
    if parsed == [float(i) for i in range(width)]:
        return width >= 3 or not ambiguous_indices(parsed, columns)
    numbers = [parsed[c] for c in range(width) if c not in texts]
    return (fresh and len(body) >= 2 and (len(numbers) >= 2 or bool(texts))
            and all(value.is_integer() for value in numbers) and len(set(numbers)) == len(numbers)
            and _outlying(numbers, [columns[c] for c in range(width) if c not in texts], far=True))


def ambiguous_indices(row: Sequence[float], columns: Sequence[Sequence[float]]) -> bool:
    """Whether a first row reading 0, 1, 2, ... could as well be data: each number occurs in its column below."""
    return all(value in column for value, column in zip(row, columns, strict=True))


def _outlying(row: Sequence[float], columns: Sequence[Sequence[float]], far: bool = False) -> bool:
    """Whether every value of a row lies outside the range of its column's numbers (far: by more than the range)."""
    def outside(value: float, column: Sequence[float]) -> bool:
        low, high = min(column), max(column)
        margin = high - low if far else 0.0
        return not low - margin <= value <= high + margin

    return all(column and outside(value, column) for value, column in zip(row, columns, strict=True))


def sniff_delimiter(path: Path, text: str) -> str:
    """The delimiter of a delimited text file: a tab for .tsv/.tab, else the one of , ; tab | that csv.Sniffer finds
    (a comma where it cannot tell: one column, or too few rows)."""
    if path.suffix.lower() in (".tsv", ".tab"):
        return "\t"
    try:
        return csv.Sniffer().sniff(text[:SNIFF_BYTES], delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


# What reading a CSV holds at its peak (its text, rows of cells, the parsed cells), measured: about 14 bytes per byte
# of text and 45 per cell (100,000 rows of 20 one-digit cells: 36 bytes per byte of the file; of 9-character ones, 18)
TEXT_MEMORY, CELL_MEMORY = 16, 48


def _read_delimited(path: Path, header: str = "auto", expected: tuple[str, ...] = ()) -> RawTable:
    fix = "give fewer rows (a sample of them), or read it on a machine with more memory"
    with contextlib.suppress(OSError):  # (its text alone, before it is read: a file of half the memory)
        size = path.stat().st_size
        check_memory(size * TEXT_MEMORY, f"reading {path} ({size / 2**20:,.1f} MiB)", fix)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise VaekitError(f"cannot read {path} as text ({exc.__class__.__name__}): save it as UTF-8 "
                          "comma-separated values") from None
    delimiter = sniff_delimiter(path, text)
    line_count = text.count("\n")
    check_memory(len(text) * TEXT_MEMORY + (text.count(delimiter) + line_count) * CELL_MEMORY,
                 f"reading {path} ({len(text) / 2**20:,.1f} MiB of text)", fix)
    try:  # a bar where the reading takes more than a second (hundreds of thousands of rows)
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        with tqdm(total=line_count + 1, desc=f"reading {path.name}"[:40], unit="row", leave=False,
                  **bar_timing(0.2, delay=1.0)) as bar:
            lines = []
            for number, row in enumerate(reader, 1):
                lines.append((number, [cell.strip() for cell in row]))
                if not number % 4096:
                    bar.update(4096)
    except csv.Error as exc:
        raise VaekitError(f"cannot read {path} as CSV ({exc}): check its quoting") from None
    lines = [(number, row) for number, row in lines if len(row) > 1 or any(row)]  # blank lines
    # A row of empty cells (",,,") between rows is a row of missing values, as pandas reads it, so that the rows keep
    # their count and order; at the file's start or end (a spreadsheet's export of empty rows) it is no row.
    while lines and not any(lines[-1][1]):
        lines.pop()
    while lines and not any(lines[0][1]):
        lines.pop(0)
    if not lines:
        raise VaekitError(f"{path} is empty: expected rows of values, one item per row")
    width = len(lines[0][1])
    for number, row in lines:
        if len(row) != width:
            raise VaekitError(f"{path} is ragged: line {number} has {len(row)} columns, the first row {width}; give "
                              "every row the same columns")
    first = lines[0][1]
    body = [row for _, row in lines[1:]]
    has_header = header == "yes" or (header == "auto" and first_row_is_header(first, body))
    if header == "auto" and expected:  # a trained model's columns decide where only one reading has them: no guess
        named_by_it = set(expected) <= {cell or f"column {i + 1}" for i, cell in enumerate(first)}
        if named_by_it != (set(expected) <= {str(i) for i in range(width)}
                           and all(isinstance(parse_cell(cell), float) for cell in first)):
            has_header, header = named_by_it, "yes" if named_by_it else "no"
    numbers = [parse_cell(cell) for cell in first]
    if header == "auto" and body and any(isinstance(value, float) for value in numbers):  # a guess: say which
        shown = ",".join(first)[:60]
        columns = [[v for v in (parse_cell(row[c]) for row in body) if isinstance(v, float)] for c in range(width)]
        indices = numbers == [float(i) for i in range(width)]
        every = all(isinstance(value, float) for value in numbers)
        # "region,2019,2020" over years: a name over a column of repeated categories, beside whole distinct numbers
        whole = [value for value in numbers if isinstance(value, float)]
        named = (all(value.is_integer() for value in whole) and len(set(whole)) == len(whole)
                 and any(not isinstance(numbers[c], float) and first[c] and all(row[c] != first[c] for row in body)
                         and len({row[c] for row in body}) < len(body) for c in range(width)))
        if has_header and (not indices or ambiguous_indices(numbers, columns)):
            log.warning("%s: read its first row (%s) as column names; --header no reads it as data", path, shown)
        elif not has_header and (named or every and (indices or (width >= 2 and _outlying(numbers, columns)))):
            log.warning("%s: read its first row (%s) as data, though it could name the columns; --header yes reads "
                        "it as column names", path, shown)
    if has_header:
        names = tuple(cell or f"column {i + 1}" for i, cell in enumerate(first))
        duplicates = [name for name, count in Counter(names).items() if count > 1]
        if duplicates:
            raise VaekitError(f"{path} names column {duplicates[0]!r} more than once: give every column its own name")
        rows = lines[1:]
    else:
        names, rows = tuple(str(i) for i in range(width)), lines
    columns = tuple(tuple(parse_cell(row[c]) for _, row in rows)
                    for c in tqdm(range(width), desc=f"parsing {path.name}"[:40], unit="column", leave=False,
                                  **bar_timing(0.2, delay=1.0)))
    if delimiter != ",":  # a semicolon or tab file from a locale that writes 2,5 for 2.5
        given, columns = columns, tuple(_decimal_commas(column) for column in columns)
        read = [name for name, new, old in zip(names, columns, given, strict=True) if new is not old]
        if read:
            log.warning("%s: read %s with decimal commas (2,5 as 2.5)", path,
                        ", ".join(repr(name) for name in read[:5]) + (f" and {len(read) - 5} more" if len(read) > 5
                                                                      else ""))
    return RawTable(str(path), names, columns, "line", tuple(number for number, _ in rows))


DECIMAL_COMMA = re.compile(r"[+-]?(\d+,\d*|,\d+)([eE][+-]?\d+)?")
THOUSANDS = re.compile(r"[+-]?\d{1,3},\d{3}")


def _decimal_commas(cells: tuple[Cell, ...]) -> tuple[Cell, ...]:
    """A column whose text cells are all numbers with a decimal comma, as numbers; any other column as it is."""
    texts = [cell for cell in cells if isinstance(cell, str) and not isinstance(cell, LargeInteger)]
    if not texts or not all(DECIMAL_COMMA.fullmatch(text) for text in texts):
        return cells
    if all(THOUSANDS.fullmatch(text) for text in texts):  # 1,234 could as well be a thousand and more: left as text
        return cells
    return tuple(parse_cell(cell.replace(",", ".")) if isinstance(cell, str) and not isinstance(cell, LargeInteger)
                 else cell for cell in cells)


def _read_parquet(path: Path) -> RawTable:
    try:
        import pyarrow.parquet as parquet
    except ImportError:
        raise VaekitError(f"reading {path.name} needs pyarrow: {install_hint('tables')} (or save the table as CSV)"
                          ) from None
    try:
        if not path.is_dir():  # (its cells as Python values: 45 bytes each, checked first; a folder of parts as is)
            meta = parquet.read_metadata(path)
            check_memory(meta.num_rows * meta.num_columns * CELL_MEMORY, f"reading {path} ({meta.num_rows:,} rows "
                         f"of {meta.num_columns} columns)", "give fewer rows (a sample of them), or read it on a "
                         "machine with more memory")
        table = parquet.read_table(path)
    except (OSError, ValueError) as exc:  # pyarrow's errors derive from these
        raise VaekitError(f"cannot read {path} as Parquet ({str(exc).splitlines()[0][:100]}): check the file") from None
    names = tuple(str(name) for name in table.column_names)
    return RawTable(str(path), names, tuple(tuple(_python_cell(v) for v in table.column(i).to_pylist())
                                             for i in range(len(names))))


def frame_table(data: Any, names: Sequence[str] | None = None, source: str = "X") -> RawTable:
    """A pandas DataFrame (its columns and dtypes) or a 2-D array (numbers; columns x0, x1, ...) as a RawTable."""
    if hasattr(data, "columns") and hasattr(data, "iloc"):
        names = tuple(str(name) for name in data.columns)
        columns = tuple(tuple(_python_cell(v) for v in data.iloc[:, i].tolist()) for i in range(len(names)))
        return RawTable(source, names, columns)
    array = np.asarray(data)
    if array.ndim != 2:
        raise VaekitError(f"{source} has shape {array.shape}: expected a 2-D table (rows, columns)")
    names = tuple(names) if names is not None else tuple(f"x{i}" for i in range(array.shape[1]))
    if array.dtype.kind in "biuf":
        values = array.astype(np.float64)
        columns = tuple(tuple(None if math.isnan(v) else v for v in values[:, i].tolist()) for i in range(array.shape[1]))
    else:
        columns = tuple(tuple(_python_cell(v) for v in array[:, i].tolist()) for i in range(array.shape[1]))
    return RawTable(source, names, columns)


# ---- columns and their types ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    """One column of a table as a model sees it. numeric: x_model = (x - mean) / std; binary: values[0] -> 0 and
    values[1] -> 1; categorical: one-hot over `values`. `fill` replaces a missing cell (training mean or mode).
    `integer`: a numeric column whose every value is a whole number (counts, years, ages), written back as whole
    numbers."""

    name: str
    kind: str
    values: tuple[Any, ...] = ()
    mean: float = 0.0
    std: float = 1.0
    fill: Any = None
    integer: bool = False

    @property
    def width(self) -> int:
        return len(self.values) if self.kind == "categorical" else 1

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind == "numeric":
            data.update(mean=self.mean, std=self.std)
            if self.integer:  # (absent in runs trained before it was kept: their values are written as decimals)
                data["integer"] = True
        else:
            data["values"] = list(self.values)
        data["fill"] = self.fill
        return data

    @classmethod
    def from_dict(cls, data: Any) -> "Column":
        try:
            kind = data["kind"]
            if kind not in KINDS:
                raise ValueError(kind)
            column = cls(str(data["name"]), kind, tuple(data.get("values", ())), float(data.get("mean", 0.0)),
                         float(data.get("std", 1.0)), data.get("fill"), data.get("integer", False) is True)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise VaekitError(f"a table column's description {data!r} is damaged: expected name, kind "
                              f"({'/'.join(KINDS)}) and its values or statistics; train the run again") from None
        if (kind == "binary" and len(column.values) != 2) or (kind == "categorical" and len(column.values) < 1) or (
                not (math.isfinite(column.mean) and math.isfinite(column.std) and column.std > 0)):
            raise VaekitError(f"the table column {column.name!r} is described inconsistently ({data!r}): train the run "
                              "again")
        return column


def _sort_key(value: Any) -> tuple:
    return (isinstance(value, str), value)


def _value(cell: Cell) -> Any:
    """A category's stored value: integral numbers as int (so 1.0 reads back as 1), else as is."""
    return int(cell) if isinstance(cell, float) and cell.is_integer() and abs(cell) < 2**53 else cell


def parse_column_types(text: str | dict | None) -> dict[str, str]:
    """"age=numeric,sex=categorical" (or a mapping) -> {"age": "numeric", "sex": "categorical"}."""
    if not text:
        return {}
    pairs = text.items() if isinstance(text, dict) else _type_pairs(str(text))
    types = {}
    for name, kind in pairs:
        name, kind = str(name).strip(), str(kind).strip()
        if not name or kind not in (*KINDS, "ignore"):
            raise VaekitError(f"column types must look like age=numeric,sex=categorical with types "
                              f"{', '.join((*KINDS, 'ignore'))}; got {name}={kind!r}")
        types[name] = kind
    return types


TYPE_PAIR = re.compile(r"\s*(.+?)\s*=\s*(numeric|binary|categorical|ignore)\s*(?:,|$)")


def _type_pairs(text: str) -> list[tuple[str, str]]:
    """NAME=TYPE pairs split at the commas that end a type, so that a name may hold ',' or '=' ("income, USD",
    "id=ref"); a part that is no such pair is returned as it reads, for the error."""
    pairs, at = [], 0
    while at < len(text):
        match = TYPE_PAIR.match(text, at)
        if match is None:
            return [*pairs, *(item.partition("=")[::2] for item in text[at:].split(","))]
        pairs.append((match.group(1), match.group(2)))
        at = match.end()
    return pairs


def infer_kind(name: str, cells: Sequence[Cell], table: RawTable, declared: str | None = None) -> str:
    present = [c for c in cells if c is not None]
    if not present:
        raise VaekitError(f"{table.source}: column {name!r} holds no values (every cell is missing): drop it, e.g. "
                          f"--column-types {name}=ignore")
    large = {c for c in present if isinstance(c, LargeInteger)}
    if large and declared is None and len({float(c) for c in large}) < len(large):
        # distinct integers that merge as floats are IDs (a float would make 200 customers 2): text, so categorical
        # or refused as too many values
        cells = [str(c) if isinstance(c, LargeInteger) else c for c in cells]
        present = [c for c in cells if c is not None]
        large = set()
    distinct = set(present)
    text = next((i for i, c in enumerate(cells) if _text(c) or (isinstance(c, LargeInteger) and declared not in
                                                                  (None, "numeric"))), None)
    if declared == "numeric":
        if text is not None:
            raise VaekitError(f"{table.source}: column {name!r} is declared numeric but holds {cells[text]!r} "
                              f"({table.where(text)}): fix that cell, or declare the column categorical")
        return "numeric"
    if declared == "binary":
        if len(distinct) != 2:
            raise VaekitError(f"{table.source}: column {name!r} is declared binary but holds {len(distinct)} distinct "
                              "values: a binary column has exactly two; declare it categorical or numeric")
        return "binary"
    if declared == "categorical" or (declared is None and text is not None):
        numbers = [c for c in distinct if not _text(c)]
        if declared is None and numbers:  # before the count: one bad cell in a numeric column is not a category
            raise VaekitError(f"{table.source}: column {name!r} mixes numbers and text ({cells[text]!r} at "
                              f"{table.where(text)}): fix that cell, or declare the column categorical "
                              f"(--column-types {name}=categorical)")
        if len(distinct) > MAX_CATEGORIES:
            raise VaekitError(f"{table.source}: column {name!r} holds {len(distinct)} distinct text values, too many "
                              f"for a categorical column (at most {MAX_CATEGORIES}): drop it (--column-types "
                              f"{name}=ignore) or group its values")
        return "binary" if declared is None and len(distinct) == 2 else "categorical"
    distinct = {float(c) if isinstance(c, LargeInteger) else c for c in distinct}  # numbers from here on
    if len(distinct) == 2:
        return "binary"
    integers = all(c.is_integer() for c in distinct)
    if integers and 3 <= len(distinct) <= min(MAX_INTEGER_CATEGORIES, math.sqrt(len(present))):
        return "categorical"
    return "numeric"


# ---- the schema: what the model sees, fitted on the training rows ---------------------------------------------

@dataclass(frozen=True)
class TableSchema:
    """The columns a model is trained on, in order, and how rows are encoded for it and decoded back."""

    columns: tuple[Column, ...]
    label: str | None = None  # the label column, not a feature
    notes: tuple[str, ...] = field(default=(), compare=False)  # what fitting found worth a warning

    @property
    def width(self) -> int:
        return sum(column.width for column in self.columns)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    @property
    def log_scale(self) -> float:
        """sum of log std over the numeric columns: what -log p(x) of a standardised row gains as a density of the
        row in the user's units (the standardisation's log-Jacobian; 0 for a run trained with --no-standardize)."""
        return sum(math.log(column.std) for column in self.columns if column.kind == "numeric")

    def to_dicts(self) -> tuple[dict[str, Any], ...]:
        return tuple(column.to_dict() for column in self.columns)

    @classmethod
    def from_dicts(cls, columns: Sequence[Any]) -> "TableSchema":
        if not columns:
            raise VaekitError("this model was not trained on a table: it has no columns to read or write")
        return cls(tuple(Column.from_dict(column) for column in columns))

    def summary(self, n_train: int | None = None, n_test: int | None = None, source: str = "") -> str:
        kinds = Counter(column.kind for column in self.columns)
        rows = "" if n_train is None else f"{n_train + (n_test or 0)} rows ({n_train} train, {n_test or 0} test), "
        head = (f"{source}: {rows}{len(self.columns)} columns: " + ", ".join(f"{kinds[k]} {k}" for k in KINDS)
                + (f"; label column {self.label!r}" if self.label else ""))

        lines = [head]
        for kind in KINDS:
            chosen = [c for c in self.columns if c.kind == kind]
            if not chosen:
                continue
            shown = [c.name if kind == "numeric" else
                     f"{c.name} ({', '.join(map(str, c.values[:4]))}{', ...' if len(c.values) > 4 else ''})"
                     for c in chosen[:12]]
            lines.append(f"  {kind}: " + ", ".join(shown) + (f" and {len(chosen) - 12} more" if len(chosen) > 12 else ""))
        return "\n".join(lines)

    # ---- rows <-> model vectors ------------------------------------------------------------------------------
    def encode(self, table: RawTable, impute: str = "none", unknown: dict[str, int] | None = None) -> torch.Tensor:
        """Rows of `table` (holding at least this schema's columns) -> float32 (N, width). Missing cells are an error
        naming them, or take the column's fill value (impute="mean"; "drop" rows were dropped before). A value of a
        binary or categorical column the schema does not know is an error naming it; given `unknown` (a dict), it
        takes the column's fill value (its most frequent training value) instead, and unknown[name] counts them."""
        _check_missing(table, self.names, impute)
        parts = []
        for column in self.columns:
            cells = [column.fill if c is None else c for c in _column(table, column.name)]
            part = _encode_column(column, cells, table, unknown)
            peak = float(np.abs(part).max()) if part.size else 0.0
            if peak > FLOAT32_MAX:
                raise VaekitError(f"column {column.name!r} holds values up to {peak:.3g} (as the "
                                  "model takes them), beyond float32's range (3.4e38): rescale the column, or keep "
                                  "--standardize on")
            parts.append(part)
        return torch.from_numpy(np.concatenate(parts, axis=1).astype(np.float32)) if parts else torch.empty(0, 0)

    def decode(self, values: torch.Tensor | np.ndarray, whole: bool = True) -> dict[str, list[Any]]:
        """Model-space means (N, width) -> each column in the user's units: numeric mean * std + mean (rounded to a
        whole number in an integer column, unless `whole` is False), and the most probable value of a binary or
        categorical column."""
        values = np.asarray(values.detach().cpu() if torch.is_tensor(values) else values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != self.width:
            raise VaekitError(f"expected decoded rows of shape (N, {self.width}), got {values.shape}")
        out, start = {}, 0
        for column in self.columns:
            block = values[:, start : start + column.width]
            start += column.width
            if column.kind == "numeric":
                numbers = block[:, 0] * column.std + column.mean
                out[column.name] = ([int(v) if math.isfinite(v) else v for v in np.rint(numbers).tolist()]
                                    if whole and column.integer else numbers.tolist())
            elif column.kind == "binary":
                out[column.name] = [column.values[int(p >= 0.5)] for p in block[:, 0]]
            else:
                out[column.name] = [column.values[i] for i in block.argmax(1)]
        return out


def _column(table: RawTable, name: str) -> tuple[Cell, ...]:
    if name not in table.names:
        close = difflib.get_close_matches(name, list(table.names), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise VaekitError(f"{table.source} has no column {name!r}{hint}: the model was trained on columns with these "
                          "names; give a table that has them")
    return table.column(name)


def _encode_column(column: Column, cells: list[Cell], table: RawTable, unknown: dict[str, int] | None = None
                   ) -> np.ndarray:
    if column.kind == "numeric":
        text = next((i for i, c in enumerate(cells) if _text(c)), None)
        if text is not None:
            raise VaekitError(f"{table.source}: column {column.name!r} is numeric but holds {cells[text]!r} at "
                              f"{table.where(text)}: fix that cell")
        return ((np.asarray(cells, dtype=np.float64) - column.mean) / column.std)[:, None]
    index = {v: i for i, v in enumerate(column.values)}
    codes = []
    for row, cell in enumerate(cells):
        code = index.get(_value(cell))
        if code is None and unknown is not None and column.fill is not None:
            code = index[_value(column.fill)]
            unknown[column.name] = unknown.get(column.name, 0) + 1
        if code is None:
            known = ", ".join(map(str, column.values[:10])) + (", ..." if len(column.values) > 10 else "")
            raise VaekitError(f"{table.source}: column {column.name!r} holds {cell!r} at {table.where(row)}, a value "
                              f"the model has not seen (it knows {known}): fix it, or train on data that has it")
        codes.append(code)
    codes = np.asarray(codes, dtype=np.int64)
    if column.kind == "binary":
        return codes[:, None].astype(np.float64)
    return np.eye(column.width)[codes]


def missing_cells(table: RawTable, names: Sequence[str]) -> dict[str, list[int]]:
    """Column name -> rows with a missing cell, for the given columns."""
    found = {}
    for name in names:
        rows = [i for i, c in enumerate(_column(table, name)) if c is None]
        if rows:
            found[name] = rows
    return found


def _check_missing(table: RawTable, names: Sequence[str], impute: str) -> None:
    if impute != "none":
        return
    found = missing_cells(table, names)
    if found:
        def rows(rows: list[int]) -> str:
            shown = ", ".join(table.where(r) for r in rows[:3])
            return shown + (f" and {len(rows) - 3} more" if len(rows) > 3 else "")

        listed = "; ".join(f"{name} ({rows(r)})" for name, r in list(found.items())[:5])
        more = f"; and {len(found) - 5} more columns" if len(found) > 5 else ""
        raise VaekitError(f"{table.source} has missing values in {len(found)} column(s): {listed}{more}: fill them in, "
                          "or pass --impute mean (the training mean, or most frequent value) or --impute drop (drop "
                          "those rows)")


def fit_schema(table: RawTable, train_rows: Sequence[int], column_types: dict[str, str] | None = None,
               standardize: bool = True, label: str | None = None) -> TableSchema:
    """Each column's type (inferred or declared), its categories (from every row) and its statistics and fill value
    (from the training rows)."""
    column_types = dict(column_types or {})
    for name in column_types:
        if name not in table.names:
            _column(table, name)  # names the column with a suggestion
        if name == label:
            raise VaekitError(f"{name!r} is the label column: it is not a feature, so it takes no column type")
    columns, constant, empty, ids, text_ids = [], [], [], [], []
    for name, cells in zip(table.names, table.columns, strict=True):
        declared = column_types.get(name)
        if name == label or declared == "ignore":
            continue
        if all(cell is None for cell in cells):
            empty.append(name)  # e.g. the column of a trailing comma
            continue
        kind = infer_kind(name, cells, table, declared)
        train = [cells[i] for i in train_rows if cells[i] is not None]
        if kind == "numeric":
            values = np.asarray(train, dtype=np.float64)
            if values.size == 0:
                raise VaekitError(f"{table.source}: column {name!r} has no values in the training rows: drop it, or "
                                  "fill it in")
            with np.errstate(over="ignore", invalid="ignore"):
                mean, std = float(values.mean()), float(values.std())
            if not (math.isfinite(mean) and math.isfinite(std)):
                raise VaekitError(f"{table.source}: column {name!r} holds values too large to standardise (up to "
                                  f"{np.abs(values).max():g}): rescale it, or drop it (--column-types {name}=ignore)")
            if std <= CONSTANT_STD * float(np.abs(values).max()):  # relative to its values' size: 1e-13 can vary
                constant.append(name)
                mean, std = float(values[0]), 1.0  # the value itself: every row encodes to exactly 0
            fill = mean
            if not standardize:
                mean, std = 0.0, 1.0
            # every row's value a whole number (as categories are, from every row): written as digits beyond 2^53
            # (LargeInteger: counts, nanosecond timestamps), or a float that holds it exactly (2.075e24 is a decimal)
            integer = all(isinstance(c, LargeInteger) or (abs(c) < EXACT_INTEGERS and float(c).is_integer())
                          for c in cells if c is not None)
            columns.append(Column(name, kind, (), mean, std, fill, integer))
            if declared is None and looks_like_ids(cells):
                ids.append(name)
        else:
            categories = tuple(sorted({_value(c) for c in cells if c is not None}, key=_sort_key))
            if len(categories) == 1:
                constant.append(name)
            present = sum(c is not None for c in cells)
            if declared is None and kind == "categorical" and present >= ID_ROWS and len(categories) == present:
                text_ids.append(name)  # a small table's names or codes, one per row: each its own category
            counts = Counter(_value(c) for c in train)
            fill = max(categories, key=lambda v: (counts[v], -categories.index(v)))
            columns.append(Column(name, kind, categories, fill=fill))
    if not columns:
        raise VaekitError(f"{table.source} has no feature columns" + (f" besides the label column {label!r}" if label
                                                                      else "") + ": give a table with some")
    notes = []
    if empty:
        notes.append(f"ignored {len(empty)} column(s) without any value ({', '.join(map(repr, empty[:8]))})")
    if constant:
        shown = ", ".join(constant[:8]) + (f" and {len(constant) - 8} more" if len(constant) > 8 else "")
        notes.append(f"{len(constant)} column(s) have zero variance or one value ({shown}): they carry no "
                     "information; drop them (--column-types NAME=ignore)")
    if ids:
        shown = ", ".join(ids[:8]) + (f" and {len(ids) - 8} more" if len(ids) > 8 else "")
        notes.append(f"{len(ids)} column(s) hold a different integer in every row, numbered or too long for a number "
                     f"({shown}): IDs? As numbers they tell the model only a row's place in the numbering; drop them "
                     f"(--column-types {ids[0]}=ignore), or declare them numeric to keep them (--column-types "
                     f"{ids[0]}=numeric)")
    if text_ids:
        shown = ", ".join(text_ids[:8]) + (f" and {len(text_ids) - 8} more" if len(text_ids) > 8 else "")
        notes.append(f"{len(text_ids)} column(s) hold a different text in every row ({shown}): IDs or names? As "
                     "categories each row's value is a class of its own, which tells the model nothing about other "
                     f"rows; drop them (--column-types {text_ids[0]}=ignore)")
    return TableSchema(tuple(columns), label, tuple(notes))


def looks_like_ids(cells: Sequence[Cell]) -> bool:
    """Whether a column of numbers looks like row IDs: at least ID_ROWS values, integers, each in one row only, and
    either numbered without a gap (1..N, in any order) or random 64-bit numbers: nearly all beyond 2^53 (written as
    whole numbers, which a float would round: LargeInteger cells), spread over nearly the whole range of their size
    (nanosecond timestamps of these decades are as large but closer together). A float cell of 2^53 or more was
    written as a number such as 2.5e31, not an ID."""
    present = [c for c in cells if c is not None]
    if len(present) < ID_ROWS:
        return False
    values = []
    for cell in present:
        if not isinstance(cell, LargeInteger) and not (abs(float(cell)) < 2**53 and float(cell).is_integer()):
            return False
        values.append(int(cell) if isinstance(cell, LargeInteger) else int(float(cell)))
    if len(set(values)) != len(values):
        return False
    low, high = min(values), max(values)
    if high - low + 1 == len(values):
        return True
    large = sum(abs(v) >= 2**53 for v in values)
    return large >= 0.9 * len(values) and high - low >= 0.7 * max(abs(low), abs(high))


AS_WRITTEN = "as written"  # in place of a model's columns: a table read as vaekit read one before it read tables


def run_table(run_config: Any, data: Any = None) -> TableSchema | str | None:
    """How a run reads the table file `data` (a DataConfig; the run's own by default): with its model's columns
    (model_table), or AS_WRITTEN for a run that trained on a table file before vaekit read tables as tables (its model
    has no table likelihood, which every table run since has): its numbers went to the model as written, the first
    row a header only where it held no number, whole-number labels as class indices. None: not a table."""
    table = model_table(run_config.model)
    name = (data if data is not None else run_config.data).name
    if table is None and all(Path(str(path)).suffix.lower() in TABLE_SUFFIXES for path in (name, run_config.data.name)):
        return AS_WRITTEN
    return table


def model_table(model_config: Any) -> TableSchema | None:
    """The columns a model (its ModelConfig) was trained on, or None for a model of images or vectors."""
    if getattr(model_config, "likelihood", None) != "table":
        return None
    return TableSchema.from_dicts(model_config.settings("table").columns)


def _digits(column: Column) -> int:
    """Significant digits to write a column's values with: 7, and as many more as its values' spread needs beside
    their size (nanosecond timestamps vary in their 10th digit), at most 17."""
    if column.kind != "numeric" or not column.mean or not column.std or not math.isfinite(column.mean / column.std):
        return 7
    return min(17, 7 + max(0, math.floor(math.log10(abs(column.mean) / column.std))))


def write_rows(schema: TableSchema, values: torch.Tensor | np.ndarray, path: str | Path,
               labels: Sequence[str] | None = None, label_name: str | None = None,
               described: Mapping[str, Sequence[Any]] | None = None) -> Path:
    """Decoded rows in the user's units: a CSV with a header, or .npy (only for tables whose values are numbers).
    `described`: what each row is (e.g. {"dimension": ..., "value": ...} for a traversal), first CSV columns;
    `labels`: each row's class, for rows a label-conditioned model decoded: the next CSV column, named label_name
    (the table's label column) or "label". A .npy holds the values only."""
    path = Path(path)
    decoded = schema.decode(values)
    if path.suffix.lower() == ".csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        taken = set(schema.names)
        label = None
        if labels is not None:  # the label column keeps the name the user's file gave it
            label = label_name or "label"
            taken.add(label)
        leading = {}
        for name, column_values in (described or {}).items():
            while name in taken:  # a description named as one of the user's columns is renamed, never lost
                name = f"{name} (row)"
            taken.add(name)
            leading[name] = list(column_values)
        if label is not None:
            leading[label] = list(labels)
        writer.writerow([*leading, *schema.names])
        columns = [list(values) for values in leading.values()] + [
            [f"{v:.{_digits(column)}g}" if isinstance(v, float) else v for v in decoded[column.name]]
            for column in schema.columns]
        writer.writerows(zip(*columns, strict=True))
        write_text(path, buffer.getvalue())
    elif path.suffix.lower() == ".npy":
        # (integers too large for a float to hold exactly are kept as written, and are numbers all the same)
        text = [c.name for c in schema.columns if any(isinstance(v, str) and not v.lstrip("+-").isdigit()
                                                      for v in c.values)]
        if text:
            raise VaekitError(f"column {text[0]!r} holds text, which a .npy array cannot: write --out FILE.csv")
        array = np.column_stack([np.asarray(decoded[name], dtype=np.float64) for name in schema.names])
        atomic_write(path, lambda tmp: np.save(tmp, array))
    else:
        raise VaekitError(f"cannot write {path}: a table model writes rows to a .csv (or .npy) file")
    return path
