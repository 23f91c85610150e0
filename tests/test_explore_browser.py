"""The explorer page in a real browser: headless Chromium (the system's, driven by Playwright) against a model like
`make demo`'s and against a face model. Each test moves a slider, clicks and hovers the latent map, scrubs an
interpolation, applies an attribute with its score, draws samples, uploads a picture, and saves a screenshot.

Set VAEKIT_DEMO_RUN=RUN (make demo's runs/demo/vae) or VAEKIT_FACE_RUN=RUN to explore that run instead of the short
one trained here, and VAEKIT_SCREENSHOT_DIR=DIR to keep the screenshots (explorer_demo.png, explorer_faces.png); the
README's was made so, against make demo's VAE."""
from __future__ import annotations

import os
import re
import shutil
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
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
        assert page.locator("#error-text").inner_text() == \
            f"no item 100000: the test split has items 0..{len(explorer.items) - 1}"
        page.close()


def test_the_page_of_a_label_conditioned_model_decodes_with_the_label_chosen(browser, tmp_path):
    from vaekit.runs import train

    train(RunConfig(data=DataConfig(name="digits"), model=ModelConfig(latent_dim=3, hidden_dims=(64,), condition="label"),
                    train=TrainConfig(epochs=3, progress=False)), out=tmp_path / "run")
    with _serving(tmp_path / "run") as (address, explorer):
        # as a run whose training items held no 4 would keep it: the picker says so
        explorer.model.config = replace(explorer.model.config, untrained_labels=(4,))
        page = browser.new_page(viewport={"width": 1200, "height": 1700})
        errors = _watch(page)
        page.goto(address)
        page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
        assert page.locator("#label-box").is_visible()
        assert page.locator("#label option").all_inner_texts() == [*"0123", "4 (no training items)", *"56789"]
        assert page.locator("#label option").evaluate_all("options => options.map(o => o.value)") == list("0123456789")
        page.wait_for_selector("#decoded img", timeout=WAIT_MS)
        # at first the picker holds item A's label
        assert page.locator("#label").input_value() == str(_label(explorer, 0))
        before = _src(page, "#decoded")
        chosen = next(k for k in range(10) if k != _label(explorer, 0))
        page.select_option("#label", str(chosen))
        after = _changes(page, "#decoded", before)
        z = page.evaluate("() => state.z")
        assert after == explorer.decode(z, chosen)["image"]
        page.wait_for_selector(f"#decoded-label[data-label='{chosen}']", timeout=WAIT_MS)
        assert page.locator("#decoded-label").inner_text() == f"decoded with label {chosen}"
        # the picker drives the path and the edit too: item B at the end of the path, decoded with that label
        page.locator("#interp-t").focus()
        page.keyboard.press("End")
        page.wait_for_selector("#interp-image[data-t='1'] img", timeout=WAIT_MS)
        page.wait_for_selector(f"#interp-image-label[data-label='{chosen}']", timeout=WAIT_MS)
        b_code = explorer.code_of(1, None)[0]
        assert _src(page, "#interp-image") == explorer.decode(b_code.tolist(), chosen)["image"]
        # its classes are no attributes: a vector cannot change the class the decoder is given
        assert not set(page.locator("#attr option").all_inner_texts()) & {str(k) for k in range(10)}
        # loading an item sets the picker to its label, and the sliders' picture is that item's
        other = next(i for i in range(len(explorer.items)) if _label(explorer, i) not in (chosen,))
        page.fill("#from-item", str(other))
        page.click("#load-item")
        own = str(_label(explorer, other))
        page.wait_for_selector(f"#decoded-label[data-label='{own}']", timeout=WAIT_MS)
        assert page.locator("#label").input_value() == own
        code = explorer.code_of(other, None)[0]
        page.wait_for_function("(s) => document.querySelector('#decoded img').src === s",
                               arg=explorer.decode(code.tolist(), int(own))["image"], timeout=WAIT_MS)
        # ... and every other picture follows the new label: the path, its strip (the edit's panel likewise)
        for note in ("#interp-image-label", "#interp-strip-label"):
            page.wait_for_selector(f"{note}[data-label='{own}']", timeout=WAIT_MS)
        # a new end B sets the picker to its label: the path ends at B as B
        page.fill("#item-b", "2")
        page.locator("#item-b").dispatch_event("change")
        label_b = str(_label(explorer, 2))
        page.wait_for_selector(f"#interp-image-label[data-label='{label_b}']", timeout=WAIT_MS)
        end = explorer.decode(explorer.code_of(2, None)[0].tolist(), int(label_b))["image"]
        page.wait_for_function("(s) => document.querySelector('#interp-image img').src === s", arg=end,
                               timeout=WAIT_MS)
        assert not errors, errors
        page.close()


