"""Shared test helpers."""

import pytest

from icl_kinetics.cli import main


@pytest.fixture
def cli(capsys):
    """Run the console script in-process: ``cli(argv) -> (exit code, stdout, stderr)``."""

    def run(argv):
        try:
            code = main(list(argv))
        except SystemExit as e:
            code = e.code
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
