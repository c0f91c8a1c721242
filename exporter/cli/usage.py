"""Command-line usage errors as one line, with the flag meant when a given one is mistyped."""

from __future__ import annotations

import argparse
import difflib
from typing import NoReturn


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse prints the whole usage (nine lines) before the one line that matters; print that
    line alone, with the flag meant when a given one differs only in case or by a typo."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}{_did_you_mean(message, self)} (see --help)\n")


def _did_you_mean(message: str, parser: argparse.ArgumentParser) -> str:
    if not message.startswith("unrecognized arguments: "):
        return ""
    # argparse has no public list of a parser's options; its ``_actions`` is the attribute its own
    # subclasses (like ours) are built on, stable since Python 3.2.
    known = [flag for action in parser._actions for flag in action.option_strings if flag.startswith("--")]
    by_case = {flag.lower(): flag for flag in known}
    for word in message.removeprefix("unrecognized arguments: ").split():
        name = word.split("=", 1)[0]
        if not name.startswith("-"):
            continue
        meant = by_case.get(name.lower()) or next(iter(difflib.get_close_matches(name, known, n=1, cutoff=0.75)), None)
        if meant:
            return f"; did you mean {meant}?"
    return ""
