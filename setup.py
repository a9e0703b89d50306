"""Builds nnphases._C: the C++ CPU kernels always, the CUDA launchers where they can run or when asked.

Sources are globbed (csrc/cpu/*.cpp and csrc/bind/*.cpp; csrc/cuda/*.cu and
csrc/bind/cuda/*.cpp with CUDA): adding a kernel adds files and never edits this
script or a list of bindings.

NNPHASES_CUDA=auto|0|1 says whether the CUDA part is built: ``auto`` (the
default) builds it when nvcc is found and the CUDA driver sees a GPU, ``1``
whenever nvcc is found (a login node without a GPU building for GPU nodes; an
error without nvcc), ``0`` never. NNPHASES_CUDA_ARCHS sets the target list,
NNPHASES_MARCH the CPU target (default "native": the package is built where it
runs; set "x86-64-v3" for portable AVX2 builds), NNPHASES_BUILD_JOBS the
parallel compiles (default: every core). The CUDA part links cudart statically
and never includes torch, so it builds without a GPU and imports on machines
without a driver.

Objects are kept in build/objects-<key>/ (the key hashes the compile flags) and
compiled again only when their source or a header under csrc/ is newer, so
reinstalling an unchanged tree only links.
"""

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pybind11 import __version__ as pybind11_version
from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"
HEADERS = ("*.h", "*.cuh", "*.hpp")
FORCE = False  # build_ext --force: every object compiled again


def rel(paths):
    return sorted(str(p.relative_to(ROOT)) for p in paths)


def jobs():
    value = os.environ.get("NNPHASES_BUILD_JOBS", "0")
    if not value.isdigit():
        raise SystemExit(f"nnphases build: NNPHASES_BUILD_JOBS must be a whole number (0: every core), got {value!r}")
    return int(value) or os.cpu_count() or 1


def newest_header():
    return max((p.stat().st_mtime for pattern in HEADERS for p in CSRC.rglob(pattern)), default=0.0)


def stale(obj, src):
    """Whether ``obj`` must be compiled again: forced, missing, or older than its source or any header."""
    obj = Path(obj)
    return FORCE or not obj.exists() or obj.stat().st_mtime < max(Path(src).stat().st_mtime, newest_header())


