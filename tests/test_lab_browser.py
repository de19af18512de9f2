"""Lessons in a real JupyterLab, driven in headless Chromium (selenium + Debian's chromium-driver), offline.

- Lesson 08: Run > Run All Cells through the menu bar, wait until every code cell has run without an error output,
  then find the score-gap explorer (the widget box holding a slider labelled `t` and an image): move the `t` slider
  with the keyboard and check that the image's pixels change (compared through a canvas in the page), and that the
  whole explorer (sliders, image, numbers) fits in the notebook's visible area of a 1280x900 window.
- Lesson 04: every equation is typeset by MathJax (one rendered formula per `$...$` / `$$...$$` in the markdown, no
  MathJax error, no TeX left in the rendered text).

The server serves throwaway copies of the two notebooks (the repository's files are never opened by the browser) with
throwaway settings, workspace, runtime and data folders; news and update checks are off. Screenshots go to
outputs/lab_*.png. The tests skip only when chromium / chromedriver are missing (the Makefile's `browser` target
installs them with apt-get)."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "outputs"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WINDOW = (1280, 900)
# The kernel runs at the learner's tier whatever the test run's tier: lesson 08 displays its explorer only outside
# QUICK (under nbdev_test and the docs build it is built and tested, but not displayed).
LAB_TIER = "default"
RUN_ALL_TIMEOUT = 900                   # s; lesson 08 takes about 70 s at the default tier on 2 cores
LAB_SETTINGS = {                        # plugin id -> settings (JupyterLab reads JSON5; plain JSON is fine)
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},   # every cell in the DOM, not only visible ones
}


def _browser_or_skip():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).is_file()]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed and could not be installed (the Makefile's `browser` target "
                    "runs `apt-get install -y chromium chromium-driver`; it needs root and the Debian mirror)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str, timeout: float = 5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    "A JupyterLab server on 127.0.0.1 serving copies of lessons 04 and 08; yields (base_url, token, api(path))."
    _browser_or_skip()
    tmp = tmp_path_factory.mktemp("lab")
    nbs = tmp / "nbs"; nbs.mkdir()
    for stem in ("04_diffusion", "08_score_gaps"): shutil.copy(ROOT / "nbs" / f"{stem}.ipynb", nbs)
    for plugin, values in LAB_SETTINGS.items():
        f = tmp / "settings" / f"{plugin}.jupyterlab-settings"
        f.parent.mkdir(parents=True, exist_ok=True); f.write_text(json.dumps(values))
    port, token = _free_port(), os.urandom(16).hex()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "TADSR_TIER": LAB_TIER, "OMP_WAIT_POLICY": "PASSIVE",
           "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"), "JUPYTER_DATA_DIR": str(tmp / "data"),
           "JUPYTER_CONFIG_DIR": str(tmp / "config"), "JUPYTER_PLATFORM_DIRS": "1"}
    log = open(tmp / "server.log", "w")
    cmd = [sys.executable, "-m", "jupyterlab", str(nbs), "--no-browser", "--allow-root", "--ip=127.0.0.1",
           f"--port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--LabApp.user_settings_dir={tmp / 'settings'}", f"--LabApp.workspaces_dir={tmp / 'workspaces'}"]
    proc = subprocess.Popen(cmd, cwd=nbs, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    api = lambda path: _get_json(f"{base}/api/{path}?token={token}")
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter-lab exited with {proc.returncode}:\n{(tmp / 'server.log').read_text()[-3000:]}")
            try:
                api("status"); break
            except OSError:
                if time.monotonic() > deadline: pytest.fail("jupyter-lab did not answer /api/status within 120 s")
                time.sleep(0.5)
        yield base, token, api
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)                  # the server and the kernels it started
            try: proc.wait(30)
            except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL); proc.wait(10)
        log.close()


@pytest.fixture
def driver():
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              f"--window-size={WINDOW[0]},{WINDOW[1] + 200}"):
        opts.add_argument(a)
    prof = tempfile.mkdtemp(prefix="lab-chromium-")
    opts.add_argument(f"--user-data-dir={prof}")
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    d.set_script_timeout(60)
    # --window-size counts the browser's own frame: pin the page's viewport itself to WINDOW
    d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                      {"width": WINDOW[0], "height": WINDOW[1], "deviceScaleFactor": 1, "mobile": False})
    try: yield d
    finally:
        d.quit(); shutil.rmtree(prof, ignore_errors=True)


def _wait(fn, timeout: float, what: str, every: float = 0.5):
    "Poll `fn` until it returns something truthy; fail with `what` after `timeout` seconds."
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v: return v
        if time.monotonic() > deadline: pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def _open(driver, lab, nb: str):
    "Open a notebook in JupyterLab and wait until its cells are in the page and its kernel is idle."
    base, token, api = lab
    workspace = re.sub(r"\W", "", Path(nb).stem)                 # one per notebook: nothing restored from another test
    driver.get(f"{base}/lab/workspaces/{workspace}/tree/{nb}?reset&token={token}")
    _wait(lambda: driver.execute_script(
        "return document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell').length"), 120,
        f"the cells of {nb}")
    _wait(lambda: (ks := api("kernels")) and all(k["execution_state"] == "idle" for k in ks), 120, "an idle kernel")


def _shot(driver, name: str):
    OUT.mkdir(exist_ok=True); driver.save_screenshot(str(OUT / name))


# ---------------------------------------------------------------------------------------------------------------
# Lesson 04: equations

def _math_counts(nb: Path) -> tuple[int, int]:
    "(display, inline) formulas in the notebook's markdown cells, code spans and fenced code left out."
    display = inline = 0
    for c in json.loads(nb.read_text(encoding="utf-8"))["cells"]:
        if c["cell_type"] != "markdown": continue
        s = re.sub(r"```.*?```", "", "".join(c["source"]), flags=re.S)
        s = re.sub(r"`[^`\n]*`", "", s)
        s, n = re.subn(r"\$\$.+?\$\$", "", s, flags=re.S); display += n
        inline += len(re.findall(r"(?<![\\$])\$(?!\s)[^$\n]+?(?<![\s\\])\$", s))
    return display, inline


MATH_PROBE = r"""
const md = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-MarkdownOutput')];
const leftovers = [];
for (const el of md) {
  const c = el.cloneNode(true);
  c.querySelectorAll('mjx-container, code, pre, script, style').forEach(n => n.remove());
  const t = c.textContent;
  const m = t.match(/\$\$|\\(frac|begin|mathbf|mathcal|sqrt|left|right|alpha|eta|kappa|sigma|hat|tilde)\b|\$[^$\s][^$]*\$/);
  if (m) leftovers.push(t.slice(Math.max(0, m.index - 40), m.index + 60));
}
const all = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-MarkdownOutput mjx-container')];
return {markdown: md.length, display: all.filter(e => e.getAttribute('display') === 'true').length,
        inline: all.filter(e => e.getAttribute('display') !== 'true').length,
        errors: document.querySelectorAll('mjx-merror, .MathJax_Error').length, leftovers: leftovers};
