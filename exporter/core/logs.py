"""Log output as logfmt (Prometheus' default) or JSON, one line per record (a message of several
lines is several records).

Fields come from ``extra=``; a field whose name LogRecord reserves (``module``, ``name``, ...) goes in
``extra={"fields": {...}}`` instead, since ``extra`` may not overwrite a record attribute.
"""

from __future__ import annotations

import json
import logging
import sys
import time

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
_LEVEL_NAMES = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warn",
    logging.ERROR: "error",
    logging.CRITICAL: "error",
}
# Attributes every LogRecord has; anything else was passed with ``extra=`` and is logged as a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def _fields(record: logging.LogRecord) -> dict[str, object]:
    fields: dict[str, object] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
        "level": _LEVEL_NAMES.get(record.levelno, "info"),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for key, value in vars(record).items():
        if key == "fields" and isinstance(value, dict):
            fields.update(value)  # names LogRecord reserves, such as "module", pass through here
        elif key not in _STANDARD and not key.startswith("_"):
            fields[key] = value
    if record.exc_info:
        fields["err"] = logging.Formatter().formatException(record.exc_info)
    return fields


def _logfmt_value(value: object) -> str:
    text = str(value)
    if text and not any(c in text for c in ' "=\\') and text.isprintable():
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _records(record: logging.LogRecord) -> list[dict[str, object]]:
    """The fields of one log line per line of the message. A message of several lines (a summary
    ending in ':' and one problem per line, as a failed reload logs them) becomes one record per
    problem, each with the summary as ``msg`` and the problem as ``detail``: readable, and each
    line found by grepping for the summary, instead of one line with literal "\\n" inside."""
    fields = _fields(record)
    message = str(fields["msg"])
    if "\n" not in message:
        return [fields]
    summary, *details = message.split("\n")
    summary = summary.rstrip().removesuffix(":")
    details = [line for line in details if line.strip()] or [""]
    return [{**fields, "msg": summary, "detail": line} for line in details]


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return "\n".join(
            " ".join(f"{key}={_logfmt_value(value)}" for key, value in fields.items()) for fields in _records(record)
        )


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return "\n".join(json.dumps(fields, default=str, ensure_ascii=False) for fields in _records(record))


def setup_logging(level: str = "info", fmt: str = "logfmt") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    # aiohttp's access log is one line per scrape: only at debug.
    logging.getLogger("aiohttp.access").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
