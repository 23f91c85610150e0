"""The model contract, parametrised over every registered family, and training on real (bundled) data."""
import json
import math
from dataclasses import replace

import pytest
import torch
from torch import nn

import vaekit
from vaekit.checkpoint import load_config
from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaekit.data import TensorData, load_dataset
from vaekit.models import build_model
from vaekit.distributions import rsample_with
from vaekit.networks import ACTIVATIONS, resolve_network
from vaekit.runs import resolve_config, untrained_warning



def make(family: str, shape: tuple, network: str = "auto", likelihood: str = "bernoulli") -> vaekit.Model:
    return build_model(ModelConfig(family=family, latent_dim=3, hidden_dims=(16,), conv_channels=(4, 8),
                                   data_shape=shape, network=network, likelihood=likelihood))


def test_ae_has_no_regularizer_and_vae_has_kl():
    x = torch.rand(4, 12)
    ae = make("ae", (12,))(x)
    assert set(ae.terms) == {"recon"} and ae.elbo is None
    assert make("vae", (12,))(x).terms["kl"].min() > 0.0


def test_beta_and_warm_up_weight_only_the_regularizer():
    x = torch.rand(4, 12)
    torch.manual_seed(0)
    base = build_model(ModelConfig(latent_dim=3, hidden_dims=(16,), data_shape=(12,), likelihood="bernoulli"))
    heavy = build_model(ModelConfig(latent_dim=3, hidden_dims=(16,), data_shape=(12,), likelihood="bernoulli", beta=4.0))
    heavy.load_state_dict(base.state_dict())
    torch.manual_seed(1)
    a = base(x)
    torch.manual_seed(1)
    b = heavy(x, kl_scale=0.25)  # beta 4 at a quarter of the warm-up: weight 1
    torch.testing.assert_close(b.loss, (a.terms["recon"] + a.terms["kl"]).mean())
    torch.testing.assert_close(a.elbo, b.elbo)  # the ELBO is always at weight 1
    torch.manual_seed(1)
    full = heavy(x)
    torch.testing.assert_close(full.loss, (a.terms["recon"] + 4.0 * a.terms["kl"]).mean())
    # at beta 4 and full weight too, the ELBO is recon + KL at weight 1 (not the weighted loss's terms)
    torch.testing.assert_close(full.elbo, -(a.terms["recon"] + a.terms["kl"]))


def test_conv_decoder_restores_odd_sizes():
    for size in (8, 28, 32, 33):
        model = make("vae", (1, size, size), network="conv")
        assert model.decode(torch.zeros(2, 3)).mean.shape == (2, 1, size, size)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_the_activation_setting_is_every_hidden_non_linearity_of_every_body(activation):
    """Each family's bodies (MLP and conv; the vqvae's code grids; the hvae's top layer) use model.activation after
    every hidden layer, and no other non-linearity module."""
    for family, shape, network in [("vae", (12,), "mlp"), ("vae", (1, 16, 16), "conv"), ("hvae", (12,), "mlp"),
                                   ("vqvae", (12,), "mlp"), ("vqvae", (1, 16, 16), "conv")]:
        model = build_model(ModelConfig(family=family, latent_dim=3, hidden_dims=(16, 8), conv_channels=(4, 8),
                                        data_shape=shape, network=network, likelihood="bernoulli",
                                        activation=activation))
        kinds = {type(m) for m in model.modules() if type(m) in ACTIVATIONS.values()}
        assert kinds == {ACTIVATIONS[activation]}, (family, network, kinds)
        hidden = sum(isinstance(m, ACTIVATIONS[activation]) for m in model.modules())
        linear = sum(isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)) for m in model.modules())
        assert hidden >= 4 and hidden < linear  # one after each hidden layer, none after an output layer


