"""Datasets as in-memory tensors: readers for the IDX files of MNIST and FashionMNIST
and the binary batches of CIFAR-10/100, a class-stratified split, the 32x32 resize of
source 002, and two generated data sets (a small learnable one for tests and the
two-attribute data model of source 002 section 3). Nothing here downloads: a missing
data set raises ``FileNotFoundError`` saying how to get it, and a corrupt file raises
``ValueError`` naming the file and what is wrong with it."""

from __future__ import annotations

import gzip
import math
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "Dataset",
    "read_idx",
    "fashion_mnist",
    "mnist",
    "cifar10",
    "cifar100",
    "stratified_split",
    "resize",
    "synthetic",
    "two_attribute",
    "FASHION_MNIST_ROOT",
]

PathLike: TypeAlias = str | os.PathLike[str]
Index: TypeAlias = torch.Tensor | np.ndarray | Sequence[int] | slice

FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")

# IDX element types: code -> big-endian numpy dtype (the format stores all values big-endian).
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_IMAGES = 2051
_IDX_LABELS = 2049
_IDX_NAMES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_CIFAR_PIXELS = 3 * 32 * 32
MAX_RESIZE = 4096  # the largest image side resize() makes


@dataclass(eq=False, repr=False)
class Dataset:
    """A labelled data set held in memory: ``x`` is float32 ``[N, C, H, W]`` (images
    scaled to [0, 1]; the generated ``two_attribute`` data keeps its raw, signed
    attribute values), ``y`` is int64 ``[N]`` with values in ``[0, num_classes)``,
    ``name`` says where it came from (e.g. ``"fashion-mnist/train"``), and ``group``
    is an optional int64 ``[N]`` tag per sample (``two_attribute`` marks its small
    subsets with 1) that ``subset`` carries along. Construction validates dtypes,
    shapes and the label range, so a Dataset that exists is consistent."""

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    name: str
    group: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.x, torch.Tensor) or self.x.dtype != torch.float32 or self.x.dim() != 4:
            raise ValueError(f"Dataset x must be a float32 tensor [N, C, H, W], got {_describe(self.x)}")
        if not isinstance(self.y, torch.Tensor) or self.y.dtype != torch.int64 or self.y.dim() != 1:
            raise ValueError(f"Dataset y must be an int64 tensor [N], got {_describe(self.y)}")
        if self.y.shape[0] != self.x.shape[0]:
            raise ValueError(f"Dataset x has {self.x.shape[0]} samples but y has {self.y.shape[0]}")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"Dataset num_classes must be a positive int, got {self.num_classes!r}")
        if len(self.y) and (int(self.y.min()) < 0 or int(self.y.max()) >= self.num_classes):
            raise ValueError(
                f"Dataset y has labels in [{int(self.y.min())}, {int(self.y.max())}], "
                f"outside [0, num_classes={self.num_classes})"
            )
        if self.group is not None and (
            not isinstance(self.group, torch.Tensor)
            or self.group.dtype != torch.int64
            or self.group.shape != self.y.shape
        ):
            raise ValueError(
                f"Dataset group must be None or an int64 tensor [{len(self.y)}], got {_describe(self.group)}"
            )

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, n={len(self)}, shape={tuple(self.x.shape[1:])}, "
            f"num_classes={self.num_classes})"
        )

    def subset(self, idx: Index) -> Dataset:
        """The samples at ``idx`` (integer indices, a boolean mask of length N, or a
        slice), in that order, as a new Dataset with the same ``num_classes`` and
        ``name``; integer indices are checked against ``[0, N)`` (negative indices are
        refused, since here they almost always signal a bug), and the selected tensors
        are copies unless ``idx`` is a slice."""
        if isinstance(idx, slice):
            sel: slice | torch.Tensor = idx
        else:
            if not isinstance(idx, torch.Tensor):
                arr = np.asarray(idx)
                # An empty list becomes float64 in NumPy; it means "no samples", not a dtype error.
                idx = torch.from_numpy(arr.astype(np.int64) if arr.size == 0 else arr)
            sel = idx
            if sel.dtype == torch.bool:
                if sel.shape != self.y.shape:
                    raise ValueError(f"subset idx is a boolean mask of shape {tuple(sel.shape)}, need ({len(self)},)")
            elif sel.dtype.is_floating_point or sel.dtype.is_complex or sel.dim() != 1:
                raise ValueError(f"subset idx must be 1-D integer indices or a boolean mask, got {_describe(sel)}")
            elif len(sel) and (int(sel.min()) < 0 or int(sel.max()) >= len(self)):
                raise ValueError(
                    f"subset idx has values in [{int(sel.min())}, {int(sel.max())}], outside [0, {len(self)})"
                )
            sel = sel.to(torch.int64) if sel.dtype != torch.bool else sel
        group = None if self.group is None else self.group[sel]
        return Dataset(self.x[sel], self.y[sel], self.num_classes, self.name, group)


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


