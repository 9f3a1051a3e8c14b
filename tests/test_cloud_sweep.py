"""Sweep spaces vary `roadsense train` settings only, and under PBT only what a restored run can
take as it is; bad `--set` keys fail before Ray starts."""

from __future__ import annotations

import pytest

from roadsense.cloud.sweep import PBT_SAFE, SPACES, TUNABLE, SweepSettings, check_space
from roadsense.errors import ConfigError
from roadsense.rllib.training import TrainSettings


def test_every_tunable_key_is_a_train_setting():
    fields = set(TrainSettings.__dataclass_fields__)
    assert TUNABLE <= fields and PBT_SAFE <= TUNABLE


@pytest.mark.parametrize("name", sorted(SPACES))
def test_shipped_spaces_pass_asha(name: str):
    check_space(SPACES[name], "asha")


def test_phase1_space_is_pbt_safe():
    check_space(SPACES["phase1"], "pbt")


@pytest.mark.parametrize(
    "space, scheduler, expected",
    [
        ({"model": ("choice", [{"phi_hidden": (32, 32)}])}, "asha", "network's shape"),
        ({"phi_hidden": ("choice", [(32, 32)])}, "pbt", "network's shape"),
        ({"minibatch_size": ("choice", [128, 256])}, "pbt", "PBT restores"),
        ({"num_env_runners": ("choice", [1, 2])}, "asha", "may not vary"),
    ],
)
def test_unsafe_keys_are_refused(space: dict, scheduler: str, expected: str):
    with pytest.raises(ConfigError, match=expected):
        check_space(space, scheduler)


def test_pbt_refuses_the_batch_space():
    with pytest.raises(ConfigError, match="minibatch_size|num_epochs"):
        SweepSettings(storage="s", name="n", space="phase1-batch", scheduler="pbt").validate()


def test_set_keys_must_be_train_settings():
    with pytest.raises(ConfigError, match="not a `roadsense train` setting"):
        SweepSettings(storage="s", name="n", base_config={"lambda_": 0.9}).validate()


def test_trial_settings_are_phase1_settings_with_the_sweeps_limits(tmp_path):
    sweep = SweepSettings(storage="s", name="n", max_iterations=7, max_runtime_minutes=30,
                          seed=4, base_config={"dataset_dir": "data", "lr": 1e-4})
    sweep.validate()
    base = sweep.train_settings()
    defaults = TrainSettings()
    assert base.iterations == 7 and base.budget_minutes == 30 and base.seed == 4
    assert base.num_env_runners == 1 and base.final_eval is False and base.lr == 1e-4
    assert base.dataset_dir.startswith("/") and base.dataset_root.startswith("/")
    for same in ("warm_start", "imitation_weight", "lean_sampling", "lr_final",
                 "validation_suite", "train_batch_size"):
        assert getattr(base, same) == getattr(defaults, same), same
