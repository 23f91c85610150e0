"""The explorer page in a real browser: headless Chromium (the system's, driven by Playwright) against a model like
`make demo`'s and against a face model. Each test moves a slider, clicks and hovers the latent map, scrubs an
interpolation, applies an attribute with its score, draws samples, uploads a picture, and saves a screenshot.

Set VAEKIT_DEMO_RUN=RUN (make demo's runs/demo/vae) or VAEKIT_FACE_RUN=RUN to explore that run instead of the short
one trained here, and VAEKIT_SCREENSHOT_DIR=DIR to keep the screenshots (explorer_demo.png, explorer_faces.png); the
README's was made so, against make demo's VAE."""
from __future__ import annotations

import os
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the explorer's extra is not installed: pip install 'vaekit[explore]'")
playwright = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed: pip install playwright")

from vaekit import checkpoint, viz  # noqa: E402
from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from vaekit.data import load_dataset  # noqa: E402
from vaekit.serve import Explorer, bind  # noqa: E402
from vaekit.serve.app import create_app  # noqa: E402

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
WAIT_MS = 60_000
# The map's dot farthest from any other (in canvas pixels), so that hovering it can only mean that item.
ISOLATED = """() => {
  const ps = state.map.points.map(toCanvas);
  let best = 0, far = -1;
  ps.forEach((p, i) => {
    let near = Infinity;
    ps.forEach((q, j) => { if (i !== j) near = Math.min(near, (p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2); });
    if (near > far) { far = near; best = i; }
  });
  return [best, ps[best]];
}"""


def _chromium() -> str:
    for name in (os.environ.get("VAEKIT_CHROMIUM"), *BROWSERS):
        if name and (path := shutil.which(name)):
            return path
    pytest.skip("no Chromium on this machine (apt-get install chromium, or set VAEKIT_CHROMIUM): the explorer page "
                "is not tested in a browser here")


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        yield chromium
        chromium.close()


@contextmanager
def _serving(run: Path, data_dir: str | None = None):
    import uvicorn

    config = checkpoint.load_config(run).data
    if data_dir is not None:
        from dataclasses import replace

        config = replace(config, data_dir=data_dir)
    explorer = Explorer(checkpoint.load(run), load_dataset(config), run=run.name)
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(explorer), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the explorer's server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/", explorer
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        explorer.close()


def _src(page, selector: str) -> str:
    return page.locator(f"{selector} img").first.get_attribute("src")


def _changes(page, selector: str, before: str) -> str:
    page.wait_for_function("([s, b]) => { const i = document.querySelector(s + ' img'); return i && i.src !== b; }",
                           arg=[selector, before], timeout=WAIT_MS)
    return _src(page, selector)


def _exercise(browser, address: str, explorer: Explorer, attribute: str, screenshot: Path, work: Path) -> None:
    page = browser.new_page(viewport={"width": 1200, "height": 1700})
    errors = _watch(page)
    page.goto(address)
    page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
    page.wait_for_selector("#decoded img", timeout=WAIT_MS)

    # a slider: the most used dimension first; arrow keys move it as a user's would, and the picture follows
    slider = page.locator("#sliders input").first
    assert slider.get_attribute("data-dim") == str(explorer.dimensions[0].index)
    before = _src(page, "#decoded")
    slider.focus()
    for _ in range(40):
        page.keyboard.press("ArrowRight")
    after = _changes(page, "#decoded", before)
    assert float(slider.input_value()) > explorer.dimensions[0].mean

    # the map: hovering a dot shows its item; a click decodes that point and the sliders follow it
    item, (x, y) = page.evaluate(ISOLATED)
    page.locator("#map").hover(position={"x": x, "y": y})
    page.wait_for_selector("#tip:not([hidden]) img", timeout=WAIT_MS)
    assert page.locator("#tip").inner_text().startswith(f"item {item}")
    assert page.locator("#tip img").get_attribute("src") == explorer.item(item)["image"]
    page.locator("#map").click(position={"x": 220, "y": 200})
    page.wait_for_selector("#map-decoded img", timeout=WAIT_MS)
    _changes(page, "#decoded", after)
    clicked = page.evaluate("() => JSON.parse(document.getElementById('map').dataset.point)")
    assert np.allclose(page.evaluate(f"() => toCanvas({clicked})"), (220, 200), atol=3)  # the pixel clicked
    assert np.allclose(page.evaluate("() => state.z"), explorer.map.to_codes(np.asarray([clicked]))[0], atol=1e-4)

    # interpolation: scrub from the middle to the end, B
    page.wait_for_selector("#interp-image img", timeout=WAIT_MS)
    middle = _src(page, "#interp-image")
    page.locator("#interp-t").focus()
    page.keyboard.press("End")
    page.wait_for_selector("#interp-image[data-t='1']", timeout=WAIT_MS)
    end = _changes(page, "#interp-image", middle)
    b_code = explorer.code_of(1, None)[0]
    assert end == explorer.decode(b_code.tolist(), _label(explorer, 1))["image"]
    assert page.locator("#interp-strip img").count() == 8

    # an attribute at strength +3, then its measured score beside it
    page.select_option("#attr", attribute)
    page.locator("#attr-strength").focus()
    page.keyboard.press("End")
    page.wait_for_selector("#attr-image[data-strength='3']", timeout=WAIT_MS)
    edited = _src(page, "#attr-image")
    a_code = explorer.code_of(0, None)[0]
    reference = explorer.attribute(a_code, attribute, 3.0, label=_label(explorer, 0))
    assert edited == reference["image"]
    page.wait_for_selector("#attr-score[data-status='ready']", timeout=180_000)
    score = page.locator("#attr-score").inner_text()
    assert f"{attribute} (mean-diff) on" in score and "judge" in score

    # prior samples, and a picture uploaded as item A
    page.click("#sample")
    page.wait_for_function("() => document.querySelectorAll('#samples img').length === 16", timeout=WAIT_MS)
    upload = work / "upload.png"
    viz.save_images(explorer.items.x[5:6], upload)
    before = _src(page, "#view-a")
    page.set_input_files("#upload-a", str(upload))
    _changes(page, "#view-a", before)

    page.locator("#decode-panel").scroll_into_view_if_needed()
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000
    assert not errors, errors
    page.close()


