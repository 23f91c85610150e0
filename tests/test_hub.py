"""The Hugging Face Hub: save_pretrained, from_pretrained, push_to_hub and vaekit export --hub, against the real
huggingface_hub (its download, cache, upload and `hf` command) talking to a Hub imitation on 127.0.0.1; nothing here
leaves the machine."""
from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
import torch

huggingface_hub = pytest.importorskip("huggingface_hub", reason="the hub extra is not installed: pip install "
                                      "'vaekit[hub]'")
from huggingface_hub import constants as hub_constants  # noqa: E402
from PIL import Image  # noqa: E402

from vaekit import checkpoint, viz  # noqa: E402
from vaekit.extras import install_hint  # noqa: E402
from vaekit.data import tables  # noqa: E402
from vaekit.cli import main  # noqa: E402
from vaekit.config import DataConfig, ModelConfig, RunConfig, with_defaults  # noqa: E402
from vaekit.errors import VaekitError  # noqa: E402
from vaekit.hvae import HVAE  # noqa: E402
from vaekit.integrations import hub  # noqa: E402
from vaekit.models import AE, IWAE, VAE, Model, build_model, register_family  # noqa: E402

WRITE_TOKEN = "hf_write_token"  # the fake Hub's one account: it may create repositories and commit, and read private ones


# ---- a Hub imitation -------------------------------------------------------------------------------------------
class FakeHub:
    """The endpoints huggingface_hub 2.x calls, answered as the Hub answers them: repo info at a revision, the file
    tree, HEAD/GET of /resolve/ (X-Repo-Commit, ETag, Content-Length; X-Error-Code on errors), repo creation,
    preupload, README validation, commits. Repositories live in memory (refs, and commits of {path: bytes}); every
    request is logged. Every file is served as a regular git file: the real Hub takes model.safetensors by LFS or
    Xet, a transfer that is huggingface_hub's business, not vaekit's."""

    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Authorization header)
        self.connections: list[socket.socket] = []
        self.lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Unreachable from now on: no new connections, and the open ones (clients keep them alive) closed."""
        if self.thread.is_alive():
            self.server.shutdown()
            self.server.server_close()
        with self.lock:
            for connection in self.connections:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def commit(self, repo_id: str, files: dict[str, bytes], private: bool = False, tag: str | None = None,
               deleted: tuple[str, ...] = ()) -> str:
        """A new commit on main holding `files` over the previous ones, less `deleted`; returns its sha."""
        with self.lock:
            repo = self.repos.setdefault(repo_id, {"private": private, "refs": {}, "commits": {}})
            parent = repo["refs"].get("main")
            tree = {**{path: content for path, content in (repo["commits"][parent] if parent else {}).items()
                       if path not in deleted}, **files}
            digest = hashlib.sha1(repr((parent, sorted((p, _blob_id(b)) for p, b in tree.items()))).encode())
            sha = digest.hexdigest()
            repo["commits"][sha] = tree
            repo["refs"]["main"] = sha
            if tag:
                repo["refs"][tag] = sha
            return sha

    def upload(self, repo_id: str, folder: Path, **kwargs) -> str:
        return self.commit(repo_id, {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}, **kwargs)

    def paths(self, method: str | None = None) -> list[str]:
        """The paths requested, less huggingface_hub's once-per-process look-up of /api/agent-harnesses."""
        return [path for m, path, _ in self.requests
                if (method is None or m == method) and path != "/api/agent-harnesses"]

    def downloads(self) -> list[str]:
        """The files whose contents were fetched (GET of /resolve/)."""
        return sorted(path.rsplit("/", 1)[-1] for path in self.paths("GET") if "/resolve/" in path)

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return repo["commits"][repo["refs"].get(revision, revision)]


def _blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()  # git's id of a file, the Hub's ETag


