"""`ConvoyEnv`: brake early on V2V messages when a car far ahead brakes hard."""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from roadsense import EGO_ID, STEP_LENGTH_S
from roadsense.comms import EspNowEmulator, load_params, params_version
from roadsense.comms.sensors import NormalBlocks, SensorErrors
from roadsense.envs.config import EnvConfig
from roadsense.envs.hazards import (
    SPEED_MODE_DEFAULT,
    SPEED_MODE_NO_DECEL_CAP,
    HazardController,
    draw_plan,
    validate_plan,
)
from roadsense.envs.observation import (
    EGO_DIM,
    PEER_DIM,
    PEER_INDEX,
    PEER_SCALE,
    AccelBaseline,
    ego_features,
    holds_warning,
    peer_rows,
    warning_urgency,
)
from roadsense.envs.reward import RewardTracker
from roadsense.errors import ConfigError
from roadsense.seeding import seeds_from_rng
from roadsense.sim import SumoProcess

log = logging.getLogger(__name__)

RADIO_ID = re.compile(r"^V\d{3}$")
"""Vehicles with a V2V radio; any other id is background traffic (an obstacle, not a peer)."""

WARNING_HOLD_S = 1.0
"""`hazard_response` pays for braking while the ego's view holds an urgent warning (a peer
ahead reporting hard braking that asks the ego for `EnvConfig.urgent_warning_mps2` or more)
and for this long after the last one: messages come at 10 Hz and
get lost, and `v2v_rule` holds its brake as long. Paying for the whole hazard instead teaches
braking on other cues of hazard episodes (a calm peer far to the side; docs/experiments.md)."""
_ACC = PEER_INDEX["accel"]
_INV_ACC_SCALE = 1.0 / PEER_SCALE[_ACC]
_EGO_SOURCE = ("ego",)
"""The ego IMU's key in the `AccelBaseline` (sender ids match `RADIO_ID`, so never clash)."""
_NOISE_BLOCK = 256  # steps of the ego's sensor noise drawn at once
_MIN_OF = np.fmin.reduce  # NaN-ignoring: a prefilter must not hide a hard row beside a NaN


def _step_of(time_s: float) -> int:
    """The simulation step index of a simulation time."""
    return round(time_s / STEP_LENGTH_S)


