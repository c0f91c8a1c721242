"""Log lines: a message of several lines (a failed reload's errors) is several proper records,
never one line with a literal backslash-n inside."""

from __future__ import annotations

import json
import logging
import re

import pytest

from exporter.config.loader import ConfigError
from exporter.core.logs import JsonFormatter, LogfmtFormatter

ERRORS = ConfigError(
    [
        "c.yml: targets[0].target: target '127.0.0.1:99999': port 99999 is out of range 1-65535",
        "c.yml: bogus: unknown key (valid keys: global, modules, targets, probe_access)",
    ]
)
LOGFMT_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def record(message: str, *args) -> logging.LogRecord:
    return logging.LogRecord("exporter", logging.ERROR, __file__, 1, message, args, None)


def parse_logfmt(line: str) -> dict[str, str]:
    pairs = LOGFMT_PAIR.findall(line)
    assert " ".join(f"{k}={v}" for k, v in pairs) == line, line  # nothing left unparsed
    return {key: json.loads(value) if value.startswith('"') else value for key, value in pairs}


def test_a_failed_reload_is_one_logfmt_record_per_error():
    text = LogfmtFormatter().format(
        record("configuration reload failed; still serving the previous configuration:\n%s", ERRORS)
    )
    lines = text.split("\n")
    assert len(lines) == 2 and "\\n" not in text
    parsed = [parse_logfmt(line) for line in lines]
    assert {p["msg"] for p in parsed} == {"configuration reload failed; still serving the previous configuration"}
    assert [p["detail"] for p in parsed] == ERRORS.errors
    assert all(p["level"] == "error" and p["logger"] == "exporter" for p in parsed)


def test_a_failed_reload_is_one_json_record_per_error():
    text = JsonFormatter().format(
        record("configuration reload failed; still serving the previous configuration:\n%s", ERRORS)
    )
    parsed = [json.loads(line) for line in text.split("\n")]
    assert [p["detail"] for p in parsed] == ERRORS.errors
    assert parsed[0]["msg"] == "configuration reload failed; still serving the previous configuration"


@pytest.mark.parametrize("formatter", [LogfmtFormatter(), JsonFormatter()])
def test_a_one_line_message_is_one_record_without_detail(formatter):
    text = formatter.format(record("configuration reloaded: %d modules, %d targets", 1, 2))
    assert "\n" not in text and "detail" not in text
