"""Keeps benchmarks/gpu_report.py from rotting: runs its quick cases (each checked
against the reference) when a GPU is present; skipped otherwise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_gpu_report_quick():
    script = Path(__file__).with_name("gpu_report.py")
    done = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "of copy" in done.stdout
