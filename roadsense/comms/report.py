"""Emulator statistics against the calibration figures, and plots to compare them at a glance.

`fidelity_run` drives the emulator over a long run at fixed distances (one receiver, several
senders per distance, domain randomisation off) and measures what the field figures describe:
delivery ratio and mean loss-burst length per distance bin, latency p50/p95/mean/std, receiver
inter-arrival time, and message age sampled at a 10 Hz receiver. `fidelity_rows` turns that into
rows of measured value, target (from the parameter file) and tolerance; `write_plots` draws
loss vs distance, the latency histogram, and the inter-arrival and age CDFs.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from roadsense.comms.emulator import EspNowEmulator
from roadsense.comms.params import EmulatorParams

log = logging.getLogger(__name__)

RECEIVER = "RX"
DEFAULT_DISTANCES_M = (10.0, 35.0, 55.0, 100.0, 250.0)
PLOT_FILES = ("loss_vs_distance.png", "latency_hist.png", "interarrival_cdf.png", "age_cdf.png")


@dataclass
class DistanceStats:
    """What was measured on the links at one distance."""

    distance_m: float
    bin_index: int  # -1: beyond the maximum range
    packets: int
    delivery_ratio: float
    mean_burst: float
    interarrival_s: np.ndarray = field(repr=False)
    age_s: np.ndarray = field(repr=False)


@dataclass
class FidelityResult:
    """Statistics of one fidelity run (latency pooled over every delivered packet)."""

    params: EmulatorParams
    duration_s: float
    per_distance: list[DistanceStats]
    latency_s: np.ndarray = field(repr=False)


def bin_of(params: EmulatorParams, distance_m: float) -> int:
    """Index of the parameter file's distance bin holding ``distance_m`` (-1: out of range)."""
    if distance_m >= params.max_range_m:
        return -1
    for i, b in enumerate(params.bins):
        if b.min_m <= distance_m < b.max_m:
            return i
    return len(params.bins) - 1  # between the last bin and max range: the last bin's figures


def _bursts(lost: np.ndarray) -> np.ndarray:
    """Lengths of the runs of consecutive True values."""
    padded = np.concatenate(([False], lost, [False])).astype(np.int8)
    edges = np.diff(padded)
    return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


def fidelity_run(
    params: EmulatorParams,
    *,
    duration_s: float = 600.0,
    distances_m: tuple[float, ...] = DEFAULT_DISTANCES_M,
    links_per_distance: int = 8,
    seed: int = 0,
    step_s: float = 0.1,
) -> FidelityResult:
    """Run stationary links at fixed distances and measure their statistics (DR off)."""
    ids = [RECEIVER]
    xs, ys, dist_of = [0.0], [0.0], {}
    for di, d in enumerate(distances_m):
        for li in range(links_per_distance):
            vid = f"S{di}_{li}"
            angle = 2 * math.pi * (li + 0.5 * di / max(1, len(distances_m))) / links_per_distance
            ids.append(vid)
            xs.append(d * math.cos(angle))
            ys.append(d * math.sin(angle))
            dist_of[vid] = d
    n = len(ids)
    x, y = np.array(xs), np.array(ys)
    zeros, heading = np.zeros(n), np.full(n, 90.0)
    emu = EspNowEmulator(params)
    emu.reset(np.random.default_rng(seed), ids, receivers=[RECEIVER], record=True,
              step_length_s=step_s)
    steps = int(round(duration_s / step_s))
    ages: dict[str, list[float]] = {v: [] for v in ids[1:]}
    for k in range(steps):
        emu.step(k * step_s, ids, x, y, zeros, zeros, heading, zeros)
        view = emu.view(RECEIVER)
        for sender, age in zip(view.sender, view.age_s, strict=True):
            ages[sender].append(age)
    plog = emu.packet_log()
    delivered = plog["delivered"]
    latency = (plog["arrival_s"] - plog["send_s"])[delivered]
    per: list[DistanceStats] = []
    for d in distances_m:
        senders = [v for v, dv in dist_of.items() if dv == d]
        n_pk = n_ok = 0
        bursts, inter, age = [], [], []
        for v in senders:
            m = plog["sender"] == v
            ok = delivered[m]
            n_pk += len(ok)
            n_ok += int(ok.sum())
            bursts.append(_bursts(~ok))
            arrivals = np.sort(plog["arrival_s"][m][ok])
            inter.append(np.diff(arrivals))
            age.extend(ages[v])
        b = np.concatenate(bursts)
        per.append(DistanceStats(
            distance_m=d, bin_index=bin_of(params, d), packets=n_pk,
            delivery_ratio=n_ok / n_pk if n_pk else float("nan"),
            mean_burst=float(b.mean()) if len(b) else float("nan"),
            interarrival_s=np.concatenate(inter), age_s=np.array(age),
        ))
    return FidelityResult(params=params, duration_s=duration_s, per_distance=per,
                          latency_s=latency)


