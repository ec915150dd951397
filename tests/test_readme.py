"""The README's set-up commands stay true: CI runs exactly the README's test command."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set-up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_two_setup_commands_and_ci_runs_the_test_one():
    main_job, tests = _setup_commands()
    assert main_job.endswith("latentseek-fast run") and "\n" not in main_job
    assert tests.endswith("python -m pytest -q") and "\n" not in tests
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci
    # Both install the same way; torch stays pinned to the local CPU wheel.
    assert main_job.rsplit("&&", 1)[0] == tests.rsplit("&&", 1)[0]
    assert "torch==2.13.0" in tests
