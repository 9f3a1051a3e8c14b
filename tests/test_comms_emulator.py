"""The ESP-NOW emulator's behaviour: determinism, causality, staleness, relay, scale, errors."""

from __future__ import annotations

import numpy as np
import pytest

from roadsense.comms import EspNowEmulator, load_params
from roadsense.comms.plan import sample
from roadsense.errors import ConfigError

DT = 0.1
PARAMS = load_params()


def convoy(n: int, spacing: float = 15.0):
    """n cars in a line along +x (V001 last), driving at 20 m/s heading east."""
    ids = [f"V{i + 1:03d}" for i in range(n)]
    x0 = np.arange(n) * spacing
    zeros = np.zeros(n)

    def states(t: float):
        return ids, x0 + 20.0 * t, zeros.copy(), np.full(n, 20.0), zeros.copy(), \
            np.full(n, 90.0), zeros.copy()

    return ids, states


def run(emu: EspNowEmulator, states, steps: int, receiver: str = "V001", t0: float = 0.0):
    views = []
    for k in range(steps):
        t = t0 + k * DT
        emu.step(t, *states(t))
        views.append((t, emu.view(receiver)))
    return views


def test_same_seed_same_messages_and_different_seed_differs():
    ids, states = convoy(9)
    outs = []
    for seed in (3, 3, 4):
        emu = EspNowEmulator(PARAMS)
        eff = emu.reset(np.random.default_rng(seed), ids, receivers=["V001"],
                        domain_randomization=True)
        views = run(emu, states, 300)
        outs.append((eff, [(list(v.sender), np.stack([v.x, v.y, v.speed, v.accel,
                    v.heading_deg, v.yaw_rate, v.send_time_s, v.age_s]).tobytes())
                    for _, v in views]))
    assert outs[0] == outs[1]
    assert outs[0][1] != outs[2][1]
    assert outs[0][0] != outs[2][0]


def test_ids_as_a_tuple_like_libsumo_returns_them():
    ids, states = convoy(5)
    outs = []
    for as_tuple in (False, True):
        emu = EspNowEmulator(PARAMS)
        emu.reset(np.random.default_rng(2), ids, receivers=["V001"])
        views = []
        for k in range(100):
            _, *arrays = states(k * DT)
            emu.step(k * DT, tuple(ids) if as_tuple else list(ids), *arrays)
            v = emu.view("V001")
            views.append((list(v.sender), v.x.tolist(), v.age_s.tolist()))
        outs.append(views)
        assert emu._plan is not None  # the fast path is taken for tuples too
    assert outs[0] == outs[1]


def test_first_view_already_has_peers_and_phases_are_spread():
    ids, states = convoy(9)
    emu = EspNowEmulator(PARAMS)
    emu.reset(np.random.default_rng(0), ids, receivers=["V001"])
    views = run(emu, states, 100)
    assert len(views[0][1]) > 0
    offsets = np.concatenate([v.send_time_s % DT for _, v in views])
    # not aligned with the steps: send-time offsets cover the period
    assert offsets.min() < 0.02 and offsets.max() > 0.08 and np.unique(offsets.round(6)).size >= 8
    ages = np.concatenate([v.age_s for _, v in views])
    assert 0.002 < ages.min() and ages.max() <= 0.5
    assert "V001" not in np.concatenate([v.sender for _, v in views])


def test_view_is_exactly_the_newest_arrived_unstale_packet_per_sender():
    """Oracle: rebuild every view from the packet log and compare (causality and staleness)."""
    ids, states = convoy(6, spacing=35.0)  # links across several distance bins
    emu = EspNowEmulator(PARAMS)
    emu.reset(np.random.default_rng(11), ids, receivers=["V001"], record=True)
    views = run(emu, states, 600)
    log = emu.packet_log()
    ok = log["delivered"]
    assert np.all(log["arrival_s"][ok] - log["send_s"][ok] >= PARAMS.latency_min_ms / 1e3 - 1e-12)
    for t, view in views:
        expect = {}
        for s in ids[1:]:
            m = ok & (log["sender"] == s) & (log["arrival_s"] <= t)
            if m.any():
                send = log["send_s"][m].max()
                if t - send <= 0.5:
                    expect[s] = send
        got = dict(zip(view.sender, view.send_time_s, strict=True))
        assert got == expect, t
        assert np.all(view.arrival_s <= t) and np.all(view.arrival_s > view.send_time_s)
        assert np.allclose(view.age_s, t - view.send_time_s)


