"""The emulator's planned fast path: many steps of link outcomes computed at once.

With one broadcast per vehicle per step (period == step length), latency below a step, no
relay, unchanged vehicles and known distance bins, nothing a receiver sees depends on the
vehicle states except the message content: which packets are lost (Gilbert-Elliott), when
they arrive and which one each link shows at each step follow from the pre-drawn randomness
alone. A plan computes that for up to `PLAN_MAX_STEPS` steps in a few whole-array operations,
with each round's distance bins predicted from the vehicles' last motion; a planned step then
only writes the content and checks that the actual bins are the predicted ones (else the
plan ends there), and a view is a few slices. Plans consume exactly the randomness the
step-by-step path would, and hand their state back to it (`_leave_plan`), so results are
bit-identical either way (tests/test_comms_emulator.py checks it).

`PlannedSteps` is a mixin of `EspNowEmulator`: it reads and writes the emulator's episode
state (documented there) and holds no other reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from roadsense.comms.messages import ARRIVAL, HEADING, SEND, SLOT, ReceivedMessages

PLAN_MAX_STEPS = 512  # most steps computed ahead (one random block for small convoys)
PLAN_MIN_STEPS = 16  # fewest, after plans kept breaking (distance bins changing often)
PLAN_MAX_LINKS = 512  # beyond this, per-call overhead no longer dominates: step by step


@dataclass(slots=True)
class RowPlan:
    """One receiver's views for every step of a plan, flattened; step i is [offsets[i]:[i+1]]."""

    offsets: list[int]
    sender: np.ndarray
    send: np.ndarray
    arrival: np.ndarray
    gather: np.ndarray  # (6, N) flat ring indices of the content


@dataclass(slots=True)
class Plan:
    """Precomputed outcome of the next ``h`` steps."""

    h: int
    q: list[float]  # the step times it is valid for
    keys: list[bytes]  # the distance bins it assumed, one round's bins per step
    edges: np.ndarray  # the distance bins' edges
    noise: np.ndarray  # (h, 6, n) the rounds' content noise (a slice of the random block)
    ring: np.ndarray  # the emulator's content ring (depth, 6, n)
    depth: int  # its rounds
    k0: int  # random-block index of its first round
    g0: int  # round number of its first round
    cnt0: np.ndarray  # broadcasts per vehicle before its first round
    rec: np.ndarray  # (h + 1, rows, n, 4) packet records; [h]: the newest before the plan
    last: np.ndarray  # (h, rows, n) newest delivered round so far; -1: the one before
    bad: np.ndarray  # (h, rows, n) Gilbert-Elliott state after each round
    deliv: np.ndarray  # (h, rows, n)
    vis: np.ndarray  # (h, rows, n, 4) the record each link shows at each step
    ok: np.ndarray  # (h, rows, n) whether it is shown (arrived and not stale)
    rows: dict[int, RowPlan] = field(default_factory=dict)  # built on a receiver's first view
    i: int = 0  # steps consumed


def sample(x, y, speed, accel, heading_deg, yaw_rate, position_error) -> np.ndarray | None:
    """`EspNowEmulator._prev`'s layout (8, n) for one step: the reported state (positions plus
    ``position_error``), then the true positions; None when the arrays do not stack."""
    try:
        state = np.array((x, y, speed, accel, heading_deg, yaw_rate, x, y), dtype=np.float64)
        if position_error is not None:
            if np.shape(position_error) != (2, state.shape[1]):
                return None
            state[:2] += position_error
    except ValueError:
        return None
    return state