# --------------------------------------------------------------------------- IDX


def read_idx(path: PathLike, magic: int | None = None) -> np.ndarray:
    """Read one IDX file (the format of MNIST and FashionMNIST; gzipped when its name
    ends in ``.gz`` or its bytes start with the gzip signature) into a native-endian,
    writable array shaped by its header: magic 2051 gives uint8 images
    ``[N, rows, cols]``, 2049 uint8 labels ``[N]``; the other IDX element types
    (int8/16/32, float32/64) are read too. ``magic`` optionally demands one magic
    number. A file that is not valid IDX (bad gzip stream, bad magic, unknown type,
    short header, data size not what the header promises) raises ``ValueError``
    naming the path and the fault; a missing file raises ``FileNotFoundError``."""
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"read_idx path must be a path, got {path!r}")
    path = Path(path)
    raw = path.read_bytes()
    if path.suffix == ".gz" or raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: not a valid gzip file ({exc or type(exc).__name__})") from None
    if len(raw) < 4:
        raise ValueError(f"{path}: {len(raw)} bytes, too short for an IDX header (4 bytes of magic)")
    code, ndim = raw[2], raw[3]
    found = int.from_bytes(raw[:4], "big")
    if raw[0] != 0 or raw[1] != 0 or code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(f"{path}: bad IDX magic number {found:#010x} (expected e.g. {_IDX_IMAGES} or {_IDX_LABELS})")
    if magic is not None and found != magic:
        raise ValueError(f"{path}: IDX magic number is {found}, expected {magic}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header: {len(raw)} bytes, the {ndim} dimensions need {header}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[code]
    want = math.prod(dims) * dtype.itemsize
    have = len(raw) - header
    if have != want:
        what = "truncated" if have < want else "has trailing bytes"
        raise ValueError(f"{path}: {what}: {have} data bytes, header dimensions {list(dims)} need {want}")
    # bytearray makes the buffer writable, so torch.from_numpy can share it without a warning.
    data = np.frombuffer(bytearray(memoryview(raw)[header:]), dtype=dtype).reshape(dims)
    return data.astype(dtype.newbyteorder("="), copy=False)


def _find(root: Path, stem: str) -> Path | None:
    # The Debian package ships .gz; a user's folder may hold the unpacked files.
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    return None


def _idx_dataset(root: Path, train: bool, name: str, how_to_get: str) -> Dataset:
    found = [_find(root, stem) for stem in _IDX_NAMES[train]]
    missing = [stem for stem, p in zip(_IDX_NAMES[train], found, strict=True) if p is None]
    if missing:
        raise FileNotFoundError(
            f"{name}: {', '.join(m + '[.gz]' for m in missing)} not found in {root}. {how_to_get} "
            "(nnphases downloads nothing)"
        )
    images_path, labels_path = found
    assert images_path is not None and labels_path is not None
    # The magic numbers fix the element type (unsigned byte) and the rank (3 and 1).
    images = read_idx(images_path, magic=_IDX_IMAGES)
    labels = read_idx(labels_path, magic=_IDX_LABELS)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds {labels.shape[0]} labels"
        )
    if images.shape[0] == 0:  # a data set of nothing would fail later, far from the files at fault
        raise ValueError(f"{images_path} and {labels_path} hold no images")
    if labels.max() >= 10:
        raise ValueError(f"{labels_path}: label {int(labels.max())} outside [0, 10)")
    x = torch.from_numpy(images).unsqueeze(1).to(torch.float32).div_(255.0)
    y = torch.from_numpy(labels).to(torch.int64)
    return Dataset(x, y, 10, f"{name}/{'train' if train else 'test'}")


