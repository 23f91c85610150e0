"""Tables: reading and typing columns, standardisation stored and inverted, missing values, the table likelihood
against torch's distributions, the warnings, and the CLI on a CSV."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import re
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch.distributions import Bernoulli, Categorical, Normal

import vaekit
from vaekit import checkpoint, latent
from vaekit.cli import main
from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaekit.data import load_dataset, tables
from vaekit.distributions import TableLikelihood
from vaekit.errors import VaekitError
from vaekit.extras import install_hint

MIXED_HEADER = "age,sex,smoker,chest_pain,income,city,target"


def mixed_rows(n: int, seed: int = 0) -> list[str]:
    """Rows of every column type: numeric (age, income: scales 1e1 and 1e4), binary text (sex), binary 0/1 (smoker),
    categorical integers (chest_pain 0..3), categorical text (city), a 0/1 label."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        group = rng.integers(0, 2)
        age = rng.normal(40 + 20 * group, 5)
        income = rng.normal(30000 + 40000 * group, 5000)
        rows.append(f"{age:.1f},{'FM'[rng.integers(0, 2)]},{int(rng.random() < 0.2 + 0.6 * group)},"
                    f"{rng.integers(0, 4)},{income:.0f},{['Oslo', 'Lima', 'Pune'][rng.integers(0, 3)]},{group}")
    return rows


@pytest.fixture()
def mixed_csv(tmp_path):
    path = tmp_path / "people.csv"
    path.write_text("\n".join([MIXED_HEADER, *mixed_rows(400)]) + "\n")
    return path


def load(path, **fields):
    return load_dataset(DataConfig(name=str(path), **fields))


# ---- reading and typing ------------------------------------------------------------------------------------

def test_a_csv_too_large_for_the_memory_is_refused_and_a_long_read_shows_a_bar(tmp_path, monkeypatch):
    """Reading a CSV holds its cells as Python values (about 14 bytes per byte of text and 45 per cell): a file
    that needs more than half of the memory is one line before its rows are made, and a read taking more than a
    second shows a bar (300,000 rows: 12 s of nothing on screen before)."""
    import io

    from vaekit.data import safe

    path = tmp_path / "t.csv"
    path.write_text("a,b\n" + "".join(f"{i},{i % 7}\n" for i in range(1000)))
    need = len(path.read_text()) * tables.TEXT_MEMORY + (1001 * 2) * tables.CELL_MEMORY
    monkeypatch.setattr(safe, "memory_budget", lambda: need - 1)
    with pytest.raises(VaekitError, match=r"reading .*t\.csv \(0\.0 MiB of text\) needs .* GiB of memory, more than "
                                          r"half .*: give fewer rows \(a sample of them\)"):
        tables.read_table(path)
    monkeypatch.setattr(safe, "memory_budget", lambda: need)
    assert tables.read_table(path).n_rows == 1000
    with monkeypatch.context() as patch:  # a file whose text alone is too much: refused before it is read
        patch.setattr(safe, "memory_budget", lambda: path.stat().st_size * tables.TEXT_MEMORY - 1)
        patch.setattr(type(path), "read_text", lambda *_, **__: pytest.fail("read before its size was checked"))
        with pytest.raises(VaekitError, match=r"reading .*t\.csv \(0\.0 MiB\) needs .* of memory, more than half"):
            tables.read_table(path)
    pyarrow = pytest.importorskip("pyarrow")  # a Parquet file: by its rows and columns, before any is read
    import pyarrow.parquet

    pyarrow.parquet.write_table(pyarrow.table({"a": list(range(1000)), "b": [i % 7 for i in range(1000)]}),
                                tmp_path / "t.parquet")
    monkeypatch.setattr(safe, "memory_budget", lambda: 2000 * tables.CELL_MEMORY - 1)
    with pytest.raises(VaekitError, match=r"reading .*t\.parquet \(1,000 rows of 2 columns\) needs"):
        tables.read_table(tmp_path / "t.parquet")
    monkeypatch.setattr(safe, "memory_budget", lambda: 2000 * tables.CELL_MEMORY)
    assert tables.read_table(tmp_path / "t.parquet").n_rows == 1000
    (tmp_path / "parts.parquet").mkdir()  # a folder of parts, as Spark and Dask write: read as it is
    (tmp_path / "t.parquet").rename(tmp_path / "parts.parquet" / "part-0.parquet")
    assert tables.read_table(tmp_path / "parts.parquet").n_rows == 1000
    monkeypatch.undo()

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    shown = Terminal()
    monkeypatch.setattr(sys, "stderr", shown)
    monkeypatch.setattr(tables, "bar_timing", lambda interval=0.1, delay=0.0: {"mininterval": 0, "delay": 0})
    tables.read_table(path)  # (the bar's delay made 0: as a read of over a second shows it)
    assert "reading t.csv" in shown.getvalue() and "parsing t.csv" in shown.getvalue()


def test_column_types_are_inferred_on_a_mixed_csv(mixed_csv):
    dataset = load(mixed_csv, label_column="target")
    kinds = {column.name: (column.kind, column.values) for column in dataset.table.columns}
    assert kinds == {"age": ("numeric", ()), "sex": ("binary", ("F", "M")), "smoker": ("binary", (0, 1)),
                     "chest_pain": ("categorical", (0, 1, 2, 3)), "income": ("numeric", ()),
                     "city": ("categorical", ("Lima", "Oslo", "Pune"))}
    assert dataset.shape == (1 + 1 + 1 + 4 + 1 + 3,) and dataset.label_names == ("0", "1")
    assert set(torch.cat([dataset.y_train, dataset.y_test]).tolist()) == {0, 1}
    # categorical blocks are one-hot, binary columns 0/1
    x = torch.cat([dataset.x_train, dataset.x_test])
    assert torch.equal(x[:, 3:7].sum(1), torch.ones(len(x))) and torch.equal(x[:, 8:11].sum(1), torch.ones(len(x)))
    assert set(x[:, 1].tolist()) == {0.0, 1.0}


def test_integer_columns_are_those_whose_every_value_is_a_whole_number(tmp_path):
    """A numeric column is written back in whole numbers where every value of the file is one: counts (negative
    too, with gaps), years written 1999.0, integers written beyond 2^53; not masses of 2.075e24 (whole as floats,
    decimals as written) nor a column with one fraction."""
    rng = np.random.default_rng(0)
    rows = ["count,year,stamp,mass,price"]
    for i in range(60):
        rows.append(f"{rng.integers(-50, 50) if i % 7 else ''},{rng.integers(1950, 2020)}.0,"
                    f"{1_700_000_000_000_000_000 + int(rng.integers(0, 10**12))},{rng.uniform(1, 3):.3f}e24,"
                    f"{rng.integers(1, 99) + (0.5 if i == 30 else 0)}")
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    table = tables.read_table(tmp_path / "t.csv")
    schema = tables.fit_schema(table, range(50), {name: "numeric" for name in table.names})
    assert {column.name: column.integer for column in schema.columns} == {
        "count": True, "year": True, "stamp": True, "mass": False, "price": False}
    decoded = schema.decode(np.array([[0.3, -0.2, 0.1, 0.4, 0.7]]))
    assert [type(decoded[name][0]) for name in schema.names] == [int, int, int, float, float]
    assert schema == tables.TableSchema.from_dicts(schema.to_dicts())  # kept with the run
    assert "integer" not in schema.to_dicts()[3]  # (only where it is so: runs before it read as they did)


def test_column_types_can_be_overridden_and_columns_ignored(mixed_csv):
    dataset = load(mixed_csv, label_column="target", column_types="chest_pain=numeric,city=ignore,smoker=categorical")
    kinds = {column.name: column.kind for column in dataset.table.columns}
    assert kinds == {"age": "numeric", "sex": "binary", "smoker": "categorical", "chest_pain": "numeric",
                     "income": "numeric"}
    with pytest.raises(VaekitError, match="did you mean city"):
        load(mixed_csv, column_types="cityy=ignore")
    with pytest.raises(VaekitError, match="'sex' is declared numeric but holds 'M'|'sex' is declared numeric but holds 'F'"):
        load(mixed_csv, column_types="sex=numeric")
    with pytest.raises(VaekitError, match="must look like age=numeric"):
        load(mixed_csv, column_types="age=number")
    # names holding a comma or '=' (a CSV may name a column so): split at the commas that end a type
    assert tables.parse_column_types("income, USD=numeric,id=ref=ignore, a = binary") == {
        "income, USD": "numeric", "id=ref": "ignore", "a": "binary"}
    path = mixed_csv.with_name("quoted.csv")
    path.write_text(mixed_csv.read_text().replace("income,city", '"income, USD","city=town"', 1))
    kinds = {column.name: column.kind
             for column in load(path, column_types="income, USD=ignore,city=town=categorical,target=ignore").table.columns}
    assert kinds["city=town"] == "categorical" and "income, USD" not in kinds and len(kinds) == 5


@pytest.mark.parametrize("delimiter,suffix", [(";", ".csv"), ("\t", ".tsv"), ("|", ".csv")])
def test_delimiters_are_sniffed(tmp_path, delimiter, suffix):
    lines = [MIXED_HEADER.replace(",", delimiter)] + [row.replace(",", delimiter) for row in mixed_rows(50)]
    path = tmp_path / f"people{suffix}"
    path.write_text("\n".join(lines) + "\n")
    dataset = load(path, label_column="target")
    assert dataset.table.names == ("age", "sex", "smoker", "chest_pain", "income", "city")


