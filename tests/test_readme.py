"README.md is generated from nbs/index.ipynb by scripts/make_readme.py and must be current."
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "make_readme.py"


def _script():
    spec = importlib.util.spec_from_file_location("make_readme", SCRIPT)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_readme_is_current():
    r = _run("--check")
    assert r.returncode == 0, r.stdout + r.stderr


def test_check_detects_stale_readme(tmp_path):
    stale = tmp_path / "README.md"
    stale.write_text((ROOT / "README.md").read_text() + "\nedited by hand\n")
    r = _run("--check", "--readme", str(stale))
    assert r.returncode == 1
    assert len(r.stdout.strip().splitlines()) == 1 and "stale" in r.stdout
    assert _run("--readme", str(stale)).returncode == 0               # regenerate ...
    assert _run("--check", "--readme", str(stale)).returncode == 0    # ... and now it is current


def test_quick_start_commands_come_first():
    text = (ROOT / "README.md").read_text()
    cmds = [line.split("#")[0].strip() for line in text.splitlines() if line.startswith("make ")]
    assert cmds[:2] == ["make demo", "make test"], cmds


def test_render_rules():
    nb = {"cells": [
        {"cell_type": "raw", "source": "---\ntitle: My title\nsubtitle: 'Sub text'\n---\n"},
        {"cell_type": "markdown", "source": ["Intro *text*\n", "\n", "::: {.callout-note}\n", "Beware\n", ":::\n"]},
        {"cell_type": "code", "source": "#| hide\nimport secret", "outputs": []},
        {"cell_type": "code", "source": "#| eval: false\nprint('hi')",
         "outputs": [{"output_type": "stream", "name": "stdout", "text": "OUTPUT"}]},
        {"cell_type": "markdown", "source": "#| hide\nhidden markdown"},
    ]}
    out = _script().render(nb)
    assert "# My title\n\n> Sub text" in out
    assert "Intro *text*" in out and "> **Note**" in out and "> Beware" in out and ":::" not in out
    assert "```python\nprint('hi')\n```" in out
    assert "secret" not in out and "OUTPUT" not in out and "#|" not in out and "hidden markdown" not in out


def test_render_front_matter_in_markdown_cell():
    nb = {"cells": [{"cell_type": "markdown", "source": "---\ntitle: T\ndescription: D\n---\nBody"}]}
    out = _script().render(nb)
    assert "# T\n\n> D\n\nBody" in out and "---" not in out


def test_index_notebook_is_parseable():
    nb = json.loads((ROOT / "nbs" / "index.ipynb").read_text())
    assert nb["cells"][0]["cell_type"] == "markdown"