def test_messages_are_delivered_late_in_later_steps_when_latency_crosses_a_step():
    ids, states = convoy(64, spacing=0.5)  # many senders, so many phases near a step's end
    emu = EspNowEmulator(PARAMS)
    emu.reset(np.random.default_rng(5), ids, receivers=["V001"], record=True)
    views = run(emu, states, 100)
    log = emu.packet_log()
    ok = log["delivered"]
    step_of_send = np.floor(log["send_s"][ok] / DT + 1e-9)
    step_of_arrival = np.floor(log["arrival_s"][ok] / DT + 1e-9)
    crossed = (step_of_arrival > step_of_send).mean()
    assert 0.01 < crossed < 0.2  # ~latency / period of the packets arrive after the next step
    for t, view in views:  # such a packet shows up at the first step after its arrival
        assert np.all(view.arrival_s <= t + 1e-12)
        late = view.arrival_s > np.floor(view.send_time_s / DT + 1e-9) * DT + DT + 1e-9
        assert np.all(view.age_s[late] > DT - 1e-9)


def test_stale_messages_leave_the_view():
    ids, states = convoy(3)
    emu = EspNowEmulator(PARAMS)
    emu.reset(np.random.default_rng(0), ids, receivers=["V001"])
    run(emu, states, 20)
    assert "V003" in emu.view("V001").sender
    gone = [i for i in ids if i != "V003"]  # V003 leaves the simulation (or its radio dies)
    seen_until = None
    for k in range(20, 40):
        t = k * DT
        _, x, y, v, a, h, w = states(t)
        emu.step(t, gone, x[:2], y[:2], v[:2], a[:2], h[:2], w[:2])
        view = emu.view("V001")
        if "V003" in view.sender:
            seen_until = t
            assert view.age_s[list(view.sender).index("V003")] <= 0.5
    assert seen_until is not None and 2.0 + 0.3 <= seen_until <= 2.0 + 0.5 + 1e-9
    assert "V003" not in emu.view("V001").sender
    assert "V002" in emu.view("V001").sender


def test_out_of_range_is_never_delivered_and_staleness_applies_when_driving_away():
    ids = ["V001", "V002"]
    emu = EspNowEmulator(PARAMS)
    emu.reset(np.random.default_rng(1), ids)
    z = np.zeros(2)
    ages = []
    for k in range(100):
        far = 10.0 if k < 30 else 260.0  # V002 jumps beyond the maximum range at t=3.0
        emu.step(k * DT, ids, np.array([0.0, far]), z, z, z, z, z)
        v = emu.view("V001")
        if k >= 30 and len(v):
            ages.append(v.age_s[0])
    assert 0 < len(ages) <= 5 and max(ages) <= 0.5
    assert len(emu.view("V002")) == 0


def test_sender_noise_has_the_measured_spread_and_heading_stays_in_range():
    n = 9
    ids = [f"V{i + 1:03d}" for i in range(n)]
    x = np.arange(n) * 2.0
    z = np.zeros(n)
    heading = np.full(n, 359.0)
    emu = EspNowEmulator(PARAMS)
    emu.reset(np.random.default_rng(2), ids)
    err_x, err_v, head = [], [], []
    for k in range(400):
        emu.step(k * DT, ids, x, z, z + 10.0, z, heading, z)
        v = emu.view("V001")
        err_x.append(v.x - x[[ids.index(s) for s in v.sender]])
        err_v.append(v.speed - 10.0)
        head.append(v.heading_deg)
    err_x, err_v, head = map(np.concatenate, (err_x, err_v, head))
    assert err_x.std() == pytest.approx(2.959, rel=0.05)
    assert err_v.std() == pytest.approx(0.429, rel=0.05)
    assert head.min() >= 0.0 and head.max() < 360.0 and (head < 90).mean() > 0.3