def fashion_mnist(root: PathLike | None = None, train: bool = True) -> Dataset:
    """FashionMNIST (60,000 training or 10,000 test images, 1x28x28, 10 classes) from
    the four IDX files in ``root`` (default ``/usr/share/datasets/fashion-mnist``,
    where Debian's ``dataset-fashion-mnist`` package puts them), gzipped or not;
    missing files raise ``FileNotFoundError`` saying how to get them."""
    folder = FASHION_MNIST_ROOT if root is None else _root(root, "fashion_mnist")
    how = (
        "Install it with `apt-get install dataset-fashion-mnist` (files in "
        f"{FASHION_MNIST_ROOT}) or pass root= a folder with the four FashionMNIST IDX files"
    )
    return _idx_dataset(folder, train, "fashion-mnist", how)


def mnist(root: PathLike, train: bool = True) -> Dataset:
    """MNIST (60,000 training or 10,000 test images, 1x28x28, 10 classes) from the four
    IDX files (``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
    ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``) in ``root``;
    missing files raise ``FileNotFoundError`` saying how to get them."""
    how = "Download the four MNIST IDX files (train/t10k images and labels) into a folder and pass it as root="
    return _idx_dataset(_root(root, "mnist"), train, "mnist", how)


def _root(root: object, name: str) -> Path:
    # Path(None) fails with a message that names neither the data set nor the argument.
    if isinstance(root, bytes) or not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"{name} root must be a folder, got {root!r}")
    return Path(root)


# --------------------------------------------------------------------------- CIFAR


def _cifar_files(root: Path, subfolder: str, names: list[str], name: str, archive: str) -> list[Path]:
    # Accept the extracted archive's own folder as well as its parent.
    for folder in (root, root / subfolder):
        if all((folder / n).is_file() for n in names):
            return [folder / n for n in names]
    missing = [n for n in names if not (root / n).is_file() and not (root / subfolder / n).is_file()]
    raise FileNotFoundError(
        f"{name}: {', '.join(missing)} not found in {root} or {root / subfolder}. Download {archive} "
        f"(binary version) from https://www.cs.toronto.edu/~kriz/cifar.html, extract it and pass the folder "
        "as root= (nnphases downloads nothing)"
    )


