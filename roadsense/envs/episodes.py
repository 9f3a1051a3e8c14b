"""Whole episodes of one env in this process, surviving a SUMO death.

Every place that runs SUMO outside the env runners (the warm start's demonstrations, each
validation, the final evaluation, `roadsense eval`) runs its episodes through an
`EpisodeRunner`: when the env's SUMO dies (`SumoCrashedError`), the episode is dropped, logged
and handed to `on_drop` (training records it in the run manifest), the env is closed and a
fresh one is built (a fresh SUMO), and the next episode goes on. More than
`MAX_CONSECUTIVE_CRASHES` deaths in a row mean the run cannot go on: the last error propagates.

The env runners do the same for their sub-envs (`roadsense.rllib.vector_env`).

Why the traci backend here (`DRIVER_SUMO_BACKEND`): with libsumo, SUMO runs inside this
process, and its death is the death of the training driver; over traci it is a child process
that can die alone. Both backends give identical states (tests/test_sim_process.py).

Test hook: ``ROADSENSE_TEST_KILL_SUMO="place:episode:step[,...]"`` SIGKILLs the env's own SUMO
child (traci) just before step `step` of episode `episode` of the runners named `place`, once
per runner; the tests use it to kill a SUMO in a chosen place deterministically.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from roadsense.errors import ConfigError, SumoCrashedError

log = logging.getLogger(__name__)

DRIVER_SUMO_BACKEND = "traci"
"""SUMO backend of the envs the training driver runs itself (see the module docstring)."""
MAX_CONSECUTIVE_CRASHES = 3
"""SUMO deaths in a row (no episode finished between them) after which the error propagates."""
KILL_HOOK_ENV = "ROADSENSE_TEST_KILL_SUMO"


@dataclass(frozen=True)
class DroppedEpisode:
    """An episode lost to a SUMO death: where, which one, and why."""

    place: str
    """Who ran it: "warm_start", "validation", "final_eval", "eval"."""
    episode: int
    """Its index in the place's sequence (a suite's episode index; the warm start's count)."""
    seed: int | None
    scenario_id: str | None
    reason: str
    context: dict[str, Any] = field(default_factory=dict)
    """What the caller adds (suite, policy, checkpoint)."""

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(out.pop("context"))
        return out


@dataclass
class Episode:
    """One finished episode: its last info, rewards, and (when recorded) what was seen/done."""

    info: dict[str, Any]
    rewards: list[float]
    observations: list[Any] | None = None
    actions: list[Any] | None = None

    @property
    def ret(self) -> float:
        return float(sum(self.rewards))

    @property
    def steps(self) -> int:
        return len(self.rewards)


def driver_env_config(config: dict[str, Any]) -> dict[str, Any]:
    """`config` with the backend of a driver-side env: an explicit "libsumo" is kept (the
    caller accepts that a SUMO death ends the process), "auto" becomes `DRIVER_SUMO_BACKEND`."""
    out = dict(config)
    if out.get("sumo_backend", "auto") == "auto":
        out["sumo_backend"] = DRIVER_SUMO_BACKEND
    return out


def _kill_plan(place: str) -> set[tuple[int, int]]:
    """(episode, step) pairs at which `ROADSENSE_TEST_KILL_SUMO` kills this place's SUMO."""
    spec = os.environ.get(KILL_HOOK_ENV, "").strip()
    plan = set()
    for item in filter(None, (s.strip() for s in spec.split(","))):
        parts = item.split(":")
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
            raise ConfigError(f"{KILL_HOOK_ENV}={spec!r}: {item!r} is not place:episode:step",
                              fix="e.g. validation:1:20")
        if parts[0] == place:
            plan.add((int(parts[1]), int(parts[2])))
    return plan