def _relay_world(relay_hops: int, seconds: float = 200.0):
    ids = ["A", "B", "C"]  # A at 0 m, B at 120 m, C at 240 m: C is beyond A's direct range
    x = np.array([0.0, 120.0, 240.0])
    z = np.zeros(3)
    emu = EspNowEmulator(PARAMS, relay_hops=relay_hops)
    emu.reset(np.random.default_rng(9), ids, receivers=["A"])
    from_c = []
    for k in range(int(seconds / DT)):
        emu.step(k * DT, ids, x, z, z, z, z, z)
        v = emu.view("A")
        assert np.all(v.arrival_s <= k * DT) and np.all(v.age_s <= 0.5)
        for s, hops, send, arr in zip(v.sender, v.hops, v.send_time_s, v.arrival_s,
                                      strict=True):
            if s == "C":
                from_c.append((hops, arr - send))
            else:
                assert hops == 1
    return emu, from_c


def test_gps_errors_move_the_reported_positions_not_the_radios():
    """`position_error` shifts what the messages report; loss and range follow where the cars
    are: a peer 10 m away reporting 500 m further on is heard, one 260 m away (beyond the
    maximum range) reporting 250 m closer is not."""
    ids = ["V001", "V002"]
    z = np.zeros(2)

    def views(true_x: float, error_x: float) -> list:
        emu = EspNowEmulator(PARAMS)
        emu.reset(np.random.default_rng(3), ids)
        err = np.array([[0.0, error_x], [0.0, 0.0]])
        out = []
        for k in range(50):
            emu.step(k * DT, ids, np.array([0.0, true_x]), z, z, z, z, z, position_error=err)
            out.append(emu.view("V001"))
        return out

    near = [v for v in views(10.0, 500.0) if len(v)]
    assert len(near) >= 40
    reported = np.concatenate([v.x for v in near])
    assert abs(np.median(reported) - 510.0) < 3 * PARAMS.noise_std["position_std_m"]
    assert not any(len(v) for v in views(260.0, -250.0))


def test_relay_off_cannot_reach_beyond_range():
    emu, from_c = _relay_world(0)
    assert from_c == []
    assert emu.stats["relayed"] == 0


def test_relay_on_reaches_beyond_range_through_a_relay_with_extra_latency():
    emu, from_c = _relay_world(3)
    assert len(from_c) > 20
    hops = np.array([h for h, _ in from_c])
    latency = np.array([lat for _, lat in from_c])
    assert np.all(hops >= 2)
    assert np.all(latency >= 2 * PARAMS.latency_min_ms / 1e3)  # one latency draw per hop
    assert latency.mean() > 1.5 * PARAMS.latency_mean_ms / 1e3
    assert emu.stats["relayed"] > 0


def test_relay_hops_validation():
    with pytest.raises(ConfigError, match="relay_hops"):
        EspNowEmulator(PARAMS, relay_hops=4)
    assert EspNowEmulator(PARAMS, relay_hops=1).relay_hops == 0


def test_sixty_four_vehicles_all_receivers():
    ids, states = convoy(64, spacing=8.0)
    emu = EspNowEmulator(PARAMS)
    emu.reset(np.random.default_rng(0), ids)
    for k in range(30):
        emu.step(k * DT, *states(k * DT))
    sizes = []
    for r in ids:
        v = emu.view(r)
        assert r not in v.sender and len(set(v.sender)) == len(v)
        assert np.all((v.age_s > 0) & (v.age_s <= 0.5))
        sizes.append(len(v))
    assert min(sizes) > 10 and max(sizes) < 64
    st = emu.stats
    assert st["sent"] == 30 * 64 * 63
    assert 0 < st["delivered"] < st["sent"] and st["lost"] == st["sent"] - st["delivered"]


