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


@pytest.fixture(scope="session", autouse=True)
def _fused_kernel_built_once():
    """Build (or load) the fused attention kernel before any test: on a fresh machine its
    one-time compile note would otherwise land in whichever test first trains a
    transformer, and tests that read stderr line by line would see it."""
    from icl_kinetics.simulate import kernels

    kernels.extension()
