"""Probers are self-describing plugins: config, exposition, status page, check and the debug report loop
over the table and never special-case one. Proven with a prober that exists only in this test."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass
from enum import StrEnum

import pytest

from exporter.cli import check
from exporter.config.loader import ConfigError, parse_config
from exporter.core import schema
from exporter.core.exposition import Family, one_hot, single
from exporter.probers import table
from exporter.probers.base import Prober
from exporter.probers.connect.dial import connect_target
from exporter.probers.connect.metrics import CONNECT_FAMILIES
from exporter.probers.connect.result import NO_DETAILS, DetailsBase, Fact, ProbeResult
from exporter.probers.connect.settings import TCP_SECTION
from exporter.probing.runner import deadline_result
from tests.helpers.metrics_text import state_of, value


class GreetState(StrEnum):
    GREETED = "greeted"
    SILENT = "silent"
    CONNECT_FAILED = "connect_failed"
    ERROR = "error"


@dataclass(frozen=True)
class GreetSettings:
    word: str = "hello"


@dataclass
class GreetDetails(DetailsBase):
    """What a person reads about a greet result lives on its details type, not on the prober."""

    bytes_read: int

    def facts(self, state, now):
        return [Fact("Bytes read", str(self.bytes_read))]

    def explanations(self):
        return [("silence", "nothing was said")]

    def contract(self):
        return dataclasses.asdict(self)


async def probe_greet(target, module, deadline, resolver) -> ProbeResult:
    result = ProbeResult(state=GreetState.CONNECT_FAILED)
    sock = await connect_target(result, target, module.tcp, deadline, resolver)
    if sock is not None:
        sock.close()
        result.state = GreetState.SILENT
        result.details = GreetDetails(bytes_read=len(module.settings.word))
    return result


GREET = Prober(
    name="greet",
    probe=probe_greet,
    states=GreetState,
    error_state=GreetState.ERROR,
    cut_state=GreetState.SILENT,
    families=CONNECT_FAMILIES
    + (
        Family(
            "probe_greet_state",
            "gauge",
            "Greeting outcome: exactly one state is 1.",
            one_hot("state", list(GreetState), lambda r: str(r.state)),
        ),
        Family(
            "probe_greet_bytes",
            "gauge",
            "Bytes read.",
            single(lambda r: r.details.bytes_read if isinstance(r.details, GreetDetails) else None),
        ),
    ),
    tcp_section=TCP_SECTION,
    section=("greet", schema.Section({"word": schema.Field(schema.string, "hello")}, GreetSettings)),
    default_port=lambda module: 7,
    warnings=lambda module: ["greet.word is the default"] if module.settings.word == "hello" else [],
    columns=("Bytes read",),
)


@pytest.fixture
def greet_prober(monkeypatch):
    monkeypatch.setitem(table.PROBERS, "greet", GREET)


def greet_config(target: str, word: str = "hi"):
    return parse_config(
        f"modules: {{g: {{prober: greet, timeout: 2s, greet: {{word: {word}}}}}}}\n"
        f"targets: [{{target: '{target}', module: g}}]"
    )


def test_config_reads_the_new_probers_section_port_and_warnings(greet_prober):
    config = parse_config("modules: {g: {prober: greet}}\ntargets: [{target: 127.0.0.1, module: g}]", "c.yml")
    assert config.modules["g"].settings == GreetSettings("hello")
    assert config.targets[0].address.port == 7  # the prober's default port
    assert config.warnings == ("c.yml: modules.g: greet.word is the default",)
    with pytest.raises(ConfigError) as caught:
        parse_config("modules: {g: {prober: tcp, greet: {word: x}}}", "c.yml")
    assert caught.value.errors == ["c.yml: modules.g.greet: not used by prober 'tcp'; remove it or change the prober"]


async def test_exposition_status_page_and_debug_report_need_nothing_but_the_table(greet_prober, make_client, listener):
    client = await make_client(greet_config(f"127.0.0.1:{listener}"))
    text = await (await client.get("/metrics")).text()
    assert state_of(text, "probe_greet_state") == "silent"
    assert value(text, "probe_greet_bytes") == 2
    page = await (await client.get("/")).text()
    assert "<th>Bytes read</th>" in page and "<td>2</td>" in page
    report = await (await client.get(f"/probe?target=127.0.0.1:{listener}&module=g&debug=true")).text()
    assert "Bytes read: 2" in report and "silence: nothing was said" in report


async def test_a_prober_that_raises_reports_its_error_state(greet_prober, make_client, listener, monkeypatch):
    async def broken(*args):
        raise RuntimeError("a bug")

    monkeypatch.setitem(table.PROBERS, "greet", dataclasses.replace(GREET, probe=broken))
    client = await make_client(greet_config(f"127.0.0.1:{listener}"))
    text = await (await client.get("/metrics")).text()
    # The HELP promises exactly one series at 1: the prober's own error state, not all zeros.
    assert state_of(text, "probe_greet_state") == "error"
    assert state_of(text, "probe_tcp_state") == "error"


async def test_a_raising_smtp_prober_reports_error_not_all_zero(make_client, listener, monkeypatch):
    async def broken(*args):
        raise AttributeError("'NoneType' object has no attribute 'abort'")

    monkeypatch.setitem(table.PROBERS, "smtp", dataclasses.replace(table.PROBERS["smtp"], probe=broken))
    client = await make_client(
        parse_config(
            f"modules: {{mx: {{prober: smtp, smtp: {{ehlo: probe.test}}}}}}\n"
            f"targets: [{{target: '127.0.0.1:{listener}', module: mx}}]"
        )
    )
    text = await (await client.get("/metrics")).text()
    assert state_of(text, "probe_smtp_state") == "error"


async def test_a_cut_probe_reports_the_probers_cut_state(greet_prober, listener):
    module = greet_config(f"127.0.0.1:{listener}").modules["g"]
    cut = deadline_result(module, 1.0)
    assert cut.state == "silent" and cut.cut_at_deadline


async def test_check_prints_the_probers_facts_and_json_details(greet_prober, listener, capsys):
    config = greet_config(f"127.0.0.1:{listener}")
    module = config.modules["g"]
    result = await check.run_probe(config.targets[0].address, module)
    report = check.human_report(config.targets[0].address, module, result)
    assert "Bytes read: 2" in report and "Reply codes explained:\n  silence: nothing was said" in report
    document = check.json_report(config.targets[0].address, module, result)
    assert '"details": {\n    "bytes_read": 2\n  }' in document


def test_every_registered_prober_is_consistent():
    for name, prober in table.PROBERS.items():
        assert prober.name == name
        assert prober.families[: len(CONNECT_FAMILIES)] == CONNECT_FAMILIES, name
        assert prober.error_state in set(prober.states) and prober.cut_state in set(prober.states)
        assert set(prober.columns) <= {"Banner after", "SMTP replies", "Certificate expires"} or name != "smtp"
        names = [family.name for family in prober.families]
        assert len(names) == len(set(names)), f"{name} lists a family twice"


def test_nothing_imports_the_command_line():
    """The CLI is the outermost layer: no other module may import it (it used to form a cycle)."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            """
