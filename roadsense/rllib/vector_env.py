"""The vector env every RLlib env runner steps: N sub-envs of one gym id, ragged peers intact.

Why our own vector env: gymnasium's vector envs batch a `Sequence` observation into a tuple
that RLlib's `unbatch` then splits row-wise across envs (peers of env 0 handed to env 1).
Here the batched observation is ``{"ego": (N, E) array, "peers": object array (N,)}`` holding
one ``(K_i, F)`` array per sub-env, which `unbatch` splits correctly.

It also owns the two duties RLlib's defaults get wrong for us:

* Seeds: sub-env ``i`` of runner ``w`` is seeded on its first reset with
  ``worker_seed(seed, w, i, purpose)`` ("train" or "eval"), never with RLlib's
  ``seed + worker_index`` (which collides across sub-envs and runners). A sub-env rebuilt
  after a crash gets a fresh seed derived from that one and its rebuild count; a runner that
  RLlib restarts after a failure (same worker index) learns that it is a restart from
  `runner_incarnation` and derives fresh first seeds (`incarnation_seed`) instead of
  replaying the first runner's. Every seed used is kept in `seed_records` (with its runner's
  incarnation and sub-env's rebuild count) and put in the reset info under ``"env_seed"``.
* Crashes: a `SumoCrashedError` from a sub-env's `step()` is logged, that sub-env is closed and
  rebuilt, and its episode is cut: RLlib gets the last good observation, reward 0 and
  ``truncated=True`` with info ``{"sumo_crashed": True}``; the next step resets it (the
  next-step autoreset that RLlib expects). The other sub-envs carry on untouched. A crash during
  reset is retried on a rebuilt env up to `MAX_RESET_ATTEMPTS` times.

Infos travel as object arrays with a mask per key, so `DictInfoToList` (which RLlib wraps
around every vector env) hands each sub-env's info dict back unchanged. Keys starting with
``"_"`` are dropped by that wrapper: do not use them.
"""

from __future__ import annotations

import contextvars
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from roadsense.errors import ConfigError, SumoCrashedError
from roadsense.seeding import worker_seed

logger = logging.getLogger(__name__)

MAX_RESET_ATTEMPTS = 3
"""How often a sub-env whose SUMO dies during reset is rebuilt before the error propagates."""

VECTOR_ENV_NAME = "roadsense-ragged-vector"
"""Name under which `register_vector_env` registers `make_ragged_vector_env` with Ray Tune."""

KNOWN_ENV_MODULES = {
    "roadsense/Convoy-v0": "roadsense.envs",
    "roadsense/ToyRagged-v0": "roadsense.rllib.toy_env",
}
"""Module that registers each of our gym ids (imported on demand inside env runner actors)."""


@dataclass(frozen=True)
class EnvIdentity:
    """Who owns a vector env: the env runner's index and whether it trains or evaluates."""

    worker_index: int = 0
    purpose: str = "train"


_current_identity: contextvars.ContextVar[EnvIdentity | None] = contextvars.ContextVar(
    "roadsense_env_identity", default=None
)


def set_identity(identity: EnvIdentity) -> contextvars.Token:
    """Declare the identity of vector envs created until `reset_identity(token)`."""
    return _current_identity.set(identity)


def reset_identity(token: contextvars.Token) -> None:
    _current_identity.reset(token)


_SEED_KV_NAMESPACE = "roadsense-runner-incarnations"
_incarnations: dict[tuple[str, str, int], int] = {}


