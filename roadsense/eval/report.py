"""Evaluation report: per-episode metrics (Parquet), a Markdown summary and PNG plots.

Headline metrics per policy: collision rate (hazard episodes), reaction time from the first
hazard message to braking, min time-to-collision, and the false-braking rate (no-hazard
episodes); each broken down by peer count and radio loss level, policies side by side.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from roadsense import run_manifest
from roadsense.comms import params_version
from roadsense.data import load_suite

PEER_BINS = ((0, 0), (1, 2), (3, 5), (6, 8), (9, 12), (13, 10_000))


def _rate(rows: list[dict], key: str) -> float | None:
    return sum(bool(r[key]) for r in rows) / len(rows) if rows else None


def _median(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def _mean(rows: list[dict], key: str) -> float | None:
    """Mean over the episodes (0 where the policy never braked, so gentler means lower)."""
    return statistics.fmean(float(r[key]) for r in rows) if rows else None


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per policy: the headline metrics (None where the suite has no such episodes)."""
    by_policy: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_policy[r["policy"]].append(r)
    out = {}
    for name, rs in by_policy.items():
        hz = [r for r in rs if r["hazard"]]
        calm = [r for r in rs if not r["hazard"]]
        out[name] = {
            "hazard_episodes": len(hz),
            "no_hazard_episodes": len(calm),
            "collision_rate": _rate(hz, "collision"),
            "reaction_s_median": _median(hz, "reaction_s"),
            "min_ttc_s_median": _median(hz, "min_ttc_s"),
            "false_brake_rate": _rate(calm, "false_brake"),
            "brake_steps_per_hazard_episode": _mean(hz, "brake_steps"),
            "peak_decel_mps2_mean": _mean(hz, "peak_decel_mps2"),
            "brake_dv_mps_mean": _mean(hz, "brake_dv_mps"),
        }
    return out


def breakdown(rows: list[dict], key: str, bins: Any = None) -> dict[str, dict[str, float | None]]:
    """Collision rate per policy and per bin of `key` (hazard episodes only)."""
    table: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if not r["hazard"]:
            continue
        v = r[key]
        label = next(f"{lo}-{hi}" if lo != hi else str(lo) for lo, hi in bins
                     if lo <= v <= hi) if bins else f"{v:.2f}"
        table[label][r["policy"]].append(r)
    return {label: {p: _rate(rs, "collision") for p, rs in cols.items()}
            for label, cols in sorted(table.items(), key=lambda kv: _sort_key(kv[0]))}


def _sort_key(label: str) -> float:
    try:
        return float(label.split("-")[0])
    except ValueError:
        return math.inf


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}%" if pct else f"{v:.2f}"


def write_report(rows: list[dict[str, Any]], out_dir: str | Path, *,
                 title: str = "RoadSense evaluation", meta: dict | None = None) -> dict[str, Path]:
    """Write metrics.parquet, summary.json, report.md and PNG plots into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), out / "metrics.parquet")
    summary = summarize(rows)
    (out / "summary.json").write_text(json.dumps({"summary": summary, "meta": meta or {}},
                                                 indent=2, default=str))
    policies = list(summary)
    lines = [f"# {title}", ""]
    if meta:
        lines += [f"- {k}: `{v}`" for k, v in meta.items()] + [""]
    lines += ["| metric | " + " | ".join(policies) + " |",
              "|---|" + "---|" * len(policies)]
    for key, label, pct in (("collision_rate", "collision rate (hazard episodes)", True),
                            ("reaction_s_median", "reaction time, msg -> brake (s, median)", False),
                            ("min_ttc_s_median", "min time-to-collision (s, median)", False),
                            ("false_brake_rate", "false-braking rate (no-hazard episodes)", True),
                            ("brake_steps_per_hazard_episode",
                             "braking steps per hazard episode (mean)", False),
                            ("peak_decel_mps2_mean",
                             "peak agent deceleration per hazard episode (m/s^2, mean)", False),
                            ("brake_dv_mps_mean",
                             "speed the agent's braking takes off per hazard episode (m/s, mean)",
                             False),
                            ("hazard_episodes", "hazard episodes", False),
                            ("no_hazard_episodes", "no-hazard episodes", False)):
        cells = [str(summary[p][key]) if key.endswith("episodes") else _fmt(summary[p][key], pct)
                 for p in policies]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    plots = {}
    for key, bins, name in (("peer_count", PEER_BINS, "peer count"),
                            ("radio_loss_rate", None, "radio loss rate")):
        table = breakdown(rows, key, bins)
        if not table:
            continue
        lines += ["", f"## Collision rate by {name}", "",
                  f"| {name} | " + " | ".join(policies) + " |", "|---|" + "---|" * len(policies)]
        for label, cols in table.items():
            lines.append(f"| {label} | " + " | ".join(_fmt(cols.get(p), True)
                                                     for p in policies) + " |")
        plots[key] = _plot(table, policies, name, out / f"collision_by_{key}.png")
        lines += ["", f"![collision rate by {name}]({plots[key].name})"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return {"metrics": out / "metrics.parquet", "report": out / "report.md", **plots}


def _plot(table: dict[str, dict[str, float | None]], policies: list[str], name: str,
          path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(table)
    width = 0.8 / max(1, len(policies))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for k, p in enumerate(policies):
        vals = [100 * (table[lb].get(p) or 0.0) for lb in labels]
        ax.bar([i + k * width for i in range(len(labels))], vals, width, label=p)
    ax.set_xticks([i + width * (len(policies) - 1) / 2 for i in range(len(labels))], labels)
    ax.set_xlabel(name)
    ax.set_ylabel("collision rate (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_run_manifest(folder: str | Path, *, kind: str, config: dict[str, Any],
                       eval_suite: str | None = None, seed: int | None = None) -> Path:
    """One-shot run manifest for a finished evaluation: its suite (name, version, dataset hash)
    and the radio emulator's parameter version."""
    suite_info, dataset_hash = None, None
    if eval_suite:
        suite = load_suite(eval_suite)
        suite_info = {"name": suite.name, "version": suite.version}
        dataset_hash = suite.dataset.manifest_hash
    manifest = run_manifest.new_manifest(kind=kind, config=config, seed=seed,
                                         dataset_manifest_hash=dataset_hash,
                                         eval_suite=suite_info,
                                         emulator_params_version=params_version())
    manifest["status"] = "finished"
    return run_manifest.save(manifest, folder)
