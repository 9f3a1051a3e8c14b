"""Episode metrics from the env's info dicts, logged by every env runner.

Names are namespaced and carry units (CleanRL style):

| metric                    | from info key(s)                    | per episode               |
|---------------------------|-------------------------------------|---------------------------|
| convoy/collision_rate     | collision                           | any step -> 1, else 0     |
| convoy/false_brake_rate   | false_brake                         | any step -> 1, else 0     |
| convoy/min_gap_m          | min_gap_m                           | minimum over the episode  |
| convoy/min_ttc_s          | min_ttc_s                           | minimum (None skipped)    |
| convoy/brake_after_msg_s  | hazard_msg_rx_s, first_brake_s      | first brake - first msg   |
| convoy/peer_count_mean    | peers_held, else peer_count         | mean over steps           |
| radio/pdr                 | radio_pdr, else 1 - radio_loss_rate | mean over steps           |
| sumo/step_ms              | the sub-env's `sumo_step_ms` attr.  | episode mean (by the env) |
| reward/<term>             | reward_terms {term: episode total}  | last step's totals        |
| sumo/crashes              | sumo_crashed (set by the vector env)| lifetime count            |

`reward_terms` holds running episode totals (as ConvoyEnv reports them), so the last step's
values are the episode's. A key missing from every step is simply not logged (the toy env
has few of them). An episode cut by a SUMO crash only counts in `sumo/crashes`: its partial
figures would bias the rates.
"""

from __future__ import annotations

import math
from typing import Any

from ray.rllib.callbacks.callbacks import RLlibCallback

WINDOW = 100
"""Episodes per env runner that each mean is taken over."""


def _values(infos: list[dict], key: str) -> list[Any]:
    return [info[key] for info in infos if isinstance(info, dict) and info.get(key) is not None]


def _mean(values: list[Any]) -> float | None:
    values = [float(v) for v in values]
    return sum(values) / len(values) if values else None


def episode_metrics(infos: list[dict]) -> dict[str, float]:
    """Summarise one episode's info dicts (reset info first) into the metrics above."""
    if any(isinstance(i, dict) and i.get("sumo_crashed") for i in infos):
        return {"sumo/crashes": 1.0}
    out: dict[str, float | None] = {}
    for name, key in (("convoy/collision_rate", "collision"),
                      ("convoy/false_brake_rate", "false_brake")):
        flags = _values(infos, key)
        out[name] = float(any(bool(f) for f in flags)) if flags else None
    for name, key in (("convoy/min_gap_m", "min_gap_m"), ("convoy/min_ttc_s", "min_ttc_s")):
        vals = [float(v) for v in _values(infos, key) if math.isfinite(float(v))]
        out[name] = min(vals) if vals else None
    msg, brake = _values(infos, "hazard_msg_rx_s"), _values(infos, "first_brake_s")
    out["convoy/brake_after_msg_s"] = float(brake[-1]) - float(msg[-1]) if msg and brake else None
    out["convoy/peer_count_mean"] = _mean(
        _values(infos, "peers_held") or _values(infos, "peer_count")
    )
    pdr = _values(infos, "radio_pdr") or [1.0 - float(v) for v in _values(infos, "radio_loss_rate")]
    out["radio/pdr"] = _mean(pdr)
    totals = _values(infos, "reward_terms")
    if totals:
        out.update({f"reward/{term}": float(v) for term, v in dict(totals[-1]).items()})
    return {k: v for k, v in out.items() if v is not None}


def _sumo_step_ms(env: Any, env_index: int) -> float | None:
    # ConvoyEnv keeps its SUMO timing out of `info` (infos must repeat bit for bit per seed).
    try:
        value = env.envs[env_index].unwrapped.sumo_step_ms
    except (AttributeError, IndexError, TypeError):
        return None
    return float(value) if value is not None and math.isfinite(float(value)) else None


class RoadSenseCallbacks(RLlibCallback):
    """Logs `episode_metrics` of every finished episode (see the module docstring)."""

    def on_episode_end(
        self,
        *,
        episode: Any,
        prev_episode_chunks: list[Any] | None = None,
        metrics_logger: Any = None,
        env: Any = None,
        env_index: int = 0,
        **kwargs: Any,
    ) -> None:
        if metrics_logger is None:
            return
        infos: list[dict] = []
        # With batch_mode="truncate_episodes" the earlier part of a long episode was already
        # sent to the learner in earlier chunks; the metrics need all of it.
        for n, chunk in enumerate([*(prev_episode_chunks or []), episode]):
            chunk_infos = list(chunk.get_infos())
            # A continuation chunk starts with the previous chunk's last info: skip the copy.
            infos.extend(chunk_infos[1:] if n else chunk_infos)
        metrics = episode_metrics(infos)
        if "sumo/crashes" not in metrics and (step_ms := _sumo_step_ms(env, env_index)):
            metrics["sumo/step_ms"] = step_ms
        for name, value in metrics.items():
            if name == "sumo/crashes":
                metrics_logger.log_value(name, value, reduce="lifetime_sum")
            else:
                metrics_logger.log_value(name, value, reduce="mean", window=WINDOW)
