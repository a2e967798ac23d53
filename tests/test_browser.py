"""Notebooks in a real JupyterLab driven by headless Chromium (Playwright): what a person sees and clicks.

Needs the ``playwright`` Python package (``[dev]``), JupyterLab and a Chromium binary: Debian's ``chromium``
(``make setup`` installs it as root on Debian) or ``USLKIT_CHROMIUM=/path``. Playwright's own browser download
is never used. Elsewhere the tests are skipped with the reason. On failure a full-page screenshot is written to
the test's temporary folder.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("USLKIT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        return "jupyterlab is not installed (pip install -e '.[dev]')"
    if not Path(CHROMIUM).is_file():
        return f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; or set USLKIT_CHROMIUM)"
    return None


pytestmark = [pytest.mark.slow, pytest.mark.skipif(_missing() is not None, reason=str(_missing()))]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """``(url, root)``: a JupyterLab on 127.0.0.1 with a token, serving a temporary folder (notebooks are copied
    there, so the repository's files are never saved over), kernels at the small CI size."""
    root = tmp_path_factory.mktemp("lab")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "uslkit-test"
    env = {**os.environ, "USLKIT_NB_SIZE": "small", "OMP_NUM_THREADS": "1"}
    log = open(root / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5)
            break
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                server.kill()
                pytest.fail(f"JupyterLab did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.3)
    yield base, token, root
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


@pytest.fixture
def page(lab, tmp_path, request):
    """A Chromium page; its console messages in ``page.console``; a screenshot in ``tmp_path`` on failure."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.console = []
        pg.on("console", lambda m: pg.console.append(f"{m.type}: {m.text}"))
        yield pg
        if getattr(request.node, "failed", False):  # set by tests/conftest.py's pytest_runtest_makereport
            pg.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            print(f"screenshot: {tmp_path / 'failure.png'}")
        browser.close()


def run_all(page, base, token, root, name):
    """Copy ``notebooks/<name>`` into the server's folder, open it, Run All, wait for the kernel to go idle."""
    shutil.copy(REPO / "notebooks" / name, root / name)
    page.goto(f"{base}/lab/tree/{name}?token={token}")
    page.wait_for_selector(".jp-Notebook", timeout=60_000)
    page.wait_for_selector("#jp-main-statusbar >> text=Idle", timeout=120_000)
    page.click(".lm-MenuBar-itemLabel:text-is('Run')")
    page.click("li[data-command='runmenu:run-all']")


def outputs(page) -> list[str]:
    loc = page.locator(".jp-OutputArea-output")
    return [loc.nth(i).inner_text() for i in range(loc.count())]


def test_notebook_10_runs_and_its_labelling_widget_answers_clicks_and_keys(lab, page):
    """Notebook 10 at the small size: every cell runs without an error output or an unrendered widget; the
    labelling widget takes a button click and a key typed in its key box, and both answers are in the manifest
    on disk at once."""
    base, token, root = lab
    run_all(page, base, token, root, "10_explorer.ipynb")
    page.wait_for_selector(".jp-OutputArea-output >> text=results:", timeout=300_000)
    texts = outputs(page)
    for bad in ("Traceback", "Error displaying widget", "model not found", "VBox(children", "HBox(children"):
        assert not any(bad in t for t in texts), (bad, [t[:300] for t in texts if bad in t])
    assert not page.locator("[data-mime-type='application/vnd.jupyter.stderr'] >> text=Error").count()
    status = page.locator(".widget-html-content >> text=/pick \\d+ of \\d+/").first
    assert "0 / 10 labelled" in status.inner_text()
    page.locator("button:has-text('2: Trouser')").click()
    page.wait_for_selector(".widget-html-content >> text=1 / 10 labelled", timeout=30_000)
    box = page.locator("input[placeholder='click here, then type 1-9, 0, b, s']")
    box.click()
    page.keyboard.press("5")  # the fifth class, Coat
    page.wait_for_selector(".widget-html-content >> text=2 / 10 labelled", timeout=30_000)
    assert box.input_value() == ""  # the key box empties itself for the next key
    page.keyboard.press("b")
    page.wait_for_selector(".widget-html-content >> text=labelled Coat", timeout=30_000)
    manifest = next((root / "papermill_runs" / "10_explorer").glob("to_label_*/manifest.csv")).read_text()
    labels = [line.rsplit(",", 1)[1] for line in manifest.splitlines()[1:4]]
    assert labels == ["Trouser", "Coat", ""]


def test_notebook_10_explorer_answers_widgets_and_a_click_on_the_map(lab, page):
    """The explorer in a real browser: one map canvas (not one per redraw), method and budget changes repaint
    the summary, a click on the map focuses a sample and fills the neighbour panel, and the console is clean
    of widget errors."""
    base, token, root = lab
    run_all(page, base, token, root, "10_explorer.ipynb")
    page.wait_for_selector(".jp-OutputArea-output >> text=results:", timeout=300_000)
    explorer = page.locator(".jp-OutputArea-output .widget-hbox").first
    figures = explorer.locator(".jupyter-matplotlib")  # each: an image canvas under an event canvas
    assert page.locator(".jupyter-matplotlib").count() == 2  # one map and one image grid, updated in place
    info = explorer.locator(".widget-html-content").first
    t0 = time.time()
    explorer.locator(".widget-dropdown:has-text('method') select").select_option("kmeans")
    page.wait_for_function("el => el.innerText.includes('labels')", arg=info.element_handle(), timeout=30_000)
    before = info.inner_text()
    slider = explorer.locator(".widget-slider:has-text('budget') .noUi-handle")
    slider.focus()
    page.keyboard.press("ArrowRight")  # budget 10 -> 11 (the drive cell left it at 10)
    # the summary and the focus line are written one after the other: wait for both (the suite's load once caught
    # the first alone)
    page.wait_for_function("el => el.innerText.startsWith('11 labels') && /focused: sample 0\\b/.test(el.innerText)",
                           arg=info.element_handle(), timeout=30_000)
    repaint = time.time() - t0
    assert info.inner_text() != before and repaint < 30
    detail = explorer.locator("img").last  # the image/neighbour panel under the map
    assert re.search(r"focused: sample 0\b", info.inner_text()), info.inner_text()  # the drive cell's click
    src = detail.get_attribute("src")
    mapc = figures.nth(0).locator("canvas").last
    box = mapc.bounding_box()
    mapc.click(position={"x": box["width"] * 0.5, "y": box["height"] * 0.55})  # mid-map, not sample 0
    page.wait_for_function("el => /focused: sample [1-9]/.test(el.innerText)", arg=info.element_handle(),
                           timeout=30_000)
    page.wait_for_function("([el, old]) => el.getAttribute('src') && el.getAttribute('src') !== old",
                           arg=[detail.element_handle(), src], timeout=30_000)
    assert detail.is_visible() and detail.evaluate("el => el.naturalWidth") > 100
    assert page.locator(".jupyter-matplotlib").count() == 2  # the map and the image grid, nothing more
    # hovering over the map shows the image under the cursor and says which sample it is
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    hover = explorer.locator(".uslkit-hover")
    for fx, fy in ((0.5, 0.55), (0.45, 0.5), (0.55, 0.45), (0.5, 0.4), (0.4, 0.6), (0.6, 0.6)):
        page.mouse.move(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy, steps=3)
        try:
            page.wait_for_function("el => el.innerText.includes('under the cursor: sample')",
                                   arg=hover.element_handle(), timeout=4_000)
            break
        except PlaywrightTimeout:
            continue
    else:
        pytest.fail("no tooltip after hovering at six places in the middle of the map")
    # drag a box on the map: the grid shows the samples inside it and offers the picks back
    back = explorer.locator("button:has-text('show the picks')")
    assert not back.is_visible()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5, steps=8)
    page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.7, steps=8)
    page.mouse.up()
    back.wait_for(state="visible", timeout=30_000)
    # a click on a tile of the grid focuses that sample
    focused = info.inner_text()
    grid = figures.nth(1).locator("canvas").last
    gbox = grid.bounding_box()
    grid.click(position={"x": gbox["width"] * 0.17, "y": gbox["height"] * 0.5})  # a tile of the first column
    page.wait_for_function("([el, old]) => el.innerText.includes('focused: sample') && el.innerText !== old",
                           arg=[info.element_handle(), focused], timeout=30_000)
    back.click()
    back.wait_for(state="hidden", timeout=30_000)
    explorer.locator(".widget-dropdown:has-text('dataset') select").select_option("digits")
    page.wait_for_function("el => el.innerText.includes('labels') && !el.innerText.includes('focused')",
                           arg=info.element_handle(), timeout=60_000)
    assert not detail.is_visible()  # the old pool's neighbours are not left on screen
    assert page.locator(".jp-OutputArea-output.jp-RenderedImage").count() == 0  # no stray static figure printed
    noise = [m for m in page.console if "model not found" in m or "capture_scroll" in m or m.startswith("error")]
    assert not noise, noise[:5]
