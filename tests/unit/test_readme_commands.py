"""The README's first two commands: one line each, installing into a virtual
environment that the command creates (a stock Debian 12 or Ubuntu 24.04 Python
refuses ``pip install`` outside one: ``externally-managed-environment``), and
``.ci/run`` runs exactly the test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(),
                        re.DOTALL)
    return [b.strip() for b in blocks[:2]]


def test_the_readme_starts_with_two_one_line_commands_into_a_virtual_environment() -> None:
    demo, test = _readme_commands()
    for command in (demo, test):
        assert "\n" not in command, command
        # no python3-venv package needed (Debian and Ubuntu leave ensurepip out) ...
        assert command.startswith("python3 -m venv --without-pip .venv && "), command
        # ... and nothing installed into the system Python, nor forced into it
        assert "python3 -m pip --python .venv/bin/python install pip " in command
        assert not re.search(r"python3 -m pip install|--break-system-packages", command)
    assert demo.endswith("&& .venv/bin/drift-detector demo")
    assert test.endswith("&& .venv/bin/python -m pytest")


def test_ci_runs_exactly_the_readme_test_command() -> None:
    _, test = _readme_commands()
    script = (ROOT / ".ci" / "run").read_text().splitlines()
    commands = [line for line in script if line and not line.startswith(("#", "set ", "cd "))]
    assert commands == [test]