class PlannedSteps:
    """Mixin of `EspNowEmulator`: the planned fast path (see the module docstring)."""

    def _fast_step(self, now: float, ids: list[str], state: np.ndarray) -> bool:
        """Take one planned step with the senders' samples ``state`` (`sample`'s layout) if the
        plan holds; False: the caller steps normally.

        Only what a view needs is updated here; counters and the step-by-step state catch up
        when the plan is left (`_leave_plan`, `_planned_counts`).
        """
        plan = self._plan
        i = plan.i
        if not (i < plan.h and abs(now - plan.q[i]) <= 1e-6 and type(ids) is type(self._ids)
                and ids == self._ids):
            return False
        prev = self._prev
        if type(state) is not np.ndarray or state.shape != prev.shape or state.dtype != prev.dtype:
            return False  # the step-by-step path explains the problem
        # this round's distance bins (where the senders were) must be the ones planned
        dist = self._distances(prev[6:])
        if plan.edges.searchsorted(dist, "right").tobytes() != plan.keys[i]:
            return False
        # the round's content (`_write_content`, inlined: this runs every step)
        content = plan.ring[(plan.g0 + i) % plan.depth]
        np.add(prev[:6], plan.noise[i], out=content)
        heading = content[HEADING]
        np.remainder(heading, 360.0, out=heading)
        plan.i = i + 1
        self._vstep = i
        self._prev = state
        self._prev_t = self._now = now
        if self._record:
            self._log_round(plan.deliv[i], plan.rec[i].transpose(2, 0, 1),
                            plan.rec[i, 0, :, SEND], None, dist)
        return True

    def _planned_counts(self) -> tuple[int, int, int]:
        """Steps, link packets sent and delivered by the current plan, not yet counted."""
        plan = self._plan
        if plan is None:
            return 0, 0, 0
        return plan.i, plan.i * self._n_link_ok, int(np.count_nonzero(plan.deliv[:plan.i]))

    def _try_plan(self, now: float, dt: float, bins: np.ndarray, prev: np.ndarray,
                  cur: np.ndarray) -> bool:
        """Start a plan at this step when the fast path's conditions hold."""
        if (not self.plan_steps or self.relay_hops or self._steps == 0 or not self._identity
                or self._link_ok.size > PLAN_MAX_LINKS or abs(dt - self._period) > 1e-6
                or self._lat_max >= dt or self._next_max >= now):
            return False
        self._build_plan(now, dt, bins, prev, cur)
        return True

    def _predict_bins(self, h: int, bins: np.ndarray, prev: np.ndarray, cur: np.ndarray
                      ) -> np.ndarray:
        """Distance bins of the next ``h`` rounds, (h, rows, n): this round's ``bins``, then from
        positions extrapolated from the last two samples. A plan holds while the actual bins
        match; a wrong guess only ends it early (vehicles moving steadily keep plans long)."""
        steps = np.arange(-1.0, h - 1.0)
        pos = cur[6:, None, :] + steps[:, None] * (cur[6:] - prev[6:])[:, None, :]  # (2, h, n)
        pred = self._model.edges.searchsorted(self._distances(pos), "right")
        pred[0] = bins
        return pred.reshape(h, *self._link_ok.shape)

    def _build_plan(self, now: float, dt: float, bins: np.ndarray, prev: np.ndarray,
                    cur: np.ndarray) -> None:
        """Plan from this step on: ``bins`` of this round, ``prev``/``cur`` the last samples."""
        k = self._blk_i
        if k == self._blk_n:
            self._refill()
            k = 0
        h = max(1, min(self._plan_h, self._blk_n - k))
        bins = self._predict_bins(h, bins, prev, cur)
        nr, n = self._link_ok.shape
        steps = np.arange(h)
        idx = steps[:, None, None]
        q = now + steps * dt
        qq = q[:, None, None]
        t_send = self._base + (self._cnt + steps[:, None]) * self._period  # (h, n)
        # Gilbert-Elliott without a loop over time: a packet's draw either fixes the next state
        # whatever the current one (u < P(good->bad) <= P(bad->bad): bad; u >= P(bad->bad):
        # good) or keeps it, so the state is the last fixing draw's, else the starting state.
        u = self._u_blk[k:k + h]
        table = self._model.table
        if_good = u < table[:, 0].take(bins)
        fixed = if_good == (u < table[:, 1].take(bins))
        last_fix = np.maximum.accumulate(np.where(fixed, idx, -1), axis=0)
        # gathers along time as flat takes: much cheaper than [t, rr, ss] fancy indexing
        link = self._link_idx
        bad = np.where(last_fix >= 0, if_good.reshape(-1).take(last_fix * link.size + link),
                       self._bad.astype(bool))
        deliv = self._link_ok > bad
        rec = np.empty((h + 1, nr, n, 4))
        rounds = (self._round_no + steps) % self._depth
        rec[:h, :, :, SLOT] = (rounds * 6 * n)[:, None, None] + self._arange_f
        rec[:h, :, :, SEND] = t_send[:, None, :]
        np.add(t_send[:, None, :], self._lat_blk[k:k + h], out=rec[:h, :, :, ARRIVAL])
        rec[:h, :, :, 3] = 1.0  # hops
        rec[h] = self._a.transpose(1, 2, 0)
        last = np.maximum.accumulate(np.where(deliv, idx, -1), axis=0)
        before = np.concatenate((np.full((1, nr, n), -1), last[:-1]))
        shown = np.where(deliv & (rec[:h, :, :, ARRIVAL] <= qq), idx, before)
        vis = rec.reshape(-1, 4).take(shown % (h + 1) * link.size + link, axis=0)  # (h, nr, n, 4)
        ok = (vis[..., ARRIVAL] <= qq) & (vis[..., SEND] >= qq - self._model.stale_s)
        key = bins.tobytes()
        kl = bins[0].nbytes
        self._plan = Plan(h=h, q=q.tolist(), keys=[key[j:j + kl] for j in range(0, h * kl, kl)],
                          edges=self._model.edges, noise=self._noise_blk[k:k + h],
                          ring=self._ring, depth=self._depth, k0=k,
                          g0=self._round_no, cnt0=self._cnt.copy(), rec=rec, last=last,
                          bad=bad, deliv=deliv, vis=vis, ok=ok)

    def _leave_plan(self) -> None:
        """Hand a plan's state at its current step back to the step-by-step path."""
        plan = self._plan
        if plan is None:
            return
        steps, sent, delivered = self._planned_counts()
        self._plan = None
        i = plan.i
        self._steps += steps
        self._n_sent += sent
        self._n_deliv += delivered
        self._blk_i = plan.k0 + i
        self._round_no = plan.g0 + i
        # Adapt the horizon: a plan that broke early wasted its tail, one that ran out was cheap.
        if i < plan.h:
            self._plan_h = min(self.plan_steps, max(PLAN_MIN_STEPS, min(self._plan_h, 2 * i)))
        else:
            self._plan_h = min(self.plan_steps, 2 * self._plan_h)
        if i:
            self._a[:] = plan.rec[plan.last[i - 1], self._rr, self._ss].transpose(2, 0, 1)
            self._b[:] = self._a
            self._bad[:] = plan.bad[i - 1]
        if self._vstep is not None:  # the view of the step just taken, step-by-step style
            self._vis = (plan.vis[self._vstep], plan.ok[self._vstep])
            self._vstep = None
        self._cnt = plan.cnt0 + i
        self._next = self._base + self._cnt * self._period
        self._next_max = float(self._next.max()) if len(self._next) else float("inf")

    def _plan_view(self, row: int) -> ReceivedMessages:
        plan, i = self._plan, self._vstep
        rp = plan.rows.get(row)
        if rp is None:
            ok = plan.ok[:, row, :]
            st, s = np.nonzero(ok)
            rec = plan.vis[st, row, s]  # (N, 4)
            rp = plan.rows[row] = RowPlan(
                offsets=[0, *np.cumsum(np.count_nonzero(ok, axis=1)).tolist()],
                sender=self._id_arr[s], send=rec[:, SEND].copy(),
                arrival=rec[:, ARRIVAL].copy(),
                gather=rec[:, SLOT].astype(np.intp)[None, :] + self._field_off)
        a, b = rp.offsets[i], rp.offsets[i + 1]
        # take: cheaper than [] on small arrays; positional: this runs every step
        return ReceivedMessages(rp.sender[a:b], self._ring_flat.take(rp.gather[:, a:b]),
                                rp.send[a:b], self._one_hop[:b - a], rp.arrival[a:b], self._now)
