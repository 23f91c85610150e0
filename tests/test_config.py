"""One declaration per setting: YAML, --set, CLI flags, validation and --help all come from the config's
declarations, including the settings a family or likelihood declares for itself."""
import dataclasses
import json

import pytest

import vaekit
from vaekit import checkpoint, config
from vaekit.cli import build_parser, main
from vaekit.cli.common import config_from_args
from vaekit.config import COMPONENT_SETTINGS, SECTIONS, RunConfig


def parse(*argv: str) -> RunConfig:
    return config_from_args(build_parser().parse_args(["train", *argv]))


def test_every_setting_is_declared_with_help_and_reaches_the_cli():
    flags = {f.dest: f for f in config.config_flags()}
    for section, kind in SECTIONS.items():
        for f in dataclasses.fields(kind):
            if f.metadata.get("cli", True):
                assert f.metadata["help"], f"{section}.{f.name} has no help"
                assert f"cfg__{section}__{f.name}" in flags, f"{section}.{f.name} has no flag"
    for name, kind in COMPONENT_SETTINGS.items():
        for f in dataclasses.fields(kind):
            if f.metadata.get("cli", True):
                assert f"cfg__model__{name}__{f.name}" in flags and f.metadata["help"]
            else:  # filled by vaekit from the data (a table's columns): no flag
                assert f"cfg__model__{name}__{f.name}" not in flags
    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for flag in ("--iwae-k", "--gaussian-std", "--discretized-logistic-bits", "--condition", "--kl-warmup-epochs"):
        assert flag in help_text


def test_each_flag_states_one_default_and_run_commands_the_runs_own():
    """A help text saying its default in words is not followed by a second one (--threads said "one per core" and
    "none"); on a command over a trained run, the data flags default to the run's settings, not a new run's."""
    commands = build_parser()._subparsers._group_actions[0].choices
    for name in ("train", "encode", "reconstruct", "evaluate"):
        for action in commands[name]._actions:
            assert (action.help or "").count("(default:") <= 1, (name, action.option_strings, action.help)
    train = {a.dest: a.help for a in commands["train"]._actions}
    assert train["cfg__data__name"].endswith("(default: mnist-10k)")
    assert train["cfg__train__threads"] == \
        "CPU threads for torch, numpy, SciPy and scikit-learn (default: one per core)"
    for name in ("encode", "reconstruct", "evaluate", "explore", "traverse"):
        helps = {a.dest: a.help for a in commands[name]._actions if a.dest.startswith("cfg__data__")}
        assert helps and all("(default: the run's own" in text for text in helps.values()), (name, helps)
        assert "for another file, none in place of the run's drop" in helps["cfg__data__impute"]


def test_flags_yaml_and_set_reach_the_same_fields(tmp_path):
    by_flag = parse("--model", "iwae", "--iwae-k", "7", "--likelihood", "gaussian", "--gaussian-std", "0.2",
                    "--lr", "3e-4", "--hidden-dims", "64,32", "--no-progress")
    by_set = parse("--set", "model.family=iwae", "--set", "model.iwae.k=7", "--set", "model.likelihood=gaussian",
                   "--set", "model.gaussian.std=0.2", "--set", "train.lr=3e-4", "--set", "model.hidden_dims=64,32",
                   "--set", "train.progress=false")
    path = tmp_path / "run.yaml"
    path.write_text("model: {family: iwae, iwae: {k: 7}, likelihood: gaussian, gaussian: {std: 0.2}, "
                    "hidden_dims: [64, 32]}\ntrain: {lr: 3.0e-4, progress: false}\n")
    by_yaml = parse("--config", str(path))
    assert by_flag == by_set == by_yaml
    assert by_flag.model.settings("iwae").k == 7 and by_flag.model.settings("gaussian").std == 0.2
    # a family chosen one way admits its settings given the other way, over a recipe of another family; --set wins
    mixed = parse("--recipe", "fast", "--set", "model.family=tcvae", "--tcvae-gamma", "0.5", "--lr", "2e-3",
                  "--set", "train.lr=5e-4")
    assert (mixed.model.family, mixed.model.settings("tcvae").gamma, mixed.train.lr) == ("tcvae", 0.5, 5e-4)
    flipped = parse("--recipe", "shapes", "--model", "iwae", "--set", "model.iwae.k=3")
    assert (flipped.model.family, flipped.model.settings("iwae").k) == ("iwae", 3)
    # the recipe's settings for its own family are left out when another family is chosen over it
    for argv in (("--model", "vae"), ("--set", "model.family=vae")):
        other = parse("--recipe", "hvae", *argv)
        assert other.model.family == "vae" and "hvae" not in other.model.options and other.train.lr == 2e-3
    assert "hvae" not in config.override(parse("--recipe", "hvae"), ["model.family=iwae"]).model.options
    other_file = tmp_path / "vae.yaml"
    other_file.write_text("model: {family: vae}\n")
    layered = parse("--recipe", "hvae", "--config", str(other_file))
    assert layered.model.family == "vae" and "hvae" not in layered.model.options


