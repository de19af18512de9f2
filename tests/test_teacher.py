"""`tadsr.teacher`: the sampler against `det_step`, the precond head's skip path, exact resume after SIGKILL (issue #3
acceptance), NaN stops with the last good checkpoint intact, and bad training data caught at start.

Uses the tiny model of tests/tiny_model.py (crop 64 = 4 x lr_multiple 8 x 2) on the scikit-image photos.
Every training run pins torch to one thread and seeds the global RNG first (see `test_same_seed_same_run`)."""
import contextlib
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_model import photo, tiny_config, tiny_model

import tadsr.teacher as tt
from tadsr.core import load_safetensors
from tadsr.data import bundled_photos
from tadsr.degradation import make_lr
from tadsr.diffusion import det_step, prior_sample, q_sample, sample, sampling_steps
from tadsr.model import DiffusionSR, precond_coefs
from tadsr.teacher import TrainConfig, export_teacher, train_teacher

TESTS = Path(__file__).resolve().parent
TCFG = TrainConfig(steps=12, batch_size=2, crop=64, ckpt_every=3, log_every=1, val_every=0, warmup=2)


@contextlib.contextmanager
def one_thread():
    n = torch.get_num_threads(); torch.set_num_threads(1)
    try: yield
    finally: torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _one_thread():
    "The CPU is shared with other jobs: 2 OpenMP threads contending with them made one test 40x slower."
    with one_thread(): yield


@pytest.fixture(scope="module")
def photos():
    return bundled_photos()


def train(out, tcfg=TCFG, sources=None, **kw):
    "A quiet, single-threaded, globally seeded `train_teacher` run of the tiny model."
    with one_thread():
        torch.manual_seed(0)
        return train_teacher(tiny_config(), tcfg, sources, out, progress=False, log=lambda *a: None, **kw)


# ---------------------------------------------------------------------------------------------------------------
# sampler

def test_sampling_steps():
    assert sampling_steps(15, 15) == list(range(14, -1, -1))
    assert sampling_steps(15, 1) == [14]
    assert sampling_steps(15, 4) == [14, 9, 5, 0]
    for s in range(1, 16):
        idx = sampling_steps(15, s)
        assert len(idx) == s and idx[0] == 14 and idx == sorted(idx, reverse=True) and (s == 1 or idx[-1] == 0)
    for bad in (0, 16):
        with pytest.raises(ValueError, match="steps"): sampling_steps(15, bad)


