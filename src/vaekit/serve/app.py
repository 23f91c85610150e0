"""The explorer's web application: a JSON API over serve.Explorer (FastAPI, documented at /docs) and the page.

Every mistake in a request is a 4xx JSON answer {"error": "..."} naming what is wrong; nothing a client sends
makes a 500.
"""
# No `from __future__ import annotations` here: FastAPI reads the request models of the functions below from their
# annotations at run time, and those models are local to create_app (pydantic is imported only when serving).
import html
import json
from importlib import resources
from typing import Any, Literal, Sequence, Union
from urllib.parse import urlsplit

from ..config import EDIT_METHODS
from ..errors import VaekitError
from ..extras import install_hint
from .explorer import MAX_SAMPLES, MAX_STEPS, MAX_UPLOAD_BYTES, BadUpload, Explorer, NotFound

MAX_BODY_BYTES = MAX_UPLOAD_BYTES + 64 * 1024  # an upload and its multipart framing; JSON bodies are far smaller
# The names a browser on this machine reaches a loopback server by. Checking the Host header stops a web page from
# reading the explorer through DNS rebinding (its own name made to point at 127.0.0.1).
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class BodyLimit:
    """An ASGI middleware that answers 413 to a request body over `limit` bytes: at once where Content-Length says
    so, else as soon as the bytes received pass it (a chunked body is counted, not refused)."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await self._refuse(send)
            return
        received = 0
        exceeded = False

        async def counted():
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request" and not exceeded:
                received += len(message.get("body", b""))
                if received > self.limit:  # read no further: the application sees a cut body, the client a 413
                    exceeded = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def answered(message) -> None:
            if not exceeded:
                await send(message)
            elif message["type"] == "http.response.start":
                await self._refuse(send)

        await self.app(scope, counted, answered)

    async def _refuse(self, send) -> None:
        # Connection: close, so the server stops reading what is left of the body instead of taking it all in
        await _json_answer(send, 413, f"the request body is over {self.limit // 2**20} MB: send less", close=True)


class Guard:
    """An ASGI middleware that answers, with a 4xx JSON error: requests whose Host header names another machine (a
    web page reaching the explorer by DNS rebinding), where `hosts` are given (a server on this machine only); and,
    on every server, requests to the API that a browser sent from another page than the explorer's own: marked
    cross-site or same-site (another port of this machine is the same site), or, for a POST, from another origin
    (browsers without Sec-Fetch-Site still send Origin)."""

    def __init__(self, app, hosts: Sequence[str] | None) -> None:
        self.app = app
        self.hosts = None if hosts is None else {h.strip("[]").lower() for h in hosts}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            address = headers.get(b"host", b"").decode("latin-1")
            host = _host_name(address)
            if self.hosts is not None and host not in self.hosts:
                await _json_answer(send, 400, f"this explorer answers requests addressed to "
                                              f"{', '.join(sorted(self.hosts))}, not {host or 'no host'}")
                return
            site = headers.get(b"sec-fetch-site", b"").decode("latin-1").strip().lower()
            origin = headers.get(b"origin", b"").decode("latin-1")
            if scope["path"].startswith("/api/") or scope["method"] != "GET":
                # Origin only where the browser does not say the site: behind a proxy that rewrites Host, the page's
                # own requests name the public address, and are same-origin to the browser
                foreign = not site and origin and _origin_address(origin) != _address(address, urlsplit(origin).scheme)
                if site in ("cross-site", "same-site") or (scope["method"] != "GET" and foreign):
                    await _json_answer(send, 403, "requests from other web pages are refused: open the explorer's "
                                                  "page")
                    return
        await self.app(scope, receive, send)


class Identity:
    """An ASGI middleware that marks every answer with what the server serves (x-vaekit-model: Explorer.identity),
    so that a page left open across a restart notices another model behind the same address; and as not to be shown
    inside another site's page (a frame) nor read as another type than it says."""

    HEADER = b"x-vaekit-model"
    SAFETY = ((b"x-frame-options", b"DENY"), (b"content-security-policy", b"frame-ancestors 'none'"),
              (b"x-content-type-options", b"nosniff"))

    def __init__(self, app, identity: str) -> None:
        self.app = app
        self.identity = identity.encode("ascii")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def marked(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (self.HEADER, self.identity),
                                                  *self.SAFETY]}
            await send(message)

        await self.app(scope, receive, marked)


