"Latent spaces (lesson 06): parity of `VQAutoencoder` with the official `VQModelTorch`, official key sets, s2d/identity."
import importlib
import importlib.util
import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from tadsr.autoencoder import Identity, LatentSpace, SpaceToDepth, VQAutoencoder, VQConfig

SPEC = Path(__file__).resolve().parent / "fixtures" / "resshift" / "state_dict_shapes.json"
ATOL = RTOL = 1e-5   # fixtures README: vq_small_io float tensors


def _spec_entry(prefix: str) -> dict:
    if not SPEC.is_file(): pytest.skip(f"state-dict spec not found at {SPEC}")
    d = json.loads(SPEC.read_text())
    return next(v for k, v in d.items() if k.startswith(prefix))


def _sd_table(model) -> list:
    "[key, shape, dtype, kind] in state_dict order, as in the spec JSON."
    params = {n for n, _ in model.named_parameters()}
    return [[k, list(v.shape), str(v.dtype).removeprefix("torch."), "param" if k in params else "buffer"]
            for k, v in model.state_dict().items()]


@pytest.fixture(scope="module")
def vq_small(fixtures_dir):
    "The fixture model with the official weights, loaded strictly."
    m = VQConfig.fixture_small().build().eval()
    m.load_state_dict(load_file(fixtures_dir / "vq_small.safetensors"), strict=True)
    return m


@pytest.fixture(scope="module")
def vq_io(fixtures_dir):
    return load_file(fixtures_dir / "vq_small_io.safetensors")


# ---------------------------------------------------------------- official fixture parity

def test_fixture_config_matches_json(fixtures_dir):
    meta = json.loads((fixtures_dir / "vq_small.json").read_text())
    cfg = VQConfig.fixture_small()
    assert cfg.ddconfig == meta["kwargs"]["ddconfig"]
    assert (cfg.embed_dim, cfg.n_embed) == (meta["kwargs"]["embed_dim"], meta["kwargs"]["n_embed"])
    m = VQAutoencoder(**meta["kwargs"])           # the official kwargs are accepted as they are
    assert [k for k, *_ in meta["state_dict_order"]] == list(m.state_dict())
    assert [list(s) for _, s, *_ in meta["state_dict_order"]] == [list(v.shape) for v in m.state_dict().values()]
    assert sum(p.numel() for p in m.parameters()) == meta["num_parameters"] == 951_230


def test_vq_small_encode(vq_small, vq_io):
    with torch.no_grad(): z = vq_small.encode(vq_io["image"])
    torch.testing.assert_close(z, vq_io["encoded"], atol=ATOL, rtol=RTOL)


def test_vq_small_quantize_and_indices(vq_small, vq_io):
    with torch.no_grad(): zq, idx = vq_small.quantize(vq_io["encoded"])
    assert idx.dtype == torch.int64 and idx.shape == (1, 8, 8)
    assert torch.equal(idx, vq_io["code_indices"])                      # exact (margin 7.6e-3 in the fixture)
    torch.testing.assert_close(zq, vq_io["quantized"], atol=ATOL, rtol=RTOL)
    # our own encoder output gives the same codes too
    with torch.no_grad(): _, idx2 = vq_small.quantize(vq_small.encode(vq_io["image"]))
    assert torch.equal(idx2, vq_io["code_indices"])


