"""`roadsense eval POLICY...`: run checkpoints or baselines on fixed suites and replay them on
real recordings, side by side."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

app_help = "Evaluate checkpoints or baselines on fixed suites and real recordings."


def app(
    policy: Annotated[list[str], typer.Argument(help="checkpoint folder, policy.pt, or a "
                                                     "baseline: no_assist, v2v_rule, "
                                                     "urgency_brake, with optional settings "
                                                     "(v2v_rule:brake=0.6,hold_s=2); one or "
                                                     "more")],
    suite: Annotated[list[str] | None, typer.Option(
        help="suite name or file (repeatable)")] = None,
    suites: Annotated[bool, typer.Option(
        help="run the suites (--no-suites: replay only)")] = True,
    replay: Annotated[list[Path] | None, typer.Option(
        help="real recording (.npz) or a folder of them to replay (repeatable; layout: "
             "recordings/README.md)")] = None,
    gating: Annotated[bool, typer.Option(
        help="probe each policy's gating: one hard-braking peer ahead in the lane, behind, "
             "beside (gating.md)")] = True,
    out: Annotated[Path | None, typer.Option(help="report folder")] = None,
    baselines: Annotated[bool, typer.Option(help="also run no_assist and v2v_rule")] = True,
    dataset_root: Annotated[Path, typer.Option(help="where datasets live")] = Path("datasets"),
) -> None:
    """Evaluate each POLICY on the suites (default: standard-v1 and no-hazard-v1; report.md,
    metrics.parquet, plots) and replay it on every --replay recording (replay.md,
    replay.json, plots) and on the gating probe (gating.md), side by side with both
    baselines."""
    from roadsense.eval import load_policy, run_suite, summarize, write_report
    from roadsense.eval.replay import load_recording, recording_paths, replay_report
    from roadsense.eval.report import write_run_manifest

    if not suites and not replay:
        raise typer.BadParameter("--no-suites needs at least one --replay recording")
    suite_names = (suite or ["standard-v1", "no-hazard-v1"]) if suites else []
    specs = list(dict.fromkeys(policy + (["no_assist", "v2v_rule"] if baselines else [])))
    loaded = [load_policy(s) for s in specs]  # fail fast on a bad checkpoint
    recordings = [load_recording(p) for p in recording_paths(replay or [])]  # ... or recording
    out = out or Path("runs") / "eval" / time.strftime("%Y%m%d-%H%M%S")
    console = Console(stderr=True)
    if suite_names:
        rows = []
        with Progress(console=console, transient=True) as progress:
            for name, pol in loaded:
                for s in suite_names:
                    task = progress.add_task(f"{name} on {s}", total=None)
                    rows += run_suite(pol, s, policy_name=name, root=dataset_root,
                                      progress=lambda i, n, t=task: progress.update(
                                          t, completed=i, total=n))
                    progress.remove_task(task)
        files = write_report(rows, out, title=f"Evaluation of {loaded[0][0]}",
                             meta={"suites": ", ".join(suite_names), "policy": policy[0]})
        summary = summarize(rows)
        _suite_table(summary, suite_names)
        Console().print(f"report: {files['report']}")
        (out / "summary.txt").write_text(json.dumps(summary, indent=2))
    if recordings:
        replayed = replay_report(loaded, recordings, out)
        _replay_table(replayed)
        Console().print(f"replay report: {out / 'replay.md'}")
    if gating:
        from roadsense.eval.gating import gating_probe, markdown, write_report

        probed = {name: gating_probe(pol) for name, pol in loaded}
        Console().print(markdown(probed))
        Console().print(f"gating report: {write_report(probed, out)}")
    write_run_manifest(out, kind="eval", config={
        "policy": policy, "suites": suite_names, "replay": [str(r.path) for r in recordings]},
        eval_suite=suite_names[0] if suite_names else None)


def _suite_table(summary: dict[str, Any], suite_names: list[str]) -> None:
    table = Table(title=f"evaluation ({', '.join(suite_names)})")
    for col in ("policy", "collision rate", "reaction s (median)", "min TTC s (median)",
                "false braking", "brake steps", "peak decel m/s^2", "speed braked off m/s"):
        table.add_column(col)
    for name, m in summary.items():
        table.add_row(name, _pct(m["collision_rate"]), _num(m["reaction_s_median"]),
                      _num(m["min_ttc_s_median"]), _pct(m["false_brake_rate"]),
                      _num(m["brake_steps_per_hazard_episode"]),
                      _num(m["peak_decel_mps2_mean"]), _num(m["brake_dv_mps_mean"]))
    Console().print(table)


def _replay_table(summary: dict[str, Any]) -> None:
    table = Table(title="replay of real recordings")
    for col in ("recording", "policy", "mode", "braking rows", "onsets/min", "longest brake s",
                "events braked", "hard-brake stretches braked"):
        table.add_column(col)
    for rec, r in summary["recordings"].items():
        for name, res in r["results"].items():
            for mode in summary["modes"]:
                m = res[mode]
                events = "-" if m["events_braked"] is None else (
                    f"{m['events_braked']}/{len(m['events'])}")
                table.add_row(rec, name, mode, _pct(m["brake_share"]),
                              f"{m['onsets_per_min']:.2f}", f"{m['longest_brake_s']:.1f}",
                              events, f"{m['stretches_braked']}/{len(m['stretches'])}")
    Console().print(table)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"