def _address(host: str, scheme: str) -> str:
    """A Host header's name and port, the scheme's default port dropped: 'LocalHost:80' -> 'localhost'."""
    host = host.strip().lower()
    default = {"http": ":80", "https": ":443"}.get(scheme.lower())
    return host[: -len(default)] if default and host.endswith(default) else host


def _origin_address(origin: str) -> str:
    """An Origin header's host and port as _address gives them ('null' or a malformed one: itself)."""
    parts = urlsplit(origin.strip())
    return _address(parts.netloc, parts.scheme) if parts.netloc else origin.strip().lower()


def _host_name(header: str) -> str:
    """'127.0.0.1:8765' -> '127.0.0.1'; '[::1]:8765' -> '::1'; 'localhost.' -> 'localhost'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0].rstrip(".") if header.count(":") <= 1 else header


async def _json_answer(send, status: int, message: str, close: bool = False) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(explorer: Explorer, hosts: Sequence[str] | None = LOOPBACK_HOSTS):
    """The FastAPI application serving `explorer` (run it with uvicorn, or test it with its TestClient). hosts: the
    Host header values answered (None: any, for a server listening beyond this machine)."""
    try:
        from fastapi import FastAPI, File, Request, UploadFile
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import HTMLResponse, JSONResponse
        from fastapi.staticfiles import StaticFiles
        from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr
        from starlette.exceptions import HTTPException
    except ImportError as exc:
        raise VaekitError(f"the explorer needs FastAPI ({exc.name} is missing): {install_hint('explore')}") from None

    Label = Union[StrictInt, StrictStr, None]

    class Strict(BaseModel):
        model_config = ConfigDict(extra="forbid")

    class DecodeRequest(Strict):
        z: list[StrictFloat] = Field(description="a code: one number per latent dimension (see /api/info code_size)")
        label: Label = Field(None, description="the class to decode with (label-conditioned models only)")

    class EncodeRequest(Strict):
        item: StrictInt = Field(description="index of an item of the served split")

    class Endpoint(Strict):
        item: StrictInt | None = Field(None, description="index of an item of the served split")
        z: list[StrictFloat] | None = Field(None, description="or a code")

    class InterpolateRequest(Strict):
        a: Endpoint
        b: Endpoint
        t: StrictFloat | None = Field(None, description="one point of the path, 0 (a) .. 1 (b)")
        steps: StrictInt | None = Field(None, description=f"or this many evenly spaced points, 2..{MAX_STEPS}")
        method: Literal["lerp", "slerp"] = "lerp"
        label: Label = None

    class AttributeRequest(Strict):
        attribute: str = Field(description="a name from /api/info attributes (a data set attribute or a class)")
        strength: StrictFloat = Field(description="how far to edit, -10..10: the multiple of the attribute vector to "
                                      "add (mean-diff, linear), or the units walked (local)")
        item: StrictInt | None = None
        z: list[StrictFloat] | None = None
        method: Literal[EDIT_METHODS] | None = Field(
            None, description="the edit's direction (default: the run's, /api/info edit_method)")
        label: Label = None

    class SampleRequest(Strict):
        n: StrictInt = Field(16, description=f"how many prior samples, 1..{MAX_SAMPLES}")
        seed: StrictInt | None = Field(None, ge=0, lt=2**63, description="for a repeatable draw, 0..2**63-1")
        label: Label = None

    class MapDecodeRequest(Strict):
        point: list[StrictFloat] = Field(description="a point of the latent map, in its coordinates [x, y]")
        label: Label = None

    try:  # /docs with its scripts served from here, not a CDN (a machine offline still shows it); no /redoc, whose
        from fastapi_offline import FastAPIOffline as make_app  # page loads its maker's logo from the web
    except ImportError:  # (an older install of the explore extra): FastAPI's own page, whose scripts a CDN serves
        make_app = FastAPI
    app = make_app(title="vaekit explorer", version=_version(), redoc_url=None,
                   description=f"The latent space of {html.escape(explorer.run or 'a trained model')}, over HTTP: "
                               "decode codes, "
                               "encode items and pictures, interpolate, edit attributes, sample the prior.")
    app.state.explorer = explorer
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    app.add_middleware(Identity, identity=explorer.identity)
    app.add_middleware(Guard, hosts=hosts)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):  # unknown route, wrong method, unparsable body
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        parts = []
        for error in exc.errors()[:3]:
            if error.get("type") == "json_invalid":  # the body itself: its position, not a field's name
                position = next((p for p in error.get("loc", ()) if isinstance(p, int)), None)
                at = f" at character {position}" if position is not None else ""
                reason = (error.get("ctx") or {}).get("error", "")
                parts.append(f"the request body is not valid JSON{at}{f' ({reason})' if reason else ''}: send a JSON "
                             "object, e.g. {\"z\": [0, 0]}")
                continue
            where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
            sent = request.headers.get("content-type", "")
            if where == "body" and error.get("type") in ("model_attributes_type", "dict_type") \
                    and sent.split(";")[0].strip().lower() != "application/json":
                parts.append(f"the request body must be a JSON object sent with the header content-type: "
                             f"application/json (curl: -H 'content-type: application/json'); this one came "
                             f"{f'as {sent}' if sent else 'without a content-type'}")
                continue
            parts.append(f"{where}: {error.get('msg', 'invalid')}")
        return JSONResponse({"error": "; ".join(parts)}, status_code=422)

    @app.exception_handler(VaekitError)
    async def refused(request: Request, exc: VaekitError):
        status = exc.status if isinstance(exc, BadUpload) else 404 if isinstance(exc, NotFound) else 422
        return JSONResponse({"error": str(exc)}, status_code=status)

    @app.get("/api/info", summary="The model, its code's dimensions (most used first), attributes and labels")
    def info() -> dict[str, Any]:
        return explorer.info()

    @app.post("/api/decode", summary="A code -> the decoded item (a PNG data URL, a table row, or numbers)")
    def decode(request: DecodeRequest) -> dict[str, Any]:
        return explorer.decode(request.z, request.label)

    @app.post("/api/encode", summary="An item of the split -> its code, posterior spread and reconstruction")
    def encode(request: EncodeRequest) -> dict[str, Any]:
        return explorer.encode_item(request.item)

    @app.post("/api/encode-image", summary=f"An uploaded picture (PNG, JPEG, ...; at most "
              f"{MAX_UPLOAD_BYTES // 2**20} MB) -> its code and reconstruction")
    def encode_image(file: UploadFile = File(...), label: str | None = None) -> dict[str, Any]:
        data = file.file.read(MAX_UPLOAD_BYTES + 1)
        return explorer.encode_upload(data, label)

    @app.get("/api/item/{index}", summary="One item of the split: its picture, label and attributes")
    def item(index: int) -> dict[str, Any]:
        return explorer.item(index)

    @app.post("/api/interpolate", summary="Decoded points on the path between two items or codes")
    def interpolate(request: InterpolateRequest) -> dict[str, Any]:
        a, label_a = explorer.code_of(request.a.item, request.a.z)
        b, label_b = explorer.code_of(request.b.item, request.b.z)
        # a label-conditioned model decodes the path with the label given, else A's own (or B's, if A is a code)
        label = request.label if request.label is not None else _index(label_a if label_a is not None else label_b)
        return explorer.interpolate(a, b, request.t, request.steps, request.method, label)

    @app.post("/api/attribute", summary="An item or code plus strength x an attribute vector, decoded; with the "
              "edit's measured score once computed")
    def attribute(request: AttributeRequest) -> dict[str, Any]:
        code, label = explorer.code_of(request.item, request.z)
        return explorer.attribute(code, request.attribute, request.strength, request.method,
                                  request.label if request.label is not None else _index(label))

    @app.get("/api/score", summary="The measured score of an attribute edit (computed once, in the background)")
    def score(attribute: str, method: Literal[EDIT_METHODS] | None = None) -> JSONResponse:
        result = explorer.score(attribute, method)
        return JSONResponse(result, status_code=202 if result["status"] == "computing" else 200)

    @app.post("/api/sample", summary="Decoded draws from the prior (and their codes)")
    def sample(request: SampleRequest) -> dict[str, Any]:
        return explorer.sample(request.n, request.seed, request.label)

    @app.get("/api/map", summary="The 2-D latent map of the split's first items, coloured by label or an attribute")
    def map_points(colour: str | None = None) -> dict[str, Any]:
        return explorer.map_points(colour)

    @app.post("/api/map/decode", summary="A point of the latent map -> its code, decoded")
    def map_decode(request: MapDecodeRequest) -> dict[str, Any]:
        return explorer.map_decode(request.point, request.label)

    static = resources.files("vaekit.serve") / "static"

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return (static / "index.html").read_text(encoding="utf-8")

    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    return app


def _index(label) -> int | None:
    return None if label is None else int(label.reshape(-1)[0])


def _version() -> str:
    from .. import __version__

    return __version__