def _handler(hub_state: FakeHub):
    repo = r"(?P<repo>[^/]+/[^/]+)"

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            with hub_state.lock:
                hub_state.connections.append(self.connection)

        def log_message(self, *args) -> None:  # quiet
            pass

        def do_HEAD(self) -> None:
            self.route("HEAD")

        def do_GET(self) -> None:
            self.route("GET")

        def do_POST(self) -> None:
            self.route("POST")

        def route(self, method: str) -> None:
            path = urlsplit(self.path).path
            hub_state.requests.append((method, path, self.headers.get("Authorization")))
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if method == "POST" else b""
            routes = [
                ("GET", rf"/api/models/{repo}/revision/(?P<rev>[^/]+)", self.revision_info),
                ("GET", rf"/api/models/{repo}", self.revision_info),  # the default branch's
                ("GET", rf"/api/models/{repo}/tree/(?P<rev>[^/]+)", self.tree),
                ("HEAD", rf"/{repo}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self.resolve),
                ("GET", rf"/{repo}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self.resolve),
                ("POST", r"/api/repos/create", self.create),
                ("POST", r"/api/validate-yaml", lambda body: self.send(200, {"errors": [], "warnings": []})),
                ("POST", rf"/api/models/{repo}/preupload/(?P<rev>[^/]+)", self.preupload),
                ("POST", rf"/api/models/{repo}/commit/(?P<rev>[^/]+)", self.commit),
            ]
            for verb, pattern, answer in routes:
                match = re.fullmatch(pattern, path)
                if verb == method and match:
                    self.args = {k: unquote(v) for k, v in match.groupdict().items()}
                    return answer(body)
            self.send(404, {"error": f"the fake Hub has no route for {method} {path}"})

        # -- reading --
        def find(self, write: bool = False):
            """The repository and commit the request names, or None after answering with the Hub's error."""
            state = hub_state.repos.get(self.args["repo"])
            token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            if state is None or (state["private"] or write) and token != WRITE_TOKEN:
                # the Hub's answer for a repository that is missing or that this caller may not see
                self.send(404 if state is None else 401, {"error": "Repository not found"},
                          {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
                return None
            rev = self.args.get("rev", "main")
            sha = state["refs"].get(rev, rev if rev in state["commits"] else None)
            if sha is None:
                self.send(404, {"error": f"Invalid rev id: {rev}"}, {"X-Error-Code": "RevisionNotFound",
                                                                     "X-Error-Message": f"Invalid rev id: {rev}"})
                return None
            return state, sha

        def revision_info(self, body: bytes) -> None:
            found = self.find()
            if found:
                state, sha = found
                self.send(200, {"id": self.args["repo"], "sha": sha, "private": state["private"],
                                "siblings": [{"rfilename": p} for p in sorted(state["commits"][sha])]})

        def tree(self, body: bytes) -> None:
            found = self.find()
            if found:
                state, sha = found
                self.send(200, [{"type": "file", "path": p, "size": len(b), "oid": _blob_id(b)}
                                for p, b in sorted(state["commits"][sha].items())])

        def resolve(self, body: bytes) -> None:
            found = self.find()
            if not found:
                return
            state, sha = found
            content = state["commits"][sha].get(self.args["file"])
            if content is None:
                self.send(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": sha})
                return
            self.send(200, content, {"X-Repo-Commit": sha, "ETag": f'"{_blob_id(content)}"',
                                     "Content-Type": "application/octet-stream"})

        # -- writing --
        def create(self, body: bytes) -> None:
            request = json.loads(body)
            repo_id = f"{request['organization']}/{request['name']}"
            if (self.headers.get("Authorization") or "").removeprefix("Bearer ") != WRITE_TOKEN:
                self.send(401, {"error": "Invalid credentials"},
                          {"X-Error-Message": "Invalid credentials in Authorization header"})
            elif repo_id in hub_state.repos:
                self.send(409, {"error": "You already created this model repo",
                                "url": f"{hub_state.endpoint}/{repo_id}"})  # as the Hub answers
            else:  # a new repository's first commit, as on the Hub
                hub_state.commit(repo_id, {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"},
                                 private=request.get("visibility") == "private")
                self.send(200, {"url": f"{hub_state.endpoint}/{repo_id}"})

        def preupload(self, body: bytes) -> None:
            if self.find(write=True):
                self.send(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                          for f in json.loads(body)["files"]]})

        def commit(self, body: bytes) -> None:
            if self.find(write=True):
                lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                files = {item["value"]["path"]: base64.b64decode(item["value"]["content"])
                         for item in lines if item["key"] == "file"}
                deleted = tuple(item["value"]["path"] for item in lines if item["key"] == "deletedFile")
                sha = hub_state.commit(self.args["repo"], files, deleted=deleted)
                self.send(200, {"commitUrl": f"{hub_state.endpoint}/{self.args['repo']}/commit/{sha}",
                                "commitOid": sha, "pullRequestUrl": None})

        def send(self, status: int, payload, headers: dict[str, str] | None = None) -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

    return Handler


# ---- fixtures --------------------------------------------------------------------------------------------------
@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """A FakeHub that huggingface_hub, already imported, talks to (its constants point there, as HF_ENDPOINT would
    have set them at import), with its home, cache and token files under tmp_path and no token in the environment."""
    fake = FakeHub()
    home = tmp_path / "hf-home"
    settings = {"ENDPOINT": fake.endpoint,
                "HUGGINGFACE_CO_URL_TEMPLATE": fake.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
                "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"), "HF_TOKEN_PATH": str(home / "token"),
                "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"), "HF_XET_CACHE": str(home / "xet"),
                "AGENT_HARNESSES_PATH": str(home / ".agent_harnesses.json"), "HF_HUB_OFFLINE": False}
    for name, value in settings.items():
        monkeypatch.setattr(hub_constants, name, value, raising=False)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(home))  # hf_xet's logs, and the `hf` commands the tests run
    yield fake
    fake.stop()


def _same_model(a: Model, b: Model) -> None:
    """Identical tensors, and identical outputs: decoded codes, encodings and reconstructions of the same inputs."""
    assert type(a) is type(b) and with_defaults(a.config) == with_defaults(b.config)
    wa, wb = a.state_dict(), b.state_dict()
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    generator = torch.Generator().manual_seed(3)
    z = torch.randn(6, *a.code_shape, generator=generator)
    x = torch.rand(6, *a.data_shape, generator=generator)
    y = torch.arange(6) % a.num_labels if a.num_labels else None
    with torch.no_grad():
        assert torch.equal(a.decode(z, y).mean, b.decode(z, y).mean)
        assert torch.equal(a.encoder_params(x, y), b.encoder_params(x, y))
        assert torch.equal(a.reconstruct(x, y), b.reconstruct(x, y))


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message, message
    return message


def _other_weights(model: Model) -> Model:
    """The same model with every weight moved a little: another version of it."""
    other = build_model(model.config)
    other.load_state_dict({k: v + 0.25 if v.is_floating_point() else v for k, v in model.state_dict().items()})
    other.run_config = model.run_config
    return other.eval()


# ---- loading from the Hub --------------------------------------------------------------------------------------
def test_a_model_pulled_from_the_hub_is_the_one_saved(fake_hub, small_run, tmp_path):
    model = checkpoint.load(small_run)
    folder = model.save_pretrained(tmp_path / "hub", repo_id="alice/digits-vae")
    (folder.directory / "notes.bin").write_bytes(b"\0" * 4096)  # a file the repository holds that loading skips
    sha = fake_hub.upload("alice/digits-vae", folder.directory)

    pulled = Model.from_pretrained("alice/digits-vae")
    _same_model(model, pulled)
    assert isinstance(pulled, VAE) and not pulled.training and pulled.run_config == model.run_config
    assert fake_hub.downloads() == ["config.json", "model.safetensors"]  # not the card, the picture or notes.bin
    snapshot = Path(hub_constants.HF_HUB_CACHE) / "models--alice--digits-vae" / "snapshots" / sha
    assert sorted(p.name for p in snapshot.iterdir()) == ["config.json", "model.safetensors"]  # huggingface_hub's cache

    # called on a family: the family config.json names; a model of another family is an error
    assert type(VAE.from_pretrained("alice/digits-vae")) is VAE
    # the families built on the VAE's class are other families too
    hvae = tmp_path / "hvae-run"
    assert main(["train", "--data", "digits", "--model", "hvae", "--epochs", "1", "--limit", "100", "--out", str(hvae),
                 "--no-progress"]) == 0
    assert type(HVAE.from_pretrained(hvae)) is HVAE
    with pytest.raises(VaekitError, match="holds a 'hvae' model, not a 'vae' one"):
        VAE.from_pretrained(hvae)
    for family in (AE, IWAE):
        with pytest.raises(VaekitError) as error:
            family.from_pretrained("alice/digits-vae")
        assert f"holds a 'vae' model, not a '{family.family}' one: load it with vaekit.Model.from_pretrained" in \
            _one_line(error)


def test_a_second_load_comes_from_the_cache(fake_hub, small_run, tmp_path, monkeypatch):
    model = checkpoint.load(small_run)
    sha = fake_hub.upload("alice/cached", model.save_pretrained(tmp_path / "hub").directory)
    Model.from_pretrained("alice/cached")
    fake_hub.requests.clear()

    _same_model(model, Model.from_pretrained("alice/cached"))
    assert fake_hub.paths() == ["/api/models/alice/cached/revision/main"]  # where main points now; no file again
    fake_hub.requests.clear()
    _same_model(model, Model.from_pretrained("alice/cached", revision=sha))  # a commit: nothing to ask
    assert fake_hub.paths() == []

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)  # HF_HUB_OFFLINE=1
    _same_model(model, Model.from_pretrained("alice/cached"))
    _same_model(model, Model.from_pretrained("hf://alice/cached", local_files_only=True))
    assert fake_hub.paths() == []
    with pytest.raises(VaekitError) as error:
        Model.from_pretrained("alice/never-downloaded")
    assert "alice/never-downloaded is not in the Hugging Face cache" in _one_line(error)
    assert "downloads are off (HF_HUB_OFFLINE=1 or local_files_only=True): download it once online" in str(error.value)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)

    fake_hub.stop()  # the Hub unreachable: what the cache holds still loads, the rest is a one-line error
    _same_model(model, Model.from_pretrained("alice/cached"))
    with pytest.raises(VaekitError) as error:
        Model.from_pretrained("hf://alice/never-downloaded")
    assert _one_line(error).startswith(f"cannot reach the Hub at {fake_hub.endpoint} to download "
                                       "alice/never-downloaded, and it is not in the cache")


