"""`LeanEnvRunner`: `RoadSenseEnvRunner` with a sampling loop that skips RLlib's connectors.

RLlib's `SingleAgentEnvRunner._sample` spends ~1 ms of Python per vector step in its
env-to-module and module-to-env connector pipelines, metrics timers and space-generic
(un)batching, while one ConvoyEnv step costs ~0.1-0.3 ms. For our fixed pipeline (one
`RaggedObsToModule` piece, RLlib's default module-to-env pieces) the same work fits in a few
direct calls per vector step:

1. pack the N latest observations (`pack_observations`, as `RaggedObsToModule` does);
2. the policy's forward pass and, as RLlib's `GetActions`, the action distribution of the
   module's exploration (inference) class, a sample (the deterministic one when not
   exploring) and its logp. Two ways:

   - numpy (the default, for a `DeepSetsRLModule` on the CPU with RLlib's diagonal Gaussian):
     the policy path runs in `roadsense.models.NumpyPolicy` (the module's own parameters,
     viewed) and the Gaussian is sampled from this runner's numpy generator, seeded with
     `action_seed(run seed, worker index, train/eval)` (listed in `seed_records`). Same
     distribution and logp as torch's to ~1e-6, a fraction of the time (torch's ~30 calls
     per vector step cost dispatch, not arithmetic); the random stream is not torch's;
   - torch (any other module, or ``numpy_policy = False``): one `forward_exploration` (with
     RLlib's ``t``) or `forward_inference` under `torch.inference_mode()` and RLlib's
     distribution, drawing from torch's RNG: then the episodes are RLlib's, bit for bit;
3. the env gets the actions unsquashed (``normalize_actions``) or clipped (``clip_actions``)
   as `NormalizeAndClipActions` does; the episode keeps the raw sampled action, with
   ``action_dist_inputs``, ``action_logp`` (and any other module output) and
   ``weights_seq_no`` as extra model outputs, the values and dtypes RLlib stores;
4. the env is stepped through `ListSteps`: `RaggedVectorEnv.step_lists` hands over each
   sub-env's observation and info as they are, where the gymnasium API would batch them into
   dicts of arrays (and RLlib's `DictInfoToList` and `unbatch` split them again);
5. the episode bookkeeping of RLlib's loop, unchanged: next-step autoreset, ``on_episode_*``
   callbacks with RLlib's arguments (``on_episode_step`` only when a callback defines it:
   RLlib's own does nothing, and calling it costs a few microseconds per env step), chunks cut
   at the end of a call and continued by the next, `prev_episode_chunks`, the sampled-step and
   episode metrics;
6. the returned chunks carry their actions and model outputs as arrays and their
   observations as a `PackedObservations` list (`_compact`), so shipping them to the learner
   pickles a few arrays per column instead of one or two per step.

Dropped on purpose: the env-to-module and module-to-env connector pipelines are not called
while sampling (only resets still go through the env-to-module pipeline), so the runner
refuses to start unless they hold exactly the pieces it reproduces (`LEAN_ENV_TO_MODULE`,
`LEAN_MODULE_TO_ENV`: ours and RLlib's defaults) and the module is stateless; and the
per-step ``rlmodule_inference_timer`` and connector timer metrics are not logged.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.wrappers.vector import DictInfoToList
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.connectors.env_to_module import (
    AddObservationsFromEpisodesToBatch,
    AddStatesFromEpisodesToBatch,
    AddTimeDimToBatchAndZeroPad,
    BatchIndividualItems,
    NumpyToTensor,
)
from ray.rllib.connectors.module_to_env import (
    GetActions,
    ListifyDataForVectorEnv,
    NormalizeAndClipActions,
    RemoveSingleTsTimeRankFromBatch,
    TensorToNumpy,
    UnBatchToIndividualItems,
)
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchDiagGaussian
from ray.rllib.env.env_runner import ENV_STEP_FAILURE
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.utils import force_list
from ray.rllib.utils.metrics import WEIGHTS_SEQ_NO
from ray.rllib.utils.spaces.space_utils import (
    clip_action,
    get_base_struct_from_space,
    unbatch,
    unsquash_action,
)

from roadsense.errors import ConfigError
from roadsense.models import NumpyPolicy
from roadsense.rllib.connectors import (
    EGO,
    PEER_COUNT,
    PEER_INDEX,
    PEER_X,
    RaggedObsToModule,
    pack_observations,
    peer_dim_of,
)
from roadsense.rllib.env_runner import RoadSenseEnvRunner
from roadsense.rllib.module import DeepSetsRLModule
from roadsense.rllib.vector_env import RaggedVectorEnv
from roadsense.seeding import action_seed

LEAN_ENV_TO_MODULE = (RaggedObsToModule, AddObservationsFromEpisodesToBatch,
                      AddTimeDimToBatchAndZeroPad, AddStatesFromEpisodesToBatch,
                      BatchIndividualItems, NumpyToTensor)
"""The env-to-module pipeline whose work `LeanEnvRunner` does itself (for a stateless module)."""
LEAN_MODULE_TO_ENV = (GetActions, TensorToNumpy, UnBatchToIndividualItems,
                      RemoveSingleTsTimeRankFromBatch, NormalizeAndClipActions,
                      ListifyDataForVectorEnv)
"""RLlib's default module-to-env pipeline (single agent), which `LeanEnvRunner` reproduces."""
_HALF_LOG_2PI = 0.5 * float(np.log(2.0 * np.pi))


