"""Observation building: the ego's own noisy sensors and one row per held peer message.

Every feature is an SI quantity divided by a fixed scale so values sit around [-1, 1]:

| ego feature   | quantity                                        | unit  | scale |
|---------------|-------------------------------------------------|-------|-------|
| speed         | own speed (wheel/GPS, with measured noise)       | m/s   | 30    |
| accel         | own longitudinal acceleration (IMU) minus its running mean | m/s^2 | 5 |

| peer feature  | quantity (in the ego's frame)                    | unit  | scale |
|---------------|-------------------------------------------------|-------|-------|
| long_offset   | distance ahead (+) / behind (-) along ego heading | m    | 100   |
| lat_offset    | distance to the left (+)                         | m     | 10    |
| rel_speed     | peer speed minus ego speed                       | m/s   | 10    |
| accel         | peer's reported acceleration minus that sender's running mean | m/s^2 | 5 |
| rel_heading   | peer heading minus ego heading, wrapped          | rad   | 1     |
| age           | now minus the message's send time                | s     | 0.5   |
| extra_hops    | relay hops beyond the direct one                 | -     | 1     |

Positions and headings on both sides are GPS/IMU estimates with the measured noise and
persistent errors (`roadsense.comms.sensors`), so the offsets carry the errors of both cars, as
in a real car.

Accelerations are relative to a running mean (`AccelBaseline`, time constant `BASELINE_TAU_S`)
kept per sender (and for the ego's own IMU): real IMUs read constant offsets of several m/s^2
(mounting angle, gravity), as large as a hard brake, while a hard brake is a sudden change of a
car's own reading. The observation carries that change, so a constant bias cancels.

The observation holds no record of the agent's own commands: whatever keeps a brake on has to
be in view (a peer's message), never the memory of having braked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from roadsense.comms import ReceivedMessages
from roadsense.comms.messages import ACCEL, HEADING, SPEED

EGO_FEATURES = ("speed", "accel")
PEER_FEATURES = ("long_offset", "lat_offset", "rel_speed", "accel", "rel_heading", "age",
                 "extra_hops")
EGO_SCALE = np.array([30.0, 5.0], dtype=np.float32)
PEER_SCALE = np.array([100.0, 10.0, 10.0, 5.0, 1.0, 0.5, 1.0])
EGO_DIM, PEER_DIM = len(EGO_FEATURES), len(PEER_FEATURES)
PEER_INDEX = {name: i for i, name in enumerate(PEER_FEATURES)}
_INV_PEER_SCALE = 1.0 / PEER_SCALE
BASELINE_TAU_S = 10.0
"""Time constant of the running mean accelerations are taken against: long against a hard
brake (a 3 s brake at 7.5 m/s^2 still reads -5.5 m/s^2 at its end), short against a drive."""
FIRST_MEAN_LIMIT_MPS2 = 4.0
"""The largest constant IMU offset expected (the real recording shows up to 3.6 m/s^2; the
emulator draws up to 4.0): where a sender's running mean may start."""

OBSERVATION_LAYOUT_VERSION = 1
"""Version of the layout above (features, order, units, scales, the running-mean
accelerations). Raise it with any change to them: exported policies carry it, and a policy is
only valid for the layout it was trained on."""


def observation_spec() -> dict:
    """The observation layout as plain JSON data, for exported policies and their users."""
    return {
        "layout_version": OBSERVATION_LAYOUT_VERSION,
        "ego_features": list(EGO_FEATURES), "ego_scale": EGO_SCALE.astype(float).tolist(),
        "peer_features": list(PEER_FEATURES), "peer_scale": PEER_SCALE.astype(float).tolist(),
        "units": {"ego": ["m/s", "m/s^2"],
                  "peer": ["m", "m", "m/s", "m/s^2", "rad", "s", "hops"]},
        "accel": ("every acceleration (the ego's IMU, each peer's report) minus its source's "
                  "exponential running mean (AccelBaseline): time constant tau_s, updated once "
                  "per new reading; a source's first reading starts the mean, limited to "
                  "+-first_limit_mps2"),
        "accel_baseline": {"tau_s": BASELINE_TAU_S, "first_limit_mps2": FIRST_MEAN_LIMIT_MPS2},
        "peers": "ragged: one row per held peer message, 0 or more rows, in any order",
        "normalisation": "feature = SI quantity / scale",
        "dtype": "float32",
    }