def test_revisions_tokens_and_private_repositories(fake_hub, small_run, tmp_path):
    first = checkpoint.load(small_run)
    second = _other_weights(first)
    old = fake_hub.upload("alice/versions", first.save_pretrained(tmp_path / "v1").directory, tag="v1")
    fake_hub.upload("alice/versions", second.save_pretrained(tmp_path / "v2").directory)
    _same_model(second, Model.from_pretrained("alice/versions"))
    for source, revision in (("alice/versions", "v1"), ("alice/versions", old), ("hf://alice/versions@v1", None),
                             ("hf://models/alice/versions@" + old, old)):
        _same_model(first, Model.from_pretrained(source, revision=revision))

    fake_hub.upload("alice/secret", first.save_pretrained(tmp_path / "secret").directory, private=True)
    with pytest.raises(VaekitError) as error:
        Model.from_pretrained("alice/secret")
    assert "has no model repository alice/secret that can be read: check the name; for a private one log in (hf " \
           "auth login) or pass token=" in _one_line(error)
    fake_hub.requests.clear()
    _same_model(first, Model.from_pretrained("alice/secret", token=WRITE_TOKEN))
    assert {auth for _, _, auth in fake_hub.requests} == {f"Bearer {WRITE_TOKEN}"}  # the token reached every call


def test_loading_mistakes_are_one_line_errors_that_say_what_to_do(fake_hub, small_run, tmp_path, monkeypatch,
                                                                   capsys):
    model = checkpoint.load(small_run)
    fake_hub.upload("alice/digits", model.save_pretrained(tmp_path / "hub").directory)
    fake_hub.commit("alice/notes", {"README.md": b"# only a card\n"})
    weights = bytearray((tmp_path / "hub" / "model.safetensors").read_bytes())
    weights[-3] ^= 0xFF  # inside the last tensor's data: the checksum written with them no longer matches
    fake_hub.commit("alice/damaged", {"config.json": (tmp_path / "hub" / "config.json").read_bytes(),
                                      "model.safetensors": bytes(weights)})
    # a config.json of vaekit's shape that this vaekit does not read, and a truncated one
    fake_hub.commit("alice/foreign", {"config.json": b'{"model": {"a": 1}}',
                                      "model.safetensors": (tmp_path / "hub" / "model.safetensors").read_bytes()})
    fake_hub.commit("alice/cut", {"config.json": (tmp_path / "hub" / "config.json").read_bytes()[:40],
                                  "model.safetensors": (tmp_path / "hub" / "model.safetensors").read_bytes()})
    # a plugin's family this vaekit has not loaded, and a config.json of another model than the weights'
    config = json.loads((tmp_path / "hub" / "config.json").read_text())
    fake_hub.commit("alice/plugin", {"config.json": json.dumps({**config, "model": {**config["model"],
                                                                                    "family": "myplugin"}}).encode(),
                                     "model.safetensors": (tmp_path / "hub" / "model.safetensors").read_bytes()})
    fake_hub.commit("alice/mixed", {"config.json": json.dumps({**config, "model": {**config["model"],
                                                                                   "latent_dim": 3}}).encode(),
                                    "model.safetensors": (tmp_path / "hub" / "model.safetensors").read_bytes()})
    fake_hub.commit("alice/bert", {"config.json": b'{"architectures": ["BertModel"], "hidden_size": 8}',
                                   "model.safetensors": (tmp_path / "hub" / "model.safetensors").read_bytes()})
    cases = [
        ("alice/missing", {}, "there is no folder alice/missing here, and the Hub (http://127.0.0.1:"),
        ("hf://alice/missing", {}, "the Hub (http://127.0.0.1:"),
        ("alice/digits", {"revision": "v9"}, "alice/digits has no revision 'v9': give a branch, tag or commit it has"),
        ("hf://alice/digits@v9", {}, "alice/digits has no revision 'v9'"),
        ("alice/notes", {}, "alice/notes is not a vaekit model: it holds no config.json and no model.safetensors"),
        ("alice/bert", {}, "alice/bert is not a vaekit model: its config.json holds no vaekit settings"),
        ("hf://datasets/alice/digits", {}, "is not a model repository"),
        ("hf://alice", {}, "hf://alice is not a Hub model: write hf://namespace/name"),
        ("alice/damaged", {}, "the model downloaded from alice/damaged does not load (the download/model.safetensors "
                              "is damaged (its contents do not match the checksum written with them)): download it "
                              "again (force_download=True"),
        # the whole problem (it was cut at its first ": "), and no advice to download again where that cannot help
        ("alice/foreign", {}, "does not load (unknown config key model.a (known: family, latent_dim, "),
        ("alice/foreign", {}, "): the repository's config.json is at fault, not the download: tell its owner"),
        ("alice/cut", {}, "alice/cut holds a damaged config.json (JSONDecodeError): download it again"),
        ("alice/plugin", {}, "which no loaded module registers: from Python, import the module that registers it"),
        ("alice/mixed", {}, "its config.json and weights do not belong together: download it again"),
        ("hf://user/name.", {}, "hf://user/name. is not a Hub model"),  # ids the Hub refuses: ours, not a traceback
        ("hf://user/a--b", {}, "hf://user/a--b is not a Hub model"),
        ("user/name-", {}, "run folder not found: user/name-"),
        ("hf://alice/digits@v1", {"revision": "v2"}, "names revision 'v1' but revision='v2' was given"),
        (str(small_run), {"revision": "main"}, "is for Hub repositories, but"),
        (Path("alice/missing"), {}, "run folder not found: alice/missing"),  # a Path is a folder, never a repo id
        (str(tmp_path / "no" / "such" / "run"), {}, "run folder not found"),
    ]
    for source, options, expected in cases:
        with pytest.raises(VaekitError) as error:
            Model.from_pretrained(source, **options)
        assert expected in _one_line(error), (source, str(error.value))
    hits = fake_hub.paths()
    assert not any("missing" in path and "/resolve/" in path for path in hits)
    assert main(["sample", "hf://alice/damaged", "--out", str(tmp_path / "s.png")]) == 2  # the CLI says the same
    assert "does not load" in capsys.readouterr().err and not (tmp_path / "s.png").exists()

    for bad in ("no-namespace", "a/b/c", "alice/../x", "user/-x", "user/x.", "user/a--b"):
        with pytest.raises(VaekitError, match="repo_id must be a Hub repository id, namespace/name"):
            model.push_to_hub(bad, token=WRITE_TOKEN)

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # the extra not installed
    for call in (lambda: Model.from_pretrained("alice/digits"), lambda: model.push_to_hub("alice/x")):
        with pytest.raises(VaekitError) as error:
            call()
        assert _one_line(error) == f"the Hugging Face Hub needs huggingface_hub: {install_hint('hub')}"
    assert model.save_pretrained(tmp_path / "no-extra").card.is_file()  # a folder needs no huggingface_hub
    _same_model(model, Model.from_pretrained(str(tmp_path / "no-extra")))


