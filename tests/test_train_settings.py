"""`roadsense train`'s options come from `TrainSettings` (one declaration per setting): the help,
README.md's options table and the dataclass agree on every default; `--config run.toml` gives
settings as a file that the flags override, and refuses an unknown key by name."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import asdict, fields
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from roadsense.cli import app
from roadsense.cli.train import make_settings
from roadsense.errors import ConfigError
from roadsense.rllib.settings import DEFAULT_BUDGET_MINUTES, TrainSettings

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = {f.name: f for f in fields(TrainSettings) if "cli" in f.metadata}


def _command():
    return typer.main.get_command(app).commands["train"]


def _flag(param) -> str:
    return max(param.opts, key=len) if param.name == "dataset_dir" else param.opts[0]


def _help() -> str:
    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    return result.output


def _settings(*args: str) -> TrainSettings:
    """The settings `roadsense train ARGS` would run with (real option parsing, no training)."""
    ctx = _command().make_context("train", list(args))
    return make_settings(ctx=ctx, **{k: v for k, v in ctx.params.items()})


def test_every_option_field_is_a_flag_with_the_fields_default():
    params = {p.name: p for p in _command().params}
    assert set(OPTIONS) <= set(params)
    for name, f in OPTIONS.items():
        assert params[name].default == f.default, name
    # the options that are not settings shape how the settings are made
    assert set(params) - set(OPTIONS) == {"config", "budget_minutes", "max_runtime_minutes",
                                          "debug", "env"}


def test_help_prints_each_default_of_train_settings():
    lines = {line.split()[1].split(",")[0]: line for line in _help().splitlines()
             if re.match(r"^\W+--[a-z]", line)}
    for name, f in OPTIONS.items():
        flag = "--" + name.replace("_", "-")
        if f.default is None or isinstance(f.default, bool):
            continue  # no "[default: ...]" for None; booleans print their flag name
        assert f"[default: {f.default}]" in lines[flag], (flag, lines[flag])
    assert f"else {DEFAULT_BUDGET_MINUTES:g})" in lines["--budget-minutes"]
    assert DEFAULT_BUDGET_MINUTES == TrainSettings().budget_minutes


def test_readme_options_table_matches_train_settings():
    readme = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| (`--[^|]*(?:\\\|[^|]*)*) \| ([^|]+) \|", readme, flags=re.M)
    assert len(rows) >= 10, "README's `roadsense train` options table is missing"
    checked = 0
    for flags_cell, default_cell in rows:
        flags = [f.strip("` ").split()[0] for f in flags_cell.split(" / ")]
        defaults = [d.strip() for d in default_cell.split(" / ")]
        for flag, shown in zip(flags, defaults if len(defaults) == len(flags) else
                               defaults * len(flags), strict=True):
            name = flag.removeprefix("--").replace("-", "_")
            if name not in OPTIONS and name != "budget_minutes":
                continue  # --env: not a setting
            default = getattr(TrainSettings(), name)
            if default is None:
                assert not re.fullmatch(r"[-+0-9.e]+", shown), (flag, shown)
            else:
                assert shown == str(default), f"README says {flag} defaults to {shown}, " \
                    f"TrainSettings to {default}"
            checked += 1
    assert checked >= 10


def test_config_file_then_flags(tmp_path: Path):
    run = tmp_path / "run.toml"
    run.write_text('seed = 3\nwarm_start = "none"\nlr_final = 0\nbudget_minutes = 2.5\n'
                   'entropy_coeff = 0.01\n[env_overrides]\nepisode_s = 20.0\n')
    s = _settings("--config", str(run))
    assert (s.seed, s.warm_start, s.lr_final, s.budget_minutes) == (3, None, None, 2.5)
    assert s.entropy_coeff == 0.01 and s.env_overrides == {"episode_s": 20.0}
    # flags given override the file; flags left at their default do not
    s = _settings("--config", str(run), "--seed", "5", "--warm-start", "v2v_rule",
                  "--env", "episode_s=12", "--max-runtime-minutes", "1")
    assert (s.seed, s.warm_start, s.budget_minutes) == (5, "v2v_rule", 1.0)
    assert s.env_overrides == {"episode_s": 12} and s.lr_final is None
    # no file: the flags and TrainSettings' defaults, as before
    assert asdict(_settings()) == asdict(TrainSettings())
    assert _settings("--debug", "--validation-suite", "none").num_env_runners == 0
    assert _settings("--validation-suite", "none").validation_suite is None


def test_config_file_errors_name_the_key(tmp_path: Path):
    bad = tmp_path / "run.toml"
    bad.write_text("seed = 1\nlearning_rate = 0.1\n")
    with pytest.raises(ConfigError, match="unknown setting 'learning_rate'") as err:
        _settings("--config", str(bad))
    assert str(bad) in str(err.value)
    bad.write_text('seed = "one"\n')
    with pytest.raises(ConfigError, match="seed = 'one' is not a int"):
        _settings("--config", str(bad))
    bad.write_text("seed = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        _settings("--config", str(bad))
    with pytest.raises(ConfigError, match="config file not found"):
        _settings("--config", str(tmp_path / "nope.toml"))
    # through the CLI: one line on stderr, exit 1, before anything starts
    bad.write_text("learning_rate = 0.1\n")
    proc = subprocess.run([sys.executable, "-m", "roadsense", "train", "--config", str(bad)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: {bad}: unknown setting 'learning_rate' (fix: use fields of TrainSettings: "
        f"{', '.join(sorted(f.name for f in fields(TrainSettings)))})"]
