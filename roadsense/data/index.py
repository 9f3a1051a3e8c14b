"""``index.parquet``: one row per scenario, so a dataset can be queried without opening XML.

Columns (units in the names): ``scenario_id``, ``family``, ``peer_count``, ``background_count``,
``vehicles_ahead`` (every car ahead of the ego on its lane, radio or not), ``ahead_ids``
(their ids, nearest first: hazard rank r is ``ahead_ids[r-1]``), ``lanes``, ``road_length_m``,
``speed_limit_mps``, ``convoy_speed_mps``, ``min_radius_m`` (NaN on straight roads), the ego's
``ego_tau_s``, ``ego_action_step_s``, ``ego_sigma``, ``ego_accel_mps2``, ``ego_length_m``,
``min_tau_s`` over the convoy, and ``params_json`` (every drawn parameter, as JSON).

>>> import pyarrow.parquet as pq                                          # doctest: +SKIP
>>> t = pq.read_table("datasets/default-v1/index.parquet")                # doctest: +SKIP
>>> t.filter(pc.greater_equal(t["peer_count"], 8)).num_rows               # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from roadsense.data.manifest import atomic_write_bytes
from roadsense.errors import DatasetError
from roadsense.provenance import canonical_json

SCHEMA = pa.schema(
    [
        ("scenario_id", pa.string()),
        ("family", pa.string()),
        ("peer_count", pa.int32()),
        ("background_count", pa.int32()),
        ("vehicles_ahead", pa.int32()),
        ("ahead_ids", pa.list_(pa.string())),
        ("lanes", pa.int32()),
        ("road_length_m", pa.float64()),
        ("speed_limit_mps", pa.float64()),
        ("convoy_speed_mps", pa.float64()),
        ("min_radius_m", pa.float64()),
        ("ego_tau_s", pa.float64()),
        ("ego_action_step_s", pa.float64()),
        ("ego_sigma", pa.float64()),
        ("ego_accel_mps2", pa.float64()),
        ("ego_length_m", pa.float64()),
        ("min_tau_s", pa.float64()),
        ("params_json", pa.string()),
    ]
)


def row_from_params(scenario_id: str, params: dict) -> dict:
    """The index row of one scenario, from the parameters the generator drew."""
    convoy = params["convoy"]
    ego = convoy[0]
    radii = params.get("curve_radii_m") or []
    return {
        "scenario_id": scenario_id,
        "family": params["family"],
        "peer_count": params["peer_count"],
        "background_count": len(params["background"]),
        "vehicles_ahead": len(params["ahead_ids"]),
        "ahead_ids": list(params["ahead_ids"]),
        "lanes": params["lanes"],
        "road_length_m": params["road_length_m"],
        "speed_limit_mps": params["speed_limit_mps"],
        "convoy_speed_mps": params["convoy_speed_mps"],
        "min_radius_m": min(radii) if radii else math.nan,
        "ego_tau_s": ego["tau_s"],
        "ego_action_step_s": ego["action_step_s"],
        "ego_sigma": ego["sigma"],
        "ego_accel_mps2": ego["accel_mps2"],
        "ego_length_m": ego["length_m"],
        "min_tau_s": min(v["tau_s"] for v in convoy),
        "params_json": json.dumps(params, sort_keys=True, separators=(",", ":")),
    }


def write_index(path: Path, rows: list[dict]) -> None:
    """Write the index atomically; rows in scenario-id order give byte-identical files."""
    rows = sorted(rows, key=lambda r: r["scenario_id"])
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    atomic_write_bytes(path, buf.getvalue())


def read_index(path: Path) -> pa.Table:
    """Load the index; DatasetError naming the file when it is missing or unreadable."""
    if not path.is_file():
        raise DatasetError("index.parquet is missing", path=path, fix="regenerate the dataset")
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"index.parquet cannot be read ({exc})", path=path) from None


def index_content_hash(path: Path) -> str:
    """sha256 of the index's rows as canonical JSON: stable across pyarrow versions, unlike
    the file's bytes (parquet files name the writer's version)."""
    rows = read_index(path).to_pylist()
    return hashlib.sha256(canonical_json(rows)).hexdigest()


def index_params(path: Path) -> dict[str, dict]:
    """scenario id -> drawn parameters, from the index."""
    table = read_index(path)
    ids = table.column("scenario_id").to_pylist()
    params = table.column("params_json").to_pylist()
    return {sid: json.loads(p) for sid, p in zip(ids, params, strict=True)}
