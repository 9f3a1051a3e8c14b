"""The end-to-end benchmark's arithmetic and commands (its runs are `python -m benchmarks e2e`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.e2e import FULL, QUICK, loop_rate, train_command


def test_loop_rate_leaves_out_the_first_iteration() -> None:
    progress = [{"env_steps": 4000, "elapsed_s": 60.0},  # Ray start, warm start, SUMO start
                {"env_steps": 8000, "elapsed_s": 62.0},
                {"env_steps": 12000, "elapsed_s": 64.5}]
    assert loop_rate(progress) == (8000 / 4.5, 2)


def test_loop_rate_needs_two_iterations_with_steps() -> None:
    with pytest.raises(RuntimeError, match="at least 2 iterations"):
        loop_rate([{"env_steps": 4000, "elapsed_s": 60.0}])
    with pytest.raises(RuntimeError, match="no steps or time"):
        loop_rate([{"env_steps": 4000, "elapsed_s": 60.0}, {"env_steps": 4000, "elapsed_s": 61}])


def test_layout_flags_only_when_a_layout_is_named(tmp_path: Path) -> None:
    default = train_command(FULL, tmp_path, None)
    assert "--num-env-runners" not in default and "--num-envs-per-env-runner" not in default
    assert {"--no-final-eval", "--validation-suite", "--replay"} <= set(default)
    cmd = train_command(QUICK, tmp_path, (3, 1))
    i = cmd.index("--num-env-runners")
    assert cmd[i:i + 4] == ["--num-env-runners", "3", "--num-envs-per-env-runner", "1"]
    assert cmd[cmd.index("--train-batch-size") + 1] == str(QUICK.train_batch_size)


def test_extra_flags_go_last(tmp_path: Path) -> None:
    cmd = train_command(FULL, tmp_path, None, ("--num-epochs", "10"))
    assert cmd[-2:] == ["--num-epochs", "10"] and cmd[:-2] == train_command(FULL, tmp_path, None)