def test_decimal_commas_of_a_semicolon_file_are_numbers(tmp_path, caplog):
    """2,5 in a semicolon or tab file is 2.5 (it was text: a category, or refused as too many values), said once;
    a column of other text, and a comma file, are left as they are."""
    rng = np.random.default_rng(0)
    values = rng.normal(10, 3, 80)
    cells = [f"{v:.3f}".replace(".", ",") for v in values]
    cells[3], cells[7], cells[9] = "-2,5", "7", ",5"  # a sign, a whole number, no leading digit
    path = tmp_path / "euro.csv"
    path.write_text("price;city;n\n" + "".join(f"{c};{'AB'[i % 2]},{i % 3};{i}\n" for i, c in enumerate(cells)))
    with caplog.at_level(logging.WARNING):
        table = tables.read_table(path)
    price = [float(c.replace(",", ".")) for c in cells]
    assert table.column("price") == tuple(price)
    assert table.column("city")[:2] == ("A,0", "B,1")  # text with a comma, not a number: as it is
    assert "read 'price' with decimal commas (2,5 as 2.5)" in caplog.text and "'city'" not in caplog.text
    assert load(path).table.columns[0].kind == "numeric"
    # every cell of the form 1,234: a thousands separator as well, so left as text
    path.write_text("n;m\n" + "".join(f"{i},{i * 37 % 1000:03};{i}\n" for i in range(1, 40)))
    assert tables.read_table(path).column("n")[:2] == ("1,037", "2,074")
    comma = tmp_path / "comma.csv"
    comma.write_text('a,b\n"1,5",2\n"2,5",3\n"3,5",4\n')
    assert tables.read_table(comma).column("a") == ("1,5", "2,5", "3,5")


def test_a_header_without_rows_and_unknown_column_types_are_named(tmp_path):
    path = tmp_path / "header.csv"
    path.write_text("age,score,colour,label\n")
    with pytest.raises(VaekitError, match="header.csv has 0 data rows: need at least 2"):
        load(path)
    path.write_text("a,b\n" + "\n".join(f"{i},{i * 2}" for i in range(10)) + "\n")
    with pytest.raises(VaekitError, match="has no column 'bb' for --column-types: did you mean b\\? its columns are a, b"):
        load(path, column_types="bb=ignore")


def test_headerless_and_all_text_tables(tmp_path):
    path = tmp_path / "plain.csv"
    path.write_text("\n".join(mixed_rows(60)) + "\n")
    dataset = load(path, label_column="6")
    assert dataset.table.names == ("0", "1", "2", "3", "4", "5")
    # an all-text table whose first row's values recur is data, not a header
    path = tmp_path / "text.csv"
    path.write_text("\n".join(["red,small", "blue,large", "red,large", "green,small"] * 5) + "\n")
    assert load(path).table.names == ("0", "1")