@pytest.mark.parametrize("argv,message", [
    (["--iwae-k", "0", "--model", "iwae"], "model.iwae.k=0: must be between 1 and 1000"),
    (["--set", "model.iwae.k=2"], "model.iwae sets iwae's settings, but the model uses family vae"),
    (["--set", "model.iwea.k=2"], "did you mean iwae"),
    (["--set", "model.iwae.kk=2", "--model", "iwae"], "unknown config key model.iwae.kk"),
    (["--set", "train.grad_clip=-1"], "train.grad_clip=-1.0: must be > 0"),
    (["--set", "train.weight_decay=nan"], "train.weight_decay=nan: must be >= 0"),
    (["--set", "train.seed=18446744073709551616"], "train.seed"),
    (["--set", "model.latent_dim=2.5"], "model.latent_dim: cannot read 2.5 as a whole number"),
    (["--hidden-dims", "512x256"],
     "model.hidden_dims: cannot read '512x256' as whole numbers separated by commas, e.g. 512,256"),
    (["--conv-channels", ""], "model.conv_channels=(): must be"),
    (["--likelihood", "poisson"], "invalid choice"),
    (["--iwae-k", "3"], "model.iwae sets iwae's settings, but the model uses family vae"),  # likelihood auto
    (["--gaussian-std", "0.1"], "model.gaussian sets gaussian's settings, but the model uses family vae and likelihood "
                                "bernoulli: drop them, or choose the gaussian likelihood (--likelihood gaussian)"),
    (["--recipe", "hvae", "--model", "vae", "--hvae-k", "3"], "model.hvae sets hvae's settings, but the model uses"),
    (["--set", "train.lr=["], "cannot read '[' as a value"),
    (["--set", "edits.method=nearest"], "edits.method='nearest' is not one of mean-diff, linear, local"),
    (["--set", "edit.method=local"], "did you mean edits"),
    (["--model", "tcvae", "--set", "model.tcvae.dataset_size=5"],
     "--set model.tcvae.dataset_size: vaekit fills this in from the training data"),
    (["--set", "model.data_shape=[1,8,8]"], "drop --set model.data_shape"),
    (["--model", "tcvae", "--set", "model.tcvae={dataset_size: 5}"], "--set model.tcvae.dataset_size: vaekit fills "
     "this in from the training data, and a value given for it would not be used: drop it from --set model.tcvae"),
    (["--model", "hvae", "--hvae-top-components", "500"], "--hvae-top-components applies only where "
     "model.hvae.top_prior is vamp, and it is normal: add --hvae-top-prior vamp, or drop --hvae-top-components"),
    # (the default value, given where it does nothing)
    (["--model", "hvae", "--set", "model.hvae.top_components=9"], "applies only where model.hvae.top_prior is vamp"),
])
def test_bad_settings_are_refused_with_the_declared_requirement(argv, message, capsys, tmp_path):
    try:
        code = main(["train", "--data", "digits", *argv, "--out", str(tmp_path / "run")])
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_set_refuses_every_setting_filled_in_from_the_data_and_takes_every_other():
    """A value --set gives a setting vaekit fills in from the training data would be overwritten in silence."""
    filled, taken = [], []
    owners = [(name, section) for name, section in SECTIONS.items()]
    owners += [(f"model.{name}", settings) for name, settings in COMPONENT_SETTINGS.items()]
    for prefix, owner in owners:
        for f in dataclasses.fields(owner):
            (filled if f.metadata.get("from_data") else taken).append(f"{prefix}.{f.name}=1")
    assert {"model.data_shape=1", "model.num_labels=1", "model.label_names=1", "model.tcvae.dataset_size=1",
            "model.table.columns=1"} <= set(filled)
    assert all(config.filled_from_data(item) for item in filled)
    assert not any(config.filled_from_data(item) for item in taken), [i for i in taken if config.filled_from_data(i)]
    assert not config.filled_from_data("model.nothing.dataset_size=1") and not config.filled_from_data("x=1")
    assert config.filled_from_data("model.tcvae={alpha: 2, dataset_size: 5}") == "model.tcvae.dataset_size"
    assert parse("--set", "edits.method=local").edits.method == "local"  # no flag, and not from the data