class AccelBaseline:
    """Per-source running mean of reported accelerations; `relative` gives each reading minus
    its source's mean before that reading.

    Each source (a sender id, or "ego") has an exponential mean with time constant `tau_s`,
    updated once per new reading (a later send time); a reading seen again (the same message
    held over several steps) gives the same value. A source's first reading starts its mean,
    limited to +-`first_limit` (`FIRST_MEAN_LIMIT_MPS2`): a first reading within the largest
    plausible sensor offset reads 0 (an unknown sender never looks like it is braking because of
    its offset), one beyond it (a car first heard while it brakes hard) reads the excess.
    """

    def __init__(self, tau_s: float = BASELINE_TAU_S,
                 first_limit: float = FIRST_MEAN_LIMIT_MPS2) -> None:
        if not tau_s > 0:
            raise ValueError(f"tau_s must be > 0, got {tau_s!r}")
        self.tau_s, self.first_limit = tau_s, first_limit
        self._state: dict[object, list[float]] = {}  # source -> [mean, time, last output]

    def reset(self) -> None:
        self._state.clear()

    def relative(self, sources: Sequence[object], times_s: Sequence[float],
                 accel: Sequence[float]) -> np.ndarray:
        """Readings `accel` of `sources` sent at `times_s` (aligned), relative to each source's
        running mean; updates the means."""
        # Python floats (tolist): the same values as numpy's, cheaper to compute with one by one
        times = times_s.tolist() if isinstance(times_s, np.ndarray) else times_s
        values = accel.tolist() if isinstance(accel, np.ndarray) else accel
        out = [0.0] * len(values)
        state, tau, limit = self._state, self.tau_s, self.first_limit
        for i, src in enumerate(sources):
            a, t = float(values[i]), float(times[i])
            st = state.get(src)
            if st is None:
                mean = min(limit, max(-limit, a))
                out[i] = a - mean
                state[src] = [mean, t, out[i]]
            elif t > st[1]:
                mean = st[0]
                out[i] = st[2] = a - mean
                st[0] = mean + (1.0 - math.exp(-(t - st[1]) / tau)) * (a - mean)
                st[1] = t
            else:  # the same message again
                out[i] = st[2]
        return np.array(out, dtype=np.float64)

    def relative_one(self, source: object, time_s: float, accel: float) -> float:
        """One reading of `relative`: `accel` of `source` sent at `time_s` minus its running
        mean; updates the mean."""
        st = self._state.get(source)
        if st is None:
            mean = min(self.first_limit, max(-self.first_limit, accel))
            out = accel - mean
            self._state[source] = [mean, time_s, out]
        elif time_s > st[1]:
            mean = st[0]
            out = st[2] = accel - mean
            st[0] = mean + (1.0 - math.exp(-(time_s - st[1]) / self.tau_s)) * (accel - mean)
            st[1] = time_s
        else:  # the same message again
            out = st[2]
        return out


def holds_warning(peers: np.ndarray, decel_mps2: float) -> bool:
    """Whether observation rows `peers` hold a warning: a peer ahead whose acceleration reads
    `decel_mps2` or harder below its running mean."""
    if not len(peers):
        return False
    hard = peers[:, PEER_INDEX["accel"]] <= -decel_mps2 / PEER_SCALE[PEER_INDEX["accel"]]
    return bool((hard & (peers[:, PEER_INDEX["long_offset"]] > 0.0)).any())


URGENT_MARGIN_M = 5.0
"""Gap left behind a warning peer that has stopped, in `warning_urgency` (m)."""


def warning_urgency(ego: np.ndarray, peers: np.ndarray, decel_mps2: float) -> float:
    """How hard the ego must brake (m/s^2) to stop `URGENT_MARGIN_M` behind the most pressing
    warning in observation rows `peers` (a peer ahead reporting `decel_mps2` or harder), if each
    warning peer kept braking at its reported rate to a stop and the ego braked from now on;
    0.0 when the view holds no warning. `ego` is the observation's ego row.

    Why. A warning alone does not say whether to brake: a car 150 m ahead slowing at 3 m/s^2 asks
    for ~1 m/s^2 of the ego, which the driver gives without help, while a car 25 m ahead braking
    at 7 m/s^2 asks for ~4.5. Calm validation roads show the first kind (four of 78 calm
    episodes, all at 68-185 m, needing at most 1.5 m/s^2); most hazard episodes show the second
    (in `v2v_rule`'s training demonstrations, 90% of the hazard episodes with a warning reach
    1.7 m/s^2 or more)."""
    if not len(peers):
        return 0.0
    p = peers * PEER_SCALE
    hard = (p[:, PEER_INDEX["accel"]] <= -decel_mps2) & (p[:, PEER_INDEX["long_offset"]] > 0.0)
    if not hard.any():
        return 0.0
    return float(_required_decel(float(ego[0]) * float(EGO_SCALE[0]), p[hard]).max())


