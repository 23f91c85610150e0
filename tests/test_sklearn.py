"""vaekit.sklearn: scikit-learn's own estimator checks, Pipeline and GridSearchCV, DataFrames of mixed types, and no
global side effects."""
from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator

from vaekit.sklearn import AETransformer, VAETransformer

# Checks that cannot apply, and why (the tests below fail if any other check does not pass).
NOT_APPLICABLE = {
    # Array API inputs (cupy, torch arrays through the array-api namespace) need SCIPY_ARRAY_API=1 and are not
    # supported: the estimators convert their input to numpy and train with torch themselves.
    "check_array_api_input",
}


@pytest.mark.parametrize("estimator", [VAETransformer, AETransformer], ids=lambda e: e.__name__)
def test_scikit_learn_estimator_checks(estimator):
    # Few epochs and small networks: these checks exercise the API (about 45 fits each), not the fit's quality,
    # which the benchmark and the tests below measure with the defaults.
    results = check_estimator(estimator(epochs=3, hidden_dims=(16,), random_state=0), on_fail=None)
    failed = {r["check_name"]: str(r["exception"])[:200] for r in results
              if r["status"] == "failed" or (r["status"] == "skipped" and r["check_name"] not in NOT_APPLICABLE)}
    assert not failed, failed
    assert len(results) > 40


def test_pipeline_and_grid_search():
    x, y = load_wine(return_X_y=True)
    pipeline = Pipeline([("vae", VAETransformer(epochs=20, random_state=0)),
                         ("classify", LogisticRegression(max_iter=2000))])
    search = GridSearchCV(pipeline, {"vae__latent_dim": [1, 2], "vae__beta": [0.5, 1.0]}, cv=3)
    search.fit(x, y)
    assert set(search.best_params_) == {"vae__latent_dim", "vae__beta"}
    assert search.best_score_ > 0.8  # three clear classes of wine; chance is 0.40
    assert search.predict(x[:5]).shape == (5,)
    # score picks by ELBO when the VAE is alone
    by_elbo = GridSearchCV(VAETransformer(epochs=20, random_state=0), {"latent_dim": [1, 3]}, cv=3).fit(x)
    assert np.isfinite(by_elbo.best_score_)


def test_defaults_reduce_wine_like_pca_or_better():
    """The default settings on a real table: codes that separate the classes, reconstruction in the user's units
    and a finite ELBO; fit is deterministic given random_state."""
    x, y = load_wine(return_X_y=True)
    rng = np.random.default_rng(0)
    test = rng.permutation(len(x))[:40]
    train = np.setdiff1d(np.arange(len(x)), test)
    vae = VAETransformer(random_state=0).fit(x[train])
    codes = vae.transform(x)
    assert codes.shape == (len(x), 2) and codes.dtype == np.float64
    accuracy = LogisticRegression(max_iter=2000).fit(codes[train], y[train]).score(codes[test], y[test])
    assert accuracy > 0.85
    decoded = vae.inverse_transform(codes[test])
    scale = x[train].std(0)
    assert np.sqrt(np.mean(((decoded - x[test]) / scale) ** 2)) < 0.8  # in the user's units, per std of a column
    assert np.isfinite(vae.score(x[test])) and vae.score(x[train]) > vae.score(x[test]) - 5
    # the same random_state, the same model
    first, again = (VAETransformer(epochs=10, random_state=3).fit(x[train]) for _ in range(2))
    np.testing.assert_array_equal(again.transform(x), first.transform(x))
    samples = vae.sample(5, random_state=1)
    assert samples.shape == (5, x.shape[1]) and np.all(samples[:, -1] > 100)  # proline is in the hundreds
    assert list(vae.get_feature_names_out()) == ["vaetransformer0", "vaetransformer1"]


def test_fit_leaves_no_global_state_changed():
    x, _ = load_wine(return_X_y=True)
    threads = torch.get_num_threads()
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    AETransformer(epochs=2, random_state=0).fit(x)
    VAETransformer(epochs=2).fit(x)
    assert torch.equal(torch.get_rng_state(), state) and torch.get_num_threads() == threads


