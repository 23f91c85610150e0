"""Latent-space operations on known answers: planted encoders, a trained shapes VAE, and the CLI end to end."""
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vaekit
from vaekit import DataConfig, ModelConfig, RunConfig, TrainConfig, build_model, edits, latent, viz
from vaekit.cli import main
from vaekit.cli.common import recipe_config
from vaekit.data import Dataset, shapes
from vaekit.errors import VaekitError

STRENGTHS = torch.linspace(-2, 2, 9)


def spearman(values: np.ndarray) -> float:
    """Rank correlation of values with their order (no ties expected)."""
    ranks = np.argsort(np.argsort(values))
    return float(np.corrcoef(np.arange(len(values)), ranks)[0, 1])


def tiny_model(family: str = "vae", latent_dim: int = 4, seed: int = 0) -> vaekit.Model:
    torch.manual_seed(seed)
    cfg = ModelConfig(family=family, latent_dim=latent_dim, network="mlp", hidden_dims=(32,), likelihood="bernoulli",
                      data_shape=(1, 8, 8))
    return build_model(cfg).eval()


def identity_encoder_model(family: str, dim: int = 4) -> vaekit.Model:
    """A model on vectors whose posterior mean is x itself (and log-variance 0): codes are planted by the data."""
    torch.manual_seed(0)
    cfg = ModelConfig(family=family, latent_dim=dim, network="mlp", hidden_dims=(dim,), likelihood="gaussian",
                      data_shape=(dim,))
    model = build_model(cfg).eval()
    first, last = [m for m in model.encoder if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        first.weight.copy_(torch.eye(dim))
        first.bias.zero_()  # the ReLU between passes x >= 0 unchanged
        last.weight.zero_()
        last.weight[:dim].copy_(torch.eye(dim))
        last.bias.zero_()
    return model


# ---- paths, draws, traversals on untrained models ---------------------------------------------------------


def test_interpolation_endpoints_are_decoded_posterior_means():
    model = tiny_model()
    x = torch.rand(2, 1, 8, 8)
    expected = model.decode(model.encode(x).mean).mean
    for method in ("lerp", "slerp"):
        path = latent.interpolate(model, x[0], x[1], steps=7, method=method)
        assert path.shape == (7, 1, 8, 8)
        torch.testing.assert_close(path[0], expected[0])
        torch.testing.assert_close(path[-1], expected[1])


def test_slerp_keeps_equal_norms_and_lerp_hits_the_midpoint():
    generator = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, generator=generator), torch.randn(6, generator=generator)
    z2 = z2 * z1.norm() / z2.norm()
    path = latent.slerp(z1, z2, 11)
    torch.testing.assert_close(path.norm(dim=1), z1.norm().expand(11))
    torch.testing.assert_close(path[0], z1)
    torch.testing.assert_close(path[-1], z2)
    assert (path[5] - (z1 + z2) / 2).norm() > 0.1  # a real arc, not the chord
    torch.testing.assert_close(latent.lerp(z1, z2, 3)[1], (z1 + z2) / 2)


def test_slerp_between_opposite_codes_is_the_straight_path():
    """No great circle joins opposite codes (for a 1-D code: any two of opposite sign); the path was rounding noise
    divided by sin(pi) (2.15 -> 3.90 -> 2.27 -> 0 -> 0 -> -0.46 on Frey's 1-D model)."""
    opposite = [(torch.tensor([2.149]), torch.tensor([-0.461])),
                (torch.tensor([1.0, -2.0]), torch.tensor([-1.5, 3.0])),
                (torch.tensor([0.3, 0.4, -1.2]), -torch.tensor([0.3, 0.4, -1.2]))]
    for z1, z2 in opposite:
        path = latent.slerp(z1, z2, 8)
        assert torch.isfinite(path).all()
        torch.testing.assert_close(path, latent.lerp(z1, z2, 8))
    # nearly opposite, yet a circle: a real arc, its end points hit
    z1, z2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 0.01])
    path = latent.slerp(z1, z2, 9)
    torch.testing.assert_close(path[-1], z2)
    assert path.norm(dim=1).min() > 0.99


