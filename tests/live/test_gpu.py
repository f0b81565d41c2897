"""NVML GPU memory on a machine with a GPU (skipped elsewhere: CI has none; run on a GPU host).

The sampler is checked against NVML's own totals, and a process that holds GPU memory (torch
with CUDA, where installed) must appear as a `process` row with at least what it allocated.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from harness.loadgen.telemetry import GpuMemory

GPU = GpuMemory("node0")
pytestmark = pytest.mark.skipif(not GPU.available, reason="no GPU: NVML found none")


def test_free_memory_is_sampled_per_gpu_within_its_total() -> None:
    import pynvml

    GPU.rows.clear()
    GPU.sample(0.0, {})
    free = [r for r in GPU.rows if r["category"] == "free"]
    assert [r["gpu"] for r in free] == list(range(GPU.count))
    for row in free:
        total = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(row["gpu"])).total
        assert 0 < row["bytes"] <= total


def test_a_process_holding_gpu_memory_is_a_process_row_of_its_model() -> None:
    pytest.importorskip("torch")
    script = ("import torch, sys, time\n"
              "if not torch.cuda.is_available(): sys.exit(3)\n"
              "x = torch.empty(1 << 30, dtype=torch.uint8, device='cuda:0')\n"
              "print('ready', flush=True); time.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if proc.poll() == 3 or not line.startswith("ready"):
            pytest.skip("torch here has no CUDA")
        time.sleep(0.5)
        GPU.rows.clear()
        GPU.sample(1.0, {proc.pid: "m"})
        mine = [r for r in GPU.rows if r["category"] == "process" and r["gpu"] == 0 and r["model"] == "m"]
        if not mine and os.path.exists("/.dockerenv"):
            pytest.skip("NVML reports host PIDs inside this container")
        assert mine and mine[0]["bytes"] >= 1 << 30
    finally:
        proc.kill()
        proc.wait()