def _in_view(page, selector: str) -> bool:
    return page.evaluate("""(s) => { const r = document.querySelector(s).getBoundingClientRect();
        return r.height > 0 && r.top >= 0 && r.bottom <= window.innerHeight; }""", selector)


def test_the_api_docs_render_with_nothing_from_outside_this_machine(browser, small_run):
    """/docs (Swagger UI) shows every API route with every request to another host refused, as on a machine offline
    (FastAPI's own page loaded its scripts from a CDN and stayed blank), and asks nothing of another host."""
    with _serving(small_run) as (address, explorer):
        page = browser.new_page()
        outside = []

        def only_here(route):
            if route.request.url.startswith(address):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        page.route("**/*", only_here)
        page.goto(address + "docs")
        page.wait_for_selector(".swagger-ui .opblock", timeout=WAIT_MS)
        shown = page.locator(".opblock-summary-path").all_inner_texts()
        assert {"/api/decode", "/api/encode", "/api/sample", "/api/info"} <= {text.strip() for text in shown}
        assert "Unable to render" not in page.content()
        page.wait_for_load_state("networkidle")  # (images too: ReDoc's page asked the web for its maker's logo)
        page.close()
        assert not outside, outside


def test_errors_show_where_the_user_is_and_refused_fields_go_back(browser, small_run):
    with _serving(small_run) as (address, explorer):
        page = browser.new_page(viewport={"width": 1000, "height": 600})
        script_errors: list[str] = []
        page.on("pageerror", lambda error: script_errors.append(str(error)))
        page.goto(address)
        page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
        page.wait_for_selector("#interp-image img", timeout=WAIT_MS)
        page.locator("#samples").scroll_into_view_if_needed()
        last = len(explorer.items) - 1
        for typed, says in (("", "give an item number"), ("1.5", "not 1.5"), ("-1", "not -1"),
                            ("99999", f"no item 99999: the test split has items 0..{last}"),
                            ("1e3", "not 1e3")):
            page.evaluate("() => { document.getElementById('error').hidden = true; }")
            page.fill("#item-a", typed)
            page.locator("#item-a").dispatch_event("change")
            page.wait_for_selector("#error:not([hidden])", timeout=WAIT_MS)
            assert says in page.locator("#error-text").inner_text(), typed
            assert _in_view(page, "#error"), typed  # a fixed banner, wherever the page is scrolled to
            page.wait_for_function("() => document.getElementById('item-a').value === '0'", timeout=WAIT_MS)
        page.fill("#from-item", "")
        page.click("#load-item")
        page.wait_for_function("() => document.getElementById('from-item').value === '0'", timeout=WAIT_MS)
        page.wait_for_timeout(300)
        assert not script_errors, script_errors  # no uncaught promise rejections
        page.close()


def test_the_page_recovers_from_failed_look_ups_and_notices_another_model(browser, small_run):
    with _serving(small_run) as (address, explorer):
        page = browser.new_page(viewport={"width": 1200, "height": 1700})
        script_errors: list[str] = []
        page.on("pageerror", lambda error: script_errors.append(str(error)))
        page.goto(address)
        page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
        item, (x, y) = page.evaluate(ISOLATED)
        # a failed look-up hides the tooltip and is not remembered
        page.route(f"**/api/item/{item}", lambda route: route.abort())
        page.locator("#map").hover(position={"x": 5, "y": 5})
        page.evaluate("() => { const t = document.getElementById('tip'); t.hidden = false; t.textContent = 'old'; }")
        page.locator("#map").hover(position={"x": x, "y": y})
        page.wait_for_selector("#tip[hidden]", state="attached", timeout=WAIT_MS)
        page.unroute(f"**/api/item/{item}")
        page.locator("#map").hover(position={"x": 5, "y": 5})
        page.locator("#map").hover(position={"x": x, "y": y})
        page.wait_for_selector("#tip:not([hidden]) img", timeout=WAIT_MS)
        assert page.locator("#tip").inner_text().startswith(f"item {item}")
        assert page.locator("#stale").is_hidden()

        # the server now answers for another model: the page says to reload
        def other_model(route):
            response = route.fetch()
            route.fulfill(response=response, headers={**response.headers, "x-vaekit-model": "another"})

        page.route("**/api/decode", other_model)
        page.locator("#sliders input").first.focus()
        page.keyboard.press("ArrowRight")
        page.wait_for_selector("#stale:not([hidden])", timeout=WAIT_MS)
        assert "reload" in page.locator("#stale").inner_text()
        assert _in_view(page, "#stale")
        assert not script_errors, script_errors
        page.close()