def test_vary_draws_differ_for_a_vae_and_coincide_for_an_ae():
    x = torch.rand(1, 8, 8)
    vae_draws = latent.vary(tiny_model("vae"), x, 6, torch.Generator().manual_seed(0))
    assert vae_draws.shape == (6, 1, 8, 8)
    differences = (vae_draws[:, None] - vae_draws[None]).abs().amax(dim=(2, 3, 4))  # (6, 6)
    assert (differences + torch.eye(6) > 1e-3).all()  # every pair differs
    again = latent.vary(tiny_model("vae"), x, 6, torch.Generator().manual_seed(0))
    torch.testing.assert_close(vae_draws, again)  # the generator decides the draws
    ae = tiny_model("ae")
    ae_draws = latent.vary(ae, x, 6, torch.Generator().manual_seed(0))
    torch.testing.assert_close(ae_draws, ae.reconstruct(x[None]).expand(6, -1, -1, -1))


def test_traverse_shapes_and_cells():
    model = tiny_model(latent_dim=5)
    x = torch.rand(1, 8, 8)
    values = torch.linspace(-2, 2, 7)
    result = latent.traverse(model, x, dims=[3, 0], values=values)
    assert result.images.shape == (2, 7, 1, 8, 8) and result.dims == (3, 0)
    assert result.grid().shape == (14, 1, 8, 8)
    z = model.encode(x[None]).mean[0].clone()
    z[0] = values[2]
    torch.testing.assert_close(result.images[1, 2], model.decode(z[None]).mean[0])
    assert latent.traverse(model, x).images.shape == (5, 9, 1, 8, 8)  # default: every dim, -3..3 in 9 steps
    with pytest.raises(VaekitError, match="0..4"):
        latent.traverse(model, x, dims=[5])
    with pytest.raises(VaekitError, match="not both"):
        latent.traverse(model, x, dims=[0], top_n=1)


def test_top_dimensions_are_ranked_by_kl_for_a_vae_and_by_variance_for_an_ae():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(500, 4, generator=generator) * 0.1
    x[:, 1] += 3.0  # large mean code, little spread: the most KL to N(0, 1) when the variance is fixed at 1
    x[:, 2] = torch.rand(500, generator=generator) * 2  # the most spread
    vae, ae = identity_encoder_model("vae"), identity_encoder_model("ae")
    assert latent.traverse(vae, x[0], top_n=2, data=x).dims == (1, 2)
    assert latent.traverse(ae, x[0], top_n=1, data=x).dims == (2,)
    scores = latent.dimension_scores(vae, x)
    torch.testing.assert_close(scores, 0.5 * (x**2).mean(0), rtol=1e-4, atol=1e-5)  # KL = mu^2 / 2 at unit variance



