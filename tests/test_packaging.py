"""The project's set-up files agree with each other and the CLI lists its commands."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import tomllib

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


def _internal_imports(path: Path, package: str) -> set[str]:
    """Modules of ``package`` that the file imports, at any depth (lazy imports included)."""
    import ast

    module = ".".join(path.relative_to(REPO).with_suffix("").parts)
    if module.endswith(".__init__"):
        module = module[: -len(".__init__")]
    parent = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = parent.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n == package or n.startswith(package + ".")}
    return found


def test_the_package_has_no_import_cycle():
    files = sorted((REPO / "lape_utils").rglob("*.py"))
    modules = {}
    for f in files:
        name = ".".join(f.relative_to(REPO).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = f
    graph = {}
    for name, f in modules.items():
        targets = {t for t in _internal_imports(f, "lape_utils") if t in modules}
        # importing a sub-module runs its package's __init__ first, but the package
        # importing its own modules is how a package is built, not a cycle
        graph[name] = {t for t in targets if t != name and not name.startswith(t + ".")}
    graph["lape_utils"] = set()  # the top level only re-exports (checked below)

    seen, stack, cycles = set(), [], []

    def visit(node):
        if node in stack:
            cycles.append(stack[stack.index(node):] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for nxt in sorted(graph[node]):
            visit(nxt)
        stack.pop()

    for node in sorted(graph):
        visit(node)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
    # and the re-exports of __init__ import nothing that imports lape_utils itself back
    assert all("lape_utils" not in targets for targets in graph.values())


def test_public_api_is_small_and_documented():
    import lape_utils

    assert len(lape_utils.__all__) <= 16
    for name in lape_utils.__all__:
        assert getattr(lape_utils, name).__doc__, name
        assert name in lape_utils.__doc__, f"{name} is exported but the package docstring skips it"


def test_ruff_is_clean():
    res = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", str(REPO)],
        capture_output=True, text=True, cwd=REPO,
    )
    assert res.returncode == 0, res.stdout + res.stderr
