"Parity of `tadsr.diffusion` with the official ResShift schedule and process tensors (fixtures README sections A, B)."
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tadsr.diffusion import (ScheduleConfig, det_step, extract, make_schedule, p_sample, posterior_mean_variance,
                             prior_sample, q_mean_variance, q_sample, sample, sampling_steps, scale_input)

CONFIGS = {"realsr_swinunet_realesrgan256": ScheduleConfig.realsr_v1(),
           "realsr_swinunet_realesrgan256_journal": ScheduleConfig.journal_v3(),
           "faceir_gfpgan512_lpips": ScheduleConfig.faceir()}
OFFICIAL_ARRAYS = ("sqrt_etas", "etas", "etas_prev", "alpha", "posterior_variance", "posterior_variance_clipped",
                   "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2", "weight_loss_mse")
CASES = ("t0", "t1", "t7", "t13", "t14", "tmix")
ATOL = RTOL = 1e-6                      # README tolerance for process.safetensors


@pytest.fixture(scope="module")
def schedule_json(fixtures_dir):
    return json.loads((fixtures_dir / "schedule.json").read_text())


@pytest.fixture(scope="module")
def proc(fixtures_dir):
    return load_file(str(fixtures_dir / "process.safetensors"))


def _rel(a: torch.Tensor, b) -> float:
    "max |a-b| / |b| over entries with b != 0 (and max |a| where b == 0)."
    b = torch.as_tensor(np.asarray(b, dtype=np.float64))
    d = (a - b).abs()
    nz = b != 0
    return max(float((d[nz] / b[nz].abs()).max()) if nz.any() else 0.0, float(d[~nz].max()) if (~nz).any() else 0.0)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_schedule_arrays(schedule_json, name):
    entry, sched = schedule_json["configs"][name], make_schedule(CONFIGS[name])
    p = entry["diffusion_params"]
    cfg = CONFIGS[name]
    assert (cfg.steps, cfg.kappa, cfg.power, cfg.min_noise_level, cfg.etas_end) == (
        p["steps"], p["kappa"], p["schedule_kwargs"]["power"], p["min_noise_level"], p["etas_end"])
    assert sched.T == sched.num_timesteps == entry["attributes"]["num_timesteps"]
    assert sched.kappa == entry["attributes"]["kappa"]
    assert sched.timestep_map.tolist() == entry["attributes"]["timestep_map"]
    worst = {}
    groups = [(entry["arrays"], OFFICIAL_ARRAYS), (entry["inline_arrays"], ("kappa_times_sqrt_etas", "input_norm_std")),
              (entry["derived_NOT_in_official_code"], ("det_k", "det_m", "det_j"))]
    for src, names in groups:
        for k in names:
            ours = getattr(sched, k)
            assert ours.dtype == torch.float64 and ours.shape == (sched.T,), k
            ref = torch.tensor(src[k], dtype=torch.float64)
            torch.testing.assert_close(ours, ref, rtol=1e-12, atol=0, msg=f"{name}.{k}")
            worst[k] = _rel(ours, src[k])
    print(f"\n{name}: max rel diff over all arrays = {max(worst.values()):.2e} "
          f"(exactly equal: {sum(v == 0 for v in worst.values())}/{len(worst)})")


# 4-step configs with the SinSR/TAD-SR capped etas_start = sqrt(0.001) (values recorded from the official code)
TABLE_C = {"sqrt_etas": [0.031622776602, 0.376439658832, 0.667323388925, 0.990000000000],
           "etas_prev": [0.0, 0.001, 0.141706816742, 0.445320505407],
           "posterior_mean_coef1": [0.0, 0.007056823539, 0.318213096009, 0.454362315485],
           "posterior_variance": [0.0, 0.003971772706, 0.386455407443, 0.971934597749],
           "posterior_log_variance_clipped": [-5.528542758544, -5.528542758544, -0.950738792919, -0.028466763052],
           "det_m": [0.0, 0.084004901874, 0.564103798967, 0.674064029218],
           "det_j": [0.0, -0.010904067235, -0.109500172116, -0.215329649629],
           "det_k": [1.0, 0.926899165361, 0.545396373149, 0.541265620412],
           "input_norm_std": [1.001998003990, 1.251729710028, 1.667717608478, 2.218197466413]}


