"Window attention (`tadsr.unet`): the fused SDPA path equals the explicit softmax(q k^T/sqrt(d) + bias + mask) v."
import pytest
import torch
from safetensors.torch import load_file

from tadsr.unet import (SwinBlock, UNetConfig, WindowAttention, attention_explicit, load_official_state_dict,
                        resshift_window_mask, window_attention)

torch.set_num_threads(2)


@pytest.fixture
def explicit_attention():
    "Run the body with every WindowAttention on the explicit formula; restore the class default afterwards."
    WindowAttention.fused = False
    yield
    WindowAttention.fused = True


def _natural_layout_reference(q, k, v, bias, mask, B):
    "The explicit formula in the layout of the official code: one mask per window, repeated for every image."
    full = bias[None] + (mask.repeat(B, 1, 1)[:, None] if mask is not None else 0)   # (B*nW or 1, heads, N, N)
    return attention_explicit(q, k, v, full)


@pytest.mark.parametrize("shift", [0, 4])
@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_window_attention_official_sizes(shift, dtype, atol):
    "6 heads of 32 channels, 8x8 windows over a 64x64 map (64 windows), 2 images, with and without ResShift's mask."
    g = torch.Generator().manual_seed(shift)
    B, heads, w, side = 2, 6, 8, 64
    nW, N = (side // w) ** 2, w * w
    q, k, v = torch.randn(3, B * nW, heads, N, 32, generator=g, dtype=dtype)
    bias = 2 * torch.randn(heads, N, N, generator=g, dtype=dtype)
    mask = resshift_window_mask(side, side, w, shift).to(dtype) if shift else None
    fused = window_attention(q, k, v, bias, mask)
    ref = _natural_layout_reference(q, k, v, bias, mask, B)
    err = (fused - ref).abs().max().item()
    print(f"{dtype} shift {shift}: max |fused - explicit| = {err:.1e}")
    assert err < atol
    if dtype == torch.float64: assert err < 1e-6
    torch.testing.assert_close(window_attention(q, k, v, bias, mask, fused=False), ref, atol=atol, rtol=0)


def test_masked_keys_are_ignored():
    "A -100 entry removes that key: every query of a fully split window sees only its own group."
    q, k, v = torch.randn(3, 1, 1, 4, 8, dtype=torch.float64)
    mask = torch.tensor([[0, 0, -100, -100]] * 2 + [[-100, -100, 0, 0]] * 2, dtype=torch.float64)
    out = window_attention(q, k, v, torch.zeros(1, 4, 4, dtype=torch.float64), mask[None])
    torch.testing.assert_close(out[..., :2, :], attention_explicit(q[..., :2, :], k[..., :2, :], v[..., :2, :]),
                               atol=1e-12, rtol=0)


def test_window_attention_module_values_and_gradients_float64():
    "The module (official size, shifted) in float64: outputs and every gradient agree between the two paths."
    torch.manual_seed(0)
    wa = WindowAttention(192, 8, 6).double()
    with torch.no_grad(): wa.relative_position_bias_table.normal_()
    x = torch.randn(2 * 64, 64, 192, dtype=torch.float64, requires_grad=True)
    mask = resshift_window_mask(64, 64, 8, 4).double()
    weight = torch.linspace(-1, 1, x.numel(), dtype=torch.float64).view_as(x)
    res = {}
    for fused in (True, False):
        wa.fused = fused
        wa.zero_grad(); x.grad = None
        y = wa(x, mask); (y * weight).sum().backward()
        res[fused] = [y.detach()] + [p.grad.clone() for p in wa.parameters()] + [x.grad.clone()]
    for a, b in zip(res[True], res[False]):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)
    assert (res[True][0] - res[False][0]).abs().max() < 1e-6


def test_official_size_swin_block(explicit_attention):
    "The official-size shifted Swin block (GroupNorm runs in float32, so the block does too)."
    torch.manual_seed(0)
    blk = SwinBlock(192, 6, 8, 4, 4, ds=64).eval()
    with torch.no_grad(): blk.attn.relative_position_bias_table.normal_()
    x = torch.randn(2, 192, 64, 64)
    with torch.no_grad():
        explicit = blk(x)
        WindowAttention.fused = True
        fused = blk(x)
    err = (fused - explicit).abs().max().item()
    print(f"official-size shifted SwinBlock: max |fused - explicit| = {err:.1e} (output max {explicit.abs().max():.1f})")
    assert err < 1e-5


def test_fixture_model_both_paths(fixtures_dir):
    "The official fixture weights: both paths reproduce the recorded official output, and agree with each other."
    io = load_file(fixtures_dir / "unet_small_a_io.safetensors")
    model = load_official_state_dict(UNetConfig.fixture_small_a().build().eval(),
                                     load_file(fixtures_dir / "unet_small_a.safetensors"))
    keys = list(model.state_dict())
    out = {}
    with torch.no_grad():
        for fused in (True, False):
            WindowAttention.fused = fused
            out[fused] = model(io["x"], io["timesteps"], lq=io["lq"])
    WindowAttention.fused = True
    assert list(model.state_dict()) == keys                   # the switch touches no parameter or buffer
    err = (out[True] - out[False]).abs().max().item()
    print(f"fixture model: max |fused - explicit| = {err:.1e}")
    assert err < 1e-5
    for o in out.values(): torch.testing.assert_close(o, io["out"], atol=1e-5, rtol=1e-5)


def test_bf16_autocast_on_cpu():
    "Under bf16 autocast the fused path gets a bf16 mask (SDPA wants the mask in the query dtype) and stays close."
    torch.manual_seed(0)
    blk = SwinBlock(64, 2, 8, 4, 2, ds=16).eval()
    x = torch.randn(1, 64, 16, 16)
    with torch.no_grad():
        ref = blk(x)
        with torch.autocast("cpu", dtype=torch.bfloat16): y = blk(x)
    assert torch.isfinite(y).all() and (y.float() - ref).abs().max() < 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (SDPA picks a fused GPU kernel there)")
def test_cuda_fused_equals_explicit():
    torch.manual_seed(0)
    blk = SwinBlock(192, 6, 8, 4, 4, ds=64).to("cuda").eval()
    x = torch.randn(2, 192, 64, 64, device="cuda")
    with torch.no_grad():
        fused = blk(x)
        WindowAttention.fused = False
        try: explicit = blk(x)
        finally: WindowAttention.fused = True
    torch.testing.assert_close(fused, explicit, atol=1e-4, rtol=1e-4)