"""


def test_lesson04_equations_typeset(lab, driver):
    want_display, want_inline = _math_counts(ROOT / "nbs" / "04_diffusion.ipynb")
    assert want_display > 0 and want_inline > 0                   # the check has equations to look at
    _open(driver, lab, "04_diffusion.ipynb")
    # MathJax typesets cell by cell: wait for every formula, or until the count has not moved for 20 s (2 min at most)
    deadline, last, since = time.monotonic() + 120, -1, time.monotonic()
    while True:
        got = driver.execute_script(MATH_PROBE)
        n, now = got["display"] + got["inline"], time.monotonic()
        if n != last: last, since = n, now
        if n >= want_display + want_inline or now - since > 20 or now > deadline: break
        time.sleep(1)
    _shot(driver, "lab_04_equations.png")
    print(f"lesson 04: {got['markdown']} markdown cells, {got['display']} display + {got['inline']} inline formulas "
          f"typeset (source: {want_display} + {want_inline})")
    assert got["errors"] == 0, f"{got['errors']} MathJax errors in lesson 04"
    assert not got["leftovers"], f"TeX left untypeset in lesson 04: {got['leftovers'][:5]}"
    assert (got["display"], got["inline"]) == (want_display, want_inline)


# ---------------------------------------------------------------------------------------------------------------
# Lesson 08: Run All, then the explorer

def _click_menu(driver, menu: str, item: str):
    from selenium.webdriver.common.by import By
    bar = [e for e in driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item") if e.text.strip() == menu]
    assert bar, f"no '{menu}' menu in JupyterLab's menu bar"
    bar[0].click()
    entry = _wait(lambda: [e for e in driver.find_elements(By.CSS_SELECTOR, ".lm-Menu-item")
                           if e.text.strip().startswith(item) and e.is_displayed()], 10, f"the '{item}' menu entry")
    entry[0].click()


PROMPTS = """
const cells = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell')];
return {code: cells.length,
        done: cells.filter(c => /^\\[\\d+\\]:$/.test((c.querySelector('.jp-InputPrompt') || {}).textContent || '')).length,
        running: cells.filter(c => ((c.querySelector('.jp-InputPrompt') || {}).textContent || '').includes('*')).length,
        errors: [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) '
                 + '[data-mime-type="application/vnd.jupyter.error"]')].map(e => e.textContent.slice(0, 300))};
