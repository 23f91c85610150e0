"""The procedural shapes data set: factors as dSprites defines them, rendering, and the measurement helpers."""
import itertools
import math
import time

import numpy as np
import pytest
import torch

from vaekit.config import DataConfig
from vaekit.data import load_dataset
from vaekit.data import shapes  # registers "shapes" until builtin.py imports it
from vaekit.errors import VaekitError


def grid_factors(**fixed) -> np.ndarray:
    """Every combination of the given factor values; unnamed factors take one middle value."""
    default = {"shape": [0.0], "scale": [1.0], "orientation": [0.0], "x": [0.5], "y": [0.5]}
    values = [np.atleast_1d(fixed.get(name, default[name])) for name in shapes.FACTOR_NAMES]
    return np.array(list(itertools.product(*values)), dtype=np.float64)


def test_factor_grid_is_dsprites():
    grid = shapes.factor_grid()
    assert tuple(grid) == shapes.FACTOR_NAMES == ("shape", "scale", "orientation", "x", "y")
    assert tuple(len(v) for v in grid.values()) == shapes.FACTOR_SIZES == (3, 6, 40, 32, 32)
    np.testing.assert_array_equal(grid["shape"], [0, 1, 2])
    np.testing.assert_allclose(grid["scale"], np.linspace(0.5, 1, 6))
    np.testing.assert_allclose(grid["orientation"][[0, -1]], [0, 2 * math.pi])
    np.testing.assert_allclose(grid["x"][[0, -1]], [0, 1])
    np.testing.assert_allclose(np.diff(grid["y"]), 1 / 31)
    grid["x"][0] = 99  # a copy: callers cannot change the definition
    assert shapes.factor_grid()["x"][0] == 0


def test_dataset_contract_and_factor_values():
    data = shapes.make_shapes(n_train=600, n_test=100, image_size=32, seed=0)
    assert data.name == "shapes" and data.is_image and data.binary
    assert data.x_train.shape == (600, 1, 32, 32) and data.x_test.shape == (100, 1, 32, 32)
    assert data.x_train.dtype == torch.float32
    assert set(torch.unique(torch.cat([data.x_train, data.x_test])).tolist()) == {0.0, 1.0}
    assert data.label_names == ("square", "ellipse", "heart")
    assert data.y_train.dtype == torch.int64
    torch.testing.assert_close(data.y_train.float(), data.attributes_train["shape"])
    grid = shapes.factor_grid()
    for name in shapes.FACTOR_NAMES:
        values = data.attributes_train[name]
        assert values.dtype == torch.float32 and values.shape == (600,)
        assert np.isin(values.numpy(), grid[name].astype(np.float32)).all(), name
    assert set(data.y_train.tolist()) == {0, 1, 2}
    # Distinct combinations: no training item repeats in the test split.
    train = {tuple(row) for row in torch.stack(list(data.attributes_train.values()), 1).tolist()}
    test = {tuple(row) for row in torch.stack(list(data.attributes_test.values()), 1).tolist()}
    assert len(train) == 600 and not train & test


def test_deterministic_by_seed():
    first = shapes.make_shapes(n_train=200, n_test=20, image_size=32, seed=3)
    again = shapes.make_shapes(n_train=200, n_test=20, image_size=32, seed=3)
    other = shapes.make_shapes(n_train=200, n_test=20, image_size=32, seed=4)
    assert torch.equal(first.x_train, again.x_train) and torch.equal(first.x_test, again.x_test)
    assert not torch.equal(first.x_train, other.x_train)
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    np.testing.assert_array_equal(shapes.sample_factors(50, rng_a), shapes.sample_factors(50, rng_b))


def test_registered_loader_sizes_and_limit():
    data = load_dataset(DataConfig(name="shapes", image_size=32, limit=300))
    assert data.x_train.shape == (300, 1, 32, 32) and data.x_test.shape == (shapes.N_TEST, 1, 32, 32)
    assert len(data.y_train) == 300 and all(len(v) == 300 for v in data.attributes_train.values())
    # The limit keeps the same first items the full set starts with.
    full = shapes.make_shapes(image_size=32)
    assert torch.equal(data.x_train, full.x_train[:300]) and torch.equal(data.x_test, full.x_test)
    assert full.x_train.shape[0] == shapes.N_TRAIN


@pytest.mark.parametrize("size", [32, 64])
def test_shapes_stay_inside_the_frame(size):
    grid = shapes.factor_grid()
    factors = grid_factors(
        shape=[0, 1, 2], scale=[0.5, 1.0], orientation=grid["orientation"], x=[0.0, 1.0], y=[0.0, 1.0]
    )
    images = shapes.render(factors, size)[:, 0]
    assert images.shape == (len(factors), size, size)
    border = np.concatenate([images[:, 0, :], images[:, -1, :], images[:, :, 0], images[:, :, -1]], axis=1)
    assert border.sum() == 0
    assert (shapes.area(images) > 0).all()  # even the smallest shape leaves pixels on


