"""`SumoProcess`: one SUMO simulation, owned for its whole life.

Lifecycle: construct (declares only) -> `reset(seed)` (first call starts SUMO, later calls
reload it in place with `load`, ~3 ms, never a restart) -> `step()` per 0.1 s -> `close()`.

Two backends behind one interface:
- ``libsumo`` (default): SUMO inside this process, ~100x faster than TCP; one per process.
- ``traci``: SUMO as a child process over TCP, for sumo-gui and for several simulations in
  one process. The child is tied to its parent (PR_SET_PDEATHSIG) and killed on every failure
  path, so it cannot outlive the process that started it.

State reads: over TCP, subscriptions (every vehicle's state comes back with the step's own
reply); in process (libsumo), direct getters, which cost less than subscription result dicts
(benchmarks/sim.py).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import math
import operator
import os
import signal
import subprocess
import tempfile
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import traci.constants as tc

from roadsense import EGO_ID, STEP_LENGTH_S
from roadsense.errors import ScenarioError, SumoCrashedError, SumoStartError
from roadsense.sim.binary import check_traci, import_libsumo, sumo_binary

log = logging.getLogger(__name__)

# Options that make collisions real and observable and episodes reproducible
# (shared/reference/sumo_collisions.md): report collisions but keep the cars as wrecks,
# no early "collision" at minGap, no teleports, ballistic update set explicitly.
SIM_OPTIONS: tuple[str, ...] = (
    "--step-length", str(STEP_LENGTH_S),
    "--collision.action", "warn",
    "--collision.mingap-factor", "0",
    "--collision.stoptime", "1000000",
    "--time-to-teleport", "-1",
    "--step-method.ballistic", "true",
    "--no-step-log", "true",
    "--no-warnings", "true",
    "--duration-log.disable", "true",
)

_VEHICLE_VARS = (
    tc.VAR_POSITION,
    tc.VAR_SPEED,
    tc.VAR_ACCELERATION,
    tc.VAR_ANGLE,
    tc.VAR_LANE_INDEX,
    tc.VAR_DISTANCE,
    tc.VAR_LEADER,
)
LEADER_LOOKAHEAD_M = 250.0
_SIM_VARS = (
    tc.VAR_TIME,
    tc.VAR_DEPARTED_VEHICLES_IDS,
    tc.VAR_COLLIDING_VEHICLES_IDS,
)
_ROW = operator.itemgetter(*_VEHICLE_VARS)  # position, speed, accel, angle, lane, odometer, leader
_NO_LEADER = ("", -1.0)  # traci reports a missing leader as None, libsumo as ("", -1)
_PORT_BASE, _PORT_SPAN = 10000, 22000
"""SUMO's TCP ports: 10000-31999, below Linux's ephemeral range (32768-60999), where the
sockets of other programs (Ray, an S3 test server) come and go."""
_HANDSHAKE_S = 5.0
"""How long the first reply (the version) may take before the listener is not our SUMO."""
_CONNECT_RETRIES = 400  # x 10 ms
_LIBSUMO_LOCK = threading.Lock()
_libsumo_owner: SumoProcess | None = None


@dataclass(frozen=True)
class Collision:
    """One collision as SUMO reports it (reported once, on the step it happens)."""

    collider: str
    victim: str
    kind: str
    time_s: float
    collider_speed: float
    victim_speed: float


class VehicleStates:
    """Every vehicle's state after one step, as aligned arrays (index them with `index(id)`).

    `route_pos_m` is the distance along the (shared) route: depart position plus odometer, so
    the cars of a convoy are ordered by it even across edges and curves. `leader_gap_m` is
    bumper to bumper (SUMO's leader gap plus the follower's minGap); NaN when there is no leader
    within the lookahead.
    """

    __slots__ = ("time_s", "ids", "x", "y", "speed", "accel", "angle_deg", "leader_id",
                 "_slots", "_m", "_static", "_lane_index", "_route_pos_m", "_leader_gap_m")

    def __init__(self, time_s: float, ids: list[str], rows: list[tuple[float, ...]],
                 leader_id: list[str], static: tuple[np.ndarray, np.ndarray],
                 slots: dict[str, int] | None = None) -> None:
        """`rows`: one (x, y, speed, accel, angle, lane index, odometer, SUMO leader gap) per
        vehicle; `static`: (depart position, minGap) arrays aligned with `ids`; `slots`: id ->
        index for `ids`, when the caller already has it (built on first `index` otherwise)."""
        m = np.array(rows, dtype=np.float64).reshape(len(ids), 8).T
        self.time_s = time_s
        self.ids = ids
        self.x, self.y, self.speed, self.accel, self.angle_deg = m[0], m[1], m[2], m[3], m[4]
        self.leader_id = leader_id
        self._slots = slots
        # lane, route position and leader gap are computed when first read: an env step reads
        # the kinematics of every car but these of at most the ego
        self._m, self._static = m, static
        self._lane_index = self._route_pos_m = self._leader_gap_m = None

    @property
    def lane_index(self) -> np.ndarray:
        if self._lane_index is None:
            self._lane_index = self._m[5].astype(np.int64)
        return self._lane_index

    @property
    def route_pos_m(self) -> np.ndarray:
        if self._route_pos_m is None:
            self._route_pos_m = self._static[0] + self._m[6]
        return self._route_pos_m

    @property
    def leader_gap_m(self) -> np.ndarray:
        if self._leader_gap_m is None:
            gaps = self._m[7]
            self._leader_gap_m = np.where(gaps < 0, np.nan, gaps + self._static[1])
        return self._leader_gap_m

    @property
    def kinematics(self) -> np.ndarray:
        """Rows `x`, `y`, `speed`, `accel`, `angle_deg` as one (5, n) array (the same values):
        a consumer that transforms them together indexes the block once."""
        return self._m[:5]

    def leader_gap(self, i: int) -> float:
        """`leader_gap_m[i]` alone (the env reads the ego's every step)."""
        gap = float(self._m[7, i])
        return math.nan if gap < 0 else gap + float(self._static[1][i])

    def index(self, vehicle_id: str) -> int:
        if self._slots is None:
            self._slots = {vid: i for i, vid in enumerate(self.ids)}
        return self._slots[vehicle_id]

    def __contains__(self, vehicle_id: str) -> bool:
        return vehicle_id in self.ids

    def __len__(self) -> int:
        return len(self.ids)

    def as_dict(self) -> dict[str, Any]:
        """Plain, comparable values (for tests and logs); a missing gap is None, not NaN."""
        return {"time_s": self.time_s, "ids": self.ids, "x": self.x.tolist(),
                "y": self.y.tolist(), "speed": self.speed.tolist(), "accel": self.accel.tolist(),
                "angle_deg": self.angle_deg.tolist(), "lane_index": self.lane_index.tolist(),
                "route_pos_m": self.route_pos_m.tolist(),
                "leader_gap_m": [None if g != g else g for g in self.leader_gap_m.tolist()],
                "leader_id": self.leader_id}


_PORT_ATTEMPTS = 5  # ports tried per SUMO start (a bind failure moves to the next)
_PORT_VECTORS = 64  # vector indices laid out apart before they wrap


def derive_port(worker_index: int, vector_index: int, attempt: int) -> int:
    """A TCP port from the worker identity (and this process), not from a racy free-port probe.

    Within one process, distinct (worker, vector, attempt) get distinct ports (up to 64 vector
    indices and worker indices less than 93 apart; beyond that the span wraps, and evaluation's
    +10,000 offset still lands apart). The process only sets where its block of ports starts,
    so another process (another run on this machine) may overlap it: a bind failure (someone
    else's socket) is handled by retrying with the next attempt number.
    """
    start = zlib.crc32(str(os.getpid()).encode()) % _PORT_SPAN
    local = (worker_index * _PORT_VECTORS + vector_index) * _PORT_ATTEMPTS + attempt
    return _PORT_BASE + (start + local) % _PORT_SPAN


def _die_with_parent(parent_pid: int) -> None:
    """preexec_fn for the SUMO child: SIGKILL it when the parent dies (Linux), and close the
    race where the parent died between fork and prctl."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    if os.getppid() != parent_pid:
        os._exit(1)


class SumoProcess:
    """One SUMO simulation. A context manager; `close()` is idempotent.

    Args:
        sumocfg: the scenario to run (a later `reset` may switch to another one).
        backend: "libsumo" (default) or "traci" (TCP; needed for `gui`).
        gui: run sumo-gui (implies traci).
        worker_index, vector_index: identity of the owner, used for the TCP port and label.
        extra_args: more SUMO options appended to the standard ones.
        sumo_bin: the SUMO executable (default: the wheel's real binary).
        ego_wait_steps: steps to wait for `V001` after a reset before giving up.
    """

    def __init__(
        self,
        sumocfg: str | Path,
        *,
        backend: str = "libsumo",
        gui: bool = False,
        worker_index: int = 0,
        vector_index: int = 0,
        extra_args: Sequence[str] = (),
        sumo_bin: str | Path | None = None,
        ego_id: str = EGO_ID,
        ego_wait_steps: int = 10,
    ) -> None:
        if gui:
            backend = "traci"
        if backend not in ("libsumo", "traci"):
            raise ValueError(f"backend must be 'libsumo' or 'traci', got {backend!r}")
        self.sumocfg = Path(sumocfg)
        self.backend = backend
        self.gui = gui
        self.worker_index = worker_index
        self.vector_index = vector_index
        self.extra_args = tuple(extra_args)
        self._sumo_bin = Path(sumo_bin) if sumo_bin else None
        self.ego_id = ego_id
        self.ego_wait_steps = ego_wait_steps
        self.label = f"rs-w{worker_index}-v{vector_index}-{id(self):x}"
        self.port: int | None = None
        self.seed: int | None = None
        self._api: Any = None  # the libsumo module or a traci Connection
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr_path: str | None = None
        self._min_gap: dict[str, float] = {}
        self._depart_pos: dict[str, float] = {}
        self._seen_collisions: set[tuple[str, str, str]] = set()
        self._static_key: tuple[str, ...] | None = None
        self._static_value: tuple[np.ndarray, np.ndarray] = (np.empty(0), np.empty(0))
        self._static_slots: dict[str, int] = {}
        self._getters: tuple[Any, ...] = ()
        self._stepper: tuple[Any, Any] = (None, None)  # (advance one step, simulation results)
        self.collisions: list[Collision] = []
        self.states: VehicleStates | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._api is not None

    @property
    def pid(self) -> int | None:
        """PID of the SUMO child (traci backend) or None (libsumo runs in this process)."""
        return self._proc.pid if self._proc else None

    def _args(self, seed: int) -> list[str]:
        return ["-c", str(self.sumocfg), "--seed", str(int(seed)), *SIM_OPTIONS, *self.extra_args]

    def reset(self, seed: int, sumocfg: str | Path | None = None) -> VehicleStates:
        """Start SUMO (first call) or reload it in place with a new seed and maybe scenario.

        Returns the states after the first step, in which every t=0 car is inserted; raises
        ScenarioError naming the file if `V001` is not there at t=0.
        """
        if sumocfg is not None:
            self.sumocfg = Path(sumocfg)
        if not self.sumocfg.is_file():
            raise ScenarioError("scenario file not found", path=self.sumocfg,
                                fix="pass an existing .sumocfg (see `roadsense scenarios ls`)")
        self.seed = int(seed)
        if self._api is None:
            self._start(self._args(seed))
        else:
            self._call(lambda: self._api.load(self._args(seed)), loading=True)
        self._min_gap.clear()
        self._depart_pos.clear()
        self._static_key = None
        self._seen_collisions.clear()
        try:
            self._call(lambda: self._api.simulation.subscribe(_SIM_VARS))
            states = self.step()
        except SumoCrashedError as exc:  # SUMO quit while loading: the scenario's fault
            raise SumoStartError(f"SUMO refused the scenario: {exc.message}", path=self.sumocfg,
                                 fix="run `roadsense scenarios check` on it") from exc
        waited = 1
        while self.ego_id not in states and waited < self.ego_wait_steps:
            states = self.step()
            waited += 1
        if self.ego_id not in states:
            raise ScenarioError(
                f"ego {self.ego_id} is not in the simulation after {waited} steps",
                path=self.sumocfg, fix=f"make {self.ego_id} depart at t=0 with room to insert")
        if waited > 1:
            raise ScenarioError(
                f"ego {self.ego_id} entered at t={states.time_s - STEP_LENGTH_S:.1f} s, not t=0 "
                "(its insertion was blocked)", path=self.sumocfg,
                fix="leave more than minGap + tau*speed in front of it")
        return states

    def _start(self, args: list[str]) -> None:
        if self.backend == "libsumo":
            self._start_libsumo(args)
        else:
            self._start_traci(args)
        log.debug("started SUMO (%s) for %s", self.backend, self.sumocfg)

    def _start_libsumo(self, args: list[str]) -> None:
        global _libsumo_owner
        binary = self._binary()
        libsumo = import_libsumo()
        with _LIBSUMO_LOCK:
            if _libsumo_owner is not None and _libsumo_owner is not self:
                raise SumoStartError(
                    "libsumo allows one simulation per process and one is already running "
                    f"({_libsumo_owner.sumocfg})", fix="close it first or use backend='traci'")
            try:
                libsumo.start([str(binary), *args])
            except libsumo.TraCIException as exc:
                raise SumoStartError(f"SUMO refused the scenario: {exc}", path=self.sumocfg,
                                     fix="run `roadsense scenarios check` on it") from exc
            _libsumo_owner = self
        self._api = libsumo
        self._getters = _libsumo_getters(libsumo)
        self._stepper = _libsumo_stepper(libsumo)

    def _start_traci(self, args: list[str]) -> None:
        check_traci()
        binary = self._binary("sumo-gui" if self.gui else "sumo")
        gui_args = ["--start", "true", "--quit-on-end", "true"] if self.gui else []
        last_error = ""
        for attempt in range(_PORT_ATTEMPTS):
            port = derive_port(self.worker_index, self.vector_index, attempt)
            fd, self._stderr_path = tempfile.mkstemp(prefix="roadsense-sumo-", suffix=".log")
            with os.fdopen(fd, "wb") as err:
                parent = os.getpid()
                proc = subprocess.Popen(
                    [str(binary), *args, *gui_args, "--remote-port", str(port)],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                    preexec_fn=functools.partial(_die_with_parent, parent),
                )
            try:
                conn = _connect(port, proc, self.label)
            except BaseException as exc:  # including KeyboardInterrupt: never orphan SUMO
                _kill(proc)
                last_error = self._stderr_tail() or str(exc)
                self._drop_stderr()
                if isinstance(exc, _NotOurSumo) or (
                        isinstance(exc, Exception) and "Address already in use" in last_error):
                    log.info("port %d taken (%s), retrying on another", port, last_error)
                    continue
                if isinstance(exc, Exception):
                    raise SumoStartError(f"SUMO did not start: {last_error}", path=self.sumocfg,
                                         fix="run `roadsense scenarios check` on it") from exc
                raise
            self._proc, self.port, self._api = proc, port, conn
            self._stepper = (conn.simulationStep, conn.simulation.getSubscriptionResults)
            return
        raise SumoStartError(f"no free TCP port after 5 tries: {last_error}",
                             fix="stop other SUMO servers on this machine")

    def _binary(self, name: str = "sumo") -> Path:
        if self._sumo_bin is not None and name == "sumo":
            if not self._sumo_bin.is_file():
                from roadsense.errors import SumoNotFoundError

                raise SumoNotFoundError(f"SUMO executable not found at {self._sumo_bin}",
                                        fix="install eclipse-sumo==1.28.0 or fix sumo_bin")
            return self._sumo_bin
        return sumo_binary(name)

    def close(self) -> None:
        """Stop SUMO and release everything. Safe to call any number of times."""
        global _libsumo_owner
        api, self._api = self._api, None
        self._stepper = (None, None)
        if api is not None:
            try:
                api.close()
            except Exception as exc:  # already dead: nothing more to close
                log.debug("closing SUMO: %s", exc)
            if self.backend == "libsumo":
                with _LIBSUMO_LOCK:
                    if _libsumo_owner is self:
                        _libsumo_owner = None
        if self._proc is not None:
            _kill(self._proc)
            self._proc = None
        self._drop_stderr()
        self.states = None

    def __enter__(self) -> SumoProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- stepping --------------------------------------------------------------------------

    def step(self) -> VehicleStates:
        """Advance 0.1 s; returns every vehicle's state and sets `collisions` (new this step)."""
        sim = self._advance()
        try:
            if self.backend == "libsumo":
                ids, rows, leaders = self._read_getters()
            else:
                ids, rows, leaders = self._read_subscriptions(self._api.vehicle)
        except Exception as exc:
            self._failed(exc)
        static = self._static_arrays(ids)
        self.states = VehicleStates(round(sim[tc.VAR_TIME], 6), ids, rows, leaders, static,
                                    self._static_slots)
        return self.states

    def advance(self) -> tuple[float, list[str]]:
        """`step` without reading the vehicles' states: (time, ids of the vehicles present),
        and `collisions` set. For stretches that need only which cars are there (the env's
        warm-up); `states` keeps the last read."""
        sim = self._advance()
        try:
            if self.backend == "libsumo":
                ids = list(self._getters[0]())
            else:  # the subscriptions came back with the step anyway
                ids = list(self._api.vehicle.getAllSubscriptionResults())
        except Exception as exc:
            self._failed(exc)
        return round(sim[tc.VAR_TIME], 6), ids

    def _advance(self) -> dict[int, Any]:
        """One SUMO step: new vehicles registered, `collisions` set; the simulation's
        subscription results."""
        if self._api is None:
            self._require()
        advance, results = self._stepper
        try:
            advance()
            sim = results()
            for vid in sim[tc.VAR_DEPARTED_VEHICLES_IDS]:
                self._on_departed(vid)
            self.collisions = (self._new_collisions() if sim[tc.VAR_COLLIDING_VEHICLES_IDS]
                               else [])
        except Exception as exc:
            self._failed(exc)
        return sim

    def _read_getters(self) -> tuple[list[str], list[tuple[float, ...]], list[str]]:
        # In-process libsumo: direct getters cost less than subscriptions, whose results come
        # back as a dict per vehicle (measured in benchmarks/sim.py; 22 vs 45 us per step).
        ids_of, position, leader, speed, accel, angle, lane, odometer = self._getters
        ids = list(ids_of())
        rows, leaders = [], []
        for vid in ids:
            x, y = position(vid, False)
            lead = leader(vid, LEADER_LOOKAHEAD_M) or _NO_LEADER
            rows.append((x, y, speed(vid), accel(vid), angle(vid), lane(vid), odometer(vid),
                         lead[1]))
            leaders.append(lead[0])
        return ids, rows, leaders

    @staticmethod
    def _read_subscriptions(v: Any) -> tuple[list[str], list[tuple[float, ...]], list[str]]:
        # Over TCP one call per value is a round trip each (~100x slower): subscriptions bring
        # every vehicle's state back with the step's own reply.
        results = v.getAllSubscriptionResults()
        ids = list(results)
        rows, leaders = [], []
        for r in results.values():
            (x, y), speed, accel, angle, lane, dist, lead = _ROW(r)
            lead = lead or _NO_LEADER
            rows.append((x, y, speed, accel, angle, lane, dist, lead[1]))
            leaders.append(lead[0])
        return ids, rows, leaders

    def _static_arrays(self, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(depart position, minGap) per id; cached, with the id -> index map
        (`_static_slots`), while the list of vehicles is unchanged."""
        key = tuple(ids)
        if self._static_key != key:
            self._static_key = key
            self._static_slots = {vid: i for i, vid in enumerate(ids)}
            self._static_value = (
                np.fromiter((self._depart_pos[v] for v in ids), np.float64, len(ids)),
                np.fromiter((self._min_gap[v] for v in ids), np.float64, len(ids)),
            )
        return self._static_value

    def _on_departed(self, vid: str) -> None:
        api = self._api
        if self.backend == "traci":
            api.vehicle.subscribe(vid, _VEHICLE_VARS,
                                  parameters={tc.VAR_LEADER: ("d", LEADER_LOOKAHEAD_M)})
        self._min_gap[vid] = api.vehicle.getMinGap(vid)
        self._depart_pos[vid] = api.vehicle.getLanePosition(vid)

    def _time(self) -> float:
        return round(self._call(self._api.simulation.getTime), 6)

    def _new_collisions(self) -> list[Collision]:
        new = []
        for c in self._call(self._api.simulation.getCollisions):
            key = (c.collider, c.victim, c.type)
            if key in self._seen_collisions:  # `warn` keeps reporting the same record
                continue
            self._seen_collisions.add(key)
            new.append(Collision(c.collider, c.victim, c.type, self._time(),
                                 c.colliderSpeed, c.victimSpeed))
        return new

    # ---- control (the env's only way to act on SUMO) ----------------------------------------

    def set_speed(self, vid: str, speed: float) -> None:
        """Command a speed for the next step; -1 hands control back to the driver model."""
        self._call(lambda: self._api.vehicle.setSpeed(vid, speed))

    def set_speed_mode(self, vid: str, mode: int) -> None:
        self._call(lambda: self._api.vehicle.setSpeedMode(vid, mode))

    def set_lane_change_mode(self, vid: str, mode: int) -> None:
        """SUMO's lane change mode bits; 0 keeps the car in its lane (convoy cars)."""
        self._call(lambda: self._api.vehicle.setLaneChangeMode(vid, mode))

    def set_action_step_length(self, vid: str, seconds: float, reset_phase: bool = True) -> None:
        self._call(lambda: self._api.vehicle.setActionStepLength(vid, seconds, reset_phase))

    def set_vehicle_params(self, vid: str, **params: float) -> None:
        """Set driver/vehicle parameters: tau, decel, emergency_decel, apparent_decel, accel,
        imperfection, max_speed."""
        v = self._api.vehicle
        setters = {"tau": v.setTau, "decel": v.setDecel, "emergency_decel": v.setEmergencyDecel,
                   "apparent_decel": v.setApparentDecel, "accel": v.setAccel,
                   "imperfection": v.setImperfection, "max_speed": v.setMaxSpeed}
        for name, value in params.items():
            if name not in setters:
                raise ValueError(f"unknown vehicle parameter {name!r}; one of {sorted(setters)}")
            self._call(lambda s=setters[name], val=value: s(vid, float(val)))

    def vehicle_param(self, vid: str, name: str) -> float:
        """Read one driver/vehicle parameter (rarely: not for the per-step path)."""
        v = self._api.vehicle
        getters = {"tau": v.getTau, "decel": v.getDecel, "emergency_decel": v.getEmergencyDecel,
                   "action_step_length": v.getActionStepLength, "min_gap": v.getMinGap,
                   "length": v.getLength, "max_speed": v.getMaxSpeed, "accel": v.getAccel}
        return float(self._call(lambda: getters[name](vid)))

    @property
    def step_length(self) -> float:
        return float(self._call(self._require().simulation.getDeltaT))

    # ---- internals -------------------------------------------------------------------------

    def _require(self) -> Any:
        if self._api is None:
            raise SumoCrashedError("SUMO is not running", path=self.sumocfg,
                                   fix="call reset() first (or the simulation was closed)")
        return self._api

    def _call(self, fn: Any, *, loading: bool = False) -> Any:
        """Run one SUMO call, turning a dead simulation into SumoCrashedError (and cleanup)."""
        try:
            return fn()
        except Exception as exc:
            self._failed(exc, loading=loading)

    def _failed(self, exc: Exception, *, loading: bool = False) -> NoReturn:
        if _is_traci_error(exc) and not _is_fatal(exc):
            if loading:
                raise SumoStartError(f"SUMO refused the scenario: {exc}", path=self.sumocfg,
                                     fix="run `roadsense scenarios check` on it") from exc
            raise exc
        if not _is_fatal(exc):
            raise exc
        detail = self._stderr_tail()
        self.close()
        raise SumoCrashedError(f"SUMO died: {exc}{' | ' + detail if detail else ''}",
                               path=self.sumocfg,
                               fix="the episode is lost; reset() starts a fresh SUMO") from exc

    def _stderr_tail(self) -> str:
        if not self._stderr_path:
            return ""
        try:
            lines = [ln for ln in Path(self._stderr_path).read_text(errors="replace").splitlines()
                     if ln.strip()]
        except OSError:
            return ""
        return " | ".join(lines[-3:])

    def _drop_stderr(self) -> None:
        if self._stderr_path:
            Path(self._stderr_path).unlink(missing_ok=True)
            self._stderr_path = None


def _libsumo_getters(libsumo: Any) -> tuple[Any, ...]:
    """The per-step getters (id list, position, leader, speed, acceleration, angle, lane index,
    odometer) as libsumo's compiled functions: its Python `vehicle` class wraps each in one
    more call that adds nothing for these (~40 calls per step). The wrapper's `getLeader`
    maps "no leader" to None only in legacy mode, which `_NO_LEADER` stands for anyway."""
    raw = getattr(libsumo, "_libsumo", None)
    names = ("getIDList", "getPosition", "getLeader", "getSpeed", "getAcceleration", "getAngle",
             "getLaneIndex", "getDistance")
    if raw is None or not all(hasattr(raw, f"vehicle_{n}") for n in names):
        v = libsumo.vehicle  # another build: its public getters (same values)
        return tuple(getattr(v, n) for n in names)
    return tuple(getattr(raw, f"vehicle_{n}") for n in names)


def _libsumo_stepper(libsumo: Any) -> tuple[Any, Any]:
    """(advance one step, the simulation's subscription results) as libsumo's compiled
    functions: its `simulationStep` wraps the step in a call to the step listeners, which this
    layer never adds (~1.5 us of a ~20 us step)."""
    raw = getattr(libsumo, "_libsumo", None)
    if raw is None or not all(hasattr(raw, n) for n in ("simulation_step",
                                                         "simulation_getSubscriptionResults")):
        return libsumo.simulationStep, libsumo.simulation.getSubscriptionResults
    return raw.simulation_step, raw.simulation_getSubscriptionResults


class _NotOurSumo(Exception):
    """Something else answered on the port our SUMO was to listen on."""


def _connect(port: int, proc: subprocess.Popen[bytes], label: str) -> Any:
    """Connect to a SUMO we launched, retrying every 10 ms while it starts up.

    traci.start waits a fixed 1 s before its first try and prints every retry to stdout.
    When our SUMO could not bind the port, another program may hold it: the first connection
    then reaches that program, so a version handshake (with a timeout) must succeed while our
    SUMO is still running, else `_NotOurSumo` (the caller tries another port).
    """
    from traci.connection import Connection

    for _ in range(_CONNECT_RETRIES):
        try:
            conn = Connection("localhost", port, proc, None, True, label)
        except OSError:
            if proc.poll() is not None:
                raise SumoStartError(f"SUMO exited with code {proc.returncode} before "
                                     "accepting a connection") from None
            time.sleep(0.01)
            continue
        try:
            conn._socket.settimeout(_HANDSHAKE_S)
            _, version = conn.getVersion()
            conn._socket.settimeout(None)
            if proc.poll() is None and str(version).startswith("SUMO"):
                return conn
            reason = f"version reply {version!r}, SUMO exit code {proc.returncode}"
        except Exception as exc:  # a foreign listener's reply: garbage, a hang-up or nothing
            reason = f"{type(exc).__name__}: {exc}"
        _drop_connection(conn, label)
        raise _NotOurSumo(f"port {port} answered, but not as our SUMO ({reason})")
    raise SumoStartError(f"SUMO did not accept a connection on port {port} within "
                         f"{_CONNECT_RETRIES / 100:.0f} s")


def _drop_connection(conn: Any, label: str) -> None:
    """Forget a traci connection without its CLOSE command (the peer is not our SUMO)."""
    from traci import connection

    sock, conn._socket = conn._socket, None
    if sock is not None:
        sock.close()
    if connection._connections.get(label) is conn:
        del connection._connections[label]


def _is_traci_error(exc: BaseException) -> bool:
    return type(exc).__name__ in ("TraCIException",)


def _is_fatal(exc: BaseException) -> bool:
    return type(exc).__name__ == "FatalTraCIError" or isinstance(
        exc, (ConnectionError, BrokenPipeError, EOFError, OSError))


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        log.warning("SUMO pid %d did not exit after SIGKILL", proc.pid)