def fidelity_rows(result: FidelityResult) -> list[dict]:
    """Rows {statistic, where, measured, target, tolerance, unit, ok} against the file's figures.

    Tolerances are the issue's: delivery ratio 1 percentage point, mean burst 10%, latency
    quantiles 0.5 ms, inter-arrival mean 2% of period / delivery ratio, age 40-100 ms.
    """
    p = result.params
    rows: list[dict] = []

    def row(stat: str, where: str, measured: float, target: float, tol: float, unit: str,
            ok: bool | None = None) -> None:
        good = abs(measured - target) <= tol if ok is None else ok
        rows.append({"statistic": stat, "where": where, "measured": float(measured),
                     "target": float(target), "tolerance": float(tol), "unit": unit,
                     "ok": bool(good)})

    for s in result.per_distance:
        where = f"{s.distance_m:g} m"
        if s.bin_index < 0:
            row("delivery ratio", where + " (beyond max range)", s.delivery_ratio, 0.0, 0.0, "")
            continue
        b = p.bins[s.bin_index]
        where = f"{s.distance_m:g} m (bin {b.min_m:g}-{b.max_m:g} m)"
        row("delivery ratio", where, s.delivery_ratio, 1.0 - b.loss, 0.01, "")
        row("mean loss burst", where, s.mean_burst, b.mean_burst, 0.10 * b.mean_burst, "packets")
        if len(s.interarrival_s):
            target = p.period_s / s.delivery_ratio
            row("rx inter-arrival mean", where, s.interarrival_s.mean() * 1e3, target * 1e3,
                0.02 * target * 1e3, "ms")
        if s.distance_m <= p.bins[0].max_m and len(s.age_s):
            mean_age = s.age_s.mean() * 1e3
            row("mean message age (10 Hz receiver)", where, mean_age, 70.0, 30.0, "ms",
                ok=40.0 <= mean_age <= 100.0)
    lat = result.latency_s * 1e3
    if len(lat):
        row("latency p50", "all delivered", np.percentile(lat, 50),
            p.expected["latency_p50_ms"], 0.5, "ms")
        row("latency p95", "all delivered", np.percentile(lat, 95),
            p.expected["latency_p95_ms"], 0.5, "ms")
        row("latency mean", "all delivered", lat.mean(), p.latency_mean_ms, 0.05, "ms")
        row("latency std", "all delivered", lat.std(), p.latency_std_ms, 0.05, "ms")
    return rows


def _save(fig, path: Path) -> None:
    """Write a figure atomically: a half-written PNG never appears under its final name."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_plots(result: FidelityResult, out_dir: str | Path) -> list[Path]:
    """Draw the four comparison plots into ``out_dir``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    p = result.params
    paths = [out / name for name in PLOT_FILES]

    fig, ax = plt.subplots(figsize=(6, 4))
    edges = [0.0] + [b.max_m for b in p.bins]
    model = [b.loss for b in p.bins]
    if p.max_range_m > edges[-1]:
        edges.append(p.max_range_m)
        model.append(model[-1])
    edges.append(p.max_range_m * 1.3)
    model.append(1.0)  # beyond the maximum range
    ax.stairs(model, edges, baseline=None, label="parameter file (model)", color="C0")
    for s in result.per_distance:
        ax.plot(s.distance_m, 1 - s.delivery_ratio, "o", color="C1")
    ax.plot([], [], "o", color="C1", label="emulator (measured)")
    ax.plot([10, 35], [0.058, 0.1158], "s", color="C2", label="field: calibration drive")
    ax.plot([130], [0.776], "s", color="C3", label="field: stationary 60-200 m")
    ax.set(xlabel="distance (m)", ylabel="packet loss", title="Loss vs distance", ylim=(0, 1.05))
    ax.legend(fontsize=8)
    _save(fig, paths[0])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    lat = result.latency_s * 1e3
    ax.hist(lat, bins=80, range=(0, 12), density=True, color="C0", alpha=0.7)
    for q, style in ((np.percentile(lat, 50), "--"), (np.percentile(lat, 95), ":")):
        ax.axvline(q, color="C1", ls=style)
    ax.axvline(p.latency_mean_ms, color="C2", label=f"field mean {p.latency_mean_ms} ms")
    ax.set(xlabel="one-way latency (ms)", ylabel="density",
           title=f"Latency (measured mean {lat.mean():.2f}, std {lat.std():.2f} ms)")
    ax.legend(fontsize=8)
    _save(fig, paths[1])
    plt.close(fig)

    for path, attr, xlabel, title in (
        (paths[2], "interarrival_s", "RX inter-arrival (ms)", "Inter-arrival CDF per distance"),
        (paths[3], "age_s", "message age at a 10 Hz receiver (ms)", "Age CDF per distance"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        for s in result.per_distance:
            v = np.sort(getattr(s, attr)) * 1e3
            if len(v):
                ax.plot(v, np.arange(1, len(v) + 1) / len(v), label=f"{s.distance_m:g} m")
        ax.set(xlabel=xlabel, ylabel="CDF", title=title, xscale="log" if attr == "age_s"
               else "linear")
        ax.legend(fontsize=8)
        _save(fig, path)
        plt.close(fig)
    return paths
