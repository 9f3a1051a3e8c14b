"""The ESP-NOW radio emulator: true vehicle states in, what each receiver holds out.

Model (figures from an `EmulatorParams` file):

- Every vehicle broadcasts at ``rate_hz`` with its own random phase inside the period, so
  send times fall between simulation steps. A step at time ``now`` emits every broadcast due in
  ``[previous step, now)``. Its content is the sender's latest sample (the true state of the
  previous step, like a GPS/IMU that updates at the step rate and is broadcast at the radio's
  own phase) plus sensor noise drawn once at the sender: GPS position, speed, acceleration,
  heading, yaw rate. The first step after `reset` emits ``[now - period, now)`` with the
  state held, so the first observation already has peers.
- Loss per link (sender -> receiver) is a two-state Gilbert-Elliott chain advanced once per
  packet; its transition probabilities come from the link's distance bin (stationary loss and
  mean burst length); beyond the maximum range every packet is lost.
- Latency per packet is ``floor + gamma`` with the measured mean and std; a packet becomes
  visible at send time + latency, which may be a later step.
- A receiver holds the newest delivered message per sender; its age is ``now - send time``;
  a message older than the staleness threshold is dropped from its view. Per link the newest
  two delivered packets are kept: exact while latency stays below two broadcast periods.
- Optional relay (``relay_hops`` 2 or 3): every vehicle forwards what it received, once per
  hop; each hop draws its own loss (the hop's distance-bin loss, independently) and latency;
  content and send time stay the original sender's (noise is not re-applied).

Speed: randomness is drawn in blocks covering many broadcast rounds (same seed and same calls,
same numbers), latency and sensor noise as uniform indices into quantile tables; state lives
in preallocated per-vehicle and per-link arrays; message content is stored once per sender in
a ring of rounds; a step is a fixed number of whole-array numpy operations, and in the common
case many steps are planned at once (`roadsense.comms.plan`).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from roadsense import STEP_LENGTH_S
from roadsense.comms.messages import ARRIVAL, HEADING, HOPS, SEND, SLOT, ReceivedMessages
from roadsense.comms.params import EmulatorParams, params_version
from roadsense.comms.plan import PLAN_MAX_STEPS, Plan, PlannedSteps, sample
from roadsense.comms.radio import (
    N_QUANTILES,
    NOISE_QUANTILES,
    LinkModel,
    effective_params,
    standard_normal_table,
)
from roadsense.errors import ConfigError

log = logging.getLogger(__name__)

_BLOCK_ELEMS = 1 << 16  # random numbers pre-drawn per block and kind


class EspNowEmulator(PlannedSteps):
    """ESP-NOW broadcast radio between vehicles, calibrated by an `EmulatorParams` file.

    Arguments: ``params``; ``relay_hops``: the most hops a message may take (0 or 1: direct
    only, the default; 2-3: relayed); ``plan_steps``: how many steps the fast path may
    compute ahead (0: always step by step; the results are the same either way).
    The constructor only declares; `reset` sizes an episode.

    Episode state (slot = index in reset's ``vehicle_ids``; row = a receiving slot):
    ``_prev`` (8, n) the samples content is made from (rows 0-5, as reported: the senders'
    GPS errors included) and where the senders are (rows 6-7: the link distances);
    ``_base``/``_cnt`` per-vehicle send schedule (send time = base + count * period);
    ``_bad`` (rows, n) Gilbert-Elliott states; ``_a``/``_b`` (4, rows, n) the newest two
    delivered packets per link (slot in the content ring, send time, arrival, hops);
    ``_ring`` (depth, 6, n) message content per round.
    """

    def __init__(self, params: EmulatorParams, *, relay_hops: int = 0,
                 plan_steps: int = PLAN_MAX_STEPS):
        if (not isinstance(relay_hops, int) or isinstance(relay_hops, bool)
                or not 0 <= relay_hops <= params.max_relay_hops):
            raise ConfigError(
                f"relay_hops must be an integer 0-{params.max_relay_hops}, got {relay_hops!r}",
                fix="use 0 (off) or 2-3 hops",
            )
        if not isinstance(plan_steps, int) or plan_steps < 0:
            raise ConfigError(f"plan_steps must be an integer >= 0, got {plan_steps!r}")
        self.params = params
        self.relay_hops = relay_hops if relay_hops >= 2 else 0
        self.plan_steps = plan_steps
        self._version = params_version(params)
        self._ready = False
        self._ids: list[str] | None = None
        self._plan: Plan | None = None

    # ------------------------------------------------------------------ episode set-up
    def reset(
        self,
        rng: np.random.Generator,
        vehicle_ids: list[str],
        *,
        receivers: list[str] | None = None,
        domain_randomization: bool = False,
        overrides: dict[str, float] | None = None,
        record: bool = False,
        step_length_s: float = STEP_LENGTH_S,
    ) -> dict[str, Any]:
        """Start an episode; returns its effective radio parameters (for info and logging).

        ``receivers``: who receives (None: every vehicle). ``overrides``: fixed radio levels for
        evaluation (``loss_scale``, ``loss_rate``, ``latency_mean_ms``, ``jitter_std_ms``,
        ``position_std_m``). ``record``: keep a per-packet log (`packet_log`) for statistics.
        ``step_length_s``: the simulation step (steps shorter than half of it are refused).
        """
        if not step_length_s > 0:
            raise ConfigError(f"step_length_s must be > 0, got {step_length_s!r}")
        ids = [str(v) for v in vehicle_ids]
        if len(set(ids)) != len(ids):
            raise ConfigError("vehicle_ids contains duplicates", fix="pass each vehicle once")
        slot = {v: i for i, v in enumerate(ids)}
        if receivers is not None:
            unknown = [r for r in receivers if r not in slot]
            if unknown:
                raise ConfigError(f"receivers {unknown} are not among vehicle_ids",
                                  fix="list receivers that are in vehicle_ids")
        eff = effective_params(self.params, rng, domain_randomization=domain_randomization,
                               overrides=overrides or {})
        eff.update(relay_hops=self.relay_hops, params_version=self._version)
        self._model = LinkModel.build(self.params, eff)
        self._lat_max = float(self._model.latency_s.max())
        # Relaying needs every vehicle's reception, so then every vehicle is a link row.
        rows = list(range(len(ids))) if self.relay_hops or receivers is None else [
            slot[r] for r in receivers]
        wanted = set(ids if receivers is None else receivers)
        n, nr = len(ids), len(rows)
        self._rng = rng
        self._slot = slot
        self._id_arr = np.array(ids, dtype=object)
        self._rows = np.array(rows, dtype=np.intp)
        self._row_of = {ids[s]: r for r, s in enumerate(rows) if ids[s] in wanted}
        # link rows as slices where possible: fancy indexing is slow
        self._r1 = slice(rows[0], rows[0] + 1) if nr == 1 else None
        self._row_sel: Any = self._r1 or (slice(None) if rows == list(range(n)) else self._rows)
        self._period = 1.0 / self.params.rate_hz
        self._step_s = step_length_s
        # Send times are base + count * period, never accumulated, so every path computes the
        # same floats; base starts as the random phase and is re-based at the first step.
        self._base = rng.random(n) * self._period
        self._cnt = np.zeros(n, dtype=np.int64)
        self._next = self._base.copy()
        self._next_max = -math.inf
        self._notself = self._rows[:, None] != np.arange(n)[None, :]
        self._link_ok = np.zeros((nr, n), dtype=bool)
        self._n_link_ok = 0
        self._present = np.zeros(n, dtype=bool)
        self._bad = np.zeros((nr, n), dtype=np.uint8)
        self._a = np.zeros((4, nr, n))
        self._a[SEND] = -np.inf
        self._a[ARRIVAL] = np.inf
        self._b = self._a.copy()
        self._new = np.ones((4, nr, n))
        # Rounds per second are at most 1/step + 1/period, so the ring outlives staleness.
        per_s = 1.0 / step_length_s + 1.0 / self._period
        self._depth = int(math.ceil((self.params.staleness_ms / 1e3 + 0.3) * per_s)) + 2
        self._ring = np.zeros((self._depth, 6, n))
        self._ring_flat = self._ring.reshape(-1)
        self._slot_tab = (np.arange(self._depth)[:, None] * 6 * n + np.arange(n)).astype(float)
        self._field_off = (np.arange(6) * n)[:, None]
        self._round_no = 0
        self._arange = np.arange(n)
        self._arange_f = np.arange(n, dtype=np.float64)
        self._rr, self._ss = np.arange(nr)[:, None], np.arange(n)[None, :]
        self._link_idx = np.arange(nr * n).reshape(nr, n)  # flat index of each link
        self._one_hop = np.ones(n, dtype=np.int64)
        self._one_hop.flags.writeable = False  # shared by every view without relay
        self._prev = np.zeros((8, n))
        self._prev_t: float | None = None
        self._now = -math.inf
        self._ids = None
        self._slots = np.zeros(0, dtype=np.intp)
        self._identity = False
        self._fresh = np.zeros(0, dtype=np.intp)
        self._blk_n = max(8, min(512, _BLOCK_ELEMS // max(1, nr * n)))
        self._blk_i = self._blk_n
        self._vis: tuple[np.ndarray, np.ndarray] | None = None
        self._vstep: int | None = None
        self._plan = None
        self._plan_h = min(self.plan_steps, 64)
        self._n_sent = self._n_deliv = self._n_relayed = self._steps = 0
        self._record = record
        self._log: list[tuple[np.ndarray, ...]] = []
        self._ready = True
        return eff

    def _refill(self) -> None:
        """Pre-draw the randomness of the next block of broadcast rounds (fixed order)."""
        rng, k = self._rng, self._blk_n
        nr, n = self._link_ok.shape
        lat = self._model.latency_s
        noise = standard_normal_table().take(
            rng.integers(0, NOISE_QUANTILES, (k, 6, n), dtype=np.uint16))
        noise *= self._model.noise_std[:, None]
        self._noise_blk = noise
        self._u_blk = rng.random((k, nr, n))
        self._lat_blk = lat[rng.integers(0, N_QUANTILES, (k, nr, n), dtype=np.uint16)]
        if self.relay_hops:
            h = self.relay_hops - 1
            self._ru_blk = rng.random((k, h, n, n))
            self._rlat_blk = lat[rng.integers(0, N_QUANTILES, (k, h, n, n), dtype=np.uint16)]
        self._blk_i = 0

    def _set_ids(self, ids: list[str]) -> None:
        self._leave_plan()
        try:
            slots = np.array([self._slot[v] for v in ids], dtype=np.intp)
        except KeyError as exc:
            raise ConfigError(
                f"vehicle {exc.args[0]!r} was not in reset()'s vehicle_ids",
                fix="pass every radio-equipped vehicle of the episode to reset()",
            ) from None
        present = np.zeros(len(self._slot), dtype=bool)
        present[slots] = True
        self._fresh = np.flatnonzero(present & ~self._present)
        self._present = present
        self._link_ok = self._notself & present[None, :] & present[self._rows][:, None]
        self._n_link_ok = int(np.count_nonzero(self._link_ok))
        self._ids = tuple(ids) if type(ids) is tuple else list(ids)  # a copy of the same type
        self._slots = slots
        self._identity = len(ids) == len(self._slot) and bool(
            np.array_equal(slots, self._arange))

    # ------------------------------------------------------------------ per step
    def step(self, now_s: float, ids: list[str], x, y, speed, accel, heading_deg,
             yaw_rate, position_error=None) -> None:
        """Advance the radio to time ``now_s`` given the states of the vehicles present.

        ``ids`` may be a subset of reset's ``vehicle_ids``; the arrays (float, aligned with
        ``ids``) use SUMO's conventions: metres, m/s, m/s^2, heading degrees, rad/s, and hold
        what each sender's sensors estimate, except ``x``/``y``: where the vehicles are.
        ``position_error`` (2, len(ids)), metres: the senders' GPS errors, added to the
        positions the messages report; the link distances (loss, latency) use ``x``/``y``, where
        the radios really are. None: the messages report ``x``/``y``.
        """
        if type(ids) is not list and type(ids) is not tuple:  # e.g. libsumo's tuples are fine
            ids = list(ids)
        state = sample(x, y, speed, accel, heading_deg, yaw_rate, position_error)
        if state is None or state.shape != (8, len(ids)):
            raise ConfigError(
                f"step(): x, y, speed, accel, heading_deg, yaw_rate must each hold one value per "
                f"id and position_error (2, ids) ({len(ids)} ids)",
                fix="pass arrays aligned with ids")
        self.step_sampled(now_s, ids, state)

    def step_sampled(self, now_s: float, ids: list[str] | tuple[str, ...],
                     state: np.ndarray) -> None:
        """`step` with the senders' samples already in one float64 array (8, len(ids)): the
        reported x, y, speed, accel, heading, yaw rate (GPS errors included), then the true x,
        y (`plan.sample`'s layout). The emulator keeps ``state`` as the senders' last sample:
        pass a new array every step. `ConvoyEnv` builds it from the vehicle states directly,
        which saves `step`'s stacking of eight arrays on every step."""
        now = float(now_s)
        if self._plan is not None:
            if self._fast_step(now, ids, state):
                return
            self._leave_plan()
        if type(ids) is not list and type(ids) is not tuple:
            ids = list(ids)
        if type(state) is not np.ndarray or state.shape != (8, len(ids)) or \
                state.dtype != np.float64:
            raise ConfigError(
                f"step_sampled(): state must be a float64 array (8, {len(ids)}), one column per "
                f"id, got {getattr(state, 'shape', type(state).__name__)}",
                fix="build it as plan.sample() does, or call step()")
        if type(ids) is not type(self._ids) or ids != self._ids:
            if not self._ready:
                raise RuntimeError("EspNowEmulator.step() before reset()")
            self._set_ids(ids)
        if self._identity:
            cur = state
        else:
            cur = self._prev.copy()  # absent vehicles keep their last sample
            cur[:, self._slots] = state
        prev = self._prev
        prev_t = self._prev_t
        if prev_t is None:  # first step: emit [now - period, now) with the state held
            prev_t = now - self._period
            self._base += np.ceil((prev_t - self._base) / self._period) * self._period
            self._next = self._base.copy()
            self._next_max = float(self._base.max()) if len(self._base) else math.inf
            prev = cur
        elif len(self._fresh):
            prev[:, self._fresh] = cur[:, self._fresh]  # a newcomer's first sample is now's
            self._fresh = self._fresh[:0]
        dt = now - prev_t
        if dt < 0:
            raise ConfigError(f"step(): time went back from {prev_t} s to {now} s",
                              fix="call step() with increasing times; reset() for a new episode")
        self._vstep = None
        self._vis = None
        if dt > 0:
            if dt < 0.5 * self._step_s:
                raise ConfigError(
                    f"step of {dt:.4g} s is shorter than reset(step_length_s={self._step_s})/2",
                    fix="pass the simulation's step length to reset(step_length_s=...)",
                )
            # Link distance bins from the senders' samples, fixed for the whole window.
            dist = self._distances(prev[6:])
            bins = self._model.edges.searchsorted(dist, "right")
            if self._try_plan(now, dt, bins, prev, cur):
                self._prev = prev
                if self._fast_step(now, ids, state):
                    return
                raise AssertionError("a fresh plan must hold for its first step")
            self._emit(now, dt, prev, bins, dist)
        self._prev = cur
        self._prev_t = now
        self._now = now
        self._steps += 1

    def _distances(self, pos: np.ndarray) -> np.ndarray:
        """Link distances (..., rows, n) from the senders' (2, ..., n) positions, metres;
        (..., n) for one receiver (it broadcasts like (..., 1, n))."""
        if self._r1 is not None:  # one receiver: a slice broadcasts cheaper than fancy indexing
            dxy = pos - pos[..., self._r1]
        else:
            dxy = pos[..., None, :] - pos[..., self._row_sel, None]
        return np.hypot(dxy[0], dxy[1])

    def _emit(self, now: float, dt: float, prev: np.ndarray, bins: np.ndarray,
              dist: np.ndarray) -> None:
        """Every broadcast due in [previous step, now), round by round."""
        nxt = self._next
        if dt <= self._period and self._next_max < now:  # the usual case: one round, all
            self._round(prev, nxt, None, bins, dist)
            self._cnt += 1
            self._next = self._base + self._cnt * self._period
            self._next_max += self._period
            return
        while True:
            due = nxt < now
            if not due.any():
                break
            self._round(prev, nxt, due, bins, dist)
            self._cnt += due
            nxt = self._next = self._base + self._cnt * self._period
        self._next_max = float(nxt.max()) if len(nxt) else math.inf

    def _write_content(self, content: np.ndarray, prev: np.ndarray, k: int) -> None:
        """A round's message content: the samples plus block ``k``'s noise, heading wrapped."""
        np.add(prev[:6], self._noise_blk[k], out=content)
        heading = content[HEADING]
        np.remainder(heading, 360.0, out=heading)

    def _round(self, prev: np.ndarray, t_send: np.ndarray, due: np.ndarray | None,
               bins: np.ndarray, dist: np.ndarray) -> None:
        """One broadcast opportunity per vehicle (``due`` None: all): sample, lose, delay."""
        k = self._blk_i
        if k == self._blk_n:
            self._refill()
            k = 0
        self._blk_i = k + 1
        j = self._round_no % self._depth
        self._round_no += 1
        # Content once per sender, into this round's ring block; a sender that is not due
        # writes a block that no link refers to.
        self._write_content(self._ring[j], prev, k)
        # Loss: one Gilbert-Elliott step per link that sends (the first from the stationary
        # distribution of its bin).
        m = self._model
        thr = m.stationary_loss[bins] if self._steps == 0 else m.table[bins, self._bad]
        newbad = self._u_blk[k] < thr
        new = self._new
        if due is None:
            np.copyto(self._bad, newbad)
            deliv = self._link_ok > newbad
            self._n_sent += self._n_link_ok
        else:
            np.copyto(self._bad, newbad, where=due)
            deliv = (self._link_ok & due) > newbad
            self._n_sent += int(np.count_nonzero(self._link_ok & due))
        np.add(self._lat_blk[k], t_send, out=new[ARRIVAL])
        new[SEND] = t_send
        new[SLOT] = self._slot_tab[j]
        if self.relay_hops:
            deliv = self._relay(k, bins, deliv, new)
        if self._record:
            self._log_round(deliv, new, t_send, due, dist)
        np.copyto(self._b, self._a, where=deliv)
        np.copyto(self._a, new, where=deliv)
        self._n_deliv += int(np.count_nonzero(deliv))

    def _relay(self, k: int, bins: np.ndarray, deliv: np.ndarray, new: np.ndarray
               ) -> np.ndarray:
        """Earliest arrival over paths of up to `relay_hops` hops; rows and columns are slots."""
        reach = np.where(deliv, new[ARRIVAL], np.inf)  # [receiver, sender], exactly one hop
        best = reach.copy()
        hops = np.ones(reach.shape)
        hop_loss = self._model.stationary_loss[bins]  # independent draw per hop
        for h in range(self.relay_hops - 1):
            ok = self._link_ok & (self._ru_blk[k, h] >= hop_loss)
            hop_lat = np.where(ok, self._rlat_blk[k, h], np.inf)  # [to v, from relay j]
            # arrival at v of s's message forwarded by j: reach[j, s] + hop_lat[v, j]
            reach = (hop_lat[:, :, None] + reach[None, :, :]).min(axis=1)
            reach[~self._notself] = np.inf
            better = reach < best
            best[better] = reach[better]
            hops[better] = h + 2
        deliv = np.isfinite(best)
        new[ARRIVAL] = best
        new[HOPS] = hops
        self._n_relayed += int(np.count_nonzero(deliv & (hops > 1)))
        return deliv

    def _log_round(self, deliv: np.ndarray, new: np.ndarray, t_send: np.ndarray,
                   due: np.ndarray | None, dist: np.ndarray) -> None:
        r, s = np.nonzero(self._link_ok if due is None else self._link_ok & due)
        dist = dist.reshape(self._link_ok.shape)
        self._log.append((self._rows[r], s, t_send[s], deliv[r, s],
                          np.where(deliv[r, s], new[ARRIVAL][r, s], np.inf), new[HOPS][r, s],
                          dist[r, s]))

    # ------------------------------------------------------------------ outputs
    def view(self, receiver_id: str) -> ReceivedMessages:
        """What ``receiver_id`` holds now: the newest message per sender that is not stale."""
        try:
            row = self._row_of[receiver_id]
        except (KeyError, AttributeError):
            raise ConfigError(
                f"{receiver_id!r} is not a receiver of this episode",
                fix="name it in reset(receivers=...) or pass receivers=None",
            ) from None
        if self._vstep is not None:
            return self._plan_view(row)
        v, ok = self._vis or self._visible()
        idx = ok[row].nonzero()[0]
        m = v[row][idx].T
        c = self._ring_flat[m[SLOT].astype(np.intp) + self._field_off]  # [field, sender]
        hops = m[HOPS].astype(np.int64) if self.relay_hops else self._one_hop[:len(idx)]
        # positional: this runs every step (field order of ReceivedMessages)
        return ReceivedMessages(self._id_arr[idx], c, m[SEND], hops, m[ARRIVAL], self._now)

    def _visible(self) -> tuple[np.ndarray, np.ndarray]:
        """Per link at `now`: the packet shown and whether it is shown (all receivers at once)."""
        now = self._now
        a = self._a
        v = np.where(a[ARRIVAL] <= now, a, self._b)
        ok = v[ARRIVAL] <= now
        ok &= v[SEND] >= now - self._model.stale_s
        self._vis = (v.transpose(1, 2, 0), ok)  # [row, sender, field]
        return self._vis

    @property
    def stats(self) -> dict[str, float]:
        """Counters of this episode: link packets sent, delivered, lost, relayed; the pdr."""
        if not self._ready:
            return {"steps": 0, "sent": 0, "delivered": 0, "lost": 0, "relayed": 0,
                    "pdr": float("nan")}
        steps, sent, deliv = self._planned_counts()
        sent += self._n_sent
        deliv += self._n_deliv
        return {
            "steps": self._steps + steps,
            "sent": sent,
            "delivered": deliv,
            "lost": max(sent - deliv, 0),
            "relayed": self._n_relayed,
            "pdr": deliv / sent if sent else float("nan"),
        }

    def packet_log(self) -> dict[str, np.ndarray]:
        """Every direct link packet of the episode (``reset(record=True)``), aligned arrays.

        Keys: receiver and sender (vehicle ids), send_s, delivered, arrival_s (inf if lost),
        hops, distance_m. Order: by broadcast round, hence per link in send order.
        """
        names = ("receiver", "sender", "send_s", "delivered", "arrival_s", "hops", "distance_m")
        if not self._log:
            return {k: np.empty(0) for k in names}
        out = {k: np.concatenate(c) for k, c in zip(names, zip(*self._log, strict=True),
                                                     strict=True)}
        out["receiver"] = self._id_arr[out["receiver"]]
        out["sender"] = self._id_arr[out["sender"]]
        return out
