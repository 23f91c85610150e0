"""The explorer's web application: a JSON API over serve.Explorer (FastAPI, documented at /docs) and the page.

Every mistake in a request is a 4xx JSON answer {"error": "..."} naming what is wrong; nothing a client sends
makes a 500.
"""
# No `from __future__ import annotations` here: FastAPI reads the request models of the functions below from their
# annotations at run time, and those models are local to create_app (pydantic is imported only when serving).
from importlib import resources
from typing import Any, Literal, Union

from ..errors import VaekitError
from .explorer import MAX_SAMPLES, MAX_STEPS, MAX_UPLOAD_BYTES, BadUpload, Explorer, NotFound

MAX_BODY_BYTES = MAX_UPLOAD_BYTES + 64 * 1024  # an upload and its multipart framing; JSON bodies are far smaller

Label = Union[int, str, None]


def create_app(explorer: Explorer):
    """The FastAPI application serving `explorer` (run it with uvicorn, or test it with its TestClient)."""
    try:
        from fastapi import FastAPI, File, Request, UploadFile
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import HTMLResponse, JSONResponse
        from fastapi.staticfiles import StaticFiles
        from pydantic import BaseModel, ConfigDict, Field
    except ImportError as exc:
        raise VaekitError(f"the explorer needs FastAPI ({exc.name} is missing): pip install 'vaekit[explore]'") from None

    class Strict(BaseModel):
        model_config = ConfigDict(extra="forbid")

    class DecodeRequest(Strict):
        z: list[float] = Field(description="a code: one number per latent dimension (see /api/info code_size)")
        label: Label = Field(None, description="the class to decode with (label-conditioned models only)")

    class EncodeRequest(Strict):
        item: int = Field(description="index of an item of the served split")

    class Endpoint(Strict):
        item: int | None = Field(None, description="index of an item of the served split")
        z: list[float] | None = Field(None, description="or a code")

    class InterpolateRequest(Strict):
        a: Endpoint
        b: Endpoint
        t: float | None = Field(None, description="one point of the path, 0 (a) .. 1 (b)")
        steps: int | None = Field(None, description=f"or this many evenly spaced points, 2..{MAX_STEPS}")
        method: Literal["lerp", "slerp"] = "lerp"
        label: Label = None

    class AttributeRequest(Strict):
        attribute: str = Field(description="a name from /api/info attributes (a data set attribute or a class)")
        strength: float = Field(description="multiple of the attribute vector to add, -10..10")
        item: int | None = None
        z: list[float] | None = None
        method: Literal["mean-diff", "linear"] = "mean-diff"
        label: Label = None

    class SampleRequest(Strict):
        n: int = Field(16, description=f"how many prior samples, 1..{MAX_SAMPLES}")
        seed: int | None = Field(None, description="for a repeatable draw")
        label: Label = None

    class MapDecodeRequest(Strict):
        point: list[float] = Field(description="a point of the latent map, in its coordinates [x, y]")
        label: Label = None

    app = FastAPI(title="vaekit explorer", version=_version(),
                  description=f"The latent space of {explorer.run or 'a trained model'}, over HTTP: decode codes, "
                              "encode items and pictures, interpolate, edit attributes, sample the prior.")
    app.state.explorer = explorer

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return JSONResponse({"error": f"the request body is over {MAX_BODY_BYTES // 2**20} MB: send less"},
                                status_code=413)
        if length is None and request.method == "POST":
            return JSONResponse({"error": "send the body with a Content-Length"}, status_code=411)
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        parts = []
        for error in exc.errors()[:3]:
            where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
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
        b, _ = explorer.code_of(request.b.item, request.b.z)
        label = request.label if request.label is not None else _index(label_a)
        return explorer.interpolate(a, b, request.t, request.steps, request.method, label)

    @app.post("/api/attribute", summary="An item or code plus strength x an attribute vector, decoded; with the "
              "edit's measured score once computed")
    def attribute(request: AttributeRequest) -> dict[str, Any]:
        code, label = explorer.code_of(request.item, request.z)
        return explorer.attribute(code, request.attribute, request.strength, request.method,
                                  request.label if request.label is not None else _index(label))

    @app.get("/api/score", summary="The measured score of an attribute edit (computed once, in the background)")
    def score(attribute: str, method: Literal["mean-diff", "linear"] = "mean-diff") -> JSONResponse:
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
