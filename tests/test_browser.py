"""End to end in a real browser: JupyterLab on loopback, headless Chromium via Playwright.

Notebook 02 is run on a tiny model, a threshold slider is moved with the keyboard and the
counts table must change; notebook 04 is run on the same tiny model, *Generate* is pressed
and both answers must appear. The notebooks get smoke parameters through an injected cell
after their ``parameters`` cell (as papermill does).

Needs Debian's ``chromium`` at ``/usr/bin/chromium`` (or ``$LAPE_CHROMIUM``) and the
``playwright`` Python package; ``playwright install`` is never needed (and cannot download
here). Skipped with the reason when either is missing.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from lape_utils.job.config import SMOKE as JOB_SMOKE

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
CHROMIUM = os.environ.get("LAPE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SMOKE = {  # the notebooks' smoke settings (as in test_notebooks.py)
    "model_name": JOB_SMOKE["model"],
    "languages": list(JOB_SMOKE["languages"]),
    "tokens_per_language": JOB_SMOKE["tokens_per_language"],
    "smoke": True,
    "options": {k: list(v) if isinstance(v, tuple) else v for k, v in JOB_SMOKE.items()
                if k not in ("model", "languages", "tokens_per_language")},
}
# the steering notebook steers to a target the tiny run has neurons for
STEERING = {"options": SMOKE["options"] | {"steer_source": "en", "steer_targets": ["fr"]}}

SERVER_START_S = 90
RUN_ALL_MS = 240_000
UI_MS = 60_000


def _requirements() -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"no Chromium at {CHROMIUM} (apt-get install -y chromium, or set $LAPE_CHROMIUM)"
        )
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    for name in ("02_distribution", "04_steering"):
        if not (NOTEBOOKS / f"{name}.ipynb").exists():
            pytest.skip(f"notebooks/{name}.ipynb does not exist yet")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_parameters(src: Path, dst: Path, parameters: dict) -> Path:
    """Copy a notebook, with a cell setting ``parameters`` after its ``parameters`` cell."""
    nb = json.loads(src.read_text())
    cells = nb["cells"]
    tagged = [
        i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", [])
    ]
    assert len(tagged) == 1, f"{src.name} needs exactly one cell tagged 'parameters'"
    lines = [f"{key} = {value!r}\n" for key, value in parameters.items()]
    cells.insert(
        tagged[0] + 1,
        {
            "cell_type": "code",
            "execution_count": None,
            "id": "injected-parameters",
            "metadata": {"tags": ["injected-parameters"]},
            "outputs": [],
            "source": ["# parameters of the browser test\n", *lines],
        },
    )
    dst.write_text(json.dumps(nb, indent=1))
    return dst


_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


def _get(url: str, timeout: float = 2.0) -> int:
    """HTTP status of ``url``, 0 when nothing answers."""
    try:
        with _LOCAL.open(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on 127.0.0.1 with a token, serving a temp folder with the two notebooks."""
    _requirements()
    root = tmp_path_factory.mktemp("lab")
    home = tmp_path_factory.mktemp("jupyter-home")
    cache = root / "cache"
    params = SMOKE | {"cache_dir": str(cache)}
    with_parameters(NOTEBOOKS / "02_distribution.ipynb", root / "02_distribution.ipynb", params)
    with_parameters(
        NOTEBOOKS / "04_steering.ipynb", root / "04_steering.ipynb", params | STEERING
    )
    port, token = _free_port(), secrets.token_hex(16)
    env = os.environ | {
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "IPYTHONDIR": str(home / "ipython"),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    cmd = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        f"--LabApp.workspaces_dir={home / 'workspaces'}",
        f"--LabApp.user_settings_dir={home / 'settings'}",
        "--LabApp.extension_manager=readonly",
        *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
    ]
    log_path = home / "jupyterlab.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while _get(f"{base}/api/status?token={token}") != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield {"base": base, "token": token, "root": root, "log": log_path}
    finally:
        _stop_server(proc, base, token)


def _stop_server(proc: subprocess.Popen, base: str, token: str) -> None:
    """Ask the server to shut down (it stops its kernels), then make sure it is gone."""
    if proc.poll() is None:
        try:
            req = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST")
            _LOCAL.open(req, timeout=5).close()
        except OSError:
            pass
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(UI_MS)
    try:
        yield page
    finally:
        context.close()


