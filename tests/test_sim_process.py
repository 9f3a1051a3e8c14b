"""The SUMO process layer against the real SUMO (libsumo in-process and traci over TCP)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from roadsense import EGO_ID
from roadsense.errors import (
    ScenarioError,
    SumoCrashedError,
    SumoNotFoundError,
    SumoStartError,
)
from roadsense.sim import SumoProcess, base_scenario, validate_scenario
from roadsense.sim.process import derive_port

BACKENDS = ["libsumo", "traci"]


def _sumo_children() -> list[int]:
    """PIDs of SUMO processes whose parent is this test process."""
    out = subprocess.run(["ps", "-eo", "pid=,ppid=,comm="], capture_output=True, text=True).stdout
    me = os.getpid()
    return [int(p) for p, pp, comm in (ln.split(None, 2) for ln in out.splitlines())
            if int(pp) == me and comm.strip().startswith("sumo")]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0): look at its state
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


def _trajectory(sim: SumoProcess, seed: int, steps: int = 150) -> list[dict]:
    states = sim.reset(seed)
    for vid in states.ids:  # driver imperfection makes the run depend on SUMO's seed
        sim.set_vehicle_params(vid, imperfection=0.5)
    out = []
    for _ in range(steps):
        out.append(sim.step().as_dict())
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_reload_keeps_step_length_and_ego_at_t0(backend: str) -> None:
    with SumoProcess(base_scenario(), backend=backend) as sim:
        for seed in range(5):
            states = sim.reset(seed)
            assert sim.step_length == pytest.approx(0.1)
            assert states.time_s == pytest.approx(0.1)  # the step that processed t=0
            assert EGO_ID in states
            assert len(states) == 7
            for _ in range(20):
                states = sim.step()
            assert states.time_s == pytest.approx(2.1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_same_trajectory_and_seed_matters(backend: str) -> None:
    with SumoProcess(base_scenario(), backend=backend) as sim:
        a = _trajectory(sim, seed=11)
        b = _trajectory(sim, seed=11)
        c = _trajectory(sim, seed=12)
    assert a == b
    assert a != c


@pytest.mark.parametrize("backend", BACKENDS)
def test_advance_is_a_step_without_the_reads(backend: str) -> None:
    """`advance` moves SUMO exactly as `step` does (the same states afterwards) and says which
    cars are there; collisions are reported on either."""
    with SumoProcess(base_scenario(), backend=backend) as sim:
        stepped = _trajectory(sim, seed=3, steps=60)
        sim.reset(3)
        for vid in sim.states.ids:
            sim.set_vehicle_params(vid, imperfection=0.5)
        for k in range(59):
            time_s, ids = sim.advance()
            assert (time_s, ids) == (stepped[k]["time_s"], stepped[k]["ids"])
        assert sim.step().as_dict() == stepped[59]
        sim.set_lane_change_mode(EGO_ID, 0)
        sim.set_speed_mode("V002", 0)
        sim.set_speed("V002", 0.0)
        seen = []
        for _ in range(150):
            sim.advance()
            seen.extend(sim.collisions)
        assert [(c.collider, c.victim) for c in seen] == [(EGO_ID, "V002")]


def test_libsumo_and_traci_give_identical_states() -> None:
    with SumoProcess(base_scenario(), backend="libsumo") as sim:
        lib = _trajectory(sim, seed=5)
    with SumoProcess(base_scenario(), backend="traci") as sim:
        tcp = _trajectory(sim, seed=5)

    def by_id(states: dict) -> dict:
        keys = [k for k in states if k not in ("ids", "time_s")]
        return {vid: tuple(states[k][i] for k in keys) for i, vid in enumerate(states["ids"])}

    assert [s["time_s"] for s in lib] == [s["time_s"] for s in tcp]
    assert [by_id(s) for s in lib] == [by_id(s) for s in tcp]


def test_states_are_consistent_with_the_scenario() -> None:
    with SumoProcess(base_scenario()) as sim:
        states = sim.reset(0)
        ego = states.index(EGO_ID)
        assert states.leader_id[ego] == "V002"
        # departPos 100 vs 145, 5 m cars: 40 m bumper to bumper
        assert states.leader_gap_m[ego] == pytest.approx(40.0, abs=0.01)
        assert states.route_pos_m[ego] == pytest.approx(100.0, abs=0.01)
        head = states.index("V007")
        assert states.leader_id[head] == ""
        assert states.leader_gap_m[head] != states.leader_gap_m[head]  # NaN: no leader


@pytest.mark.slow
def test_200_reloads_leave_no_process_or_port() -> None:
    sim = SumoProcess(base_scenario(), backend="traci")
    states = sim.reset(0)
    pid, port = sim.pid, sim.port
    assert pid is not None and _alive(pid) and _listening_or_connected(port)
    started = time.perf_counter()
    for seed in range(1, 201):
        states = sim.reset(seed)
        assert EGO_ID in states
    per_reload_ms = (time.perf_counter() - started) / 200 * 1000
    assert sim.pid == pid  # reloads, never restarts
    sim.close()
    sim.close()  # idempotent
    assert not _alive(pid)
    assert not _listening(port)
    assert _sumo_children() == []
    assert per_reload_ms < 1000  # sanity only; speed lives in benchmarks/


def _listening_or_connected(port: int | None) -> bool:
    return port is not None  # SUMO accepts one client; probing would end it


def test_libsumo_200_reloads() -> None:
    with SumoProcess(base_scenario()) as sim:
        for seed in range(200):
            assert EGO_ID in sim.reset(seed)
        assert sim.step_length == pytest.approx(0.1)
    assert _sumo_children() == []


def test_sigkill_of_parent_leaves_no_sumo(tmp_path: Path) -> None:
    script = tmp_path / "owner.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        from roadsense.sim import SumoProcess
        sim = SumoProcess({str(base_scenario())!r}, backend="traci")
        sim.reset(0)
        print(sim.pid, sim.port, flush=True)
        time.sleep(120)
    """))
    owner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        line = owner.stdout.readline()
        sumo_pid, port = (int(v) for v in line.split())
        assert _alive(sumo_pid)
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive(sumo_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(sumo_pid), "SUMO outlived its parent"
        assert not _listening(port)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()


def test_killed_sumo_surfaces_as_one_error_and_reset_recovers() -> None:
    sim = SumoProcess(base_scenario(), backend="traci")
    try:
        sim.reset(0)
        old_pid = sim.pid
        os.kill(old_pid, signal.SIGKILL)
        with pytest.raises(SumoCrashedError):
            for _ in range(10):
                sim.step()
        assert not sim.running
        assert not _alive(old_pid)
        states = sim.reset(1)  # a fresh SUMO
        assert EGO_ID in states and sim.pid != old_pid
    finally:
        sim.close()
    assert _sumo_children() == []


def test_collisions_are_real_and_reported_once() -> None:
    with SumoProcess(base_scenario()) as sim:
        sim.reset(0)
        sim.set_vehicle_params(EGO_ID, emergency_decel=2.0, decel=2.0, apparent_decel=2.0)
        sim.set_lane_change_mode(EGO_ID, 0)  # no escape into the free lane
        sim.set_speed_mode("V002", 0)  # no safety checks: stop dead
        sim.set_speed("V002", 0.0)
        seen = []
        for _ in range(150):
            sim.step()
            seen.extend(sim.collisions)
        assert len(seen) == 1, seen
        assert (seen[0].collider, seen[0].victim) == (EGO_ID, "V002")
        # the wreck stays: the ego is still in the simulation after the crash
        assert EGO_ID in sim.states


def test_second_libsumo_in_one_process_is_refused() -> None:
    with SumoProcess(base_scenario()) as first:
        first.reset(0)
        second = SumoProcess(base_scenario())
        with pytest.raises(SumoStartError, match="one simulation per process"):
            second.reset(0)
        assert EGO_ID in first.step()  # the first one is untouched
    with SumoProcess(base_scenario()) as third:  # free again after close
        assert EGO_ID in third.reset(0)


def test_ports_differ_between_workers() -> None:
    # training runners, and evaluation runners (ConvoyEnv offsets their index by 10,000)
    workers = [*range(16), *range(10_000, 10_016)]
    ports = {derive_port(w, v, a) for w in workers for v in range(4) for a in range(5)}
    assert len(ports) == len(workers) * 4 * 5  # a hash would collide now and then
    # all below the kernel's ephemeral ports, where other programs' listeners come and go
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert max(ports) < low


@pytest.mark.parametrize("reply", [b"HTTP/1.1 400 Bad Request\r\n\r\n", None])
def test_a_foreign_listener_on_our_port_is_not_taken_for_sumo(reply: bytes | None) -> None:
    """Another program listens on the port SUMO was given: SUMO cannot bind it, and the
    connection that reaches the other program (garbage reply, or none) must not be used."""
    import threading

    foreign = socket.socket()
    foreign.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    foreign.bind(("localhost", derive_port(7, 0, 0)))
    foreign.listen(8)
    contacted: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = foreign.accept()
            except OSError:
                return
            with conn:
                contacted.append(conn.recv(64))
                if reply is None:
                    conn.recv(64)  # says nothing until the client gives up and hangs up
                else:
                    conn.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    try:
        with SumoProcess(base_scenario(), backend="traci", worker_index=7) as sim:
            states = sim.reset(3)
            assert sim.port == derive_port(7, 0, 1)
            assert EGO_ID in states.ids and sim.step().time_s > states.time_s
    finally:
        foreign.shutdown(socket.SHUT_RDWR)  # wakes the accept() so the port is free again
        foreign.close()
    assert contacted, "the client did reach the foreign listener first"
    assert not _sumo_children()


# ---- bad input --------------------------------------------------------------------------------


def _copy_base(tmp_path: Path) -> Path:
    src = base_scenario().parent
    for f in src.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    return tmp_path / "convoy.sumocfg"


@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_sumocfg(tmp_path: Path, backend: str) -> None:
    with pytest.raises(ScenarioError, match="not found") as err:
        SumoProcess(tmp_path / "nope.sumocfg", backend=backend).reset(0)
    assert "nope.sumocfg" in str(err.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_malformed_xml(tmp_path: Path, backend: str) -> None:
    cfg = _copy_base(tmp_path)
    (tmp_path / "convoy.rou.xml").write_text("<routes><vehicle id='V001' ")
    problems = validate_scenario(cfg)
    assert len(problems) == 1 and "malformed XML" in problems[0]
    with pytest.raises(SumoStartError) as err:
        SumoProcess(cfg, backend=backend).reset(0)
    assert "convoy" in str(err.value)
    assert _sumo_children() == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_scenario_without_ego(tmp_path: Path, backend: str) -> None:
    cfg = _copy_base(tmp_path)
    routes = tmp_path / "convoy.rou.xml"
    routes.write_text(routes.read_text().replace('id="V001"', 'id="V099"'))
    assert any("V001 is not defined" in p for p in validate_scenario(cfg))
    with SumoProcess(cfg, backend=backend) as sim, pytest.raises(ScenarioError) as err:
        sim.reset(0)
    assert str(cfg) in str(err.value) and EGO_ID in str(err.value)


def test_ego_departing_late(tmp_path: Path) -> None:
    cfg = _copy_base(tmp_path)
    routes = tmp_path / "convoy.rou.xml"
    text = routes.read_text().replace('id="V001" type="driver" route="convoy_route" depart="0"',
                                      'id="V001" type="driver" route="convoy_route" depart="3"')
    routes.write_text(text)
    assert any("must depart at 0" in p for p in validate_scenario(cfg))
    with SumoProcess(cfg) as sim, pytest.raises(ScenarioError, match="V001"):
        sim.reset(0)


def test_sumo_binary_missing(tmp_path: Path) -> None:
    with pytest.raises(SumoNotFoundError, match="fix"):
        SumoProcess(base_scenario(), sumo_bin=tmp_path / "sumo").reset(0)
    with pytest.raises(SumoNotFoundError):
        SumoProcess(base_scenario(), backend="traci", sumo_bin=tmp_path / "sumo").reset(0)


def test_validate_reports_every_problem_at_once(tmp_path: Path) -> None:
    cfg = _copy_base(tmp_path)
    (tmp_path / "convoy.net.xml").unlink()
    (tmp_path / "convoy.rou.xml").write_text("<routes>")
    problems = validate_scenario(cfg)
    assert len(problems) == 2
    assert any("net-file is missing" in p for p in problems)
    assert any("malformed" in p for p in problems)


def test_valid_scenario_has_no_problems() -> None:
    assert validate_scenario(base_scenario()) == []


def test_validate_many_with_one_sumo(tmp_path: Path) -> None:
    from roadsense.sim import validate_scenarios

    good = base_scenario()
    broken_dir = tmp_path / "broken"
    broken_dir.mkdir()
    bad = _copy_base(broken_dir)
    (broken_dir / "convoy.rou.xml").write_text(
        (broken_dir / "convoy.rou.xml").read_text().replace('edges="road"', 'edges="nowhere"'))
    found = validate_scenarios([good, bad, good])
    assert found[0] == [] and found[2] == []
    assert len(found[1]) == 1 and "cannot load" in found[1][0] and str(bad) in found[1][0]
    assert validate_scenario(bad) and "cannot load" in validate_scenario(bad)[0]
    assert _sumo_children() == []
