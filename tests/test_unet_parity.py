"ResShift Swin-UNet (`tadsr.unet`): parity with the official implementation, official layouts, checkpoint loading."
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tadsr.unet import (SwinUNet, UNetConfig, count_params, load_official_state_dict, resshift_window_mask)

torch.set_num_threads(2)
SHAPES = Path(__file__).resolve().parent / "fixtures" / "resshift" / "state_dict_shapes.json"


# ---------------------------------------------------------------- fixture unet_small_a (official outputs)
@pytest.fixture(scope="module")
def small_a(fixtures_dir):
    "The fixture model with the official weights loaded strictly, plus its io/aux tensors and JSON."
    meta = json.loads((fixtures_dir / "unet_small_a.json").read_text())
    model = SwinUNet(**meta["kwargs"]).eval()
    load_official_state_dict(model, load_file(fixtures_dir / "unet_small_a.safetensors"), strict=True)
    return (model, meta, load_file(fixtures_dir / "unet_small_a_io.safetensors"),
            load_file(fixtures_dir / "unet_small_a_aux.safetensors"))


def test_fixture_kwargs_equal_preset(small_a):
    model, meta, *_ = small_a
    assert UNetConfig.from_dict(meta["kwargs"]) == UNetConfig.fixture_small_a()
    assert count_params(model) == meta["num_parameters"] == 965_051
    assert model.size_multiple == 32


def test_fixture_state_dict_layout(small_a):
    model, meta, *_ = small_a
    sd = model.state_dict()
    want = meta["state_dict_order"]
    assert list(sd) == [k for k, *_ in want]                       # same keys, same (official) order
    for k, shape, dtype, _kind in want:
        assert tuple(sd[k].shape) == tuple(shape) and str(sd[k].dtype) == f"torch.{dtype}", k
    buffers = {n for n, _ in model.named_buffers()}
    assert buffers == set(meta["buffers_in_state_dict"])          # persistent buffers, nothing else


def test_fixture_output(small_a):
    model, _, io, _ = small_a
    with torch.no_grad(): out = model(io["x"], io["timesteps"], lq=io["lq"])
    err = (out - io["out"]).abs().max().item()
    print(f"unet_small_a out: max abs diff {err:.3e}")
    torch.testing.assert_close(out, io["out"], atol=1e-5, rtol=1e-5)


def test_fixture_intermediate_activations(small_a):
    model, _, io, aux = small_a
    acts = {}
    hooks = [model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: acts.__setitem__(n, o))
             for n in ("time_embed", "input_blocks.1", "middle_block")]
    with torch.no_grad(): model(io["x"], io["timesteps"], lq=io["lq"])
    for h in hooks: h.remove()
    for n, got in acts.items():
        torch.testing.assert_close(got, aux[f"act/{n}"], atol=5e-5, rtol=1e-5, msg=lambda m, n=n: f"{n}: {m}")


@pytest.mark.parametrize("side,nwin", [(32, 16), (16, 4)])
def test_masks_equal_official(small_a, fixtures_dir, side, nwin):
    model, _, _, aux = small_a
    blocked = aux[f"swin_mask_blocked/r{side}x{side}_ws8_shift4"]
    mask = resshift_window_mask(side, side, 8, 4)
    assert mask.shape == (nwin, 64, 64)
    assert torch.equal((mask == -100).to(torch.uint8), blocked) and torch.equal(mask == 0, blocked == 0)
    # the stored (load-compat) buffers equal the official ones, and the runtime cache holds the same mask
    official = load_file(fixtures_dir / "unet_small_a.safetensors")
    for name, buf in model.named_buffers():
        if name.endswith("attn_mask") and buf.shape[0] == nwin:
            assert torch.equal(buf, official[name])
            blk = model.get_submodule(name.rsplit(".", 1)[0])
            x = torch.zeros(1, 1, side, side)
            assert torch.equal(blk.runtime_mask(side, side, x), mask)


# ---------------------------------------------------------------- official configs: keys, shapes, dtypes, counts
@pytest.mark.parametrize("preset,key_prefix,n_params,n_keys", [
    ("official_realsr", "unet_realsr_x4", 118_593_583, 564),
    ("official_faceir", "unet_faceir", 118_931_604, 576)])
def test_official_layout(preset, key_prefix, n_params, n_keys):
    if not SHAPES.is_file(): pytest.skip(f"{SHAPES} not found (the official state-dict key names and shapes)")
    spec = json.loads(SHAPES.read_text())
    ref = next(v for k, v in spec.items() if k.startswith(key_prefix))
    with torch.device("meta"): model = getattr(UNetConfig, preset)().build()
    sd = model.state_dict()
    want = {k: (tuple(s), d) for k, s, d, _ in ref["state_dict"]}
    assert len(sd) == len(want) == n_keys
    assert set(sd) == set(want), (sorted(set(sd) - set(want))[:5], sorted(set(want) - set(sd))[:5])
    bad = [k for k, v in sd.items() if (tuple(v.shape), str(v.dtype).removeprefix("torch.")) != want[k]]
    assert not bad, bad[:5]
    assert count_params(model) == ref["num_parameters"] == n_params
    assert model.size_multiple == 64