def test_a_header_of_numbers_is_told_from_a_first_row_of_data(tmp_path, caplog):
    rng = np.random.default_rng(0)
    values = rng.random((20, 4))
    body = "\n".join(",".join(f"{v:.3f}" for v in row) for row in values) + "\n"
    spectra = tmp_path / "spectra.csv"  # wavelengths over measurements in [0, 1]
    spectra.write_text("400,450,500,550\n" + body)
    with caplog.at_level(logging.WARNING):  # a guess, so said where it shows
        dataset = load(spectra)
    assert dataset.table.names == ("400", "450", "500", "550") and len(dataset.x_train) + len(dataset.x_test) == 20
    assert "read its first row (400,450,500,550) as column names; --header no reads it as data" in caplog.text
    assert tables.read_table(spectra, "no").n_rows == 21
    # years over values in their range beside a name over categories (region,2019,2020): data, with the warning;
    # a headerless first row whose text recurs below, or a text ID column's (every value new), without it
    years = "".join(f"{'NSEW'[i % 4]},{rng.integers(1800, 2300)},{rng.integers(1800, 2300)}\n" for i in range(30))
    path = tmp_path / "years.csv"
    for first, warned in (("region,2019,2020", True), ("N,2019,2020", False)):
        path.write_text(f"{first}\n{years}")
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert tables.read_table(path).names == ("0", "1", "2")
        assert (f"read its first row ({first}) as data, though it could name the columns" in caplog.text) is warned
    path.write_text("".join(f"id{i:03},{rng.integers(0, 50)},{rng.integers(0, 50)}\n" for i in range(30)))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert tables.read_table(path).names == ("0", "1", "2")
    assert "could name the columns" not in caplog.text
    # headerless bits that start 0,1: data, although it reads like pandas' unnamed columns
    bits = rng.integers(0, 2, (20, 2))
    bits[0] = (0, 1)
    path = tmp_path / "bits.csv"
    path.write_text("\n".join(f"{a},{b}" for a, b in bits) + "\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        table = tables.read_table(path)
    assert table.names == ("0", "1") and table.n_rows == 20 and table.columns[0][0] == 0.0
    assert "read its first row (0,1) as data, though it could name the columns" in caplog.text
    # a first row of data stays data: one inside its columns' range, and one outlying row of fractions (warned)
    path.write_text("0.5,0.25,0.75,0.125\n" + body)
    assert tables.read_table(path).n_rows == 21
    caplog.clear()
    path.write_text("1.5,2.5,3.5,4.5\n" + body)
    with caplog.at_level(logging.WARNING):
        assert tables.read_table(path).n_rows == 21
    assert "read its first row (1.5,2.5,3.5,4.5) as data, though it could name the columns; --header yes" in \
        caplog.text
    table = tables.read_table(path, "yes")
    assert table.names == ("1.5", "2.5", "3.5", "4.5") and table.n_rows == 20
    # pandas' unnamed columns over small counts (to_csv(index=False)): with three columns, names, with a warning
    counts = rng.integers(0, 6, (50, 3))
    path.write_text("0,1,2\n" + "\n".join(",".join(map(str, row)) for row in counts) + "\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert tables.read_table(path).n_rows == 50
    assert "read its first row (0,1,2) as column names; --header no reads it as data" in caplog.text
    # the first row of a table sorted by size: whole numbers just beyond every column's values, but data
    path.write_text("1,2,0\n3,4,1\n5,6,1\n6,9,1\n")
    assert tables.read_table(path).n_rows == 4
    # names beside numbers: a sample column named in text, wavelengths over measurements; and a data row of text
    path.write_text("sample,400,450\n" + "\n".join(f"s{i},{v[0]:.3f},{v[1]:.3f}" for i, v in enumerate(values)) + "\n")
    assert tables.read_table(path).names == ("sample", "400", "450")
    path.write_text("alice,0.5,0.25\n" + "\n".join(f"s{i},{v[0]:.3f},{v[1]:.3f}" for i, v in enumerate(values)) + "\n")
    assert tables.read_table(path).n_rows == 21
    # one column: a whole number above the rest is not taken for a name
    path.write_text("7\n" + "\n".join(str(v) for v in values[:, 0]) + "\n")
    assert tables.read_table(path).n_rows == 21
    # the setting reaches the reader from the command line's data section
    assert len(load(spectra, header="no").table.names) == 4 and load(spectra, header="no").table.names[0] == "0"
    with pytest.raises(VaekitError, match="header must be one of auto, yes, no"):
        tables.read_table(spectra, "maybe")


def test_parquet_reads_like_csv(mixed_csv, tmp_path):
    pandas = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    frame = pandas.read_csv(mixed_csv)
    frame.loc[3, "age"] = None
    frame.to_parquet(tmp_path / "people.parquet")
    from_parquet = load(tmp_path / "people.parquet", label_column="target", impute="mean")
    from_csv = load(mixed_csv, label_column="target")
    assert from_parquet.table.names == from_csv.table.names
    assert [c.kind for c in from_parquet.table.columns] == [c.kind for c in from_csv.table.columns]


def test_parquet_without_pyarrow_is_a_clear_error(tmp_path, monkeypatch):
    from conftest import fail_import

    fail_import(monkeypatch, "pyarrow", ImportError("No module named 'pyarrow'", name="pyarrow"))
    (tmp_path / "t.parquet").write_bytes(b"PAR1")
    with pytest.raises(VaekitError, match=re.escape(f"needs pyarrow: {install_hint('tables')}")):
        load(tmp_path / "t.parquet")


def test_bad_columns_are_named(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_text("id,x\n" + "\n".join(f"user{i},{i * 0.5}" for i in range(80)) + "\n")
    with pytest.raises(VaekitError, match="'id' holds 80 distinct text values.*--column-types id=ignore"):
        load(path)
    assert load(path, column_types="id=ignore").table.names == ("x",)
    path.write_text("x,y\n" + "\n".join(f"{i},{i}" for i in range(20)) + "\n25,inf\n")
    with pytest.raises(VaekitError, match="'y' mixes numbers and text \\('inf' at line 22\\)"):
        load(path)
    # one typo in a column of 200 distinct numbers is that cell, not a categorical column of too many values
    rows = [f"{170 + i * 0.1:.1f},{60 + i * 0.1:.1f}" for i in range(200)]
    rows[57] = "175.7,7O.2"
    path.write_text("height,weight\n" + "\n".join(rows) + "\n")
    with pytest.raises(VaekitError, match="'weight' mixes numbers and text \\('7O.2' at line 59\\)"):
        load(path)
    # integers a float cannot hold exactly are IDs: 80 of them do not merge into one or two numbers
    path.write_text("id,x\n" + "\n".join(f"{2**60 + i},{i * 0.5}" for i in range(80)) + "\n")
    with pytest.raises(VaekitError, match="'id' holds 80 distinct text values"):
        load(path)
    assert tables.parse_cell(str(2**53)) == float(2**53) and tables.parse_cell(str(2**53 + 1)) == str(2**53 + 1)
    # but large integers that stay distinct as floats are numbers (nanosecond timestamps), and a column declared
    # numeric is read as numbers whatever they merge to
    path.write_text("ts,x\n" + "\n".join(f"{1_700_000_000_000_000_000 + i * 10**12},{i * 0.5}" for i in range(80)))
    assert load(path).table.columns[0].kind == "numeric"
    assert tables._digits(load(path).table.columns[0]) == 11  # written with the digits that tell its values apart
    path.write_text("id,x\n" + "\n".join(f"{2**60 + i},{i * 0.5}" for i in range(80)) + "\n")
    assert load(path, column_types="id=numeric").table.columns[0].kind == "numeric"
    # two such integers that are one float make a binary column of the written values; its rows still go to a .npy
    path.write_text("flag,x\n" + "\n".join(f"{2**60 + 5 * (i % 2)},{i * 0.5}" for i in range(40)) + "\n")
    schema = load(path).table
    assert schema.columns[0].kind == "binary" and schema.columns[0].values == (str(2**60), str(2**60 + 5))
    rows = tables.write_rows(schema, torch.zeros(3, schema.width), tmp_path / "rows.npy")
    assert np.load(rows).shape == (3, 2)
    # values the model's float32 cannot hold, kept unscaled
    path.write_text("a,b\n" + "\n".join(f"{(i + 1) * 1e37},{i}" for i in range(40)) + "\n")
    with pytest.raises(VaekitError, match="column 'a' holds values up to 4e\\+38 .*beyond float32's range"):
        load(path, standardize=False)
    assert load(path).x_train.isfinite().all()  # standardised, they fit


# ---- standardisation ------------------------------------------------------------------------------------------

def test_standardisation_uses_training_statistics_and_inverts_exactly(mixed_csv):
    dataset = load(mixed_csv, label_column="target")
    age = dataset.table.columns[0]
    raw = np.loadtxt(mixed_csv, delimiter=",", skiprows=1, usecols=0)
    train = raw[np.isin(np.arange(len(raw)), _train_rows(len(raw)))]
    assert age.mean == pytest.approx(train.mean(), rel=1e-12) and age.std == pytest.approx(train.std(), rel=1e-12)
    assert abs(float(dataset.x_train[:, 0].mean())) < 1e-5 and float(dataset.x_test[:, 0].mean()) != 0
    # decode(encode(rows)) gives the rows back in the user's units, every column
    table = tables.read_table(mixed_csv)
    decoded = dataset.table.decode(dataset.table.encode(table))
    np.testing.assert_allclose(decoded["income"], np.array(table.column("income")), rtol=1e-6)
    assert decoded["city"] == list(table.column("city")) and decoded["sex"] == list(table.column("sex"))
    assert decoded["chest_pain"] == [int(v) for v in table.column("chest_pain")]


def _train_rows(n: int) -> list[int]:
    from vaekit.data.user import _split_indices

    return _split_indices(n, 0.1)[0].tolist()


def test_a_trained_table_model_reconstructs_in_the_users_units(mixed_csv, tmp_path):
    cfg = RunConfig(data=DataConfig(name=str(mixed_csv), label_column="target"),
                    model=ModelConfig(latent_dim=2, hidden_dims=(64, 64)),
                    train=TrainConfig(epochs=60, progress=False))
    result = vaekit.train(cfg, out=tmp_path / "run")
    stored = json.loads((tmp_path / "run" / "config.json").read_text())["model"]["table"]["columns"]
    assert [c["name"] for c in stored] == ["age", "sex", "smoker", "chest_pain", "income", "city"]
    model = checkpoint.load(tmp_path / "run")
    dataset = load_dataset(result.config.data, tables.model_table(model.config))
    x = dataset.x_test
    decoded = tables.model_table(model.config).decode(model.reconstruct(x))
    truth = tables.model_table(model.config).decode(x)
    income, truth_income = np.array(decoded["income"]), np.array(truth["income"])
    # income is bimodal (30k / 70k, std 5k within a group): the 2-D code must carry the group, in dollars
    assert abs(income.mean() - truth_income.mean()) < 5000
    assert np.sqrt(np.mean((income - truth_income) ** 2)) < 0.5 * truth_income.std()
    report = vaekit.metrics.evaluate(model, x, iw_samples=10).columns
    assert set(report) == {"age", "sex", "smoker", "chest_pain", "income", "city"}
    assert report["income"]["rmse"] < 0.5 * truth_income.std() and report["smoker"]["accuracy"] > 0.6


# ---- missing values -------------------------------------------------------------------------------------------

def test_missing_values_are_named_or_imputed_or_dropped(tmp_path):
    rows = mixed_rows(100)
    rows[4] = rows[4].replace(rows[4].split(",")[0], "", 1)  # age missing on line 6
    rows[9] = ",".join(["NA" if i == 5 else v for i, v in enumerate(rows[9].split(","))])  # city, line 11
    path = tmp_path / "gaps.csv"
    path.write_text("\n".join([MIXED_HEADER, *rows]) + "\n")
    with pytest.raises(VaekitError, match=r"missing values in 2 column\(s\): age \(line 6\); city \(line 11\).*"
                                          "--impute mean.*--impute drop"):
        load(path, label_column="target")
    dropped = load(path, label_column="target", impute="drop")
    assert len(dropped.x_train) + len(dropped.x_test) == 98
    filled = load(path, label_column="target", impute="mean")
    assert len(filled.x_train) + len(filled.x_test) == 100
    age = filled.table.columns[0]
    encoded = filled.table.encode(tables.read_table(path), impute="mean")
    assert float(encoded[4, 0]) == pytest.approx((age.fill - age.mean) / age.std, abs=1e-6)
    city = filled.table.columns[5]
    assert city.fill in city.values and encoded[9, 8:11].tolist().count(1.0) == 1


def test_a_missing_label_is_an_error_unless_dropped(tmp_path):
    rows = mixed_rows(30)
    rows[2] = rows[2].rsplit(",", 1)[0] + ","
    path = tmp_path / "labels.csv"
    path.write_text("\n".join([MIXED_HEADER, *rows]) + "\n")
    with pytest.raises(VaekitError, match="label column 'target' is missing at line 4"):
        load(path, label_column="target")
    assert len(load(path, label_column="target", impute="drop").table.columns) == 6


def test_a_new_files_missing_label_is_left_out_unless_the_model_needs_it(mixed_csv, tmp_path, capsys, caplog):
    """A file for a trained run: a blank label cell leaves the labels out with a warning (it was an error that
    advised --impute drop, which would lose the row), so an unconditioned model encodes every row; a conditioned
    one is refused."""
    rows = mixed_rows(20, seed=4)
    rows[2] = rows[2].rsplit(",", 1)[0] + ","
    new = tmp_path / "new.csv"
    new.write_text("\n".join([MIXED_HEADER, *rows]) + "\n")
    for condition, code in (([], 0), (["--condition", "label"], 2)):
        run = tmp_path / f"run{code}"
        assert main(["train", "--data", str(mixed_csv), "--label-column", "target", *condition, "--latent-dim", "2",
                     "--epochs", "1", "--out", str(run), "--no-progress"]) == 0
        capsys.readouterr()
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert main(["encode", str(run), "--data", str(new), "--out", str(tmp_path / "c.npy")]) == code
        err = capsys.readouterr().err
        assert "the label column 'target' is missing at line 4: the file's labels are left out" in caplog.text
    assert np.load(tmp_path / "c.npy").shape == (20, 2)
    assert "the model is conditioned on labels, but new gives no labels in a column 'target' (the column is " \
           "missing, or a cell of it blank)" in err and err.count("\n") == 1


# ---- the table likelihood against torch's distributions -------------------------------------------------------

def test_the_table_likelihood_is_the_sum_of_torch_distributions(mixed_csv):
    dataset = load(mixed_csv, label_column="target")
    settings = TableLikelihood.Settings(columns=dataset.table.to_dicts())
    likelihood = TableLikelihood(dataset.shape, settings)
    with torch.no_grad():
        likelihood.log_std.copy_(torch.tensor([0.3, -0.5]))
    generator = torch.Generator().manual_seed(0)
    x = dataset.x_train[:64]
    params = torch.randn(64, dataset.shape[0], generator=generator) * 3
    expected = (Normal(params[:, 0], math.exp(0.3)).log_prob(x[:, 0])
                + Bernoulli(logits=params[:, 1]).log_prob(x[:, 1]) + Bernoulli(logits=params[:, 2]).log_prob(x[:, 2])
                + Categorical(logits=params[:, 3:7]).log_prob(x[:, 3:7].argmax(1))
                + Normal(params[:, 7], math.exp(-0.5)).log_prob(x[:, 7])
                + Categorical(logits=params[:, 8:11]).log_prob(x[:, 8:11].argmax(1)))
    torch.testing.assert_close(-likelihood.nll(params, x), expected, rtol=1e-5, atol=1e-5)
    nll, _ = likelihood.column_errors(params, x)
    torch.testing.assert_close(nll[:, 3], -Categorical(logits=params[:, 3:7]).log_prob(x[:, 3:7].argmax(1)))
    # K samples at once, x broadcast: the same numbers
    stacked = torch.stack([params, params.flip(0)])
    torch.testing.assert_close(likelihood.log_prob_samples(stacked.flatten(0, 1), x)[1],
                               -likelihood.nll(params.flip(0), x))
    mean = likelihood(params).mean
    torch.testing.assert_close(mean[:, 3:7], torch.softmax(params[:, 3:7], 1))
    torch.testing.assert_close(mean[:, 1], torch.sigmoid(params[:, 1]))
    draw = likelihood(params).sample()
    assert torch.equal(draw[:, 3:7].sum(1), torch.ones(64)) and set(draw[:, 1].tolist()) <= {0.0, 1.0}


def test_the_table_likelihood_refuses_other_data_and_damaged_columns(mixed_csv):
    dataset = load(mixed_csv, label_column="target")
    likelihood = TableLikelihood(dataset.shape, TableLikelihood.Settings(columns=dataset.table.to_dicts()))
    with pytest.raises(VaekitError, match="table's encoding"):
        likelihood.check_support(torch.rand(4, dataset.shape[0]))
    damaged = [dict(column) for column in dataset.table.to_dicts()]
    damaged[1]["values"] = ["F"]
    with pytest.raises(VaekitError, match="described inconsistently"):
        TableLikelihood(dataset.shape, TableLikelihood.Settings(columns=tuple(damaged)))
    with pytest.raises(VaekitError, match="the table likelihood needs a table"):
        vaekit.train(RunConfig(data=DataConfig(name="digits"), model=ModelConfig(likelihood="table"),
                               train=TrainConfig(epochs=0, progress=False)))
    with pytest.raises(VaekitError, match="drop --likelihood gaussian"):
        vaekit.train(RunConfig(data=DataConfig(name=str(mixed_csv)), model=ModelConfig(likelihood="gaussian"),
                               train=TrainConfig(epochs=0, progress=False)))


# ---- warnings -------------------------------------------------------------------------------------------------

def _scaled_table(tmp_path, rows: int = 300):
    """30 raw measurements from 2 factors, on scales from 0.001 to 2500 (like the issue's medical table)."""
    rng = np.random.default_rng(1)
    factors = rng.normal(size=(rows, 2))
    scales = np.geomspace(1e-3, 2500, 30)
    values = (factors @ rng.normal(size=(2, 30)) + 0.1 * rng.normal(size=(rows, 30)) + 5) * scales
    path = tmp_path / "raw.csv"
    path.write_text(",".join(f"f{i}" for i in range(30)) + "\n" + "\n".join(",".join(f"{v:.6g}" for v in row)
                                                                       for row in values) + "\n")
    return path


def test_unscaled_features_warn_and_standardised_ones_do_not(tmp_path, caplog):
    path = _scaled_table(tmp_path)
    cfg = RunConfig(data=DataConfig(name=str(path), standardize=False), model=ModelConfig(latent_dim=2),
                    train=TrainConfig(epochs=5, progress=False))
    with caplog.at_level(logging.WARNING):
        vaekit.train(cfg)
    assert "far above" in caplog.text and "keep standardisation on" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        result = vaekit.train(replace(cfg, data=DataConfig(name=str(path))))
    assert "far above" not in caplog.text and "posterior collapse" not in caplog.text
    assert result.history[-1].val["kl"] < 3 * math.log(270)


def test_collapse_and_constant_columns_warn(tmp_path, caplog):
    path = _scaled_table(tmp_path)
    text = path.read_text().splitlines()
    path.write_text("\n".join([text[0] + ",same"] + [line + ",7" for line in text[1:]]) + "\n")
    cfg = RunConfig(data=DataConfig(name=str(path)), model=ModelConfig(latent_dim=2, beta=200.0),
                    train=TrainConfig(epochs=5, progress=False))
    with caplog.at_level(logging.WARNING):
        vaekit.train(cfg)
    assert "zero variance or one value (same)" in caplog.text
    assert "posterior collapse" in caplog.text


# ---- the CLI ----------------------------------------------------------------------------------------------------

def test_cli_trains_on_a_csv_and_writes_rows_in_the_users_units(mixed_csv, tmp_path, capsys, caplog):
    run = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        assert main(["train", "--data", str(mixed_csv), "--label-column", "target", "--latent-dim", "2", "--epochs",
                     "3", "--out", str(run), "--no-progress"]) == 0
    assert "400 rows (360 train, 40 test), 6 columns: 2 numeric, 2 binary, 2 categorical" in caplog.text
    assert "categorical: chest_pain (0, 1, 2, 3), city (Lima, Oslo, Pune)" in caplog.text
    assert main(["sample", str(run), "--n", "7", "--out", str(tmp_path / "s.csv")]) == 0
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0] == "age,sex,smoker,chest_pain,income,city" and len(lines) == 8
    income = [float(line.split(",")[4]) for line in lines[1:]]
    assert all(1000 < v < 200000 for v in income)  # dollars, not standardised units
    # income was written in whole dollars in every row: so are its rows here; age, written with a decimal, is not
    assert all(re.fullmatch(r"-?[0-9]+", line.split(",")[4]) for line in lines[1:])
    assert sum("." in line.split(",")[0] for line in lines[1:]) >= 5
    assert all(line.split(",")[5] in ("Lima", "Oslo", "Pune") for line in lines[1:])
    # sampled rows are drawn from p(x|z) by default (as scikit-learn's sample draws), so they vary as the data does:
    # the same prior draws decoded to their most likely values (--no-draw) vary less, and the draws are seeded
    rows = {}
    for name, flags in (("drawn", []), ("drawn2", ["--draw"]), ("means", ["--no-draw"])):
        assert main(["sample", str(run), "--n", "1000", "--seed", "3", *flags, "--out", str(tmp_path / "r.csv")]) == 0
        rows[name] = [line.split(",") for line in (tmp_path / "r.csv").read_text().splitlines()[1:]]
    assert rows["drawn"] == rows["drawn2"] != rows["means"]
    for column in (0, 4):  # age, income
        assert np.std([float(r[column]) for r in rows["drawn"]]) > np.std([float(r[column]) for r in rows["means"]])
    assert {r[5] for r in rows["drawn"]} == {"Lima", "Oslo", "Pune"}  # each city about a third of the data
    # a new file is read with the run's columns and statistics: an unseen category is named
    new = tmp_path / "new.csv"
    new.write_text(MIXED_HEADER + "\n" + "\n".join(mixed_rows(5, seed=3)).replace("Oslo", "Rome") + "\n")
    assert main(["encode", str(run), "--data", str(new), "--out", str(tmp_path / "codes.npy")]) == 2
    assert "'Rome'" in capsys.readouterr().err
    assert main(["encode", str(run), "--split", "train", "--out", str(tmp_path / "codes.npy")]) == 0
    assert main(["decode", str(run), str(tmp_path / "codes.npy"), "--out", str(tmp_path / "rows.npy")]) == 2
    assert "holds text" in capsys.readouterr().err
    assert main(["decode", str(run), str(tmp_path / "codes.npy"), "--out", str(tmp_path / "rows.csv")]) == 0
    assert len((tmp_path / "rows.csv").read_text().splitlines()) == 361
    decoded = [line.split(",") for line in (tmp_path / "rows.csv").read_text().splitlines()[1:]]
    assert all(re.fullmatch(r"-?[0-9]+", row[4]) for row in decoded) and len({row[4] for row in decoded}) > 100
    # the latent tools write rows too: a traversal of both dimensions over 5 values, an attribute edit
    assert main(["traverse", str(run), "--item", "0", "--steps", "5", "--out", str(tmp_path / "walk.csv")]) == 0
    walk = (tmp_path / "walk.csv").read_text().splitlines()
    assert walk[0] == "dimension,value,age,sex,smoker,chest_pain,income,city" and len(walk) == 1 + 2 * 5
    assert main(["attribute", str(run), "--attr", "1", "--apply-to", "0", "--strengths", "-1,0,1", "--out",
                 str(tmp_path / "edit.csv")]) == 0
    assert len((tmp_path / "edit.csv").read_text().splitlines()) == 4
    capsys.readouterr()
    assert main(["evaluate", str(run), "--iw-samples", "4", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["columns"]["city"]["kind"] == "categorical"


def test_awkward_but_valid_tables(tmp_path, caplog):
    # a trailing comma on every line: an empty column, ignored with a note
    path = tmp_path / "trailing.csv"
    path.write_text("a,b,\n" + "\n".join(f"{i},{i % 3}," for i in range(30)) + "\n")
    with caplog.at_level(logging.WARNING):
        assert load(path).table.names == ("a", "b")
    assert "without any value ('column 3')" in caplog.text
    # a header of column indices (pandas' to_csv of an unnamed frame) is a header, not a data row
    path = tmp_path / "indices.csv"
    path.write_text("0,1\n" + "\n".join(f"{i * 0.5},{i * 1.5}" for i in range(40)) + "\n")
    dataset = load(path)
    assert len(dataset.x_train) + len(dataset.x_test) == 40 and dataset.table.names == ("0", "1")
    # a text column of one value, and a numeric constant: kept, warned about, encoded as exactly one value
    path = tmp_path / "constant.csv"
    path.write_text("x,country,id\n" + "\n".join(f"{i * 0.1},US,7" for i in range(40)) + "\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        dataset = load(path)
    assert "2 column(s) have zero variance or one value (country, id)" in caplog.text
    assert torch.equal(dataset.x_train[:, 1:], torch.cat([torch.ones(36, 1), torch.zeros(36, 1)], 1))
    # a column of tiny values that vary is not constant: kept on its own scale (it was stored with std 1)
    path = tmp_path / "tiny.csv"
    path.write_text("x,tiny\n" + "\n".join(f"{i * 0.1},{(1 + (i % 7) / 7) * 1e-13!r}" for i in range(40)) + "\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        tiny = load(path).table.columns[1]
    assert "zero variance" not in caplog.text and 1e-14 < tiny.std < 1e-13 and tiny.mean == pytest.approx(1.4e-13, 0.1)
    # a row of empty cells between rows is a row of missing values (the rows keep their count); at the end, none
    path = tmp_path / "gap.csv"
    path.write_text("x,y\n" + "\n".join(f"{i},{i % 5}" for i in range(20)) + "\n,\n"
                    + "\n".join(f"{i},{i % 5}" for i in range(20)) + "\n,\n,\n")
    with pytest.raises(VaekitError, match=r"missing values in 2 column\(s\): x \(line 22\); y \(line 22\)"):
        load(path)
    assert len(tables.read_table(path).columns[0]) == 41
    # values too large to standardise
    path.write_text("x,big\n" + "\n".join(f"{i},{(-1) ** i * i * 1e200}" for i in range(40)) + "\n")
    with pytest.raises(VaekitError, match="'big' holds values too large to standardise"):
        load(path)


def test_a_new_table_is_read_whole_and_in_order_with_the_runs_statistics(mixed_csv, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(mixed_csv), "--label-column", "target", "--latent-dim", "2", "--epochs", "2",
                 "--out", str(run), "--no-progress"]) == 0
    rows = mixed_rows(7, seed=5)
    new = tmp_path / "new.csv"
    new.write_text(MIXED_HEADER.rsplit(",", 1)[0] + "\n" + "\n".join(r.rsplit(",", 1)[0] for r in rows) + "\n")
    assert main(["encode", str(run), "--data", str(new), "--out", str(tmp_path / "codes.npy")]) == 0  # no label: fine
    codes = np.load(tmp_path / "codes.npy")
    assert codes.shape == (7, 2)
    model = checkpoint.load(run)
    encoded = tables.model_table(model.config).encode(tables.read_table(new))
    np.testing.assert_allclose(codes, vaekit.latent.encode_dataset(model, encoded).numpy(), rtol=1e-6)
    # --split all: the run's own file whole and in its order (its split's codes came shuffled, with no way back)
    assert main(["encode", str(run), "--split", "all", "--out", str(tmp_path / "all.npy")]) == 0
    whole = tables.model_table(model.config).encode(tables.read_table(mixed_csv))
    np.testing.assert_allclose(np.load(tmp_path / "all.npy"), vaekit.latent.encode_dataset(model, whole).numpy(),
                               rtol=1e-6)
    assert np.load(tmp_path / "all.npy").shape == (400, 2)
    # other data: the training items, then the test items
    array = tmp_path / "vectors.npy"
    np.save(array, np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32))
    vectors = tmp_path / "vectors-run"
    assert main(["train", "--data", str(array), "--latent-dim", "2", "--epochs", "1", "--out", str(vectors),
                 "--no-progress"]) == 0
    for split in ("train", "test", "all"):
        assert main(["encode", str(vectors), "--split", split, "--out", str(tmp_path / f"{split}.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "all.npy"), np.concatenate([np.load(tmp_path / "train.npy"),
                                                                              np.load(tmp_path / "test.npy")]),
                               rtol=1e-5, atol=1e-6)  # (other batches: float rounding)
    one = tmp_path / "one.csv"
    one.write_text(MIXED_HEADER + "\n" + rows[0] + "\n")
    assert main(["encode", str(run), "--data", str(one), "--out", str(tmp_path / "one.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "one.npy"), codes[:1], rtol=1e-6)


def test_a_commands_table_flags_are_used_or_refused_never_ignored(mixed_csv, tmp_path, capsys, caplog):
    """On a trained run, the column types and standardising are the run's (the flags are not taken); a --label-column
    the file lacks, or that names a model input, is an error; a copy of the training file read as the run's own data
    (split as the run split it) says so."""
    run = tmp_path / "run"
    assert main(["train", "--data", str(mixed_csv), "--label-column", "target", "--latent-dim", "2", "--epochs", "1",
                 "--out", str(run), "--no-progress"]) == 0
    copy = tmp_path / "copy.csv"
    copy.write_bytes(mixed_csv.read_bytes())
    out = str(tmp_path / "codes.npy")
    capsys.readouterr()
    for flags, says in ((["--no-standardize"], "unrecognized arguments: --no-standardize"),
                        (["--column-types", "age=ignore"], "unrecognized arguments: --column-types"),
                        (["--label-column", "nope"], "has no column 'nope'")):
        for data in ([], ["--data", str(copy)]):
            with pytest.raises(SystemExit) if flags[0] != "--label-column" else contextlib.nullcontext():
                assert main(["encode", str(run), *data, *flags, "--out", out]) == 2
            err = capsys.readouterr().err
            assert says in err and err.count("\n") == 1, (flags, data, err)
    # a model without labels takes an input column's values as labels (a latent map coloured by city); a model
    # conditioned on the label does not
    assert main(["latent-map", str(run), "--label-column", "city", "--out", str(tmp_path / "map.png")]) == 0
    conditioned = tmp_path / "conditioned"
    assert main(["train", "--data", str(mixed_csv), "--label-column", "target", "--condition", "label",
                 "--latent-dim", "2", "--epochs", "1", "--out", str(conditioned), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["encode", str(conditioned), "--label-column", "city", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "--label-column city is one of the model's input columns, but this model is conditioned" in err
    caplog.set_level("INFO")
    assert main(["encode", str(run), "--data", str(copy), "--out", out]) == 0
    assert np.load(out).shape == (40, 2)  # the test split's rows, as the run split them: said
    assert f"--data {copy} holds the data the run trained on" in caplog.text and "--split all" in caplog.text
    caplog.clear()
    assert main(["evaluate", str(run), "--data", str(copy), "--iw-samples", "0", "--no-progress"]) == 0
    assert "holds the data the run trained on" in caplog.text and "--split all" not in caplog.text  # encode's only
    assert main(["encode", str(run), "--data", str(copy), "--label-column", "target", "--split", "all", "--out",
                 out]) == 0
    assert np.load(out).shape == (400, 2)


def test_every_commands_rows_say_what_each_row_is_and_the_class_it_was_decoded_with(mixed_csv, tmp_path):
    """A conditioned table model's CSVs from the latent tools: first columns naming each row (dimension and value,
    t, item, draw, strength, distance, a/b/c), then the class decoded with (the label column's name), then the
    user's columns; the rows are the Python API's, decoded by model_table."""
    run = tmp_path / "run"
    assert main(["train", "--data", str(mixed_csv), "--label-column", "target", "--condition", "label",
                 "--latent-dim", "2", "--epochs", "1", "--out", str(run), "--no-progress"]) == 0
    model = checkpoint.load(run)
    schema = tables.model_table(model.config)
    data = load_dataset(checkpoint.load_config(run).data, schema)
    x, y = data.x_test, data.y_test
    names = model.config.label_names  # ("0", "1"), the classes as written

    def rows(*args: str) -> list[list[str]]:
        out = tmp_path / "rows.csv"
        assert main([*args[:1], str(run), *args[1:], "--out", str(out)]) == 0
        return [line.split(",") for line in out.read_text().splitlines()]

    def user_units(values: torch.Tensor) -> list[list[str]]:
        out = tmp_path / "python.csv"
        tables.write_rows(schema, values, out)
        return [line.split(",") for line in out.read_text().splitlines()[1:]]

    columns = list(schema.names)
    got = rows("traverse", "--dims", "1", "--steps", "3", "--item", "4")
    assert got[0] == ["dimension", "value", "target", *columns]
    assert [r[:3] for r in got[1:]] == [["z[1]", v, names[int(y[4])]] for v in ("-3", "0", "3")]
    assert [r[1] for r in rows("traverse", "--dims", "1", "--steps", "6", "--range=-1.8,1.2")[1:]] == [
        "-1.8", "-1.2", "-0.6", "0", "0.6", "1.2"]  # as written, not float32's -1.7999999523162842
    expected = latent.traverse(model, x[4], dims=[1], values=torch.linspace(-3, 3, 3), y=y[4]).images[0]
    assert [r[3:] for r in got[1:]] == user_units(expected)
    got = rows("interpolate", "--from", "2", "--to", "5", "--steps", "3", "--label", "1")
    assert got[0] == ["t", "target", *columns] and [r[:2] for r in got[1:]] == [["0", "1"], ["0.5", "1"], ["1", "1"]]
    assert [r[2:] for r in got[1:]] == user_units(latent.interpolate(model, x[2], x[5], 3, y1=y[2], y2=y[5], label=1))
    got = rows("reconstruct", "--n", "3")
    assert got[0] == ["item", "target", *columns]
    assert [r[:2] for r in got[1:]] == [[str(i), names[int(y[i])]] for i in range(3)]
    assert [r[2:] for r in got[1:]] == user_units(model.reconstruct(x[:3], y[:3]))
    got = rows("vary", "--item", "3", "--n", "2")
    assert got[0] == ["draw", "target", *columns] and [r[:2] for r in got[1:]] == [["1", names[int(y[3])]],
                                                                                      ["2", names[int(y[3])]]]
    got = rows("arithmetic", "--a", "0", "--b", "1", "--c", "2")
    assert got[0] == ["row", "target", *columns]
    assert [r[:2] for r in got[1:]] == [["a: item 0", names[int(y[0])]], ["b: item 1", names[int(y[1])]],
                                        ["c: item 2", names[int(y[2])]], ["a - b + c", names[int(y[2])]]]
    got = rows("neighbours", "--item", "1", "--k", "2")
    assert got[0] == ["item", "distance", "target", *columns] and got[1][:3] == ["1", "0", names[int(y[1])]]
    assert all(r[2] == names[int(y[int(r[0])])] for r in got[1:])
    got = rows("attribute", "--attr", "1", "--apply-to", "0,3", "--strengths", "0,1")
    assert got[0] == ["item", "strength", "target", *columns]
    assert [r[:3] for r in got[1:]] == [[str(i), s, names[int(y[i])]] for i in (0, 3) for s in ("0", "1")]


def test_a_rows_description_named_as_a_users_column_is_renamed_not_lost(tmp_path):
    """A label column named `item` (and a column `item (row)`): reconstruct's item numbers are kept, renamed until
    the header names every column once."""
    rng = np.random.default_rng(0)
    path = tmp_path / "t.csv"
    path.write_text("a,item (row),item\n" + "".join(f"{rng.normal():.3f},{rng.normal():.3f},{'xy'[i % 2]}\n"
                                                    for i in range(100)))
    run = tmp_path / "run"
    assert main(["train", "--data", str(path), "--label-column", "item", "--condition", "label", "--latent-dim", "2",
                 "--epochs", "1", "--out", str(run), "--no-progress"]) == 0
    assert main(["reconstruct", str(run), "--n", "3", "--out", str(tmp_path / "r.csv")]) == 0
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert lines[0] == "item (row) (row),item,a,item (row)"
    assert [line.split(",")[0] for line in lines[1:]] == ["0", "1", "2"]  # the item numbers
    assert all(line.split(",")[1] in ("x", "y") for line in lines[1:])  # the classes decoded with


def test_a_new_file_for_a_run_trained_with_impute_drop_keeps_its_rows(tmp_path, capsys):
    rows = mixed_rows(100)
    rows[4] = rows[4].replace(rows[4].split(",")[0], "", 1)  # age missing on line 6
    path = tmp_path / "gaps.csv"
    path.write_text("\n".join([MIXED_HEADER, *rows]) + "\n")
    run = tmp_path / "run"
    assert main(["train", "--data", str(path), "--label-column", "target", "--impute", "drop", "--latent-dim", "2",
                 "--epochs", "1", "--out", str(run), "--no-progress"]) == 0
    new = tmp_path / "new.csv"
    new.write_text("\n".join([MIXED_HEADER, *rows[:10]]) + "\n")
    codes = tmp_path / "codes.npy"
    assert main(["encode", str(run), "--data", str(new), "--out", str(codes)]) == 2  # not 9 codes for 10 rows
    assert "missing values in 1 column(s): age (line 6)" in capsys.readouterr().err and not codes.exists()
    assert main(["encode", str(run), "--data", str(new), "--impute", "mean", "--out", str(codes)]) == 0
    assert np.load(codes).shape == (10, 2)
    assert main(["encode", str(run), "--data", str(new), "--impute", "drop", "--out", str(codes)]) == 0  # asked for
    assert np.load(codes).shape == (9, 2)


def test_a_table_models_rows_to_a_picture_are_refused_before_the_work(mixed_csv, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(mixed_csv), "--latent-dim", "2", "--epochs", "1", "--out", str(run),
                 "--no-progress"]) == 0
    capsys.readouterr()
    for command in (["traverse", str(run)], ["neighbours", str(run)], ["vary", str(run)]):
        assert main([*command, "--out", str(tmp_path / "t.png")]) == 2
        err = capsys.readouterr().err
        assert f"cannot write {tmp_path / 't.png'}: a table model writes rows to a .csv" in err
        assert "rows:" not in err and "nearest" not in err  # refused before the work


def _without_label_names(run) -> None:
    """The run as one written before its class names were kept: config.json without them, the model file naming it."""
    _as_written_then(run, lambda config: config["model"].pop("label_names"))


def _as_written_then(run, change) -> None:
    """The run's config.json as an earlier vaekit wrote it: change(config) edits the settings in place; the model
    file names the new config.json (its sha256), as it names the one written with it."""
    config = json.loads((run / "config.json").read_text())
    change(config)
    text = json.dumps(config)
    (run / "config.json").write_text(text)
    tensors, metadata = checkpoint.read_checked(run / checkpoint.MODEL_FILE)
    save_file(tensors, str(run / checkpoint.MODEL_FILE),
              metadata={**metadata, checkpoint.CONFIG_KEY: hashlib.sha256(text.encode()).hexdigest()})


def test_a_label_conditioned_run_maps_a_new_files_class_names_to_its_own(mixed_csv, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(mixed_csv), "--label-column", "city", "--condition", "label", "--latent-dim",
                 "2", "--epochs", "1", "--out", str(run), "--no-progress"]) == 0
    assert checkpoint.load_config(run).model.label_names == ("Lima", "Oslo", "Pune")
    model = checkpoint.load(run)
    rows = [r for r in mixed_rows(40, seed=2) if ",Oslo," not in r]  # only Lima and Pune: sorted, they are 0 and 1
    new = tmp_path / "new.csv"
    new.write_text(MIXED_HEADER + "\n" + "\n".join(rows) + "\n")
    assert main(["encode", str(run), "--data", str(new), "--out", str(tmp_path / "codes.npy")]) == 0
    table = tables.read_table(new)
    x = tables.model_table(model.config).encode(table)
    y = torch.tensor([("Lima", "Oslo", "Pune").index(city) for city in table.column("city")])  # the run's classes
    assert set(y.tolist()) == {0, 2}
    np.testing.assert_allclose(np.load(tmp_path / "codes.npy"), vaekit.latent.encode_dataset(model, x, y=y).numpy(),
                               rtol=1e-6)
    # sample and decode take the class names, and the rows say the class each was drawn for
    assert main(["sample", str(run), "--label", "Pune", "--n", "3", "--out", str(tmp_path / "pune.csv")]) == 0
    lines = (tmp_path / "pune.csv").read_text().splitlines()
    assert lines[0].startswith("city,") and [line.split(",")[0] for line in lines[1:]] == ["Pune"] * 3
    assert main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "each.csv")]) == 0
    assert [line.split(",")[0] for line in (tmp_path / "each.csv").read_text().splitlines()[1:]] == \
        ["Lima", "Oslo", "Pune", "Lima"]
    assert main(["decode", str(run), str(tmp_path / "codes.npy"), "--label", "Oslo", "--out",
                 str(tmp_path / "oslo.csv")]) == 0
    assert {line.split(",")[0] for line in (tmp_path / "oslo.csv").read_text().splitlines()[1:]} == {"Oslo"}
    capsys.readouterr()
    assert main(["sample", str(run), "--label", "Rome", "--out", str(tmp_path / "rome.csv")]) == 2
    assert "--label must be a class index 0..2 or a class name (0=Lima, 1=Oslo, 2=Pune), got 'Rome'" in \
        capsys.readouterr().err
    # a class the run never saw is an error naming it, whether or not the number of classes matches
    for cities in (("Lima", "Rome"), ("Lima", "Pune", "Rome")):  # two classes; three, as many as the run's
        other = tmp_path / "other.csv"
        cells = [row.split(",") for row in mixed_rows(40, seed=3)]
        other.write_text(MIXED_HEADER + "\n" + "\n".join(",".join([*c[:5], cities[i % len(cities)], c[6]])
                                                           for i, c in enumerate(cells)) + "\n")
        assert main(["encode", str(run), "--data", str(other), "--out", str(tmp_path / "bad.npy")]) == 2
        assert "has classes the model was not trained on ('Rome')" in capsys.readouterr().err
        assert not (tmp_path / "bad.npy").exists()
    # a run written before the names were kept knows only their count: a file with fewer classes is refused
    _without_label_names(run)
    assert checkpoint.load_config(run).model.label_names == ()
    assert main(["encode", str(run), "--data", str(new), "--out", str(tmp_path / "codes.npy")]) == 2
    assert "names 2 classes, the run was trained on 3" in capsys.readouterr().err


def test_a_tables_numeric_labels_are_classes_as_written(tmp_path, capsys):
    """Labels 1, 2, 3 are three classes named so (taken as indices they made an untrained class 0 that sample drew
    for), -1 and 1 are two, in numeric order (10 after 9); a fraction is refused; a new file maps by name."""
    from vaekit import runs

    rng = np.random.default_rng(0)
    labels = rng.choice([1, 2, 3, 10], 200)
    path = tmp_path / "t.csv"
    path.write_text("a,b,y\n" + "".join(f"{rng.normal(v, 1)!r},{rng.normal(0, 1)!r},{v}\n" for v in labels))
    dataset = load(path, label_column="y")
    assert dataset.label_names == ("1", "2", "3", "10")
    everything = torch.cat([dataset.y_train, dataset.y_test])
    assert sorted(everything.tolist()) == sorted(("1", "2", "3", "10").index(str(v)) for v in labels)
    run = tmp_path / "run"
    assert main(["train", "--data", str(path), "--label-column", "y", "--condition", "label", "--latent-dim", "2",
                 "--epochs", "1", "--out", str(run), "--no-progress"]) == 0
    model_config = checkpoint.load_config(run).model
    assert model_config.num_labels == 4 and model_config.label_names == ("1", "2", "3", "10")
    assert main(["sample", str(run), "--n", "5", "--out", str(tmp_path / "s.csv")]) == 0
    assert [line.split(",")[0] for line in (tmp_path / "s.csv").read_text().splitlines()[1:]] == \
        ["1", "2", "3", "10", "1"]
    # its own file, and that of a run without conditioning, keep the classes by name (not as indices, as runs that
    # took them so read theirs: checkpoint.labels_as_read)
    plain = tmp_path / "plain"
    assert main(["train", "--data", str(path), "--label-column", "y", "--latent-dim", "2", "--epochs", "1", "--out",
                 str(plain), "--no-progress"]) == 0
    for folder in (run, plain):
        assert main(["encode", str(folder), "--out", str(tmp_path / "own.npy")]) == 0, capsys.readouterr().err
        own = runs.run_data(folder, checkpoint.load_config(folder), None, "resume")
        assert own.label_names == ("1", "2", "3", "10") and torch.equal(own.y_test, dataset.y_test)
    # a new file of one class: its label 10 is the run's class 3
    new = tmp_path / "new.csv"
    new.write_text("a,b,y\n1.0,0.5,10\n2.0,0.1,10\n")
    assert main(["encode", str(run), "--data", str(new), "--out", str(tmp_path / "c.npy")]) == 0
    model = checkpoint.load(run)
    x = tables.model_table(model.config).encode(tables.read_table(new))
    np.testing.assert_allclose(np.load(tmp_path / "c.npy"),
                               vaekit.latent.encode_dataset(model, x, y=torch.tensor([3, 3])).numpy(), rtol=1e-6)
    # a run trained before numeric labels were named took them as class indices (here 0..3): a new file's labels
    # are indices for it still (label 2 is its class 2, not the third name of the file's)
    _without_label_names(run)
    new.write_text("a,b,y\n1.0,0.5,2\n2.0,0.1,0\n")
    assert main(["encode", str(run), "--data", str(new), "--out", str(tmp_path / "old.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "old.npy"),
                               vaekit.latent.encode_dataset(model, tables.model_table(model.config).encode(
                                   tables.read_table(new)), y=torch.tensor([2, 0])).numpy(), rtol=1e-6)
    # -1 and 1 (the usual binary labels of a table) colour a map as two classes
    path.write_text("a,b,y\n" + "".join(f"{rng.normal(0, 1)!r},{rng.normal(0, 1)!r},{(-1) ** i}\n" for i in range(60)))
    assert load(path, label_column="y").label_names == ("-1", "1")
    path.write_text("a,b,y\n" + "".join(f"{i!r},{i % 3},{i * 0.5}\n" for i in range(60)))
    with pytest.raises(VaekitError, match="holds the label 0.5, which is no class: labels are classes"):
        load(path, label_column="y")


def test_a_run_that_took_numeric_labels_as_indices_reads_its_own_file_so_again(tmp_path, capsys):
    """Runs trained before a table's numeric labels were named took them as class indices (1..3: classes 1, 2, 3 of
    four): on the run's own file, every command and a resume read them so again (renumbered, each item was decoded
    with another class); where the run's data.json holds their fingerprint, that is no "changed data" refusal."""
    from vaekit import runs
    from vaekit.data import fingerprint

    rng = np.random.default_rng(0)
    path = tmp_path / "t.csv"
    labels = np.arange(200) % 4  # classes 0..3, so that the run has four; the old run's file then holds 1..3
    path.write_text("a,b,y\n" + "".join(f"{rng.normal(v, 1)!r},{rng.normal(0, 1)!r},{v}\n" for v in labels))
    run, plain = tmp_path / "run", tmp_path / "plain"
    for out, flags in ((run, ["--condition", "label"]), (plain, [])):
        assert main(["train", "--data", str(path), "--label-column", "y", *flags, "--latent-dim", "2", "--epochs",
                     "1", "--out", str(out), "--no-progress"]) == 0
    _without_label_names(run)
    path.write_text(path.read_text().replace(",0\n", ",1\n"))  # labels 1..3, as the old run's file held
    read = load(path, label_column="y")
    assert read.label_names == ("1", "2", "3")
    as_indices = {name: torch.tensor([int(n) for n in read.label_names])[getattr(read, name)]
                  for name in ("y_train", "y_test")}
    model = checkpoint.load(run)
    for record in (False, True):  # a run from before data.json; one whose data.json holds the indices' fingerprint
        for out in (run, plain):
            checkpoint.write_data_check(out, fingerprint(replace(read, label_names=None, **as_indices)) if record
                                        else None)
        assert main(["encode", str(run), "--out", str(tmp_path / "z.npy")]) == 0, capsys.readouterr().err
        np.testing.assert_allclose(np.load(tmp_path / "z.npy"), vaekit.latent.encode_dataset(
            model, read.x_test, y=as_indices["y_test"]).numpy(), rtol=1e-6)
        resumed = runs.run_data(run, checkpoint.load_config(run), None, "resume")
        assert torch.equal(resumed.y_train, as_indices["y_train"])
    # a run without conditioning is told by its data.json: its latent map colours by the labels it read
    assert main(["latent-map", str(plain), "--out", str(tmp_path / "map.png")]) == 0, capsys.readouterr().err
    assert torch.equal(runs.run_data(plain, checkpoint.load_config(plain), None, "resume").y_test,
                       as_indices["y_test"])


def test_a_csv_run_from_before_tables_reads_its_file_as_it_did(tmp_path, capsys):
    """A run on a .csv trained before vaekit read tables as tables (its config.json has no table likelihood) fed the
    file's numbers to the model as written: it reads them so still (tables.run_table: AS_WRITTEN), not standardised,
    a column of two values not recoded to 0/1 nor one of a few whole numbers one-hot (they gave other codes and bounds
    in silence, or a refusal of its own data), its whole-number labels as class indices, a first row holding a number
    as data (whole numbers far outside their columns too)."""
    from vaekit import runs

    rng = np.random.default_rng(0)
    n = 120
    values = np.stack([rng.normal(50, 10, n), rng.integers(1, 3, n), rng.integers(0, 5, n), rng.normal(0, 1, n)],
                      1).astype(np.float32)
    labels = rng.integers(1, 4, n)  # as class indices: four classes, 0 unused
    np.savez(tmp_path / "d.npz", x=values, y=labels)
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "d.npz"), "--condition", "label", "--latent-dim", "2",
                 "--hidden-dims", "8", "--epochs", "1", "--out", str(run), "--no-progress"]) == 0
    assert checkpoint.load_config(run).model.num_labels == 4
    path = tmp_path / "d.csv"
    path.write_text("a,b,c,d,cls\n" + "".join(f"{float(a)!r},{int(b)},{int(c)},{float(d)!r},{label}\n"
                                              for (a, b, c, d), label in zip(values.tolist(), labels)))
    def then(config):  # as vaekit wrote it then, naming the .csv
        for name in ("header", "standardize", "column_types", "impute"):
            config["data"].pop(name)
        config["data"].update(name=str(path), label_column="cls")
        config["model"].pop("label_names", None)

    _as_written_then(run, then)
    (run / checkpoint.DATA_FILE).unlink()  # runs of then kept no data.json
    cfg = checkpoint.load_config(run)
    assert tables.run_table(cfg) == tables.AS_WRITTEN
    dataset = runs.run_data(run, cfg, None, "resume")
    assert dataset.table is None and dataset.shape == (4,) and dataset.label_names is None
    written = {(*row, int(label)) for row, label in zip(values.tolist(), labels)}
    assert all((*row, int(label)) in written for part in ("train", "test")
               for row, label in zip(getattr(dataset, f"x_{part}").tolist(), getattr(dataset, f"y_{part}").tolist()))
    assert main(["evaluate", str(run), "--iw-samples", "5", "--out", str(tmp_path / "e.json")]) == 0, \
        capsys.readouterr().err
    wave = tmp_path / "w.csv"
    wave.write_text("400,410,420\n" + "".join(",".join(f"{v:.3f}" for v in row) + "\n" for row in rng.random((30, 3))))
    read = load_dataset(DataConfig(name=str(wave)), tables.AS_WRITTEN)
    every = [value for row in torch.cat([read.x_train, read.x_test]).tolist() for value in row]
    assert len(every) == 31 * 3 and 420.0 in every


def test_a_first_row_is_read_as_the_runs_columns_need(tmp_path, caplog, capsys):
    """For a trained run, --header auto reads a file's first row as names only if it names the run's columns: a
    headerless run's new file starting with whole numbers far outside their columns (400,450,... over values in
    [0, 1]) is data for it (it was taken for names, and the file refused for lacking column '0'), as is its own file
    for a run written before --header, which read such a row as data then."""
    rng = np.random.default_rng(0)
    first = "400,450,500,550"
    body = "".join(",".join(f"{v:.3f}" for v in row) + "\n" for row in rng.random((60, 4)))
    plain, spectra = tmp_path / "plain.csv", tmp_path / "spectra.csv"
    plain.write_text(body)
    spectra.write_text(first + "\n" + body)
    run = tmp_path / "run"
    assert main(["train", "--data", str(plain), "--latent-dim", "2", "--epochs", "1", "--out", str(run),
                 "--no-progress"]) == 0
    assert checkpoint.load_config(run).model.settings("table").columns[0]["name"] == "0"
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main(["encode", str(run), "--data", str(spectra), "--out", str(tmp_path / "z.npy")]) == 0
    assert np.load(tmp_path / "z.npy").shape == (61, 2) and "column names" not in caplog.text  # no guess to say
    # a run whose config.json has no header (written before --header): its own file reads as it did
    old = tmp_path / "old"
    assert main(["train", "--data", str(spectra), "--header", "no", "--latent-dim", "2", "--epochs", "1", "--out",
                 str(old), "--no-progress"]) == 0
    _as_written_then(old, lambda config: config["data"].pop("header"))
    assert checkpoint.load_config(old).data.header == "auto"
    assert main(["encode", str(old), "--split", "all", "--out", str(tmp_path / "o.npy")]) == 0
    assert np.load(tmp_path / "o.npy").shape == (61, 2)
    # a file whose first row names the run's columns is read with it as names still
    named = tmp_path / "named.csv"
    named.write_text("0,1,2,3\n" + "".join(",".join(f"{v:.3f}" for v in row) + "\n" for row in rng.random((30, 4))))
    assert main(["encode", str(run), "--data", str(named), "--out", str(tmp_path / "n.npy")]) == 0
    assert np.load(tmp_path / "n.npy").shape == (30, 2)
    # a file whose first row names other columns than the run's is refused for it, its header not read as data
    named.write_text("a,b,c,d\n" + body)
    assert main(["encode", str(run), "--data", str(named), "--out", str(tmp_path / "n.npy")]) == 2
    assert "has no column '0'" in capsys.readouterr().err


def test_a_column_of_row_ids_is_named_as_probably_ids(tmp_path):
    """Random 64-bit IDs and row numbers were read as numbers without a word: as features they carry only a row's
    place in the numbering."""
    from vaekit.data.tables import fit_schema, frame_table, looks_like_ids

    rng = np.random.default_rng(0)
    n = 200
    numbered = rng.permutation(np.arange(1, n + 1)).astype(float)
    random64 = [str(v) for v in rng.integers(0, 2**63 - 1, n)]  # random 63-bit IDs
    lines = ["rowid,customer,x,count"] + [f"{int(a)},{b},{rng.normal():.4f},{rng.integers(0, 10_000)}"
                                          for a, b in zip(numbered, random64, strict=True)]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    table = tables.read_table(tmp_path / "t.csv")
    schema = fit_schema(table, range(n))
    said = " ".join(schema.notes)
    assert "2 column(s) hold a different integer in every row" in said and "(rowid, customer)" in said
    assert "--column-types rowid=ignore" in said
    # declared numeric: kept without a word; a real measure (distinct, but not a numbering) is not an ID
    declared = fit_schema(table, range(n), {"rowid": "numeric", "customer": "numeric"})
    assert not any("different integer" in note for note in declared.notes)
    assert not looks_like_ids([float(v) for v in rng.permutation(np.arange(0, 2 * n, 2))])  # distinct, with gaps
    assert not looks_like_ids(list(numbered[:19]))  # too few rows to tell
    assert looks_like_ids(list(numbered))
    # random 63-bit IDs in a long table: a few fall below 2^53 and are read as plain numbers; still IDs
    ids = rng.integers(0, 2**63 - 1, 3000, dtype=np.int64)
    ids[:3] = [17, 2**40, 2**52]
    cells = [tables.LargeInteger(str(v)) if v >= 2**53 else float(v) for v in ids.tolist()]
    assert looks_like_ids(cells)
    # nanosecond timestamps are as large, but close together: numbers, not IDs
    stamps = [tables.LargeInteger(str(1_700_000_000_000_000_000 + int(v))) for v in rng.integers(0, 10**16, 3000)]
    assert len(set(stamps)) == 3000 and not looks_like_ids(stamps)
    decades = [tables.LargeInteger(str(946_684_800 * 10**9 + int(v))) for v in rng.integers(0, 26 * 365 * 86400 * 10**9,
                                                                                             3000)]
    assert not looks_like_ids(decades)  # 2000 to 2026 in nanoseconds
    # large measurements written as floats (masses of stars in kg) are numbers, whatever their size
    assert not looks_like_ids([float(f"{m:.6e}") for m in rng.uniform(1e29, 1e32, 3000)])
    frame = frame_table(np.column_stack([numbered, rng.normal(size=n)]), names=["i", "v"], source="X")
    assert any("(i)" in note for note in fit_schema(frame, range(n)).notes)
    # a small table's text IDs (R000, R001, ...: under 50 rows they are not refused as too many categories) are
    # named too, unless declared; a category that repeats is not
    small = tmp_path / "small.csv"
    small.write_text("ref,colour,x\n" + "".join(f"R{i:03},{'ab'[i % 2]},{rng.normal()!r}\n" for i in range(30)))
    notes = " ".join(fit_schema(tables.read_table(small), range(30)).notes)
    assert "1 column(s) hold a different text in every row (ref): IDs or names?" in notes
    assert "--column-types ref=ignore" in notes and "colour" not in notes
    assert not any("different text" in note for note in fit_schema(tables.read_table(small), range(30),
                                                                       {"ref": "categorical"}).notes)


def test_a_numeric_columns_reported_density_is_in_the_users_units(tmp_path, capsys):
    """The same table with one column in units 1000 times smaller (the same standardised values, so the same model):
    that column's -log p at the reconstruction grows by exactly ln 1000, the other columns' stay; the whole row's
    densities (nll, elbo, recon, recon_at_mean) move by ln 1000 too, and recon_at_mean is the columns' sum."""
    rng = np.random.default_rng(0)
    rows = [(rng.normal(10, 3), rng.choice(["red", "blue"]), rng.normal(0, 1)) for _ in range(200)]
    reports = []
    for scale in (1, 1000):
        path = tmp_path / f"t{scale}.csv"
        path.write_text("size,colour,other\n" + "".join(f"{a * scale!r},{b},{c!r}\n" for a, b, c in rows))
        run = tmp_path / f"run{scale}"
        assert main(["train", "--data", str(path), "--latent-dim", "2", "--epochs", "2", "--hidden-dims", "16",
                     "--no-progress", "--out", str(run)]) == 0
        capsys.readouterr()
        assert main(["evaluate", str(run), "--iw-samples", "4", "--no-progress"]) == 0
        reports.append(json.loads(capsys.readouterr().out))
    whole = reports
    for report in whole:
        assert report["recon_at_mean"] == pytest.approx(sum(c["nll_at_mean"] for c in report["columns"].values()))
    for name, sign in (("nll", 1), ("elbo", -1), ("recon", 1), ("recon_at_mean", 1)):
        assert whole[1][name] == pytest.approx(whole[0][name] + sign * math.log(1000), abs=1e-3), name
    small, large = (report["columns"] for report in whole)
    assert large["size"]["nll_at_mean"] == pytest.approx(small["size"]["nll_at_mean"] + math.log(1000), abs=1e-3)
    for name in ("colour", "other"):
        assert large[name]["nll_at_mean"] == pytest.approx(small[name]["nll_at_mean"], abs=1e-3)


def test_a_refused_table_gets_its_one_line_error_without_the_column_summary(tmp_path):
    """The table's column summary (types, statistics) printed before the refusal of its missing values, which then
    came fifth."""
    rows = [row + ",1" for row in mixed_rows(100)]  # and a constant column, which gets a note once the table is read
    rows[4] = rows[4].replace(rows[4].split(",")[0], "", 1)  # age missing on line 6
    path = tmp_path / "gaps.csv"
    path.write_text("\n".join([MIXED_HEADER + ",const", *rows]) + "\n")

    def train(*flags):
        return subprocess.run([sys.executable, "-m", "vaekit", "train", "--data", str(path), "--epochs", "1", "--out",
                               str(tmp_path / "run"), "--no-progress", *flags], capture_output=True, text=True,
                              timeout=300)

    refused = train()
    err = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and len(err) == 1, err
    assert "missing values in 1 column(s): age (line 6)" in err[0]
    assert "numeric" in train("--impute", "mean").stderr  # the summary, once the table is read whole
