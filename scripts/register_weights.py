"""Add (or update) a shipped weights file in tadsr/weights/registry.json with its sha256.

Usage: python scripts/register_weights.py NAME FILE "one-line description"
FILE must already be inside tadsr/weights/ (it ships with the package).
"""
import json, sys
from pathlib import Path

from tadsr.core import WEIGHTS_DIR, sha256_file, load_safetensors


def main(argv):
    if len(argv) != 3:
        print(__doc__.strip(), file=sys.stderr); return 2
    name, file, desc = argv
    path = Path(file).resolve()
    if path.parent != WEIGHTS_DIR.resolve():
        print(f"error: {file} is not in {WEIGHTS_DIR}", file=sys.stderr); return 1
    load_safetensors(path)                                   # fails loudly if the file is not a tadsr weights file
    reg_path = WEIGHTS_DIR / "registry.json"
    reg = json.loads(reg_path.read_text()) if reg_path.exists() else {}
    reg[name] = {"file": path.name, "sha256": sha256_file(path), "description": desc}
    reg_path.write_text(json.dumps(reg, indent=2, sort_keys=True) + "\n")
    print(f"registered {name}: {path.name} sha256 {reg[name]['sha256'][:16]}...")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