def test_a_family_registered_outside_the_package_gets_its_settings_everywhere():
    from dataclasses import dataclass

    @vaekit.register_family("test-settings-family")
    class Tempered(vaekit.VAE):
        @dataclass(frozen=True)
        class Settings:
            temperature: float = vaekit.setting(1.0, "a test family's setting", check=(lambda v: v > 0, "> 0"))

    cfg = config.override(RunConfig(), ["model.family=test-settings-family", "model.test-settings-family.temperature=2"])
    assert cfg.model.settings("test-settings-family").temperature == 2.0
    with pytest.raises(vaekit.VaekitError, match="must be > 0"):
        config.override(cfg, ["model.test-settings-family.temperature=-1"])
    flags = [f.flag for f in config.config_flags()]
    assert "--test-settings-family-temperature" in flags


def test_a_family_or_likelihood_cannot_take_a_name_whose_settings_it_would_share():
    from vaekit.distributions import LIKELIHOODS, register_likelihood
    from vaekit.models import MODEL_FAMILIES

    families, likelihoods = dict(MODEL_FAMILIES), dict(LIKELIHOODS)
    with pytest.raises(ValueError, match="'gaussian' already names a likelihood, and a family of the same name would "
                                         r"share its settings \(model.gaussian\): register the family under another"):
        vaekit.register_family("gaussian")(type("Clash", (vaekit.VAE,), {}))
    with pytest.raises(ValueError, match="'vamp' already names a family, and a likelihood"):
        register_likelihood("vamp")(type("Clash", (LIKELIHOODS["gaussian"],), {}))
    with pytest.raises(ValueError, match=r"'beta' is a model setting \(model.beta\)"):
        vaekit.register_family("beta")(type("Clash", (vaekit.VAE,), {}))
    # another class under a name already held (a built-in's, another plugin's) would take over its runs: refused
    with pytest.raises(ValueError, match=r"'vae' already names the family vaekit.models.VAE, so .*Clash would "
                                         r"replace it for every run of that name: register it under another name"):
        vaekit.register_family("vae")(type("Clash", (vaekit.VAE,), {}))
    with pytest.raises(ValueError, match="'gaussian' already names the likelihood"):
        register_likelihood("gaussian")(type("Clash", (LIKELIHOODS["gaussian"],), {}))
    assert MODEL_FAMILIES == families and LIKELIHOODS == likelihoods  # nothing was registered
    assert vaekit.register_family("vae")(vaekit.VAE) is vaekit.VAE  # the same class again (a module re-imported)
    assert LIKELIHOODS["gaussian"].name == "gaussian"


def test_an_empty_width_list_is_a_linear_mlp():
    assert parse("--hidden-dims", "none").model.hidden_dims == () == parse("--hidden-dims", "").model.hidden_dims


