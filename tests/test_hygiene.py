"Repository hygiene: no hard-coded CUDA, no unsafe torch.load, small notebooks without widget state."
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PY_FILES = sorted((ROOT / "tadsr").rglob("*.py"))
NOTEBOOKS = sorted((ROOT / "nbs").rglob("*.ipynb"))
MAX_NB_BYTES = 500_000


def _code(text: str) -> str:
    "Drop `#` comments line by line (a simple heuristic: good enough for these checks)."
    return "\n".join(line.split("#")[0] for line in text.splitlines())


def _sources():
    "(label, code) for every library file and every notebook code cell."
    for p in PY_FILES:
        yield str(p.relative_to(ROOT)), _code(p.read_text(encoding="utf-8"))
    for p in NOTEBOOKS:
        nb = json.loads(p.read_text(encoding="utf-8"))
        for i, c in enumerate(nb["cells"]):
            if c["cell_type"] == "code":
                src = "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                yield f"{p.relative_to(ROOT)} cell {i}", _code(src)


def _calls(code: str, name: str):
    "The full text of each `name(...)` call, with balanced parentheses."
    for m in re.finditer(re.escape(name) + r"\s*\(", code):
        depth, j = 0, m.end() - 1
        while j < len(code):
            depth += {"(": 1, ")": -1}.get(code[j], 0)
            if depth == 0:
                break
            j += 1
        yield code[m.start():j + 1]


def test_files_found():
    assert any(p.name == "core.py" for p in PY_FILES) and NOTEBOOKS


def _has_cuda_call(code: str) -> bool:
    return re.search(r"\.cuda\s*\(", code) is not None


def test_cuda_detector():
    assert _has_cuda_call(_code("y = x.cuda()")) and not _has_cuda_call(_code("y = x.to(dev)  # not x.cuda()"))


def test_no_cuda_calls():
    bad = [label for label, code in _sources() if _has_cuda_call(code)]
    assert not bad, f"`.cuda(` found (take the device from the inputs or use tadsr.core.get_device): {bad}"


def test_torch_load_is_weights_only():
    bad = [f"{label}: {call}" for label, code in _sources() for call in _calls(code, "torch.load")
           if not re.search(r"weights_only\s*=\s*True", call)]
    assert not bad, f"torch.load without weights_only=True (never unpickle): {bad}"


def test_calls_helper_sees_multiline_calls():
    code = "torch.load(\n  f,\n  map_location=dict(a=1),\n  weights_only=True)\nx = torch.load(f)"
    calls = list(_calls(code, "torch.load"))
    assert len(calls) == 2 and "weights_only=True" in calls[0] and calls[1] == "torch.load(f)"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_small_without_widget_state(nb):
    size = nb.stat().st_size
    assert size < MAX_NB_BYTES, f"{nb.name} is {size / 1e3:.0f} KB (limit 500 KB): smaller figures, fewer outputs"
    meta = json.loads(nb.read_text(encoding="utf-8")).get("metadata", {})
    assert "widgets" not in meta, f"{nb.name} stores widget state: delete metadata.widgets"
