"""End-to-end parity: the official 15-step ResShift sampling run of `sampler_e2e.safetensors` (fixtures README "Extra"),
reproduced with `tadsr.diffusion.sample`, the small Swin-UNet `small_a` and the small VQ autoencoder `vq_small`."""
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from tadsr.autoencoder import VQAutoencoder
from tadsr.diffusion import ScheduleConfig, make_schedule, prior_sample, sample, scale_input
from tadsr.unet import SwinUNet

TOL_Z = dict(atol=1e-5, rtol=1e-5)        # README: sampler_e2e z_y, z_T
TOL_TRAJ = dict(atol=2e-4, rtol=1e-4)     # README: trajectories, decoded


def _maxdiff(a, b) -> float:
    return float((a - b).abs().max())


@pytest.fixture(scope="module")
def run(fixtures_dir):
    "Build both networks from the fixture JSON kwargs, load the official weights strictly, and re-run the sampler."
    ref = load_file(str(fixtures_dir / "sampler_e2e.safetensors"))
    unet_kw = json.loads((fixtures_dir / "unet_small_a.json").read_text())["kwargs"]
    vq_kw = json.loads((fixtures_dir / "vq_small.json").read_text())["kwargs"]
    unet = SwinUNet(**unet_kw).eval()
    unet.load_state_dict(load_file(str(fixtures_dir / "unet_small_a.safetensors")), strict=True)
    vq = VQAutoencoder(embed_dim=vq_kw["embed_dim"], n_embed=vq_kw["n_embed"], ddconfig=vq_kw["ddconfig"]).eval()
    vq.load_state_dict(load_file(str(fixtures_dir / "vq_small.safetensors")), strict=True)
    sched = make_schedule(ScheduleConfig.realsr_v1())
    lq = ref["lq"]
    with torch.no_grad():
        up = F.interpolate(lq, scale_factor=4, mode="bicubic")          # PyTorch bicubic, no clamp (as ResShift)
        zy = vq.encode(ref["lq_bicubic_x4"])                            # pre-quantisation latent (ResShift encodes without quantising)
        zT = prior_sample(zy, sched, noise=ref["noise_T"])
        x0_fn = lambda z, t: unet(scale_input(z, t, sched), t, lq=lq)   # noqa: E731 (the official x0 head)
        # fully end to end: from our own z_y (what a user's pipeline does); the official loop is eq. 2
        z0, traj = sample(x0_fn, zy, sched, deterministic=False, noise=ref["noise_T"], step_noise=ref["step_noise"],
                          return_trajectory=True)
        # teacher-forced: from the official z_y, isolating sampler + UNet from the encoder's float32 noise
        _, traj_tf = sample(x0_fn, ref["z_y"], sched, deterministic=False, noise=ref["noise_T"],
                            step_noise=ref["step_noise"], return_trajectory=True)
        decoded = vq.decode(z0)
        codes = vq.quantize(z0)[1]
    return dict(ref=ref, up=up, zy=zy, zT=zT, z0=z0, traj=traj, traj_tf=traj_tf, decoded=decoded, codes=codes)


def test_bicubic_upsampling(run):
    d = _maxdiff(run["up"], run["ref"]["lq_bicubic_x4"])
    print(f"\nF.interpolate(lq) vs lq_bicubic_x4: max abs diff {d:.2e}")
    torch.testing.assert_close(run["up"], run["ref"]["lq_bicubic_x4"], atol=1e-6, rtol=0)


def test_zy_and_prior(run):
    ref = run["ref"]
    print(f"\nz_y {_maxdiff(run['zy'], ref['z_y']):.2e}, z_T {_maxdiff(run['zT'], ref['z_T']):.2e}")
    torch.testing.assert_close(run["zy"], ref["z_y"], **TOL_Z)
    torch.testing.assert_close(run["zT"], ref["z_T"], **TOL_Z)


@pytest.mark.parametrize("which", ["traj", "traj_tf"])
def test_trajectories(run, which):
    ref, traj = run["ref"], run[which]
    assert traj["x0_hat"].shape == ref["pred_xstart_trajectory"].shape == (15, 1, 3, 32, 32)
    assert traj["z"].shape == ref["z_trajectory"].shape
    dx = [_maxdiff(a, b) for a, b in zip(traj["x0_hat"], ref["pred_xstart_trajectory"])]
    dz = [_maxdiff(a, b) for a, b in zip(traj["z"], ref["z_trajectory"])]
    print(f"\n[{which}] pred_xstart per step: " + " ".join(f"{v:.1e}" for v in dx))
    print(f"[{which}] z per step:           " + " ".join(f"{v:.1e}" for v in dz))
    torch.testing.assert_close(traj["x0_hat"], ref["pred_xstart_trajectory"], **TOL_TRAJ)
    torch.testing.assert_close(traj["z"], ref["z_trajectory"], **TOL_TRAJ)
    assert torch.equal(traj["z"][-1], traj["x0_hat"][-1])               # the t=0 step returns x0_hat exactly
    if which == "traj": assert torch.equal(run["z0"], traj["z"][-1])


def test_decode(run):
    ref = run["ref"]
    assert run["codes"].dtype == torch.int64
    assert torch.equal(run["codes"], ref["decode_code_indices"]), \
        f"{int((run['codes'] != ref['decode_code_indices']).sum())} code indices differ"
    print(f"\ndecoded max abs diff {_maxdiff(run['decoded'], ref['decoded']):.2e}")
    torch.testing.assert_close(run["decoded"], ref["decoded"], **TOL_TRAJ)