# ---- pushing ---------------------------------------------------------------------------------------------------
def test_push_to_hub_creates_the_repository_commits_the_folder_and_pulls_back(fake_hub, small_run):
    model = checkpoint.load(small_run)
    url = model.push_to_hub("bob/digits-vae", token=WRITE_TOKEN, metrics=hub.read_metrics(small_run))
    head = fake_hub.repos["bob/digits-vae"]["refs"]["main"]
    assert url == f"{fake_hub.endpoint}/bob/digits-vae/commit/{head}"
    assert fake_hub.paths("POST") == ["/api/repos/create", "/api/validate-yaml", "/api/models/bob/digits-vae/preupload/main",
                                      "/api/models/bob/digits-vae/commit/main"]
    assert {auth for _, _, auth in fake_hub.requests if auth} == {f"Bearer {WRITE_TOKEN}"}
    files = fake_hub.files("bob/digits-vae")
    assert {"config.json", "model.safetensors", "README.md", "samples.png"} <= set(files)
    assert 'Model.from_pretrained("bob/digits-vae")' in files["README.md"].decode()
    assert "# vaekit with its hub extra, from a checkout of its source (it is not on PyPI): pip install '.[hub]'\n" \
        in files["README.md"].decode()  # how its readers get vaekit: no index has it
    _same_model(model, Model.from_pretrained("bob/digits-vae"))

    newer = _other_weights(model)  # a second push to the existing repository: a new commit on main
    newer.push_to_hub("bob/digits-vae", token=WRITE_TOKEN, commit_message="epoch 4")
    assert fake_hub.repos["bob/digits-vae"]["refs"]["main"] != head
    _same_model(newer, Model.from_pretrained("bob/digits-vae"))
    _same_model(model, Model.from_pretrained("bob/digits-vae", revision=head))
    vectors = build_model(ModelConfig(likelihood="gaussian", data_shape=(5,), latent_dim=2, hidden_dims=(8,)))
    vectors.push_to_hub("bob/digits-vae", token=WRITE_TOKEN, config=RunConfig(model=vectors.config))
    files = fake_hub.files("bob/digits-vae")  # the digits model's picture does not stay beside a model of vectors
    assert "samples.png" not in files and {"config.json", "model.safetensors", "README.md"} <= set(files)
    _same_model(vectors, Model.from_pretrained("bob/digits-vae"))

    with pytest.raises(VaekitError) as error:  # a branch the repository does not have
        model.push_to_hub("bob/digits-vae", token=WRITE_TOKEN, revision="dev")
    assert "bob/digits-vae has no branch 'dev' to push to: create it first" in _one_line(error)
    with pytest.raises(VaekitError) as error:  # no token
        model.push_to_hub("bob/other")
    assert "cannot push to bob/other: the Hub" in _one_line(error)
    assert "log in with a write token (hf auth login) or pass token=" in str(error.value)
    assert "bob/other" not in fake_hub.repos


