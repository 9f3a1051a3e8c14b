"""Replay of real recordings: what the ego's radio and sensors delivered on a real drive, fed
to a policy row by row (10 Hz), with the braking it would have commanded.

A recording is a `.npz` in the layout of `recordings/README.md` (one row per ~100 ms: the
ego's own speed and IMU acceleration, up to S held peer messages in storage slots, a slot
mask), with an optional `NAME_events.json` of braking events detected in the drive.

Conversion to the project's observation (`roadsense.envs.observation`):

- ego row: `ego_features(speed, accel)`, the IMU acceleration relative to its running mean
  (`AccelBaseline` source `("ego",)`, send time = the row's time), as in the env;
- one peer row per held message, `PEER_FEATURES` order and `PEER_SCALE` scaling:
  long_offset = fwd, lat_offset = left, rel_speed, accel = the reported acceleration relative
  to that sender's running mean, rel_heading = -radians(deg) (the file's heading difference is
  clockwise, ours counter-clockwise), age = the message's age, extra_hops = 0.

The recording's slots are storage, not senders: when a second peer appears it takes slot 0
and the first moves to slot 1. A real car knows each message's sender (ESP-NOW carries the
MAC), so replay recovers sender tracks (`SenderTracker`) and keys each sender's running mean
by its track: a message already held in the previous row (same send time) keeps its track; a
new message joins the live track whose last message is nearest in position (greedy, each
track at most once per row, within `gate_m`), else starts a new track; a track unseen for
more than `timeout_s` ends.

A policy runs in two modes. `closed_loop` feeds the policy's own previous command back, and
`open_loop` feeds 0, in the observation's `"prev_brake"` entry (float32, shape (1,)); the entry
is present only for a policy whose attribute `prev_brake_input` is true. The project's
observation carries no previous command, so for its policies and baselines the two modes
give the same brakes; both stay in the report so that a policy that reads its own command
shows whether it latches. Stateful policies (`reset()`) are reset before each run.

Metrics per policy and mode: share of rows braking (> `BRAKE_ON`), brake onsets per minute,
the longest brake (s), the mean brake; and the response to real braking: for each event of the
events file and each stretch where a peer ahead in the ego's lane reports a sustained hard
brake (relative acceleration <= -`hazard_decel_mps2` for >= `min_hazard_s`), whether the policy
braked within the stretch (or within `RESPONSE_WINDOW_S` of its start, for short stretches) and
how long after its start.
"""

from __future__ import annotations

import json
import logging
import math
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from roadsense.envs.observation import (
    PEER_DIM,
    PEER_SCALE,
    AccelBaseline,
    ego_features,
)
from roadsense.errors import ConfigError

log = logging.getLogger(__name__)

ARRAYS = ("timestamps_local_ms", "ego", "peers", "peer_mask")
"""The arrays every recording holds (layout: recordings/README.md)."""
EGO_COLUMNS, PEER_COLUMNS = 4, 6
EGO_NORM = np.array([30.0, 10.0])
"""The file's ego normalisation (speed m/s, accel m/s^2; heading and peer count are unused)."""
PEER_NORM = np.array([100.0, 100.0, 30.0, 180.0, 10.0, 500.0])
"""The file's peer normalisation: fwd m, left m, rel speed m/s, rel heading deg, accel m/s^2,
age ms."""
EVENTS_SUFFIX = "_events.json"
BRAKE_ON = 0.1
"""A row counts as braking above this command (fraction of full braking)."""
RESPONSE_WINDOW_S = 1.0
"""A stretch counts as answered by a brake up to this long after its start, however short."""
MODES = ("closed_loop", "open_loop")
PREV_BRAKE_KEY = "prev_brake"
_EGO_SOURCE = ("ego",)
_SAME_MESSAGE_S = 0.0005
"""Send times within half a millisecond are the same message (the file stores whole ms)."""
TRACK_TIMEOUT_S = 5.0
"""A sender track unseen this long ends. A car's radio knows its peers for as long as it keeps
hearing them; in the simulation a sender's running mean never resets within an episode. On
the shared drive the second car is heard with gaps of 1.3-3.6 s: at 1 s it would restart as
an unknown sender (mean reset) about 30 times."""
BROADCAST_PERIOD_S = 0.1
"""Each sender broadcasts every 100 ms on its own clock, so its send times keep their phase
modulo 100 ms (within 2 ms for 99% of consecutive messages on the shared recording)."""
_FIX = "write the arrays described in recordings/README.md"

