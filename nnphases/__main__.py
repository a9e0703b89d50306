"""``python -m nnphases`` (and ``torchrun -m nnphases run ...``) is the ``nnphases`` command."""

from .cli import app

app(prog_name="nnphases")