import pkgutil, importlib, sys
import exporter
names = [m.name for m in pkgutil.walk_packages(exporter.__path__, 'exporter.')
         if not m.name.startswith('exporter.cli') and m.name != 'exporter.__main__']
for name in names:
    importlib.import_module(name)
print(sorted(name for name in sys.modules if name.startswith('exporter.cli.')) or 'ok')
""",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip() == "ok", done.stderr


def test_the_ehlo_fallback_warns_when_the_host_has_no_fqdn(monkeypatch):
    from exporter.probers.smtp import prober as smtp_plugin

    monkeypatch.setattr(smtp_plugin, "local_fqdn", lambda: "localhost")
    config = parse_config(
        "modules: {mx: {prober: smtp}, named: {prober: smtp, smtp: {ehlo: probe.example.com}}}", "c.yml"
    )
    [warning] = config.warnings
    assert warning.startswith(
        "c.yml: modules.mx: smtp.ehlo is not set and this host has no fully qualified "
        "domain name, so the probe says EHLO localhost;"
    )
    assert "set smtp.ehlo" in warning
    monkeypatch.setattr(smtp_plugin, "local_fqdn", lambda: "probe.example.com")
    assert parse_config("modules: {mx: {prober: smtp}}").warnings == ()


def test_only_a_prober_that_reads_a_greeting_gets_the_greeting_histogram():
    from exporter.continuous.prober import layout_for
    from exporter.core.histogram import HistogramBuckets
    from exporter.probers.smtp.result import SmtpDetails

    assert table.PROBERS["smtp"].reads_greeting and not table.PROBERS["tcp"].reads_greeting
    assert ProbeResult(details=SmtpDetails(banner_seconds=0.0123)).details.greeting_seconds() == 0.0123
    assert ProbeResult().details is NO_DETAILS and NO_DETAILS.greeting_seconds() is None  # cut before any details
    every = HistogramBuckets(histograms=("connect", "banner", "duration"))
    assert layout_for("smtp", every).with_banner and not layout_for("tcp", every).with_banner
    assert not layout_for("smtp", HistogramBuckets()).with_banner  # opt-in: connect time only by default