Policy = Callable[[dict[str, np.ndarray]], np.ndarray]


class RecordingError(ConfigError):
    """A recording or its events file is missing, unreadable or not in the documented layout."""


@dataclass(frozen=True)
class BrakeEvent:
    """A braking event of the drive, on the recording's clock (s from its first row)."""

    kind: str
    start_s: float
    end_s: float
    min_accel_mps2: float | None = None
    """The braking car's own lowest acceleration in the event, where the file gives it."""


@dataclass(frozen=True)
class Recording:
    """One recorded drive, validated; arrays as in the file, times in s from the first row."""

    name: str
    path: Path
    time_s: np.ndarray
    """(N,) float64, strictly increasing, 0 at the first row."""
    t0_ms: float
    """The first row's `timestamps_local_ms` (the ego clock)."""
    ego: np.ndarray
    """(N, 4) float64, the file's normalisation."""
    peers: np.ndarray
    """(N, S, 6) float64, the file's normalisation."""
    peer_mask: np.ndarray
    """(N, S) bool."""
    events: tuple[BrakeEvent, ...] | None
    """None when the recording has no events file."""
    events_path: Path | None = None

    @property
    def rows(self) -> int:
        return len(self.time_s)

    @property
    def row_s(self) -> np.ndarray:
        """(N,) how long each row holds: until the next row; the last one a median row."""
        dt = np.diff(self.time_s)
        return np.append(dt, np.median(dt))

    @property
    def duration_s(self) -> float:
        return float(self.row_s.sum())


def load_recording(path: str | Path, events: str | Path | None = None) -> Recording:
    """Read and validate a recording; `events` defaults to `NAME_events.json` beside it (no
    such file: no events). Raises `RecordingError` naming the file, the field and the fix."""
    path = Path(path)
    if not path.is_file():
        raise RecordingError("recording not found", path=path,
                             fix="pass a .npz in the layout of recordings/README.md, or a "
                                 "folder of them")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise RecordingError("a single array (.npy), not a .npz of named arrays", path=path,
                                 fix="save it with numpy.savez (" + _FIX + ")")
        with data:
            missing = [k for k in ARRAYS if k not in data.files]
            if missing:
                raise RecordingError(f"missing array(s) {', '.join(missing)} (has: "
                                     f"{', '.join(data.files) or 'none'})", path=path, fix=_FIX)
            arrays = {k: data[k] for k in ARRAYS}
    except RecordingError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise RecordingError(f"cannot read as .npz: {exc}", path=path,
                             fix="save it with numpy.savez (" + _FIX + ")") from exc
    t, ego, peers, mask = (arrays[k] for k in ARRAYS)
    for name, arr in arrays.items():
        if arr.dtype.kind not in "biuf":
            raise RecordingError(f"array {name} has dtype {arr.dtype}, not numeric",
                                 path=path, fix=f"store {name} as int or float ({_FIX})")
    n = len(t) if t.ndim == 1 else -1
    expected = {"timestamps_local_ms": "(N,)", "ego": f"(N, {EGO_COLUMNS})",
                "peers": f"(N, S, {PEER_COLUMNS})", "peer_mask": "(N, S)"}
    shapes_ok = {
        "timestamps_local_ms": t.ndim == 1 and n >= 2,
        "ego": ego.shape == (n, EGO_COLUMNS),
        "peers": peers.ndim == 3 and peers.shape[0] == n and peers.shape[2] == PEER_COLUMNS,
        "peer_mask": peers.ndim == 3 and mask.shape == peers.shape[:2],
    }
    for name, ok in shapes_ok.items():
        if not ok:
            raise RecordingError(f"array {name} has shape {arrays[name].shape}, expected "
                                 f"{expected[name]} with N = len(timestamps_local_ms) >= 2",
                                 path=path, fix=_FIX)
    for name, arr in arrays.items():
        bad = ~np.isfinite(arr.astype(np.float64))
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise RecordingError(f"array {name} holds NaN or inf ({int(bad.sum())} values, "
                                 f"first in row {row})", path=path,
                                 fix="drop or repair those rows before saving")
    t = t.astype(np.float64)
    step = np.diff(t)
    if (step <= 0).any():
        row = int(np.argmax(step <= 0)) + 1
        raise RecordingError(f"array timestamps_local_ms is not strictly increasing (row {row}: "
                             f"{t[row - 1]:.0f} then {t[row]:.0f} ms)", path=path,
                             fix="sort the rows by time and drop duplicates")
    if not np.isin(mask, (0, 1)).all():
        raise RecordingError(f"array peer_mask holds values other than 0 and 1 "
                             f"({np.unique(mask[~np.isin(mask, (0, 1))])[:5].tolist()})",
                             path=path, fix="store 1 where a slot holds a message, else 0")
    events_path = Path(events) if events is not None else _default_events(path)
    if events is not None and not events_path.is_file():
        raise RecordingError("events file not found", path=events_path,
                             fix="pass an existing events JSON, or none")
    time_s = (t - t[0]) / 1000.0
    found = None
    if events_path is not None and events_path.is_file():
        found = _load_events(events_path, t[0], t[-1])
    return Recording(name=path.stem, path=path, time_s=time_s, t0_ms=float(t[0]),
                     ego=ego.astype(np.float64), peers=peers.astype(np.float64),
                     peer_mask=mask.astype(bool), events=found,
                     events_path=events_path if found is not None else None)


