"""Worker for tests/test_distill.py: a few distillation iterations under torchrun (gloo, CPU).

Usage: python -m torch.distributed.run --nproc_per_node 2 tests/ddp_worker.py TEACHER OUT_DIR STEPS BATCH
Writes OUT_DIR/rank{r}.safetensors with the student's final (EMA) UNet weights of every process.
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_model import photo  # noqa: E402

from tadsr.core import save_safetensors  # noqa: E402
from tadsr.distill import DistillConfig, train_student  # noqa: E402
from tadsr.model import unet_weights  # noqa: E402
from tadsr.training import world_info  # noqa: E402


def main():
    teacher, out, steps, batch = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(1)
    dcfg = DistillConfig(steps=steps, batch_size=batch, crop=32, lr=1e-3, warmup=1, log_every=1, ckpt_every=steps,
                         val_every=0, max_side=None)
    student, hist = train_student(teacher, dcfg, [photo(96, 64), photo(80, 80, "coffee")], out / "run",
                                  progress=False, device="cpu")
    rank, world = world_info()
    save_safetensors(out / f"rank{rank}.safetensors", unet_weights(student), {"world": world, "loss": hist["loss"]})


if __name__ == "__main__":
    main()