def _required_decel(speed: float | np.ndarray, p: np.ndarray) -> np.ndarray:
    """`warning_urgency`'s figure per unscaled warning row of `p` (speed: the ego's, m/s)."""
    own = np.maximum(speed + p[:, PEER_INDEX["rel_speed"]], 0.0)
    decel = -p[:, PEER_INDEX["accel"]]
    room = p[:, PEER_INDEX["long_offset"]] + own * own / (2.0 * decel) - URGENT_MARGIN_M
    return speed * speed / (2.0 * np.maximum(room, 1.0))


def warning_urgencies(ego: np.ndarray, peers: np.ndarray, counts: np.ndarray,
                      decel_mps2: float) -> np.ndarray:
    """`warning_urgency` of every step of packed observations (ego rows, concatenated peer
    rows, peers per step), without a Python loop over steps."""
    out = np.zeros(len(counts), np.float64)
    if not len(peers):
        return out
    p = peers.astype(np.float64) * PEER_SCALE
    step = np.repeat(np.arange(len(counts)), counts)
    hard = (p[:, PEER_INDEX["accel"]] <= -decel_mps2) & (p[:, PEER_INDEX["long_offset"]] > 0.0)
    if hard.any():
        speed = ego[step[hard], 0].astype(np.float64) * float(EGO_SCALE[0])
        np.maximum.at(out, step[hard], _required_decel(speed, p[hard]))
    return out


def urgency_brake(urgency: float | np.ndarray, gain: float, max_brake_mps2: float,
                  cap: float, floor: float = 0.0) -> float | np.ndarray:
    """The brake level (of the full brake) that answers a warning's urgency (m/s^2, from
    `warning_urgency`): `gain` times it over the full brake's deceleration, within
    [`floor`, `cap`]. What the warm start imitates and what `urgency_brake` does."""
    return np.clip(gain * urgency / max_brake_mps2, floor, cap)


def ego_features(speed: float, accel: float) -> np.ndarray:
    """The ego row; `accel` is already relative to the IMU's running mean."""
    return np.array([speed, accel], dtype=np.float32) / EGO_SCALE


def peer_rows(ego_x: float, ego_y: float, ego_heading_rad: float, ego_speed: float,
              msgs: ReceivedMessages, now_s: float,
              baseline: AccelBaseline | None = None) -> np.ndarray:
    """(K, PEER_DIM) float32 rows, one per held message, in the order the messages come.

    `baseline`: the receiver's `AccelBaseline` (updated here); None leaves the reported
    accelerations absolute (tests of the geometry). With the same baseline state, permuting the
    messages permutes the rows, nothing else.
    The offsets, relative speed and acceleration are linear in the message content block, so
    they come out of one small matrix product; heading, age and hops are written row by row
    (this runs every step).
    """
    if len(msgs) == 0:
        return np.zeros((0, PEER_DIM), dtype=np.float32)
    c, s = math.cos(ego_heading_rad), math.sin(ego_heading_rad)
    a = _LINEAR.copy()
    a[0, 0], a[0, 1], a[1, 0], a[1, 1] = c, s, -s, c
    offset = np.array((-(c * ego_x + s * ego_y), s * ego_x - c * ego_y, -ego_speed, 0.0))
    rows = np.empty((PEER_DIM, len(msgs)))
    np.matmul(a, msgs.content, out=rows[:4])
    rows[:4] += offset[:, None]
    if baseline is not None:
        rows[3] = baseline.relative(msgs.sender, msgs.send_time_s, rows[3])
    heading = np.radians(90.0 - msgs.content[HEADING]) + (np.pi - ego_heading_rad)
    np.remainder(heading, 2 * np.pi, out=rows[4])
    rows[4] -= np.pi
    np.subtract(now_s, msgs.send_time_s, out=rows[5])
    np.subtract(msgs.hops, 1.0, out=rows[6])
    rows *= _INV_PEER_SCALE[:, None]
    return rows.T.astype(np.float32)


# rows: long, lat, rel_speed, accel (heading, age and hops are written apart); columns: the
# message content (x, y, speed, accel, heading, yaw rate)
_LINEAR = np.zeros((4, 6))
_LINEAR[2, SPEED] = 1.0
_LINEAR[3, ACCEL] = 1.0