def _unbatch(observations: Any) -> list[Any]:
    """RLlib's `unbatch`, without its tree walk for a flat dict of arrays (ours)."""
    if isinstance(observations, dict) and all(
            isinstance(v, np.ndarray) for v in observations.values()):
        n = len(next(iter(observations.values())))
        return [{k: v[i] for k, v in observations.items()} for i in range(n)]
    return unbatch(observations)


def _bounded_float_box(space: gym.Space) -> bool:
    return (isinstance(space, gym.spaces.Box) and space.dtype in (np.float32, np.float64)
            and bool(np.all(space.bounded_below)) and bool(np.all(space.bounded_above)))


def _compact(episode: SingleAgentEpisode) -> SingleAgentEpisode:
    """The episode with its actions and model outputs as arrays: one pickle each on the way to
    the learner instead of one per step (they were ~40% of an episode chunk's pickling time).
    Observations (ragged) and infos stay lists, as RLlib keeps them with
    ``episodes_to_numpy=False``, the observations a `PackedObservations` list that pickles as a
    few arrays; rewards stay a list too (RLlib treats an episode whose rewards are an array as
    all-numpy, `is_numpy`), of Python floats, which pickle ~10x faster than numpy scalars."""
    episode.actions.finalize()
    for buffer in episode.extra_model_outputs.values():
        buffer.finalize()
    observations = episode.observations
    if type(observations.data) is list:
        observations.data = PackedObservations(observations.data)
    return episode


class PackedObservations(list):
    """A list of dict observations that pickles as one array per key: the per-step arrays
    stacked (fixed shapes) or concatenated with their lengths (ragged, like the peer rows).

    An episode chunk holds two small arrays per step; pickled one by one they cost more than
    every other column of the chunk together (~8 us per step to pickle and unpickle, and Ray
    ships each as a buffer of its own). Unpickled, it is a plain list of dicts again, the
    arrays views into the shipped ones with the same values, shapes and dtypes. A list it
    cannot pack (not all dicts of arrays with the same keys, dtypes and trailing shapes)
    pickles as a plain list."""

    def __reduce__(self) -> tuple[Any, ...]:
        packed = _pack_columns(self)
        if packed is None:
            return list, (list(self),)
        return _unpack_columns, (len(self), packed)


def _pack_columns(observations: list[Any]) -> dict[str, tuple[np.ndarray, ...]] | None:
    """{key: (stacked,) or (concatenated, lengths)} for `PackedObservations`; None when the
    observations do not all share one layout."""
    if not observations or type(observations[0]) is not dict:
        return None
    keys = tuple(observations[0])
    packed: dict[str, tuple[np.ndarray, ...]] = {}
    for key in keys:
        try:
            arrays = [o[key] for o in observations]
        except (KeyError, TypeError):
            return None
        first = arrays[0]
        if not all(type(a) is np.ndarray and a.dtype == first.dtype for a in arrays):
            return None
        if first.ndim and all(a.shape[1:] == first.shape[1:] for a in arrays) and any(
                a.shape != first.shape for a in arrays):
            lengths = np.fromiter((len(a) for a in arrays), np.intp, len(arrays))
            packed[key] = (np.concatenate(arrays), lengths)
        elif all(a.shape == first.shape for a in arrays):
            packed[key] = (np.stack(arrays),)
        else:
            return None
    if any(len(o) != len(keys) for o in observations):
        return None
    return packed


