#!/usr/bin/env python
"""Generate README.md from nbs/index.ipynb without Quarto.

Markdown cells are copied verbatim (YAML front matter becomes `# title` + a `> subtitle` blockquote,
`#|` directive lines are dropped, Quarto callouts become blockquotes); code cells that are not
`#| hide` become ```python blocks; outputs are ignored, except that a code cell marked `#| readme: NAME` is
replaced by the text of GENERATED[NAME] (e.g. the validation table computed from tadsr/weights/validation.json).

    python scripts/make_readme.py            # write README.md
    python scripts/make_readme.py --check    # exit 1 if README.md is stale
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADER = "<!-- Generated from nbs/index.ipynb by scripts/make_readme.py: edit the notebook, not this file. -->"
_CALLOUT = re.compile(r"^:::+\s*\{\.callout-(\w+)[^}]*\}\s*$")


def _src(cell: dict) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s


def _directives(src: str) -> dict[str, str]:
    "The `#| key: value` / `#| flag` lines at the top of a cell."
    out = {}
    for line in src.splitlines():
        m = re.match(r"^\s*#\|\s*([\w-]+)\s*:?\s*(.*)$", line)
        if not m:
            break
        out[m.group(1)] = m.group(2).strip()
    return out


def _front_matter(text: str) -> tuple[dict[str, str], str]:
    "Split a leading `---` YAML block (simple `key: value` lines) from the rest."
    m = re.match(r"^\s*---\s*\n(.*?)\n---\s*(?:\n|$)", text, flags=re.S)
    if not m:
        return {}, text
    meta = {}
    for line in m.group(1).splitlines():
        k, sep, v = line.partition(":")
        if sep:
            meta[k.strip()] = v.strip().strip("'\"")
    return meta, text[m.end():]


def _title_block(meta: dict[str, str]) -> str:
    parts = []
    if meta.get("title"):
        parts.append(f"# {meta['title']}")
    sub = meta.get("subtitle") or meta.get("description")
    if sub:
        parts.append(f"> {sub}")
    return "\n\n".join(parts)


def _callouts(text: str) -> str:
    "Quarto `::: {.callout-note}` ... `:::` -> a `> **Note**` blockquote."
    out, kind = [], None
    for line in text.splitlines():
        m = _CALLOUT.match(line)
        if m and kind is None:
            kind = m.group(1).capitalize()
            out.append(f"> **{kind}**")
            out.append(">")
        elif kind is not None and re.match(r"^:::+\s*$", line):
            kind = None
        elif kind is not None:
            out.append(f"> {line}".rstrip())
        else:
            out.append(line)
    return "\n".join(out)


def _validation_summary() -> str:
    "The shipped models' validation table (tadsr.evaluate.validation_summary, from tadsr/weights/validation.json)."
    if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
    from tadsr.evaluate import validation_summary
    return validation_summary()


# `#| readme: NAME` on a code cell: the README gets NAME's text (the docs show the cell's output instead)
GENERATED = {"validation_summary": _validation_summary}


def render(nb: dict) -> str:
    "README text for a notebook dict (nbformat 4 JSON)."
    blocks = []
    for cell in nb.get("cells", []):
        src, kind = _src(cell), cell.get("cell_type")
        if kind == "raw":
            meta, rest = _front_matter(src)
            if meta:
                blocks.append(_title_block(meta))
            continue
        d = _directives(src)
        if kind == "code" and d.get("readme") in GENERATED:
            blocks.append(GENERATED[d["readme"]]().strip("\n"))
            continue
        if "hide" in d or d.get("include") == "false" or (kind == "code" and d.get("echo") == "false"):
            continue
        body = "\n".join(line for line in src.splitlines() if not re.match(r"^\s*#\|", line)).strip("\n")
        if kind == "markdown":
            meta, body = _front_matter(body)
            body = "\n\n".join(b for b in [_title_block(meta), _callouts(body).strip("\n")] if b)
            if body.strip():
                blocks.append(body)
        elif kind == "code" and body.strip():
            blocks.append(f"```python\n{body}\n```")
    return HEADER + "\n\n" + "\n\n".join(blocks).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if README is stale instead of writing it")
    ap.add_argument("--index", type=Path, default=ROOT / "nbs" / "index.ipynb")
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    a = ap.parse_args(argv)
    text = render(json.loads(a.index.read_text(encoding="utf-8")))
    old = a.readme.read_text(encoding="utf-8") if a.readme.exists() else None
    if a.check:
        if old != text:
            print(f"{a.readme} is stale: run `python scripts/make_readme.py` to regenerate it from {a.index}")
            return 1
        print(f"{a.readme} is up to date")
        return 0
    if old != text:
        a.readme.write_text(text, encoding="utf-8")
        print(f"wrote {a.readme}")
    else:
        print(f"{a.readme} already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