def test_the_activation_round_trips_and_checkpoints_without_it_load_as_relu(tmp_path):
    from vaekit.cli import main

    out = tmp_path / "elu"
    assert main(["train", "--data", "digits", "--activation", "elu", "--epochs", "1", "--network", "mlp",
                 "--latent-dim", "4", "--no-progress", "--out", str(out)]) == 0
    model = vaekit.load(out)
    assert model.config.activation == "elu" and any(isinstance(m, nn.ELU) for m in model.modules())
    x = load_dataset(DataConfig(name="digits")).x_test[:8]
    again = build_model(model.config)
    again.load_state_dict(model.state_dict())
    torch.testing.assert_close(again.encode(x).mean, model.encode(x).mean)
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["activation"] == "elu"
    del config["model"]["activation"]  # a run saved before the setting existed: its bodies had ReLUs
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    old = build_model(load_config(tmp_path / "old").model)
    assert old.config.activation == "relu" and not any(isinstance(m, nn.ELU) for m in old.modules())
    old.load_state_dict(model.state_dict())  # the activations hold no weights: the same tensors fit
    assert not torch.allclose(old.encode(x).mean, model.encode(x).mean)
    assert main(["train", "--data", "digits", "--set", "model.activation=swish", "--out", str(tmp_path / "bad")]) == 2


def test_log_importance_weights_with_one_sample_average_to_the_elbo():
    torch.manual_seed(0)
    model = make("vae", (12,))
    x = torch.bernoulli(torch.rand(6, 12))
    torch.manual_seed(3)
    log_w = model.log_importance_weights(x, k=20000)  # (K, B)
    assert log_w.shape == (20000, 6)
    torch.manual_seed(3)
    with torch.no_grad():
        elbo = torch.stack([model(x).elbo for _ in range(2000)]).mean(0)
    torch.testing.assert_close(log_w.mean(0), elbo, rtol=0.02, atol=0.1)


def test_training_lowers_the_loss_and_beats_the_mean_image(digits_config):
    cfg = digits_config
    result = vaekit.train(RunConfig(data=cfg.data, model=cfg.model, train=TrainConfig(epochs=30, batch_size=32, progress=False)))
    losses = [h.train_loss for h in result.history]
    assert losses[-1] < 0.8 * losses[0]
    data = load_dataset(cfg.data)
    x = data.x_test
    recon_error = ((result.model.reconstruct(x) - x) ** 2).sum((1, 2, 3)).mean()
    mean_image_error = ((data.x_train.mean(0, keepdim=True) - x) ** 2).sum((1, 2, 3)).mean()
    assert recon_error < 0.6 * mean_image_error


def test_labels_given_to_a_model_not_conditioned_on_them_are_refused_from_python(small_run):
    """Digits have labels, and small_run trained on them unconditioned (its steps and evaluation leave the labels
    out); a caller's labels would be dropped without a word, where the CLI and the explorer refuse them."""
    model = vaekit.load(small_run)
    x = load_dataset(model.run_config.data).x_test[:4]
    says = "labels were given, but this model is not conditioned on labels: leave them out"
    for call in (lambda: model.sample(4, y=3), lambda: model.encode(x, torch.full((4,), 3)),
                 lambda: model.reconstruct(x, torch.full((4,), 3)),
                 lambda: vaekit.latent.interpolate(model, x[0], x[1], steps=3, label=5)):
        with pytest.raises(vaekit.VaekitError, match=says):
            call()
    assert model.sample(4).shape[0] == 4 and model.encode(x).mean.shape == (4, 2)


def test_a_conditioned_models_labels_are_class_indices_or_refused():
    """A fraction, a bool, text or a table of labels was cast to some class in silence (2.7 to 2, -0.5 to 0, True to
    1; one item given two labels kept the first); in-memory data with fractional labels merged classes."""
    model = make("vae", (1, 8, 8))
    model = build_model(replace(model.config, condition="label", num_labels=10))
    generator = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    three = model.sample(2, y=3, generator=generator())
    for same in (3, 3.0, torch.tensor(3), torch.tensor([3.0]), [3, 3]):
        assert torch.equal(model.sample(2, y=same, generator=generator()), three)
    for bad, says in ((2.7, "fractions such as 2.7"), (-0.5, "fractions such as -0.5"), (True, "got True"),
                      ("3", "got '3'"), ([[1], [2]], r"shape \(2, 1\)"), (torch.tensor([True, False]), "torch.bool"),
                      (float("nan"), "fractions such as nan"), (float("inf"), "fractions such as inf"),
                      (-1, r"0..9, got values in \[-1, -1\]")):
        with pytest.raises(vaekit.VaekitError, match=says):
            model.sample(2, y=bad)
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(vaekit.VaekitError, match="one item takes one label, got 2"):
        vaekit.latent.interpolate(model, x[0], x[1], steps=3, y1=torch.tensor([3, 5]), y2=1)
    with pytest.raises(vaekit.VaekitError, match="labels must be class indices"):
        vaekit.latent.interpolate(model, x[0], x[1], steps=3, y1=["three"], y2=1)
    data = load_dataset(DataConfig(name="digits"))
    halves = vaekit.Dataset("halves", data.x_train, data.x_test, data.y_train.float() - 0.4, data.y_test.float() - 0.4)
    with pytest.raises(vaekit.VaekitError, match="needs class indices 0..N-1, but halves's labels are fractions"):
        resolve_config(RunConfig(model=ModelConfig(condition="label")), halves)
    whole = vaekit.Dataset("whole", data.x_train, data.x_test, data.y_train.float(), data.y_test.float())
    assert resolve_config(RunConfig(model=ModelConfig(condition="label")), whole).model.num_labels == 10


