"""Data sets: IDX and CIFAR readers on small files written here (and the installed
FashionMNIST when present), their errors for corrupt or missing files, the
stratified split, the resize, and the two generated data sets."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from nnphases.experiments import data as D

IDX_NAMES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    header = bytes([0, 0, code, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write(path: Path, payload: bytes, gz: bool) -> Path:
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def write_idx_folder(root: Path, train: bool, n: int, gz: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    suffix = ".gz" if gz else ""
    img_name, lab_name = IDX_NAMES[train]
    write(root / (img_name + suffix), idx_bytes(images), gz)
    write(root / (lab_name + suffix), idx_bytes(labels), gz)
    return images, labels


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
@pytest.mark.parametrize(
    "arr, magic",
    [
        (np.arange(5 * 4 * 3, dtype=np.uint8).reshape(5, 4, 3), 2051),
        (np.array([3, 1, 4, 1, 5, 9], dtype=np.uint8), 2049),
        (np.zeros((0, 28, 28), dtype=np.uint8), 2051),
    ],
    ids=["images", "labels", "empty"],
)
def test_idx_round_trip(tmp_path: Path, arr: np.ndarray, magic: int, gz: bool) -> None:
    path = write(tmp_path / ("f.idx" + (".gz" if gz else "")), idx_bytes(arr), gz)
    got = D.read_idx(path, magic=magic)
    assert got.dtype == np.uint8 and got.shape == arr.shape
    np.testing.assert_array_equal(got, arr)
    assert got.flags.writeable


@pytest.mark.parametrize(
    "code, dtype", [(0x0B, ">i2"), (0x0C, ">i4"), (0x0D, ">f4"), (0x0E, ">f8")], ids=["int16", "int32", "float32", "float64"]
)
def test_idx_other_types_native_endian(tmp_path: Path, code: int, dtype: str) -> None:
    arr = np.array([[1, -2, 300], [4, 5, -6]], dtype=np.dtype(dtype).newbyteorder("="))
    got = D.read_idx(write(tmp_path / "f.idx", idx_bytes(arr, code), gz=False))
    np.testing.assert_array_equal(got, arr)
    assert got.dtype.isnative


GOOD = idx_bytes(np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3))

CORRUPT = [
    ("truncated", GOOD[:-1], False, "truncated"),
    ("trailing", GOOD + b"\x00", False, "trailing"),
    ("bad-magic", b"\x01" + GOOD[1:], False, "magic"),
    ("unknown-type", GOOD[:2] + b"\x07" + GOOD[3:], False, "magic"),
    ("zero-dims", b"\x00\x00\x08\x00", False, "magic"),
    ("short-header", GOOD[:6], False, "header"),
    ("empty", b"", False, "too short"),
    ("gz-not-gzip", GOOD, "fake-gz", "gzip"),
    ("gzip-cut", gzip.compress(GOOD)[:-12], "raw", "gzip"),
    ("gzip-corrupt", gzip.compress(GOOD)[:10] + b"\xff" * 20, "raw", "gzip"),
    ("gzip-truncated-idx", gzip.compress(GOOD[:-3]), "raw", "truncated"),
]


@pytest.mark.parametrize("payload, mode, words", [c[1:] for c in CORRUPT], ids=[c[0] for c in CORRUPT])
def test_idx_corrupt_raises_naming_file(tmp_path: Path, payload: bytes, mode: object, words: str) -> None:
    path = tmp_path / ("bad.idx.gz" if mode else "bad.idx")
    path.write_bytes(payload)
    with pytest.raises(ValueError) as err:
        D.read_idx(path)
    assert str(path) in str(err.value) and words in str(err.value)


def test_idx_wrong_magic_requested(tmp_path: Path) -> None:
    path = write(tmp_path / "labels.idx", idx_bytes(np.zeros(3, np.uint8)), gz=False)
    with pytest.raises(ValueError, match="expected 2051") as err:
        D.read_idx(path, magic=2051)
    assert str(path) in str(err.value)


def test_idx_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        D.read_idx(tmp_path / "nope.gz")


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "test"])
@pytest.mark.parametrize("loader", [D.mnist, D.fashion_mnist], ids=["mnist", "fashion"])
def test_idx_folder_loads(tmp_path: Path, loader, train: bool, gz: bool) -> None:
    images, labels = write_idx_folder(tmp_path, train, 7, gz)
    ds = loader(tmp_path, train=train)
    assert ds.x.shape == (7, 1, 28, 28) and ds.x.dtype == torch.float32
    assert ds.y.dtype == torch.int64 and ds.num_classes == 10 and len(ds) == 7
    torch.testing.assert_close(ds.x[:, 0] * 255, torch.from_numpy(images).float())
    assert ds.y.tolist() == labels.tolist()
    assert ds.name.endswith("/train" if train else "/test")


@pytest.mark.parametrize(
    "break_it, words",
    [
        (lambda root: write(root / "train-labels-idx1-ubyte", idx_bytes(np.zeros(6, np.uint8)), False), "6 labels"),
        (lambda root: write(root / "train-labels-idx1-ubyte", idx_bytes(np.full(7, 10, np.uint8)), False), "label 10"),
        (lambda root: write(root / "train-labels-idx1-ubyte", idx_bytes(np.zeros((7, 28, 28), np.uint8)), False), "2049"),
    ],
    ids=["count-mismatch", "label-range", "images-as-labels"],
)
def test_idx_folder_inconsistent(tmp_path: Path, break_it, words: str) -> None:
    write_idx_folder(tmp_path, True, 7, gz=False)
    break_it(tmp_path)
    with pytest.raises(ValueError, match=words):
        D.mnist(tmp_path)


@pytest.mark.skipif(
    not D.FASHION_MNIST_ROOT.is_dir(), reason=f"{D.FASHION_MNIST_ROOT} missing (apt-get install dataset-fashion-mnist)"
)
@pytest.mark.parametrize("train, n", [(True, 60000), (False, 10000)], ids=["train", "test"])
def test_fashion_mnist_installed(train: bool, n: int) -> None:
    ds = D.fashion_mnist(train=train)
    assert ds.x.shape == (n, 1, 28, 28) and ds.num_classes == 10
    assert float(ds.x.min()) == 0.0 and float(ds.x.max()) == 1.0
    counts = torch.bincount(ds.y, minlength=10)
    assert counts.tolist() == [n // 10] * 10


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda root: D.fashion_mnist(root), ["apt-get install dataset-fashion-mnist", "root=", "downloads nothing"]),
        (lambda root: D.mnist(root, train=False), ["t10k-images-idx3-ubyte", "Download", "downloads nothing"]),
        (lambda root: D.cifar10(root), ["data_batch_1.bin", "cifar-10-binary.tar.gz", "downloads nothing"]),
        (lambda root: D.cifar100(root, train=False), ["test.bin", "cifar-100-binary.tar.gz", "downloads nothing"]),
    ],
    ids=["fashion", "mnist", "cifar10", "cifar100"],
)
def test_missing_dataset_says_how_to_get_it(tmp_path: Path, call, words: list[str]) -> None:
    root = tmp_path / "absent"
    with pytest.raises(FileNotFoundError) as err:
        call(root)
    for word in words:
        assert word in str(err.value)
    assert str(root) in str(err.value)


# --------------------------------------------------------------------------- CIFAR


def cifar_records(n: int, label_cols: list[np.ndarray], rng: np.random.Generator) -> tuple[bytes, np.ndarray]:
    pixels = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    rows = np.concatenate([np.stack(label_cols, axis=1).astype(np.uint8), pixels], axis=1)
    return rows.tobytes(), pixels


@pytest.mark.parametrize("sub", ["", "cifar-10-batches-bin"], ids=["root", "subfolder"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "test"])
def test_cifar10_reads_batches(tmp_path: Path, train: bool, sub: str) -> None:
    rng = np.random.default_rng(1)
    folder = tmp_path / sub
    folder.mkdir(exist_ok=True)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if train else ["test_batch.bin"]
    labels, pixels = [], []
    for name in names:
        lab = rng.integers(0, 10, size=3)
        payload, pix = cifar_records(3, [lab], rng)
        (folder / name).write_bytes(payload)
        labels.append(lab)
        pixels.append(pix)
    ds = D.cifar10(tmp_path, train=train)
    assert ds.x.shape == (3 * len(names), 3, 32, 32) and ds.num_classes == 10
    assert ds.y.tolist() == np.concatenate(labels).tolist()
    pix = np.concatenate(pixels)
    # channel-major planes, each row-major: byte c*1024 + h*32 + w is x[c, h, w]
    assert float(ds.x[-1, 2, 5, 7]) == pytest.approx(pix[-1, 2 * 1024 + 5 * 32 + 7] / 255)
    torch.testing.assert_close(ds.x.reshape(len(ds), -1) * 255, torch.from_numpy(pix).float())


@pytest.mark.parametrize("sub", ["", "cifar-100-binary"], ids=["root", "subfolder"])
@pytest.mark.parametrize("label, classes, col", [("fine", 100, 1), ("coarse", 20, 0)], ids=["fine", "coarse"])
def test_cifar100_labels(tmp_path: Path, label: str, classes: int, col: int, sub: str) -> None:
    rng = np.random.default_rng(2)
    folder = tmp_path / sub
    folder.mkdir(exist_ok=True)
    cols = [rng.integers(0, 20, size=4), rng.integers(0, 100, size=4)]
    payload, pix = cifar_records(4, cols, rng)
    (folder / "train.bin").write_bytes(payload)
    ds = D.cifar100(tmp_path, label=label)
    assert ds.num_classes == classes and ds.y.tolist() == cols[col].tolist()
    torch.testing.assert_close(ds.x.reshape(4, -1) * 255, torch.from_numpy(pix).float())


@pytest.mark.parametrize(
    "call, name, record, extra",
    [
        (lambda r: D.cifar10(r, train=False), "test_batch.bin", 3073, 1),
        (lambda r: D.cifar10(r, train=False), "test_batch.bin", 3073, -3073),
        (lambda r: D.cifar100(r, train=True), "train.bin", 3074, -1),
        (lambda r: D.cifar100(r, train=False), "test.bin", 3074, 3073),
    ],
    ids=["cifar10-extra-byte", "cifar10-empty", "cifar100-short", "cifar100-one-off"],
)
def test_cifar_wrong_size_names_file(tmp_path: Path, call, name: str, record: int, extra: int) -> None:
    (tmp_path / name).write_bytes(b"\x00" * (record + extra))
    with pytest.raises(ValueError) as err:
        call(tmp_path)
    assert str(tmp_path / name) in str(err.value) and str(record) in str(err.value)


def test_cifar_bad_label_and_option(tmp_path: Path) -> None:
    (tmp_path / "test_batch.bin").write_bytes(bytes([10]) + b"\x00" * 3072)
    with pytest.raises(ValueError, match="label 10"):
        D.cifar10(tmp_path, train=False)
    with pytest.raises(ValueError, match="'medium'"):
        D.cifar100(tmp_path, label="medium")


# --------------------------------------------------------------------------- split and resize

IMBALANCED = np.repeat(np.arange(4), [50, 30, 15, 5])


@pytest.mark.parametrize("holdout", [1, 7, 33, 50, 99], ids=lambda h: f"holdout{h}")
@pytest.mark.parametrize("as_tensor", [True, False], ids=["tensor", "numpy"])
def test_stratified_split(holdout: int, as_tensor: bool) -> None:
    y = torch.from_numpy(IMBALANCED) if as_tensor else IMBALANCED
    train, held = D.stratified_split(y, holdout, seed=3)
    assert train.dtype == held.dtype == torch.int64
    assert len(held) == holdout and len(train) == len(IMBALANCED) - holdout
    assert not set(train.tolist()) & set(held.tolist())
    assert sorted(train.tolist() + held.tolist()) == list(range(len(IMBALANCED)))
    counts = np.bincount(IMBALANCED)
    got = np.bincount(IMBALANCED[held.numpy()], minlength=4)
    assert np.all(np.abs(got - counts * holdout / len(IMBALANCED)) < 1)
    again = D.stratified_split(y, holdout, seed=3)
    assert torch.equal(again[0], train) and torch.equal(again[1], held)


def test_stratified_split_seed_changes_choice() -> None:
    y = np.arange(1000) % 10
    assert not torch.equal(D.stratified_split(y, 100, seed=0)[1], D.stratified_split(y, 100, seed=1)[1])


@pytest.mark.parametrize(
    "holdout, error",
    [(0, ValueError), (100, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError)],
    ids=["zero", "all", "negative", "float", "bool"],
)
def test_stratified_split_rejects_holdout(holdout, error) -> None:
    with pytest.raises(error, match="holdout"):
        D.stratified_split(IMBALANCED, holdout)


@pytest.mark.parametrize("size, shape", [(32, (1, 8, 8)), (16, (3, 20, 12)), (8, (1, 8, 8))], ids=["up", "down", "same"])
def test_resize(size: int, shape: tuple[int, int, int]) -> None:
    ds = D.synthetic(n=50, num_classes=5, shape=shape)
    out = D.resize(ds, size, batch=16)
    assert out.x.shape == (50, shape[0], size, size) and out.x.dtype == torch.float32
    assert torch.equal(out.y, ds.y) and out.name == ds.name
    assert 0.0 <= float(out.x.min()) and float(out.x.max()) <= 1.0
    if size == shape[1] == shape[2]:
        torch.testing.assert_close(out.x, ds.x)
    const = D.Dataset(torch.full((2, 1, 28, 28), 0.25), torch.zeros(2, dtype=torch.int64), 1, "c")
    torch.testing.assert_close(D.resize(const).x, torch.full((2, 1, 32, 32), 0.25))


@pytest.mark.parametrize("size", [0, -3, 2.5, True], ids=["zero", "negative", "float", "bool"])
def test_resize_rejects_size(size) -> None:
    with pytest.raises(ValueError, match="size"):
        D.resize(D.synthetic(n=10, num_classes=2), size)


# --------------------------------------------------------------------------- Dataset


def test_dataset_subset_forms() -> None:
    ds = D.two_attribute(n=20, large_fraction=0.8)
    picked = ds.subset(torch.tensor([3, 0, 3]))
    assert torch.equal(picked.x, ds.x[[3, 0, 3]]) and picked.y.tolist() == ds.y[[3, 0, 3]].tolist()
    assert picked.group is not None and picked.group.tolist() == ds.group[[3, 0, 3]].tolist()
    assert len(ds.subset(ds.y == 1)) == 10
    assert len(ds.subset(np.array([1, 2]))) == 2 and len(ds.subset([])) == 0
    assert len(ds.subset(slice(5, 9))) == 4


@pytest.mark.parametrize(
    "idx, words",
    [
        (torch.tensor([0, 20]), "outside"),
        (torch.tensor([-1]), "outside"),
        (torch.ones(5, dtype=torch.bool), "mask"),
        (torch.tensor([0.5]), "integer"),
    ],
    ids=["too-large", "negative", "short-mask", "float"],
)
def test_dataset_subset_rejects(idx: torch.Tensor, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        D.two_attribute(n=20, large_fraction=0.8).subset(idx)


@pytest.mark.parametrize(
    "x, y, classes, words",
    [
        (torch.zeros(2, 1, 2, 2, dtype=torch.float64), torch.zeros(2, dtype=torch.int64), 2, "x must"),
        (torch.zeros(2, 4), torch.zeros(2, dtype=torch.int64), 2, "x must"),
        (torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.int32), 2, "y must"),
        (torch.zeros(2, 1, 2, 2), torch.zeros(3, dtype=torch.int64), 2, "3"),
        (torch.zeros(2, 1, 2, 2), torch.tensor([0, 2]), 2, "num_classes=2"),
        (torch.zeros(2, 1, 2, 2), torch.tensor([0, 1]), 0, "num_classes"),
    ],
    ids=["x-dtype", "x-dims", "y-dtype", "length", "label-range", "no-classes"],
)
def test_dataset_validates(x: torch.Tensor, y: torch.Tensor, classes: int, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        D.Dataset(x, y, classes, "bad")


# --------------------------------------------------------------------------- generated data


@pytest.mark.parametrize(
    "n, classes, shape", [(600, 10, (1, 8, 8)), (90, 3, (3, 4, 5)), (23, 4, (1, 2, 2))], ids=["default", "rgb", "uneven"]
)
def test_synthetic(n: int, classes: int, shape: tuple[int, int, int]) -> None:
    ds = D.synthetic(n=n, num_classes=classes, shape=shape, seed=5)
    assert ds.x.shape == (n, *shape) and ds.num_classes == classes
    counts = torch.bincount(ds.y, minlength=classes)
    assert int(counts.max() - counts.min()) <= (0 if n % classes == 0 else 1)
    assert 0.0 <= float(ds.x.min()) and float(ds.x.max()) <= 1.0
    assert torch.equal(D.synthetic(n=n, num_classes=classes, shape=shape, seed=5).x, ds.x)
    # learnable: the nearest class mean classifies nearly all samples
    flat = ds.x.flatten(1)
    means = torch.stack([flat[ds.y == c].mean(0) for c in range(classes)])
    accuracy = (torch.cdist(flat, means).argmin(1) == ds.y).float().mean()
    assert accuracy > 0.9


def best_threshold_accuracy(v: torch.Tensor, y: torch.Tensor) -> float:
    """Best accuracy of 'class 1 iff v > t' or 'class 1 iff v <= t' over all t."""
    order = torch.argsort(v)
    ys = y[order].double()
    ones_at_or_below = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(ys, 0)])
    k = torch.arange(len(v) + 1, dtype=torch.float64)
    above = k - ones_at_or_below + (ys.sum() - ones_at_or_below)  # class 0 below, class 1 above
    return float(torch.max(above.max(), len(v) - above.min())) / len(v)


TWO = [
    dict(),
    dict(n=2000, large_fraction=0.95, noise=0.3, seed=1),
    dict(n=400, large_fraction=0.8, separation=2.0, noise=0.9, seed=2),
    dict(n=600, large_fraction=0.7, noise=0.0, weak=0.3, seed=3),
]


@pytest.mark.parametrize("kw", TWO, ids=["default", "few-small", "wide", "noiseless"])
def test_two_attribute(kw: dict) -> None:
    ds = D.two_attribute(**kw)
    n, lf = kw.get("n", 1000), kw.get("large_fraction", 0.9)
    assert ds.x.shape == (n, 1, 1, 2) and ds.num_classes == 2 and ds.group is not None
    assert torch.bincount(ds.y).tolist() == [n // 2, n // 2]
    assert float(ds.group.float().mean()) == pytest.approx(1 - lf, abs=1 / n)
    first, second = ds.x[:, 0, 0, 0], ds.x[:, 0, 0, 1]
    acc = best_threshold_accuracy(first, ds.y)
    assert lf - 0.05 <= acc < 1.0
    small = ds.group == 1
    s2, sy = second[small], ds.y[small]
    assert float(s2[sy == 0].max()) < float(s2[sy == 1].min())
    large = ds.group == 0
    l1, ly = first[large], ds.y[large]
    assert float(l1[ly == 0].max()) < float(l1[ly == 1].min())
    again = D.two_attribute(**kw)
    assert torch.equal(again.x, ds.x) and torch.equal(again.y, ds.y)


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(n=999), "even"),
        (dict(large_fraction=0.5), "large_fraction"),
        (dict(large_fraction=1.0), "large_fraction"),
        (dict(n=10, large_fraction=0.95), "small subset"),
        (dict(separation=0.0), "separation"),
        (dict(noise=-0.1), "noise"),
        (dict(weak=1.5), "weak"),
    ],
    ids=["odd-n", "half", "all-large", "no-small", "no-separation", "negative-noise", "weak-too-large"],
)
def test_two_attribute_rejects(kw: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        D.two_attribute(**kw)


def test_two_attribute_second_attribute_is_weaker() -> None:
    ds = D.two_attribute(n=2000, noise=0.0)
    magnitude = ds.x.flatten(1).abs().mean(0)
    assert math.isclose(float(magnitude[1]), 0.5 * float(magnitude[0]), rel_tol=1e-6)


@pytest.mark.parametrize("train", [True, False], ids=["train", "test"])
def test_an_idx_pair_of_no_images_is_refused(tmp_path: Path, train: bool) -> None:
    write_idx_folder(tmp_path, train, 0, gz=False)
    with pytest.raises(ValueError, match="hold no images"):
        D.mnist(tmp_path, train=train)
    write_idx_folder(tmp_path, train, 3, gz=False)
    assert len(D.mnist(tmp_path, train=train)) == 3
