"""`python -m benchmarks [--quick] [--out FILE] [NAME ...]`: run benchmarks, print, write JSON."""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).parent
ORDER = ["sim", "emulator", "env", "scenarios", "training", "e2e", "deploy"]
ON_REQUEST = {"learning", "cluster", "layouts"}  # long (an hour; clusters; 6 runs): when named


def available() -> list[str]:
    found = {p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_")}
    return [n for n in ORDER if n in found] + sorted(found - set(ORDER))


def default_set() -> list[str]:
    return [n for n in available() if n not in ON_REQUEST]


def run_one(name: str, quick: bool) -> list[dict]:
    code = (
        "import json, sys, importlib\n"
        f"rows = importlib.import_module('benchmarks.{name}').run(quick={quick})\n"
        "sys.stdout.write('\\n@@ROWS@@' + json.dumps(rows) + '\\n')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=HERE.parent)
    marker = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@ROWS@@")]
    if proc.returncode != 0 or not marker:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return [{"benchmark": name, "metric": "error", "value": float("nan"),
                 "baseline": float("nan"), "ratio": float("nan"), "target": "runs",
                 "pass": False, "unit": "", "error": " | ".join(tail)}]
    return json.loads(marker[-1][len("@@ROWS@@"):])


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*",
                        help=f"subset of {available()} (default: all but {sorted(ON_REQUEST)})")
    parser.add_argument("--quick", action="store_true", help="short runs (smoke check)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "latest.json")
    args = parser.parse_args()
    names = args.names or default_set()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {available()}")

    console = Console()
    rows: list[dict] = []
    for name in names:
        started = time.perf_counter()
        with console.status(f"running {name} ..."):
            got = run_one(name, args.quick)
        console.print(f"{name}: {len(got)} rows in {time.perf_counter() - started:.0f} s")
        rows.extend(got)

    table = Table(title="RoadSense benchmarks (ratios measured within one run)")
    for col in ("benchmark", "metric", "value", "baseline", "ratio", "target", "pass"):
        table.add_column(col, justify="right" if col in ("value", "baseline", "ratio") else "left")
    for r in rows:
        table.add_row(r["benchmark"], r["metric"], _fmt(r["value"], r.get("unit", "")),
                      _fmt(r["baseline"], r.get("unit", "")), _fmt(r["ratio"], "x"),
                      r["target"], "yes" if r["pass"] else "[red]NO[/red]")
    console.print(table)
    for r in rows:
        if "error" in r:
            console.print(f"[red]{r['benchmark']} failed:[/red] {r['error']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "created_unix": time.time(), "quick": args.quick, "python": platform.python_version(),
        "machine": platform.machine(), "cpus": _cpus(), "rows": rows}, indent=2))
    console.print(f"wrote {args.out}")
    return 0


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def _fmt(v: float, unit: str) -> str:
    if v != v:  # NaN
        return "-"
    text = f"{v:,.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return f"{text} {unit}".strip()


if __name__ == "__main__":
    sys.exit(main())