def test_dataframes_of_mixed_types_round_trip():
    pandas = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    n = 300
    group = rng.integers(0, 2, n)
    frame = pandas.DataFrame({
        "age": rng.normal(40 + 20 * group, 4),
        "smoker": np.where(rng.random(n) < 0.1 + 0.8 * group, "yes", "no"),
        "city": pandas.Categorical(np.array(["Oslo", "Lima", "Pune"])[(group * 2 + rng.integers(0, 2, n)) % 3]),
        "hours": rng.gamma(2.0, 3.0, n),
        "children": rng.integers(0, 4, n),  # a few distinct integers: categorical
    })
    frame.loc[7, "age"] = np.nan
    with pytest.raises(ValueError, match="missing values in 1 column.*age \\(row 8\\)"):
        VAETransformer(epochs=5, random_state=0).fit(frame)
    vae = VAETransformer(impute="mean", random_state=0).fit(frame)
    kinds = {c.name: c.kind for c in vae.schema_.columns}
    assert kinds == {"age": "numeric", "smoker": "binary", "city": "categorical", "hours": "numeric",
                     "children": "categorical"}
    assert list(vae.feature_names_in_) == ["age", "smoker", "city", "hours", "children"]
    decoded = vae.inverse_transform(vae.transform(frame))
    assert list(decoded.columns) == ["age", "smoker", "city", "hours", "children"]
    assert set(decoded["children"]) <= {0, 1, 2, 3}
    assert set(decoded["smoker"]) <= {"yes", "no"} and set(decoded["city"]) <= {"Oslo", "Lima", "Pune"}
    # the code carries the group: smoker and age come back right for most rows
    assert (decoded["smoker"] == frame["smoker"]).mean() > 0.75
    assert np.nanmean(np.abs(decoded["age"] - frame["age"])) < 10
    romed = frame.assign(city=frame["city"].astype(str).replace("Oslo", "Rome"))
    with pytest.raises(ValueError, match="'city' holds 'Rome'.*not seen in fit.*handle_unknown='most_frequent'"):
        vae.transform(romed)
    # handle_unknown='most_frequent': an unseen category is read as its column's most frequent one, with a warning
    vae.set_params(handle_unknown="most_frequent")
    most = frame["city"].astype(str).value_counts().idxmax()
    rome_rows = int((frame["city"] == "Oslo").sum())
    with pytest.warns(UserWarning, match=rf"'city' \({rome_rows} rows\).*most frequent") as said:
        codes = vae.transform(romed)
    assert len(said) == 1
    np.testing.assert_array_equal(codes, vae.transform(romed.assign(city=romed["city"].replace("Rome", most))))
    with pytest.warns(UserWarning, match="not seen in fit"):
        assert np.isfinite(vae.score(romed))
    vae.set_params(handle_unknown="error")
    with pytest.raises(ValueError, match="feature names"):
        vae.transform(frame[["smoker", "age", "city", "hours", "children"]])


def test_frames_with_dates_numbered_columns_and_arrays_after_frames():
    pandas = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 3))
    frame = pandas.DataFrame(x)  # columns 0, 1, 2: not text
    vae = VAETransformer(epochs=5, random_state=0).fit(frame)
    decoded = vae.inverse_transform(vae.transform(frame))
    assert list(decoded.columns) == [0, 1, 2] and decoded.shape == (80, 3)
    np.testing.assert_array_equal(vae.transform(x), vae.transform(frame))  # by position, as scikit-learn does
    dated = pandas.DataFrame({"when": pandas.date_range("2026-01-01", periods=80), "v": x[:, 0]})
    with pytest.raises(ValueError, match="'when' holds 80 distinct text values.*when=ignore"):
        VAETransformer(epochs=2).fit(dated)
    assert VAETransformer(epochs=2, column_types="when=ignore").fit(dated).schema_.names == ("v",)
    constant = np.column_stack([x, np.ones(80)])
    with pytest.warns(UserWarning, match="zero variance or one value \\(x3\\)"):
        VAETransformer(epochs=2, random_state=0).fit(constant)