@pytest.mark.parametrize("label", ["--3", "\u00b2", "10", "x", "-1"])
def test_bad_labels_are_one_line_errors(label, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--condition", "label", "--network", "mlp", "--latent-dim", "2",
                 "--epochs", "1", "--no-progress", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["sample", str(run), f"--label={label}", "--out", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--label must be a class index 0..9" in err


def test_a_run_keeps_its_recipes_edit_method_and_the_commands_follow_it(tmp_path, capsys):
    """config edits.method: the shapes recipe's choice (local), kept in config.json and used by vaekit attribute
    unless --method is given; the default elsewhere, and in run folders from before the section, is mean-diff; it
    is not part of a run's identity, so changing it never stops a resume."""
    assert parse().edits.method == "mean-diff" and parse("--recipe", "shapes").edits.method == "local"
    assert parse("--recipe", "shapes", "--set", "edits.method=linear").edits.method == "linear"
    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--network", "mlp", "--latent-dim", "2", "--epochs", "1",
                 "--no-progress", "--set", "edits.method=local", "--out", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["edits"] == {"method": "local"}
    capsys.readouterr()
    assert main(["attribute", str(run), "--attr", "3", "--score", "--items", "40", "--strengths=-1,0,1"]) == 0
    assert capsys.readouterr().out.startswith("3 (local) on 40 held-out items")
    assert main(["attribute", str(run), "--attr", "3", "--score", "--items", "40", "--strengths=-1,0,1",
                 "--method", "linear"]) == 0
    assert capsys.readouterr().out.startswith("3 (linear) on 40 held-out items")
    identity = checkpoint.identity_sha256(run)
    raw = json.loads((run / "config.json").read_text())
    del raw["edits"]  # as written before the section existed
    (run / "config.json").write_text(json.dumps(raw))
    assert checkpoint.load_config(run).edits.method == "mean-diff"
    assert checkpoint.identity_sha256(run) == identity


def test_format_1_run_folders_still_load(tmp_path):
    raw = {"format": 1, "data": {"name": "digits"},
           "model": {"family": "vae", "latent_dim": 3, "network": "mlp", "hidden_dims": [8], "conv_channels": [4],
                     "likelihood": "gaussian", "gaussian_std": 0.3, "beta": 1.0, "data_shape": [1, 8, 8]},
           "train": {"epochs": 1}}
    (tmp_path / "config.json").write_text(json.dumps(raw))
    cfg = checkpoint.load_config(tmp_path)
    assert cfg.model.settings("gaussian").std == 0.3 and cfg.model.condition == "none"
    raw["model"]["likelihood"] = "bernoulli"  # format 1 kept a std that had no effect beside another likelihood
    (tmp_path / "config.json").write_text(json.dumps(raw))
    assert checkpoint.load_config(tmp_path).model.options == {}


@pytest.fixture(scope="module")
def conditioned_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("conditioned") / "run"
    assert main(["train", "--data", "digits", "--condition", "label", "--model", "iwae", "--iwae-k", "2",
                 "--network", "mlp", "--latent-dim", "2", "--epochs", "1", "--no-progress", "--out", str(run)]) == 0
    return run


def test_a_class_attribute_on_a_class_conditioned_model_is_warned_about(conditioned_run, tmp_path, caplog):
    with caplog.at_level("WARNING"):
        assert main(["attribute", str(conditioned_run), "--attr", "3", "--apply-to", "0", "--out",
                     str(tmp_path / "a.png")]) == 0
    assert "this model is conditioned on the classes: its decoder takes the class from the label" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):  # and when the edit is scored
        assert main(["attribute", str(conditioned_run), "--attr", "3", "--score", "--items", "20"]) == 0
    assert "this model is conditioned on the classes" in caplog.text


def test_impossible_sizes_are_refused_before_any_work(conditioned_run, tmp_path, capsys):
    cases = [
        (["sample", str(conditioned_run), "--n", "1000000000", "--out", str(tmp_path / "s.npy")], "at most 4,194,304"),
        (["evaluate", str(conditioned_run), "--n", "5", "--iw-samples", "100000000", "--no-progress"],
         "between 0 (no NLL) and 1,000,000"),
        (["train", "--data", "digits", "--model", "iwae", "--iwae-k", "100000000", "--out", str(tmp_path / "r")],
         "between 1 and 1000"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


def test_unreadable_configs_and_single_class_labels(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"\xff\xfe garbage")
    one_class = tmp_path / "one.npz"
    import numpy as np

    np.savez(one_class, x=np.random.default_rng(0).random((40, 6)), y=np.zeros(40, dtype=int))
    cases = [(["train", "--config", str(bad), "--out", str(tmp_path / "a")], "give a UTF-8 YAML file"),
             (["train", "--config", str(tmp_path), "--out", str(tmp_path / "a")], "is a folder, not a config file"),
             (["train", "--data", str(one_class), "--condition", "label", "--out", str(tmp_path / "b")],
              "needs at least 2 classes")]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


@pytest.mark.parametrize("tamper", ["row missing a key", "epoch ahead of history", "epoch as text"])
def test_a_resume_state_whose_parts_disagree_is_refused(tamper, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--network", "mlp", "--latent-dim", "2", "--epochs", "1",
                 "--no-progress", "--out", str(run)]) == 0
    state = json.loads((run / "resume.json").read_text())
    if tamper == "row missing a key":
        del state["history"][0]["val_loss"]
    elif tamper == "epoch ahead of history":
        state["epoch"] = 5
    else:
        state["epoch"] = "1"
    (run / "resume.json").write_text(json.dumps(state))
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err  # the checksum of its entries, written with its tensors, tells first
    assert err.count("\n") == 1 and "resume.json is damaged (its entries do not match the checksum" in err, err
    from safetensors.torch import save_file

    from vaekit import checkpoint

    tensors, metadata = checkpoint.read_checked(run / state["tensors"])  # a state from before that checksum
    del metadata[checkpoint.STATE_KEY]
    save_file(tensors, str(run / state["tensors"]), metadata=metadata)
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err  # its entries' own checks
    assert err.count("\n") == 1 and "corrupt" in err, err


def test_every_shipped_recipe_loads_and_each_of_its_settings_takes_effect():
    """A recipe's YAML is read through the declarations: no key is misspelt, refused or silently dropped."""
    import yaml
    from importlib import resources

    from vaekit.cli.common import recipes
    names = recipes()
    assert {"fast", "vae-wide", "hvae", "iwae", "vamp", "vqvae"} <= set(names)
    for name in names:
        raw = yaml.safe_load(resources.files("vaekit").joinpath(f"recipes/{name}.yaml").read_text())
        cfg = parse("--recipe", name)
        for section, values in raw.items():
            for key, value in values.items():
                if isinstance(value, dict):
                    continue  # a family's own settings (model.hvae: ...): loading validates them by its declarations
                got = getattr(getattr(cfg, section), key)
                want = tuple(value) if isinstance(value, list) else value
                assert got == want, f"recipe {name}: {section}.{key} is {got!r}, the YAML says {value!r}"


def test_a_run_written_with_more_threads_than_now_allowed_still_loads(small_run, tmp_path, caplog):
    import hashlib
    import shutil

    from safetensors.torch import save_file

    from vaekit import checkpoint

    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    config = json.loads((run / "config.json").read_text())
    config["train"]["threads"] = 1500  # accepted before the bound of 1024
    text = json.dumps(config)
    (run / "config.json").write_text(text)
    tensors, metadata = checkpoint.read_checked(run / checkpoint.MODEL_FILE)
    save_file(tensors, str(run / checkpoint.MODEL_FILE),
              metadata={**metadata, checkpoint.CONFIG_KEY: hashlib.sha256(text.encode()).hexdigest()})
    with caplog.at_level("WARNING"):
        assert checkpoint.load_config(run).train.threads is None
        checkpoint.load(run)
    assert "asks for 1500 threads, more than vaekit now allows (1024): loading it with one per core" in caplog.text


def test_a_run_of_a_family_whose_module_is_not_imported_says_to_import_it(small_run, tmp_path):
    from vaekit import checkpoint

    raw = json.loads((small_run / "config.json").read_text())
    raw["model"]["family"] = "test-not-imported"  # as a run of a family registered by the user's own module saves it
    raw["model"]["test-not-imported"] = {"temperature": 2.0}
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(vaekit.VaekitError, match=r"is a run of the family 'test-not-imported', which no loaded module "
                                                 r"registers: from Python, import the module that registers it "
                                                 r"\(vaekit.register_family\) before loading; for the command line, "
                                                 r"install it as a plugin \(entry-point group vaekit.plugins\)$"):
        checkpoint.load_config(tmp_path)
    # (a family another test registered may be near enough to be suggested first: "did you mean ...? use one of")
    with pytest.raises(vaekit.VaekitError, match=r"^unknown model family 'test-not-imported': (did you mean [^?]*\? )?"
                                                 r"use one of ae, .*or import the module that registers it "
                                                 r"\(vaekit.register_family\)"):
        config.from_dict({"model": {"family": "test-not-imported", "test-not-imported": {"temperature": 2.0}}})
    with pytest.raises(vaekit.VaekitError, match="unknown model family 'vea': did you mean vae?"):
        config.from_dict({"model": {"family": "vea"}})


@pytest.mark.parametrize("change, message", [
    ({"latent_dim": 0}, "model.latent_dim=0: must be between 1 and"),
    ({"beta": -1.0}, "model.beta=-1.0: must be >= 0"),
    ({"hidden_dims": (-3,)}, r"model.hidden_dims=\(-3,\): must be widths from 1"),
    ({"options": {"vamp": {}}}, "model.vamp sets vamp's settings, but the model uses family vae"),
])
def test_build_model_checks_a_config_made_in_python_as_train_does(change, message):
    model = dataclasses.replace(vaekit.config.ModelConfig(likelihood="bernoulli", data_shape=(6,)), **change)
    with pytest.raises(vaekit.VaekitError, match=message):
        vaekit.build_model(model)
    with pytest.raises(vaekit.VaekitError, match=message):
        config.validate(RunConfig(model=model))


def test_installed_plugins_are_launchable_and_a_broken_one_is_skipped_with_a_warning(tmp_path, monkeypatch, caplog):
    """Plugins found through a real entry point: one whose family lives in another top-level package than its entry
    module is launched under --nproc (it was refused); one that fails to load (here: it takes the name 'vae') is
    skipped with a one-line warning (it crashed every command, --help included)."""
    from vaekit import models
    from vaekit.config import override
    from vaekit.models import MODEL_FAMILIES, VAE

    site = tmp_path / "site"
    site.mkdir()
    (site / "plugentry_t.py").write_text("import plugcore_t  # noqa: F401\n")
    (site / "plugcore_t.py").write_text("import vaekit\n\n\n@vaekit.register_family('test-plug-core')\n"
                                        "class Core(vaekit.VAE):\n    pass\n")
    (site / "plugbroken_t.py").write_text("import vaekit\n\n\n@vaekit.register_family('test-plug-half')\n"
                                          "class Half(vaekit.VAE):\n    pass\n\n\n"
                                          "@vaekit.register_family('vae')\nclass Taken(vaekit.VAE):\n    pass\n")
    dist = site / "testplug_t-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: testplug_t\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[vaekit.plugins]\ncore = plugentry_t\nbroken = plugbroken_t\n")
    monkeypatch.syspath_prepend(str(site))
    for name, value in (("_PLUGINS_LOADED", False), ("_PLUGIN_PACKAGES", set()), ("_PLUGIN_CLASSES", set())):
        monkeypatch.setattr(models, name, value)
    with caplog.at_level("WARNING", logger="vaekit.models"):
        models.load_plugins()
    assert "the vaekit plugin 'broken' (plugbroken_t) was not loaded: 'vae' already names the family" in caplog.text
    assert MODEL_FAMILIES["vae"] is VAE and MODEL_FAMILIES["test-plug-core"].__module__ == "plugcore_t"
    assert "test-plug-half" not in MODEL_FAMILIES  # what the failed plugin registered before failing went too
    models.check_launchable(override(vaekit.RunConfig(), ["model.family=test-plug-core"]).model, 2)
