"""Builds nnphases._C: the C++ CPU kernels always, the CUDA launchers when nvcc is found.

Sources are globbed (csrc/cpu/*.cpp and csrc/bind/*.cpp; csrc/cuda/*.cu and
csrc/bind/cuda/*.cpp with CUDA): adding a kernel adds files and never edits this
script or a list of bindings. NNPHASES_CUDA=auto|0|1 overrides the nvcc probe,
NNPHASES_CUDA_ARCHS the target list, NNPHASES_MARCH the CPU target (default
"native": the package is built where it runs; set "x86-64-v3" for portable
AVX2 builds). The CUDA part links cudart statically and never includes torch,
so it builds without a GPU and imports on machines without a driver.
"""

import os
import shutil
import subprocess
from pathlib import Path

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"


def rel(paths):
    return sorted(str(p.relative_to(ROOT)) for p in paths)


def find_cuda():
    mode = os.environ.get("NNPHASES_CUDA", "auto").lower()
    if mode in ("0", "off", "false", "no"):
        return None
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    nvcc = str(Path(home) / "bin" / "nvcc") if home else shutil.which("nvcc")
    if not home:
        for cand in ((Path(nvcc).resolve().parent.parent,) if nvcc else ()) + (Path("/usr/local/cuda"),):
            if (cand / "include" / "cuda_runtime.h").exists():
                home = str(cand)
                break
    if nvcc and home and Path(nvcc).exists():
        return nvcc, Path(home)
    if mode in ("1", "on", "true", "yes"):
        raise RuntimeError("NNPHASES_CUDA=1 but no nvcc/CUDA toolkit was found (set CUDA_HOME)")
    return None


class BuildExt(build_ext):
    """Compiles csrc/cuda/*.cu with nvcc into objects linked into the extension."""

    def build_extensions(self):
        cuda = find_cuda()
        for ext in self.extensions:
            if cuda:
                self._add_cuda(ext, *cuda)
        super().build_extensions()

    def _add_cuda(self, ext, nvcc, home):
        archs = os.environ.get("NNPHASES_CUDA_ARCHS", "80;90").split(";")
        gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
        gencode.append(f"-gencode=arch=compute_{archs[-1]},code=compute_{archs[-1]}")  # PTX for newer GPUs
        out_dir = Path(self.build_temp) / "cuda"
        out_dir.mkdir(parents=True, exist_ok=True)
        for src in sorted((CSRC / "cuda").glob("*.cu")):
            obj = out_dir / (src.stem + ".o")
            cmd = [nvcc, "-c", str(src), "-o", str(obj), "-O3", "-std=c++17", "-DNNPHASES_WITH_CUDA",
                   "-Xcompiler", "-fPIC", f"-I{CSRC}", *gencode]
            self.announce(" ".join(cmd), level=2)
            subprocess.check_call(cmd)
            ext.extra_objects.append(str(obj))
        ext.sources += rel((CSRC / "bind" / "cuda").glob("*.cpp"))
        ext.define_macros.append(("NNPHASES_WITH_CUDA", "1"))
        ext.include_dirs.append(str(home / "include"))
        ext.library_dirs.append(str(home / "lib64"))
        ext.libraries += ["cudart_static", "rt", "dl", "pthread"]


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

setup(ext_modules=[ext], cmdclass={"build_ext": BuildExt, "build_py": BuildPy})
