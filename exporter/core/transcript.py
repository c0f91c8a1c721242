"""The transcript a person reads of a probe's dialogue: server text made safe, and bounded.

One escaper for everything a server sends (SMTP replies, dialogue lines, certificate names) and for what
``check`` prints: a hostile server cannot move the cursor, clear a terminal, reorder text with bidi
controls or add lines.
"""

from __future__ import annotations

MAX_LINES = 200
MAX_LINE = 512


def printable(text: str) -> str:
    """``text`` with every non-printable character (controls, line breaks, bidi overrides) escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def record(transcript: list[str], line: str) -> None:
    """Append ``line`` made printable, cut at MAX_LINE characters; after MAX_LINES lines, say so once."""
    if len(transcript) < MAX_LINES:
        line = printable(line)
        if len(line) > MAX_LINE:
            line = line[:MAX_LINE] + f"... ({len(line) - MAX_LINE} more characters)"
        transcript.append(line)
    elif len(transcript) == MAX_LINES:
        transcript.append(f"... transcript truncated at {MAX_LINES} lines")
