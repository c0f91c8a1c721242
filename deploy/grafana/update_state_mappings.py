"""Rewrite the dashboard's SMTP state expression and value mapping from ``SmtpState``.

The "State per target" table shows a prober's one-hot state as one number per target (PromQL cannot
return a label as a cell value); the numbers are the states' positions in the enum. Run this after a
state is added: ``python deploy/grafana/update_state_mappings.py`` (tests/test_deploy_files.py checks
the dashboard against the enum).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from exporter.probers.smtp.result import SmtpState  # noqa: E402

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "connectivity.json"
SELECTOR = 'job=~"$job",module=~"$module",target=~"$target"'
COLOURS = {"ok": "green", "timeout": "orange", "banner_timeout": "orange", "connect_failed": "red",
           "protocol_error": "yellow", "error": "purple"}


def expression(states: list[str]) -> str:
    # Code 0 (ok) has a term too: only the current state's series exists (not one-hot), so without it an
    # "ok" target would have no value at all.
    terms = [f'probe_smtp_state{{{SELECTOR},state="{state}"}} * {code}' for code, state in enumerate(states)]
    terms.append(f'probe_smtp_state{{{SELECTOR},state!~"{"|".join(states)}"}} * 99')
    return "sum without (state) (\n    " + "\n  or ".join(terms) + "\n)"


def mapping(states: list[str], old: dict) -> dict:
    """Codes by enum position; a state keeps the colour it had, a new one gets a default."""
    colours = {option["text"]: option["color"] for option in old.values()}
    options = {str(code): {"text": state, "color": colours.get(state, COLOURS.get(state, "red")), "index": code}
               for code, state in enumerate(states)}
    options["99"] = {"text": "other (see /probe?debug=true)", "color": "text", "index": len(states)}
    return options


def update(dashboard: dict, states: list[str]) -> int:
    changed = 0
    panels = [p for row in dashboard["panels"] for p in [row, *row.get("panels", [])]]
    for panel in panels:
        for target in panel.get("targets", []):
            if "probe_smtp_state" in target.get("expr", "") and re.search(r"\* 99\n\)\Z", target["expr"]):
                target["expr"] = expression(states)
                changed += 1
        for override in panel.get("fieldConfig", {}).get("overrides", []):
            if override["matcher"].get("options") == "SMTP state":
                for prop in override["properties"]:
                    if prop["id"] == "mappings":
                        prop["value"][0]["options"] = mapping(states, prop["value"][0]["options"])
                        changed += 1
    return changed


def main() -> int:
    dashboard = json.loads(DASHBOARD.read_text())
    changed = update(dashboard, [state.value for state in SmtpState])
    DASHBOARD.write_text(json.dumps(dashboard, indent=2) + "\n")
    print(f"updated {changed} expressions and mappings in {DASHBOARD.relative_to(ROOT)}")
    return 0 if changed else 1


if __name__ == "__main__":
    sys.exit(main())
