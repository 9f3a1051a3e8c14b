"""What a receiver holds (`ReceivedMessages`) and the row layouts the emulator stores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

X, Y, SPEED, ACCEL, HEADING, YAW = range(6)  # rows of a message's content
SLOT, SEND, ARRIVAL, HOPS = range(4)  # fields of a per-link packet record (SLOT: ring index)


@dataclass(slots=True)
class ReceivedMessages:
    """What one receiver holds at ``now_s``: one entry per sender, aligned arrays, any order.

    ``content`` (6, K) is each sender's own noisy estimate, one column per message, rows
    `X, Y, SPEED, ACCEL, HEADING, YAW` (SUMO conventions: x/y metres, speed m/s, accel m/s^2,
    heading degrees with 0 = north clockwise, yaw rate rad/s); the properties ``x`` ...
    ``yaw_rate`` are its rows. ``age_s`` is ``now_s`` - ``send_time_s``; ``arrival_s`` is when
    the packet arrived (send time + latency); ``hops`` is 1 for a direct packet. Treat the
    arrays as read-only. One block instead of six arrays: a view is built every step, and
    consumers that transform every field at once (`roadsense.envs.observation`) take the block.
    """

    sender: np.ndarray
    content: np.ndarray
    send_time_s: np.ndarray
    hops: np.ndarray
    arrival_s: np.ndarray
    now_s: float

    def __len__(self) -> int:
        return len(self.send_time_s)

    x = property(lambda self: self.content[X], doc="content row X (metres)")
    y = property(lambda self: self.content[Y], doc="content row Y (metres)")
    speed = property(lambda self: self.content[SPEED], doc="content row SPEED (m/s)")
    accel = property(lambda self: self.content[ACCEL], doc="content row ACCEL (m/s^2)")
    heading_deg = property(lambda self: self.content[HEADING], doc="content row HEADING (deg)")
    yaw_rate = property(lambda self: self.content[YAW], doc="content row YAW (rad/s)")

    @property
    def age_s(self) -> np.ndarray:
        return self.now_s - self.send_time_s

    def take(self, order: np.ndarray) -> ReceivedMessages:
        """The same messages in another order (``order`` indexes the entries)."""
        return ReceivedMessages(self.sender[order], self.content[:, order],
                                self.send_time_s[order], self.hops[order],
                                self.arrival_s[order], self.now_s)