def test_cli_traverse_of_an_autoencoder_steps_in_the_spread_of_its_codes_over_the_data(tmp_path):
    """A family with no likelihood bound has no prior to measure steps in (the ae's is nominal): the command's
    steps, as the explorer's sliders, are the codes' own mean and spread over the split's items."""
    run = tmp_path / "ae"
    vaekit.train(RunConfig(data=DataConfig(name="digits"), model=ModelConfig(family="ae", latent_dim=4, network="mlp",
                                                                             hidden_dims=(32,)),
                           train=TrainConfig(epochs=1, progress=False)), out=run)
    assert main(["traverse", str(run), "--dims", "0,2", "--range", "-1,1", "--steps", "3", "--out",
                 str(tmp_path / "t.npy")]) == 0
    model = vaekit.load(run)
    x = vaekit.data.load_dataset(vaekit.checkpoint.load_config(run).data).x_test
    expected = latent.traverse(model, x[0], dims=[0, 2], values=[-1, 0, 1], data=x[:2000]).images
    nominal = latent.traverse(model, x[0], dims=[0, 2], values=[-1, 0, 1]).images  # N(0, I): not the codes' scale
    saved = torch.from_numpy(np.load(tmp_path / "t.npy"))
    torch.testing.assert_close(saved.reshape(expected.shape), expected)
    assert not torch.allclose(saved.reshape(nominal.shape), nominal, atol=1e-3)
    # the steps, computed here from the codes themselves: mean + value x standard deviation, dimension by dimension
    codes = latent.encode_dataset(model, x[:2000]).double()
    traversal = latent.traverse(model, x[0], dims=[0, 2], values=[-1, 0, 1], data=x[:2000])
    values = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    wanted = codes.mean(0)[[0, 2], None] + codes.std(0)[[0, 2], None] * values
    torch.testing.assert_close(traversal.positions.double(), wanted, atol=1e-5, rtol=1e-5)
    z = traversal.code.flatten().clone()
    z[2] = wanted[1, 2].float()  # dimension 2 at +1 standard deviation: the second row's last image
    torch.testing.assert_close(traversal.images[1, 2], latent.decode_mean(model, z[None])[0])


# ---- attribute vectors, arithmetic, neighbours ------------------------------------------------------------


def test_attribute_vector_points_towards_the_planted_attribute():
    model = identity_encoder_model("vae")
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(200, 4, generator=generator)
    has = torch.arange(200) % 3 == 0
    x[has, 2] += 2.0
    vector = latent.attribute_vector(model, x, has)
    assert vector[2] > 1.5 and vector[2] == vector.abs().max()
    torch.testing.assert_close(vector, x[has].mean(0) - x[~has].mean(0))
    assert latent.attribute_vector(model, x, ~has)[2] < -1.5  # swapping the groups flips the sign
    # Applying it: strength 0 reconstructs the item; the planted code moves by exactly s * vector.
    images = latent.apply_attribute(model, x[1], vector, [0.0, 1.0])
    torch.testing.assert_close(images[0], model.reconstruct(x[1:2])[0])
    torch.testing.assert_close(images[1], model.decode((x[1] + vector)[None]).mean[0])
    with pytest.raises(VaekitError, match="both groups"):
        latent.attribute_vector(model, x, torch.ones(200, dtype=torch.bool))


def test_attribute_groups_from_values_and_labels():
    groups = latent.groups_from_values(torch.tensor([0.1, 0.5, 0.5, 0.9, 0.3]), "scale")
    assert groups.mask.tolist() == [False, False, False, True, False]
    assert groups.versus.tolist() == [True, False, False, False, True]  # the median items are in neither
    boolean = latent.groups_from_values(torch.tensor([1.0, 0.0, 1.0]), "Smiling")
    assert boolean.mask.tolist() == [True, False, True] and boolean.versus.tolist() == [False, True, False]
    y = torch.tensor([0, 1, 2, 1, 0])
    vs_one = latent.groups_from_labels(y, "heart", versus="ellipse", label_names=("square", "ellipse", "heart"))
    assert vs_one.mask.tolist() == [False, False, True, False, False]
    assert vs_one.versus.tolist() == [False, True, False, True, False]
    vs_all = latent.groups_from_labels(y, 0)
    assert vs_all.versus.tolist() == [False, True, True, True, False]
    with pytest.raises(VaekitError, match="only one group"):
        latent.groups_from_values(torch.full((4,), 0.7), "scale")
    with pytest.raises(VaekitError, match="did you mean heart"):
        latent.groups_from_labels(y, "hart", label_names=("square", "ellipse", "heart"))
    # a class of the training split that the test split lacks (Olivetti keeps people apart): the split is named
    people = vaekit.Dataset("people", torch.rand(6, 1, 8, 8), torch.rand(3, 1, 8, 8), torch.tensor([0, 0, 1, 1, 2, 2]),
                            torch.tensor([3, 3, 4]), label_names=tuple(f"person {i}" for i in range(5)))
    with pytest.raises(VaekitError, match=r"person 0 has only one group in the test split \(class person 0 \(0 items"):
        latent.find_attribute(people, "test", "person 0")
    assert latent.find_attribute(people, "train", "person 0").mask.tolist() == [True, True, False, False, False, False]


