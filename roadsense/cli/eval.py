"""`roadsense eval POLICY`: run a checkpoint or a baseline on fixed suites, side by side."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

app_help = "Evaluate a checkpoint or a baseline on fixed suites and write a report."


def app(
    policy: Annotated[str, typer.Argument(help="checkpoint folder, policy.pt, no_assist or "
                                               "v2v_rule")],
    suite: Annotated[list[str] | None, typer.Option(
        help="suite name or file (repeatable)")] = None,
    out: Annotated[Path | None, typer.Option(help="report folder")] = None,
    baselines: Annotated[bool, typer.Option(help="also run no_assist and v2v_rule")] = True,
    dataset_root: Annotated[Path, typer.Option(help="where datasets live")] = Path("datasets"),
) -> None:
    """Evaluate POLICY on the suites (default: standard-v1 and no-hazard-v1) and write
    metrics.parquet, report.md and plots, side by side with both baselines."""
    from roadsense.eval import load_policy, run_suite, summarize, write_report
    from roadsense.run_manifest import write_run_manifest

    suites = suite or ["standard-v1", "no-hazard-v1"]
    specs = [policy] + ([b for b in ("no_assist", "v2v_rule") if b != policy] if baselines else [])
    loaded = [load_policy(s) for s in specs]  # fail fast on a bad checkpoint
    out = out or Path("runs") / "eval" / time.strftime("%Y%m%d-%H%M%S")
    console = Console(stderr=True)
    rows = []
    with Progress(console=console, transient=True) as progress:
        for name, pol in loaded:
            for s in suites:
                task = progress.add_task(f"{name} on {s}", total=None)
                rows += run_suite(pol, s, policy_name=name, root=dataset_root,
                                  progress=lambda i, n, t=task: progress.update(
                                      t, completed=i, total=n))
                progress.remove_task(task)
    files = write_report(rows, out, title=f"Evaluation of {loaded[0][0]}",
                         meta={"suites": ", ".join(suites), "policy": policy})
    write_run_manifest(out, kind="eval", config={"policy": policy, "suites": suites},
                       eval_suite=suites[0], dataset_root=dataset_root)
    summary = summarize(rows)
    table = Table(title=f"evaluation ({', '.join(suites)})")
    for col in ("policy", "collision rate", "reaction s (median)", "min TTC s (median)",
                "false braking"):
        table.add_column(col)
    for name, m in summary.items():
        table.add_row(name, _pct(m["collision_rate"]), _num(m["reaction_s_median"]),
                      _num(m["min_ttc_s_median"]), _pct(m["false_brake_rate"]))
    Console().print(table)
    Console().print(f"report: {files['report']}")
    (out / "summary.txt").write_text(json.dumps(summary, indent=2))


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"
