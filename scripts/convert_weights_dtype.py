"""Rewrite a tadsr weights file with its floating-point tensors in another dtype (e.g. float16 to halve a shipped
file); the config is kept and its `weights` field notes the storage dtype. Weights are cast back to float32 on load.

Usage: python scripts/convert_weights_dtype.py IN OUT [--dtype float16]
"""
import argparse

import torch

from tadsr.core import load_safetensors, save_safetensors


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src"); ap.add_argument("dst"); ap.add_argument("--dtype", default="float16")
    a = ap.parse_args()
    dtype = getattr(torch, a.dtype)
    tensors, cfg = load_safetensors(a.src)
    out = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    cfg = {**cfg, "weights": f"{str(cfg.get('weights', '')).split(' (')[0]} (stored as {a.dtype})"}
    save_safetensors(a.dst, out, cfg)
    print(f"{a.src} -> {a.dst} ({a.dtype})")


if __name__ == "__main__":
    main()