def test_find_attribute_resolves_tables_attributes_and_classes(tmp_path):
    x = torch.rand(6, 4)
    dataset = Dataset("toy", x, x, torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([0, 1, 2, 0, 1, 2]),
                      label_names=("cat", "dog", "eel"), attributes_test={"size": torch.arange(6.0)})
    assert latent.find_attribute(dataset, "test", "size").mask.tolist() == [False] * 3 + [True] * 3
    assert latent.find_attribute(dataset, "test", "dog", versus="cat").versus.tolist() == [True, False, False] * 2
    table = tmp_path / "attributes.csv"
    table.write_text("file,Smiling\n" + "".join(f"{i}.png,{int(i % 2 == 0)}\n" for i in range(6)))
    assert latent.find_attribute(dataset, "test", "Smiling", table=table).mask.tolist() == [True, False] * 3
    with pytest.raises(VaekitError, match="did you mean size"):
        latent.find_attribute(dataset, "test", "sise")
    with pytest.raises(VaekitError, match="by order"):
        latent.find_attribute(Dataset("toy", x[:5], x[:5]), "test", "Smiling", table=table)


def test_arithmetic_decodes_a_minus_b_plus_c():
    model = identity_encoder_model("vae")
    a, b, c = torch.rand(3, 4, generator=torch.Generator().manual_seed(2)) + 1.0
    torch.testing.assert_close(latent.arithmetic(model, a, b, c), model.decode((a - b + c)[None]).mean[0])


def test_nearest_neighbour_of_an_items_code_is_itself():
    model = tiny_model()
    codes = latent.encode_dataset(model, torch.rand(50, 1, 8, 8, generator=torch.Generator().manual_seed(3)))
    found = latent.nearest_neighbours(codes, codes[17], k=5)
    assert found.indices[0] == 17 and found.distances[0] == 0
    assert (found.distances.diff() >= 0).all() and found.indices.shape == (5,)
    torch.testing.assert_close(found.distances[1], (codes - codes[17]).norm(dim=1).sort().values[1])
    batch = latent.nearest_neighbours(codes, codes[:3], k=2)
    assert batch.indices[:, 0].tolist() == [0, 1, 2]
    with pytest.raises(VaekitError, match="--k"):
        latent.nearest_neighbours(codes, codes[0], k=51)


# ---- latent maps ------------------------------------------------------------------------------------------