def test_area_grows_with_scale_for_every_shape():
    scales = shapes.factor_grid()["scale"]
    positions = np.linspace(0, 1, 7)
    for shape in range(3):
        for orientation in [0.0, 0.7, 2.0]:
            factors = grid_factors(shape=shape, x=positions, y=positions, orientation=orientation, scale=scales)
            areas = shapes.area(shapes.render(factors, 64)).reshape(len(scales), -1).T  # (positions, scales)
            # A larger shape covers the smaller one, so no pixel is lost; a binary raster may gain none
            # for one step (a 1.8-pixel wider square can cover the same pixel centres), so strictness is on average.
            assert (np.diff(areas, axis=1) >= 0).all(), (shape, orientation)
            mean = areas.mean(axis=0)
            assert (np.diff(mean) > 0).all(), (shape, orientation, mean)
            np.testing.assert_allclose(mean / mean[-1], scales**2, atol=0.05)  # area goes as scale squared


def test_centre_of_mass_follows_x_and_y():
    positions = shapes.factor_grid()["x"]
    for shape in range(3):
        along_x = shapes.centre_of_mass(shapes.render(grid_factors(shape=shape, x=positions, orientation=1.0), 64))
        along_y = shapes.centre_of_mass(shapes.render(grid_factors(shape=shape, y=positions, orientation=1.0), 64))
        assert (np.diff(along_x[:, 0]) > 0).all() and np.ptp(along_x[:, 1]) < 1 / 64
        assert (np.diff(along_y[:, 1]) > 0).all() and np.ptp(along_y[:, 0]) < 1 / 64


def test_centre_of_mass_is_the_position_at_every_orientation():
    # Shapes turn about their centroid, so orientation does not move the centre of mass.
    size = 64
    factors = grid_factors(shape=[0, 1, 2], orientation=shapes.factor_grid()["orientation"], x=[0.0, 0.6])
    measured = shapes.centre_of_mass(shapes.render(factors, size))
    margin = shapes.RADIUS + 1 / size
    expected = margin + factors[:, 3:] * (1 - 2 * margin)
    assert np.abs(measured - expected).max() < 0.75 / size


def test_the_three_shapes_differ():
    images = shapes.render(grid_factors(shape=[0, 1, 2], orientation=0.3), 64)
    for a, b in itertools.combinations(range(3), 2):
        assert np.abs(images[a] - images[b]).sum() > 20, (a, b)
    areas = shapes.area(images)
    assert len(set(areas.tolist())) == 3


def test_orientation_turns_the_shapes():
    pairs = {
        0: (0.0, math.pi / 4),  # a square repeats every quarter turn
        1: (0.0, math.pi / 2),  # an ellipse every half turn
        2: (0.0, math.pi),  # a heart only after a full turn
    }
    for shape, (a, b) in pairs.items():
        images = shapes.render(grid_factors(shape=shape, orientation=[a, b]), 64)
        assert np.abs(images[0] - images[1]).sum() > 30, shape
    # A full turn is the identity (dSprites lists both 0 and 2 pi); upright, the heart has its lobes on top.
    heart = shapes.render(grid_factors(shape=2, orientation=[0.0, 2 * math.pi]), 64)[:, 0]
    np.testing.assert_array_equal(heart[0], heart[1])
    rows = np.flatnonzero(heart[0].sum(axis=1))
    top, bottom = heart[0][rows[0] + 2].sum(), heart[0][rows[-1] - 2].sum()
    assert top > bottom  # wide lobes near the top row, the tip at the bottom


def test_render_sizes_and_speed():
    factors = shapes.sample_factors(5000, np.random.default_rng(0))
    start = time.perf_counter()
    images = shapes.render(factors, 64)
    elapsed = time.perf_counter() - start
    assert images.shape == (5000, 1, 64, 64) and images.dtype == np.float32
    assert elapsed < 5.0, f"rendering 5,000 64x64 images took {elapsed:.1f} s"
    small = shapes.render(factors[:10], 32)
    assert small.shape == (10, 1, 32, 32)


def test_measurements_accept_tensors_and_flag_empty_images():
    images = torch.zeros(2, 1, 8, 8)
    images[0, 0, 2:4, 4:6] = 1
    np.testing.assert_array_equal(shapes.area(images), [4, 0])
    centre = shapes.centre_of_mass(images)
    np.testing.assert_allclose(centre[0], [5 / 8, 3 / 8])
    assert np.isnan(centre[1]).all()


@pytest.mark.parametrize(
    "factors, message",
    [
        (np.zeros((3, 4)), "columns shape, scale"),
        (np.array([[3, 1, 0, 0.5, 0.5]]), "shape must be"),
        (np.array([[0, 1.5, 0, 0.5, 0.5]]), "scale must be"),
        (np.array([[0, 1, 0, 1.2, 0.5]]), "x and y"),
        (np.array([[0, 1, np.nan, 0.5, 0.5]]), "NaN"),
    ],
)
def test_render_rejects_bad_factors(factors, message):
    with pytest.raises(VaekitError, match=message):
        shapes.render(factors, 32)
