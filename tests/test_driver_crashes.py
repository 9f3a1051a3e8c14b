"""SUMO deaths in the driver process (warm start, validation, final evaluation, `eval`): the
episode is dropped and recorded, a fresh SUMO runs the next one, and the others are the same
as without the death, bit for bit. SUMO is SIGKILLed through `ROADSENSE_TEST_KILL_SUMO`,
which names the place, episode and step, so the SUMO killed is that env's own child."""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import _descendants

from roadsense.envs import ConvoyEnv
from roadsense.envs.episodes import KILL_HOOK_ENV, MAX_CONSECUTIVE_CRASHES, EpisodeRunner
from roadsense.errors import ConfigError, SumoCrashedError
from roadsense.eval import load_policy, run_suite
from roadsense.rllib.warm_start import demonstrations

pytestmark = pytest.mark.slow


def _sumo_children() -> set[int]:
    ours = _descendants(os.getpid())
    out = subprocess.run(["pgrep", "-x", "sumo"], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()} & ours


def test_a_suite_survives_a_sumo_killed_mid_episode(monkeypatch) -> None:
    name, policy = load_policy("v2v_rule")
    clean = run_suite(policy, "smoke", policy_name=name)
    assert len(clean) == 5

    monkeypatch.setenv(KILL_HOOK_ENV, "validation:1:30,final_eval:3:0")
    dropped = []
    rows = run_suite(policy, "smoke", policy_name=name, place="validation",
                     on_drop=dropped.append)
    # episode 1 is dropped, with where, which and why; the others run on a fresh SUMO
    assert [r["episode"] for r in rows] == [0, 2, 3, 4]
    assert [(d.place, d.episode, d.scenario_id, d.seed) for d in dropped] == [
        ("validation", 1, clean[1]["scenario_id"], clean[1]["seed"])]
    assert "SUMO died" in dropped[0].reason
    assert dropped[0].as_dict()["suite"] == "smoke" and dropped[0].as_dict()["policy"] == name
    assert rows == [clean[i] for i in (0, 2, 3, 4)], "a fresh SUMO replays the same episodes"
    assert not _sumo_children(), "no SUMO is left running"


def test_demonstrations_skip_the_episode_whose_sumo_died(monkeypatch) -> None:
    config = {"episode_s": 5.0, "sumo_backend": "traci"}
    with EpisodeRunner(lambda: ConvoyEnv(config=config), "warm_start") as runner:
        clean = demonstrations(runner, "v2v_rule", 150, seed=3)  # 50 steps an episode
    monkeypatch.setenv(KILL_HOOK_ENV, "warm_start:1:10")
    with EpisodeRunner(lambda: ConvoyEnv(config=config), "warm_start") as runner:
        demo = demonstrations(runner, "v2v_rule", 150, seed=3)
        assert [(d.episode, d.seed) for d in runner.dropped] == [(1, 4)]
    # episodes 0, 2, 3 (seeds 3, 5, 6): the first as before, then one more than before
    assert demo.episodes == clean.episodes == 3
    assert (demo.ego[:50] == clean.ego[:50]).all() and (demo.ego[50:100] == clean.ego[100:]).all()
    assert not _sumo_children()


def test_sumo_dying_every_episode_ends_the_run(monkeypatch) -> None:
    kills = ",".join(f"validation:{i}:2" for i in range(MAX_CONSECUTIVE_CRASHES + 1))
    monkeypatch.setenv(KILL_HOOK_ENV, kills)
    name, policy = load_policy("no_assist")
    dropped = []
    with pytest.raises(SumoCrashedError, match=f"died {MAX_CONSECUTIVE_CRASHES + 1} times"):
        run_suite(policy, "smoke", policy_name=name, place="validation",
                  on_drop=dropped.append)
    assert [d.episode for d in dropped] == list(range(MAX_CONSECUTIVE_CRASHES + 1))
    assert not _sumo_children()


def test_the_kill_hook_refuses_a_bad_spec_and_libsumo(monkeypatch) -> None:
    monkeypatch.setenv(KILL_HOOK_ENV, "validation:one:2")
    with pytest.raises(ConfigError, match="not place:episode:step"):
        EpisodeRunner(ConvoyEnv, "validation")
    monkeypatch.setenv(KILL_HOOK_ENV, "test:0:1")
    name, policy = load_policy("no_assist")
    config = {"episode_s": 2.0, "sumo_backend": "libsumo"}
    with EpisodeRunner(lambda: ConvoyEnv(config=config), "test") as runner, \
            pytest.raises(ConfigError, match="libsumo"):
        runner.run(policy, episode=0, seed=1)