def test_latent_map_is_the_code_for_2d_and_pca_otherwise(tmp_path, monkeypatch):
    two = tiny_model(latent_dim=2)
    x = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    flat = latent.latent_map(two, x, labels=torch.arange(40) % 3)
    assert flat.projection == "latent" and flat.points.shape == (40, 2)
    np.testing.assert_allclose(flat.points, latent.encode_dataset(two, x).numpy(), atol=1e-6)
    assert sum(flat.explained_variance) == pytest.approx(1.0)

    generator = torch.Generator().manual_seed(5)
    codes = torch.randn(300, 4, generator=generator) * torch.tensor([0.1, 3.0, 0.05, 1.0]) + 20  # positive: the ReLU passes it
    pca = latent.latent_map(identity_encoder_model("vae"), codes)
    assert pca.projection == "pca" and pca.labels is None
    np.testing.assert_allclose(np.abs(pca.axes), np.eye(4)[[1, 3]], atol=0.05)  # the two widest dims
    assert pca.explained_variance[0] > pca.explained_variance[1] > 0.05 and sum(pca.explained_variance) <= 1
    # the same map whichever signs the SVD gives its axes (another LAPACK): each axis's first coordinate >= 0
    svd = np.linalg.svd
    monkeypatch.setattr(np.linalg, "svd", lambda a, full_matrices=True: tuple(
        part * sign for part, sign in zip(svd(a, full_matrices=full_matrices), (-1, 1, -1))))
    flipped = latent.latent_map(identity_encoder_model("vae"), codes)
    assert (flipped.axes[:, 0] >= 0).all()
    np.testing.assert_array_equal(flipped.points, pca.points)
    monkeypatch.setattr(np.linalg, "svd", svd)
    with pytest.raises(VaekitError, match="pca"):
        latent.latent_map(tiny_model(latent_dim=3), x, method="latent")

    plain = viz.plot_latent_map(flat, tmp_path / "map.png", label_names=["a", "b", "c"])
    with_grid = viz.plot_latent_map(flat, tmp_path / "manifold.png", manifold=two)
    with Image.open(plain) as small, Image.open(with_grid) as wide:
        assert wide.width > 1.5 * small.width and wide.height == small.height


def test_latent_map_coloured_by_an_attribute_names_it_in_the_legend(tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert main(["train", "--data", "shapes", "--image-size", "32", "--limit", "300", "--epochs", "1", "--network",
                 "mlp", "--hidden-dims", "16", "--latent-dim", "2", "--no-progress", "--out", str(run)]) == 0
    seen = {}
    monkeypatch.setattr(viz, "plot_latent_map", lambda result, out, label_names=None, **_: seen.update(
        names=label_names, labels=result.labels) or out)
    assert main(["latent-map", str(run), "--color-by", "shape", "--n", "200", "--out", str(tmp_path / "m.png")]) == 0
    assert seen["names"] == ("shape=0", "shape=1", "shape=2") and set(np.unique(seen["labels"])) <= {0, 1, 2}
    assert main(["latent-map", str(run), "--color-by", "x", "--n", "200", "--out", str(tmp_path / "x.png")]) == 0
    assert seen["names"] is None  # a continuous attribute: a colour scale


def test_latent_map_decodes_a_conditioned_models_grid_with_the_label_asked_for(tmp_path, monkeypatch):
    """--label picks the class the grid is decoded with (it was always class 0, with no way to choose)."""
    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--limit", "300", "--epochs", "1", "--network", "mlp", "--hidden-dims",
                 "16", "--latent-dim", "2", "--condition", "label", "--no-progress", "--out", str(run)]) == 0
    seen = {}
    monkeypatch.setattr(viz, "plot_latent_map", lambda result, out, manifold_label=None, **_: seen.update(
        label=manifold_label) or out)
    for flags, label in (([], None), (["--label", "3"], 3)):
        assert main(["latent-map", str(run), *flags, "--out", str(tmp_path / "m.png")]) == 0
        assert seen.pop("label") == label
    assert main(["latent-map", str(run), "--label", "10", "--out", str(tmp_path / "m.png")]) == 2 and not seen


def test_latent_map_of_many_classes_gets_a_colour_scale_not_a_legend(tmp_path, monkeypatch):
    """32 people (Olivetti's training split): tab20's colours would repeat and the legend cover the plot."""
    generator = np.random.default_rng(1)
    flat = latent.LatentMap(points=generator.normal(size=(320, 2)), labels=np.repeat(np.arange(32), 10),
                            projection="latent", explained_variance=(0.6, 0.4), center=np.zeros(2), axes=np.eye(2))
    figures = []
    monkeypatch.setattr(viz, "_save_figure", lambda fig, path: figures.append(fig) or path)
    viz.plot_latent_map(flat, tmp_path / "many.png")
    viz.plot_latent_map(replace(flat, labels=flat.labels % 10), tmp_path / "ten.png")
    many, ten = figures
    assert many.axes[0].get_legend() is None and len(many.axes) == 2  # the scatter and its colour bar
    assert len(ten.axes[0].get_legend().get_texts()) == 10