class ConvoyEnv(gym.Env):
    """The last car of a convoy, its human driver, and the V2V messages it hears.

    ## Description
    The ego `V001` drives at the back of a convoy on a SUMO road. A human-driver model (Krauss,
    with a reaction interval of 0.5-1.5 s and a braking reserve of only 4.5 m/s^2) drives it and
    reacts to its direct leader only. During an episode a car ahead, possibly several cars ahead,
    may brake hard; the chain reaction can reach the ego before its driver reacts. The agent reads
    the ESP-NOW messages the ego currently holds and may add braking on top of the driver.
    Collisions are real SUMO collisions (`--collision.action warn`, no minGap shortcut).

    ## Action
    `Box(0, 1, (1,))`: brake command times `max_brake_mps2` (8 m/s^2). At or below
    `brake_threshold` (0.05) the driver model drives; above it the agent's braking overrides it
    (SUMO still applies the driver's own braking when the driver wants more). Control returns to
    the driver as soon as the command drops: the driver decides at once, then keeps its own
    reaction schedule (an agent brake never delays the driver's next decision). No hidden rules.

    ## Observation
    `Dict(ego=Box(2,), peers=Sequence(Box(7,), stack=True))`: see
    `roadsense.envs.observation` for the feature table (units and scales). `peers` holds one row
    per peer message the ego currently holds (0 to any number), in no particular order, never
    padded; stale messages (> 500 ms) are gone.

    ## Reward
    Sum of terms (weights in `RewardWeights`, every term in `info["reward_terms"]`; table in
    `roadsense.envs.reward`): collision (terminal), unsafe time-to-collision, comfort
    (deceleration, jerk), braking with no reason, and a training-time shaping term for braking
    while a hazard is under way and its message has reached the ego.

    ## Starting state
    A scenario from the `ScenarioManager` (training: drawn from the env's RNG; evaluation: given
    in `options`), SUMO reloaded in place with a seed from the env's RNG, 1.5 s of warm-up in
    which every car gets its own driver phase, then the first observation.

    ## Episode end
    Terminated: SUMO reports a collision involving the ego. Truncated: the time limit
    (`episode_s`), or the ego leaves the road. Collisions between other cars go in `info`.

    ## Arguments
    `scenarios`: a `ScenarioManager`, a dataset folder or `s3://` URI, a `.sumocfg`, or None (the
    built-in base convoy). `config`: an `EnvConfig` or dict. `worker_index`/`vector_index`: the
    owner's identity (TCP ports when the traci backend is used); `identity` is the same as the
    dict the RLlib vector env passes (`{worker_index, vector_index, purpose}`).

    `reset(options=...)` takes `scenario_id`, `hazard` (a plan dict or None) and `radio` (e.g.
    `{"loss_rate": 0.3}`) to replay a fixed evaluation episode.
    """

    metadata = {"render_modes": []}

    def __init__(self, scenarios: Any = None, config: EnvConfig | dict | None = None, *,
                 worker_index: int = 0, vector_index: int = 0,
                 identity: dict[str, Any] | None = None) -> None:
        self.config = config if isinstance(config, EnvConfig) else EnvConfig.from_dict(config)
        self._scenario_source = scenarios
        self._manager: Any = None
        if identity:  # from the RLlib vector env: evaluation runners get their own port range
            worker_index = int(identity.get("worker_index", 0))
            vector_index = int(identity.get("vector_index", 0))
            if identity.get("purpose") == "eval":
                worker_index += 10_000
        self.worker_index, self.vector_index = worker_index, vector_index
        self.observation_space = gym.spaces.Dict({
            "ego": gym.spaces.Box(-np.inf, np.inf, (EGO_DIM,), np.float32),
            "peers": gym.spaces.Sequence(
                gym.spaces.Box(-np.inf, np.inf, (PEER_DIM,), np.float32), stack=True),
        })
        self.action_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
        self._params = load_params(self.config.emulator_params)
        self.emulator_params_version = params_version(self._params)
        self._emulator = EspNowEmulator(self._params, relay_hops=self.config.relay_hops)
        self._errors = SensorErrors(self._params)
        self._baseline = AccelBaseline()
        self._sim: SumoProcess | None = None
        self._episode_steps = round(self.config.episode_s / STEP_LENGTH_S)
        n = self._params.noise_std
        self._noise_std = np.array([n["position_std_m"], n["position_std_m"], n["speed_std_mps"],
                                    n["accel_std_mps2"], n["heading_std_deg"]])

    # ---- scenarios ---------------------------------------------------------------------------

    @property
    def scenarios(self) -> Any:
        """The ScenarioManager (resolved on first use: constructing the env does no I/O)."""
        if self._manager is None:
            from roadsense.data import ScenarioManager

            src = self._scenario_source
            if isinstance(src, ScenarioManager):
                self._manager = src
            elif src is None:
                from roadsense.sim import base_scenario

                self._manager = ScenarioManager.single(base_scenario())
            elif str(src).endswith(".sumocfg"):
                self._manager = ScenarioManager.single(src)
            else:
                self._manager = ScenarioManager.from_dataset(src)
        return self._manager

    # ---- gymnasium API -----------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        unknown = set(options) - {"scenario_id", "hazard", "radio"}
        if unknown:
            raise ConfigError(f"unknown reset options {sorted(unknown)}",
                              fix="use scenario_id, hazard, radio")
        cfg = self.config
        seeds = seeds_from_rng(self.np_random)
        self.seeds = seeds
        if "scenario_id" in options:
            scenario = self.scenarios.get(options["scenario_id"])
        else:
            scenario = self.scenarios.pick(np.random.default_rng(seeds.scenario))
        self.scenario = scenario
        if self._sim is None:
            backend = cfg.sumo_backend
            if backend == "auto":
                backend = "libsumo" if self.vector_index == 0 else "traci"
            self._sim = SumoProcess(scenario.sumocfg, backend=backend,
                                    worker_index=self.worker_index,
                                    vector_index=self.vector_index)
        sim = self._sim
        states = sim.reset(seeds.sumo, scenario.sumocfg)
        hazard_rng = np.random.default_rng(seeds.hazards)
        # the ego's own sensor noise (GPS x, y, speed, accel, heading), one draw per step
        self._sensor_noise = NormalBlocks(np.random.default_rng(seeds.domain),
                                          self._noise_std.shape, self._noise_std,
                                          block=_NOISE_BLOCK)

        # Drivers: the ego's small braking reserve, every convoy car in its lane, and each car's
        # reaction phase reset at its own random warm-up step (cars inserted together would
        # otherwise react in lockstep).
        radio_ids = [v for v in states.ids if RADIO_ID.match(v)]
        for vid in radio_ids:
            sim.set_lane_change_mode(vid, 0)
        sim.set_vehicle_params(EGO_ID, emergency_decel=cfg.ego_emergency_decel_mps2)
        warmup = cfg.warmup_steps
        phase_at = {vid: int(hazard_rng.integers(0, warmup)) for vid in states.ids}
        asl = {vid: sim.vehicle_param(vid, "action_step_length") for vid in states.ids}
        self._ego_asl_steps = max(1, round(asl[EGO_ID] / STEP_LENGTH_S))
        self._ego_phase_step = _step_of(states.time_s)
        time_s, present = states.time_s, states.ids
        for k in range(warmup):
            for vid, at in phase_at.items():
                if at == k and vid in present:
                    sim.set_action_step_length(vid, asl[vid], True)
                    if vid == EGO_ID:  # the ego's driver acts at this step and every asl after
                        self._ego_phase_step = _step_of(time_s)
            if k < warmup - 1:  # only which cars are there matters until the last step
                time_s, present = sim.advance()
            else:
                states = sim.step()
        if EGO_ID not in states:
            raise ConfigError(f"ego {EGO_ID} left the road during warm-up",
                              path=scenario.sumocfg, fix="give the scenario a longer road")
        self._t0 = states.time_s

        # Hazard: which car, drawn among the cars ahead on the ego's lane.
        ahead = self._cars_ahead(states)
        if "hazard" in options:
            plan = None if options["hazard"] is None else validate_plan(dict(options["hazard"]))
        else:
            plan = draw_plan(hazard_rng, len(ahead), cfg.hazard)
        hazard_vid = None
        if plan is not None:
            if plan["rank"] > len(ahead):
                raise ConfigError(f"hazard rank {plan['rank']} but only {len(ahead)} cars ahead "
                                  f"in scenario {scenario.id}", fix="use a rank within range")
            hazard_vid = ahead[plan["rank"] - 1]
        self._hazard = HazardController(plan, hazard_vid)

        # Radio: every radio car sends, only the ego listens (the policy's view).
        radio = dict(options.get("radio") or {})
        self._radio_ids = radio_ids
        self._radio_info = self._emulator.reset(
            np.random.default_rng(seeds.radio), radio_ids, receivers=[EGO_ID],
            domain_randomization=cfg.domain_randomization and not radio, overrides=radio or None)
        # Persistent sensor errors of every radio car (the ego's own sensors included), from a
        # stream of their own so the radio's draws stay as they are.
        sensor_levels = self._errors.reset(
            np.random.default_rng(np.random.SeedSequence(seeds.domain, spawn_key=(1,))),
            len(radio_ids), domain_randomization=cfg.domain_randomization)
        self._err_slot = {v: i for i, v in enumerate(radio_ids)}
        self._ego_err = self._err_slot[EGO_ID] if EGO_ID in self._err_slot else None
        self._baseline.reset()
        # the least hard accel row that `holds_warning` or `_note_warnings` counts as hard
        d = self.config.hazard_msg_decel_mps2
        self._hard_report = max(-d / PEER_SCALE[_ACC], -d * _INV_ACC_SCALE)
        self._last_ids: list[str] | None = None
        self._prev_angle = np.zeros(0)
        self._heading_err = 0.0

        self._overriding = False
        self._warning_in_view_s = -math.inf
        self._driver_resync_step: int | None = None
        self._steps = 0
        self._sumo_s = 0.0
        self._rewards = RewardTracker(cfg.reward, cfg.max_brake_mps2)
        self._gt = {"min_gap_m": math.inf, "min_ttc_s": math.inf, "hazard_msg_rx_s": None,
                    "warning_rx_s": None,
                    "first_brake_s": None, "brake_steps": 0, "peak_decel_mps2": 0.0,
                    "brake_dv_mps": 0.0, "other_collisions": 0}
        self._states = states
        self._episode_info = {
            "scenario_id": scenario.id,
            "hazard": plan,
            "hazard_vehicle": hazard_vid,
            "peer_count": len(radio_ids) - 1,
            "radio_loss_rate": self._radio_info["loss_scale"] * self._params.overall_loss,
            "radio": self._radio_info,
            "sensor_errors": sensor_levels.as_dict(),
            "seeds": seeds.as_dict(),
        }
        obs, peers = self._observe(states, states.index(EGO_ID))
        return obs, self._info(collision=False, peers=peers)

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool,
                                                dict[str, Any]]:
        if self._sim is None or self._states is None:
            raise RuntimeError("call reset() before step()")
        cfg, sim, states = self.config, self._sim, self._states
        if type(action) is np.ndarray and action.shape == (1,):  # what RLlib passes
            brake = float(action[0])
        else:
            brake = float(np.asarray(action, dtype=np.float64).reshape(-1)[0])
        if not math.isfinite(brake):
            raise ValueError(f"action must be finite, got {action!r}")
        brake = min(1.0, max(0.0, brake))
        ego = states.index(EGO_ID)
        t_ep = states.time_s - self._t0
        # What the action was chosen on: a warning in this view or within the hold before it.
        view_warned = t_ep - self._warning_in_view_s < WARNING_HOLD_S + 1e-6

        braking = brake > cfg.brake_threshold
        if braking:
            if not self._overriding:
                sim.set_speed_mode(EGO_ID, SPEED_MODE_NO_DECEL_CAP)
                self._overriding = True
            sim.set_speed(EGO_ID, max(0.0, states.speed[ego]
                                      - brake * cfg.max_brake_mps2 * STEP_LENGTH_S))
            if self._gt["first_brake_s"] is None:
                self._gt["first_brake_s"] = round(t_ep, 3)
            self._gt["brake_steps"] += 1
            decel = brake * cfg.max_brake_mps2
            self._gt["peak_decel_mps2"] = max(self._gt["peak_decel_mps2"], decel)
            self._gt["brake_dv_mps"] += decel * STEP_LENGTH_S
        elif self._overriding:
            self._hand_back(states.time_s)
        if self._driver_resync_step is not None and _step_of(states.time_s) >= \
                self._driver_resync_step:
            sim.set_action_step_length(EGO_ID, self._ego_asl_steps * STEP_LENGTH_S, True)
            self._driver_resync_step = None

        hz = self._hazard
        if hz.vehicle_id is not None:
            hv = hz.vehicle_id
            hz.update(sim, t_ep, float(states.speed[states.index(hv)]) if hv in states else None)

        t_sim = time.perf_counter()
        states = sim.step()
        self._sumo_s += time.perf_counter() - t_sim
        self._states = states
        self._steps += 1
        t_ep = states.time_s - self._t0

        ego_hit = False
        for c in sim.collisions:
            if EGO_ID in (c.collider, c.victim):
                ego_hit = True
            else:
                self._gt["other_collisions"] += 1
        if EGO_ID not in states:  # left the road: nothing more to observe
            obs = {"ego": ego_features(0.0, 0.0),
                   "peers": np.zeros((0, PEER_DIM), np.float32)}
            return obs, 0.0, False, True, self._info(collision=False, peers=0)

        ego = states.index(EGO_ID)
        obs, peers = self._observe(states, ego)
        ttc, gap = self._ttc(states, ego)
        self._gt["min_gap_m"] = min(self._gt["min_gap_m"], gap)
        self._gt["min_ttc_s"] = min(self._gt["min_ttc_s"], ttc)
        since_resolved = math.inf if hz.resolved_at_s is None else t_ep - hz.resolved_at_s
        reason = hz.active or since_resolved < 5.0
        warned = (hz.active or since_resolved < 2.0) and view_warned
        reward = self._rewards.step(brake=brake if braking else 0.0, ttc_s=ttc,
                                    collision=ego_hit, justified=reason, warned=warned)
        truncated = self._steps >= self._episode_steps and not ego_hit
        return obs, reward, ego_hit, truncated, self._info(collision=ego_hit, peers=peers)

    def _hand_back(self, time_s: float) -> None:
        """Give the ego back to its driver without moving the driver's reaction schedule.

        The driver decides at once (resetting the action offset; without that the agent's
        braking would go on until the driver's next decision), then at the points of the
        schedule set at warm-up: a shortened interval up to the next scheduled point, where
        `step` restores the driver's own interval. Restarting the schedule at the hand-back
        would put the driver's next decision a full interval (0.5-1.5 s) after any brake,
        however short, so that a one-step brake on a hazard message causes collisions and PPO
        learns that braking on a hazard costs (docs/experiments.md).
        """
        sim, now = self._sim, _step_of(time_s)
        sim.set_speed(EGO_ID, -1)
        sim.set_speed_mode(EGO_ID, SPEED_MODE_DEFAULT)
        period = self._ego_asl_steps
        to_next = -(now - self._ego_phase_step) % period
        if to_next == 0:  # a scheduled decision anyway
            sim.set_action_step_length(EGO_ID, period * STEP_LENGTH_S, True)
            self._driver_resync_step = None
        else:
            sim.set_action_step_length(EGO_ID, to_next * STEP_LENGTH_S, True)
            self._driver_resync_step = now + to_next
        self._overriding = False

    @property
    def sumo_step_ms(self) -> float:
        """Mean wall time of a SUMO step this episode (kept out of `info`, which must be
        identical for identical seeds)."""
        return 1000.0 * self._sumo_s / max(1, self._steps)

    @property
    def sumo_pid(self) -> int | None:
        """PID of this env's SUMO child (traci backend); None on libsumo or before a reset."""
        return self._sim.pid if self._sim is not None else None

    def set_reward_weights(self, **weights: float) -> None:
        """Change reward weights (fields of `RewardWeights`) from the next episode on: one
        episode is scored with one set. The training's reward schedule calls it between
        iterations (see `roadsense.rllib.env_runner`)."""
        known = {f.name for f in dataclasses.fields(self.config.reward)}
        unknown = sorted(set(weights) - known)
        if unknown:
            raise ConfigError(f"unknown reward weights {unknown}",
                              fix=f"use some of {sorted(known)}")
        reward = dataclasses.replace(self.config.reward,
                                     **{k: float(v) for k, v in weights.items()})
        self.config = dataclasses.replace(self.config, reward=reward)

    def close(self) -> None:
        if self._sim is not None:
            self._sim.close()
            self._sim = None

    # ---- internals ---------------------------------------------------------------------------

    def _cars_ahead(self, states: Any) -> list[str]:
        """Ids ahead of the ego on its lane, nearest first."""
        ego = states.index(EGO_ID)
        lane, pos = states.lane_index[ego], states.route_pos_m[ego]
        ahead = [(states.route_pos_m[i], vid) for i, vid in enumerate(states.ids)
                 if states.lane_index[i] == lane and states.route_pos_m[i] > pos]
        return [vid for _, vid in sorted(ahead)]

    def _ttc(self, states: Any, ego: int) -> tuple[float, float]:
        """(time-to-collision, bumper gap) of the ego (index `ego` in `states`) to its leader;
        inf when not closing."""
        gap = states.leader_gap(ego)
        leader = states.leader_id[ego]
        if not leader or gap != gap:
            return math.inf, math.inf
        closing = float(states.speed[ego] - states.speed[states.index(leader)])
        return (gap / closing if closing > 1e-6 else math.inf), gap

    def _observe(self, states: Any, ego: int) -> tuple[dict[str, np.ndarray], int]:
        """The observation from `states` (`ego`: the ego's index in them) and how many peers
        it holds; advances the radio and the sensor errors by one step."""
        ids = states.ids
        if ids != self._last_ids:  # vehicles came or went: rebuild the radio index
            self._last_ids = ids
            self._radio_idx = np.array([i for i, v in enumerate(ids) if RADIO_ID.match(v)],
                                       dtype=np.intp)
            self._all_radio = len(self._radio_idx) == len(ids)
            self._radio_now = [ids[i] for i in self._radio_idx]
            self._err_idx = np.array([self._err_slot[v] for v in self._radio_now], np.intp)
            # every radio car in view, in reset's order: the errors need no gather
            self._err_all = bool(np.array_equal(self._err_idx, np.arange(len(self._err_slot))))
            self._prev_angle = states.angle_deg[self._radio_idx]
            # the constant sensor biases (accel, heading) of the cars in view, in their order
            self._bias_now = np.stack((self._errors.accel_bias[self._err_idx],
                                       self._errors.heading_bias_deg[self._err_idx]))
        kin = states.kinematics  # x, y, speed, accel, angle
        if not self._all_radio:
            kin = kin[:, self._radio_idx]
        angle = kin[4]
        yaw = np.radians((angle - self._prev_angle + 180.0) % 360.0 - 180.0) / STEP_LENGTH_S
        self._prev_angle = angle
        now = states.time_s
        # What each sender's GPS/IMU estimates: the true state plus its persistent errors
        # (the radio adds the per-message noise); the link distances use the true positions.
        # Written straight into the emulator's sample layout (`EspNowEmulator.step_sampled`).
        err = self._errors
        err.advance(STEP_LENGTH_S)
        gps = err.gps_error if self._err_all else err.gps_error[:, self._err_idx]
        sample = np.empty((8, kin.shape[1]))
        np.add(kin[:2], gps, out=sample[:2])
        sample[2] = kin[2]
        np.add(kin[3:], self._bias_now, out=sample[3:5])
        np.negative(yaw, out=sample[5])
        sample[6:] = kin[:2]
        self._emulator.step_sampled(now, self._radio_now, sample)
        msgs = self._emulator.view(EGO_ID)

        # the ego's own sensors: GPS position and heading, speed, acceleration, all noisy
        noise = self._sensor_noise.next()  # GPS x, y, speed, accel, heading
        e = self._ego_err
        if e is not None:
            noise[0] += err.gps_error[0, e]
            noise[1] += err.gps_error[1, e]
            noise[3] += err.accel_bias[e]
        # A car fuses its GPS heading over time: low-pass the heading error (alpha 0.1 leaves
        # ~1.1 deg of the 4.7 deg per-fix noise), else lateral offsets of far peers jitter by
        # metres from the ego's own heading alone.
        self._heading_err += 0.1 * (noise[4] - self._heading_err)
        heading_deg = states.angle_deg[ego] + (err.heading_bias_deg[e] if e is not None else 0.0)
        heading = math.radians(90.0 - heading_deg + self._heading_err)
        speed = float(states.speed[ego] + noise[2])
        peers = peer_rows(states.x[ego] + noise[0], states.y[ego] + noise[1], heading, speed,
                          msgs, now, self._baseline)
        # No hazard, no shaping: skip the checks; no report as hard as a warning (most steps):
        # nothing for them to find.
        if self._hazard.vehicle_id is not None and len(peers) and \
                _MIN_OF(peers[:, _ACC]) <= self._hard_report:
            cfg = self.config
            if holds_warning(peers, cfg.hazard_msg_decel_mps2) and warning_urgency(
                    ego_features(speed, 0.0), peers, cfg.hazard_msg_decel_mps2
            ) >= cfg.urgent_warning_mps2:
                self._warning_in_view_s = now - self._t0
            if self._gt["hazard_msg_rx_s"] is None or self._gt["warning_rx_s"] is None:
                self._note_warnings(msgs, peers, now)
        ego_accel = self._baseline.relative_one(_EGO_SOURCE, now,
                                                float(states.accel[ego] + noise[3]))
        obs = {"ego": ego_features(speed, ego_accel), "peers": peers}
        return obs, len(peers)

    def _note_warnings(self, msgs: Any, peers: np.ndarray, now: float) -> None:
        """When the ego first holds a message reporting hard braking (in the observation's
        terms: against the sender's running mean): from the hazard car (`hazard_msg_rx_s`, the
        evaluation's reaction-time start) and, once the hazard has begun, from any car
        (`warning_rx_s`: the policy cannot tell senders apart, and when the hazard car's own
        messages are lost the cars braking behind it are the warning)."""
        hard = peers[:, _ACC] <= -self.config.hazard_msg_decel_mps2 * _INV_ACC_SCALE
        if not hard.any():
            return
        t = round(now - self._t0, 3)
        hz, gt = self._hazard, self._gt
        if gt["warning_rx_s"] is None and (hz.active or hz.resolved_at_s is not None):
            gt["warning_rx_s"] = t
        if gt["hazard_msg_rx_s"] is None and (hard & (msgs.sender == hz.vehicle_id)).any():
            gt["hazard_msg_rx_s"] = t

    def _info(self, *, collision: bool, peers: int) -> dict[str, Any]:
        gt, hz = self._gt, self._hazard
        return {  # the per-episode part is built once, in reset
            **self._episode_info,
            "collision": collision,
            "hazard_phase": hz.phase,
            "min_gap_m": gt["min_gap_m"],
            "min_ttc_s": gt["min_ttc_s"],
            "hazard_msg_rx_s": gt["hazard_msg_rx_s"],
            "warning_rx_s": gt["warning_rx_s"],
            "first_brake_s": gt["first_brake_s"],
            "false_brake": hz.plan is None and gt["first_brake_s"] is not None,
            "brake_steps": gt["brake_steps"],
            "peak_decel_mps2": gt["peak_decel_mps2"],
            "brake_dv_mps": gt["brake_dv_mps"],
            "other_collisions": gt["other_collisions"],
            "peers_held": peers,
            "reward_terms": dict(self._rewards.terms),
            "time_s": round(self._states.time_s - self._t0, 3),
        }


def make_env(env_config: dict[str, Any] | None = None) -> ConvoyEnv:
    """Build from one flat dict (the RLlib/Tune style): `scenarios` plus `EnvConfig` fields."""
    cfg = dict(env_config or {})
    scenarios = cfg.pop("scenarios", None)
    worker = int(cfg.pop("worker_index", 0))
    vector = int(cfg.pop("vector_index", 0))
    if isinstance(scenarios, Path):
        scenarios = str(scenarios)
    return ConvoyEnv(scenarios, cfg, worker_index=worker, vector_index=vector)