def test_a_code_larger_than_the_rows_warns_in_the_estimators_terms(caplog):
    x = np.random.default_rng(0).normal(size=(60, 3))
    with pytest.warns(UserWarning, match=r"^latent_dim=4 is more than the 3 values a row is encoded as: .* choose a "
                                         r"smaller latent_dim$"):
        VAETransformer(latent_dim=4, epochs=1, random_state=0).fit(x)
    assert "--latent-dim" not in caplog.text  # not a log line naming the command line's flag as well
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        VAETransformer(latent_dim=3, epochs=1, random_state=0).fit(x)
    assert not [w for w in said if "latent_dim" in str(w.message)]  # as many as the values: nothing to warn of


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # StandardScaler, all-NaN column
def test_inverse_transform_gives_every_column_fitted_on_in_its_place():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4))
    x[:, 1] = np.nan  # a column without values: left out of the model, NaN on the way back
    with pytest.warns(UserWarning, match="without any value"):
        vae = VAETransformer(epochs=2, random_state=0, impute="mean").fit(x)
    rows = vae.inverse_transform(vae.transform(x))
    assert rows.shape == (60, 4) and np.isnan(rows[:, 1]).all() and np.isfinite(rows[:, [0, 2, 3]]).all()
    pipeline = make_pipeline(StandardScaler(), VAETransformer(epochs=2, random_state=0, impute="mean"))
    with pytest.warns(UserWarning):
        pipeline.fit(x)
    assert pipeline.inverse_transform(pipeline.transform(x)).shape == (60, 4)
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame({"a": x[:, 0], "id": np.arange(60), "c": x[:, 2]})
    ae = AETransformer(epochs=2, random_state=0, column_types="id=ignore").fit(frame)
    back = ae.inverse_transform(ae.transform(frame))
    assert list(back.columns) == ["a", "id", "c"] and back["id"].isna().all() and back["a"].notna().all()


def test_fitting_quietly_logs_no_epoch_lines_even_where_the_application_logs_info(caplog):
    x = np.random.default_rng(0).normal(size=(60, 3))
    with caplog.at_level(logging.INFO):
        VAETransformer(epochs=3, random_state=0).fit(x)
    assert "epoch" not in caplog.text and logging.getLogger("vaekit").level == logging.NOTSET


def test_decoded_frames_keep_the_index_and_the_column_types(recwarn):
    """inverse_transform of set_output('pandas') codes came back indexed 0..n-1 (so df - decoded was all NaN, twice
    the rows), bool columns as 0/1 ints, categoricals as text, integer columns as fractions; and torch warned about
    pandas' read-only arrays."""
    pandas = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    n = 200
    frame = pandas.DataFrame({
        "age": rng.integers(20, 80, n), "income": rng.normal(50, 10, n),
        "city": pandas.Categorical(rng.choice(["a", "b", "c"], n)), "flag": rng.choice([True, False], n),
        "maybe": pandas.array(rng.choice([True, False], n), dtype="boolean"),
        "count": pandas.array(rng.integers(0, 1000, n), dtype="Int64"), "f32": rng.normal(size=n).astype(np.float32),
    }, index=pandas.RangeIndex(1000, 1000 + n))
    vae = VAETransformer(epochs=2, random_state=0).set_output(transform="pandas")
    codes = vae.fit_transform(frame)
    decoded = vae.inverse_transform(codes)
    assert list(decoded.index) == list(frame.index)
    assert len(frame["income"] - decoded["income"]) == n and (frame["income"] - decoded["income"]).notna().all()
    assert dict(decoded.dtypes) == dict(frame.dtypes)
    assert (decoded["count"] == decoded["count"].round()).all()
    assert dict(vae.sample(5, random_state=0).dtypes) == dict(frame.dtypes)
    assert list(vae.inverse_transform(codes.to_numpy()).index) == list(range(n))  # an array of codes has no index
    assert not [w for w in recwarn if "not writable" in str(w.message)]


@pytest.mark.parametrize("parameter, value", [("latent_dim", 2.5), ("latent_dim", 0), ("hidden_dims", 16),
                                              ("hidden_dims", (16, 0)), ("epochs", 0), ("batch_size", 1.5),
                                              ("lr", 0.0), ("lr", float("nan")), ("beta", "1"), ("beta", -1.0),
                                              ("standardize", "no"), ("impute", "drop"), ("device", "gpu"),
                                              ("device", "cuda:0"), ("handle_unknown", "ignore")])
def test_a_parameter_of_the_wrong_type_or_range_is_named(parameter, value):
    """A float latent_dim from a grid failed inside torch ("argument 'size' must be tuple of ints"); epochs=0 returned
    an untrained model."""
    x = np.random.default_rng(0).normal(size=(40, 3))
    with pytest.raises(ValueError, match=f"The '{parameter}' parameter of VAETransformer must be"):
        VAETransformer(**{parameter: value}).fit(x)