@pytest.fixture(scope="module")
def pair():
    "(model, z0, zy, lq): the tiny model (std 0.1) and latents of a 64x64 photo crop and its x4 LR."
    hr = torch.from_numpy(np.asarray(photo(64, 64)).copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    lq = make_lr(hr, 4)
    model = tiny_model(std=0.1)
    z0, zy = model.encode_pair(hr, lq)
    return model, z0, zy, lq


def test_full_sampler_is_a_det_step_loop(pair):
    model, _, zy, lq = pair
    noise = torch.randn(zy.shape, generator=torch.Generator().manual_seed(1))
    z = prior_sample(zy, model.sched, noise=noise)
    with torch.no_grad():
        for i in range(model.T - 1, -1, -1):
            t = torch.full((1,), i, dtype=torch.long)
            z = det_step(model.predict_x0(z, t, zy, lq), z, zy, t, model.sched)
    out = model.sample_latent(zy, lq, steps=model.T, noise=noise)
    assert (out - zy).abs().max() > 0.05                                     # the network did something
    assert torch.allclose(out, z, atol=1e-6, rtol=0), (out - z).abs().max()


class _Oracle:
    "An x0-predictor that returns the true z0 and records the states it is called on."
    def __init__(self, z0): self.z0, self.seen = z0, []
    def __call__(self, zt, t):
        self.seen.append((int(t[0]), zt.clone())); return self.z0


@pytest.mark.parametrize("steps", [2, 4, 7])
def test_strided_steps_stay_on_the_forward_marginal(pair, steps):
    "With an oracle x0_hat, each strided step lands exactly on q(z_p | z0, y) with the noise implied by z_T (eq. 3)."
    model, z0, zy, _ = pair
    s = model.sched
    noise = torch.randn(zy.shape, generator=torch.Generator().manual_seed(2))
    oracle = _Oracle(z0)
    out = sample(oracle, zy, s, steps=steps, noise=noise)
    zT, eT = prior_sample(zy, s, noise=noise), float(s.etas[-1])
    eps = (zT - z0 - eT * (zy - z0)) / (s.kappa * eT ** 0.5)                # the noise z_T holds relative to z0
    assert [i for i, _ in oracle.seen] == sampling_steps(model.T, steps)
    for i, z in oracle.seen[1:]:
        want = q_sample(z0, zy, torch.tensor([i]), s, noise=eps)
        assert torch.allclose(z, want, atol=1e-5), (i, (z - want).abs().max())
    assert torch.allclose(out, z0, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# precond head

class _Zero(torch.nn.Module):
    def forward(self, x, t, lq=None): return torch.zeros_like(x)


def test_precond_skip_path(pair):
    "Network output 0: x0_hat = zy + c_skip*u with u = z0 - zy + sigma_t*eps; ~z0 at t=0, ~zy at t=T-1."
    model, z0, zy, lq = pair
    m = DiffusionSR(model.cfg); m.unet = _Zero()
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(3))
    gap = (zy - z0).abs().mean()
    for i in (0, model.T - 1):
        t = torch.tensor([i])
        zt = q_sample(z0, zy, t, m.sched, noise=noise)
        x0 = m.predict_x0(zt, t, zy, lq)
        c_skip, _, _, sig = precond_coefs(m.sched, t, m.cfg.sigma_data, zt)
        assert torch.allclose(x0, zy + c_skip * (z0 - zy + sig * noise), atol=1e-5)
        if i == 0:
            assert (x0 - z0).abs().mean() < 0.3 * gap, ((x0 - z0).abs().mean(), gap)     # measured 0.21
        else:
            assert (x0 - zy).abs().mean() < 1e-3 * gap                                  # c_skip ~ 1e-6


# ---------------------------------------------------------------------------------------------------------------
# exact resume after SIGKILL

SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
import tadsr.teacher as tt
from tadsr.data import bundled_photos
from tiny_model import tiny_config
out, marker = sys.argv[1], sys.argv[2]
_items = tt.batch_items
def slow_items(step, *a, **k):
    if step == 7:                                  # 7 steps done, checkpoint at 6: wait here to be killed
        open(marker, "w").write(str(step)); time.sleep(120)
    return _items(step, *a, **k)
tt.batch_items = slow_items
torch.manual_seed(0)
tt.train_teacher(tiny_config(), tt.TrainConfig(**{tcfg!r}), bundled_photos(), out, progress=False)
"""


def _ckpt_step(out: Path):
    p = out / "checkpoint.safetensors"
    return load_safetensors(p)[1]["step"] if p.exists() else None


def test_resume_after_sigkill_is_exact(tmp_path, photos):
    from dataclasses import asdict
    ref_model, ref_hist = train(tmp_path / "ref", sources=photos)              # uninterrupted
    assert len(ref_hist["loss"]) == TCFG.steps and [h["step"] for h in ref_hist["loss"]] == list(range(1, 13))

    script, out, marker = tmp_path / "run.py", tmp_path / "killed", tmp_path / "marker"
    script.write_text(textwrap.dedent(SCRIPT).format(tests=str(TESTS), tcfg=asdict(TCFG)))
    proc = subprocess.Popen([sys.executable, str(script), str(out), str(marker)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        t0 = time.time()
        while not marker.exists():
            assert proc.poll() is None, f"training script died: {proc.communicate()[1][-2000:]}"
            assert time.time() - t0 < 240, "training script too slow"
            time.sleep(0.1)
        assert _ckpt_step(out) == 6                         # 7 steps done, the 7th not checkpointed
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None: proc.kill(); proc.wait()
    assert proc.returncode == -signal.SIGKILL
    cfg = load_safetensors(out / "checkpoint.safetensors")[1]
    assert cfg["step"] == 6 and len(cfg["history"]["loss"]) == 6

    logs = []
    with one_thread():
        torch.manual_seed(0)
        res_model, res_hist = train_teacher(tiny_config(), TCFG, photos, out, progress=False, log=logs.append)
    assert any("resumed" in str(m) and "step 6" in str(m) for m in logs), logs
    got = [h["loss"] for h in res_hist["loss"]]
    want = [h["loss"] for h in ref_hist["loss"]]
    print("\nuninterrupted:", want, "\nkilled+resumed:", got)
    assert res_hist["loss"] == ref_hist["loss"]                # per-step losses and per-t means, bit for bit
    ref_sd, res_sd = ref_model.unet.state_dict(), res_model.unet.state_dict()
    assert all(torch.equal(ref_sd[k], res_sd[k]) for k in ref_sd)              # final EMA weights
    ta, _ = load_safetensors(tmp_path / "ref" / "checkpoint.safetensors")
    tb, _ = load_safetensors(out / "checkpoint.safetensors")
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)   # raw, EMA, AdamW, RNG


def test_same_seed_same_run(tmp_path, photos):
    "Two fresh runs with the same TrainConfig.seed and nothing else seeded give the same losses."
    tcfg = TrainConfig(steps=2, batch_size=2, crop=64, ckpt_every=2, log_every=1, val_every=0, warmup=2)
    hist = []
    for k in range(2):
        torch.manual_seed(1000 + k)                 # whatever the global RNG happens to hold
        with one_thread():
            hist.append(train_teacher(tiny_config(), tcfg, photos, tmp_path / str(k), progress=False)[1])
    assert hist[0]["loss"] == hist[1]["loss"]


def test_misaligned_checkpoint_and_log_intervals_are_refused(tmp_path, photos):
    "The running log averages are not checkpointed, so ckpt_every must be a multiple of log_every (exact resume)."
    with pytest.raises(ValueError, match="multiple of log_every"):
        train(tmp_path / "run", TrainConfig(steps=6, batch_size=2, crop=64, ckpt_every=3, log_every=2, val_every=0), photos)
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()


# ---------------------------------------------------------------------------------------------------------------
# NaN

def test_nan_loss_stops_with_last_good_checkpoint(tmp_path, photos, monkeypatch):
    class NaNAt5(DiffusionSR):
        calls = 0
        def loss(self, *a, **k):
            out = super().loss(*a, **k); NaNAt5.calls += 1
            return out * float("nan") if NaNAt5.calls == 6 else out           # the 6th step (step index 5)
    monkeypatch.setattr(tt, "DiffusionSR", NaNAt5)
    tcfg = TrainConfig(steps=8, batch_size=2, crop=64, ckpt_every=2, log_every=1, val_every=0, warmup=2)
    ckpt = tmp_path / "checkpoint.safetensors"
    with pytest.raises(FloatingPointError) as e: train(tmp_path, tcfg, photos)
    msg = str(e.value)
    assert "nan" in msg.lower() and str(ckpt) in msg and "step 4" in msg, msg
    tensors, cfg = load_safetensors(ckpt)
    assert cfg["step"] == 4 and len(cfg["history"]["loss"]) == 4
    assert all(torch.isfinite(v).all() for k, v in tensors.items() if k.startswith(("model.", "ema.")))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.safetensors"]          # no temp files left


# ---------------------------------------------------------------------------------------------------------------
# bad training data

def test_empty_folder_fails_at_start(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no usable images"): train(tmp_path / "out", sources=[tmp_path / "empty"])
    assert not (tmp_path / "out" / "checkpoint.safetensors").exists()


def test_all_images_smaller_than_crop_fail_at_start(tmp_path):
    d = tmp_path / "small"; d.mkdir()
    for k in range(3): photo(48, 80 + k).save(d / f"p{k}.png")                       # 48 < crop 64
    with pytest.warns(UserWarning, match="smaller than crop"), pytest.raises(ValueError, match=r"3 smaller than crop=64"):
        train(tmp_path / "out", sources=[d])


def test_unreadable_image_is_skipped_with_a_warning(tmp_path):
    d = tmp_path / "mixed"; d.mkdir()
    photo(96, 96).save(d / "a.png"); photo(80, 100, "chelsea").save(d / "b.jpg")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    tcfg = TrainConfig(steps=2, batch_size=2, crop=64, ckpt_every=2, log_every=1, val_every=0, warmup=1)
    with pytest.warns(UserWarning, match="broken.png"):
        _, hist = train(tmp_path / "out", tcfg, [d])
    assert len(hist["loss"]) == 2 and all(np.isfinite(h["loss"]) for h in hist["loss"])
    assert load_safetensors(tmp_path / "out" / "checkpoint.safetensors")[1]["step"] == 2


def test_init_from_exported_weights_continues_that_model(tmp_path, photos):
    "`init=` starts a new run from exported weights (fresh optimiser) and records where they came from."
    from dataclasses import replace
    train(tmp_path / "a", replace(TCFG, steps=3, ckpt_every=3), photos)
    export_teacher(tmp_path / "a" / "checkpoint.safetensors", tmp_path / "a.safetensors")
    exported, _ = load_safetensors(tmp_path / "a.safetensors")
    model, hist = train(tmp_path / "b", replace(TCFG, steps=0), photos, init=tmp_path / "a.safetensors")
    sd = model.unet.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in exported.items())        # starts exactly at the exported weights
    assert hist["init"]["step"] == 3 and len(hist["init"]["history"]["loss"]) == 3
    _, hist2 = train(tmp_path / "c", replace(TCFG, steps=2, ckpt_every=1), photos, init=tmp_path / "a.safetensors")
    assert len(hist2["loss"]) == 2 and all(math.isfinite(h["loss"]) for h in hist2["loss"])