def _default_events(path: Path) -> Path | None:
    candidate = path.with_name(path.stem + EVENTS_SUFFIX)
    return candidate if candidate.is_file() else None


def _load_events(path: Path, t0_ms: float, t1_ms: float) -> tuple[BrakeEvent, ...]:
    """Events mapped to the ego clock: `mapped_to_<ego>_clock.hard_event_<ego>_ms` gives the
    hard event's [start, end] on the ego clock; its difference to `detected.hard_event`'s
    `start_msg_ms` maps every event. Each mapped event must overlap the recording."""
    fix = "use the layout of recordings/README.md (events file)"
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordingError(f"cannot read the events JSON: {exc}", path=path, fix=fix) from exc

    def need(obj: Any, key: str, where: str, kind: type | tuple[type, ...]) -> Any:
        if not isinstance(obj, dict) or key not in obj or not isinstance(obj[key], kind):
            raise RecordingError(f"field {where}{key} is missing or not a "
                                 f"{getattr(kind, '__name__', 'number')}", path=path, fix=fix)
        return obj[key]

    number = (int, float)
    detected = need(doc, "detected", "", dict)
    listed = need(detected, "events", "detected.", list)
    hard = need(detected, "hard_event", "detected.", dict)
    hard_start = need(hard, "start_msg_ms", "detected.hard_event.", number)
    clocks = [k for k in (doc if isinstance(doc, dict) else {})
              if k.startswith("mapped_to_") and k.endswith("_clock")]
    if len(clocks) != 1:
        raise RecordingError(f"expected one mapped_to_<ego>_clock field, found {clocks or 'none'}",
                             path=path, fix=fix)
    mapping = need(doc, clocks[0], "", dict)
    keys = [k for k in mapping if k.startswith("hard_event_") and k.endswith("_ms")]
    pair = mapping[keys[0]] if len(keys) == 1 else None
    if not (isinstance(pair, list) and len(pair) == 2
            and all(isinstance(v, number) and math.isfinite(v) for v in pair)):
        raise RecordingError(f"field {clocks[0]}.hard_event_<ego>_ms must be [start, end] in ms",
                             path=path, fix=fix)
    offset_ms = float(pair[0]) - float(hard_start)
    out = []
    for i, ev in enumerate(listed):
        where = f"detected.events[{i}]."
        start = need(ev, "start_msg_ms", where, number)
        end = need(ev, "end_msg_ms", where, number)
        if not (math.isfinite(start) and math.isfinite(end) and end >= start):
            raise RecordingError(f"field {where}end_msg_ms ({end}) is before start_msg_ms "
                                 f"({start}) or not finite", path=path, fix=fix)
        a, b = start + offset_ms, end + offset_ms
        if b < t0_ms or a > t1_ms:
            raise RecordingError(
                f"field {where[:-1]} maps to {a:.0f}-{b:.0f} ms on the ego clock, outside the "
                f"recording ({t0_ms:.0f}-{t1_ms:.0f} ms)", path=path,
                fix=f"check {clocks[0]} against the recording's timestamps_local_ms")
        low = ev.get("min_accel_x_ms2")
        out.append(BrakeEvent(str(ev.get("event_type", "braking")),
                              float(max(a, t0_ms) - t0_ms) / 1000.0,
                              float(min(b, t1_ms) - t0_ms) / 1000.0,
                              float(low) if isinstance(low, number) else None))
    return tuple(out)


