"""Versioned, hashed ESP-NOW emulator parameter files: load, validate, version.

A parameter file is JSON built from the field figures (see ``param_files/espnow_v1.json``); every
section records the source of its figures. `check_params_file` lists every problem of a file,
one message each, naming the field; `load_params` raises `EmulatorParamsError` with all of them.
The "emulator params version" that datasets and runs record is the file's name plus the
sha256 of its canonical JSON (sorted keys, no whitespace), so reformatting does not change it
and any change of content does.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roadsense.errors import EmulatorParamsError
from roadsense.provenance import canonical_json

FORMAT = "roadsense-espnow-params"
_PACKAGED = Path(__file__).parent / "param_files" / "espnow_v1.json"

# section -> {key: kind}; kinds: "str", "num", "rate" (0..1), "pos" (> 0), "nonneg", "bins", "range"
_SCHEMA: dict[str, dict[str, str]] = {
    "broadcast": {"rate_hz": "pos", "source": "str"},
    "loss": {
        "overall_loss": "rate",
        "overall_source": "str",
        "distance_bins": "bins",
        "max_range_m": "pos",
        "max_range_source": "str",
    },
    "latency": {
        "distribution": "str",
        "mean_ms": "pos",
        "std_ms": "pos",
        "min_ms": "nonneg",
        "source": "str",
        "min_source": "str",
    },
    "staleness": {"threshold_ms": "pos", "source": "str"},
    "sensor_noise": {
        "position_std_m": "nonneg",
        "speed_std_mps": "nonneg",
        "accel_std_mps2": "nonneg",
        "heading_std_deg": "nonneg",
        "yaw_rate_std_rps": "nonneg",
        "source": "str",
    },
    "domain_randomization": {
        "latency_mean_ms": "range_pos",
        "loss_rate": "range_rate",
        "jitter_std_ms": "range_pos",
        "position_std_m": "range_nonneg",
        "accel_bias_mps2": "range_nonneg",
        "gps_error_std_m": "range_nonneg",
        "gps_error_tau_s": "range_pos",
        "heading_bias_std_deg": "range_nonneg",
        "source": "str",
    },
    "sensor_errors": {
        "accel_bias_mps2": "nonneg",
        "gps_error_std_m": "nonneg",
        "gps_error_tau_s": "pos",
        "heading_bias_std_deg": "nonneg",
        "source": "str",
    },
    "relay": {"max_hops": "hops", "source": "str"},
    "expected": {"latency_p50_ms": "pos", "latency_p95_ms": "pos", "source": "str"},
}
_TOP = {"format": "str", "name": "str", "description": "str"}
_OPTIONAL = {("latency", "min_source")} | {
    ("domain_randomization", k) for k in ("accel_bias_mps2", "gps_error_std_m", "gps_error_tau_s",
                                          "heading_bias_std_deg")}
_OPTIONAL_SECTIONS = {"sensor_errors"}
"""A file without `sensor_errors` has no persistent sensor errors (`roadsense.comms.sensors`)."""
_BIN_KEYS = {
    "min_m": "nonneg", "max_m": "pos", "loss": "rate", "mean_burst": "burst", "source": "str",
}
_DISTRIBUTIONS = ("shifted_gamma",)


@dataclass(frozen=True)
class DistanceBin:
    """Loss of one distance band: stationary loss rate and mean loss-burst length (packets)."""

    min_m: float
    max_m: float
    loss: float
    mean_burst: float


@dataclass(frozen=True)
class EmulatorParams:
    """A validated parameter file. `raw` is the parsed JSON the version hash is taken over."""

    name: str
    rate_hz: float
    overall_loss: float
    bins: tuple[DistanceBin, ...]
    max_range_m: float
    latency_mean_ms: float
    latency_std_ms: float
    latency_min_ms: float
    staleness_ms: float
    noise_std: dict[str, float]
    dr_ranges: dict[str, tuple[float, float]]
    max_relay_hops: int
    expected: dict[str, float]
    sensor_errors: dict[str, float]
    """Persistent sensor error levels (`roadsense.comms.sensors`); empty: none."""
    raw: dict[str, Any] = field(repr=False, compare=False)
    path: str | None = None

    @property
    def period_s(self) -> float:
        return 1.0 / self.rate_hz

    @property
    def version(self) -> str:
        return params_version(self)


def default_params_path() -> Path:
    """The packaged, calibrated parameter file (``espnow_v1.json``)."""
    return _PACKAGED


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _check_value(where: str, kind: str, v: Any, problems: list[str]) -> None:
    if kind == "str":
        if not isinstance(v, str) or not v.strip():
            problems.append(f"{where}: must be a non-empty string, got {v!r}")
        return
    if kind.startswith("range_"):
        if not isinstance(v, dict) or set(v) != {"min", "max"}:
            problems.append(f"{where}: must be {{\"min\": ..., \"max\": ...}}, got {v!r}")
            return
        _check_value(f"{where}.min", kind[6:], v["min"], problems)
        _check_value(f"{where}.max", kind[6:], v["max"], problems)
        if _is_num(v["min"]) and _is_num(v["max"]) and v["min"] > v["max"]:
            problems.append(f"{where}: min {v['min']} > max {v['max']}")
        return
    if kind == "hops":
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 3:
            problems.append(f"{where}: must be an integer 1-3, got {v!r}")
        return
    if not _is_num(v):
        problems.append(f"{where}: must be a number, got {v!r}")
    elif kind == "rate" and not 0.0 <= v <= 1.0:
        problems.append(f"{where}: must be a rate in [0, 1], got {v}")
    elif kind == "pos" and v <= 0:
        problems.append(f"{where}: must be > 0, got {v}")
    elif kind == "nonneg" and v < 0:
        problems.append(f"{where}: must be >= 0, got {v}")
    elif kind == "burst" and v < 1.0:
        problems.append(f"{where}: mean burst length must be >= 1 packet, got {v}")


def _check_bins(bins: Any, problems: list[str]) -> None:
    where = "loss.distance_bins"
    if not isinstance(bins, list) or not bins:
        problems.append(f"{where}: must be a non-empty list of bins")
        return
    prev_max = 0.0
    for i, b in enumerate(bins):
        w = f"{where}[{i}]"
        if not isinstance(b, dict):
            problems.append(f"{w}: must be an object, got {b!r}")
            continue
        for key in sorted(set(b) - set(_BIN_KEYS)):
            problems.append(f"{w}.{key}: unknown key (allowed: {', '.join(_BIN_KEYS)})")
        for key, kind in _BIN_KEYS.items():
            if key not in b:
                problems.append(f"{w}.{key}: missing")
            else:
                _check_value(f"{w}.{key}", kind, b[key], problems)
        lo, hi = b.get("min_m"), b.get("max_m")
        if _is_num(lo) and _is_num(hi):
            if lo > hi:
                problems.append(f"{w}: min_m {lo} > max_m {hi}")
            if not math.isclose(lo, prev_max):
                problems.append(
                    f"{w}.min_m: must be {prev_max} (bins start at 0 and are contiguous)")
            prev_max = hi
        loss, burst = b.get("loss"), b.get("mean_burst")
        if _is_num(loss) and _is_num(burst) and 0 <= loss < 1 and burst >= 1:
            # Bursty two-state chain: P(good->bad) <= P(bad->bad), i.e. bursts at least as long
            # as with independent losses.
            if burst * (1.0 - loss) < 1.0 - 1e-12:
                problems.append(
                    f"{w}: loss {loss} with mean_burst {burst} is not bursty (a Gilbert-Elliott "
                    f"chain needs mean_burst >= 1/(1 - loss) = {1 / (1 - loss):.3g})"
                )


def validate_params(raw: Any) -> list[str]:
    """Every problem of a parsed parameter file, one message each naming the field (empty: ok)."""
    if not isinstance(raw, dict):
        return [f"top level: must be a JSON object, got {type(raw).__name__}"]
    problems: list[str] = []
    for key in sorted(set(raw) - set(_TOP) - set(_SCHEMA)):
        problems.append(f"{key}: unknown top-level key (allowed: {', '.join([*_TOP, *_SCHEMA])})")
    for key, kind in _TOP.items():
        if key not in raw:
            problems.append(f"{key}: missing")
        else:
            _check_value(key, kind, raw[key], problems)
    if raw.get("format", FORMAT) != FORMAT:
        problems.append(f"format: must be {FORMAT!r}, got {raw.get('format')!r}")
    for section, keys in _SCHEMA.items():
        sec = raw.get(section)
        if sec is None:
            if section not in _OPTIONAL_SECTIONS:
                problems.append(f"{section}: missing section")
            continue
        if not isinstance(sec, dict):
            problems.append(f"{section}: must be an object")
            continue
        for key in sorted(set(sec) - set(keys)):
            problems.append(f"{section}.{key}: unknown key (allowed: {', '.join(keys)})")
        for key, kind in keys.items():
            if key not in sec:
                if (section, key) not in _OPTIONAL:
                    problems.append(f"{section}.{key}: missing")
            elif kind == "bins":
                _check_bins(sec[key], problems)
            else:
                _check_value(f"{section}.{key}", kind, sec[key], problems)
    if problems:
        return problems
    bins = raw["loss"]["distance_bins"]
    if raw["loss"]["max_range_m"] < bins[-1]["max_m"]:
        problems.append(
            f"loss.max_range_m: {raw['loss']['max_range_m']} is below the last bin's max_m "
            f"{bins[-1]['max_m']}"
        )
    lat = raw["latency"]
    if lat["distribution"] not in _DISTRIBUTIONS:
        problems.append(f"latency.distribution: must be one of {_DISTRIBUTIONS}, got "
                        f"{lat['distribution']!r}")
    if lat["min_ms"] >= lat["mean_ms"]:
        problems.append(f"latency.min_ms: {lat['min_ms']} must be below mean_ms {lat['mean_ms']}")
    return problems


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EmulatorParamsError(
            "parameter file not found", path=path, fix="pass an existing JSON parameter file"
        ) from None
    except OSError as exc:
        raise EmulatorParamsError(f"cannot read parameter file: {exc}", path=path) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise EmulatorParamsError(
            f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})",
            path=path,
            fix="repair the JSON syntax",
        ) from None


def check_params_file(path: str | Path) -> list[str]:
    """Problems of a parameter file on disk (unreadable/invalid JSON is one problem)."""
    try:
        raw = _read_json(Path(path))
    except EmulatorParamsError as exc:
        return [str(exc)]
    return validate_params(raw)


def params_from_dict(raw: dict[str, Any], *, path: str | Path | None = None) -> EmulatorParams:
    """Validate a parsed parameter file and build `EmulatorParams` (raises listing all problems)."""
    problems = validate_params(raw)
    if problems:
        where = f" in {path}" if path is not None else ""
        raise EmulatorParamsError(
            f"{len(problems)} problem(s){where}: " + "; ".join(problems),
            fix="correct the fields named (`roadsense emulator check FILE` lists them)",
        )
    loss, lat, noise = raw["loss"], raw["latency"], raw["sensor_noise"]
    dr = raw["domain_randomization"]
    return EmulatorParams(
        name=raw["name"],
        rate_hz=float(raw["broadcast"]["rate_hz"]),
        overall_loss=float(loss["overall_loss"]),
        bins=tuple(
            DistanceBin(float(b["min_m"]), float(b["max_m"]), float(b["loss"]),
                        float(b["mean_burst"]))
            for b in loss["distance_bins"]
        ),
        max_range_m=float(loss["max_range_m"]),
        latency_mean_ms=float(lat["mean_ms"]),
        latency_std_ms=float(lat["std_ms"]),
        latency_min_ms=float(lat["min_ms"]),
        staleness_ms=float(raw["staleness"]["threshold_ms"]),
        noise_std={k: float(v) for k, v in noise.items() if k != "source"},
        dr_ranges={k: (float(v["min"]), float(v["max"])) for k, v in dr.items() if k != "source"},
        max_relay_hops=int(raw["relay"]["max_hops"]),
        expected={k: float(v) for k, v in raw["expected"].items() if k != "source"},
        sensor_errors={k: float(v) for k, v in raw.get("sensor_errors", {}).items()
                       if k != "source"},
        raw=raw,
        path=str(path) if path is not None else None,
    )


def load_params(path: str | Path | None = None) -> EmulatorParams:
    """Load and validate a parameter file (None: the packaged default)."""
    p = Path(path) if path is not None else default_params_path()
    return params_from_dict(_read_json(p), path=p)


def params_version(params_or_path: EmulatorParams | str | Path | None = None) -> str:
    """The emulator params version, e.g. ``espnow-v1+sha256:1a2b3c4d5e6f``."""
    if isinstance(params_or_path, EmulatorParams):
        raw = params_or_path.raw
    else:
        raw = load_params(params_or_path).raw
    digest = hashlib.sha256(canonical_json(raw)).hexdigest()[:12]
    return f"{raw['name']}+sha256:{digest}"
