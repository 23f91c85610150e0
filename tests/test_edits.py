"""Attribute edits, scored: the arithmetic on planted models whose answers are known, and the CLI."""
from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.distributions import Bernoulli, Independent, Normal

from vaekit import edits
from vaekit.cli import main
from vaekit.data import Dataset
from vaekit.errors import VaekitError


class Brightness:
    """A planted model of flat grey 4x4 images: the code is the image's brightness, and decoding paints it,
    clipped to [0, 1]. Every edit's effect follows in closed form."""

    code_shape = (1,)
    data_shape = (1, 4, 4)
    device = torch.device("cpu")
    config = SimpleNamespace(condition="none")

    def encode(self, x, y=None):
        return Independent(Normal(x.mean(dim=(1, 2, 3))[:, None], torch.ones(len(x), 1)), 1)

    def code(self, qz):
        return qz.mean

    def decode_code(self, z, y=None):
        return Independent(Bernoulli(probs=z.clamp(0, 1)[:, :, None, None].expand(-1, 1, 4, 4)), 3)


def _flat(values: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(values.astype(np.float32))[:, None, None, None].expand(-1, 1, 4, 4).contiguous()


@pytest.fixture(scope="module")
def bright():
    rng = np.random.default_rng(7)
    train, test = rng.uniform(0.02, 0.98, 400), rng.uniform(0.02, 0.98, 300)
    dataset = Dataset("bright", _flat(train), _flat(test), attributes_train={"bright": torch.tensor(train > 0.5).float()},
                      attributes_test={"bright": torch.tensor(test > 0.5).float()}, is_image=True)
    judge = edits.Judge("brightness", lambda x: x.mean(dim=(1, 2, 3)).double().numpy(), threshold=0.5)
    d = float(np.float32(train[train > 0.5]).astype(np.float64).mean() - np.float32(train[train <= 0.5]).mean())
    return dataset, judge, np.float32(test).astype(np.float64), d


def test_the_score_of_a_planted_edit_is_its_closed_form(bright):
    dataset, judge, v, d = bright
    strengths = (-0.6, -0.2, 0.0, 0.2, 0.6)
    score = edits.score_attribute(Brightness(), dataset, "bright", strengths, judge=judge)
    assert score.items == len(v) and score.judge_accuracy is None
    edited = {s: np.clip(v + s * d, 0, 1) for s in strengths}
    for s, moved in zip(strengths, score.moved):
        expected = None if s == 0 else np.mean((edited[s] - v) * np.sign(s) > 1e-6)
        assert moved == pytest.approx(expected, abs=1 / len(v)) if s else moved is None
    has = v > 0.5
    expected_flipped = [np.mean(edited[s][~has] > 0.5) if s > 0 else np.mean(edited[s][has] <= 0.5) if s < 0 else None
                        for s in strengths]
    assert score.flipped[2] is None
    for got, want in zip(score.flipped, expected_flipped):
        if want is not None:
            assert got == pytest.approx(want, abs=1 / len(v))
    assert score.best_strength == 0.6  # the larger push flips more
    assert "warning" not in score.summary()
    # a judge that reads every item as bright: its flips at positive strengths say nothing, and the summary says so
    credulous = edits.score_attribute(Brightness(), dataset, "bright", strengths,
                                      judge=replace(judge, threshold=-1.0))
    assert credulous.baseline == 1.0 and "warning: the judge reads 100% of the unedited items without it as having " \
        "it, so the flips at positive strengths say little about the edit" in credulous.summary()
    # strengths too small to flip anything: no strength is named best
    still = edits.score_attribute(Brightness(), dataset, "bright", (-1e-6, 0.0, 1e-6), judge=judge)
    assert still.flipped[2] < 0.01 and still.best_strength is None and "best strength" not in still.summary()
    assert score.baseline == 0.0 and score.missed == 0.0  # the reconstructions are judged as the items are
    rising = (v - 0.2 * d > 0) & (v + 0.2 * d < 1)  # strictly rising unless two strengths clip at the same end
    assert score.monotone == pytest.approx(rising.mean(), abs=1 / len(v))
    assert score.ends == pytest.approx(np.mean(edited[0.6] > edited[-0.6]), abs=1 / len(v))
    for s, change in zip(strengths, score.change):
        assert change == pytest.approx(np.mean(np.abs(edited[s] - v)), abs=1e-5)
    assert score.outside == pytest.approx(score.change, abs=1e-5)  # flat images: every pixel changes alike


def test_training_codes_given_by_the_caller_are_used_and_checked(bright):
    dataset, judge, _, _ = bright
    strengths = (-0.6, 0.0, 0.6)
    codes = dataset.x_train.mean(dim=(1, 2, 3))[:, None]  # what Brightness encodes the training split to
    given = edits.score_attribute(Brightness(), dataset, "bright", strengths, judge=judge, train_codes=codes)
    assert given == edits.score_attribute(Brightness(), dataset, "bright", strengths, judge=judge)
    shifted = edits.score_attribute(Brightness(), dataset, "bright", strengths, judge=judge, train_codes=codes * 2)
    assert shifted.flipped != given.flipped  # the direction came from the codes given, not from encoding again
    with pytest.raises(VaekitError, match="train_codes has 3 codes for 400 training items"):
        edits.score_attribute(Brightness(), dataset, "bright", strengths, judge=judge, train_codes=codes[:3])


def test_linear_and_mean_difference_agree_in_one_dimension(bright):
    dataset, judge, _, d = bright
    codes = dataset.x_train.mean(dim=(1, 2, 3))[:, None]
    from vaekit.latent import find_attribute

    groups = find_attribute(dataset, "train", "bright")
    mean_diff = edits.attribute_direction(codes, groups, "mean-diff")
    linear = edits.attribute_direction(codes, groups, "linear")
    assert float(mean_diff) == pytest.approx(d, rel=1e-5)
    assert torch.allclose(linear, mean_diff, rtol=1e-5)


def test_linear_ignores_a_difference_that_does_not_separate():
    """Two groups split by dimension 0; dimension 1 differs in mean only through one far outlier. The classifier's
    normal stays on dimension 0, the mean difference does not."""
    from vaekit.latent import AttributeGroups

    rng = np.random.default_rng(0)
    first = rng.normal(0, 1, 400)
    codes = torch.tensor(np.stack([first, rng.normal(0, 0.1, 400)], axis=1), dtype=torch.float32)
    mask = torch.from_numpy(first > 0)
    codes[torch.nonzero(mask)[0], 1] = 60.0  # one outlier moves the group's mean on dimension 1
    groups = AttributeGroups("a", mask, ~mask, "")
    mean_diff = edits.attribute_direction(codes, groups, "mean-diff")
    linear = edits.attribute_direction(codes, groups, "linear")
    assert abs(float(mean_diff[1])) > 0.2
    assert abs(float(linear[1])) < 0.1 * abs(float(linear[0]))


def test_linear_on_codes_that_cannot_be_told_apart_is_a_one_line_error():
    """Identical codes (a collapsed encoder): the classifier's normal is zero; the direction was 0/0, NaN edits."""
    from vaekit.latent import AttributeGroups

    codes = torch.full((100, 3), 0.25)
    mask = torch.arange(100) % 2 == 0
    with pytest.raises(VaekitError, match="--method linear found no direction.*use --method mean-diff"):
        edits.attribute_direction(codes, AttributeGroups("a", mask, ~mask, ""), "linear")


def test_linear_is_the_normal_of_the_boundary_where_mean_difference_is_not():
    """Codes spread 10x more along dimension 0; the groups are split by the boundary 0.1 z0 + z1 = 0, whose normal
    is (0.1, 1). The mean difference leans towards the wide dimension (its direction is the covariance times the
    normal, about (10, 1)); the classifier's normal does not."""
    from vaekit.latent import AttributeGroups

    rng = np.random.default_rng(0)
    codes = torch.tensor(rng.normal(0, 1, (4000, 2)) * [10.0, 1.0], dtype=torch.float32)
    mask = 0.1 * codes[:, 0] + codes[:, 1] > 0
    groups = AttributeGroups("a", mask, ~mask, "")
    normal = torch.tensor([0.1, 1.0]) / torch.tensor([0.1, 1.0]).norm()

    def cosine(v):
        return float(v @ normal / v.norm())

    assert cosine(edits.attribute_direction(codes, groups, "linear")) > 0.99
    assert cosine(edits.attribute_direction(codes, groups, "mean-diff")) < 0.3


def test_local_with_every_code_as_neighbour_is_the_mean_difference():
    """With as many neighbours as each group has items, every code's local direction is the two groups' mean
    difference, so the walk is the straight edit whatever the number of steps."""
    from vaekit.latent import AttributeGroups

    rng = np.random.default_rng(1)
    codes = torch.tensor(rng.normal(0, 1, (300, 3)), dtype=torch.float32)
    mask = codes[:, 0] + 0.5 * codes[:, 2] > 0.2
    groups = AttributeGroups("a", mask, ~mask, "")
    mean_diff = edits.attribute_direction(codes, groups, "mean-diff")
    edit = edits.attribute_edit(codes, groups, "local", neighbours=300)
    assert edit.neighbours == (int(mask.sum()), int((~mask).sum()))
    items = torch.tensor(rng.normal(0, 2, (50, 3)), dtype=torch.float32)
    for strength in (-2.0, -0.3, 0.0, 1.0, 2.5):
        assert torch.allclose(edit(items, strength), items + strength * mean_diff, atol=1e-5)
    assert torch.equal(edit(items, 0.0), items)
    assert edit(items[:0], 1.0).shape == (0, 3)
    with pytest.raises(VaekitError, match="needs codes in both groups, got 0 with"):
        edits.attribute_edit(codes, AttributeGroups("a", mask & False, ~mask, ""), "local")
    with pytest.raises(VaekitError, match="strength must be a finite number"):
        edit(items, float("nan"))


def test_local_follows_an_attribute_the_code_folds_and_the_mean_difference_cannot():
    """2-D codes where the attribute lies along +z1 for z0 > 0 and along -z1 for z0 < 0 (a fold, as when an encoder
    mixes scale with distance from the centre): the mean difference is near zero, while at every test code nearer
    the attribute's boundary than the fold the local direction points the attribute's way, and the walk moves each
    code that way (up the attribute's coordinate z1 * sign(z0)) with a positive strength and back with a negative
    one, without crossing the fold."""
    from vaekit.latent import AttributeGroups

    rng = np.random.default_rng(2)

    def attribute(z):
        return (z[:, 1] > 0) == (z[:, 0] > 0)

    def along(z):  # the coordinate the attribute grows with
        return z[:, 1] * torch.sign(z[:, 0])

    codes = torch.tensor(rng.uniform(-1, 1, (4000, 2)), dtype=torch.float32)
    groups = AttributeGroups("a", attribute(codes), ~attribute(codes), "")
    items = torch.tensor(rng.uniform(-1, 1, (2000, 2)), dtype=torch.float32)
    # nearer the attribute's boundary than the fold, by more than the reach of 100 neighbours (radius about 0.25)
    items = items[items[:, 0].abs() > items[:, 1].abs() + 0.3][:300]
    assert len(items) == 300
    mean_diff = edits.attribute_edit(codes, groups, "mean-diff")
    local = edits.attribute_edit(codes, groups, "local")
    assert float(mean_diff.vector.norm()) < 0.1
    assert bool((local.direction(items)[:, 1] * torch.sign(items[:, 0]) > 0).all())
    assert bool((along(local(items, 1.0)) > along(items)).all())
    assert bool((along(local(items, -1.0)) < along(items)).all())
    assert bool((torch.sign(local(items, 1.0)[:, 0]) == torch.sign(items[:, 0])).all())  # not across the fold


def test_bad_strengths_and_methods_are_refused(bright):
    dataset, judge, _, _ = bright
    with pytest.raises(VaekitError, match="must include 0"):
        edits.score_attribute(Brightness(), dataset, "bright", (1, 2), judge=judge)
    with pytest.raises(VaekitError, match="increasing order"):
        edits.score_attribute(Brightness(), dataset, "bright", (1, 0, -1), judge=judge)
    with pytest.raises(VaekitError, match="each once"):
        edits.score_attribute(Brightness(), dataset, "bright", (0, 0, 1), judge=judge)
    with pytest.raises(VaekitError, match="unknown --method"):
        edits.score_attribute(Brightness(), dataset, "bright", (0, 1), method="pca", judge=judge)


def test_the_cli_scores_and_edits_several_items(small_run, tmp_path, capsys):
    out = tmp_path / "score.json"
    assert main(["attribute", str(small_run), "--attr", "3", "--score", "--items", "200", "--out", str(out)]) == 0
    score = json.loads(out.read_text())
    assert score["items"] == 200 and score["strengths"] == [-2, -1, 0, 1, 2]
    assert 0.5 < score["judge_accuracy"] <= 1.0  # the pixel classifier of digit 3 against the rest
    assert len(score["flipped"]) == 5
    works = max(score["flipped"][3:]) > (score["baseline"] or 0) + 0.01  # some edit flips more than none does
    assert score["best_strength"] in (1, 2) if works else score["best_strength"] is None
    assert main(["attribute", str(small_run), "--attr", "3", "--apply-to", "0,4", "--method", "linear",
                 "--out", str(tmp_path / "e.npy")]) == 0
    assert np.load(tmp_path / "e.npy").shape == (2, 5, 1, 8, 8)
    assert main(["attribute", str(small_run), "--attr", "3", "--apply-to", "0,4", "--method", "local",
                 "--out", str(tmp_path / "l.npy")]) == 0
    local = np.load(tmp_path / "l.npy")
    assert local.shape == (2, 5, 1, 8, 8) and np.allclose(local[:, 2], np.load(tmp_path / "e.npy")[:, 2], atol=1e-6)
    capsys.readouterr()
    assert main(["attribute", str(small_run), "--attr", "3", "--method", "local", "--score", "--items", "50"]) == 0
    assert capsys.readouterr().out.startswith("3 (local) on 50 held-out items")
    assert main(["attribute", str(small_run), "--attr", "3", "--method", "local", "--strengths=-200,0,1",
                 "--out", str(tmp_path / "far.png")]) == 2
    assert "use strengths within +-100" in capsys.readouterr().err
    assert main(["attribute", str(small_run), "--attr", "3", "--apply-to", "0.5", "--out", str(tmp_path / "e.png")]) == 2
    # said before the training split is encoded (seconds on large data), not after
    from vaekit import latent

    def no_encoding(*_, **__):
        raise AssertionError("encoded before checking the arguments")

    real = latent.encode_dataset
    latent.encode_dataset = no_encoding
    try:
        capsys.readouterr()
        for args, says in ((["--out", str(tmp_path / "e.jpg")], "--out must end in .png or .npy"),
                           (["--score", "--out", str(tmp_path / "s.png")], "--out must end in .json with --score"),
                           (["--method", "local", "--strengths=-200,0,1", "--out", str(tmp_path / "f.png")],
                            "use strengths within +-100")):
            assert main(["attribute", str(small_run), "--attr", "3", *args]) == 2
            assert says in capsys.readouterr().err
    finally:
        latent.encode_dataset = real
    assert main(["attribute", str(small_run), "--attr", "3", "--score", "--out", str(tmp_path / "s.png")]) == 2
    assert main(["attribute", str(small_run), "--attr", "3", "--score", "--apply-to", "4"]) == 2  # --score edits all
    assert main(["attribute", str(small_run), "--attr", "3", "--items", "9", "--out", str(tmp_path / "e.png")]) == 2


def test_the_cli_edits_pictures_of_the_users_own(small_run, tmp_path, capsys, caplog):
    """attribute --pictures: the vector from the run's training codes, added to the codes of picture files (read as
    the explorer reads an upload). A test item saved as an 8-bit PNG at the model's size edits as the item itself
    does (within the PNG's rounding); saved 8 times larger in colour, it is made grey and resized, and edits closer to
    that item's edit than to another item's."""
    from PIL import Image

    from vaekit import checkpoint
    from vaekit.data import load_dataset

    x = load_dataset(checkpoint.load_config(small_run).data).x_test
    assert main(["attribute", str(small_run), "--attr", "3", "--apply-to", "0,4", "--out", str(tmp_path / "items.npy")
                 ]) == 0
    items = np.load(tmp_path / "items.npy")  # (2 items, 5 strengths, 1, 8, 8)
    grey = (x[0, 0].numpy() * 255).round().astype(np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "same size.png")
    big = (x[4, 0].numpy() * 255).round().astype(np.uint8).repeat(8, 0).repeat(8, 1)
    Image.fromarray(np.stack([big] * 3, -1), "RGB").save(tmp_path / "mine.png")
    assert main(["attribute", str(small_run), "--attr", "3", "--pictures", str(tmp_path / "same size.png"),
                 str(tmp_path / "mine.png"), "--out", str(tmp_path / "mine.npy")]) == 0
    mine = np.load(tmp_path / "mine.npy")
    assert mine.shape == items.shape
    assert np.abs(mine[0] - items[0]).max() < 0.01
    assert np.abs(mine[1] - items[1]).mean() < np.abs(mine[1] - items[0]).mean()
    assert main(["attribute", str(small_run), "--attr", "3", "--pictures", str(tmp_path / "mine.png"), "--out",
                 str(tmp_path / "mine.png.png")]) == 0
    assert Image.open(tmp_path / "mine.png.png").size[0] > 8 * 5  # the labelled grid
    Image.fromarray(grey, "L").save(tmp_path / "moving.gif", save_all=True, append_images=[Image.fromarray(255 - grey)])
    with caplog.at_level("WARNING"):
        assert main(["attribute", str(small_run), "--attr", "3", "--pictures", str(tmp_path / "moving.gif"), "--out",
                     str(tmp_path / "moving.npy")]) == 0
    assert np.abs(np.load(tmp_path / "moving.npy")[0] - items[0]).max() < 0.01  # its first frame, said
    assert f"{tmp_path / 'moving.gif'} has 2 frames (an animation or a multi-page file): its first is read" in \
        caplog.text
    (tmp_path / "notes.png").write_text("not a picture")
    capsys.readouterr()
    for args, says in ((["--pictures", str(tmp_path / "none.png")], f"no picture at {tmp_path / 'none.png'}: check"),
                       (["--pictures", str(tmp_path / "notes.png")], "notes.png is not a picture: give one of PNG"),
                       (["--pictures", str(tmp_path)], "is not a file: give picture files"),
                       (["--pictures", str(tmp_path / "mine.png"), "--apply-to", "3"], "drop --apply-to"),
                       (["--pictures", str(tmp_path / "mine.png"), "--apply-to", "0"], "drop --apply-to"),
                       (["--pictures", str(tmp_path / "mine.png"), "--score"], "drop --apply-to, --pictures")):
        out = ["--out", str(tmp_path / "s.json" if "--score" in args else tmp_path / "e.png")]
        assert main(["attribute", str(small_run), "--attr", "3", *args, *out]) == 2
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1, err


def test_the_shapes_recipe_edits_scale_and_position_on_every_test_item(shapes_recipe_run):
    """The shipped recipe as a user runs it (`vaekit train --recipe shapes`, then `vaekit attribute RUN --attr NAME
    --score`: the recipe's own edit method, local), every one of the 2,000 test shapes edited at strengths -1, 0, 1
    and measured (area; centre of mass). The target: each factor rises strictly for at least 95% of the items."""
    from vaekit.cli.common import recipe_config

    model, dataset = shapes_recipe_run
    method = recipe_config("shapes").edits.method
    scores = {name: edits.score_attribute(model, dataset, name, (-1, 0, 1), method=method)
              for name in ("scale", "x", "y")}
    report = {name: (round(s.monotone, 3), round(s.ends, 3)) for name, s in scores.items()}
    assert method == "local" and all(s.items == 2000 for s in scores.values())
    assert all(s.monotone >= 0.95 for s in scores.values()), report


def test_the_local_walk_finds_its_neighbours_again_after_each_step():
    """One nearest neighbour per group, two steps: from 4.4 the nearest codes are 5 (with) and 2 (without), a step of
    +1.5 reaches 5.9, where the nearest without is 8, and the second step comes back by 1.5. A walk that kept its
    first direction would end at 7.4."""
    from vaekit.latent import AttributeGroups

    codes = torch.tensor([[5.0], [100.0], [2.0], [8.0]])
    mask = torch.tensor([True, True, False, False])
    edit = edits.AttributeEdit("local", torch.zeros(1), codes, AttributeGroups("a", mask, ~mask, ""), neighbours=1,
                               steps=2)
    start = torch.tensor([[4.4]])
    torch.testing.assert_close(edit.direction(start), torch.tensor([[3.0]]))
    torch.testing.assert_close(edit.direction(torch.tensor([[5.9]])), torch.tensor([[-3.0]]))
    torch.testing.assert_close(edit(start, 1.0), torch.tensor([[4.4]]))
    torch.testing.assert_close(edit(start, 0.5), torch.tensor([[5.9]]))  # one step


def test_a_judge_that_sees_no_change_scores_no_rise(bright):
    dataset, judge, _, _ = bright
    blind = replace(judge, read=lambda x: np.zeros(len(x)))
    score = edits.score_attribute(Brightness(), dataset, "bright", (-0.6, 0.0, 0.6), judge=blind)
    assert score.ends == 0.0 and score.monotone == 0.0 and score.moved == (0.0, None, 0.0)


def test_the_best_strength_is_the_gentlest_that_flips_as_many(bright):
    dataset, judge, _, _ = bright
    # at 1.5 and 3 mean differences every dark item is pushed past 0.5: both flip all, the gentler is the best
    score = edits.score_attribute(Brightness(), dataset, "bright", (0.0, 1.5, 3.0), judge=judge)
    assert score.flipped[1:] == (1.0, 1.0) and score.best_strength == 1.5


def test_the_region_away_from_the_attribute_is_where_the_groups_differ_least():
    from vaekit.latent import AttributeGroups

    x = torch.zeros(6, 1, 4, 4)
    x[:3, :, :, :2] = 1.0  # the attribute: a bright left half
    mask = torch.tensor([True] * 3 + [False] * 3)
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[:, 2:] = True
    assert torch.equal(edits._away_from_attribute(x, AttributeGroups("left", mask, ~mask, "")), expected)
