"""`roadsense export CHECKPOINT --format numpy|onnx`: a policy artifact without Ray or torch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def app(
    checkpoint: Annotated[str, typer.Argument(help="checkpoint folder or policy.pt")],
    format: Annotated[str, typer.Option(
        "--format", help="numpy (.npz, runs with numpy alone) or onnx (.onnx, onnxruntime)")
    ] = "numpy",
    out: Annotated[Path | None, typer.Option(
        help="output file or folder (default: policy.npz / policy.onnx next to policy.pt)")
    ] = None,
) -> None:
    """Export CHECKPOINT's policy as one file: weights, observation spec with its layout
    version, and action bounds; run it with `roadsense.deploy.runtime.load_artifact`."""
    from roadsense.deploy.export import export_policy

    path = export_policy(checkpoint, format, out)
    Console().print(f"wrote {path}")