def test_latent_map_is_to_scale_interleaves_classes_and_says_what_its_points_are(tmp_path, monkeypatch):
    """A code that varies along one axis looks it (equal axes); later classes are not drawn over earlier ones; an
    autoencoder's points are its codes, not posterior means; a conditioned model's plane names its class."""
    generator = np.random.default_rng(2)
    points = np.stack([generator.normal(0, 10, 300), generator.normal(0, 0.1, 300)], axis=1)
    flat = latent.LatentMap(points=points, labels=np.repeat(np.arange(3), 100), projection="latent",
                            explained_variance=(0.99, 0.01), center=np.zeros(2), axes=np.eye(2))
    figures = []
    monkeypatch.setattr(viz, "_save_figure", lambda fig, path: figures.append(fig) or path)
    viz.plot_latent_map(flat, tmp_path / "m.png", codes="codes", split="test")
    ax = figures[-1].axes[0]
    assert ax.get_aspect() == 1.0 and ax.get_title() == "codes of 300 test items"
    drawn = ax.collections[0].get_facecolors()[:, :3]
    first_hundred = {tuple(np.round(c, 3)) for c in drawn[:100]}
    assert len(first_hundred) == 3  # the draw order mixes the classes
    torch.manual_seed(0)
    cfg = ModelConfig(family="vae", latent_dim=2, network="mlp", hidden_dims=(8,), likelihood="bernoulli",
                      data_shape=(1, 4, 4), condition="label", num_labels=3, label_names=("cat", "dog", "owl"))
    viz.plot_latent_map(flat, tmp_path / "c.png", manifold=build_model(cfg).eval(), manifold_label=2)
    assert figures[-1].axes[1].get_title().split("\n")[0].endswith(", class owl")


def test_latent_map_manifold_keeps_items_their_shape(tmp_path, monkeypatch):
    """Frey-like items, 12 tall and 8 wide, over axes whose ranges differ 50-fold: the decoded grid is shown with
    square pixels, so each item keeps its 3:2 shape (filling the panel would stretch it by the ranges' ratio)."""
    torch.manual_seed(0)
    cfg = ModelConfig(family="vae", latent_dim=2, network="mlp", hidden_dims=(16,), likelihood="bernoulli",
                      data_shape=(1, 12, 8))
    model = build_model(cfg).eval()
    generator = np.random.default_rng(0)
    points = np.stack([generator.uniform(-50, 50, 200), generator.uniform(-1, 1, 200)], axis=1)
    flat = latent.LatentMap(points=points, labels=None, projection="latent", explained_variance=(0.9, 0.1),
                            center=np.zeros(2), axes=np.eye(2))
    figures = []
    real_save = viz._save_figure
    monkeypatch.setattr(viz, "_save_figure", lambda fig, path: figures.append(fig) or real_save(fig, path))
    viz.plot_latent_map(flat, tmp_path / "map.png", manifold=model, grid=5)
    figure = figures[0]
    figure.canvas.draw()
    image = figure.axes[1].images[0]
    rows, cols = image.get_array().shape[:2]
    box = image.get_window_extent()
    assert box.width / box.height == pytest.approx(cols / rows, rel=0.02)
    assert rows / cols == pytest.approx((5 * 13 + 1) / (5 * 9 + 1))  # 5 items of 12x8, 1 pixel apart


# ---- a VAE trained on shapes: attribute vectors and traversals move what they claim -------------------------


@pytest.fixture(scope="module")
def shapes_run(shapes_recipe_run):
    """The shipped shapes recipe with default settings (conftest.shapes_recipe_run)."""
    return shapes_recipe_run