def runner_incarnation(run_key: str, identity: EnvIdentity) -> int:
    """Which start of the runner `identity` this process is within the run `run_key`: 0 for
    the first, 1, 2, ... for the runners RLlib restarts after a failure (new processes with the
    same worker index). Claimed atomically in Ray's cluster-wide key-value store, once per
    process (a second vector env in the same process gets the same answer); 0 outside Ray."""
    cache_key = (run_key, identity.purpose, identity.worker_index)
    if cache_key in _incarnations:
        return _incarnations[cache_key]
    import ray
    from ray.experimental.internal_kv import _internal_kv_initialized, _internal_kv_put

    incarnation = 0
    if ray.is_initialized() and _internal_kv_initialized():
        while _internal_kv_put(f"{run_key}/{identity.purpose}/{identity.worker_index}/"
                               f"{incarnation}", b"1", overwrite=False,
                               namespace=_SEED_KV_NAMESPACE):
            incarnation += 1  # an earlier process of this runner holds that one
    _incarnations[cache_key] = incarnation
    return incarnation


def incarnation_seed(seed: int, incarnation: int) -> int:
    """First seed of a sub-env in a restarted runner (`incarnation` > 0), derived from the
    first runner's seed so that a restart draws fresh episodes instead of replaying them."""
    if incarnation == 0:
        return seed
    state = np.random.SeedSequence([seed, incarnation, 1]).generate_state(1, dtype=np.uint32)
    return int(state[0] & (2**31 - 1))


def rebuild_seed(seed: int, rebuild: int) -> int:
    """Seed of a sub-env rebuilt for the `rebuild`-th time, derived from its first seed."""
    if rebuild == 0:
        return seed
    state = np.random.SeedSequence([seed, rebuild]).generate_state(1, dtype=np.uint32)
    return int(state[0] & (2**31 - 1))


