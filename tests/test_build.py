"""The build of nnphases._C (setup.py): the CUDA part only where it can run or when asked, all of its sources
compiled and linked on a machine with nvcc even without a GPU, objects reused by a rebuild of an unchanged tree,
and bad build settings refused in one line."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pybind11", reason="setup.py needs pybind11 (the test extra installs it)")

ROOT = Path(__file__).resolve().parent.parent


def build(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``setup.py build_ext`` into ``tmp_path``, verbose, with the given build settings."""
    cmd = [sys.executable, "setup.py", "-v", "build_ext", "--build-lib", str(tmp_path)]
    return subprocess.run(cmd, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=1200)


def load(tmp_path: Path, expr: str) -> str:
    """``expr`` evaluated on the extension built into ``tmp_path``, loaded by itself in a fresh interpreter."""
    (so,) = tmp_path.glob("nnphases/_C*.so")
    code = ("import importlib.util as u, sys\n"
            f"spec = u.spec_from_file_location('nnphases._C', {str(so)!r})\n"
            "m = u.module_from_spec(spec); spec.loader.exec_module(m)\n"
            f"print({expr})")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def compiled(log: str) -> list[str]:
    """The sources compiled by a build, from its verbose log (the C++ compiler's and nvcc's command lines)."""
    return re.findall(r"-c (\S+\.(?:cpp|cu))\b", log)


def has_gpu() -> bool:
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    return lib.cuInit(0) == 0 and lib.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
def test_cuda_part_compiles_links_and_imports_without_a_driver(tmp_path):
    """Every csrc/cuda/*.cu and csrc/bind/cuda/*.cpp compiled (for one architecture, to stay within minutes) and
    linked; the extension imports where no driver is and says so rather than failing."""
    done = build(tmp_path, NNPHASES_CUDA="1", NNPHASES_CUDA_ARCHS="90")
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "CUDA part built" in done.stderr
    assert load(tmp_path, "m.has_cuda") == "True"
    if not has_gpu():
        report = load(tmp_path, "m.cuda_device_report()")
        assert report and "\n" not in report


def test_auto_builds_the_cuda_part_only_where_a_gpu_is(tmp_path):
    done = build(tmp_path, NNPHASES_CUDA="auto")
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    want = has_gpu() and shutil.which("nvcc") is not None
    assert load(tmp_path, "m.has_cuda") == str(want)
    assert ("CUDA part built" if want else "CUDA part not built") in done.stderr


def test_a_rebuild_compiles_only_what_changed(tmp_path):
    first = build(tmp_path / "a", NNPHASES_CUDA="0")
    assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
    again = build(tmp_path / "b", NNPHASES_CUDA="0")
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert compiled(again.stdout + again.stderr) == []
    assert load(tmp_path / "b", "m.has_cuda") == "False"
    touched = ROOT / "csrc" / "cpu" / "pack_masks.cpp"
    os.utime(touched)  # as an edit leaves it: newer than its object
    third = build(tmp_path / "c", NNPHASES_CUDA="0")
    assert third.returncode == 0, (third.stdout + third.stderr)[-4000:]
    assert [Path(p).name for p in compiled(third.stdout + third.stderr)] == [touched.name]


@pytest.mark.parametrize("name, value", [("NNPHASES_CUDA", "maybe"), ("NNPHASES_BUILD_JOBS", "four")])
def test_bad_build_settings_are_named(tmp_path, name, value):
    done = build(tmp_path, **{name: value})
    assert done.returncode != 0
    assert f"{name} must be" in done.stderr and repr(value) in done.stderr
