"""Go (RE2) regular expressions, as written in blackbox_exporter configs, run by Python's ``re``.

Both dialects agree on the common syntax; this rewrites the few things Go accepts and Python
does not (or reads differently), so a ``blackbox.yml`` keeps its meaning:
- a repeated empty assertion: Go takes ``^+OK`` (one or more start-of-text, then ``OK``), Python
  says "nothing to repeat": the assertion is wrapped in ``(?:...)``;
- ``\\z`` (end of text) is Python's ``\\Z``; ``\\Q...\\E`` quotes literally;
- ``(?<name>...)`` is Python's ``(?P<name>...)``;
- ASCII classes inside brackets, ``[[:alpha:]]``.
Patterns work on bytes, so ``\\d``, ``\\w``, ``\\s`` and ``\\b`` are ASCII-only, as in Go.
Not covered (rare in probe configs): Go's ``(?U)`` flag and Unicode classes ``\\pL``; Python rejects them
at load with its own message.
"""

from __future__ import annotations

import re

_POSIX_CLASSES = {
    b"alnum": b"0-9A-Za-z",
    b"alpha": b"A-Za-z",
    b"ascii": b"\\x00-\\x7f",
    b"blank": b"\\t ",
    b"cntrl": b"\\x00-\\x1f\\x7f",
    b"digit": b"0-9",
    b"graph": b"!-~",
    b"lower": b"a-z",
    b"print": b" -~",
    b"punct": b"!-/:-@\\[-`{-~",
    b"space": b"\\t\\n\\v\\f\\r ",
    b"upper": b"A-Z",
    b"word": b"0-9A-Za-z_",
    b"xdigit": b"0-9A-Fa-f",
}


def translate(pattern: bytes) -> bytes:
    """The Python spelling of a Go regular expression (unchanged where the dialects agree)."""
    out = bytearray()
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i : i + 1]
        if c == b"\\" and i + 1 < n:
            escape = pattern[i : i + 2]
            if escape == b"\\Q":
                end = pattern.find(b"\\E", i + 2)
                literal = pattern[i + 2 :] if end < 0 else pattern[i + 2 : end]
                out += re.escape(literal)
                i = n if end < 0 else end + 2
                continue
            token = b"\\Z" if escape == b"\\z" else escape
            i += 2
            if escape in (b"\\A", b"\\z", b"\\b", b"\\B"):
                out += _assertion(token, pattern, i)
            else:
                out += token
            continue
        if c in (b"^", b"$"):
            out += _assertion(c, pattern, i + 1)
            i += 1
            continue
        if pattern.startswith(b"(?<", i) and not pattern.startswith((b"(?<=", b"(?<!"), i):
            out += b"(?P<"
            i += 3
            continue
        if c == b"[":
            end, text = _bracket(pattern, i)
            out += text
            i = end
            continue
        out += c
        i += 1
    return bytes(out)


def _assertion(token: bytes, pattern: bytes, after: int) -> bytes:
    """An empty assertion, grouped when a quantifier follows (Python cannot repeat it bare)."""
    if after < len(pattern) and pattern[after : after + 1] in (b"*", b"+", b"?", b"{"):
        return b"(?:" + token + b")"
    return token


def _bracket(pattern: bytes, start: int) -> tuple[int, bytes]:
    """A bracket expression from ``start`` ('['): (index after it, its Python text)."""
    out = bytearray(b"[")
    i = start + 1
    if pattern[i : i + 1] == b"^":
        out += b"^"
        i += 1
    if pattern[i : i + 1] == b"]":  # a leading ']' is literal in both dialects
        out += b"\\]"
        i += 1
    while i < len(pattern):
        if pattern.startswith(b"[:", i):
            end = pattern.find(b":]", i + 2)
            name = pattern[i + 2 : end] if end > 0 else b""
            negated = name.startswith(b"^")
            ranges = _POSIX_CLASSES.get(name.lstrip(b"^"))
            if ranges is not None and not negated:
                out += ranges
                i = end + 2
                continue
        c = pattern[i : i + 1]
        if c == b"\\" and i + 1 < len(pattern):
            out += pattern[i : i + 2]
            i += 2
            continue
        if c == b"[":  # a literal '[' inside a class: Python warns about possible set syntax
            out += b"\\["
            i += 1
            continue
        out += c
        i += 1
        if c == b"]":
            return i, bytes(out)
    return i, bytes(out)  # unterminated: left for re.compile to report
