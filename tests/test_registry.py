"The safetensors weight registry in tadsr.core: configs travel with tensors, hashes are checked, nothing is unpickled."
import json

import pytest
import torch

from tadsr.core import (WEIGHTS_DIR, load_pretrained, load_safetensors, registry, save_safetensors,
                        sha256_file)


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {"w": torch.randn(4, 3, generator=g), "b": torch.zeros(4), "steps": torch.arange(5)}


def _make_registry(folder, sha=None):
    save_safetensors(folder / "toy.safetensors", _tensors(), {"builder": "tadsr.core:build_state_dict", "width": 4})
    entry = {"file": "toy.safetensors", "sha256": sha or sha256_file(folder / "toy.safetensors"),
             "description": "toy weights for tests"}
    (folder / "registry.json").write_text(json.dumps({"toy": entry}))


def test_save_load_round_trip_with_config(tmp_path):
    cfg = {"builder": "tadsr.core:build_state_dict", "channels": [1, 2, 4], "name": "tiny", "kappa": 2.0}
    p = save_safetensors(tmp_path / "m.safetensors", _tensors(), cfg)
    tensors, got = load_safetensors(p)
    assert got == cfg
    assert set(tensors) == {"w", "b", "steps"}
    for k, v in _tensors().items():
        assert torch.equal(tensors[k], v) and tensors[k].dtype == v.dtype
    assert [q.name for q in tmp_path.iterdir()] == ["m.safetensors"]          # no temp file left


def test_file_is_plain_safetensors_with_json_metadata(tmp_path):
    from safetensors import safe_open
    save_safetensors(tmp_path / "m.safetensors", _tensors(), {"a": 1})
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        assert json.loads(f.metadata()["tadsr_config"]) == {"a": 1}


def test_load_pretrained_by_name_and_path(tmp_path):
    _make_registry(tmp_path)
    assert registry(tmp_path)["toy"]["file"] == "toy.safetensors"
    sd = load_pretrained("toy", weights_dir=tmp_path)
    assert torch.equal(sd["w"], _tensors()["w"])
    sd = load_pretrained(tmp_path / "toy.safetensors")
    assert torch.equal(sd["steps"], torch.arange(5))


def test_sha256_mismatch_detected(tmp_path):
    _make_registry(tmp_path)
    p = tmp_path / "toy.safetensors"
    data = bytearray(p.read_bytes())
    data[-1] ^= 0xFF                                          # corrupt one byte of tensor data
    p.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256 mismatch"):
        load_pretrained("toy", weights_dir=tmp_path)


def test_sha256_file_matches_hashlib(tmp_path):
    import hashlib
    p = tmp_path / "f.bin"
    p.write_bytes(bytes(range(256)) * 5000)                  # > 1 MiB: several chunks
    assert sha256_file(p) == hashlib.sha256(p.read_bytes()).hexdigest()


def test_unknown_name_lists_available_names(tmp_path):
    _make_registry(tmp_path)
    with pytest.raises(ValueError, match=r"unknown weights 'studnet'.*available: toy"):
        load_pretrained("studnet", weights_dir=tmp_path)


def test_unknown_name_with_empty_registry_says_so(tmp_path):
    with pytest.raises(ValueError, match="available: \\(none yet"):
        load_pretrained("student", weights_dir=tmp_path)


def test_builders_must_live_inside_tadsr(tmp_path):
    save_safetensors(tmp_path / "evil.safetensors", _tensors(), {"builder": "os:system"})
    with pytest.raises(ValueError, match="inside tadsr"):
        load_pretrained(tmp_path / "evil.safetensors")
    save_safetensors(tmp_path / "old.safetensors", _tensors(), {"builder": "tadsr.core:no_such_builder"})
    with pytest.raises(ValueError, match="not found"):
        load_pretrained(tmp_path / "old.safetensors")


def test_not_a_safetensors_file(tmp_path):
    (tmp_path / "x.safetensors").write_bytes(b"\x80\x04pickle?")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_safetensors(tmp_path / "x.safetensors")
    with pytest.raises(FileNotFoundError):
        load_safetensors(tmp_path / "missing.safetensors")


def test_shipped_registry_is_consistent():
    "Every entry of tadsr/weights/registry.json names an existing file with the recorded hash."
    reg = json.loads((WEIGHTS_DIR / "registry.json").read_text())
    assert isinstance(reg, dict)
    for name, e in reg.items():
        assert set(e) >= {"file", "sha256", "description"}, name
        assert sha256_file(WEIGHTS_DIR / e["file"]) == e["sha256"], f"{name}: sha256 differs from registry.json"


def test_shipped_weights_size_budget_and_students():
    "All shipped weights stay under ~30 MB; shipped students are one-step models of the shipped teacher's network."
    reg = json.loads((WEIGHTS_DIR / "registry.json").read_text())
    total = sum((WEIGHTS_DIR / e["file"]).stat().st_size for e in reg.values())
    assert total <= 30_000_000, f"shipped weights are {total / 1e6:.1f} MB"
    import warnings
    from tadsr.core import load_pretrained
    from tadsr.inference import load_model
    for name in ("student", "student_vanilla"):
        if name not in reg: continue
        net = load_pretrained(name)
        assert net.default_steps == 1
        if "teacher" in reg:
            assert net.cfg == load_pretrained("teacher").cfg          # the same network and schedule as its teacher
    if "student" in reg:
        with warnings.catch_warnings():
            warnings.simplefilter("error")                               # no fallback warning once a student ships
            net, steps = load_model("student")
        assert steps == 1