class EpisodeRunner:
    """Runs whole episodes of envs built by `make_env`, one env at a time (see module doc).

    Args:
        make_env: builds a fresh env (called again after each SUMO death).
        place: names the runner in logs, in `DroppedEpisode` and in the test hook.
        on_drop: gets every dropped episode.
        context: added to every `DroppedEpisode` (e.g. the suite and the policy).
    """

    def __init__(self, make_env: Callable[[], Any], place: str, *,
                 on_drop: Callable[[DroppedEpisode], None] | None = None,
                 context: dict[str, Any] | None = None) -> None:
        self.make_env = make_env
        self.place = place
        self.on_drop = on_drop
        self.context = dict(context or {})
        self.dropped: list[DroppedEpisode] = []
        self._env: Any = None
        self._crashes_in_a_row = 0
        self._kill_at = _kill_plan(place)

    @property
    def env(self) -> Any:
        """The current env (built on first use; spaces are read from it)."""
        if self._env is None:
            self._env = self.make_env()
        return self._env

    def run(self, policy: Callable[[Any], Any], *, episode: int, seed: int | None,
            options: dict[str, Any] | None = None, record: bool = False) -> Episode | None:
        """One episode of `policy` (reset with `seed` and `options`); None when SUMO died and
        the episode was dropped. `record`: keep every observation and action."""
        env = self.env
        obs_seen: list[Any] | None = [] if record else None
        acts: list[Any] | None = [] if record else None
        rewards: list[float] = []
        scenario_id = (options or {}).get("scenario_id")
        try:
            obs, info = env.reset(seed=seed, options=options)
            scenario_id = info.get("scenario_id", scenario_id)
            if hasattr(policy, "reset"):
                policy.reset()
            done = False
            while not done:
                if (episode, len(rewards)) in self._kill_at:
                    self._kill_at.discard((episode, len(rewards)))
                    self._kill_sumo(env)
                action = policy(obs)
                if record:
                    obs_seen.append(obs)
                    acts.append(action)
                obs, reward, term, trunc, info = env.step(action)
                rewards.append(float(reward))
                done = term or trunc
        except SumoCrashedError as exc:
            self._drop(episode, seed, scenario_id, exc)
            return None
        self._crashes_in_a_row = 0
        return Episode(info=info, rewards=rewards, observations=obs_seen, actions=acts)

    def _drop(self, episode: int, seed: int | None, scenario_id: str | None,
              exc: SumoCrashedError) -> None:
        self._crashes_in_a_row += 1
        dropped = DroppedEpisode(place=self.place, episode=episode, seed=seed,
                                 scenario_id=scenario_id, reason=exc.message,
                                 context=self.context)
        log.warning("%s: SUMO died in episode %d (scenario %s, seed %s): %s; episode dropped, "
                    "starting a fresh SUMO", self.place, episode, scenario_id, seed, exc.message)
        self.dropped.append(dropped)
        if self.on_drop:
            self.on_drop(dropped)
        self.close()
        if self._crashes_in_a_row > MAX_CONSECUTIVE_CRASHES:
            raise SumoCrashedError(
                f"{self.place}: SUMO died {self._crashes_in_a_row} times in a row, last in "
                f"episode {episode} (scenario {scenario_id}): {exc.message}",
                fix="check memory and the SUMO logs; the run cannot go on") from exc

    @staticmethod
    def _kill_sumo(env: Any) -> None:
        pid = env.unwrapped.sumo_pid
        if pid is None:
            raise ConfigError(f"{KILL_HOOK_ENV}: this env's SUMO runs in this process (libsumo)",
                              fix="use the traci backend to kill its SUMO alone")
        log.warning("%s: SIGKILL to SUMO pid %d", KILL_HOOK_ENV, pid)
        os.kill(pid, signal.SIGKILL)

    def close(self) -> None:
        env, self._env = self._env, None
        if env is not None:
            try:
                env.close()
            except Exception as exc:  # a dead SUMO's env: closing is best effort
                log.debug("closing the env of %s: %s", self.place, exc)

    def __enter__(self) -> EpisodeRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