def test_the_estimators_messages_name_their_parameters_not_command_line_flags():
    pandas = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    x[4, 1] = np.nan
    with pytest.raises(ValueError, match="missing values") as missing:
        VAETransformer(epochs=2).fit(pandas.DataFrame(x, columns=["a", "b", "c"]))
    assert "impute='mean'" in str(missing.value) and "--" not in str(missing.value)
    assert "drop" not in str(missing.value)  # the estimator refuses impute='drop'
    with pytest.warns(UserWarning, match="zero variance") as constant:
        VAETransformer(epochs=2, random_state=0).fit(np.column_stack([x[:, :1], np.ones(60)]))
    said = " ".join(str(w.message) for w in constant)
    assert "column_types='NAME=ignore'" in said and "--" not in said
    with pytest.raises(ValueError, match=r"set family_options \{'top_prior': 'vamp'\}, or leave 'top_components' out"
                       ) as needs:  # a family setting's flags, said as family_options
        VAETransformer(family="hvae", family_options={"top_components": 9}, epochs=1).fit(np.nan_to_num(x))
    assert "--" not in str(needs.value)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda', but torch sees no CUDA GPU here: use device='cpu'$"):
            VAETransformer(epochs=1, device="cuda").fit(x[:, :1])


@pytest.mark.parametrize("estimator", [VAETransformer, AETransformer])
def test_score_is_the_density_of_the_data_in_its_own_units(estimator):
    """score is a log density per row of X as given: data ten times larger (the same standardised values, so the same
    model) is ten times more spread, so each numeric column costs ln 10 nats more. A sign slip in the standardisation's
    Jacobian, or a negated score, kept every earlier check (finite; higher on training rows)."""
    x = load_wine().data
    small = estimator(epochs=3, random_state=0).fit(x)
    large = estimator(epochs=3, random_state=0).fit(10 * x)
    assert large.score(10 * x) == pytest.approx(small.score(x) - x.shape[1] * np.log(10), abs=1e-3)
    if estimator is VAETransformer:
        from vaekit import metrics

        encoded = small._encode(x)
        elbo = metrics.sampled_bounds(small.model_, encoded, 16, seed=0).elbo.mean()
        log_std = sum(np.log(c.std) for c in small.schema_.columns)
        assert small.score(x) == pytest.approx(float(elbo) - log_std, rel=1e-6)


def test_decoded_integers_stay_within_their_type_and_old_pickles_still_decode():
    """A uint8 column decoded to -15 came back as float64 (pandas 3 refuses the cast) or wrapped to 241 (older pandas);
    an estimator pickled before the column types were kept failed in inverse_transform."""
    pandas = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    frame = pandas.DataFrame({"small": rng.integers(0, 30, 300).astype(np.uint8), "v": rng.normal(size=300)})
    vae = VAETransformer(epochs=3, random_state=0).fit(frame)
    codes = np.array([[40.0, 40.0], [-40.0, -40.0], [40.0, -40.0], [-40.0, 40.0], [0.0, 0.0]])  # far out
    decoded = vae.inverse_transform(codes)
    from vaekit import latent

    raw = np.asarray(vae.schema_.decode(latent.decode_mean(vae.model_, torch.tensor(codes).float()))["small"])
    assert raw.min() < 0 or raw.max() > 255  # the test has power: some decode beyond uint8
    assert decoded["small"].dtype == np.uint8
    np.testing.assert_array_equal(decoded["small"].to_numpy(), np.clip(np.round(raw), 0, 255).astype(np.uint8))
    wide = vae.sample(300, random_state=0)
    assert wide["small"].dtype == np.uint8
    # 64-bit columns: the extremes as floats round beyond the type (2^63 - 1 is 2^63 as a float)
    from vaekit.sklearn import _as_fitted

    big = _as_fitted(pandas.Series([1e19, -1e19, 5.4]), np.dtype(np.int64))
    assert big.dtype == np.int64 and big[0] > 2**62 and big[1] == -(2**63) and big[2] == 5
    unsigned = _as_fitted(pandas.Series([1e20, -3.0]), np.dtype(np.uint64))
    assert unsigned.dtype == np.uint64 and unsigned[0] > 2**63 and unsigned[1] == 0
    del vae._frame_dtypes  # as unpickled from an older vaekit
    assert list(vae.inverse_transform(codes).columns) == ["small", "v"]


