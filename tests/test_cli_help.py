"""`genie --help` and every subcommand's help teach the user."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("argv, expected", [
    ([], "collect"), (["collect"], "--workers"), (["data"], "verify"),
    (["data", "verify"], "checksum"), (["data", "stats"], "level progress"), (["data", "compare"], "diversity"),
    (["agent", "train"], "resumes"), (["agent", "eval"], "confidence"), (["datasets", "make"], "diverse-test"),
])
def test_help(argv, expected):
    result = subprocess.run([sys.executable, "-m", "cluster.cli", *argv, "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and expected in result.stdout