"""

FIND_EXPLORER = """
// the outermost widget box in an output that holds an <img> and a slider labelled t
const boxes = [...document.querySelectorAll('.jp-OutputArea-output .widget-vbox')].filter(b =>
  b.querySelector('img') && [...b.querySelectorAll('.widget-slider, .widget-hslider')].some(s =>
    /^t\\b/.test(((s.querySelector('.widget-label') || {}).textContent || '').trim())));
const outer = boxes.filter(b => !boxes.some(o => o !== b && o.contains(b)));
if (!outer.length) return null;
const box = outer[outer.length - 1];
document.querySelectorAll('[data-tadsr-explorer]').forEach(e => e.removeAttribute('data-tadsr-explorer'));
box.setAttribute('data-tadsr-explorer', '1');
return outer.length;
"""

PIXELS = """
// pixels of the explorer's image, through a canvas: [width, height, checksum, sample of 4096 values]
const img = document.querySelector('[data-tadsr-explorer] img');
if (!img || !img.complete || !img.naturalWidth) return null;
const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
const g = c.getContext('2d'); g.drawImage(img, 0, 0);
const d = g.getImageData(0, 0, c.width, c.height).data;
let h = 0; for (let i = 0; i < d.length; i++) h = (h * 31 + d[i]) >>> 0;
const step = Math.max(1, Math.floor(d.length / 4096)), sample = [];
for (let i = 0; i < d.length; i += step) sample.push(d[i]);
return [c.width, c.height, h, sample, img.src];
"""

GEOMETRY = """
// where the explorer and its parts sit, against the window and the notebook's scrolling area
const box = document.querySelector('[data-tadsr-explorer]');
box.scrollIntoView({block: 'start'});
const r = e => { const b = e.getBoundingClientRect(); return [Math.round(b.left), Math.round(b.top),
                                                            Math.round(b.width), Math.round(b.height)]; };
let sc = box.parentElement;
while (sc && !(sc.scrollHeight > sc.clientHeight + 1 && /(auto|scroll)/.test(getComputedStyle(sc).overflowY)))
  sc = sc.parentElement;
const text = [...box.querySelectorAll('.widget-html, .widget-htmlmath, .widget-label, .widget-readout')]
  .map(e => e.textContent.trim()).filter(t => /\\d/.test(t));