def test_domain_randomisation_and_overrides():
    ids, states = convoy(2)
    emu = EspNowEmulator(PARAMS)
    effs = [emu.reset(np.random.default_rng(s), ids, domain_randomization=True)
            for s in range(20)]
    for e in effs:
        for key, rng_key in (("latency_mean_ms", "latency_mean_ms"),
                             ("jitter_std_ms", "jitter_std_ms"),
                             ("position_std_m", "position_std_m")):
            lo, hi = PARAMS.dr_ranges[rng_key]
            assert lo <= e[key] <= hi
        lo, hi = PARAMS.dr_ranges["loss_rate"]
        assert lo <= e["loss_scale"] * PARAMS.overall_loss <= hi
    assert len({e["latency_mean_ms"] for e in effs}) == 20
    off = emu.reset(np.random.default_rng(0), ids)
    assert (off["latency_mean_ms"], off["loss_scale"]) == (3.84, 1.0)
    assert off["loss_by_bin"][:2] == [0.058, 0.1158]
    fixed = emu.reset(np.random.default_rng(0), ids, domain_randomization=True,
                      overrides={"loss_rate": 0.25})
    assert fixed["loss_scale"] == pytest.approx(0.25 / 0.0621)
    with pytest.raises(ConfigError, match="unknown radio overrides"):
        emu.reset(np.random.default_rng(0), ids, overrides={"loss": 1})


def test_loss_scale_override_changes_measured_loss():
    ids = ["V001", "V002"]
    z = np.zeros(2)
    x = np.array([0.0, 10.0])
    emu = EspNowEmulator(PARAMS)
    emu.reset(np.random.default_rng(4), ids, receivers=["V001"], overrides={"loss_scale": 3.0})
    for k in range(20000):
        emu.step(k * DT, ids, x, z, z, z, z, z)
    assert 1 - emu.stats["pdr"] == pytest.approx(3 * 0.058, abs=0.015)


def test_bad_calls_raise_clear_errors():
    ids, states = convoy(3)
    emu = EspNowEmulator(PARAMS)
    emu.reset(np.random.default_rng(0), ids, receivers=["V001"])
    emu.step(0.0, *states(0.0))
    with pytest.raises(ConfigError, match="'V002' is not a receiver"):
        emu.view("V002")
    _, x, y, v, a, h, w = states(0.1)
    with pytest.raises(ConfigError, match="'V999' was not in reset"):
        emu.step(0.1, ["V001", "V002", "V999"], x, y, v, a, h, w)
    with pytest.raises(ConfigError, match="one value per id"):
        emu.step(0.1, ["V001", "V002"], x, y, v, a, h, w)
    with pytest.raises(ConfigError, match=r"position_error \(2, ids\)"):
        emu.step(0.1, ids, x, y, v, a, h, w, position_error=np.zeros((2, 1)))
    with pytest.raises(ConfigError, match=r"float64 array \(8, 3\)"):
        emu.step_sampled(0.1, ids, np.zeros((8, 3), np.float32))
    with pytest.raises(ConfigError, match=r"float64 array \(8, 3\)"):
        emu.step_sampled(0.1, ids, np.zeros((6, 3)))
    with pytest.raises(ConfigError, match="receivers"):
        emu.reset(np.random.default_rng(0), ids, receivers=["nobody"])
    with pytest.raises(ConfigError, match="duplicates"):
        emu.reset(np.random.default_rng(0), ["V001", "V001"])


@pytest.mark.parametrize(("plan_steps", "receivers"), [
    (1, ["V001", "V005"]), (7, ["V001", "V005"]), (32, ["V001", "V005"]), (256, ["V001"])])
def test_planned_fast_path_gives_the_same_messages_as_step_by_step(plan_steps, receivers):
    """Planning ahead is only a speed-up: with vehicles leaving, bins changing (steadily and
    against the plan's prediction), an irregular step in the middle and GPS errors that wander,
    every view is bit-identical to the step-by-step path's."""
    n = 9
    ids = [f"V{i + 1:03d}" for i in range(n)]
    rng = np.random.default_rng(0)
    speeds = 20 + rng.normal(0, 3, n)  # gaps drift across distance bins
    phase = rng.uniform(0, 6, n)  # and swing: motion the plans do not predict

    def drive(emu, sampled=False):
        emu.reset(np.random.default_rng(7), ids, receivers=receivers, record=True)
        out = []
        t = 0.0
        for k in range(400):
            t = t + (0.13 if k == 200 else DT)  # one irregular step
            present = ids if k < 300 else ids[:6]  # three cars leave
            m = len(present)
            x = np.arange(n)[:m] * 18.0 + speeds[:m] * t + 4.0 * np.sin(0.5 * t + phase[:m])
            z = np.zeros(m)
            gps = np.stack([5.0 * np.sin(0.3 * k + phase[:m]), np.cos(0.2 * k + phase[:m])])
            if sampled:  # the env's entry: the same samples as one array
                emu.step_sampled(t, present, sample(x, z, speeds[:m], z, np.full(m, 90.0), z,
                                                    gps))
            else:
                emu.step(t, present, x, z, speeds[:m], z, np.full(m, 90.0), z,
                         position_error=gps)
            for r in receivers:
                v = emu.view(r)
                out.append((list(v.sender), np.stack([v.x, v.y, v.speed, v.accel, v.heading_deg,
                            v.yaw_rate, v.send_time_s, v.age_s, v.arrival_s]).tobytes(),
                            v.hops.tolist()))
        return out, emu.stats, {k: v.tolist() for k, v in emu.packet_log().items()}

    fast = drive(EspNowEmulator(PARAMS, plan_steps=plan_steps))
    slow = drive(EspNowEmulator(PARAMS, plan_steps=0))
    assert fast[0] == slow[0]
    assert fast[1] == slow[1]
    assert fast[2] == slow[2]
    for plan in (plan_steps, 0):  # step_sampled takes either path to the same views
        assert drive(EspNowEmulator(PARAMS, plan_steps=plan), sampled=True) == slow