def _attribute_curves(model, dataset, name: str, measure) -> np.ndarray:
    """measure(decoded edit at strength s) over STRENGTHS for 8 test items whose factor is central: (8, 9).

    An edit of strength 1 moves the factor by up to half its range, so s = +-2 pushes an item near an edge out of
    the data's range, where the decoder saturates; central items stay inside it.
    """
    groups = latent.find_attribute(dataset, "train", name)
    method = recipe_config("shapes").edits.method  # the recipe's own edit (local)
    edit = edits.attribute_edit(latent.encode_dataset(model, dataset.x_train), groups, method)
    factor = dataset.attributes_test[name].numpy()
    low, high = np.quantile(factor, [0.3, 0.7])
    items = np.flatnonzero((factor >= low) & (factor <= high))[:8]
    return np.array([measure(edits.apply_edit(model, dataset.x_test[i], edit, STRENGTHS)) for i in items])


def _assert_increasing(curves: np.ndarray) -> None:
    rhos = [spearman(curve) for curve in curves]
    assert np.median(rhos) > 0.9 and spearman(curves.mean(0)) > 0.9, rhos
    assert (curves[:, -1] > curves[:, 0]).all(), curves[:, [0, -1]]


def test_scale_vector_grows_the_shape(shapes_run):
    model, dataset = shapes_run
    curves = _attribute_curves(model, dataset, "scale", shapes.area)
    _assert_increasing(curves)
    assert (curves[:, -1] > 1.5 * curves[:, 0]).all()  # a visible change, not a flicker


def test_x_vector_moves_the_centre_of_mass_right(shapes_run):
    model, dataset = shapes_run
    curves = _attribute_curves(model, dataset, "x", lambda images: shapes.centre_of_mass(images)[:, 0])
    _assert_increasing(curves)
    assert (curves[:, -1] - curves[:, 0] > 0.1).all()  # over 3 pixels of 32


def test_traversal_of_the_dimension_most_correlated_with_x_moves_the_shape(shapes_run):
    model, dataset = shapes_run
    codes = latent.encode_dataset(model, dataset.x_train[:2000]).numpy()
    x_factor = dataset.attributes_train["x"][:2000].numpy()
    correlations = np.array([np.corrcoef(codes[:, d], x_factor)[0, 1] for d in range(model.latent_dim)])
    dim = int(np.abs(correlations).argmax())
    values = STRENGTHS * float(np.sign(correlations[dim]))  # oriented so that larger values mean further right
    curves = np.array([shapes.centre_of_mass(latent.traverse(model, dataset.x_test[i], dims=[dim], values=values).images[0])[:, 0]
                       for i in range(16)])
    # Position is not fully disentangled (one dimension mixes x and y), so some items move little: the
    # average path must rise monotonically, and most items must end further right than they start.
    assert spearman(curves.mean(0)) > 0.9, curves.round(2)
    assert (curves[:, -1] - curves[:, 0]).mean() > 0.05
    assert (curves[:, -1] > curves[:, 0]).mean() >= 0.75, curves[:, [0, -1]]


# ---- the CLI end to end on a tiny digits run ----------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("latent-cli") / "run"
    cfg = RunConfig(
        data=DataConfig(name="digits"),
        model=ModelConfig(family="vae", latent_dim=2, network="mlp", hidden_dims=(32,)),
        train=TrainConfig(epochs=1, seed=0, progress=False),
    )
    vaekit.train(cfg, out=out)
    return out