def recording_paths(paths: Iterable[str | Path]) -> list[Path]:
    """The `.npz` files named: a folder stands for every `*.npz` in it (sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("*.npz"))
            if not found:
                raise RecordingError("no .npz recording in this folder", path=p,
                                     fix="add NAME.npz files (recordings/README.md)")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise RecordingError("recording not found", path=p,
                                 fix="pass a .npz file or a folder of them")
    return out


class SenderTracker:
    """Re-associates held messages to sender tracks, row by row (see the module docstring)."""

    def __init__(self, gate_m: float = 15.0, timeout_s: float = TRACK_TIMEOUT_S,
                 period_s: float = BROADCAST_PERIOD_S, phase_tol_s: float = 0.005) -> None:
        self.gate_m, self.timeout_s = gate_m, timeout_s
        self.period_s, self.phase_tol_s = period_s, phase_tol_s
        self.reset()

    def reset(self) -> None:
        self._next = 0
        self._pos: dict[int, np.ndarray] = {}
        self._seen: dict[int, float] = {}
        self._send: dict[int, float] = {}
        self._previous: list[tuple[float, int]] = []

    @property
    def tracks(self) -> int:
        """How many tracks have been started since the last reset."""
        return self._next

    def _in_phase(self, send_s: float, track: int) -> bool:
        """Whether a message sent at `send_s` keeps the track's broadcast phase."""
        lag = (send_s - self._send[track]) % self.period_s
        return min(lag, self.period_s - lag) <= self.phase_tol_s

    def assign(self, now_s: float, send_s: np.ndarray, pos_m: np.ndarray) -> np.ndarray:
        """Track ids of this row's messages: send times (K,) and (fwd, left) positions (K, 2)."""
        for track in [k for k, seen in self._seen.items() if now_s - seen > self.timeout_s]:
            del self._seen[track], self._pos[track], self._send[track]
        ids = np.full(len(send_s), -1, dtype=np.int64)
        used: set[int] = set()
        for i, s in enumerate(send_s):
            for prev_s, track in self._previous:
                if abs(prev_s - s) <= _SAME_MESSAGE_S and track not in used:
                    ids[i] = track
                    used.add(track)
                    break
        pairs = sorted((not self._in_phase(float(send_s[i]), k),
                        float(np.hypot(*(pos_m[i] - self._pos[k]))), i, k)
                       for i in np.flatnonzero(ids < 0) for k in self._pos if k not in used)
        for _, dist, i, k in pairs:
            if dist <= self.gate_m and ids[i] < 0 and k not in used:
                ids[i] = k
                used.add(k)
        for i in np.flatnonzero(ids < 0):
            ids[i] = self._next
            self._next += 1
        for i, k in enumerate(ids):
            self._pos[int(k)] = pos_m[i].copy()
            self._seen[int(k)] = now_s
            self._send[int(k)] = float(send_s[i])
        self._previous = [(float(s), int(k)) for s, k in zip(send_s, ids, strict=True)]
        return ids