def test_view_before_the_first_step_is_empty_and_reset_starts_a_fresh_episode():
    ids, states = convoy(4)
    emu = EspNowEmulator(PARAMS)
    emu.reset(np.random.default_rng(1), ids, receivers=["V001"])
    assert len(emu.view("V001")) == 0
    first = [(list(v.sender), v.x.tolist()) for _, v in run(emu, states, 50)]
    assert emu.stats["steps"] == 50
    emu.reset(np.random.default_rng(1), ids, receivers=["V001"])
    assert emu.stats["sent"] == 0 and len(emu.view("V001")) == 0
    again = [(list(v.sender), v.x.tolist()) for _, v in run(emu, states, 50)]
    assert again == first


@pytest.mark.parametrize(("rate_hz", "step_s"), [(10.0, 0.1), (20.0, 0.1), (10.0, 0.05),
                                                 (7.0, 0.1)])
def test_broadcast_rate_is_independent_of_the_step(rate_hz, step_s):
    import json

    from roadsense.comms import default_params_path
    from roadsense.comms.params import params_from_dict

    raw = json.loads(default_params_path().read_text())
    raw["broadcast"]["rate_hz"] = rate_hz
    params = params_from_dict(raw)
    ids = ["V001", "V002", "V003"]
    x = np.array([0.0, 5.0, 10.0])
    z = np.zeros(3)
    emu = EspNowEmulator(params)
    emu.reset(np.random.default_rng(3), ids, receivers=["V001"], record=True,
              step_length_s=step_s)
    steps = int(round(60.0 / step_s))
    for k in range(steps):
        t = k * step_s
        emu.step(t, ids, x, z, z, z, z, z)
        assert np.all(emu.view("V001").arrival_s <= t)
    log = emu.packet_log()
    for s in ("V002", "V003"):
        sends = np.sort(log["send_s"][log["sender"] == s])
        assert np.allclose(np.diff(sends), 1.0 / rate_hz)  # exactly periodic, own phase
        assert abs(len(sends) - 60.0 * rate_hz) <= 2
    with pytest.raises(ConfigError, match="time went back"):
        emu.step(1.0, ids, x, z, z, z, z, z)


def test_a_view_is_one_content_block_with_named_rows():
    ids, states = convoy(6)
    emu = EspNowEmulator(PARAMS)
    emu.reset(np.random.default_rng(5), ids, receivers=["V001"])
    views = run(emu, states, 50)
    t, v = views[-1]
    assert v.content.shape == (6, len(v)) and len(v) > 0
    for row, name in enumerate(("x", "y", "speed", "accel", "heading_deg", "yaw_rate")):
        assert np.array_equal(getattr(v, name), v.content[row])
    assert np.all((v.heading_deg >= 0) & (v.heading_deg < 360))
    assert v.now_s == t and np.array_equal(v.age_s, t - v.send_time_s)
    order = np.arange(len(v))[::-1]
    flipped = v.take(order)
    assert list(flipped.sender) == list(v.sender[order])
    assert np.array_equal(flipped.content, v.content[:, order])
    assert np.array_equal(flipped.age_s, v.age_s[order])