def test_classes_without_training_items_are_named_in_a_warning():
    """Labels {3, 7} are classes 0..7, six of them without an item to train on; a class missing from the training
    split alone too: kept with the model's settings, and said, by name where the classes have names; whether or not
    the number of classes was given; a class held out for validation only counts as a class, untrained."""
    data = load_dataset(DataConfig(name="digits"))
    cfg = RunConfig(model=ModelConfig(condition="label"))

    def said(dataset, cfg=cfg, judged=None):
        model = resolve_config(cfg, dataset, judged).model
        return model.untrained_labels, untrained_warning(model) or ""

    assert said(data) == ((), "")
    keep = (data.y_train == 3) | (data.y_train == 7)
    sparse = vaekit.Dataset("sparse", data.x_train[keep], data.x_test, data.y_train[keep], data.y_test)
    unseen, text = said(sparse)
    assert unseen == (0, 1, 2, 4, 5, 6, 8, 9)
    assert text.startswith("classes 0, 1, 2, 4, 5, 6, 8, 9 have no training items (of 10 classes, numbered 0 to the "
                           "largest label)")
    named = vaekit.Dataset("named", data.x_train[keep], data.x_test, data.y_train[keep], data.y_test,
                           label_names=tuple("zero one two three four five six seven eight nine".split()))
    unseen, text = said(named)
    assert text.startswith("classes zero, one, two, four, five, six, eight, nine have no training items (of 10 "
                           "classes)")
    assert "number the classes" not in text  # named classes are not numbered by the user
    one_gone = data.y_train != 4
    most = vaekit.Dataset("most", data.x_train[one_gone], data.x_test, data.y_train[one_gone], data.y_test)
    unseen, text = said(most)
    assert unseen == (4,) and text.startswith("class 4 has no training items") and "number the classes" in text
    preset = RunConfig(model=ModelConfig(condition="label", num_labels=10))  # (a config built by hand, or a run's)
    assert said(most, preset)[0] == (4,)
    # a class whose items are all in the validation split: one of the classes, and one without training items
    nines, test_nines = data.y_train == 9, data.y_test == 9
    judged = TensorData(data.x_train[nines], data.y_train[nines])
    rest = vaekit.Dataset("rest", data.x_train[~nines], data.x_test[~test_nines], data.y_train[~nines],
                          data.y_test[~test_nines])
    assert said(rest, judged=judged)[0] == (9,)
    assert resolve_config(cfg, rest, judged).model.num_labels == 10
    # names: the labels index them (a label beyond the names is refused here, which a compiled step relies on)
    with pytest.raises(vaekit.VaekitError, match=r"names 2 classes, but its labels are in \[0, 9\]: give labels 0..1"):
        resolve_config(cfg, vaekit.Dataset("two", data.x_train, data.x_test, data.y_train, data.y_test,
                                           label_names=("a", "b")))