def test_slider_readouts_show_the_codes_value_and_mark_those_outside_the_range(browser, small_run):
    with _serving(small_run) as (address, explorer):
        page = browser.new_page(viewport={"width": 1200, "height": 1700})
        page.goto(address)
        page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
        low, high = {d.index: d.low for d in explorer.dimensions}, {d.index: d.high for d in explorer.dimensions}
        # one value beyond the slider's end, one inside it but between the slider's steps
        z = [high[0] + 1.234, low[1] + (high[1] - low[1]) * 0.3217]
        page.evaluate("(z) => setCode(z)", z)
        for d in (0, 1):
            out = page.locator(f"#sliders input[data-dim='{d}'] + output")
            shown = float(out.inner_text().strip("\u25c2\u25b8"))
            assert shown == pytest.approx(z[d], abs=5e-4)
            assert ("outside" in (out.get_attribute("class") or "")) == (d == 0)
        page.close()


def test_the_attribute_panel_says_the_vector_is_being_computed_and_explains_the_score(browser, small_run):
    with _serving(small_run) as (address, explorer):
        page = browser.new_page(viewport={"width": 1200, "height": 1700})
        held = []
        page.route("**/api/attribute", lambda route: held.append(route))
        page.goto(address)
        page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
        page.wait_for_function("() => document.getElementById('attr-score').dataset.status === 'vector'",
                               timeout=WAIT_MS)
        assert "computing the" in page.locator("#attr-score").inner_text()
        assert "attribute vector" in page.locator("#attr-score").inner_text()
        page.wait_for_function("() => true")
        while not held:
            page.wait_for_timeout(50)
        page.wait_for_selector("#busy", state="visible", timeout=WAIT_MS)  # a request waiting: the page says so
        held[0].continue_()
        page.wait_for_selector("#attr-image img", timeout=WAIT_MS)
        page.wait_for_selector("#busy", state="hidden", timeout=WAIT_MS)
        page.wait_for_function("() => document.getElementById('attr-score').dataset.status !== 'vector'",
                               timeout=WAIT_MS)
        page.unroute("**/api/attribute")
        legend = page.locator("#score-legend")
        legend.locator("summary").click()
        assert all(word in legend.inner_text() for word in ("moved", "flipped", "change", "outside", "monotone"))
        # the edit is shown beside the reconstruction it starts from
        code = explorer.code_of(0, None)[0]
        assert _src(page, "#attr-original") == explorer.decode(code.tolist())["image"]
        # a code laid out as a grid (a VQ-VAE's channels x rows x columns) names each slider's place in it
        assert page.evaluate("() => gridPlace(2)") == ""  # this model's code is a vector
        place = page.evaluate("() => { state.info.code_shape = [16, 7, 7]; return gridPlace(472); }")
        assert place == "channel 9, row 4, column 3 of the 16×7×7 code; "  # 472 = 9 * 49 + 4 * 7 + 3
        page.close()


def test_an_uploaded_picture_is_shown_as_read_and_named(browser, small_run, tmp_path):
    with _serving(small_run) as (address, explorer):
        page = browser.new_page(viewport={"width": 1200, "height": 1700})
        page.goto(address)
        page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
        from PIL import Image

        digit = (explorer.items.x[5, 0].numpy() * 255).round().astype("uint8")  # the item itself, without a frame
        upload = tmp_path / "my-digit.png"
        Image.fromarray(digit).save(upload)
        page.set_input_files("#upload-a", str(upload))
        page.wait_for_selector("#view-a figure >> nth=1", timeout=WAIT_MS)
        read = explorer.encode_upload(upload.read_bytes())
        assert page.locator("#view-a img").nth(0).get_attribute("src") == read["item_view"]["image"]
        assert page.locator("#view-a img").nth(1).get_attribute("src") == read["reconstruction"]["image"]
        assert "my-digit.png" in page.locator("#source-a").inner_text()
        assert "note" not in page.locator("#source-a").inner_text()
        assert page.locator("#item-a").input_value() == ""
        # the same digit in black on white: the page says the background is the other one
        inverted = tmp_path / "on-paper.png"
        Image.fromarray(255 - digit).save(inverted)
        page.set_input_files("#upload-a", str(inverted))
        page.wait_for_function("document.querySelector('#source-a').innerText.includes('on-paper.png')",
                               timeout=WAIT_MS)
        assert "background is light" in page.locator("#source-a").inner_text()
        page.close()