# JupyterLab's own commands (window.jupyterapp, exposed by --LabApp.expose_app_in_browser):
# wait for the notebook and its kernel, run every cell, report the errors.
RUN_ALL = """
async () => {
  const app = window.jupyterapp;
  await app.started;
  await app.restored;
  let panel = app.shell.currentWidget;
  for (let i = 0; i < 600 && !(panel && panel.sessionContext); i++) {
    await new Promise(r => setTimeout(r, 100));
    panel = app.shell.currentWidget;
  }
  await panel.context.ready;
  await panel.sessionContext.ready;
  for (let i = 0; i < 600 && !panel.sessionContext.session?.kernel; i++) {
    await new Promise(r => setTimeout(r, 100));
  }
  const ok = await app.commands.execute('notebook:run-all-cells');
  const errors = [];
  for (const cell of panel.content.widgets) {
    if (cell.model.type !== 'code') continue;
    for (let i = 0; i < cell.model.outputs.length; i++) {
      const out = cell.model.outputs.get(i);
      if (out.type === 'error') {
        const raw = out.toJSON();
        errors.push(`${raw.ename}: ${raw.evalue}`);
      }
    }
  }
  return {ok, errors};
}
"""


def _shot(page, name: str) -> None:
    """Screenshot into ``$LAPE_BROWSER_ARTIFACTS`` when set (to look at what the test saw)."""
    folder = os.environ.get("LAPE_BROWSER_ARTIFACTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=False)


def open_and_run(page, lab, name: str) -> None:
    url = f"{lab['base']}/lab/tree/{name}.ipynb?token={lab['token']}&reset"
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_function("() => window.jupyterapp !== undefined", timeout=UI_MS)
    page.set_default_timeout(RUN_ALL_MS)
    result = page.evaluate(RUN_ALL)
    page.set_default_timeout(UI_MS)
    assert result["ok"] and not result["errors"], (name, result, lab["log"].read_text()[-2000:])


def test_threshold_explorer_in_jupyterlab(page, lab):
    open_and_run(page, lab, "02_distribution")
    panel = page.locator(".lape-explorer")
    panel.wait_for(state="visible")
    table = panel.locator(".lape-counts")
    table.wait_for(state="visible")
    panel.scroll_into_view_if_needed()
    _shot(page, "explorer-before")
    before = table.inner_text()
    readout = panel.locator(".lape-top-rate .widget-readout")
    start = readout.inner_text()
    handle = panel.locator(".lape-top-rate .noUi-handle")
    handle.focus()
    page.keyboard.press("End")  # the largest top_rate: more neurons in the tiny model too
    page.wait_for_function(
        "([el, before]) => el.innerText !== before",
        arg=[table.element_handle(), before],
        timeout=UI_MS,
    )
    assert readout.inner_text() != start
    after = table.inner_text()
    assert after != before and "Δ" in after
    _shot(page, "explorer-after")
    message = panel.locator(".lape-explorer-message").inner_text()
    assert "distinct neurons" in message and "Traceback" not in message
    # the static copy under the panel is a plain image output
    assert page.locator(".jp-OutputArea-output img").count() >= 1


def test_steering_panel_in_jupyterlab(page, lab):
    open_and_run(page, lab, "04_steering")
    panel = page.locator(".lape-steering")
    panel.wait_for(state="visible")
    assert panel.locator(".lape-prompt textarea").input_value().strip()
    message = panel.locator(".lape-steering-message")
    # the notebook already generated once: count the message's changes from now on, and
    # wait until this click's run has changed it and finished
    page.evaluate(
        "(el) => { window.__lapeChanges = 0; new MutationObserver(() => window.__lapeChanges++)"
        ".observe(el, {subtree: true, childList: true, characterData: true}); }",
        message.element_handle(),
    )
    panel.locator(".lape-generate").click()
    page.wait_for_function(
        "(el) => window.__lapeChanges > 0 && el.innerText.includes('done in')"
        " && !el.innerText.includes('generating')",
        arg=message.element_handle(),
        timeout=UI_MS,
    )
    steered = panel.locator(".lape-steered .lape-detected")
    unsteered = panel.locator(".lape-unsteered .lape-detected")
    steered.wait_for(state="visible", timeout=UI_MS)
    unsteered.wait_for(state="visible", timeout=UI_MS)
    panel.scroll_into_view_if_needed()
    _shot(page, "steering-answers")
    assert "detected:" in steered.inner_text() and "detected:" in unsteered.inner_text()
    assert "steered to" in panel.locator(".lape-steered").inner_text()
    assert "done in" in message.inner_text(), message.inner_text()