@pytest.mark.parametrize("preset", [ScheduleConfig.faceir, ScheduleConfig.journal_v3])
def test_capped_schedule_table(preset):
    sched = make_schedule(preset(capped=True))
    assert sched.cfg.etas_start == pytest.approx(np.sqrt(0.001), abs=1e-15)
    for k, vals in TABLE_C.items():       # the table is printed to 12 decimals
        torch.testing.assert_close(getattr(sched, k), torch.tensor(vals, dtype=torch.float64), rtol=0, atol=1e-9, msg=k)
    # the cap changes nothing for the 15-step realsr teacher
    torch.testing.assert_close(make_schedule(ScheduleConfig.realsr_v1(capped=True)).sqrt_etas,
                               make_schedule(ScheduleConfig.realsr_v1()).sqrt_etas, rtol=0, atol=0)


def test_capped_differs_from_head(schedule_json):
    ref = schedule_json["configs"]["faceir_gfpgan512_lpips"]["arrays"]["sqrt_etas"]
    assert ref[0] == pytest.approx(0.1)                                     # fixtures = ResShift HEAD (uncapped)
    assert make_schedule(ScheduleConfig.faceir(capped=True)).sqrt_etas[0].item() == pytest.approx(0.0316227766)


def _check(name: str, ours: torch.Tensor, ref: torch.Tensor, diffs: dict, exact: bool = False):
    assert ours.shape == ref.shape, f"{name}: shape {tuple(ours.shape)} vs fixture {tuple(ref.shape)}"
    assert ours.dtype == ref.dtype == torch.float32, name
    diffs[name] = float((ours - ref).abs().max())
    if exact: assert torch.equal(ours, ref), f"{name}: max abs diff {diffs[name]:.3e}, expected bit-exact"
    else: torch.testing.assert_close(ours, ref, atol=ATOL, rtol=RTOL, msg=name)


@pytest.mark.parametrize("case", CASES)
def test_process(proc, case):
    sched = make_schedule(ScheduleConfig.realsr_v1())
    x0, y, noise, mo, pn = (proc[k] for k in ("x_start", "y", "noise", "model_output", "p_sample_noise"))
    t = proc[f"{case}/t"]
    assert t.dtype == torch.int64
    if case == "tmix": assert t.tolist() == [0, 14]
    g = lambda k: proc[f"{case}/{k}"]   # noqa: E731
    d = {}
    zt = q_sample(x0, y, t, sched, noise=noise)
    _check("q_sample", zt, g("q_sample"), d)
    zt = g("q_sample")                  # downstream checks start from the official z_t, as the generator did
    mean, var, logvar = q_mean_variance(x0, y, t, sched)
    _check("q_mean", mean, g("q_mean"), d)
    _check("q_variance", var, g("q_variance"), d)
    _check("q_log_variance", logvar, g("q_log_variance"), d)
    pmean, pvar, plogvar = posterior_mean_variance(x0, zt, t, sched)
    _check("posterior_mean", pmean, g("posterior_mean"), d)
    _check("posterior_variance", pvar, g("posterior_variance"), d)
    _check("posterior_log_variance_clipped", plogvar, g("posterior_log_variance_clipped"), d)
    _check("scaled_input", scale_input(zt, t, sched), g("scaled_input"), d)
    # p_sample with the stand-in network output (unclipped: pred_xstart is model_output itself)
    m, v, lv = posterior_mean_variance(mo, zt, t, sched)
    _check("p_sample/mean", m, g("p_sample/mean"), d)
    _check("p_sample/variance", v, g("p_sample/variance"), d)
    _check("p_sample/log_variance", lv, g("p_sample/log_variance"), d)
    _check("p_sample/sample", p_sample(mo, zt, t, sched, noise=pn), g("p_sample/sample"), d)
    # clip_denoised=True variant
    _check("p_sample_clip/pred_xstart", mo.clamp(-1, 1), g("p_sample_clip/pred_xstart"), d)
    _check("p_sample_clip/mean", posterior_mean_variance(mo.clamp(-1, 1), zt, t, sched)[0], g("p_sample_clip/mean"), d)
    _check("p_sample_clip/sample", p_sample(mo, zt, t, sched, noise=pn, clip=True), g("p_sample_clip/sample"), d)
    # the fixture generator's (non-official) deterministic eq. 3 step
    _check("NONOFFICIAL_det_step/sample", det_step(mo, zt, y, t, sched), g("NONOFFICIAL_det_step/sample"), d)
    if (t == 0).all():                  # t=0: the step returns x0_hat bit for bit
        for k in ("p_sample/sample", "NONOFFICIAL_det_step/sample"): assert torch.equal(g(k), mo), k
        assert torch.equal(p_sample(mo, zt, t, sched, noise=pn), mo)
        assert torch.equal(det_step(mo, zt, y, t, sched), mo)
    print(f"\n{case} t={t.tolist()}: " + ", ".join(f"{k} {v:.1e}" for k, v in d.items()))


