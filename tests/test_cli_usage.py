"""A usage error on the command line is one line: the problem, and the flag meant when a given one
differs only in case or by a typo (argparse would print nine lines of usage first)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from exporter.cli.main import main


@pytest.mark.parametrize(
    "args, line",
    [
        (
            ["--Config.File=x.yml"],
            "connectivity-exporter: error: unrecognized arguments: --Config.File=x.yml; "
            "did you mean --config.file? (see --help)",
        ),
        (
            ["--config.fiel", "x.yml"],
            "connectivity-exporter: error: unrecognized arguments: --config.fiel x.yml; "
            "did you mean --config.file? (see --help)",
        ),
        (
            ["--WEB.LISTEN-ADDRESS=:1"],
            "connectivity-exporter: error: unrecognized arguments: --WEB.LISTEN-ADDRESS=:1; "
            "did you mean --web.listen-address? (see --help)",
        ),
        (["--bogus"], "connectivity-exporter: error: unrecognized arguments: --bogus (see --help)"),
        (["--config.file"], "connectivity-exporter: error: argument --config.file: expected one argument (see --help)"),
        (["stray"], "connectivity-exporter: error: unrecognized arguments: stray (see --help)"),
    ],
)
def test_usage_error_is_one_line(capsys, args, line):
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == line + "\n"


def test_help_still_prints_the_usage(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("usage: connectivity-exporter")


def test_check_usage_errors_are_one_line_too():
    done = subprocess.run(
        [sys.executable, "-m", "exporter", "check", "127.0.0.1:1", "--Module", "tcp_connect"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "connectivity-exporter check: error: unrecognized arguments: --Module "
        "tcp_connect; did you mean --module? (see --help)"
    ]
