"""Observation building: the ego's own noisy sensors and one row per held peer message.

Every feature is an SI quantity divided by a fixed scale so values sit around [-1, 1]:

| ego feature   | quantity                                        | unit  | scale |
|---------------|-------------------------------------------------|-------|-------|
| speed         | own speed (wheel/GPS, with measured noise)       | m/s   | 30    |
| accel         | own longitudinal acceleration (IMU, noisy)       | m/s^2 | 5     |
| prev_brake    | the agent's previous brake command               | 0..1  | 1     |

| peer feature  | quantity (in the ego's frame)                    | unit  | scale |
|---------------|-------------------------------------------------|-------|-------|
| long_offset   | distance ahead (+) / behind (-) along ego heading | m    | 100   |
| lat_offset    | distance to the left (+)                         | m     | 10    |
| rel_speed     | peer speed minus ego speed                       | m/s   | 10    |
| accel         | peer's reported acceleration                     | m/s^2 | 5     |
| rel_heading   | peer heading minus ego heading, wrapped          | rad   | 1     |
| age           | now minus the message's send time                | s     | 0.5   |
| extra_hops    | relay hops beyond the direct one                 | -     | 1     |

Positions and headings on both sides are GPS/IMU estimates with the measured noise, so the
offsets carry the noise of both cars, as in a real car.
"""

from __future__ import annotations

import math

import numpy as np

from roadsense.comms import ReceivedMessages
from roadsense.comms.messages import ACCEL, HEADING, SPEED

EGO_FEATURES = ("speed", "accel", "prev_brake")
PEER_FEATURES = ("long_offset", "lat_offset", "rel_speed", "accel", "rel_heading", "age",
                 "extra_hops")
EGO_SCALE = np.array([30.0, 5.0, 1.0], dtype=np.float32)
PEER_SCALE = np.array([100.0, 10.0, 10.0, 5.0, 1.0, 0.5, 1.0])
EGO_DIM, PEER_DIM = len(EGO_FEATURES), len(PEER_FEATURES)
PEER_INDEX = {name: i for i, name in enumerate(PEER_FEATURES)}
_INV_PEER_SCALE = 1.0 / PEER_SCALE

OBSERVATION_LAYOUT_VERSION = 1
"""Version of the layout above (features, order, units, scales). Raise it with any change to
them: exported policies carry it, and a policy is only valid for the layout it was trained on."""


def observation_spec() -> dict:
    """The observation layout as plain JSON data, for exported policies and their users."""
    return {
        "layout_version": OBSERVATION_LAYOUT_VERSION,
        "ego_features": list(EGO_FEATURES), "ego_scale": EGO_SCALE.astype(float).tolist(),
        "peer_features": list(PEER_FEATURES), "peer_scale": PEER_SCALE.astype(float).tolist(),
        "units": {"ego": ["m/s", "m/s^2", "0..1"],
                  "peer": ["m", "m", "m/s", "m/s^2", "rad", "s", "hops"]},
        "peers": "ragged: one row per held peer message, 0 or more rows, in any order",
        "normalisation": "feature = SI quantity / scale",
        "dtype": "float32",
    }


def sumo_angle_to_rad(angle_deg: np.ndarray | float) -> np.ndarray | float:
    """SUMO's angle (0 = north, clockwise, degrees) to a math heading (0 = east, CCW, rad)."""
    return np.radians(90.0 - angle_deg)


def ego_features(speed: float, accel: float, prev_brake: float) -> np.ndarray:
    return np.array([speed, accel, prev_brake], dtype=np.float32) / EGO_SCALE


def peer_rows(ego_x: float, ego_y: float, ego_heading_rad: float, ego_speed: float,
              msgs: ReceivedMessages, now_s: float) -> np.ndarray:
    """(K, PEER_DIM) float32 rows, one per held message, in the order the messages come.

    A pure function of its inputs: permuting the messages permutes the rows, nothing else.
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