class RaggedVectorEnv(VectorEnv):
    """N sub-envs stepped in turn; ragged `peers` kept as an object array (see module doc).

    Args:
        env_fns: One constructor per sub-env (called again to rebuild a crashed one).
        seeds: The first-reset seed of each sub-env.
        identity: Recorded with every seed (worker index, purpose).
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        env_fns: list[Callable[[], gym.Env]],
        seeds: list[int],
        identity: EnvIdentity = EnvIdentity(),
        incarnation: int = 0,
    ):
        if not env_fns or len(env_fns) != len(seeds):
            raise ConfigError(
                f"need one seed per sub-env, got {len(env_fns)} envs and {len(seeds)} seeds"
            )
        self.env_fns = env_fns
        self.identity = identity
        self.incarnation = incarnation
        self.num_envs = len(env_fns)
        self.envs = [fn() for fn in env_fns]
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._first_seeds = list(seeds)
        self._rebuilds = [0] * self.num_envs
        self._pending_seed: list[int | None] = list(seeds)
        self._needs_reset = [True] * self.num_envs
        self._last_obs: list[Any] = [None] * self.num_envs
        self.seed_records: list[dict[str, Any]] = []
        """Every seed a sub-env was reset with: worker, vector index, purpose, rebuild, seed."""
        self.crash_count = 0
        self.reward_weights: dict[str, float] = {}
        """Reward weights set by `set_reward_weights` (also given to rebuilt sub-envs)."""

    # -- one sub-env ---------------------------------------------------------------------------
    def _rebuild(self, i: int, exc: BaseException) -> None:
        logger.warning(
            "sub-env %d of %s runner %d crashed (%s); rebuilding it",
            i, self.identity.purpose, self.identity.worker_index, exc,
        )
        self.crash_count += 1
        try:
            self.envs[i].close()
        except Exception:  # the env is already broken; closing is best effort
            logger.exception("closing crashed sub-env %d failed", i)
        self.envs[i] = self.env_fns[i]()
        if self.reward_weights:
            self.envs[i].unwrapped.set_reward_weights(**self.reward_weights)
        self._rebuilds[i] += 1
        self._pending_seed[i] = rebuild_seed(self._first_seeds[i], self._rebuilds[i])

    def _reset_one(self, i: int, options: dict | None = None) -> tuple[Any, dict]:
        for attempt in range(1, MAX_RESET_ATTEMPTS + 1):
            seed = self._pending_seed[i]
            try:
                obs, info = self.envs[i].reset(seed=seed, options=options)
            except SumoCrashedError as exc:
                if attempt == MAX_RESET_ATTEMPTS:
                    raise
                self._rebuild(i, exc)
                continue
            info = dict(info)
            if seed is not None:
                record = {
                    "worker_index": self.identity.worker_index,
                    "vector_index": i,
                    "purpose": self.identity.purpose,
                    "incarnation": self.incarnation,
                    "rebuild": self._rebuilds[i],
                    "seed": seed,
                }
                self.seed_records.append(record)
                info["env_seed"] = seed
                logger.debug("seeded sub-env: %s", record)
            self._pending_seed[i] = None
            self._needs_reset[i] = False
            self._last_obs[i] = obs
            return obs, info
        raise AssertionError("unreachable")

    def set_reward_weights(self, weights: dict[str, float]) -> None:
        """Give every sub-env these reward weights from its next episode on (ConvoyEnv's
        `set_reward_weights`); a rebuilt sub-env gets them too."""
        for env in self.envs:
            if not hasattr(env.unwrapped, "set_reward_weights"):
                raise ConfigError(
                    f"{type(env.unwrapped).__name__} has no set_reward_weights",
                    fix="drop env_config['reward_schedule'] for this env")
        for env in self.envs:
            env.unwrapped.set_reward_weights(**weights)
        self.reward_weights = dict(weights)

    # -- VectorEnv API -------------------------------------------------------------------------
    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        """Reset every sub-env. `seed` is ignored: sub-env seeds come from the identity."""
        if seed is not None:
            logger.debug("ignoring vector reset seed %s; sub-envs use identity seeds", seed)
        results = [self._reset_one(i, options) for i in range(self.num_envs)]
        return self._batch_obs([r[0] for r in results]), self._batch_infos([r[1] for r in results])

    def step(self, actions):
        obs_list, rewards, terminated, truncated, infos = self.step_lists(actions)
        return self._batch_obs(obs_list), rewards, terminated, truncated, self._batch_infos(infos)

    def step_lists(self, actions) -> tuple[list[Any], np.ndarray, np.ndarray, np.ndarray,
                                             list[dict]]:
        """`step` without batching: each sub-env's observation and info, in lists (what an
        env runner unbatches `step`'s dicts back into; `LeanEnvRunner` calls this)."""
        n = self.num_envs
        obs_list: list[Any] = [None] * n
        rewards = np.zeros(n, np.float64)
        terminated = np.zeros(n, bool)
        truncated = np.zeros(n, bool)
        infos: list[dict] = [{} for _ in range(n)]
        for i in range(n):
            if self._needs_reset[i]:  # next-step autoreset: this step's action is ignored
                obs_list[i], infos[i] = self._reset_one(i)
                continue
            try:
                obs, reward, term, trunc, info = self.envs[i].step(actions[i])
            except SumoCrashedError as exc:
                self._rebuild(i, exc)
                obs_list[i], truncated[i] = self._last_obs[i], True
                infos[i] = {"sumo_crashed": True}
                self._needs_reset[i] = True
                continue
            obs_list[i], rewards[i], terminated[i], truncated[i], infos[i] = (
                obs, reward, term, trunc, info
            )
            self._last_obs[i] = obs
            self._needs_reset[i] = bool(term or trunc)
        return obs_list, rewards, terminated, truncated, infos

    def close_extras(self, **kwargs: Any) -> None:
        errors = []
        for i, env in enumerate(self.envs):  # close every SUMO even if one close fails
            try:
                env.close()
            except Exception as exc:
                logger.exception("closing sub-env %d failed", i)
                errors.append(exc)
        if errors:
            raise errors[0]

    # -- batching ------------------------------------------------------------------------------
    def _batch_obs(self, obs_list: list[Any]) -> Any:
        if not isinstance(obs_list[0], dict):
            return np.stack(obs_list)
        out: dict[str, Any] = {}
        for key in obs_list[0]:
            items = [o[key] for o in obs_list]
            if isinstance(self.single_observation_space[key], gym.spaces.Sequence):
                arr = np.empty(len(items), dtype=object)
                for j, item in enumerate(items):  # slot by slot: numpy would merge equal shapes
                    arr[j] = np.asarray(item)
                out[key] = arr
            else:
                out[key] = np.stack(items)
        return out

    def _batch_infos(self, infos: list[dict]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for i, info in enumerate(infos):
            for key, value in info.items():
                if key not in out:
                    out[key] = np.full(self.num_envs, None, dtype=object)
                    out[f"_{key}"] = np.zeros(self.num_envs, bool)
                out[key][i] = value
                out[f"_{key}"][i] = True
        return out


def _import_env_module(env_id: str, module: str | None) -> None:
    if module:
        importlib.import_module(module)
    elif env_id not in gym.registry and env_id in KNOWN_ENV_MODULES:
        importlib.import_module(KNOWN_ENV_MODULES[env_id])
    if env_id not in gym.registry:
        raise ConfigError(
            f"env_config env_id={env_id!r} is not a registered gym id",
            fix="set env_config['env_module'] to the module that registers it",
        )


def make_ragged_vector_env(config: dict) -> RaggedVectorEnv:
    """RLlib env creator (use with ``gym_env_vectorize_mode="vector_entry_point"``).

    `config` (RLlib's env_config plus ``num_envs``): ``env_id`` (gym id, required),
    ``env_kwargs`` (keyword arguments of the env constructor), ``seed`` (run base seed,
    default 0), ``run_key`` (names the run in `runner_incarnation`'s restart count;
    `build_config` draws one per config),
    ``env_module`` (module to import that registers `env_id`), ``identity_kwarg`` (if set, the
    sub-env constructor also gets ``{worker_index, vector_index, purpose}`` under that name, e.g.
    for port allocation). The runner identity comes from `set_identity` (done by
    `RoadSenseEnvRunner`); without one, worker 0 / "train" is assumed.
    """
    config = dict(config)
    env_id = config.get("env_id")
    if not env_id:
        raise ConfigError("env_config has no 'env_id'", fix="set env_config['env_id'] to a gym id")
    _import_env_module(env_id, config.get("env_module"))
    num_envs = int(config.get("num_envs", 1))
    base_seed = int(config.get("seed", 0))
    env_kwargs = dict(config.get("env_kwargs") or {})
    identity_kwarg = config.get("identity_kwarg")
    identity = _current_identity.get()
    if identity is None:
        logger.warning("no env runner identity set; seeding as worker 0 (%s)", env_id)
        identity = EnvIdentity()

    def env_fn(vector_index: int) -> Callable[[], gym.Env]:
        kwargs = dict(env_kwargs)
        if identity_kwarg:
            kwargs[identity_kwarg] = {
                "worker_index": identity.worker_index,
                "vector_index": vector_index,
                "purpose": identity.purpose,
            }
        return lambda: gym.make(env_id, disable_env_checker=True, **kwargs)

    run_key = f"{config.get('run_key') or 'run'}/seed{base_seed}"
    incarnation = runner_incarnation(run_key, identity)
    if incarnation:
        logger.info("%s runner %d restarted (start %d): fresh seeds", identity.purpose,
                    identity.worker_index, incarnation + 1)
    seeds = [
        incarnation_seed(worker_seed(base_seed, identity.worker_index, i, identity.purpose),
                         incarnation)
        for i in range(num_envs)
    ]
    return RaggedVectorEnv([env_fn(i) for i in range(num_envs)], seeds, identity, incarnation)


def register_vector_env() -> str:
    """Register `make_ragged_vector_env` with Ray's env registry; returns its name."""
    from ray.tune.registry import register_env

    register_env(VECTOR_ENV_NAME, make_ragged_vector_env)
    return VECTOR_ENV_NAME