return {window: [innerWidth, innerHeight], area: sc ? r(sc) : [0, 0, innerWidth, innerHeight], box: r(box),
        img: r(box.querySelector('img')), natural: [box.querySelector('img').naturalWidth,
                                                   box.querySelector('img').naturalHeight],
        sliders: [...box.querySelectorAll('.widget-slider, .widget-hslider')].map(r),
        numbers: text};
"""


def test_lesson08_explorer(lab, driver):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    base, token, api = lab
    _open(driver, lab, "08_score_gaps.ipynb")
    driver.find_element(By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").click()
    t0 = time.monotonic()
    _click_menu(driver, "Run", "Run All Cells")

    def finished():
        p = driver.execute_script(PROMPTS)
        if p["errors"]: pytest.fail(f"lesson 08 raised in JupyterLab: {p['errors'][0]}")
        return p["code"] and p["done"] == p["code"] and not p["running"] and \
            all(k["execution_state"] == "idle" for k in api("kernels")) and p
    p = _wait(finished, RUN_ALL_TIMEOUT, "Run All Cells to finish lesson 08", every=2)
    print(f"lesson 08: Run All Cells ran {p['code']} code cells in {time.monotonic() - t0:.0f} s")

    n = _wait(lambda: driver.execute_script(FIND_EXPLORER), 60, "the explorer widget (an image and a slider labelled t)")
    before = _wait(lambda: driver.execute_script(PIXELS), 60, "the explorer's image to load")
    geo = driver.execute_script(GEOMETRY)
    _shot(driver, "lab_08_explorer.png")

    # move t: focus the slider's handle and press the arrow keys (the slider moves one position per key)
    slider = [s for s in driver.find_elements(By.CSS_SELECTOR, "[data-tadsr-explorer] .widget-slider, "
                                                                 "[data-tadsr-explorer] .widget-hslider")
              if re.match(r"t\b", s.find_element(By.CSS_SELECTOR, ".widget-label").text.strip())][0]
    handle = slider.find_element(By.CSS_SELECTOR, ".noUi-handle")
    readout = lambda: slider.find_element(By.CSS_SELECTOR, ".widget-readout").text.strip()
    t_before = readout()
    driver.execute_script("arguments[0].focus()", handle)
    for key in (Keys.ARROW_RIGHT,) * 3: handle.send_keys(key)
    _wait(lambda: readout() != t_before, 20, f"the t slider to move from {t_before!r}")
    after = _wait(lambda: (q := driver.execute_script(PIXELS)) and q[4] != before[4] and q, 120,
                  f"a new image after moving t from {t_before!r} to {readout()!r}")
    changed = sum(a != b for a, b in zip(before[3], after[3]))
    _shot(driver, "lab_08_explorer_moved.png")

    ww, wh = geo["window"]; ax, ay, aw, ah = geo["area"]; bx, by, bw, bh = geo["box"]
    print(f"lesson 08 explorer ({n} found): t {t_before} -> {readout()}, {changed}/{len(before[3])} sampled pixel "
          f"values changed; image {before[0]}x{before[1]} px shown at {geo['img'][2]}x{geo['img'][3]}; explorer "
          f"{bw}x{bh} at ({bx},{by}) in a {ww}x{wh} window whose notebook area is {aw}x{ah} at ({ax},{ay}); "
          f"numbers: {geo['numbers'][:3]}")
    assert before[:2] == after[:2] and before[2] != after[2] and changed > 0, "moving t did not change the image"
    assert geo["numbers"], "the explorer shows no numbers"
    assert (ww, wh) == WINDOW, f"the window is {ww}x{wh}, not {WINDOW[0]}x{WINDOW[1]}"
    assert bw <= aw and bh <= ah, (
        f"the explorer ({bw}x{bh} px; its image {geo['img'][2]}x{geo['img'][3]} px for a {before[0]}x{before[1]} "
        f"picture) does not fit the notebook's visible area ({aw}x{ah} px) of a {ww}x{wh} window")
