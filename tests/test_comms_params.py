"""The emulator parameter file: packaged figures, schema check, content-hash version."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from roadsense.comms import (
    check_params_file,
    default_params_path,
    load_params,
    params_version,
    validate_params,
)
from roadsense.errors import EmulatorParamsError

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
"""The shared reference material sits beside the clone (here and in CI)."""
REFERENCE = SHARED / "reference" / "espnow_field_measurements.md"


@pytest.fixture
def raw() -> dict:
    return json.loads(default_params_path().read_text())


def write(tmp_path: Path, data, name: str = "p.json", **dump) -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data, **dump))
    return path


def test_packaged_file_holds_the_field_figures():
    p = load_params()
    assert p.rate_hz == 10.0
    assert p.overall_loss == 0.0621
    assert [(b.min_m, b.max_m, b.loss) for b in p.bins[:2]] == [(0, 20, 0.058), (20, 50, 0.1158)]
    assert p.bins[0].mean_burst == p.bins[1].mean_burst == 1.606
    assert (p.bins[-1].loss, p.bins[-1].mean_burst) == (0.776, 13.9)
    assert p.max_range_m == 200.0
    assert (p.latency_mean_ms, p.latency_std_ms, p.staleness_ms) == (3.84, 1.044, 500.0)
    assert p.noise_std == {"position_std_m": 2.959, "speed_std_mps": 0.429,
                           "accel_std_mps2": 0.395, "heading_std_deg": 4.71,
                           "yaw_rate_std_rps": 0.0232}
    assert p.dr_ranges == {"latency_mean_ms": (1.92, 7.68), "loss_rate": (0.029, 0.25),
                           "jitter_std_ms": (0.52, 2.09), "position_std_m": (0.5, 4.44),
                           "accel_bias_mps2": (0.5, 4.0), "gps_error_std_m": (1.0, 10.0),
                           "gps_error_tau_s": (5.0, 40.0), "heading_bias_std_deg": (0.0, 8.0)}
    assert p.sensor_errors == {"accel_bias_mps2": 3.6, "gps_error_std_m": 5.0,
                               "gps_error_tau_s": 15.0, "heading_bias_std_deg": 3.0}
    assert p.max_relay_hops == 3


def test_every_section_and_bin_records_its_source(raw):
    for name, section in raw.items():
        if isinstance(section, dict):
            sources = [v for k, v in section.items() if k.endswith("source")]
            assert sources and all(v.strip() for v in sources), f"{name} has no source"
    for b in raw["loss"]["distance_bins"]:
        assert b["source"].strip()
    assert "NOT MEASURED" in raw["loss"]["distance_bins"][2]["source"]


def test_file_figures_appear_in_the_reference_document():
    if not REFERENCE.is_file():
        pytest.fail(f"the field measurements the params cite are not at {REFERENCE}: put the "
                    f"shared reference folder beside the clone ({SHARED})", pytrace=False)
    text = REFERENCE.read_text()
    for figure in ("0.0621", "0.0580", "0.1158", "1.606", "3.84", "1.044", "500 ms", "2.959",
                   "0.429", "0.395", "4.71", "0.0232", "1.92 - 7.68", "0.029 - 0.25",
                   "0.52 - 2.09", "0.5 - 4.44", "0.776", "13.9", "60-200 m", "10 Hz"):
        assert figure in text, figure


def test_version_is_a_content_hash_that_ignores_formatting(tmp_path, raw):
    v = params_version()
    assert re.fullmatch(r"espnow-v1\+sha256:[0-9a-f]{12}", v)
    assert params_version(load_params()) == v == params_version(default_params_path())
    reordered = dict(reversed(list(raw.items())))
    same = write(tmp_path, reordered, "same.json", indent=7)
    assert params_version(same) == v
    changed = copy.deepcopy(raw)
    changed["latency"]["mean_ms"] = 3.85
    assert params_version(write(tmp_path, changed, "changed.json")) != v


def _set(d: dict, path: str, value) -> None:
    keys = path.split(".")
    for k in keys[:-1]:
        d = d[int(k)] if k.isdigit() else d[k]
    d[keys[-1]] = value


def _del(d: dict, path: str) -> None:
    keys = path.split(".")
    for k in keys[:-1]:
        d = d[k]
    del d[keys[-1]]


@pytest.mark.parametrize(
    ("mutate", "expect"),
    [
        (lambda r: _set(r, "loss.overall_loss", -0.1), "loss.overall_loss: must be a rate"),
        (lambda r: _set(r, "loss.distance_bins.0.loss", 1.2),
         "loss.distance_bins[0].loss: must be a rate"),
        (lambda r: _set(r, "domain_randomization.loss_rate", {"min": 0.3, "max": 0.1}),
         "domain_randomization.loss_rate: min 0.3 > max 0.1"),
        (lambda r: _set(r, "domain_randomization.loss_rate", {"min": -0.1, "max": 1.5}),
         "domain_randomization.loss_rate.min: must be a rate"),
        (lambda r: _set(r, "loss.distance_bins.1.min_m", 60.0),
         "loss.distance_bins[1]: min_m 60.0 > max_m 50.0"),
        (lambda r: _del(r, "latency"), "latency: missing section"),
        (lambda r: _del(r, "staleness.threshold_ms"), "staleness.threshold_ms: missing"),
        (lambda r: _set(r, "colour", "blue"), "colour: unknown top-level key"),
        (lambda r: _set(r, "latency.median_ms", 3.0), "latency.median_ms: unknown key"),
        (lambda r: _set(r, "loss.distance_bins.0.weight", 1), "distance_bins[0].weight: unknown"),
        (lambda r: _set(r, "broadcast.rate_hz", "10"), "broadcast.rate_hz: must be a number"),
        (lambda r: _set(r, "broadcast.rate_hz", 0), "broadcast.rate_hz: must be > 0"),
        (lambda r: _set(r, "sensor_noise.speed_std_mps", -1), "sensor_noise.speed_std_mps"),
        (lambda r: _set(r, "loss.distance_bins.1.min_m", 25.0), "contiguous"),
        (lambda r: _set(r, "loss.distance_bins.3.mean_burst", 1.2),
         "loss.distance_bins[3]: loss 0.776 with mean_burst 1.2 is not bursty"),
        (lambda r: _set(r, "loss.distance_bins.0.mean_burst", 0.5), "must be >= 1 packet"),
        (lambda r: _set(r, "broadcast.source", ""), "broadcast.source: must be a non-empty"),
        (lambda r: _set(r, "relay.max_hops", 4), "relay.max_hops: must be an integer 1-3"),
        (lambda r: _set(r, "loss.max_range_m", 150.0), "loss.max_range_m: 150.0 is below"),
        (lambda r: _set(r, "latency.min_ms", 5.0), "latency.min_ms: 5.0 must be below"),
        (lambda r: _set(r, "latency.distribution", "normal"), "latency.distribution"),
    ],
)
def test_schema_rejects_each_kind_of_bad_file(tmp_path, raw, mutate, expect):
    mutate(raw)
    problems = validate_params(raw)
    assert any(expect in p for p in problems), problems
    path = write(tmp_path, raw)
    assert check_params_file(path) == problems
    with pytest.raises(EmulatorParamsError) as exc:
        load_params(path)
    assert expect in str(exc.value)


def test_every_problem_is_reported_at_once(tmp_path, raw):
    _set(raw, "loss.overall_loss", 2.0)
    _set(raw, "broadcast.rate_hz", -1)
    _set(raw, "extra", 1)
    problems = validate_params(raw)
    assert len(problems) == 3
    with pytest.raises(EmulatorParamsError) as exc:
        load_params(write(tmp_path, raw))
    for p in problems:
        assert p in str(exc.value)


def test_unreadable_files_name_the_file(tmp_path):
    bad = write(tmp_path, '{"format": ', "broken.json")
    with pytest.raises(EmulatorParamsError, match=r"broken\.json.*not valid JSON \(line 1"):
        load_params(bad)
    with pytest.raises(EmulatorParamsError, match="not found"):
        load_params(tmp_path / "missing.json")
    assert check_params_file(write(tmp_path, "[1, 2]", "list.json")) == [
        "top level: must be a JSON object, got list"]