# ---- the folder and its card -----------------------------------------------------------------------------------
def test_the_model_card_holds_data_family_metrics_and_a_sample_grid(small_run, tmp_path):
    model = checkpoint.load(small_run)
    metrics = hub.read_metrics(small_run)
    last = json.loads((small_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert metrics["epoch"] == last["epoch"] == 2 and metrics["val_loss"] == last["val_loss"]
    folder = model.save_pretrained(tmp_path / "hub", metrics=metrics, repo_id="alice/digits-vae")

    card = huggingface_hub.ModelCard.load(folder.card)  # the Hub's own parser of the front matter
    assert card.data.library_name == "vaekit" and card.data.tags == ["vaekit", "vae", "autoencoder", "pytorch"]
    assert card.data.datasets is None and card.data.license is None  # digits is not on the Hub; the license is left
    for expected in ("| family | `vae`: Diagonal Gaussian posterior", "| data | `digits`: scikit-learn's bundled 8x8 "
                     "digits", "first 300 training items", "| latent size | 2 |", "| likelihood | `bernoulli` |",
                     "| data shape | 1 x 8 x 8 |", "| training | 2 epochs, batch 128, adam at lr 0.001, seed 0 |",
                     "The epoch whose weights these are (2), from the run's metrics.jsonl",
                     f"| val_loss | {last['val_loss']:.6g} |",
                     f"| val_elbo | {last['val_elbo']:.6g} |", f"| val_kl | {last['val_kl']:.6g} |",
                     f"| train_loss | {last['train_loss']:.6g} |", "![64 decoded draws from the prior](samples.png)",
                     'model = Model.from_pretrained("alice/digits-vae")', "hf download alice/digits-vae",
                     "add a `license:` line"):
        assert expected in card.text, expected

    with Image.open(folder.samples) as picture:  # a valid PNG of the model's 64 prior draws, seed 0
        assert picture.format == "PNG"
        picture.load()
        grid = np.asarray(picture)
    expected = np.asarray(viz.image_grid(model.sample(64, generator=torch.Generator().manual_seed(0)), ncol=8))
    assert grid.shape == expected.shape == (574, 574)  # 8 x 8 digits of 8 x 8 pixels, 2 apart, enlarged 7 times
    assert np.array_equal(grid, expected) and grid.std() > 0


def test_cards_for_other_data_labels_tables_and_unrecorded_settings(tmp_path, caplog):
    def untrained(data: str, **model) -> Model:
        built = build_model(ModelConfig(likelihood="bernoulli", data_shape=(1, 8, 8), latent_dim=2, network="mlp",
                                        hidden_dims=(8,), **model))
        built.run_config = RunConfig(data=DataConfig(name=data), model=built.config)
        return built

    mnist = untrained("mnist-10k").save_pretrained(tmp_path / "mnist")
    assert huggingface_hub.ModelCard.load(mnist.card).data.datasets == ["ylecun/mnist"]
    assert "Not recorded (`vaekit export RUN --hub DIR`" in mnist.card.read_text()

    labelled = untrained("digits", condition="label", num_labels=3).save_pretrained(tmp_path / "labels")
    text = labelled.card.read_text()
    assert "| conditioned on | the class label (3 classes) |" in text
    assert "64 draws z ~ p(z), decoded with each class in turn" in text
    assert labelled.samples.is_file()
    _same_model(labelled_model := checkpoint.load(labelled.directory), Model.from_pretrained(str(labelled.directory)))
    assert labelled_model.num_labels == 3
    # a prior that takes the label: the card says so, and its draws are given the class
    vamp = untrained("digits", family="vamp", condition="label", num_labels=3,
                     options={"vamp": {"components": 6}}).save_pretrained(tmp_path / "vamp")
    text = vamp.card.read_text()
    assert "| conditioned on | the class label (3 classes; the prior too: p(z \\| y)) |" in text, text
    assert "64 draws z ~ p(z | y), each class y in turn" in text

    vectors = build_model(ModelConfig(likelihood="gaussian", data_shape=(5,), latent_dim=2, hidden_dims=(8,)))
    with caplog.at_level("WARNING", logger="vaekit.integrations.hub"):
        folder = vectors.save_pretrained(tmp_path / "vectors")
    assert "carries no run settings" in caplog.text  # said, not silently defaulted
    assert folder.samples is None and not (tmp_path / "vectors" / "samples.png").exists()
    text = folder.card.read_text()
    assert "| data | not recorded |" in text and "No picture: the data are not images" in text
    assert "| networks | mlp (widths 8) |" in text
    _same_model(vectors, Model.from_pretrained(str(folder.directory)))

    with pytest.raises(VaekitError, match="metrics must map names to finite numbers"):
        vectors.save_pretrained(tmp_path / "bad", metrics={"val_elbo": float("nan")})


def _read_as_the_card_says(line: str, path: Path, scope: dict):
    """Run the reading of a file of rows that a table card's comment gives (its parenthesis after "from
    vaekit.data.tables: "), in scope (which holds the model), on path: what the model reads."""
    prefix = "(from vaekit.data.tables: "
    start, depth = line.index(prefix), 0
    for end in range(start, len(line)):
        depth += {"(": 1, ")": -1}.get(line[end], 0)
        if depth == 0:
            break
    *statements, expression = line[start + len(prefix):end].split("; ")
    scope["path"] = path
    exec("from vaekit.data.tables import model_table, read_table", scope)  # noqa: S102
    for statement in statements:
        exec(statement, scope)  # noqa: S102
    return eval(expression, scope)  # noqa: S307


def test_cards_of_a_model_that_cannot_sample_yet_and_of_a_family_vaekit_does_not_ship(tmp_path, caplog):
    """A vqvae before its prior's stage: the card says why it has no samples (it said the data were not images, and
    its load line sampled, which raises); a plugin family's card names the code that registers it."""
    vq = build_model(ModelConfig(family="vqvae", data_shape=(1, 8, 8), latent_dim=2, hidden_dims=(8,),
                                 likelihood="bernoulli", network="mlp"))
    vq.run_config = RunConfig(data=DataConfig(name="digits"), model=vq.config)
    (tmp_path / "vq").mkdir()
    (tmp_path / "vq" / "samples.png").write_bytes(b"an earlier export's picture")
    folder = vq.save_pretrained(tmp_path / "vq")
    text = folder.card.read_text()
    assert not (tmp_path / "vq" / "samples.png").exists()  # not this model's
    assert folder.samples is None and "not images" not in text and "model.sample" not in text
    assert "No picture: this model cannot draw samples yet (this vqvae's prior over its codes is not trained" in text
    line = next(line for line in text.splitlines() if line.startswith("codes = "))
    scope = {"model": Model.from_pretrained(str(folder.directory)), "x": torch.rand(3, 1, 8, 8)}
    exec(line, scope)  # noqa: S102  (the card's own line: codes, not a distribution)
    assert isinstance(scope["codes"], torch.Tensor) and scope["codes"].shape[0] == 3
    # a label-conditioned one's line encodes with the items' classes
    labelled = build_model(ModelConfig(family="vqvae", data_shape=(1, 8, 8), latent_dim=2, hidden_dims=(8,),
                                       likelihood="bernoulli", network="mlp", condition="label", num_labels=3))
    labelled.run_config = RunConfig(data=DataConfig(name="digits"), model=labelled.config)
    labelled_text = labelled.save_pretrained(tmp_path / "vq-labelled").card.read_text()
    line = next(line for line in labelled_text.splitlines() if line.startswith("codes = "))
    scope = {"model": Model.from_pretrained(str(tmp_path / "vq-labelled")), "x": torch.rand(3, 1, 8, 8),
             "y": torch.tensor([0, 2, 1])}
    exec(line, scope)  # noqa: S102
    assert scope["codes"].shape[0] == 3
    command = re.search(r"e\.g\. `vaekit ([^`]+)`", text).group(1).split()
    assert command[:2] == ["reconstruct", "REPO"]  # the card's USER/REPO's folder
    assert main([*command[:1], str(folder.directory), *command[2:3], str(tmp_path / command[3])]) == 0
    assert "is not part of vaekit" not in text
    # a table vqvae's: its command writes rows, and its Python line reads a file of rows as the model does
    rng = np.random.default_rng(0)
    (tmp_path / "t.csv").write_text("size,colour\n" + "\n".join(
        f"{rng.normal(10, 3):.3f},{rng.choice(['red', 'blue'])}" for _ in range(100)) + "\n")
    assert main(["train", "--data", str(tmp_path / "t.csv"), "--model", "vqvae", "--latent-dim", "2", "--epochs", "1",
                 "--out", str(tmp_path / "tvq"), "--no-progress"]) == 0
    assert main(["export", str(tmp_path / "tvq"), "--hub", str(tmp_path / "tvq-hub" / "REPO")]) == 0
    table_text = (tmp_path / "tvq-hub" / "REPO" / "README.md").read_text()
    command = re.search(r"e\.g\. `vaekit ([^`]+)`", table_text).group(1).split()
    assert command[2:4] == ["--data", "YOUR.csv"] and command[-1] == "reconstructions.csv"  # (not on the Hub)
    (tmp_path / "t.csv").rename(tmp_path / "moved.csv")  # as after a download elsewhere: the run's path is gone
    assert main([command[0], str(tmp_path / "tvq-hub" / "REPO"), "--data", str(tmp_path / "moved.csv"),
                 *command[4:-1], str(tmp_path / command[-1])]) == 0
    assert "No rows: this model cannot draw samples yet" in table_text
    line = next(line for line in table_text.splitlines() if line.startswith("codes = "))
    scope = {"model": Model.from_pretrained(str(tmp_path / "tvq-hub" / "REPO"))}
    scope["x"] = _read_as_the_card_says(line, tmp_path / "moved.csv", scope)
    exec(line, scope)  # noqa: S102
    assert scope["codes"].shape[0] == 100
    # a headerless run's: a new file whose first row reads like names (whole numbers far outside their columns) is
    # read as the run's data by the card's reading, as vaekit's commands read it
    (tmp_path / "bare.csv").write_text("\n".join(f"{rng.normal(0, 1):.3f},{rng.normal(5, 1):.3f}" for _ in range(100)))
    assert main(["train", "--data", str(tmp_path / "bare.csv"), "--model", "vqvae", "--latent-dim", "2", "--epochs",
                 "1", "--out", str(tmp_path / "bvq"), "--no-progress"]) == 0
    assert main(["export", str(tmp_path / "bvq"), "--hub", str(tmp_path / "bvq-hub" / "REPO")]) == 0
    bare_text = (tmp_path / "bvq-hub" / "REPO" / "README.md").read_text()
    line = next(line for line in bare_text.splitlines() if line.startswith("codes = "))
    (tmp_path / "new.csv").write_text("400,450\n" + "\n".join(f"{rng.normal(0, 1):.3f},{rng.normal(5, 1):.3f}"
                                                              for _ in range(20)) + "\n")
    assert tables.read_table(tmp_path / "new.csv").names == ("400", "450")  # (without the run's columns: names)
    scope = {"model": Model.from_pretrained(str(tmp_path / "bvq-hub" / "REPO"))}
    scope["x"] = _read_as_the_card_says(line, tmp_path / "new.csv", scope)
    exec(line, scope)  # noqa: S102
    assert scope["codes"].shape[0] == 21

    shape = dict(data_shape=(1, 8, 8), latent_dim=2, hidden_dims=(8,), likelihood="bernoulli", network="mlp")
    for name, module, says in (
            ("test-card-plugin", __name__, f"the Python module `{__name__}` registers it. Install it beside vaekit; "
                                           "unless it is a `vaekit.plugins` entry point, also import it"),
            ("test-card-script", "__main__", "the script that trained this model registered it")):
        register_family(name)(type("Mine", (VAE,), {"__module__": module}))
        model = build_model(ModelConfig(family=name, **shape))
        model.run_config = RunConfig(data=DataConfig(name="digits"), model=model.config)
        text = model.save_pretrained(tmp_path / name).card.read_text()
        assert f"The `{name}` family is not part of vaekit: {says}" in text, text


def _card_snippets_run(folder: Path, tmp_path: Path) -> None:
    """The card's Python draw line and its command line, as written, work on the folder."""
    text = (folder / "README.md").read_text()
    block = text.split("```python\n", 1)[1].split("```", 1)[0].splitlines()
    code = [line for line in block if line.startswith(("from ", "images = ", "rows = "))]  # all but the download
    scope = {"model": Model.from_pretrained(str(folder))}
    exec("\n".join(code), scope)  # noqa: S102  (the card's own lines)
    if "rows" in scope:  # in the user's units: its columns by name
        assert list(scope["rows"]) == list(tables.model_table(scope["model"].config).names)
        assert all(len(values) == 16 for values in scope["rows"].values())
    command = re.search(r"e\.g\. `vaekit ([^`]+)`", text).group(1).split()
    command = [str(folder) if word == folder.name else word for word in command]  # the card's USER/REPO: REPO
    command = [str(tmp_path / word) if word.startswith("samples.") else word for word in command]
    assert main(command) == 0, command


def test_each_cards_snippets_run_and_say_where_val_was_measured(small_run, tmp_path):
    # a label-conditioned model samples with a class; a table model writes rows to a .csv; val_* names its split
    digits = tmp_path / "digits"
    assert main(["train", "--data", "digits", "--limit", "300", "--condition", "label", "--latent-dim", "2",
                 "--hidden-dims", "8", "--epochs", "1", "--validation", "50", "--out", str(digits / "run"),
                 "--no-progress"]) == 0
    assert main(["export", str(digits / "run"), "--hub", str(digits / "REPO")]) == 0
    text = (digits / "REPO" / "README.md").read_text()
    assert "`val_*` on a validation split (50 training items, held out from training)" in text
    assert "model.sample(16, y=0)" in text and "--label 0 --out samples.png" in text
    _card_snippets_run(digits / "REPO", tmp_path)
    rng = np.random.default_rng(0)
    (tmp_path / "t.csv").write_text("size,colour\n" + "\n".join(
        f"{rng.normal(10, 3):.3f},{rng.choice(['red', 'blue'])}" for _ in range(100)) + "\n")
    assert main(["train", "--data", str(tmp_path / "t.csv"), "--latent-dim", "2", "--epochs", "1", "--early-stopping",
                 "3", "--out", str(tmp_path / "table"), "--no-progress"]) == 0
    assert main(["export", str(tmp_path / "table"), "--hub", str(tmp_path / "REPO")]) == 0
    text = (tmp_path / "REPO" / "README.md").read_text()
    assert "`val_*` on a validation split (10% of the training items" in text and "--out samples.csv" in text
    _card_snippets_run(tmp_path / "REPO", tmp_path)
    assert (tmp_path / "samples.csv").read_text().startswith("size,colour\n")
    assert main(["export", str(small_run), "--hub", str(tmp_path / "plain" / "REPO")]) == 0
    assert "`val_*` on the test split" in (tmp_path / "plain" / "REPO" / "README.md").read_text()
    _card_snippets_run(tmp_path / "plain" / "REPO", tmp_path)
    # a label-conditioned table model: its rows drawn for a class
    (tmp_path / "c.csv").write_text("size,colour,kind\n" + "\n".join(
        f"{rng.normal(10, 3):.3f},{rng.choice(['red', 'blue'])},{rng.choice(['a', 'b'])}" for _ in range(100)) + "\n")
    assert main(["train", "--data", str(tmp_path / "c.csv"), "--label-column", "kind", "--condition", "label",
                 "--latent-dim", "2", "--epochs", "1", "--out", str(tmp_path / "ctable"), "--no-progress"]) == 0
    assert main(["export", str(tmp_path / "ctable"), "--hub", str(tmp_path / "c" / "REPO")]) == 0
    assert "model.sample(16, y=0)" in (tmp_path / "c" / "REPO" / "README.md").read_text()
    _card_snippets_run(tmp_path / "c" / "REPO", tmp_path)


def test_run_folders_load_as_they_are_and_keep_their_format(fake_hub, small_run, tmp_path):
    before = {p.name: p.read_bytes() for p in small_run.iterdir() if p.is_file()}
    reference = checkpoint.load(small_run)
    for source in (small_run, str(small_run)):  # a run folder is a folder from_pretrained loads as it is
        loaded = Model.from_pretrained(source)
        _same_model(reference, loaded)
        assert loaded.run_config == checkpoint.load_config(small_run)
    folder = reference.save_pretrained(tmp_path / "hub")
    assert {p.name: p.read_bytes() for p in small_run.iterdir() if p.is_file()} == before  # the run untouched

    # the Hub folder's pair is the run format: the same config.json, the same tensors, a folder vaekit.load reads
    assert folder.config.read_bytes() == before["config.json"]
    hub_tensors, hub_meta = checkpoint.read_checked(folder.weights)
    run_tensors, run_meta = checkpoint.read_checked(small_run / "model.safetensors")
    assert hub_tensors.keys() == run_tensors.keys() and all(torch.equal(hub_tensors[k], run_tensors[k])
                                                           for k in hub_tensors)
    assert hub_meta == {k: v for k, v in run_meta.items() if k != checkpoint.RUN_KEY}
    _same_model(reference, checkpoint.load(folder.directory))

    # a training run's folder pushed as it is (hf upload user/run runs/demo/vae): only the model's two files come down
    fake_hub.upload("alice/raw-run", small_run)
    assert {"resume.json", "metrics.jsonl"} <= set(fake_hub.files("alice/raw-run"))
    _same_model(reference, Model.from_pretrained("alice/raw-run"))
    assert fake_hub.downloads() == ["config.json", "model.safetensors"]


# ---- the command line ------------------------------------------------------------------------------------------
def test_export_hub_writes_the_folder_with_the_runs_metrics(fake_hub, small_run, tmp_path, capsys):
    out = tmp_path / "hub"
    assert main(["export", str(small_run), "--hub", str(out), "--repo-id", "alice/digits-vae"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [str(out / name) for name in ("config.json", "model.safetensors", "README.md", "samples.png")] \
        + [f"upload it with: hf upload alice/digits-vae {out}"]
    last = json.loads((small_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert f"| val_elbo | {last['val_elbo']:.6g} |" in (out / "README.md").read_text()
    _same_model(checkpoint.load(small_run), Model.from_pretrained(str(out)))
    # without the hub extra there is no hf command: the line says where it comes from
    import importlib.util

    real = importlib.util.find_spec
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "huggingface_hub" else real(name, *a))
        assert main(["export", str(small_run), "--hub", str(tmp_path / "bare")]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith(f"(the hf command comes with {install_hint('hub')})")

    # a model on the Hub, exported again (hf://): the Hub keeps no metrics, and the card says so
    fake_hub.upload("alice/digits-vae", out)
    assert main(["export", "hf://alice/digits-vae", "--hub", str(tmp_path / "again")]) == 0
    assert "Not recorded" in (tmp_path / "again" / "README.md").read_text()
    _same_model(checkpoint.load(small_run), checkpoint.load(tmp_path / "again"))
    assert (tmp_path / "again" / "config.json").read_bytes() == (out / "config.json").read_bytes()
    # any command that takes a RUN takes hf://USER/REPO: sampling, and evaluating on the run's own data
    assert main(["sample", "hf://alice/digits-vae", "--n", "4", "--seed", "1", "--out", str(tmp_path / "s.npy")]) == 0
    local = tmp_path / "local-samples.npy"
    assert main(["sample", str(small_run), "--n", "4", "--seed", "1", "--out", str(local)]) == 0
    assert (tmp_path / "s.npy").read_bytes() == local.read_bytes()
    capsys.readouterr()
    assert main(["evaluate", "hf://alice/digits-vae", "--n", "20", "--iw-samples", "2", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["data"] == "digits"


def test_export_hub_mistakes_are_one_line_errors(small_run, tmp_path, capsys):
    run_copy = tmp_path / "run"
    shutil.copytree(small_run, run_copy)
    (tmp_path / "file").write_text("x")
    project = tmp_path / "project"  # a folder of the user's own: its README.md and config.json are not vaekit's
    project.mkdir()
    (project / "README.md").write_text("# My project\n")
    (project / "config.json").write_text('{"name": "my-app"}\n')
    broken = tmp_path / "broken"
    shutil.copytree(small_run, broken)
    with open(broken / "metrics.jsonl", "a") as handle:
        handle.write('{"epoch": 3, "val_lo')  # a line cut short
    cases = [
        ([str(small_run)], "say what to write: --onnx FOLDER (ONNX files), --hub FOLDER"),
        ([str(small_run), "--hub", str(run_copy)], f"{run_copy} holds a training run (resume.json): write the Hub "
                                                   "files to a folder of their own"),
        ([str(small_run), "--hub", str(tmp_path / "file" / "hub")], "cannot create"),
        ([str(small_run), "--hub", str(tmp_path / "file")], "is a file: choose a folder for the Hub files"),
        ([str(tmp_path / "nothing"), "--hub", str(tmp_path / "h")], "run folder not found"),
        ([str(small_run), "--hub", str(tmp_path / "h"), "--opset", "17"], "--opset sets the ONNX export's opset"),
        ([str(small_run), "--onnx", str(tmp_path / "o"), "--repo-id", "a/b"], "--repo-id names the repository"),
        ([str(small_run), "--hub", str(tmp_path / "h"), "--repo-id", "digits"], "repo_id must be a Hub repository id"),
        ([str(broken), "--hub", str(tmp_path / "h")], "metrics.jsonl is unreadable (JSONDecodeError): continue the run"),
        (["hf://datasets/a/b", "--hub", str(tmp_path / "h")], "hf://datasets/a/b is not a model repository"),
        ([str(small_run), "--hub", str(project)], f"{project} holds config.json and README.md that vaekit did not "
                                                  "write, which the Hub files would replace"),
    ]
    for args, expected in cases:
        assert main(["export", *args]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("vaekit: error: ") and err.count("\n") == 1 and expected in err, (args, err)
        assert "Traceback" not in err
    assert not (tmp_path / "h").exists() and sorted(p.name for p in run_copy.iterdir()) == \
        sorted(p.name for p in small_run.iterdir())
    assert sorted(p.name for p in project.iterdir()) == ["README.md", "config.json"]
    assert (project / "README.md").read_text() == "# My project\n"
    assert main(["export", str(small_run), "--hub", str(tmp_path / "h")]) == 0  # vaekit's own files: written again
    assert main(["export", str(small_run), "--hub", str(tmp_path / "h")]) == 0


def test_the_hubs_own_command_line_pushes_and_pulls_a_vaekit_folder(fake_hub, small_run, tmp_path):
    """`hf upload` of an exported folder, then `hf download` + `vaekit sample` as the card says: the Hub's own
    command line in fresh processes, steered by HF_ENDPOINT, HF_HOME and HF_TOKEN alone, against the fake Hub."""
    hf = shutil.which("hf", path=str(Path(sys.executable).parent)) or shutil.which("hf")
    if hf is None:
        pytest.skip("huggingface_hub's `hf` command is not installed (huggingface_hub >= 0.34 has it)")
    assert main(["export", str(small_run), "--hub", str(tmp_path / "hub"), "--repo-id", "alice/cli-vae"]) == 0
    env = {**os.environ, "HF_ENDPOINT": fake_hub.endpoint, "HF_HOME": str(tmp_path / "cli-home"),
           "HF_TOKEN": WRITE_TOKEN, "HF_HUB_DISABLE_UPDATE_CHECK": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    for command in (["upload", "alice/cli-vae", str(tmp_path / "hub")],
                    ["download", "alice/cli-vae", "--local-dir", str(tmp_path / "cli-vae")]):
        done = subprocess.run([hf, *command], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr[-2000:]
    assert {"config.json", "model.safetensors", "README.md", "samples.png"} <= set(fake_hub.files("alice/cli-vae"))
    assert main(["sample", str(tmp_path / "cli-vae"), "--n", "4", "--out", str(tmp_path / "s.png")]) == 0
    with Image.open(tmp_path / "s.png") as picture:
        assert picture.format == "PNG"
    _same_model(checkpoint.load(small_run), Model.from_pretrained("alice/cli-vae"))  # what hf upload put there


def test_the_card_and_its_numbers_are_of_the_epoch_early_stopping_kept(small_run, tmp_path):
    import hashlib
    import shutil

    from safetensors.torch import save_file

    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    config = json.loads((run / "config.json").read_text())
    config["train"]["early_stopping"] = 2
    text = json.dumps(config)
    (run / "config.json").write_text(text)
    tensors, metadata = checkpoint.read_checked(run / checkpoint.MODEL_FILE)
    save_file(tensors, str(run / checkpoint.MODEL_FILE),
              metadata={**metadata, checkpoint.CONFIG_KEY: hashlib.sha256(text.encode()).hexdigest()})
    rows = [json.loads(line) for line in (small_run / "metrics.jsonl").read_text().splitlines()]
    rows = [dict(rows[0], epoch=e, val_loss=v) for e, v in ((1, 50.0), (2, 40.0), (3, 45.0), (4, 41.0))]
    (run / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    metrics = hub.read_metrics(run)
    assert metrics["epoch"] == 2 and metrics["val_loss"] == 40.0 and metrics["epochs_trained"] == 4
    card = hub.model_card(checkpoint.load(run), checkpoint.load_config(run), metrics)
    assert "The epoch whose weights these are (2, the one early stopping kept)" in card and "| training | 4 epochs" in card
    assert hub.read_metrics(small_run)["epoch"] == 2 and "epochs_trained" not in hub.read_metrics(small_run)
    from vaekit.train import kept_index

    assert kept_index([5.0, 4.0, None, 4.0, 4.5], 2) == 1  # the first at the lowest finite loss
    assert kept_index([5.0, 4.0, 4.5], None) == 2 and kept_index([None, float("nan")], 3) == 1


def test_an_export_cut_off_between_its_files_says_to_export_again(small_run, tmp_path, capsys):
    """Weights of one export beside another's config.json (a kill between the two renames): the message said to
    resume training, which a Hub folder cannot (it has no resume state)."""
    folder = tmp_path / "hub"
    assert main(["export", str(small_run), "--hub", str(folder)]) == 0
    config = json.loads((folder / "config.json").read_text())
    config["train"]["seed"] += 1  # another run's settings
    (folder / "config.json").write_text(json.dumps(config))
    assert main(["sample", str(folder), "--out", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err
    assert f"an export into {folder} was cut off between the two, or one was edited: export the run again (vaekit " \
           f"export RUN --hub {folder}, or model.save_pretrained in Python)" in err and err.count("\n") == 1, err


@pytest.mark.parametrize("kind", ["hub", "onnx"])
def test_the_scratch_folder_of_a_killed_export_goes_with_the_next_export(small_run, tmp_path, kind):
    """An export killed by SIGKILL left its scratch folder (a copy of the weights) in the output folder for good. The
    next export removes the scratch of a process of this machine that is gone, and leaves a running one's, another
    machine's and any folder vaekit did not name."""
    if kind == "onnx":
        pytest.importorskip("onnxscript", reason="the onnx extra is not installed")
    from vaekit import files

    folder = tmp_path / "out"
    assert main(["export", str(small_run), f"--{kind}", str(folder)]) == 0
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone_pid, host = int(finished.stdout), files._host()
    names = {"killed": f".{kind}-{host}-{gone_pid}-abcd1234", "running": f".{kind}-{host}-{os.getpid()}-abcd1234",
             "elsewhere": f".{kind}-0badc0de-{gone_pid}-abcd1234", "other": f".{kind}-mine"}
    for name in names.values():
        (folder / name).mkdir()
        (folder / name / "model.safetensors").write_bytes(b"weights")
    assert main(["export", str(small_run), f"--{kind}", str(folder)]) == 0
    left = sorted(path.name for path in folder.glob(".*"))
    assert left == sorted([names["running"], names["elsewhere"], names["other"]]), left


@pytest.mark.parametrize("number, advice", [("ENOSPC", "free some disk space, or write elsewhere"),
                                            ("EACCES", "choose a folder you can write to")])
def test_a_failed_write_during_export_hub_names_the_folder_not_its_scratch(small_run, tmp_path, capsys, monkeypatch,
                                                                          number, advice):
    import errno

    def fails(*args, **kwargs):
        raise OSError(getattr(errno, number), os.strerror(getattr(errno, number)))

    monkeypatch.setattr(checkpoint, "save_file", fails)
    folder = tmp_path / "hub"
    assert main(["export", str(small_run), "--hub", str(folder)]) == 2
    err = capsys.readouterr().err
    reason = os.strerror(getattr(errno, number))
    assert f"cannot write the Hub folder {folder} ({reason}): {advice}; its old files are kept" in err, err
    assert ".hub-" not in err and err.count("\n") == 1 and not list(folder.iterdir())


def test_the_model_card_names_each_family_by_a_whole_sentence():
    """The card took the docstring's first line: the vqvae's row stopped at 'straight-through'."""
    from vaekit.integrations.hub import family_summary
    from vaekit.models import MODEL_FAMILIES

    for name in ("ae", "vae", "iwae", "vamp", "hvae", "tcvae", "vqvae"):  # (other tests register families too)
        summary = family_summary(MODEL_FAMILIES[name])
        assert summary.endswith((".", ")")) and "\n" not in summary and summary.count("(") == summary.count(")"), name
    assert family_summary(MODEL_FAMILIES["vqvae"]).endswith("the codebook learned by its loss or by EMA "
                                                            "(model.vqvae.ema).")
    assert family_summary(MODEL_FAMILIES["iwae"]).endswith("(Burda et al. 2016, eq. 8) through the same importance "
                                                           "weights the evaluator uses; K = 1 is the VAE's ELBO.")
    assert family_summary(MODEL_FAMILIES["tcvae"]).endswith("over the training set's size.")