def test_the_no_step_message_names_the_parameters():
    """'a lower --lr or --beta' became 'a lower lr=or --beta' (the flag-and-value rule took 'or' for a value)."""
    from vaekit.sklearn import _in_estimator_terms

    assert _in_estimator_terms("check the data, or start again with a lower --lr or --beta").endswith(
        "start again with a lower lr or beta")
    assert _in_estimator_terms("start again with --lr 0.001") == "start again with lr=0.001"


@pytest.mark.parametrize("family, options", [("iwae", {"k": 3}), ("vamp", {"components": 7}), ("hvae", {"top_dim": 3}),
                                             ("tcvae", {"gamma": 2.0})])
def test_every_family_with_a_bound_is_a_transformer(family, options):
    """family picks any family with an ELBO; family_options reach its model; transform, score, inverse_transform and
    sample behave as the vae's do (a table's rows, the user's units)."""
    from vaekit import metrics
    from vaekit.models import MODEL_FAMILIES

    x = load_wine().data
    estimator = VAETransformer(epochs=20, random_state=0, family=family, family_options=options).fit(x)
    assert type(estimator.model_) is MODEL_FAMILIES[family]
    assert {name: getattr(estimator.model_.settings, name) for name in options} == options
    codes = estimator.transform(x)
    assert codes.shape == (len(x), 2) and np.all(np.isfinite(codes))
    encoded = estimator._encode(x)
    elbo = float(metrics.sampled_bounds(estimator.model_, encoded, 16, seed=0).elbo.mean())
    assert estimator.score(x) == pytest.approx(elbo - sum(np.log(c.std) for c in estimator.schema_.columns), rel=1e-6)
    assert estimator.inverse_transform(codes).shape == x.shape
    samples = estimator.sample(5, random_state=1)
    assert samples.shape == (5, x.shape[1]) and np.all(np.isfinite(samples))
    # the parameters as scikit-learn clones them
    assert VAETransformer(**estimator.get_params()).get_params() == estimator.get_params()


def test_grid_search_over_families():
    x = load_wine().data
    search = GridSearchCV(VAETransformer(epochs=20, random_state=0), {"family": ["vae", "iwae"]}, cv=3).fit(x)
    assert search.best_params_["family"] in ("vae", "iwae")
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))


@pytest.mark.parametrize("parameters, message", [
    ({"family": "vqvae"}, "The 'family' parameter of VAETransformer must be a family with a likelihood bound, one of "
                          "'hvae', 'iwae', 'tcvae', .*'vae', 'vamp'"),  # (and the families other tests register)
    ({"family": "ae"}, "an autoencoder: AETransformer"),
    ({"family": "iwae", "family_options": [("k", 3)]}, "The 'family_options' parameter of VAETransformer must be None"),
    ({"family": "iwae", "family_options": {"kk": 3}},
     r"^family_options of iwae: no setting 'kk' \(did you mean k\?\)$"),
    ({"family": "iwae", "family_options": {"k": 0}}, r"^family_options {'k': 0}: must be between 1 and 1000"),
    ({"family": "vae", "family_options": {"k": 3}}, r"^family 'vae' has no settings: leave family_options None"),
    ({"family": "iwae", "family_options": {"k": "ten"}}, r"^family_options\['k'\]: cannot read 'ten' as a whole"),
    ({"family": "iwae", "family_options": {"k": None}}, r"^family_options\['k'\] cannot be empty"),
])
def test_a_family_or_its_options_that_do_not_fit_are_named(parameters, message):
    from vaekit.sklearn import _in_estimator_terms

    for other in ("missing values in 1 column(s): model.engine.size (row 4)", "/runs/x/model.safetensors.tmp",
                  "model.gaussian.min_scale=0: must be > 0"):  # a column, a file, a likelihood's setting: as they are
        assert _in_estimator_terms(other) == other
    with pytest.raises(ValueError, match=message):
        VAETransformer(epochs=1, **parameters).fit(np.random.default_rng(0).normal(size=(40, 3)))
