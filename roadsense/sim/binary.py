"""Where SUMO lives: the real binaries from the `eclipse-sumo` wheel and the libsumo extension."""

from __future__ import annotations

import functools
import importlib
import os
import re
import subprocess
from pathlib import Path
from types import ModuleType

from roadsense.errors import SumoNotFoundError

_INSTALL_FIX = "run `make test` or `bash scripts/install.sh` (installs eclipse-sumo/libsumo 1.28.0)"


def sumo_home() -> Path:
    """SUMO_HOME of the `eclipse-sumo` wheel (an explicit SUMO_HOME env var is not consulted,
    so a system SUMO of another version cannot sneak in)."""
    try:
        import sumo
    except ImportError as exc:
        raise SumoNotFoundError("the eclipse-sumo package is not installed",
                                fix=_INSTALL_FIX) from exc
    return Path(sumo.SUMO_HOME)


def sumo_binary(name: str = "sumo") -> Path:
    """Path of a real SUMO executable (`sumo`, `sumo-gui`, `netconvert`, ...), not the wrapper
    script the wheel puts on PATH."""
    path = sumo_home() / "bin" / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise SumoNotFoundError(f"SUMO executable not found at {path}", fix=_INSTALL_FIX)
    return path


@functools.cache
def sumo_version() -> str:
    """Version of the installed SUMO, e.g. "1.28.0"."""
    out = subprocess.run(
        [str(sumo_binary()), "--version"], capture_output=True, text=True, timeout=30
    ).stdout
    match = re.search(r"SUMO sumo (?:Version )?(\d+\.\d+\.\d+)", out)
    return match.group(1) if match else "unknown"


def import_libsumo() -> ModuleType:
    """Import libsumo and prove it is the compiled extension, not a pure-Python stand-in.

    A broken wheel may leave only the Python shim, which would fail or run far slower, so
    refuse it. (libsumo prints a banner on stdout when pyarrow's ABI differs from the one it was
    built with; pyproject pins the matching pyarrow, which also avoids two arrow builds in one
    process. Do not silence it with LIBSUMO_AS_TRACI: that variable turns `traci` into libsumo.)
    """
    try:
        libsumo = importlib.import_module("libsumo")
        native = importlib.import_module("libsumo._libsumo")
    except ImportError as exc:
        raise SumoNotFoundError(f"libsumo cannot be imported: {exc}", fix=_INSTALL_FIX) from exc
    native_file = getattr(native, "__file__", "") or ""
    if not native_file.endswith((".so", ".pyd")) or not hasattr(libsumo, "simulationStep"):
        raise SumoNotFoundError(
            f"libsumo at {getattr(libsumo, '__file__', '?')} is not the compiled extension",
            fix=_INSTALL_FIX,
        )
    return libsumo


def check_installation() -> None:
    """Fail fast, with the fix, when any SUMO piece the project needs is missing."""
    for name in ("sumo", "netconvert"):
        sumo_binary(name)
    import_libsumo()
    check_traci()


def check_traci() -> None:
    """The traci backend must really be the TCP client: LIBSUMO_AS_TRACI silently swaps it
    for libsumo (one simulation per process, no GUI)."""
    if "LIBSUMO_AS_TRACI" in os.environ:
        raise SumoNotFoundError(
            "LIBSUMO_AS_TRACI is set, so `import traci` gives libsumo, not the TCP client",
            fix="unset LIBSUMO_AS_TRACI")
    import traci.connection

    if not hasattr(traci.connection, "Connection"):
        raise SumoNotFoundError("traci is not the TCP client", fix=_INSTALL_FIX)