@pytest.mark.parametrize(
    "command, out, shape",
    [
        ("traverse {run} --item 3 --dims 1,0 --range -3,3 --steps 5", "t.png", None),
        ("traverse {run} --item 3 --top 1 --range -2,2 --steps 4", "t.npy", (1, 4, 1, 8, 8)),
        ("attribute {run} --attr 1 --versus 7 --apply-to 0 --strengths -2,-1,0,1,2", "a.png", None),
        ("attribute {run} --attr 0 --apply-to 2 --strengths=-1,0,1", "a.npy", (3, 1, 8, 8)),
        ("vary {run} --item 4 --n 6", "v.npy", (6, 1, 8, 8)),
        ("vary {run} --item 4 --n 6", "v.png", None),
        ("arithmetic {run} --a 0 --b 1 --c 2", "x.png", None),
        ("arithmetic {run} --a 0 --b 1 --c 2", "x.npy", (1, 1, 8, 8)),
        ("neighbours {run} --item 5 --k 4 --split train", "n.npy", (4, 1, 8, 8)),
        ("neighbours {run} --item 5 --k 4", "n.png", None),
        ("latent-map {run} --n 300", "map.png", None),
        ("latent-map {run} --n 300", "map.npy", (300, 2)),
    ],
)
def test_cli_commands_write_their_outputs(digits_run, tmp_path, capsys, command, out, shape):
    path = tmp_path / out
    assert main([*command.format(run=digits_run).split(), "--out", str(path)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == str(path)  # the output's path last; neighbours names the items it found before it
    assert len(printed) == (2 if command.startswith("neighbours") else 1)
    if shape is not None:
        assert np.load(path).shape == shape
    else:
        with Image.open(path) as picture:
            picture.verify()


@pytest.mark.parametrize(
    "command, message",
    [
        ("attribute {run} --attr seven --apply-to 0", "no attribute or class 'seven'"),
        ("attribute {run} --attr 1 --apply-to 0 --strengths -2,x", "--strengths must be comma-separated numbers"),
        ("traverse {run} --item 999", "item index 999 is out of range"),
        ("traverse {run} --dims 0,5", "--dims must be distinct latent dimensions in 0..1"),
    ],
)
def test_cli_errors_are_one_line(digits_run, tmp_path, capsys, command, message):
    assert main([*command.format(run=digits_run).split(), "--out", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not (tmp_path / "o.png").exists()


def test_cli_error_exits_2_without_traceback(digits_run, tmp_path):
    command = [str(Path(sys.executable).parent / "vaekit"), "attribute", str(digits_run), "--attr", "1",
               "--versus", "1", "--apply-to", "0", "--out", str(tmp_path / "a.png")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["vaekit: error: --versus names the same class as --attr (1): choose another class"]


def _conditioned_model() -> vaekit.Model:
    torch.manual_seed(0)
    return build_model(ModelConfig(latent_dim=4, network="mlp", hidden_dims=(32,), likelihood="bernoulli",
                                   data_shape=(1, 8, 8), condition="label", num_labels=3)).eval()


def test_a_conditioned_models_codes_take_each_batchs_own_labels():
    model = _conditioned_model()
    generator = torch.Generator().manual_seed(0)
    x, y = torch.rand(25, 1, 8, 8, generator=generator), torch.randint(0, 3, (25,), generator=generator)
    torch.testing.assert_close(latent.encode_dataset(model, x, y=y, batch_size=4),
                               latent.encode_dataset(model, x, y=y, batch_size=25))


def test_a_conditioned_path_is_decoded_with_the_first_items_label_and_arithmetic_with_cs():
    model = _conditioned_model()
    a, b, c = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    path = latent.interpolate(model, a, b, steps=3, y1=0, y2=2)
    torch.testing.assert_close(path, latent.interpolate(model, a, b, steps=3, y1=0, y2=2, label=0))
    assert not torch.allclose(path, latent.interpolate(model, a, b, steps=3, y1=0, y2=2, label=2))
    z = torch.stack([latent.item_code(model, item, y=label) for item, label in ((a, 0), (b, 1), (c, 2))])
    expected = latent.decode_mean(model, (z[0] - z[1] + z[2])[None], torch.tensor([2]))[0]
    torch.testing.assert_close(latent.arithmetic(model, a, b, c, labels=[0, 1, 2]), expected)
