"""On a machine with an NVIDIA GPU and JAX's CUDA plugin: the GPU gives the CPU's numbers (skipped elsewhere).

The test session itself runs on CPU devices (conftest.py), so the check runs in a subprocess that sees the GPU:
scripts/device_check.py compares the GPU with the host CPU per path (float64 to 1e-6, float32 means within a
tenth of their standard error) and in the full float64 gradient (1e-6 per driver leaf).
"""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HAS_GPU = shutil.which("nvidia-smi") is not None and any(
    importlib.util.find_spec(f"jax_cuda{v}_plugin") is not None for v in (12, 13))


@pytest.mark.skipif(not HAS_GPU, reason="no NVIDIA GPU with JAX's CUDA plugin on this machine")
def test_gpu_matches_cpu():
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "XLA_FLAGS")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "device_check.py"), "--paths", "4096", "--horizon",
                        "0.25"], env=env, capture_output=True, text=True, timeout=900)
    assert "cuda" in r.stdout.partition("\n")[0], r.stdout + r.stderr  # the accelerator side is the GPU
    assert r.returncode == 0, r.stdout + r.stderr