def test_prior_sample(proc):
    sched = make_schedule(ScheduleConfig.realsr_v1())
    d = {}
    _check("prior_sample", prior_sample(proc["y"], sched, noise=proc["noise"]), proc["prior_sample"], d)
    print(f"\nprior_sample max abs diff {d['prior_sample']:.1e}")


def test_out_of_range_t():
    sched, x = make_schedule(ScheduleConfig.realsr_v1()), torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"t must be in \[0, 15\); got 15\. 1-based steps\?"):
        q_sample(x, x, torch.tensor([3, 15]), sched)
    with pytest.raises(ValueError, match=r"got -1"):
        extract(sched.etas, torch.tensor([-1, 0]), x)
    with pytest.raises(ValueError, match=r"t must be in \[0, 4\)"):
        p_sample(x, x, 4, make_schedule(ScheduleConfig.journal_v3()))
    with pytest.raises(TypeError, match="integer"):
        scale_input(x, torch.tensor([1.0, 2.0]), sched)
    with pytest.raises(ValueError, match="shape"):
        extract(sched.etas, torch.tensor([1, 2, 3]), x)


def test_subset_schedule():
    "Fewer steps: every coefficient is recomputed over the retained steps, which the network is told by timestep_map."
    full = make_schedule(ScheduleConfig.realsr_v1())
    kept = sampling_steps(15, 4)[::-1]
    sp = full.subset(sampling_steps(15, 4))
    assert sp.T == 4 and sp.timestep_map.tolist() == kept == [0, 5, 9, 14]
    torch.testing.assert_close(sp.sqrt_etas, full.sqrt_etas[kept], rtol=0, atol=0)
    torch.testing.assert_close(sp.etas_prev, torch.cat([torch.zeros(1, dtype=torch.float64), full.etas[kept[:-1]]]))
    torch.testing.assert_close(sp.posterior_mean_coef1, sp.etas_prev / sp.etas)  # recomputed from the subset
    one = full.subset([14])
    assert one.T == 1 and one.det_k.tolist() == [1.0] and one.det_m.tolist() == [0.0]   # one step returns x0_hat


def test_sampler_loop_replay(fixtures_dir):
    """The official 15-step loop (sampler_e2e) replayed with the recorded x0 predictions: checks step order, t passed
    to the network, noise indexing and every p_sample, independently of the UNet."""
    ref = load_file(str(fixtures_dir / "sampler_e2e.safetensors"))
    sched = make_schedule(ScheduleConfig.realsr_v1())
    preds, seen_t = iter(ref["pred_xstart_trajectory"]), []

    def replay(zt, t):
        assert t.dtype == torch.int64 and t.shape == (1,)
        seen_t.append(int(t))
        return next(preds)

    z0, traj = sample(replay, ref["z_y"], sched, deterministic=False, noise=ref["noise_T"],
                      step_noise=ref["step_noise"], return_trajectory=True)
    assert seen_t == list(range(14, -1, -1))
    d = float((traj["z"] - ref["z_trajectory"]).abs().max())
    print(f"\nreplayed z trajectory max abs diff {d:.2e}")
    torch.testing.assert_close(traj["z"], ref["z_trajectory"], atol=ATOL, rtol=RTOL)
    assert torch.equal(z0, ref["pred_xstart_trajectory"][-1])
    torch.testing.assert_close(prior_sample(ref["z_y"], sched, noise=ref["noise_T"]), ref["z_T"], atol=ATOL, rtol=RTOL)