def test_a_run_keeps_its_classes_without_training_items_and_says_so_when_they_are_decoded(tmp_path, caplog):
    """Trained with no 4s, said once as it trains (not again on resume); config.json keeps class 4 as untrained, and
    `sample --label 4`, `sample` (a column per class), the commands that encode items of class 4 with their own label
    and the explorer's picker say so; class 3 says nothing."""
    from vaekit.cli import main
    from vaekit.serve.explorer import Explorer

    data = load_dataset(DataConfig(name="digits"))
    gone = data.y_train != 4
    data = vaekit.Dataset("no-fours", data.x_train[gone], data.x_test, data.y_train[gone], data.y_test)
    cfg = RunConfig(model=ModelConfig(latent_dim=2, hidden_dims=(16,), condition="label"),
                    train=TrainConfig(epochs=1, progress=False))
    caplog.set_level("WARNING")
    vaekit.train(cfg, out=tmp_path / "run", dataset=data)
    assert caplog.text.count("class 4 has no training items") == 1
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["untrained_labels"] == [4]
    caplog.clear()
    vaekit.resume(tmp_path / "run", epochs=2, dataset=data)
    assert "no training items" not in caplog.text
    assert vaekit.load(tmp_path / "run").config.untrained_labels == (4,)
    said = "class 4 had no training items in this run: what the model makes of its label is untrained"
    run, out = str(tmp_path / "run"), str(tmp_path / "s.png")
    digits = load_dataset(DataConfig(name="digits"))
    four, three = (int(torch.nonzero(digits.y_test == k)[0]) for k in (4, 3))
    for args, says in ((["sample", run, "--label", "4"], f"{said}; choose a class it trained on"),
                       (["sample", run], f"{said}\n"),  # a column per class, 4's among them
                       (["sample", run, "--label", "3"], None),
                       (["interpolate", run, "--data", "digits", "--from", str(four), "--to", str(three)],
                        f"{said}\n"),  # the first item's own label
                       (["interpolate", run, "--data", "digits", "--from", str(three), "--to", str(three)], None),
                       (["reconstruct", run, "--data", "digits", "--n", "40"], f"{said}\n"),
                       (["evaluate", run, "--data", "digits", "--iw-samples", "2", "--out", str(tmp_path / "e.json")],
                        f"{said}\n"),
                       (["traverse", run, "--data", "digits", "--item", str(four)], f"{said}\n"),
                       (["traverse", run, "--data", "digits", "--item", str(three)], None),
                       (["neighbours", run, "--data", "digits", "--item", str(three), "--k", "3"], f"{said}\n"),
                       (["latent-map", run, "--data", "digits"], f"{said}\n"),
                       (["interpolate", run, "--data", "digits", "--from", str(four), "--to", str(four), "--label", "4"],
                        f"{said}; choose a class it trained on")):
        caplog.clear()
        assert main([*args, "--out", out] if "--out" not in args else args) == 0
        assert (says in caplog.text + "\n") if says else "no training items" not in caplog.text, args
        assert caplog.text.count("no training items") <= 1  # each class said once by a command
    explorer = Explorer(vaekit.load(tmp_path / "run"), data, run=str(tmp_path / "run"))
    assert explorer.info()["untrained_labels"] == ["4"]
    explorer.close()


def test_likelihood_auto_follows_the_data_range():
    data = load_dataset(DataConfig(name="digits"))
    assert resolve_config(RunConfig(), data).model.likelihood == "bernoulli"
    shifted = vaekit.Dataset("z", data.x_train * 2 - 1, data.x_test * 2 - 1)
    assert resolve_config(RunConfig(), shifted).model.likelihood == "gaussian"


def test_bernoulli_on_out_of_range_data_is_a_clear_error():
    data = load_dataset(DataConfig(name="digits"))
    shifted = vaekit.Dataset("z", data.x_train * 2 - 1, data.x_test * 2 - 1)
    cfg = RunConfig(model=ModelConfig(likelihood="bernoulli"), train=TrainConfig(epochs=1, progress=False))
    with pytest.raises(vaekit.VaekitError, match="likelihood gaussian"):
        vaekit.train(cfg, dataset=shifted)


# ---- IWAE: the bound and its training ------------------------------------------------------------------------

def iwae(k: int, source: vaekit.Model | None = None) -> vaekit.Model:
    model = build_model(ModelConfig(family="iwae", latent_dim=3, hidden_dims=(16,), data_shape=(12,),
                                    likelihood="bernoulli", options={"iwae": {"k": k}}))
    if source is not None:
        model.load_state_dict(source.state_dict())
    return model