def _read_records(path: Path, label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    raw = path.read_bytes()
    record = label_bytes + _CIFAR_PIXELS
    if len(raw) == 0 or len(raw) % record:
        raise ValueError(f"{path}: {len(raw)} bytes is not a positive multiple of the {record}-byte record size")
    rows = np.frombuffer(bytearray(raw), dtype=np.uint8).reshape(-1, record)
    return rows[:, :label_bytes], rows[:, label_bytes:]


def _cifar(paths: list[Path], label_bytes: int, label_col: int, num_classes: int, name: str) -> Dataset:
    labels, pixels = [], []
    for path in paths:
        lab, pix = _read_records(path, label_bytes)
        lab = lab[:, label_col]
        if lab.max() >= num_classes:
            raise ValueError(f"{path}: label {int(lab.max())} outside [0, {num_classes})")
        labels.append(lab)
        pixels.append(pix)
    # Records store each channel's 32x32 plane row-major, R then G then B: a plain reshape is [N, 3, 32, 32].
    x = torch.from_numpy(np.concatenate(pixels).reshape(-1, 3, 32, 32)).to(torch.float32).div_(255.0)
    y = torch.from_numpy(np.concatenate(labels)).to(torch.int64)
    return Dataset(x, y, num_classes, name)


def cifar10(root: PathLike, train: bool = True) -> Dataset:
    """CIFAR-10 (50,000 training or 10,000 test images, 3x32x32, 10 classes) from the
    official binary batches ``data_batch_1.bin`` .. ``data_batch_5.bin`` and
    ``test_batch.bin`` (records of one label byte and 3,072 pixel bytes) in ``root`` or
    ``root/cifar-10-batches-bin``; a file whose size is not a whole number of records
    raises ``ValueError`` naming it."""
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if train else ["test_batch.bin"]
    paths = _cifar_files(_root(root, "cifar10"), "cifar-10-batches-bin", names, "cifar10", "cifar-10-binary.tar.gz")
    return _cifar(paths, 1, 0, 10, f"cifar10/{'train' if train else 'test'}")


def cifar100(root: PathLike, train: bool = True, label: str = "fine") -> Dataset:
    """CIFAR-100 (50,000 training or 10,000 test images, 3x32x32) from the official
    binary files ``train.bin`` / ``test.bin`` (records of a coarse label byte, a fine
    label byte and 3,072 pixel bytes) in ``root`` or ``root/cifar-100-binary``, with
    ``label="fine"`` (100 classes) or ``"coarse"`` (20 superclasses); a file whose size
    is not a whole number of records raises ``ValueError`` naming it."""
    if label not in ("fine", "coarse"):
        raise ValueError(f"cifar100 label must be 'fine' or 'coarse', got {label!r}")
    names = ["train.bin" if train else "test.bin"]
    paths = _cifar_files(_root(root, "cifar100"), "cifar-100-binary", names, "cifar100", "cifar-100-binary.tar.gz")
    col, classes = (1, 100) if label == "fine" else (0, 20)
    return _cifar(paths, 2, col, classes, f"cifar100-{label}/{'train' if train else 'test'}")


# --------------------------------------------------------------------------- transforms


def stratified_split(y: torch.Tensor | np.ndarray, holdout: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Split sample indices ``0..N-1`` into ``(train_idx, holdout_idx)``, int64 tensors
    in ascending order, with exactly ``holdout`` samples held out and each class's
    share proportional to its count: class ``c`` gets ``floor(holdout * n_c / N)``,
    and the samples left over go to the classes with the largest remainders (ties to
    the lower class), so every class is within one sample of its exact quota. Which
    samples of a class are held out is a random choice fixed by ``seed``; ``holdout``
    must be an int in ``(0, N)``."""
    labels = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"stratified_split y must be 1-D integer labels, got {labels.dtype} of shape {labels.shape}")
    n = len(labels)
    if isinstance(holdout, bool) or not isinstance(holdout, (int, np.integer)):
        raise TypeError(f"stratified_split holdout must be an int, got {holdout!r}")
    if not 0 < holdout < n:
        raise ValueError(f"stratified_split holdout={holdout} must be in (0, len(y)={n})")
    if labels.min() < 0:
        raise ValueError(f"stratified_split y has a negative label {int(labels.min())}")
    counts = np.bincount(labels)
    exact = counts * holdout / n
    quota = np.floor(exact).astype(np.int64)
    # Largest remainders first; the stable sort breaks ties toward the lower class.
    order = np.argsort(-(exact - quota), kind="stable")
    quota[order[: holdout - int(quota.sum())]] += 1
    rng = np.random.default_rng(seed)
    held = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in enumerate(quota) if q]
    mask = np.zeros(n, dtype=bool)
    mask[np.concatenate(held)] = True
    return torch.from_numpy(np.flatnonzero(~mask)), torch.from_numpy(np.flatnonzero(mask))


def resize(ds: Dataset, size: int = 32, batch: int = 8192) -> Dataset:
    """The data set with every image resized to ``size`` x ``size`` by bilinear
    interpolation (``align_corners=False``, no antialiasing), as source 002 scales
    28x28 MNIST/FashionMNIST to 32x32; labels, name and groups are kept, values stay
    in the input's range (bilinear weights are a convex combination), and images are
    resized ``batch`` at a time to bound the temporary memory."""
    if not isinstance(ds, Dataset):
        raise TypeError(f"resize ds must be a Dataset, got {type(ds).__name__}")
    # The bound is the command line's: a size of tens of thousands would allocate terabytes before failing.
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_RESIZE:
        raise ValueError(f"resize size must be an int in [1, {MAX_RESIZE}], got {size!r}")
    if isinstance(batch, bool) or not isinstance(batch, int):
        raise TypeError(f"resize batch must be a positive int, got {batch!r}")
    if batch < 1:
        raise ValueError(f"resize batch must be positive, got {batch!r}")
    n, c = ds.x.shape[:2]
    out = torch.empty((n, c, size, size), dtype=torch.float32)
    for start in range(0, n, batch):
        out[start : start + batch] = F.interpolate(
            ds.x[start : start + batch], size=(size, size), mode="bilinear", align_corners=False, antialias=False
        )
    return Dataset(out, ds.y, ds.num_classes, ds.name, ds.group)


# --------------------------------------------------------------------------- generated data


def synthetic(n: int = 600, num_classes: int = 10, shape: tuple[int, int, int] = (1, 8, 8), seed: int = 0) -> Dataset:
    """Small, quickly learnable data for tests: each class has a random prototype
    image with pixels in [0.2, 0.8], and each sample is its class's prototype plus
    Gaussian noise (std 0.1) clipped to [0, 1]; class sizes differ by at most one
    (exactly ``n / num_classes`` when it divides), samples come in a random order,
    and everything is fixed by ``seed``."""
    if len(shape) != 3 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"synthetic shape must be three positive ints (C, H, W), got {shape!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"synthetic num_classes must be an int >= 2, got {num_classes!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < num_classes:
        raise ValueError(f"synthetic n={n!r} must be an int >= num_classes={num_classes}")
    rng = np.random.default_rng(seed)
    prototypes = rng.uniform(0.2, 0.8, size=(num_classes, *shape))
    y = rng.permutation(np.arange(n) % num_classes)
    x = np.clip(prototypes[y] + rng.normal(0.0, 0.1, size=(n, *shape)), 0.0, 1.0)
    return Dataset(
        torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64)), num_classes, "synthetic"
    )


def two_attribute(
    n: int = 1000,
    large_fraction: float = 0.9,
    separation: float = 1.0,
    noise: float = 0.5,
    seed: int = 0,
    weak: float = 0.5,
) -> Dataset:
    """The data model of source 002 section 3 (spec §2), reconstructed from its prose
    since the formulas did not survive extraction: binary classification, balanced
    classes of ``n / 2`` samples (``n`` even), two attributes, with sign ``s = -1``
    for class 0 and ``+1`` for class 1. A fraction ``large_fraction`` (in (0.5, 1),
    rounded to whole samples, at least one of each subset per class) of each class
    forms its *large* subset at ``(s * separation, s * weak * separation)``; the rest
    form its *small* subset at ``(-s * separation, s * weak * separation)``, which
    looks like the other class on the first attribute and so can be told apart only
    by the second. ``separation`` (> 0) is the first attribute's class-mean
    magnitude; ``weak`` (in (0, 1]) scales the second attribute's magnitude down, so
    that the same additive noise makes it the noisier, less reliable one; ``noise``
    (>= 0) is the half-width of the independent uniform noise ``U[-noise, noise)``
    added to every attribute (the first attribute separates the large subsets when
    ``noise < separation``, the second the small ones when ``noise <= weak *
    separation``); ``seed`` fixes noise and sample order. Samples come shuffled; ``x``
    is float32 ``[n, 1, 1, 2]`` (the 4-D convention of the other data sets, so
    ``x.flatten(1)`` is the attribute pair), raw and signed, not scaled to [0, 1];
    ``group`` is 0 for large-subset samples and 1 for small-subset ones."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 4 or n % 2:
        raise ValueError(f"two_attribute n={n!r} must be an even int >= 4 (balanced classes)")
    for arg, value in (
        ("large_fraction", large_fraction),
        ("separation", separation),
        ("noise", noise),
        ("weak", weak),
    ):
        # Strings would fail in a comparison that names neither; infinities would become infinite samples.
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"two_attribute {arg} must be a number, got {value!r}")
        if math.isinf(value):
            raise ValueError(f"two_attribute {arg}={value!r} must be finite")
    if not 0.5 < large_fraction < 1.0:
        raise ValueError(f"two_attribute large_fraction={large_fraction!r} must be in (0.5, 1)")
    if not separation > 0:
        raise ValueError(f"two_attribute separation={separation!r} must be > 0")
    if not noise >= 0:
        raise ValueError(f"two_attribute noise={noise!r} must be >= 0")
    if not 0 < weak <= 1:
        raise ValueError(f"two_attribute weak={weak!r} must be in (0, 1]")
    per_class = n // 2
    small = round((1.0 - large_fraction) * per_class)
    if not 1 <= small <= per_class - 1:
        raise ValueError(
            f"two_attribute n={n}, large_fraction={large_fraction} leave {small} of {per_class} samples per class "
            "in the small subset; both subsets need at least one"
        )
    y = np.repeat(np.array([0, 1]), per_class)
    group = np.tile(np.r_[np.zeros(per_class - small), np.ones(small)], 2).astype(np.int64)
    s = 2.0 * y - 1.0
    first = np.where(group == 1, -s, s) * separation
    second = s * weak * separation
    rng = np.random.default_rng(seed)
    x = np.stack([first, second], axis=1) + rng.uniform(-noise, noise, size=(n, 2))
    order = rng.permutation(n)
    return Dataset(
        torch.from_numpy(x[order].astype(np.float32).reshape(n, 1, 1, 2)),
        torch.from_numpy(y[order].astype(np.int64)),
        2,
        "two-attribute",
        torch.from_numpy(group[order]),
    )
