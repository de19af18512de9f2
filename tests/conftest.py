"Shared pytest fixtures: where the official ResShift reference tensors live, one torch thread, tiny weights."
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _fixtures_path() -> Path:
    env = os.environ.get("TADSR_FIXTURES")
    if env:
        p = Path(env)
        return p / "resshift" if (p / "resshift").is_dir() else p
    return ROOT / "tests" / "fixtures" / "resshift"                  # shipped with the repository (see its README)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    "Folder with the official ResShift fixtures (tests/fixtures/resshift, or $TADSR_FIXTURES); skips if it is absent."
    p = _fixtures_path()
    if not (p / "schedule.json").is_file():
        pytest.skip(f"ResShift reference fixtures not found at {p} (they ship in tests/fixtures/resshift; "
                    "$TADSR_FIXTURES, if set, must name a folder holding schedule.json or resshift/schedule.json)")
    return p


@pytest.fixture
def one_thread():
    "In-process model runs on one torch thread: the 2 CPU cores are shared, and OpenMP contention stalls otherwise."
    import torch
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    "A tiny random-weight model written as a weights file (tests/tiny_model.py), shared by a test module."
    from tiny_model import save_tiny_weights
    return save_tiny_weights(tmp_path_factory.mktemp("w") / "tiny.safetensors")