def test_iwae_with_one_sample_is_the_elbo_estimator():
    torch.manual_seed(0)
    vae = make("vae", (12,))
    one = iwae(1, vae)
    x = torch.bernoulli(torch.rand(6, 12))
    qz = vae.encode(x)
    noise = torch.randn(1, 6, 3)
    z = rsample_with(qz, noise)[0]
    by_hand = vae.decode(z).log_prob(x) + vae.prior().log_prob(z) - qz.log_prob(z)  # log p(x, z) - log q(z|x)
    torch.testing.assert_close(one.log_importance_weights(x, 1, noise=noise)[0], by_hand)
    # IWAE's training bound at K = 1 is that same estimator; averaged over draws it is the VAE's ELBO.
    with torch.no_grad():
        torch.manual_seed(5)
        bounds = torch.stack([-one(x).terms["bound"] for _ in range(4000)])
        torch.manual_seed(5)
        elbo = vae(x).elbo  # the closed-form KL: no Monte Carlo error in the KL part
        recon_draws = torch.stack([-vae(x).terms["recon"] for _ in range(4000)]).mean(0)
    stderr = bounds.std(0) / math.sqrt(len(bounds))
    expected = recon_draws - vae(x).terms["kl"].detach()
    assert ((bounds.mean(0) - expected).abs() < 4 * stderr + 0.02).all()
    assert elbo.shape == (6,)


def test_the_k_sample_bound_is_above_the_elbo_and_tightens_with_k():
    torch.manual_seed(0)
    data = load_dataset(DataConfig(name="digits"))
    cfg = RunConfig(data=DataConfig(name="digits"), model=ModelConfig(latent_dim=8, network="mlp", hidden_dims=(64,)),
                    train=TrainConfig(epochs=5, batch_size=64, progress=False))
    trained = vaekit.train(cfg, dataset=data).model
    x = data.x_test[:200]
    bound = {}
    for k in (1, 5, 50):
        model = build_model(replace(trained.config, family="iwae", options={"iwae": {"k": k}})).eval()
        model.load_state_dict(trained.state_dict())
        with torch.no_grad():
            bound[k] = torch.stack([-model(x).terms["bound"].double() for _ in range(20)]).mean(0)  # (200,) per item
    # Per item, averaged over draws: never below the ELBO (K = 1), tighter as K grows. Paired over the items,
    # each difference is judged against its own standard error.
    for low, high in ((1, 5), (5, 50)):
        gain = bound[high] - bound[low]
        assert float(gain.mean()) > 3 * float(gain.std() / math.sqrt(len(gain))), (low, high, float(gain.mean()))


def test_iwae_trains_through_the_cli_flag_and_reports_its_terms(tmp_path):
    from vaekit.cli import main

    out = tmp_path / "iwae"
    assert main(["train", "--data", "digits", "--model", "iwae", "--iwae-k", "3", "--epochs", "1", "--network", "mlp",
                 "--latent-dim", "4", "--no-progress", "--out", str(out)]) == 0
    loaded = vaekit.load(out)
    assert loaded.family == "iwae" and loaded.settings.k == 3
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert {"train_bound", "train_recon", "train_kl", "val_bound", "val_elbo"} <= set(row)
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["iwae"] == {"k": 3, "gradient": "standard"}
    assert main(["train", "--data", "digits", "--model", "iwae", "--set", "model.iwae.k=0", "--out",
                 str(tmp_path / "bad")]) == 2


# ---- label conditioning, judged by an independent classifier ---------------------------------------------------

def test_label_conditioned_mnist_samples_are_the_requested_digit():
    """The shipped `conditional` recipe on MNIST as it comes, and a classifier trained here on the pixels (an MLP,
    independent of the VAE): prior samples drawn for label k are read as k, 100 per digit."""
    from vaekit.cli.common import recipe_config
    from vaekit.report.classifier import train_feature_classifier

    data = load_dataset(DataConfig(name="mnist-10k"))
    cfg = recipe_config("conditional")
    cfg = replace(cfg, data=DataConfig(name="mnist-10k"), train=replace(cfg.train, progress=False))
    model = vaekit.train(cfg, dataset=data).model
    assert model.num_labels == 10
    pixels = vaekit.Dataset("pixels", data.x_train.flatten(1), data.x_test.flatten(1), data.y_train, data.y_test)
    classifier = train_feature_classifier(pixels, steps=1500, seed=1)
    assert classifier.test_accuracy > 0.9  # the judge itself is reliable
    labels = torch.arange(1000) % 10
    samples = model.sample(1000, labels, torch.Generator().manual_seed(0))
    with torch.no_grad():
        predicted = classifier(samples.flatten(1)).argmax(1)
    assert float((predicted == labels).float().mean()) >= 0.9