@dataclass
class ReplayInput:
    """A recording converted to observations, with what the metrics and plot need."""

    recording: Recording
    obs: list[dict[str, np.ndarray]]
    """Per row: {"ego": (2,), "peers": (K, PEER_DIM)} float32, as the env builds them."""
    track: list[np.ndarray]
    """Per row: (K,) the sender track of each peer row."""
    raw_accel: list[np.ndarray]
    """Per row: (K,) the peers' reported accelerations, m/s^2, absolute."""
    tracks: int = 0
    hazard_decel_mps2: float = 3.0
    stretches: list[dict[str, Any]] = field(default_factory=list)
    """Peer hard-brake stretches (`hard_brake_stretches`)."""


def convert(rec: Recording, *, gate_m: float = 15.0, timeout_s: float = TRACK_TIMEOUT_S,
            hazard_decel_mps2: float = 3.0, min_hazard_s: float = 0.5,
            lane_half_width_m: float = 6.0, range_m: float = 200.0) -> ReplayInput:
    """The observation of every row, its sender tracks, and the peer hard-brake stretches."""
    tracker, baseline = SenderTracker(gate_m, timeout_s), AccelBaseline()
    speed = rec.ego[:, 0] * EGO_NORM[0]
    ego_accel = rec.ego[:, 1] * EGO_NORM[1]
    obs, tracks, raws = [], [], []
    for r in range(rec.rows):
        now = float(rec.time_s[r])
        p = rec.peers[r, rec.peer_mask[r]] * PEER_NORM
        age_s = p[:, 5] / 1000.0
        send_s = now - age_s
        ids = tracker.assign(now, send_s, p[:, :2])
        si = np.empty((len(p), PEER_DIM))
        si[:, 0], si[:, 1], si[:, 2] = p[:, 0], p[:, 1], p[:, 2]
        si[:, 3] = baseline.relative(ids.tolist(), send_s, p[:, 4])
        si[:, 4] = np.remainder(-np.radians(p[:, 3]) + np.pi, 2 * np.pi) - np.pi
        si[:, 5] = age_s
        si[:, 6] = 0.0
        acc = baseline.relative(_EGO_SOURCE, (now,), (float(ego_accel[r]),))[0]
        obs.append({"ego": ego_features(float(speed[r]), acc),
                    "peers": (si / PEER_SCALE).astype(np.float32)})
        tracks.append(ids)
        raws.append(p[:, 4].copy())
    out = ReplayInput(rec, obs, tracks, raws, tracks=tracker.tracks,
                      hazard_decel_mps2=hazard_decel_mps2)
    out.stretches = hard_brake_stretches(out, hazard_decel_mps2, min_hazard_s,
                                         lane_half_width_m, range_m)
    return out


def hard_brake_stretches(inp: ReplayInput, decel_mps2: float = 3.0, min_s: float = 0.5,
                         lane_half_width_m: float = 6.0, range_m: float = 200.0
                         ) -> list[dict[str, Any]]:
    """Per track, each run of consecutive rows whose message from that track is ahead
    (0 < long_offset < `range_m`), within the lane (|lat_offset| < `lane_half_width_m`) and
    reports a relative acceleration <= -`decel_mps2`, lasting >= `min_s` (from its first row
    to the row after its last)."""
    time_s, row_s = inp.recording.time_s, inp.recording.row_s
    flagged: dict[int, list[int]] = {}
    for r, (o, ids) in enumerate(zip(inp.obs, inp.track, strict=True)):
        p = o["peers"].astype(np.float64) * PEER_SCALE
        hit = ((p[:, 0] > 0) & (p[:, 0] < range_m) & (np.abs(p[:, 1]) < lane_half_width_m)
               & (p[:, 3] <= -decel_mps2))
        for k in ids[hit]:
            flagged.setdefault(int(k), []).append(r)
    out = []
    for track, rows in sorted(flagged.items()):
        runs = np.split(np.asarray(rows), np.flatnonzero(np.diff(rows) > 1) + 1)
        for run in runs:
            start, last = float(time_s[run[0]]), int(run[-1])
            end = float(time_s[last] + row_s[last])
            if end - start >= min_s - 1e-9:
                out.append({"track": track, "start_s": start, "end_s": end,
                            "rows": len(run)})
    return sorted(out, key=lambda s: s["start_s"])


