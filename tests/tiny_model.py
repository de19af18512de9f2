"""A tiny random-weight `DiffusionSR` for fast CPU tests of the teacher / inference / CLI code.

Import from a test file as `from tiny_model import tiny_config, tiny_model, save_tiny_weights` (pytest's default
`prepend` import mode puts `tests/` on `sys.path`). Not a test module itself (no `test_` prefix).

The UNet: 32 channels, two levels, one Swin layer (window 4) at the second level, 48-channel space-to-depth latent,
so `lr_multiple` is 8 LR pixels and a forward on a 32x32 LR image takes a few milliseconds.
"""
from dataclasses import asdict
from pathlib import Path

import torch

from tadsr.diffusion import ScheduleConfig
from tadsr.model import DiffusionSR, ModelConfig, save_model, unet_weights
from tadsr.unet import UNetConfig


def tiny_unet(out_channels: int = 48) -> UNetConfig:
    "~0.2 M parameters; Swin at resolution 16 (the second level), window 4."
    return UNetConfig(image_size=32, in_channels=48, out_channels=out_channels, model_channels=32, num_res_blocks=1,
                      attention_resolutions=(16,), channel_mult=(1, 1), num_head_channels=32, swin_embed_dim=32,
                      window_size=4, mlp_ratio=1, lq_size=32)


def tiny_config(head: str = "precond") -> ModelConfig:
    "The tiny teacher: space-to-depth latent, realsr-v1 schedule (T=15), x4 (the adaptive head has one more output)."
    return ModelConfig(unet=tiny_unet(48 + (head == "adaptive")).to_dict(), schedule=asdict(ScheduleConfig.realsr_v1()), latent="s2d", head=head,
                         sigma_data=0.1)   # the tests were calibrated with 0.1 (shipped preset: 0.05)


def randomize_(model: DiffusionSR, seed: int = 0, std: float = 0.02) -> DiffusionSR:
    "Overwrite every UNet parameter with N(0, std^2) (so outputs are not trivially zero, as zero-init layers would give)."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.unet.parameters(): p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def tiny_model(seed: int = 0, std: float = 0.02, head: str = "precond") -> DiffusionSR:
    "A random-weight tiny `DiffusionSR` in eval mode."
    torch.manual_seed(seed)
    return randomize_(DiffusionSR(tiny_config(head)), seed, std).eval()


def save_tiny_weights(path, seed: int = 0, std: float = 0.02, default_steps=None, head: str = "precond") -> Path:
    "Write a tiny model as a weights file (`tadsr.model.save_model`, loadable by `load_model`)."
    model = tiny_model(seed, std, head)
    save_model(path, model.cfg, unet_weights(model), default_steps=default_steps, step=0, averaged="random")
    return Path(path)


def photo(w: int, h: int, name: str = "astronaut"):
    "A real photograph (scikit-image) resized to w x h, as an RGB PIL image."
    import skimage.data as sd
    from PIL import Image
    return Image.fromarray(getattr(sd, name)()[..., :3]).resize((w, h), Image.BICUBIC)


def files_in(d) -> list:
    "Every entry in folder `d` (sorted names), hidden ones (atomic_write temp files start with '.') included."
    d = Path(d)
    return sorted(p.name for p in d.iterdir()) if d.exists() else []
