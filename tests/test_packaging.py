"""The project's set-up files agree with each other and the CLI lists its commands."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _pins(lines) -> dict[str, str]:
    pins = {}
    for line in lines:
        m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;#]+)", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def test_environment_yml_and_pyproject_agree_on_every_pin():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    py_pins = _pins(project["dependencies"])
    assert py_pins["torch"] == "2.13.0"
    assert py_pins["nnsight"] == "0.8.1"
    env_lines = [
        line.strip().lstrip("-").strip()
        for line in (REPO / "environment.yml").read_text().splitlines()
    ]
    env_pins = _pins(env_lines)
    assert env_pins, "environment.yml pins nothing"
    for name, version in env_pins.items():
        assert py_pins.get(name) == version, f"{name}: environment.yml {version}, pyproject {py_pins.get(name)}"
    for name, version in py_pins.items():
        assert env_pins.get(name) == version, f"{name}=={version} is pinned in pyproject only"


def test_lape_help_lists_the_commands():
    out = subprocess.run(
        [sys.executable, "-m", "lape_utils", "--help"], capture_output=True, text=True, check=True
    ).stdout
    from lape_utils.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    for name in commands:
        assert name in out
    assert {"info", "run"} <= set(commands)


def test_lape_info_on_a_tiny_model_prints_the_sites():
    out = subprocess.run(
        [sys.executable, "-m", "lape_utils", "info", "--model", "tiny-opt"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "2 layers x 128 neurons" in out
    assert "model.decoder.layers[i].activation_fn" in out


def test_bad_model_on_the_command_line_is_one_line_not_a_traceback(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "lape_utils", "info", "--model", str(tmp_path / "missing")],
        capture_output=True, text=True,
    )
    assert res.returncode == 2
    assert "does not exist" in res.stderr
    assert "Traceback" not in res.stderr