def cpu():
    """What -march=native compiles for: a tree shared by machines of several kinds keeps objects per kind."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return ""


def gpu_visible():
    """(whether the CUDA driver loads and sees a GPU, why), asked of the driver itself without torch."""
    for name in ("libcuda.so.1", "libcuda.so"):
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    else:
        return False, "no CUDA driver (libcuda) is installed"
    if lib.cuInit(0) != 0:
        return False, "the CUDA driver does not start (no usable GPU)"
    count = ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
        return False, "the CUDA driver sees no GPU"
    return True, f"the CUDA driver sees {count.value} GPU(s)"


def find_cuda():
    """(nvcc, CUDA home) when the CUDA part is to be built, else None; says why on stderr either way."""
    mode = os.environ.get("NNPHASES_CUDA", "auto").lower()
    if mode not in ("auto", "0", "off", "false", "no", "1", "on", "true", "yes"):
        raise SystemExit(f"nnphases build: NNPHASES_CUDA must be auto, 0 or 1, got {mode!r}")
    if mode in ("0", "off", "false", "no"):
        note("CUDA part not built (NNPHASES_CUDA=0)")
        return None
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    nvcc = str(Path(home) / "bin" / "nvcc") if home else shutil.which("nvcc")
    if not home:
        for cand in ((Path(nvcc).resolve().parent.parent,) if nvcc else ()) + (Path("/usr/local/cuda"),):
            if (cand / "include" / "cuda_runtime.h").exists():
                home = str(cand)
                break
    found = bool(nvcc and home and Path(nvcc).exists())
    if mode == "auto":
        if not found:
            note("CUDA part not built: no nvcc/CUDA toolkit found (set CUDA_HOME)")
            return None
        usable, why = gpu_visible()
        if not usable:
            note(f"CUDA part not built: {why}; NNPHASES_CUDA=1 builds it anyway")
            return None
        note(f"CUDA part built with {nvcc}: {why}")
    elif not found:
        raise SystemExit("nnphases build: NNPHASES_CUDA=1 but no nvcc/CUDA toolkit was found (set CUDA_HOME)")
    else:
        note(f"CUDA part built with {nvcc} (NNPHASES_CUDA={mode})")
    return nvcc, Path(home)


def note(text):
    print(f"nnphases build: {text}", file=sys.stderr, flush=True)


class BuildExt(build_ext):
    """Keeps objects between builds (see the module docstring) and compiles csrc/cuda/*.cu with nvcc, in parallel,
    into objects linked into the extension."""

    def build_extensions(self):
        global FORCE
        FORCE = bool(self.force)
        cuda = find_cuda()
        archs = os.environ.get("NNPHASES_CUDA_ARCHS", "80;90").split(";")
        for ext in self.extensions:
            if cuda:
                self._add_cuda(ext, *cuda, archs)
        flags = [sys.implementation.cache_tag, pybind11_version, self.compiler.compiler_so, cpu(), cuda and archs,
                 *(e.extra_compile_args + [str(m) for m in e.define_macros] for e in self.extensions)]
        key = hashlib.sha256(repr(flags).encode()).hexdigest()[:12]
        self.build_temp = str(ROOT / "build" / f"objects-{key}")
        for ext in self.extensions:
            if cuda:
                ext.extra_objects += self._nvcc(cuda[0], archs)
        super().build_extensions()

    def _add_cuda(self, ext, nvcc, home, archs):
        ext.sources += rel((CSRC / "bind" / "cuda").glob("*.cpp"))
        ext.define_macros.append(("NNPHASES_WITH_CUDA", "1"))
        ext.include_dirs.append(str(home / "include"))
        ext.library_dirs.append(str(home / "lib64"))
        ext.libraries += ["cudart_static", "rt", "dl", "pthread"]

    def _nvcc(self, nvcc, archs):
        gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
        gencode.append(f"-gencode=arch=compute_{archs[-1]},code=compute_{archs[-1]}")  # PTX for newer GPUs
        out_dir = Path(self.build_temp) / "cuda"
        out_dir.mkdir(parents=True, exist_ok=True)
        cmds, objects = [], []
        for src in sorted((CSRC / "cuda").glob("*.cu")):
            obj = out_dir / (src.stem + ".o")
            objects.append(str(obj))
            if stale(obj, src):
                cmds.append([nvcc, "-c", str(src), "-o", str(obj), "-O3", "-std=c++17", "-DNNPHASES_WITH_CUDA",
                             "-Xcompiler", "-fPIC", f"-I{CSRC}", *gencode])
        for cmd in cmds:
            self.announce(" ".join(cmd), level=2)
        with ThreadPoolExecutor(jobs()) as pool:
            list(pool.map(subprocess.check_call, cmds))
        return objects


class BuildPy(build_py):
    """Ships the CUDA device code so the CuPy backend can compile it at run time."""

    def run(self):
        super().run()
        dst = Path(self.build_lib) / "nnphases" / "_csrc"
        for src in [CSRC / "kinds.h", *(CSRC / "cuda").glob("*.cuh")]:
            target = dst / src.relative_to(CSRC)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


march = os.environ.get("NNPHASES_MARCH", "native")
ext = Pybind11Extension(
    "nnphases._C",
    rel([CSRC / "bindings.cpp", *(CSRC / "cpu").glob("*.cpp"), *(CSRC / "bind").glob("*.cpp")]),
    include_dirs=[str(CSRC)],
    cxx_std=17,
    extra_compile_args=["-O3", *([f"-march={march}"] if march else []), "-fno-math-errno"],
)

ParallelCompile(default=jobs(), needs_recompile=stale).install()
setup(ext_modules=[ext], cmdclass={"build_ext": BuildExt, "build_py": BuildPy})