def run_policy(policy: Policy, inp: ReplayInput, mode: str = "closed_loop") -> np.ndarray:
    """(N,) the policy's brake command on every row (first action component)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if hasattr(policy, "reset"):
        policy.reset()
    feeds = bool(getattr(policy, "prev_brake_input", False))
    out = np.zeros(len(inp.obs))
    prev = np.zeros(1, dtype=np.float32)
    with _one_torch_thread():
        for r, o in enumerate(inp.obs):
            if feeds:
                o = {**o, PREV_BRAKE_KEY: prev if mode == "closed_loop"
                     else np.zeros(1, np.float32)}
            action = np.asarray(policy(o), dtype=np.float32).reshape(-1)
            out[r] = float(action[0])
            prev = action[:1].copy()
    return out


def response(brake: np.ndarray, time_s: np.ndarray, start_s: float, end_s: float
             ) -> dict[str, Any]:
    """Whether the policy braked (> `BRAKE_ON`) from `start_s` until the later of `end_s` and
    `start_s + RESPONSE_WINDOW_S`, and the delay of its first braking row (or None)."""
    until = max(end_s, start_s + RESPONSE_WINDOW_S)
    window = (time_s >= start_s - 1e-9) & (time_s < until)
    hits = np.flatnonzero(window & (brake > BRAKE_ON))
    if not len(hits):
        return {"braked": False, "delay_s": None}
    return {"braked": True, "delay_s": round(float(time_s[hits[0]] - start_s), 3)}


def metrics(brake: np.ndarray, inp: ReplayInput) -> dict[str, Any]:
    """Calm-driving and response figures of one run (see the module docstring)."""
    rec = inp.recording
    on = brake > BRAKE_ON
    row_s = rec.row_s
    onsets = int(on[0]) + int(np.count_nonzero(on[1:] & ~on[:-1]))
    longest = 0.0
    if on.any():
        bounds = np.flatnonzero(np.diff(np.concatenate(([0], on.astype(np.int8), [0]))))
        longest = max(float(row_s[a:b].sum()) for a, b in zip(bounds[::2], bounds[1::2],
                                                               strict=True))
    events = [{"kind": e.kind, "start_s": e.start_s, "end_s": e.end_s,
               **response(brake, rec.time_s, e.start_s, e.end_s)} for e in (rec.events or ())]
    stretches = [{**s, **response(brake, rec.time_s, s["start_s"], s["end_s"])}
                 for s in inp.stretches]
    return {
        "brake_share": float(on.mean()),
        "onsets_per_min": onsets / (rec.duration_s / 60.0),
        "onsets": onsets,
        "longest_brake_s": round(longest, 3),
        "mean_brake": float(brake.mean()),
        "events_braked": sum(e["braked"] for e in events) if rec.events is not None else None,
        "events": events,
        "stretches_braked": sum(s["braked"] for s in stretches),
        "stretches": stretches,
    }


def _load_specs(policy_specs: Sequence[str | tuple[str, Policy]]) -> list[tuple[str, Policy]]:
    from roadsense.eval.policies import load_policy

    return [load_policy(s) if isinstance(s, str) else s for s in policy_specs]


def replay_report(policy_specs: Sequence[str | tuple[str, Policy]],
                  recordings: Sequence[str | Path | Recording], out_dir: str | Path,
                  ) -> dict[str, Any]:
    """Replay every policy (a `load_policy` spec or a (name, policy) pair) on every recording
    (a file, a folder of `.npz`, or a `Recording`), both modes; writes `replay.md`,
    `replay.json` and one `replay_<recording>.png` per recording into `out_dir`; returns the
    summary written to `replay.json`. Every file is read and checked before anything runs."""
    paths = recording_paths(r for r in recordings if not isinstance(r, Recording))
    loaded = [r for r in recordings if isinstance(r, Recording)] + [load_recording(p)
                                                                    for p in paths]
    policies = _load_specs(policy_specs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"brake_on": BRAKE_ON, "response_window_s": RESPONSE_WINDOW_S,
                               "modes": list(MODES), "recordings": {}}
    for rec in loaded:
        inp = convert(rec)
        brakes: dict[str, dict[str, np.ndarray]] = {}
        results: dict[str, dict[str, Any]] = {}
        for name, pol in policies:
            brakes[name] = {m: run_policy(pol, inp, m) for m in MODES}
            results[name] = {m: metrics(b, inp) for m, b in brakes[name].items()}
            results[name]["prev_brake_input"] = bool(getattr(pol, "prev_brake_input", False))
        plot = _plot(inp, {n: b["closed_loop"] for n, b in brakes.items()},
                     out / f"replay_{rec.name}.png")
        summary["recordings"][rec.name] = {
            "path": str(rec.path), "events_path": str(rec.events_path or ""),
            "rows": rec.rows, "duration_s": round(rec.duration_s, 2),
            "sender_tracks": inp.tracks, "events": [vars(e) for e in rec.events or ()],
            "has_events": rec.events is not None,
            "hard_brake_stretches": inp.stretches, "plot": plot.name, "results": results,
        }
        log.info("replayed %d policies on %s (%d rows)", len(policies), rec.name, rec.rows)
    (out / "replay.json").write_text(json.dumps(summary, indent=2))
    (out / "replay.md").write_text(_markdown(summary))
    return summary


def _one_torch_thread() -> Any:
    """Torch on one thread while a policy runs row by row (`runner.one_torch_thread`: a
    batch-1 forward pass gains nothing from the thread pool and loses much to its spinning)."""
    import contextlib
    import sys

    if "torch" not in sys.modules:  # baselines only: no torch to tame
        return contextlib.nullcontext()
    from roadsense.eval.runner import one_torch_thread

    return one_torch_thread()


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _answered(items: list[dict[str, Any]]) -> str:
    if not items:
        return "-"
    delays = [i["delay_s"] for i in items if i["braked"]]
    text = f"{len(delays)}/{len(items)}"
    return text + (f" ({float(np.median(delays)):.1f} s)" if delays else "")


def _markdown(summary: dict[str, Any]) -> str:
    lines = ["# Replay of real recordings", "",
             f"Braking: command > {summary['brake_on']}. Response: braked from the start of an "
             f"event or stretch until its end (at least {summary['response_window_s']:.0f} s); "
             "in brackets the median delay. Closed loop feeds a policy's own previous command "
             "back, open loop 0, only to policies that read it (`prev_brake_input`); for the "
             "others the two modes give the same brakes.", ""]
    for name, r in summary["recordings"].items():
        n_ev = len(r["events"]) if r["has_events"] else "no events file"
        lines += [f"## {name}", "",
                  f"- file: `{r['path']}`; {r['rows']} rows, {r['duration_s']:.0f} s; "
                  f"{r['sender_tracks']} sender tracks",
                  f"- braking events: {n_ev}; peer hard-brake stretches (ahead, in lane, "
                  f"sustained): {len(r['hard_brake_stretches'])}", "",
                  "| policy | mode | braking rows | onsets/min | longest brake s | mean brake "
                  "| events braked | hard-brake stretches braked |",
                  "|---|---|---|---|---|---|---|---|"]
        for pol, res in r["results"].items():
            for mode in summary["modes"]:
                m = res[mode]
                lines.append(f"| {pol} | {mode.replace('_', ' ')} | {_pct(m['brake_share'])} "
                             f"| {m['onsets_per_min']:.2f} | {m['longest_brake_s']:.1f} "
                             f"| {m['mean_brake']:.3f} "
                             f"| {_answered(m['events']) if r['has_events'] else '-'} "
                             f"| {_answered(m['stretches'])} |")
        if r["events"]:
            pols = list(r["results"])
            lines += ["", "Events (closed loop: delay to the first brake, s):", "",
                      "| event | start s | end s | lowest accel m/s^2 | " + " | ".join(pols)
                      + " |", "|---|---|---|---|" + "---|" * len(pols)]
            for i, ev in enumerate(r["events"]):
                cells = [_delay(r["results"][p]["closed_loop"]["events"][i]) for p in pols]
                low = "-" if ev["min_accel_mps2"] is None else f"{ev['min_accel_mps2']:.2f}"
                lines.append(f"| {ev['kind']} | {ev['start_s']:.1f} | {ev['end_s']:.1f} | {low} | "
                             + " | ".join(cells) + " |")
        lines += ["", f"![brake against the peers' reported accelerations]({r['plot']})", ""]
    return "\n".join(lines)


def _delay(item: dict[str, Any]) -> str:
    return f"{item['delay_s']:.1f}" if item["braked"] else "no brake"


def _plot(inp: ReplayInput, brakes: dict[str, np.ndarray], path: Path) -> Path:
    """Brake over time per policy (closed loop) above the peers' reported accelerations, raw
    and relative to each sender's running mean, per sender track; events and peer hard-brake
    stretches shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rec = inp.recording
    fig, axes = plt.subplots(3, 1, figsize=(11, 7), sharex=True)
    for name, b in brakes.items():
        axes[0].step(rec.time_s, b, where="post", label=name, lw=1)
    axes[0].axhline(BRAKE_ON, color="grey", lw=0.5, ls=":")
    axes[0].set_ylabel("brake (of full)")
    axes[0].set_ylim(-0.05, 1.05)
    series: dict[int, tuple[list[float], list[float], list[float]]] = {}
    for r, (o, ids, raw) in enumerate(zip(inp.obs, inp.track, inp.raw_accel, strict=True)):
        rel = o["peers"][:, 3].astype(np.float64) * PEER_SCALE[3]
        for k, a, b in zip(ids, raw, rel, strict=True):
            ts, ra, re = series.setdefault(int(k), ([], [], []))
            ts.append(float(rec.time_s[r]))
            ra.append(float(a))
            re.append(float(b))
    for _, (ts, ra, re) in sorted(series.items()):
        if len(ts) < 10:  # a track of a few rows only clutters the plot
            axes[1].plot(ts, ra, ".", ms=2, color="grey")
            axes[2].plot(ts, re, ".", ms=2, color="grey")
            continue
        line, = axes[1].plot(ts, ra, lw=0.8)
        axes[2].plot(ts, re, lw=0.8, color=line.get_color())
    axes[1].set_ylabel("reported accel\n(m/s^2)")
    axes[2].axhline(-inp.hazard_decel_mps2, color="tab:red", lw=0.5, ls=":")
    axes[2].set_ylabel("relative accel\n(m/s^2)")
    axes[2].set_xlabel("time (s)")
    for ax in axes:
        for e in rec.events or ():
            ax.axvspan(e.start_s, e.end_s, color="tab:orange", alpha=0.2, lw=0)
        for s in inp.stretches:
            ax.axvspan(s["start_s"], s["end_s"], color="tab:red", alpha=0.25, lw=0)
    axes[0].legend(fontsize=7, loc="upper right")
    axes[1].set_title("peers' accelerations, one colour per sender track (grey: tracks of "
                      "under 10 messages)", fontsize=8)
    axes[0].set_title(f"{rec.name}: braking events (orange), peer hard-brake stretches (red)",
                      fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