def _watch(page) -> list[str]:
    """Script errors, console errors and failed requests of a page, collected as they happen."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"script: {error}"))
    page.on("console", lambda message: message.type == "error" and errors.append(f"console: {message.text}"))
    page.on("requestfailed", lambda request: errors.append(f"request: {request.url} {request.failure}"))
    return errors


def _label(explorer: Explorer, index: int):
    y = explorer.item_label(index)
    return None if y is None else int(y[0])


def _screenshot(tmp_path: Path, name: str) -> Path:
    folder = os.environ.get("VAEKIT_SCREENSHOT_DIR")
    return Path(folder) / name if folder else tmp_path / name


def test_the_page_works_against_a_model_like_make_demos(browser, tmp_path):
    from vaekit.runs import train

    run = os.environ.get("VAEKIT_DEMO_RUN")
    if run is None:  # make demo's VAE: mnist-10k, a 16-number code, the default networks (fewer epochs)
        run = tmp_path / "vae"
        train(RunConfig(data=DataConfig(name="mnist-10k"), model=ModelConfig(latent_dim=16),
                        train=TrainConfig(epochs=1, progress=False)), out=run)
    with _serving(Path(run)) as (address, explorer):
        _exercise(browser, address, explorer, "3", _screenshot(tmp_path, "explorer_demo.png"), tmp_path)


def test_the_page_works_against_a_face_model(browser, tmp_path, request):
    from conftest import shared_faces

    root = shared_faces("smiles")
    given = os.environ.get("VAEKIT_FACE_RUN")
    run = Path(given) if given else request.getfixturevalue("smiles_short_run")[0]
    with _serving(run, str(root)) as (address, explorer):
        assert explorer.dataset.name == "smiles"
        _exercise(browser, address, explorer, "smile", _screenshot(tmp_path, "explorer_faces.png"), tmp_path)


def test_an_api_error_is_shown_on_the_page_not_swallowed(browser, small_run):
    with _serving(small_run) as (address, explorer):
        page = browser.new_page()
        page.goto(address)
        page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
        page.fill("#from-item", "100000")
        page.click("#load-item")
        page.wait_for_selector("#error:not([hidden])", timeout=WAIT_MS)
        assert page.locator("#error").inner_text() == f"no item 100000: the test split has items 0..{len(explorer.items) - 1}"
        page.close()


def test_the_page_of_a_label_conditioned_model_decodes_with_the_label_chosen(browser, tmp_path):
    from vaekit.runs import train

    train(RunConfig(data=DataConfig(name="digits"), model=ModelConfig(latent_dim=3, hidden_dims=(64,), condition="label"),
                    train=TrainConfig(epochs=3, progress=False)), out=tmp_path / "run")
    with _serving(tmp_path / "run") as (address, explorer):
        page = browser.new_page(viewport={"width": 1200, "height": 1700})
        errors = _watch(page)
        page.goto(address)
        page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
        assert page.locator("#label-box").is_visible()
        page.wait_for_selector("#decoded img", timeout=WAIT_MS)
        before = _src(page, "#decoded")
        page.select_option("#label", "7")
        after = _changes(page, "#decoded", before)
        z = page.evaluate("() => state.z")
        assert after == explorer.decode(z, 7)["image"]
        # item A's edit at strength 0 is its reconstruction with its own label, whatever label the page shows
        page.select_option("#attr", "2")
        page.wait_for_selector("#attr-image[data-strength='0'] img", timeout=WAIT_MS)
        own = explorer.code_of(0, None)[0]
        assert _src(page, "#attr-image") == explorer.decode(own.tolist(), _label(explorer, 0))["image"]
        assert not errors, errors
        page.close()
