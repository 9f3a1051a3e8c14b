"""`ImitationPPOTorchLearner`: PPO plus an imitation term on the warm start's demonstrations.

Why. Started from an imitation of `v2v_rule` (`roadsense.rllib.warm_start`), PPO drifts away
from the rule's braking in the states where braking matters most and PPO sees least of its
value: a single peer right ahead reporting -7.5 m/s^2 while the ego closes at 6 m/s. There a
brake held for a second decides the collision, but one exploratory 0.1 s brake changes nothing,
and once the driver brakes (4.5 m/s^2) a brake under 0.56 adds nothing at all, while every
brake costs comfort. Without the term the deterministic brake in that state falls from ~0.7 at
the warm start to 0.1-0.3 within the hour, and checkpoints end one to three collisions short of
the rule on the test suite (docs/experiments.md). The imitation term keeps the policy's mean
near the demonstrated braking wherever PPO's own gradient is weak, and PPO's gradient wins
where it is strong (demo-augmented policy gradient, Rajeswaran et al. 2018).

What. The loss of each minibatch gets ``weight x`` the weighted squared error between the
policy's mean (RLlib's normalised action space) and the demonstrations' targets
(`roadsense.rllib.warm_start.imitation_targets`) on a fresh draw of demonstration steps, braking
steps weighing as much as all the others together. `roadsense train` sets the data and the
weight once, after the warm start (`warm_start.keep_imitating`); until then, and at weight 0,
the learner is RLlib's PPO learner.

Speed. With the default sizes (4,000 samples, minibatches of 256, 5 epochs) the learner runs 80
minibatch updates per iteration on a small network, so fixed costs per minibatch count. The
demonstrations' sampling distribution and each sample's first peer row are derived once per
`set_imitation`, not per minibatch (a fresh `Generator.choice(p=...)` re-sums the whole
distribution on every call); the draws are the same. Adam runs fused (one kernel over all
parameters instead of a loop of small tensor ops per parameter); the warm start's fit draws and
steps the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner

from roadsense.rllib.warm_start import (
    draw_cdf,
    draw_rows,
    first_peer_rows,
    sample_inputs,
)

IMITATION_LOSS = "imitation_loss"
IMITATION_WEIGHT = "imitation_weight"


class ImitationPPOTorchLearner(PPOTorchLearner):
    """RLlib's PPO learner with an imitation term (see the module docstring)."""

    imitation_batch = 256

    def configure_optimizers_for_module(self, module_id: str, config: Any = None) -> None:
        """RLlib's optimizer (Adam over the module's parameters, `config.lr` or its schedule),
        fused."""
        params = self.get_parameters(self._module[module_id])
        self.register_optimizer(module_id=module_id,
                                optimizer=torch.optim.Adam(params, fused=True), params=params,
                                lr_or_lr_schedule=config.lr)

    def build(self) -> None:
        super().build()
        self._imitation: dict[str, Any] | None = None
        self._imitation_weight = 0.0
        self._imitation_rng = np.random.default_rng(0)

    def set_imitation(self, *, weight: float, data: dict[str, np.ndarray] | None = None,
                      seed: int | None = None) -> None:
        """Set the term's weight; `data` (`Demonstrations.imitation_data`) replaces the
        demonstrations, `seed` the generator that draws their rows."""
        if data is not None:
            self._imitation = dict(data, cdf=draw_cdf(data["weight"]),
                                   starts=first_peer_rows(data["counts"]))
        if seed is not None:
            self._imitation_rng = np.random.default_rng(seed)
        self._imitation_weight = float(weight)

    def compute_loss_for_module(self, *, module_id: str, config: Any, batch: dict[str, Any],
                                fwd_out: dict[str, Any]) -> torch.Tensor:
        loss = super().compute_loss_for_module(module_id=module_id, config=config, batch=batch,
                                               fwd_out=fwd_out)
        demo = self._imitation
        if demo is None or self._imitation_weight <= 0.0:
            return loss
        rows = draw_rows(demo["cdf"], self._imitation_rng, self.imitation_batch)
        module = self.module[module_id].unwrapped()
        device = next(module.parameters()).device
        ego, peers, index = sample_inputs(demo["ego"], demo["peers"], demo["counts"], rows,
                                          starts=demo["starts"])
        mean = module.net.policy(ego.to(device), peers.to(device), index.to(device))[:, 0]
        imitation = torch.mean((mean - torch.from_numpy(demo["target"][rows]).to(device)) ** 2)
        self.metrics.log_value((module_id, IMITATION_LOSS), imitation.item(), window=1)
        self.metrics.log_value((module_id, IMITATION_WEIGHT), self._imitation_weight,
                               window=1)
        return loss + self._imitation_weight * imitation
