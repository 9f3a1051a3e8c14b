"""The `roadsense` command: one sub-app per noun; commands only parse, configure and call.

Known errors (`RoadSenseError`) become one line on stderr and exit code 1; bad usage exits 2
(typer's own). Set ``ROADSENSE_DEBUG=1`` to see the full traceback instead.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from roadsense.errors import RoadSenseError

# noun -> module under roadsense.cli exposing `app`
_SUB_APPS = {
    "sim": "Run SUMO scenarios directly.",
    "emulator": "Inspect and validate the ESP-NOW radio emulator.",
    "scenarios": "Generate, check, list and sync scenario datasets.",
    "train": "Train the policy with RLlib PPO.",
    "eval": "Evaluate a checkpoint or a baseline on a fixed suite.",
    "export": "Export a trained policy as a numpy or ONNX file that runs without Ray or torch.",
    "tune": "Ray Tune sweeps (gated on a stable Phase 1 run).",
    "cloud": "EC2 cluster, SageMaker and budget tooling.",
}

app = typer.Typer(
    name="roadsense",
    help="RoadSense fleet training: SUMO convoys, ESP-NOW emulation, Deep Sets PPO.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for _noun, _help in _SUB_APPS.items():
    try:
        _module = importlib.import_module(f"roadsense.cli.{_noun}")
    except ModuleNotFoundError as exc:  # a noun whose module is not written yet
        if exc.name != f"roadsense.cli.{_noun}":
            raise
        continue
    sub = _module.app
    if isinstance(sub, typer.Typer):
        app.add_typer(sub, name=_noun, help=_help)
    else:  # a single command (e.g. `roadsense train`)
        app.command(name=_noun, help=_help)(sub)


def main() -> None:
    """Entry point: run the app, turning known errors into one line and exit code 1."""
    try:
        app()
    except RoadSenseError as exc:
        if os.environ.get("ROADSENSE_DEBUG"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
