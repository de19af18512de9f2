"Every tadsr module imports in a fresh interpreter (catches exported code that leans on notebook globals)."
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(p.stem for p in (ROOT / "tadsr").glob("*.py") if p.stem not in ("__init__", "_modidx"))


def _import(mod: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", f"import tadsr.{mod}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def results():
    "One fresh interpreter per module, two at a time (importing torch is the slow part)."
    with ThreadPoolExecutor(max_workers=2) as ex:
        return dict(zip(MODULES, ex.map(_import, MODULES)))


def test_modules_discovered():
    assert "core" in MODULES and "data" in MODULES, MODULES
    assert _import("no_such_module_for_tests").returncode != 0          # the check can fail


@pytest.mark.parametrize("mod", MODULES)
def test_fresh_import(results, mod):
    r = results[mod]
    assert r.returncode == 0, f"`import tadsr.{mod}` failed in a fresh interpreter:\n{r.stderr[-3000:]}"


# The packages `pip install tadsr` does not bring (the lessons / metrics extras), and matplotlib, which the upscale path
# has no use for: `tadsr upscale` and `from tadsr.inference import upscale` must not import any of them.
NOT_ON_UPSCALE_PATH = ("matplotlib", "scipy", "skimage", "sklearn", "ipywidgets", "lpips", "torchvision", "IPython")


def test_upscale_path_imports_no_extras():
    code = ("import sys, tadsr.inference; "
            f"print(' '.join(m for m in {NOT_ON_UPSCALE_PATH!r} if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    loaded = r.stdout.split()
    assert not loaded, (f"`import tadsr.inference` loads {loaded}: import them inside the function that needs them "
                        "(see tadsr/core.py show_images, tadsr/degradation.py sinc_kernel)")