def test_the_default_conv_network_trains_end_to_end(tmp_path):
    """Default settings on image data pick the conv network; it trains (as the MLP test above: 30 epochs of
    batch 32 on digits), and beats the mean image."""
    from vaekit.cli import main

    out = tmp_path / "conv"
    assert main(["train", "--data", "digits", "--epochs", "30", "--batch-size", "32", "--no-progress",
                 "--out", str(out)]) == 0
    model = vaekit.load(out)
    assert resolve_network(model.config) == "conv"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["val_loss"] < 0.9 * rows[0]["val_loss"]
    data = load_dataset(DataConfig(name="digits"))
    x = data.x_test
    recon_error = ((model.reconstruct(x) - x) ** 2).sum((1, 2, 3)).mean()
    mean_image_error = ((data.x_train.mean(0, keepdim=True) - x) ** 2).sum((1, 2, 3)).mean()
    assert recon_error < 0.6 * mean_image_error


def test_warm_up_and_beta_weight_the_iwae_bound_through_the_same_mechanism():
    torch.manual_seed(0)
    model = iwae(4)
    x = torch.bernoulli(torch.rand(5, 12))
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(2)
        log_px, log_ratio = model.importance_terms(x, 4)
        for scale in (0.0, 0.5, 1.0):
            torch.manual_seed(2)
            out = model(x, kl_scale=scale)
            expected = -(torch.logsumexp(log_px - scale * log_ratio, 0) - math.log(4)).mean()
            torch.testing.assert_close(out.loss, expected)
            torch.testing.assert_close(out.elbo, (log_px - log_ratio).mean(0))  # the ELBO stays at weight 1


def test_free_bits_leave_a_kl_above_its_floor_as_it_is_with_its_gradient():
    """max(floor, batch mean): above the floor (1 nat x 2 dimensions) the KL itself and its gradient, below it the
    floor and none."""
    model = build_model(ModelConfig(latent_dim=2, hidden_dims=(8,), data_shape=(4,), likelihood="bernoulli",
                                    free_bits=1.0)).train()
    for value, expected, gradient in ((3.5, 3.5, 3.5), (1.5, 2.0, 0.0)):
        weight = torch.ones((), requires_grad=True)
        total = model.regularizer_mean({"kl": weight * torch.full((4,), value)})
        total.backward()
        assert float(total) == expected and float(weight.grad) == gradient


def test_free_bits_floor_the_kl_in_training_only_and_families_without_a_kl_refuse_them():
    from vaekit.config import RunConfig, override
    from vaekit.data import load_dataset
    from vaekit.runs import resolve_config

    cfg = override(RunConfig(), ["data.name=digits", "model.latent_dim=4", "model.free_bits=2"])
    dataset = load_dataset(cfg.data)
    model = build_model(resolve_config(cfg, dataset).model)
    x = dataset.x_train[:64]
    model.train()
    torch.manual_seed(0)
    out = model(x)
    kl = float(out.terms["kl"].detach().mean())
    assert kl < 8  # an untrained model's KL is under the floor of 2 nats x 4 dimensions
    torch.testing.assert_close(out.loss, out.terms["recon"].mean() + 8.0)
    # under the floor the KL sends no gradient: the loss's gradient is the reconstruction's alone
    params = list(model.parameters())
    floored = torch.autograd.grad(out.loss, params, retain_graph=True, allow_unused=True)
    recon = torch.autograd.grad(out.terms["recon"].mean(), params, allow_unused=True)
    assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(floored, recon))
    model.eval()
    with torch.no_grad():
        torch.manual_seed(0)
        plain = model(x)
    torch.testing.assert_close(plain.loss, (-plain.elbo).mean())
    for family in ("iwae", "tcvae"):
        bad = override(cfg, [f"model.family={family}"])
        with pytest.raises(vaekit.VaekitError, match="no KL term for free bits"):
            build_model(resolve_config(bad, dataset).model)


def test_every_vaekit_module_imports_first():
    """Each module imported first (a fresh vaekit, as `from vaekit.vamp import VampPrior` in a new interpreter):
    vamp's import of models, which imports hvae, which imported names from the half-made vamp, failed."""
    import pkgutil
    import subprocess
    import sys

    import vaekit as package

    names = sorted(f"vaekit.{m.name}" for m in pkgutil.iter_modules(package.__path__) if m.name != "__main__")
    script = ("import importlib, sys\n"
              f"for name in {names!r}:\n"
              "    for loaded in [m for m in sys.modules if m == 'vaekit' or m.startswith('vaekit.')]:\n"
              "        del sys.modules[loaded]\n"
              "    importlib.import_module(name)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "vaekit.vamp" in names and "vaekit.hvae" in names