def _unpack_columns(n: int, packed: dict[str, tuple[np.ndarray, ...]]) -> list[dict]:
    """The list `PackedObservations` pickled: `n` dicts of views into the shipped arrays."""
    columns: dict[str, list[np.ndarray]] = {}
    for key, parts in packed.items():
        if len(parts) == 1:
            columns[key] = list(parts[0])
        else:
            data, lengths = parts
            ends = np.cumsum(lengths).tolist()
            starts = [0, *ends[:-1]]
            columns[key] = [data[a:b] for a, b in zip(starts, ends, strict=True)]
    keys = list(columns)
    return [dict(zip(keys, values, strict=True))
            for values in zip(*(columns[k] for k in keys), strict=True)] if keys else [
                {} for _ in range(n)]


class ListSteps(gym.vector.VectorWrapper):
    """`LeanEnvRunner`'s view of a `RaggedVectorEnv` behind RLlib's `DictInfoToList`: `step`
    returns each sub-env's observation and info in lists (`RaggedVectorEnv.step_lists`) instead
    of batching them into dicts of arrays that the runner would split again; `reset` and the
    rest go through RLlib's wrapper unchanged."""

    def step(self, actions: np.ndarray) -> tuple[list[Any], np.ndarray, np.ndarray, np.ndarray,
                                                 list[dict]]:
        return self.env.unwrapped.step_lists(actions)


