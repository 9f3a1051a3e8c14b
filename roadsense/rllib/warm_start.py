"""Warm start: PPO begins from an imitation of a baseline (`v2v_rule`) instead of at random.

Why. PPO explores with independent Gaussian noise per 0.1 s step. A single exploratory brake
during a hazard changes nothing (measured on the training dataset with the initial policy:
braking and non-braking steps in hazard-message states have the same discounted return,
-3.64 +- 0.11 against -3.64 +- 0.05 over 3,000 episodes), while every brake in a calm state
costs. Only sustained braking avoids a collision, and the noise never sustains it, so whether
a run learns to brake on warnings depends on luck in its first minute: one seed in four never
did (docs/experiments.md). Starting from the rule's behaviour gives PPO the sustained braking
to refine instead of to discover.

How. Run the baseline on the training dataset (one in-process env, before the env runners
start) and record every observation, the baseline's action, the discounted return and whether
the episode had a hazard; fit the policy's mean to `imitation_targets` (in RLlib's normalised
action space, b -> 2b - 1: a brake on every urgent warning in view in hazard episodes, as hard
as the warning asks with a margin, `TrainSettings.warm_start_brake_gain`; everything else, the
baseline's false brakes in calm episodes included, -> the model's starting mean, below the
brake threshold) with the braking steps weighted as much as all the others together, and the
value head to the returns. Then load
the weights into the learner and sync them to the env runners. The std stays the module's
starting one, so PPO explores around the rule from its first iteration. `keep_imitating`
gives the same targets to the learner's imitation term (`roadsense.rllib.learner`), which
stays in PPO's loss for the whole run.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from ray.rllib.core import DEFAULT_MODULE_ID

from roadsense.envs.baselines import make_baseline
from roadsense.envs.episodes import EpisodeRunner
from roadsense.envs.observation import (
    PEER_INDEX,
    PEER_SCALE,
    holds_warning,
    urgency_brake,
    warning_urgencies,
)
from roadsense.models import DeepSets
from roadsense.rllib.connectors import EGO, PEER_COUNT, PEER_X, pack_observations


@dataclass(frozen=True)
class Demonstrations:
    """What a baseline did: packed observations, its brake (0-1) and discounted returns."""

    ego: np.ndarray
    peers: np.ndarray
    counts: np.ndarray
    brake: np.ndarray
    returns: np.ndarray
    calm: np.ndarray
    """Per step: the episode had no hazard (the baseline's brakes there are false brakes)."""
    warned: np.ndarray
    """Per step: the observation holds a warning (`holds_warning`); braking without one rests
    on the baseline's memory, which the policy's observation does not have."""
    episodes: int
    urgency: np.ndarray | None = None
    """Per step: `warning_urgency` of the observation (m/s^2 the ego must brake; 0 without a
    warning); None: every warning counts as urgent."""
    counter: np.ndarray | None = None
    """Per step: a gating counterexample (`with_gating_counterexamples`), imitated as "no
    brake"; None: none."""

    def __len__(self) -> int:
        return len(self.brake)

    @property
    def counter_mask(self) -> np.ndarray:
        """`counter` as a mask over every step (all False without counterexamples)."""
        return self.counter if self.counter is not None else np.zeros(len(self), bool)

    def imitation_data(self, target: np.ndarray, weight: np.ndarray) -> dict[str, np.ndarray]:
        """What `ImitationPPOTorchLearner.set_imitation` takes (`imitation_targets`' output)."""
        return {"ego": self.ego, "peers": self.peers, "counts": self.counts.astype(np.int64),
                "target": target.astype(np.float32), "weight": weight.astype(np.float64)}


def demonstrations(runner: EpisodeRunner, baseline: str, steps: int, seed: int,
                   gamma: float = 0.99) -> Demonstrations:
    """Run `baseline` for about `steps` steps (whole episodes) in `runner`'s env (a ConvoyEnv);
    episode k is reset with seed `seed + k`. An episode whose SUMO dies is dropped (the
    runner records it) and the next one has the next seed."""
    policy = make_baseline(baseline)
    observations: list[dict] = []
    brakes: list[float] = []
    returns: list[np.ndarray] = []
    calm: list[np.ndarray] = []
    warned: list[bool] = []
    decel = runner.env.config.hazard_msg_decel_mps2
    episodes, attempt = 0, 0
    while len(brakes) < steps:
        done = runner.run(policy, episode=attempt, seed=seed + attempt, record=True)
        attempt += 1
        if done is None:
            continue
        observations += done.observations
        warned += [holds_warning(o["peers"], decel) for o in done.observations]
        brakes += [float(a[0]) for a in done.actions]
        g, ret = 0.0, np.empty(done.steps)
        for t in range(done.steps - 1, -1, -1):
            g = done.rewards[t] + gamma * g
            ret[t] = g
        returns.append(ret)
        calm.append(np.full(done.steps, done.info["hazard"] is None))
        episodes += 1
    peer_dim = runner.env.observation_space["peers"].feature_space.shape[0]
    packed = pack_observations(observations, peer_dim)
    return Demonstrations(ego=packed[EGO], peers=packed[PEER_X], counts=packed[PEER_COUNT],
                          brake=np.asarray(brakes, np.float32),
                          returns=np.concatenate(returns).astype(np.float32),
                          calm=np.concatenate(calm), warned=np.asarray(warned, bool),
                          episodes=episodes,
                          urgency=warning_urgencies(packed[EGO], packed[PEER_X],
                                                    packed[PEER_COUNT], decel))


@dataclass(frozen=True)
class FitReport:
    """How well the net imitates the baseline (on held-out steps) and how long it took."""

    steps: int
    episodes: int
    braking_share: float
    agree_brake: float | None
    """Held-out braking steps where the fitted mean brakes too (above the threshold); None
    when none were held out."""
    agree_calm: float | None
    """Held-out non-braking steps where the fitted mean does not brake."""
    value_r2: float
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


def draw_cdf(weight: np.ndarray) -> np.ndarray:
    """The cumulative distribution that `Generator.choice(len(weight), p=weight / weight.sum())`
    builds (on every call) to draw rows in proportion to `weight`."""
    w = np.asarray(weight, np.float64)
    if w.ndim != 1 or len(w) == 0 or not (w >= 0).all() or not w.sum() > 0:
        raise ValueError("imitation weights must be a non-empty 1-D array of non-negative "
                         "numbers with a positive sum")
    cdf = np.cumsum(w / w.sum())
    cdf /= cdf[-1]
    return cdf


def draw_rows(cdf: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """`size` rows drawn from `draw_cdf`'s distribution: the same rows, from the same generator
    state, as `rng.choice(len(weight), size, p=weight / weight.sum())`."""
    return cdf.searchsorted(rng.random(size), side="right")


def first_peer_rows(counts: np.ndarray) -> np.ndarray:
    """Each sample's first row in packed peer rows whose samples hold `counts` peers each."""
    return np.cumsum(counts) - counts


def sample_inputs(ego: np.ndarray, peers: np.ndarray, counts: np.ndarray, rows: np.ndarray,
                  starts: np.ndarray | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The net's inputs (ego, packed peers, sample index) for the samples `rows` of packed
    arrays whose samples hold `counts` peers each; `starts`: `first_peer_rows(counts)`, when
    the caller keeps it."""
    if starts is None:
        starts = first_peer_rows(counts)
    c = counts[rows]
    within = np.arange(int(c.sum())) - np.repeat(first_peer_rows(c), c)  # 0.. in each sample
    peer_rows = np.repeat(starts[rows], c) + within
    index = torch.repeat_interleave(torch.arange(len(rows)), torch.from_numpy(c))
    return torch.from_numpy(ego[rows]), torch.from_numpy(peers[peer_rows]), index


def _batch(demo: Demonstrations, rows: np.ndarray, starts: np.ndarray | None = None
           ) -> tuple[torch.Tensor, ...]:
    return (*sample_inputs(demo.ego, demo.peers, demo.counts, rows, starts),
            torch.from_numpy(demo.brake[rows]), torch.from_numpy(demo.returns[rows]))


def imitation_targets(demo: Demonstrations, *, no_brake_mean: float, brake_threshold: float,
                      brake: float | None = None, urgent_mps2: float = 0.0,
                      brake_gain: float | None = None, max_brake_mps2: float = 8.0,
                      brake_cap: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Per step, the policy mean to imitate (RLlib's normalised action space: brake b -> 2b - 1)
    and its weight (braking steps weigh as much as all the others together).

    Imitated braking: every step of a hazard episode whose observation holds an urgent warning
    (a peer ahead reporting a hard brake, `holds_warning`, that asks the ego for `urgent_mps2`
    or more, `warning_urgency`). Its level is `brake_gain` times the urgency over
    `max_brake_mps2`, capped at `brake_cap`: the ego brakes as hard as the warning asks, with a
    margin, up to the cap (None: the flat level `brake`; None for both: the baseline's own).

    Why every urgent warning: that includes the ones the baseline skips. `v2v_rule` brakes only
    for peers that read within 6 m of its lane, and GPS and heading errors put the cars of its
    own lane a median 5-10 m and up to ~20 m to the side (`BESIDE_M`), so imitating its skips
    teaches the net to ignore real warnings. Why only urgent ones: a car far ahead that slows
    moderately (calm validation roads show them, 68-185 m ahead at 2.5-5 m/s^2, asking the ego
    for at most 1.5 m/s^2) needs no help; mild hazards far ahead in training look the same, and
    imitating a brake there taught full brakes on calm roads.

    Everything else becomes "no brake" (a mean of `no_brake_mean`, well below the threshold):
    the baseline's brakes in calm episodes are false brakes, and its brakes held on after the
    warning left the view (`v2v_rule` holds for 1 s) rest on a memory the observation does not
    carry, so imitating them would teach braking on views that look calm. Gating
    counterexamples (`demo.counter`) are "no brake" too and weigh `COUNTER_WEIGHT` together,
    taken from the non-braking steps' half."""
    counter = demo.counter_mask
    urgency = demo.urgency if demo.urgency is not None else np.full(len(demo), np.inf)
    braking = ~demo.calm & demo.warned & ~counter & (urgency >= urgent_mps2)
    if brake_gain is not None:
        level = urgency_brake(urgency, brake_gain, max_brake_mps2, brake_cap).astype(np.float32)
    elif brake is None:
        own = demo.brake[demo.brake > brake_threshold]
        level = np.where(demo.brake > brake_threshold, demo.brake,
                         own.max() if own.size else 1.0).astype(np.float32)
    else:
        level = np.full(len(demo), brake, np.float32)
    target = np.where(braking, 2.0 * level - 1.0, no_brake_mean).astype(np.float32)
    n = len(demo)
    n_brake, n_counter = int(braking.sum()), int(counter.sum())
    n_other = n - n_brake - n_counter
    counter_w = COUNTER_WEIGHT if n_counter else 0.0
    weight = np.where(braking, 0.5 * n / max(n_brake, 1),
                      np.where(counter, counter_w * n / max(n_counter, 1),
                               (0.5 - counter_w) * n / max(n_other, 1)))
    return target, weight


COUNTER_WEIGHT = 0.2
"""Share of the imitation weight on the gating counterexamples, both kinds together (the
braking steps keep half)."""
BEHIND_M = (10.0, 60.0)
"""How far behind the ego a counterexample moves a warning peer (uniform, m). GPS error seldom
puts a car ahead behind the ego (under 1% of the peer rows of `v2v_rule`'s training
demonstrations read behind), so the range can start near."""
BESIDE_M = (25.0, 60.0)
"""How far to the side a counterexample moves a warning peer (uniform, m, either side): beyond
the lateral offsets that GPS and heading errors give a car in the ego's own lane. In `v2v_rule`'s
training demonstrations the hard-braking peers, all in the ego's lane, read a median 5-10 m and
a 90th percentile 14-23 m to the side (the real drive shows 13-19 m): copies nearer than that
would teach "no brake" on real warnings."""


CALM_BEHIND_M = (0.0, 90.0)
"""How far behind the ego a moved calm peer goes (uniform, m; anywhere from 60 m left to 60 m
right)."""
CALM_BESIDE_LONG_M = (-90.0, 120.0)
"""Where along the road a calm peer moved beside the ego goes (uniform, m; `BESIDE_M` to the
side)."""
CALM_MOVED_SHARE = 0.75
"""Chance that a copy moves each of its step's peers that may move (at least one is moved)."""


def _move_out_of_lane(p: np.ndarray, movable: np.ndarray, rng: np.random.Generator) -> bool:
    """Move some of the peer rows `p` (observation rows, in place) where `movable`, each with
    `CALM_MOVED_SHARE` and at least one, half behind the ego and half well beside it: places no
    car ahead in the ego's lane takes. False when no row may move."""
    candidates = np.flatnonzero(movable)
    if not candidates.size:
        return False
    moved = candidates[rng.random(candidates.size) < CALM_MOVED_SHARE]
    if not moved.size:
        moved = candidates[rng.integers(candidates.size)][None]
    n = moved.size
    li, lat = PEER_INDEX["long_offset"], PEER_INDEX["lat_offset"]
    behind = rng.random(n) < 0.5
    long_m = np.where(behind, -rng.uniform(*CALM_BEHIND_M, n), rng.uniform(*CALM_BESIDE_LONG_M, n))
    lat_m = np.where(behind, rng.uniform(-BESIDE_M[1], BESIDE_M[1], n),
                     rng.choice((-1.0, 1.0), n) * rng.uniform(*BESIDE_M, n))
    p[moved, li] = long_m / PEER_SCALE[li]
    p[moved, lat] = lat_m / PEER_SCALE[lat]
    return True


def with_gating_counterexamples(demo: Demonstrations, *, decel_mps2: float,
                                seed: int) -> Demonstrations:
    """`demo` plus three kinds of copies that teach the gate a driver applies: brake for a
    hard-braking car ahead in the lane, whatever the other cars around do, and for nothing
    else.

    - hard (counterexamples, in `counter`, "no brake"): for every step that holds a warning, a
      copy with each warning peer (ahead, reporting `decel_mps2` or harder) moved behind the
      ego (half the copies) or well beside it (the other half);
    - calm (counterexamples, in `counter`, "no brake"): as many steps that hold no warning,
      each copied with some of its peers moved behind or well beside the ego
      (`_move_out_of_lane`);
    - kept (imitated like their originals): every step of a hazard episode that holds a
      warning, copied with some of its other peers moved the same way and the warning peers
      where they are.

    Why. The training scenarios are convoys: every car that brakes hard is ahead in the ego's
    lane, and the ego drives last, so some peer is nearly always ahead and none behind. A net
    fitted there brakes for a hard-braking car behind or beside it too (a peer reporting
    -7.5 m/s^2 15 m behind drew a full brake). Fitted with the hard copies alone, it learned
    where cars are rather than what they do: it braked at 0.4-0.6 of the full brake for one
    calm peer 40 m behind and 28 m to the side, and not at all for a hard brake 30 m ahead in
    its lane when two calm peers read 8 m behind and 13-16 m to the side, where GPS error puts
    the cars of a real drive. The calm and kept copies say that cars behind or beside change
    nothing. Moved peers never go ahead into the lane, where a slowing car could become a
    warning, so every copy keeps its target."""
    rng = np.random.default_rng(seed)
    li, ai, lat = PEER_INDEX["long_offset"], PEER_INDEX["accel"], PEER_INDEX["lat_offset"]
    hard_accel = -decel_mps2 / PEER_SCALE[ai]
    starts = first_peer_rows(demo.counts)
    rows = np.flatnonzero(demo.warned)
    if not rows.size:
        return demo

    def step_peers(i: int) -> np.ndarray:
        return demo.peers[starts[i]: starts[i] + demo.counts[i]].copy()

    def warning_peers(p: np.ndarray) -> np.ndarray:
        return (p[:, ai] <= hard_accel) & (p[:, li] > 0.0)

    peers = []  # the copies' peer rows, in the order of `copied`
    for k, i in enumerate(rows):
        p = step_peers(i)
        hard = warning_peers(p)
        n = int(hard.sum())
        if k % 2 == 0:
            p[hard, li] = -rng.uniform(*BEHIND_M, n) / PEER_SCALE[li]
        else:
            side = rng.choice((-1.0, 1.0), n)
            p[hard, lat] = side * rng.uniform(*BESIDE_M, n) / PEER_SCALE[lat]
        peers.append(p)
    quiet = np.flatnonzero(~demo.warned & ~demo.counter_mask & (demo.counts > 0))
    calm_rows = np.sort(rng.choice(quiet, min(len(rows), len(quiet)), replace=False))
    for i in calm_rows:
        p = step_peers(i)
        _move_out_of_lane(p, np.ones(len(p), bool), rng)
        peers.append(p)
    kept = []
    for i in np.flatnonzero(demo.warned & ~demo.calm & ~demo.counter_mask):
        p = step_peers(i)
        if _move_out_of_lane(p, ~warning_peers(p), rng):
            kept.append(i)
            peers.append(p)
    copied = np.concatenate([rows, calm_rows, np.asarray(kept, np.int64)])
    counter = np.arange(len(copied)) < len(rows) + len(calm_rows)  # hard and calm: no brake
    return Demonstrations(
        ego=np.concatenate([demo.ego, demo.ego[copied]]),
        peers=np.concatenate([demo.peers, *peers]).astype(demo.peers.dtype),
        counts=np.concatenate([demo.counts, demo.counts[copied]]),
        brake=np.concatenate([demo.brake, np.where(counter, 0, demo.brake[copied])]),
        returns=np.concatenate([demo.returns, demo.returns[copied]]),
        calm=np.concatenate([demo.calm, ~counter & demo.calm[copied]]),
        warned=np.concatenate([demo.warned, ~counter & demo.warned[copied]]),
        urgency=None if demo.urgency is None else np.concatenate(
            [demo.urgency, np.where(counter, 0.0, demo.urgency[copied])]),
        episodes=demo.episodes, counter=np.concatenate([demo.counter_mask, counter]))


def fit(net: DeepSets, demo: Demonstrations, *, no_brake_mean: float, brake_threshold: float,
        brake: float | None = None, updates: int | None = None, batch_size: int = 512,
        lr: float = 1e-3, seed: int = 0, **targets: Any) -> FitReport:
    """Fit `net`'s first policy output (the Gaussian mean) to `imitation_targets` and its value
    head to the returns, in place; 20% of the steps are held out for the report.
    `updates` defaults to 20 passes over the data, within 200-1500 Adam steps (40,000 steps:
    15-18 s on this 2-core machine, 99.3-99.6% agreement on held-out calm steps)."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(demo))
    held, train = order[: len(demo) // 5], order[len(demo) // 5:]
    if updates is None:
        updates = min(1500, max(200, 20 * len(train) // batch_size))
    target, weight = imitation_targets(demo, no_brake_mean=no_brake_mean,
                                       brake_threshold=brake_threshold, brake=brake, **targets)
    braking = target > 2.0 * brake_threshold - 1.0  # no-brake targets sit below the threshold
    cdf = draw_cdf(weight[train])
    starts = first_peer_rows(demo.counts)
    scale = float(np.abs(demo.returns).mean()) or 1.0  # returns reach ~-50 at a collision
    optimizer = torch.optim.Adam(net.parameters(), lr=lr, fused=True)
    target_t = torch.from_numpy(target)
    counter_t = torch.from_numpy(demo.counter_mask)
    for _ in range(updates):
        rows = train[draw_rows(cdf, rng, min(batch_size, len(train)))]
        ego, peers, index, _, returns = _batch(demo, rows, starts)
        mean, value = net(ego, peers, index)
        real = ~counter_t[rows]  # a counterexample's return is not its own
        loss = (torch.nn.functional.mse_loss(mean[:, 0], target_t[rows])
                + torch.nn.functional.mse_loss(value[real] / scale, returns[real] / scale))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        ego, peers, index, _, returns = _batch(demo, held)
        mean, value = net(ego, peers, index)
    brakes_now = (mean[:, 0].numpy() + 1.0) / 2.0 > brake_threshold
    want = braking[held]
    real = ~counter_t[held]
    resid = float(((value[real] - returns[real]) ** 2).mean())
    var = float(returns[real].var()) or 1.0
    return FitReport(
        steps=len(demo), episodes=demo.episodes, braking_share=float(braking.mean()),
        agree_brake=float(brakes_now[want].mean()) if want.any() else None,
        agree_calm=float((~brakes_now[~want]).mean()) if (~want).any() else None,
        value_r2=1.0 - resid / var, seconds=time.perf_counter() - started)


def warm_start(algo: Any, demo: Demonstrations, *, no_brake_mean: float,
               brake_threshold: float, seed: int, brake: float | None = None,
               **targets: Any) -> FitReport:
    """Fit the policy to `demo`, then load the weights into `algo`'s learner and every env
    runner."""
    module = algo.get_module()  # the local env runner's, or a copy of a remote one's
    net = module.net
    report = fit(net, demo, no_brake_mean=no_brake_mean, brake_threshold=brake_threshold,
                 brake=brake, seed=seed, **targets)
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}

    def load(learner: Any) -> None:
        learner.module[DEFAULT_MODULE_ID].net.load_state_dict(state)

    algo.learner_group.foreach_learner(load)
    algo.env_runner_group.sync_weights(from_worker_or_learner_group=algo.learner_group,
                                       inference_only=True, timeout_seconds=60.0)
    return report


def keep_imitating(algo: Any, demo: Demonstrations, *, weight: float, no_brake_mean: float,
                   brake_threshold: float, seed: int, brake: float | None = None,
                   **targets: Any) -> None:
    """Give `algo`'s learners the imitation term (`ImitationPPOTorchLearner`) on `demo`'s
    targets, at `weight`."""
    target, w = imitation_targets(demo, no_brake_mean=no_brake_mean,
                                  brake_threshold=brake_threshold, brake=brake, **targets)
    data = demo.imitation_data(target, w)

    def give(learner: Any) -> None:
        learner.set_imitation(weight=weight, data=data, seed=seed)

    algo.learner_group.foreach_learner(give)
