"""Inputs that used to fail far from their cause, each now refused at the boundary with one line naming the
argument and the value."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import nnphases.kernels as K
from nnphases import Recorder, RunDir, Schedule


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def _set() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(20, 4, generator=g), torch.randint(0, 3, (20,), generator=g)


CASES = [
    pytest.param(lambda t, x, y: Recorder(_model(), (x, y), Schedule((0,), 1), str(t / "a\0b")), ValueError,
                 r"out '.*a\\x00b' holds a NUL byte", id="recorder-out-nul"),
    pytest.param(lambda t, x, y: Recorder(_model(), (x.to_sparse(), y), Schedule((0,), 1), t / "sparse"), TypeError,
                 r"eval_data: x must be a dense tensor, got layout torch.sparse_coo", id="recorder-sparse-x"),
    pytest.param(lambda t, x, y: Recorder(_model(), [(x.to_sparse(), y)], Schedule((0,), 1), t / "sparse-batches"),
                 TypeError, r"eval_data batch 0: x must be a dense tensor, got layout torch.sparse_coo",
                 id="recorder-sparse-batch"),
    pytest.param(lambda t, x, y: K.class_counts(x.to_sparse(), y, 3), TypeError,
                 r"acts must be a dense tensor, got layout torch.sparse_coo", id="class-counts-sparse"),
    pytest.param(lambda t, x, y: K.pack_masks(x.to_sparse_csr()), TypeError,
                 r"acts must be a dense tensor, got layout torch.sparse_csr", id="pack-masks-sparse-csr"),
]


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("call, error, message", CASES)
def test_refused_at_the_boundary(tmp_path: Path, call, error: type[Exception], message: str) -> None:
    x, y = _set()
    with pytest.raises(error, match=message) as caught:
        call(tmp_path, x, y)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("states", [True, False])
@pytest.mark.parametrize("first,refused", [(0, True), (1, True), (4, False), (9, False)])
def test_a_fresh_run_into_a_folder_with_later_checkpoints_is_refused(tmp_path: Path, first: int,
                                                                     refused: bool, states: bool) -> None:
    """A Recorder over a crashed run's folder, asked first about step 0 or 1 (a model trained from scratch), is
    refused; a resume from a later step continues as before."""
    x, y = _set()
    schedule = Schedule((0, 2, 4, 8, 9), 10)
    rec = Recorder(_model(), (x, y), schedule, tmp_path / "run")
    for s in (0, 2, 4, 8):
        rec.maybe_measure(s, state=(lambda: {"w": 1}) if states else None)
    rec.flush()  # a crash: the folder holds 0..8, no DONE
    again = Recorder(_model(), (x, y), schedule, tmp_path / "run")
    if refused:
        with pytest.raises(ValueError, match=rf"holds checkpoints up to step 8, but training is at step {first}: "
                           "a run started afresh"):
            again.maybe_measure(first)
    else:
        again.maybe_measure(first)
        again.maybe_measure(9)
        again.close()
        assert RunDir(tmp_path / "run").done


@pytest.mark.parametrize("call", [
    lambda x, y, n: K.class_counts(x, y, n),
    lambda x, y, n: K.count_and_pack(x, y, n),
    lambda x, y, n: K.packed_class_counts(K.pack_masks(x), y, n),
], ids=["class_counts", "count_and_pack", "packed_class_counts"])
def test_a_counts_table_larger_than_the_machine_is_refused_with_its_size(call) -> None:
    x, y = torch.randn(8, 4), torch.zeros(8, dtype=torch.long)
    with pytest.raises(ValueError, match=r"num_classes 2147483647 x 4 nodes: the int64 counts table needs 64\.0 GiB"):
        call(x, y, 2**31 - 1)


def test_an_unpicklable_resume_state_is_named_and_leaves_no_checkpoint(tmp_path: Path) -> None:
    x, y = _set()
    rec = Recorder(_model(), (x, y), Schedule((0, 1), 10), tmp_path / "run")
    with pytest.raises(TypeError, match=r"state: the resume state of step 0 cannot be saved \(AttributeError: "
                       r"Can't pickle local object"):
        rec.maybe_measure(0, state=lambda: {"f": lambda: 1})
        rec.flush()
    assert RunDir(tmp_path / "run").completed_steps() == []
    assert not list((tmp_path / "run" / "checkpoints").iterdir())


def test_a_full_disk_while_saving_the_state_names_the_checkpoint(tmp_path: Path, monkeypatch) -> None:
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    x, y = _set()
    rec = Recorder(_model(), (x, y), Schedule((0, 1), 10), tmp_path / "run")
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match=r"No space left on device") as info:
        rec.maybe_measure(0, state=lambda: {"w": 1})
        rec.flush()
    assert info.value.filename == str(tmp_path / "run" / "checkpoints" / "step-000000000000")
    assert RunDir(tmp_path / "run").completed_steps() == []
