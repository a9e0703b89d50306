"""The native kernels' fork-join (csrc/cpu/parallel.h) joins every thread before it returns or throws.

A std::thread destroyed while joinable calls std::terminate ("terminate called without an active exception") and
kills the interpreter, after whatever error the command had already printed. Before the fix, a piece that threw on
the caller's thread (or a thread that could not be started under load) did exactly that. This test compiles a small
program against the header and checks that an exception from any piece is rethrown after the join, and that every
piece runs.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PROGRAM = r"""
#include <atomic>
#include <cstdio>
#include <stdexcept>
#include "cpu/parallel.h"
int main() {
  std::atomic<int> ran{0};
  for (int thrower : {0, 2}) {
    try {
      nnp::run_threads(4, [&](int t) { ran++; if (t == thrower) throw std::runtime_error("piece failed"); });
      std::puts("no exception");
      return 1;
    } catch (const std::runtime_error& e) {
      std::printf("caught %s from piece %d\n", e.what(), thrower);
    }
  }
  std::printf("pieces run %d\n", ran.load());
  return ran.load() == 8 ? 0 : 2;
}
"""


@pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler")
def test_a_throwing_piece_is_rethrown_after_every_thread_joined(tmp_path: Path) -> None:
    src = tmp_path / "fork_join.cpp"
    src.write_text(PROGRAM)
    exe = tmp_path / "fork_join"
    subprocess.run(["g++", "-std=c++17", "-O1", "-pthread", f"-I{REPO / 'csrc'}", str(src), "-o", str(exe)],
                   check=True, capture_output=True, timeout=120)
    done = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    assert done.stdout.splitlines() == ["caught piece failed from piece 0", "caught piece failed from piece 2",
                                        "pieces run 8"]
