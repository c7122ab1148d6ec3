"""The GPU benchmark runs end to end on the CPU with the tiny shape (a smoke run, seconds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNS = ("body", "body+cache", "capture", "capture-hooks", "score", "score-zero")


def test_bench_gpu_smoke_run_on_cpu(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_gpu.py"), "--device", "cpu",
           "--shape", "tiny", "--seq-len", "32", "--batch-size", "2", "--batches", "1",
           "--rounds", "1", "--threads", "1", "--json", str(out)]
    env = os.environ | {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in RUNS:
        assert f"\n  {name} " in done.stdout, done.stdout
    assert "capture / body =" in done.stdout
    result = json.loads(out.read_text())["results"][0]
    assert result["shape"] == "tiny" and result["device"] == "cpu"
    assert set(result["runs"]) == set(RUNS)
    assert all(r["tokens_per_s"] > 0 for r in result["runs"].values())
    assert result["weights_gib"] is None  # no GPU memory on the CPU


def test_bench_gpu_without_cuda_says_so_and_succeeds():
    """`make bench` runs every benchmark; on a machine without CUDA this one steps aside."""
    import torch

    if torch.cuda.is_available():
        return
    env = os.environ | {"PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_gpu.py")], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and "no CUDA device" in done.stdout
