"""What a receiver holds (`ReceivedMessages`) and the row layouts the emulator stores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

X, Y, SPEED, ACCEL, HEADING, YAW = range(6)  # rows of a message's content
SLOT, SEND, ARRIVAL, HOPS = range(4)  # fields of a per-link packet record (SLOT: ring index)


@dataclass(slots=True)
class ReceivedMessages:
    """What one receiver holds now: one entry per sender, aligned arrays, any order.

    Content is the sender's own noisy estimate (SUMO conventions: x/y metres, speed m/s,
    accel m/s^2, heading degrees with 0 = north clockwise, yaw rate rad/s). ``age_s`` is
    now - ``send_time_s``; ``arrival_s`` is when the packet arrived (send time + latency);
    ``hops`` is 1 for a direct packet. Treat the arrays as read-only.
    """

    sender: np.ndarray
    x: np.ndarray
    y: np.ndarray
    speed: np.ndarray
    accel: np.ndarray
    heading_deg: np.ndarray
    yaw_rate: np.ndarray
    send_time_s: np.ndarray
    age_s: np.ndarray
    hops: np.ndarray
    arrival_s: np.ndarray

    def __len__(self) -> int:
        return len(self.x)
