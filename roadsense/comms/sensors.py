"""Sensor errors that persist over time: what a car's GPS and IMU get wrong beyond white noise.

Real sensors are biased, not only noisy (`shared/reference/real_driving`): a phone or board IMU
mounted at an angle reads a constant offset of several m/s^2 (gravity), and a GPS fix wanders
by metres over tens of seconds. The radio's per-message noise (`sensor_noise` in the params
file) cannot produce either, so this model adds, per vehicle and per episode:

| error            | model                                                         | unit  |
|------------------|---------------------------------------------------------------|-------|
| accel bias       | constant, uniform in [-a, a]                                  | m/s^2 |
| GPS error        | first-order Gauss-Markov per axis: stationary std s, time constant tau | m |
| heading bias     | constant, normal with std h                                   | deg   |

Every vehicle's estimate (the ego's own sensors and each sender's message content) is the true
state plus these errors, before the radio adds its white noise. The levels (a, s, tau, h) come
from the params file's `sensor_errors` section and, with domain randomisation, are drawn once per
episode from its `domain_randomization` ranges. A file without the section has no such errors.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from roadsense.comms.params import EmulatorParams

DRIVE_BLOCK = 256
"""Steps of GPS-error driving noise drawn at once (`SensorErrors.advance`)."""


class NormalBlocks:
    """Per-step standard normal draws of `shape`, times `scale`, drawn `block` steps at a time:
    `next()` returns the values one `rng.standard_normal(shape) * scale` per call would (the
    generator's stream does not depend on how the draws are grouped), for one generator call
    per block. Per-step noise runs on every env step; a generator call costs more than the
    arithmetic. `rescale` keeps the draws and changes the scale from the next value on. The
    generator must not be drawn from elsewhere meanwhile."""

    def __init__(self, rng: np.random.Generator, shape: tuple[int, ...],
                 scale: float | np.ndarray, block: int = DRIVE_BLOCK) -> None:
        self._rng, self._shape, self._block = rng, tuple(shape), block
        self._normal = self._scaled = np.empty((0, *self._shape))
        self._scale = scale
        self._i = 0

    def rescale(self, scale: float | np.ndarray) -> None:
        self._scale = scale
        self._scaled = scale * self._normal

    def next(self) -> np.ndarray:
        i = self._i
        if i == len(self._scaled):
            self._normal = self._rng.standard_normal((self._block, *self._shape))
            self._scaled = self._scale * self._normal
            i = 0
        self._i = i + 1
        return self._scaled[i]

LEVEL_KEYS = ("accel_bias_mps2", "gps_error_std_m", "gps_error_tau_s", "heading_bias_std_deg")


@dataclass(frozen=True)
class SensorErrorLevels:
    """One episode's error magnitudes (see the module table)."""

    accel_bias_mps2: float = 0.0
    gps_error_std_m: float = 0.0
    gps_error_tau_s: float = 1.0
    heading_bias_std_deg: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def episode_levels(params: EmulatorParams, rng: np.random.Generator, *,
                   domain_randomization: bool) -> SensorErrorLevels:
    """The file's levels, or (domain randomisation) each drawn uniform in its range, in the
    order of `LEVEL_KEYS`; a level without a range keeps the file's value."""
    base = params.sensor_errors
    if not base:
        return SensorErrorLevels()
    values = {k: base[k] for k in LEVEL_KEYS}
    if domain_randomization:
        for k in LEVEL_KEYS:
            if k in params.dr_ranges:
                values[k] = float(rng.uniform(*params.dr_ranges[k]))
    return SensorErrorLevels(**values)


class SensorErrors:
    """Persistent errors of `n` vehicles' sensors for one episode (slots as the caller's list).

    `reset` draws the constant biases and the GPS errors' starting values (from their
    stationary distribution); `advance(dt)` moves the GPS errors one step; `accel_bias`,
    `heading_bias_deg` and `gps_error` (2, n) are read by the caller and added to true states.
    """

    def __init__(self, params: EmulatorParams) -> None:
        self.params = params
        self.levels = SensorErrorLevels()
        self.accel_bias = np.zeros(0)
        self.heading_bias_deg = np.zeros(0)
        self.gps_error = np.zeros((2, 0))
        self._rng: np.random.Generator | None = None
        self._drive: NormalBlocks | None = None  # GPS-error driving noise (`advance`)

    def reset(self, rng: np.random.Generator, n: int, *,
              domain_randomization: bool) -> SensorErrorLevels:
        lv = episode_levels(self.params, rng, domain_randomization=domain_randomization)
        self.levels, self._rng = lv, rng
        self.accel_bias = rng.uniform(-lv.accel_bias_mps2, lv.accel_bias_mps2, n)
        self.heading_bias_deg = rng.standard_normal(n) * lv.heading_bias_std_deg
        self.gps_error = rng.standard_normal((2, n)) * lv.gps_error_std_m
        self._dt = math.nan
        self._drive = NormalBlocks(rng, (2, n), 0.0)
        return lv

    def advance(self, dt_s: float) -> None:
        """One Gauss-Markov step of every vehicle's GPS error over `dt_s` seconds.

        The driving noise comes from `NormalBlocks` (one draw per step from the generator of
        `reset`, which nothing else draws from afterwards): this runs every env step."""
        lv = self.levels
        if lv.gps_error_std_m == 0.0 or self._drive is None:
            return
        if dt_s != self._dt:  # the step length never changes within an episode: cache
            self._dt = dt_s
            self._keep = math.exp(-dt_s / lv.gps_error_tau_s)
            self._drive.rescale(lv.gps_error_std_m * math.sqrt(1.0 - self._keep ** 2))
        self.gps_error *= self._keep
        self.gps_error += self._drive.next()