def test_vq_small_decode(vq_small, vq_io):
    with torch.no_grad():
        dec = vq_small.decode(vq_io["encoded"])
        dec_nq = vq_small.decode(vq_io["encoded"], force_not_quantize=True)
        full = vq_small.decode(vq_small.encode(vq_io["image"]))
    torch.testing.assert_close(dec, vq_io["decoded"], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(dec_nq, vq_io["decoded_no_quantize"], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(full, vq_io["decoded"], atol=ATOL, rtol=RTOL)
    assert (dec - dec_nq).abs().max() > 1e-2                            # quantisation at decode matters (the decoder was trained on codewords)


def test_vq_small_rejects_wrong_state_dict(fixtures_dir):
    sd = load_file(fixtures_dir / "vq_small.safetensors")
    m = VQConfig(embed_dim=3, n_embed=64, ch=32, ch_mult=(1, 2, 4), num_res_blocks=1, resolution=32).build()
    with pytest.raises(RuntimeError): m.load_state_dict(sd, strict=True)


# ---------------------------------------------------------------- official architectures

@pytest.mark.parametrize("preset,prefix,n_params,n_keys,factor,channels", [
    ("official_f4", "vq_f4", 55_322_782, 205, 4, 3),
    ("official_face_f8", "vq_face_f8", 77_009_115, 285, 8, 8),
])
def test_official_state_dict_matches_spec(preset, prefix, n_params, n_keys, factor, channels):
    entry = _spec_entry(prefix)
    with torch.device("meta"): m = getattr(VQConfig, preset)().build()
    got = _sd_table(m)
    assert len(got) == n_keys
    assert got == [list(e) for e in entry["state_dict"]]                 # keys, order, shapes, dtypes, kinds
    assert sum(p.numel() for p in m.parameters()) == entry["num_parameters"] == n_params
    assert (m.factor, m.channels, m.scale_factor) == (factor, channels, 1.0)


def test_official_f4_ddconfig_round_trip():
    cfg = VQConfig.official_f4()
    assert cfg.ddconfig == dict(double_z=False, z_channels=3, resolution=256, in_channels=3, out_ch=3, ch=128,
                                ch_mult=[1, 2, 4], num_res_blocks=2, attn_resolutions=[], dropout=0.0,
                                padding_mode="zeros")
    assert VQConfig.official_face_f8().ddconfig["num_res_blocks"] == [1, 2, 3, 4]


def test_vq_bad_config_teaches():
    dd = VQConfig.fixture_small().ddconfig
    with pytest.raises(ValueError, match="unknown ddconfig"): VQAutoencoder(3, 64, {**dd, "use_tanh": True})
    with pytest.raises(ValueError, match="double_z"): VQAutoencoder(3, 64, {**dd, "double_z": True})
    with pytest.raises(ValueError, match="one per level"): VQAutoencoder(3, 64, {**dd, "num_res_blocks": [1, 2]})


def test_vq_shapes_and_quantized_decode():
    torch.manual_seed(0)
    m = VQConfig.fixture_small().build().eval()
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    with torch.no_grad():
        z = m.encode(x)
        zq, idx = m.quantize(z)
        assert z.shape == zq.shape == (2, 3, 8, 12) and idx.shape == (2, 8, 12)
        assert not torch.equal(z, zq)                                   # encode does not quantise
        torch.testing.assert_close(m.decode(z), m.decode(zq), atol=1e-5, rtol=1e-5)   # decode does
        assert m.decode(z).shape == x.shape
    with pytest.raises(ValueError, match="multiples of factor=4"): m.encode(x[..., :30])
    with pytest.raises(ValueError, match="latent"): m.decode(torch.zeros(1, 48, 8, 8))   # an s2d latent


def test_scale_factor_applied():
    torch.manual_seed(0)
    m = VQConfig.fixture_small().build().eval()
    m2 = dataclasses.replace(VQConfig.fixture_small(), scale_factor=0.5).build().eval()
    m2.load_state_dict(m.state_dict())
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(m2.encode(x), 0.5 * m.encode(x))
        z = m.encode(x)
        torch.testing.assert_close(m2.decode(0.5 * z), m.decode(z))


# ---------------------------------------------------------------- space-to-depth, identity, z_y

def test_space_to_depth_round_trip_exact():
    x = torch.rand(2, 3, 64, 96) * 2 - 1
    s2d = SpaceToDepth()
    z = s2d.encode(x)
    assert z.shape == (2, 48, 16, 24) and (s2d.factor, s2d.channels) == (4, 48)
    assert torch.equal(s2d.decode(z), x)
    assert torch.equal(z[:, 2 * 16 + 1 * 4 + 3], x[:, 2, 1::4, 3::4])   # channel c*f^2 + i*f + j
    assert len(list(s2d.parameters())) == 0 and len(s2d.state_dict()) == 0
    s2 = SpaceToDepth(2)
    assert s2.encode(x).shape == (2, 12, 32, 48) and torch.equal(s2.decode(s2.encode(x)), x)
    with pytest.raises(ValueError, match="multiples"): s2d.encode(x[..., :62, :])


def test_identity():
    x = torch.randn(1, 3, 8, 8)
    pix = Identity()
    assert (pix.factor, pix.channels) == (1, 3)
    assert torch.equal(pix.encode(x), x) and torch.equal(pix.decode(x), x)


@pytest.mark.parametrize("make", [SpaceToDepth, Identity, lambda: VQConfig.fixture_small().build().eval()])
def test_upsample_and_encode(make):
    torch.manual_seed(0)
    ae = make()
    lr = torch.rand(1, 3, 8, 12) * 2 - 1
    up = F.interpolate(lr, scale_factor=4, mode="bicubic")
    with torch.no_grad():
        assert torch.equal(ae.upsample_and_encode(lr), ae.encode(up))
        assert torch.equal(ae.upsample_and_encode(lr, sf=1), ae.encode(lr))          # sf == 1: no interpolation
    assert up.abs().max() > 1                                                         # overshoot kept (not clamped)


def test_s2d_zy_on_lr_grid():
    lr = torch.rand(1, 3, 16, 20) * 2 - 1
    assert SpaceToDepth().upsample_and_encode(lr).shape == (1, 48, 16, 20)


def test_base_class_is_abstract():
    with pytest.raises(NotImplementedError): LatentSpace().encode(torch.zeros(1, 3, 4, 4))


# ---------------------------------------------------------------- official checkpoint loader

def test_official_loader_with_module_prefix(tmp_path):
    unet = importlib.import_module("tadsr.unet") if importlib.util.find_spec("tadsr.unet") else None
    loader = getattr(unet, "load_official_state_dict", None)
    if loader is None: pytest.skip("tadsr.unet.load_official_state_dict not available yet (lesson 05)")
    torch.manual_seed(0)
    src = VQConfig.fixture_small().build()
    path = tmp_path / "vq_ddp.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    dst = VQConfig.fixture_small().build()
    assert not torch.equal(dst.quantize.embedding.weight, src.quantize.embedding.weight)
    loader(dst, path, strict=True)
    for k, v in src.state_dict().items(): assert torch.equal(dst.state_dict()[k], v), k
