"""Element kinds: how each supported input dtype is stored and tested for activity.

Every backend reads activations as unsigned integers of the element's width
(the *storage* dtype) and decides with two integer comparisons, which is exact
for every value including -0.0, denormals, infinities and NaN:

    active(b)    = 0 < b <= INF      (positive, not NaN; +inf counts as active)
    nonfinite(b) = (b & ABS) >= INF  (NaN or +-inf)

For ``bool`` the storage is one byte, ``INF = 0xFF`` and ``ABS = 0``: any
nonzero byte is active and nothing is non-finite. bfloat16 has no NumPy dtype,
so its bits travel as uint16 and the kind says how to read them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Kind:
    name: str
    storage: np.dtype
    inf_bits: int
    abs_mask: int
    code: int  # the integer the native layers switch on

    @property
    def itemsize(self) -> int:
        return self.storage.itemsize


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("bool", np.dtype(np.uint8), 0xFF, 0x0, 0),
        Kind("float16", np.dtype(np.uint16), 0x7C00, 0x7FFF, 1),
        Kind("bfloat16", np.dtype(np.uint16), 0x7F80, 0x7FFF, 2),
        Kind("float32", np.dtype(np.uint32), 0x7F800000, 0x7FFFFFFF, 3),
        Kind("float64", np.dtype(np.uint64), 0x7FF0000000000000, 0x7FFFFFFFFFFFFFFF, 4),
    )
}