class LeanEnvRunner(RoadSenseEnvRunner):
    """`RoadSenseEnvRunner` whose `_sample` loop calls the module directly (module doc)."""

    numpy_policy = True
    """Run the policy path in numpy when the module allows it (False: always torch)."""

    def __init__(self, *, config: Any, **kwargs: Any):
        super().__init__(config=config, **kwargs)
        pieces = (tuple(type(c) for c in self._env_to_module.connectors),
                  tuple(type(c) for c in self._module_to_env.connectors))
        if pieces != (LEAN_ENV_TO_MODULE, LEAN_MODULE_TO_ENV) or self.module.is_stateful():
            raise ConfigError(
                "LeanEnvRunner only reproduces a stateless module behind the pipelines "
                f"{[c.__name__ for c in LEAN_ENV_TO_MODULE]} and "
                f"{[c.__name__ for c in LEAN_MODULE_TO_ENV]}; got "
                f"{[[c.__name__ for c in p] for p in pieces]}",
                fix="sample with RLlib's loop (build_config(lean_sampling=False))",
            )
        self._on_gpu = torch.device(self._device).type != "cpu"  # CPU tensors need no .to()
        self._latest_obs: list[Any] = []
        """Each sub-env's latest observation: the input of the next forward pass."""
        self._policy: NumpyPolicy | None = None
        self._log_std: np.ndarray | None = None
        """The module's free log-stds as numpy, read once per `_sample` call (the weights only
        change between calls)."""
        self._unlogged_step_calls = 0
        """Env step calls not yet added to RLlib's Prometheus counter (added once per call)."""
        base = RLlibCallback.on_episode_step
        self._step_callbacks = bool(force_list(self.config.callbacks_on_episode_step)) or any(
            getattr(type(c), "on_episode_step", base) is not base for c in self._callbacks)
        """Whether any callback does something on `on_episode_step`."""
        self._action_seed: dict[str, Any] | None = None
        self._action_rng: np.random.Generator | None = None
        if self._numpy_eligible():
            purpose = "eval" if self.config.in_evaluation else "train"
            worker = int(self.worker_index or 0)
            seed = action_seed(int(self.config.seed or 0), worker, purpose)
            self._action_rng = np.random.default_rng(seed)
            self._action_seed = {"worker_index": worker, "vector_index": -1, "purpose": purpose,
                                 "rebuild": 0, "seed": seed, "stream": "actions"}

    def make_env(self) -> None:
        super().make_env()
        # Only RLlib's info wrapper may sit between the runner and our vector env: its step
        # is the only one that `ListSteps` skips.
        if type(self.env) is DictInfoToList and type(self.env.env) is RaggedVectorEnv:
            self.env = ListSteps(self.env)
        space = self.env.single_action_space
        self._box_bounds = (space.low, space.high) if _bounded_float_box(space) else None

    def _numpy_eligible(self) -> bool:
        module = self.module
        return (self.numpy_policy and type(module) is DeepSetsRLModule and not self._on_gpu
                and module.get_exploration_action_dist_cls() is TorchDiagGaussian
                and module.get_inference_action_dist_cls() is TorchDiagGaussian)

    def seed_records(self) -> list[dict[str, Any]]:
        """The sub-envs' seeds, plus the action sampler's when the policy runs in numpy."""
        return super().seed_records() + ([self._action_seed] if self._action_seed else [])

    def _reset_envs_and_episodes(self, explore: bool) -> None:
        super()._reset_envs_and_episodes(explore)
        self._cached_to_module = None  # RLlib's cached module input; this loop does not use it
        self._latest_obs = [e.get_observations(-1) for e in self._ongoing_episodes]

    def _compute_actions(
        self, explore: bool, t: int
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """(actions for the episodes, actions for the env, extra model outputs), batched."""
        packed = pack_observations(self._latest_obs, peer_dim_of(self.env.single_observation_space))
        if self._policy is not None:
            actions, extra = self._numpy_actions(packed, explore)
        else:
            actions, extra = self._torch_actions(packed, explore, t)
        space = self.env.single_action_space
        if self.config.normalize_actions:
            if self._box_bounds is not None:  # RLlib's `unsquash_action`, without a tree walk
                low, high = self._box_bounds
                for_env = np.clip(low + (actions + 1.0) * (high - low) / 2.0, low, high)
            else:
                for_env = unsquash_action(actions, get_base_struct_from_space(space))
        elif self.config.clip_actions:
            for_env = clip_action(actions, get_base_struct_from_space(space))
        else:
            for_env = actions
        return actions, for_env, extra

    def _numpy_actions(self, packed: dict[str, np.ndarray],
                       explore: bool) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """RLlib's diagonal Gaussian over `NumpyPolicy`'s output: [means, log-stds]."""
        out = self._policy(packed[EGO], packed[PEER_X], packed[PEER_COUNT])
        if self._log_std is not None:  # free log-stds: one parameter per action dimension
            n = out.shape[1]
            inputs = np.empty((len(out), 2 * n), np.float32)
            inputs[:, :n] = out
            inputs[:, n:] = self._log_std
        else:
            inputs = out
        n = inputs.shape[1] // 2  # slices, not np.split: this runs every vector step
        mean, log_std = inputs[:, :n], inputs[:, n:]
        if explore:
            z = self._action_rng.standard_normal(mean.shape, dtype=np.float32)
            actions = mean + np.exp(log_std) * z
            logp = (-0.5 * z * z - log_std - np.float32(_HALF_LOG_2PI)).sum(axis=1)
        else:  # RLlib's deterministic distribution: the mean, logp zeros like the mean
            actions = mean.copy()
            logp = np.zeros_like(mean)
        return actions, {Columns.ACTION_DIST_INPUTS: inputs, Columns.ACTION_LOGP: logp}

    def _torch_actions(self, packed: dict[str, np.ndarray], explore: bool,
                       t: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """RLlib's way: the module's forward pass and action distribution, in torch."""
        count = packed[PEER_COUNT]
        packed[PEER_INDEX] = np.repeat(np.arange(len(count)), count)
        obs = {k: torch.from_numpy(v) for k, v in packed.items()}
        if self._on_gpu:
            obs = {k: v.to(self._device) for k, v in obs.items()}
        module = self.module
        with torch.inference_mode():
            if explore:
                out = module.forward_exploration({Columns.OBS: obs}, t=t)
                dist_cls = module.get_exploration_action_dist_cls()
            else:
                out = module.forward_inference({Columns.OBS: obs})
                dist_cls = module.get_inference_action_dist_cls()
            dist = dist_cls.from_logits(out[Columns.ACTION_DIST_INPUTS])
            if not explore:
                dist = dist.to_deterministic()
            actions = dist.sample()
            logp = dist.logp(actions)
        extra = {k: v.cpu().numpy() for k, v in out.items()}
        extra[Columns.ACTION_LOGP] = logp.cpu().numpy()
        return actions.cpu().numpy(), extra

    def _sample(
        self,
        *,
        num_timesteps: int | None = None,
        num_episodes: int | None = None,
        explore: bool,
        random_actions: bool = False,
        force_reset: bool = False,
    ) -> list[SingleAgentEpisode]:
        """RLlib's `_sample` (same arguments, episodes and metrics) without the connectors."""
        ts = 0
        eps = 0
        done_episodes: list[SingleAgentEpisode] = []
        if self._action_rng is not None:  # the module (or its net) may have been replaced
            if self._policy is None or self._policy.net is not self.module.net:
                self._policy = NumpyPolicy(self.module.net)
            else:
                self._policy.refresh()
            log_std = self.module.log_std
            self._log_std = None if log_std is None else log_std.detach().numpy().copy()
        if force_reset or num_episodes is not None or self._needs_initial_reset:
            self._reset_envs_and_episodes(explore)
        if num_episodes is not None:
            self._needs_initial_reset = True

        while (ts < num_timesteps) if num_timesteps is not None else (eps < num_episodes):
            if random_actions:
                actions = for_env = self.env.action_space.sample()
                extra: dict[str, np.ndarray] = {}
            else:
                # RLlib's estimate of the global env step count (for exploration schedules).
                runners = self.config.num_env_runners or 1
                t = (self.num_env_steps_sampled_lifetime // runners + ts) * runners
                actions, for_env, extra = self._compute_actions(explore, t)
            results = self._try_env_step(for_env)
            if results == ENV_STEP_FAILURE:  # the env was rebuilt: start over, as RLlib does
                ts = 0
                self._reset_envs_and_episodes(explore)
                continue
            observations, rewards, terminateds, truncateds, infos = results
            if not isinstance(self.env, ListSteps):
                observations = _unbatch(observations)
            episodes = self._ongoing_episodes
            started = [not e.is_reset for e in episodes]
            for i, episode in enumerate(episodes):
                if started[i]:  # next-step autoreset: this step's action was ignored
                    episode.add_env_reset(observation=observations[i], infos=infos[i])
                    continue
                ts += 1
                extra_i = {k: v[i] for k, v in extra.items()}
                extra_i[WEIGHTS_SEQ_NO] = self._weights_seq_no
                episode.add_env_step(
                    observation=observations[i],
                    action=actions[i],
                    reward=float(rewards[i]),
                    infos=infos[i],
                    terminated=terminateds[i],
                    truncated=truncateds[i],
                    extra_model_outputs=extra_i,
                )
            # A finished episode's last observation still feeds the next forward pass; the
            # env ignores the action it yields (autoreset), as in RLlib's loop.
            self._latest_obs = observations

            for i in range(self.num_envs):
                if started[i]:
                    self._make_on_episode_callback("on_episode_start", i, episodes)
                elif self._step_callbacks:
                    self._make_on_episode_callback("on_episode_step", i, episodes)
                if not episodes[i].is_done:
                    continue
                eps += 1
                self._make_on_episode_callback("on_episode_end", i, episodes)
                done_episodes.append(
                    episodes[i].to_numpy() if self.episodes_to_numpy else _compact(episodes[i])
                )
                self._new_episode(i, episodes)
                if num_episodes is not None and eps >= num_episodes:
                    break

        self._done_episodes_for_metrics.extend(done_episodes)
        ongoing_episodes: list[SingleAgentEpisode] = []
        if num_timesteps is not None:  # cut the ongoing episodes; the next call continues them
            continuations = [
                e.cut(len_lookback_buffer=self.config.episode_lookback_horizon)
                for e in self._ongoing_episodes
            ]
            for e in self._ongoing_episodes:
                if e.t == 0:  # just created: no data to return
                    continue
                e.validate()
                self._ongoing_episodes_for_metrics[e.id_].append(e)
                ongoing_episodes.append(e.to_numpy() if self.episodes_to_numpy else _compact(e))
            self._ongoing_episodes = continuations

        self._log_env_steps(metric=self._metrics_num_env_steps_sampled, num_steps=ts)
        if self._unlogged_step_calls:
            super()._log_env_steps(metric=self._metrics_num_try_env_step,
                                   num_steps=self._unlogged_step_calls)
            self._unlogged_step_calls = 0
        self._increase_sampled_metrics(ts, len(done_episodes))
        return done_episodes + ongoing_episodes

    def _log_env_steps(self, metric: Any, num_steps: int) -> None:
        """RLlib's Prometheus step counters; the per-step one (env step calls, one `inc` each
        in `_try_env_step`) is added up and incremented once per `_sample` call: the same
        totals, without a metrics call per vector step."""
        if metric is getattr(self, "_metrics_num_try_env_step", None):
            self._unlogged_step_calls += num_steps
            return
        super()._log_env_steps(metric=metric, num_steps=num_steps)