def test_official_realsr_small_latent_forward_on_meta():
    "Non-square latent through the full official graph (shape propagation only, no memory)."
    with torch.device("meta"): model = UNetConfig.official_realsr().build()
    x = torch.zeros(2, 3, 128, 64, device="meta")
    out = model(x, torch.zeros(2, dtype=torch.long, device="meta"), torch.zeros(2, 3, 128, 64, device="meta"))
    assert out.shape == (2, 3, 128, 64)


# ---------------------------------------------------------------- load_official_state_dict
@pytest.fixture(scope="module")
def random_small():
    torch.manual_seed(0)
    model = UNetConfig.fixture_small_a().build()
    with torch.no_grad():
        for p in model.parameters(): p.normal_()
    return model


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_load_pth_with_module_prefix_and_wrapper(random_small, tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in random_small.state_dict().items()}}, path)
    fresh = UNetConfig.fixture_small_a().build()
    assert not _same(fresh, random_small)
    assert load_official_state_dict(fresh, path) is fresh
    assert _same(fresh, random_small)


def test_load_orig_mod_prefix(random_small):
    fresh = UNetConfig.fixture_small_a().build()
    load_official_state_dict(fresh, {"_orig_mod." + k: v for k, v in random_small.state_dict().items()})
    assert _same(fresh, random_small)
    fresh2 = UNetConfig.fixture_small_a().build()   # DDP around a compiled model
    load_official_state_dict(fresh2, {"module._orig_mod." + k: v for k, v in random_small.state_dict().items()})
    assert _same(fresh2, random_small)


def test_load_errors_name_the_keys(random_small):
    sd = dict(random_small.state_dict())
    dropped = sorted(k for k in sd if k.endswith("attn_mask"))
    for k in dropped: del sd[k]
    sd["ema_decay"] = torch.tensor(0.999)
    with pytest.raises(ValueError) as e:
        load_official_state_dict(UNetConfig.fixture_small_a().build(), sd)
    msg = str(e.value)
    assert "4 missing keys" in msg and dropped[0] in msg
    assert "1 unexpected keys" in msg and "ema_decay" in msg
    # strict=False: tolerated, and the other weights are copied
    fresh = load_official_state_dict(UNetConfig.fixture_small_a().build(), sd, strict=False)
    torch.testing.assert_close(fresh.out[2].weight, random_small.out[2].weight)


def test_load_shape_mismatch_is_named():
    other = UNetConfig.fixture_small_a().build().state_dict()
    other["out.2.weight"] = torch.zeros(48, 32, 3, 3)
    other["out.2.bias"] = torch.zeros(48)
    with pytest.raises(ValueError, match=r"2 shape mismatches: .*out\.2\.weight: checkpoint \(48, 32, 3, 3\) vs model \(3, 32, 3, 3\)"):
        load_official_state_dict(UNetConfig.fixture_small_a().build(), other, strict=False)


# ---------------------------------------------------------------- the CPU preset and input checks
def test_cpu_preset():
    cfg = UNetConfig.cpu()
    assert (cfg.in_channels, cfg.out_channels, cfg.image_size, cfg.lq_size, cfg.cond_lq) == (48, 48, 32, 32, True)
    model = cfg.build().eval()
    assert 3e6 <= count_params(model) <= 4.5e6
    assert model.input_blocks[0][0].in_channels == 51
    assert model.size_multiple == 32
    with torch.no_grad():
        for h, w in [(32, 32), (64, 32)]:
            out = model(torch.randn(2, 48, h, w), torch.tensor([0, 14]), torch.rand(2, 3, h, w) * 2 - 1)
            assert out.shape == (2, 48, h, w) and torch.isfinite(out).all()
    assert UNetConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_bad_sizes_and_inputs_raise():
    model = UNetConfig.cpu().build()
    t = torch.tensor([3])
    with pytest.raises(ValueError, match="multiple of 32"):
        model(torch.randn(1, 48, 48, 32), t, torch.randn(1, 3, 48, 32))
    with pytest.raises(ValueError, match="lq"):
        model(torch.randn(1, 48, 32, 32), t)
    with pytest.raises(ValueError, match=r"\(B, 48, H, W\)"):
        model(torch.randn(1, 3, 32, 32), t, torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="timesteps"):
        model(torch.randn(2, 48, 32, 32), torch.tensor([1, 2, 3]), torch.randn(2, 3, 32, 32))
    model.eval()
    x, lq = torch.randn(2, 48, 32, 32), torch.randn(2, 3, 32, 32)
    with torch.no_grad():                                   # a scalar step is broadcast over the batch
        torch.testing.assert_close(model(x, torch.tensor(5), lq), model(x, torch.tensor([5, 5]), lq))


@pytest.mark.parametrize("kw,needle", [({"dims": 3}, "dims"), ({"resblock_updown": True}, "resblock_updown"),
                                       ({"use_fp16": True}, "autocast"), ({"patch_norm": True}, "patch_norm"),
                                       ({"num_head_channels": -1}, "num_head_channels"), ({"foo": 1}, "unknown")])
def test_unsupported_kwargs_raise(kw, needle):
    with pytest.raises(ValueError, match=needle): SwinUNet(**kw)