def test_the_prior_controls_of_an_autoencoder_say_it_has_no_prior(browser, tmp_path):
    from vaekit.runs import train

    train(RunConfig(data=DataConfig(name="digits", limit=300), model=ModelConfig(family="ae", latent_dim=2,
                                                                                 hidden_dims=(16,)),
                    train=TrainConfig(epochs=1, progress=False)), out=tmp_path / "ae")
    with _serving(tmp_path / "ae") as (address, explorer):
        page = browser.new_page()
        page.goto(address)
        page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
        hint = page.locator("#prior-hint").inner_text()
        assert "no prior" in hint and "N(0, I)" in hint and "not where its codes lie" in hint
        assert "N(0, I)" in page.locator("#sample").inner_text()
        assert "autoencoder has no prior" in page.locator("#slider-hint").inner_text()
        page.close()


def test_a_table_model_shows_compact_tips_one_table_per_path_and_edits_against_the_reconstruction(browser, tmp_path):
    from vaekit.cli import main

    rng = np.random.default_rng(0)
    names = [f"c{k}" for k in range(12)]
    rows = [",".join(names + ["yes"])] + [  # c0 a column of whole numbers, in the tens of thousands
        f"{rng.integers(10_000, 90_000)}," + ",".join(f"{rng.normal(10, 3):.3f}" for _ in names[1:])
        + f",{rng.integers(0, 2)}" for _ in range(300)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    assert main(["train", "--data", str(tmp_path / "t.csv"), "--label-column", "yes", "--latent-dim", "2", "--epochs",
                 "1", "--threads", "1", "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    with _serving(tmp_path / "run") as (address, explorer):
        page = browser.new_page(viewport={"width": 1200, "height": 1700})
        errors = _watch(page)
        page.goto(address)
        page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
        item, (x, y) = page.evaluate(ISOLATED)
        page.locator("#map").hover(position={"x": x, "y": y})
        page.wait_for_selector("#tip:not([hidden]) table", timeout=WAIT_MS)
        assert page.locator("#tip tr").count() <= 7 and "more column" in page.locator("#tip").inner_text()
        page.wait_for_selector("#interp-strip table.steps", timeout=WAIT_MS)
        assert page.locator("#interp-strip table").count() == 1
        assert page.locator("#interp-strip th").all_inner_texts()[1:] == ["A", *(f"step {k}" for k in range(1, 7)), "B"]
        page.select_option("#attr", "1")
        page.locator("#attr-strength").focus()
        page.keyboard.press("End")
        page.wait_for_selector("#attr-image[data-strength='3'] table.diff", timeout=WAIT_MS)
        assert page.locator("#attr-image th").all_inner_texts()[1:] == ["reconstruction", "edited"]
        code = explorer.code_of(0, None)[0]
        recon = explorer.decode(code.tolist())["row"]
        first = page.locator("#attr-image tbody tr").first.locator("td").all_inner_texts()
        assert first[0] == names[0] and float(first[1]) == pytest.approx(recon[names[0]], rel=1e-3)
        assert re.fullmatch(r"[0-9]+", first[1]), first  # whole numbers as they are (not 5.123e+4)
        second = page.locator("#attr-image tbody tr").nth(1).locator("td").all_inner_texts()
        assert re.fullmatch(r"-?[0-9]+\.[0-9]+", second[1]), second  # the others to 4 significant digits
        assert not errors, errors
        page.close()


def test_prior_mean_is_the_chosen_labels_own_where_the_prior_takes_the_label(browser, tmp_path):
    """A conditioned vamp: "prior mean" sets the code to the prior mean of the label chosen on the page (info's
    label_centres), not to the mean over every class."""
    from vaekit.runs import train

    train(RunConfig(data=DataConfig(name="digits"), model=ModelConfig(family="vamp", latent_dim=3, hidden_dims=(32,),
                                                                      network="mlp", condition="label",
                                                                      options={"vamp": {"components": 20}}),
                    train=TrainConfig(epochs=1, progress=False)), out=tmp_path / "run")
    with _serving(tmp_path / "run") as (address, explorer):
        centres = explorer.info()["label_centres"]
        page = browser.new_page(viewport={"width": 1200, "height": 1700})
        errors = _watch(page)
        page.goto(address)
        page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
        overall = page.evaluate("() => state.info.dimensions.slice().sort((a, b) => a.index - b.index)"
                                ".map((d) => d.mean)")
        for name in ("3", "7"):
            page.select_option("#label", name)
            page.click("#centre")
            page.wait_for_function(f"() => JSON.stringify(state.z) === JSON.stringify({centres[name]})",
                                   timeout=WAIT_MS)
            assert centres[name] != overall
        assert not errors
        page.close()
