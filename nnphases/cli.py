"""The ``nnphases`` command line."""

from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Measure how neural networks learn, phase by phase.")


@app.command()
def backends() -> None:
    """List the kernel backends, which work on this machine, and why the others do not."""
    from .kernels import AUTO_ORDER, backends as report

    for name, device, why in report():
        state = "available" if why is None else f"unavailable: {why}"
        typer.echo(f"{name:10s} {device:5s} {state}")
    for device, order in AUTO_ORDER.items():
        typer.echo(f"automatic order on {device}: {' > '.join(order)}")


@app.callback()
def main() -> None:
    """nnphases: ReLU sample sets and layer probes during training."""


if __name__ == "__main__":
    app()
