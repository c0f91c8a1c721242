"""Strict loading of the YAML configuration into the typed, immutable objects of ``exporter.model``.

Every independent problem is reported at once, each as one line naming the file, the path inside it
(``targets[3].module``) and what is wrong; unknown keys are errors. A module's sections are parsed with
the schemas its prober declares (``exporter.probers.table``): nothing here knows a prober by name.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from exporter.config import blackbox_file, unusable
from exporter.config import continuous as continuous_config
from exporter.config.model import (
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_DIAGNOSES_IN_FLIGHT,
    DEFAULT_SCRAPE_TIMEOUT,
    DEFAULT_SCRAPE_TIMEOUT_OFFSET,
    Config,
    GlobalSettings,
    ProbeAccess,
    RateLimit,
    TargetConfig,
)
from exporter.core import schema
from exporter.core.address import AddressError, parse_host_port
from exporter.core.configfile import ConfigError, load_yaml, read_config_text
from exporter.core.schema import INVALID, Errors, Field, Invalid, join, kind, section
from exporter.core.vantage import VANTAGE_LABEL, central_url_problem, vantage_problem
from exporter.probers.module import Module
from exporter.probers.table import PROBERS

__all__ = [
    "Config",
    "ConfigError",
    "GlobalSettings",
    "Module",
    "ProbeAccess",
    "RateLimit",
    "TargetConfig",
    "default_port",
    "load_config",
    "parse_config",
    "read_config_text",
    "load_yaml",
]

MAX_LABEL_VALUE_LENGTH = 1024
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
MODULE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")
# Labels the exporter or Prometheus set themselves; a user label of that name would clash.
RESERVED_LABELS = frozenset(
    {
        "target",
        "module",
        "state",
        "stage",
        "capability",
        "mechanism",
        "version",
        "code",
        "instance",
        "job",
        "le",
        "quantile",
        "mx",
        "preference",
        VANTAGE_LABEL,
        "verdict",
        "address",
        "by",
    }
)


def _checked(problem_of: Callable[[Any], str | None], value: Any, path: str, errs: Errors) -> Any:
    problem = problem_of(value)
    return value if problem is None else errs.add(path, problem)


def default_port(module: Module) -> int | None:
    """Port used when a target leaves it out (None: the port is required)."""
    return PROBERS[module.prober].default_port(module)


def _labels(value: Any, path: str, errs: Errors) -> Any:
    if value is None:
        return ()
    if not isinstance(value, dict):
        return errs.add(path, f"expected a mapping of label names to values, got {kind(value)}")
    labels, ok = [], True
    for name, label_value in value.items():
        where = join(path, name)
        if not isinstance(name, str) or not LABEL_NAME.match(name) or name.startswith("__"):
            ok = (
                errs.add(
                    where,
                    f"invalid label name {name!r}: use letters, digits and underscores, "
                    "not starting with a digit or '__'",
                )
                is None
            )
        elif name in RESERVED_LABELS:
            ok = errs.add(where, f"label name {name!r} is reserved (set by the exporter or Prometheus)") is None
        elif isinstance(label_value, bool) or not isinstance(label_value, (str, int)):
            ok = errs.add(where, f"expected a string label value, got {kind(label_value)}") is None
        elif len(str(label_value)) > MAX_LABEL_VALUE_LENGTH:
            ok = errs.add(where, f"label value is longer than {MAX_LABEL_VALUE_LENGTH} characters") is None
        else:
            labels.append((name, str(label_value)))
    return tuple(labels) if ok else INVALID


def _network(value: Any, path: str, errs: Errors) -> Any:
    if not isinstance(value, str):
        return errs.add(path, f"expected a network such as 10.0.0.0/8 or 2001:db8::/32, got {kind(value)}")
    try:
        return ipaddress.ip_network(value)
    except ValueError:
        try:
            loose = ipaddress.ip_network(value, strict=False)
        except ValueError:
            return errs.add(path, f"{value!r} is not a network such as 10.0.0.0/8 or 2001:db8::/32")
        return errs.add(path, f"{value!r} has host bits set; did you mean {loose}?")


def _host_pattern(value: Any, path: str, errs: Errors) -> Any:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.*?-]{1,253}", value):
        return errs.add(
            path,
            f"invalid host name pattern {value!r}: use letters, digits, '.', '-', '_' and the wildcards '*' and '?'",
        )
    return value.lower()


def _port_range(value: Any, path: str, errs: Errors) -> Any:
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    match = re.fullmatch(r"(\d{1,5})(?:-(\d{1,5}))?", text) if isinstance(text, str) else None
    low, high = (int(match.group(1)), int(match.group(2) or match.group(1))) if match else (0, 0)
    if not match or not 1 <= low <= high <= 65535:
        return errs.add(path, f'invalid port or port range {value!r}: expected e.g. 25 or "1024-2048" within 1-65535')
    return (low, high)


def _positive_rate(value: Any, path: str, errs: Errors) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1e6:
        return value
    return errs.add(path, f"expected a number above 0, got {value!r}")


RATE_LIMIT_FIELDS = {
    "requests_per_second": Field(_positive_rate),
    "burst": Field(schema.integer(1, 1_000_000), None),
}
PROBE_ACCESS_FIELDS = {
    "allowed_modules": Field(schema.list_of(schema.string), None),
    "allowed_networks": Field(schema.list_of(_network), ()),
    "allowed_hosts": Field(schema.list_of(_host_pattern), ()),
    "allowed_ports": Field(schema.list_of(_port_range), ()),
    "rate_limit": Field(schema.raw, None),
}
GLOBAL_FIELDS = {
    "max_concurrency": Field(schema.integer(1, 100_000), DEFAULT_MAX_CONCURRENCY),
    "scrape_timeout_offset": Field(schema.duration(0.0, 60.0), DEFAULT_SCRAPE_TIMEOUT_OFFSET),
    "default_scrape_timeout": Field(schema.duration(0.001, 600.0), DEFAULT_SCRAPE_TIMEOUT),
    "vantage": Field(lambda value, path, errs: _checked(vantage_problem, value, path, errs), None),
    "central_url": Field(lambda value, path, errs: _checked(central_url_problem, value, path, errs), None),
    "max_diagnoses_in_flight": Field(schema.integer(1, 256), DEFAULT_MAX_DIAGNOSES_IN_FLIGHT),
}
TARGET_FIELDS = {
    "target": Field(schema.string),
    "module": Field(schema.string),
    "labels": Field(_labels, ()),
    "interval": continuous_config.INTERVAL,  # continuous probing; overrides the module's
}
TOP_FIELDS = {
    "global": Field(schema.raw, None),
    "modules": Field(schema.raw, None),
    "targets": Field(schema.raw, None),
    "probe_access": Field(schema.raw, None),
}


def _module_fields() -> dict[str, Field]:
    """A module's keys: the prober, the timeout, and every section some prober in the table reads."""
    return {
        "prober": Field(schema.choice(*PROBERS)),
        "timeout": Field(schema.duration(0.001, 600.0), 5.0),
        **continuous_config.MODULE_FIELDS,  # interval, histogram_buckets (docs/continuous.md)
        **{name: Field(schema.raw, None) for prober in PROBERS.values() for name in prober.section_names},
    }


# --- blackbox_exporter's other probers: their modules load with a warning and are not probed ---------

BLACKBOX_ONLY_PROBERS = ("http", "icmp", "dns", "grpc", "unix", "websocket")
BLACKBOX_MODULE_KEYS = ("prober", "timeout", "http", "tcp", "icmp", "dns", "grpc", "unix", "websocket")


def unsupported_reason(name: str, prober: str) -> str:
    """One line for a person: why a module of another blackbox_exporter prober is not probed."""
    return (
        f"module {name!r} uses blackbox_exporter's {prober} prober, which connectivity_exporter does not "
        f"implement (supported probers: {', '.join(PROBERS)})"
    )


def _blackbox_only_prober(raw: Any, path: str, errs: Errors) -> str | Invalid | None:
    """For a module of another blackbox_exporter prober, its prober (keys checked by name only); else None."""
    if not isinstance(raw, dict) or raw.get("prober") not in BLACKBOX_ONLY_PROBERS:
        return None
    unknown = schema.unknown_keys(raw, path, BLACKBOX_MODULE_KEYS, errs)
    return INVALID if unknown else raw["prober"]


class _Modules:
    """The modules that loaded, and the names of those that did not (so a reference to one is not
    reported a second time as unknown)."""

    def __init__(self) -> None:
        self.loaded: dict[str, Module] = {}
        self.broken: set[str] = set()
        self.unsupported: dict[str, str] = {}  # blackbox_exporter modules of probers not implemented here
        self.section_ok = True  # False: the modules section itself is missing or not a mapping

    def check_reference(self, name: str, path: str, errs: Errors) -> Module | None:
        module = self.loaded.get(name)
        if module is None and name in self.unsupported:
            errs.add(path, unsupported_reason(name, self.unsupported[name]))
        elif module is None and self.section_ok and name not in self.broken:
            errs.add(path, f"unknown module {name!r} (defined: {', '.join(sorted(self.loaded)) or 'none'})")
        return module


def _module(
    name: Any, raw: Any, module_fields: Mapping[str, Field], errs: Errors, blackbox: bool = False
) -> Module | Invalid:
    path = join("modules", name)
    if not isinstance(name, str) or not MODULE_NAME.match(name):
        return errs.add(path, f"invalid module name {name!r}: use 1-64 letters, digits, '_', '.' or '-'")
    unreadable_before = len(errs.unreadable)
    fields = section(raw, path, module_fields, errs)
    if fields is INVALID:
        return INVALID
    prober = PROBERS[fields["prober"]]
    for key, value in fields.items():
        if (
            key not in ("prober", "timeout", *continuous_config.MODULE_FIELDS, *prober.section_names)
            and value is not None
        ):
            errs.add(join(path, key), f"not used by prober {prober.name!r}; remove it or change the prober")
    tcp = prober.tcp_section.parse(fields["tcp"], join(path, "tcp"), errs)
    if blackbox and prober.name == "tcp" and tcp is not INVALID:
        tcp = blackbox_file.with_blackbox_defaults(tcp, fields["tcp"])
    settings = None
    if prober.section is not None:
        own, spec = prober.section
        settings = spec.parse(fields[own], join(path, own), errs)
    buckets = continuous_config.histogram_buckets(
        fields["histogram_buckets"],
        prober.name,
        join(path, "histogram_buckets"),
        errs,
        fields["histograms"],
        join(path, "histograms"),
    )
    if tcp is INVALID or settings is INVALID or buckets is INVALID:
        return INVALID
    unreadable = errs.unreadable[unreadable_before:]
    reason = unusable.module_reason(path, unreadable) if unreadable else None
    if reason is not None:
        errs.warn(path, unusable.warning_text(reason))
    module = Module(
        name=name,
        prober=prober.name,
        timeout=fields["timeout"],
        tcp=tcp,
        settings=settings,
        interval=fields["interval"],
        histogram_buckets=buckets,
        unusable=reason,
    )
    for warning in prober.warnings(module):
        errs.warn(path, warning)
    return module


def _modules(raw: Any, errs: Errors, blackbox: bool = False) -> _Modules:
    modules = _Modules()
    if not isinstance(raw, dict) or not raw:
        modules.section_ok = False
        if raw is None:
            errs.add("modules", "missing required key")
        elif not isinstance(raw, dict):
            errs.add("modules", f"expected a mapping of module names to modules, got {kind(raw)}")
        else:
            errs.add("modules", "define at least one module")
        return modules
    module_fields = _module_fields()
    for name, raw_module in raw.items():
        other = _blackbox_only_prober(raw_module, join("modules", name), errs)
        if isinstance(other, str) and isinstance(name, str) and MODULE_NAME.match(name):
            modules.unsupported[name] = other
            errs.warn(join("modules", name), f"skipped: {unsupported_reason(name, other)}")
            continue
        module = INVALID if other is INVALID else _module(name, raw_module, module_fields, errs, blackbox)
        if isinstance(module, Module):
            modules.loaded[name] = module
        elif isinstance(name, str):
            modules.broken.add(name)
    if modules.unsupported and not modules.loaded and not modules.broken:
        # A blackbox.yml such as the Helm chart's default (one http module) still loads: the exporter
        # serves its own metrics and reloads; /probe answers 400 for those modules.
        errs.warn(
            "modules", f"no module uses a supported prober ({', '.join(PROBERS)}): this configuration probes nothing"
        )
    return modules


def _targets(raw: Any, modules: _Modules, errs: Errors) -> list[TargetConfig]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        errs.add("targets", f"expected a list, got {kind(raw)}")
        return []
    targets: list[TargetConfig] = []
    seen: dict[tuple[str, str], int] = {}
    for index, item in enumerate(raw):
        path = f"targets[{index}]"
        fields = section(item, path, TARGET_FIELDS, errs)
        if fields is INVALID:
            continue
        module = modules.check_reference(fields["module"], f"{path}.module", errs)
        if module is None:
            continue
        try:
            address = parse_host_port(fields["target"], default_port(module))
        except AddressError as exc:
            errs.add(f"{path}.target", str(exc))
            continue
        key = (str(address), module.name)
        if key in seen:
            errs.add(
                path, f"duplicate target {str(address)!r} with module {module.name!r} (first at targets[{seen[key]}])"
            )
            continue
        seen[key] = index
        targets.append(
            TargetConfig(address=address, module=module.name, labels=fields["labels"], interval=fields["interval"])
        )
    return targets


def _probe_access(raw: Any, modules: _Modules, errs: Errors) -> ProbeAccess | Invalid | None:
    if raw is None:
        return None
    fields = section(raw, "probe_access", PROBE_ACCESS_FIELDS, errs)
    if fields is INVALID:
        return INVALID
    rate_limit = None
    if fields["rate_limit"] is not None:
        rate = section(fields["rate_limit"], "probe_access.rate_limit", RATE_LIMIT_FIELDS, errs)
        if rate is INVALID:
            return INVALID
        burst = rate["burst"] if rate["burst"] is not None else max(1, int(rate["requests_per_second"]))
        rate_limit = RateLimit(float(rate["requests_per_second"]), burst)
    allowed_modules = fields["allowed_modules"]
    if allowed_modules is not None:
        for index, name in enumerate(allowed_modules):
            modules.check_reference(name, f"probe_access.allowed_modules[{index}]", errs)
        allowed_modules = frozenset(allowed_modules)
    return ProbeAccess(
        allowed_modules, fields["allowed_networks"], fields["allowed_hosts"], fields["allowed_ports"], rate_limit
    )


def parse_config(text: str, source: str = "<config>", blackbox: bool | None = None) -> Config:
    """The configuration in ``text``. ``blackbox``: read it as a blackbox.yml (tcp modules take
    blackbox_exporter's defaults, exporter/config/blackbox_file.py); None: decide from its keys."""
    errs = Errors(source)
    raw = load_yaml(text, source)
    if raw is None:
        raise ConfigError([f"{source}: the file is empty; it needs at least a 'modules' section"])
    top = section(raw, "", TOP_FIELDS, errs)
    if top is INVALID:  # not a mapping at all
        raise ConfigError(errs.lines)
    settings = section(top["global"], "global", GLOBAL_FIELDS, errs)
    if blackbox is None:
        blackbox = blackbox_file.is_blackbox_file(raw)
    modules = _modules(top["modules"], errs, blackbox)
    targets = _targets(top["targets"], modules, errs)
    probe_access = _probe_access(top["probe_access"], modules, errs)
    for path, problem in errs.unreadable:
        if not path.startswith("modules."):  # only a module's own probes can fail in its place
            errs.add(path, problem)
    if errs.lines or settings is INVALID or probe_access is INVALID:  # INVALID comes with its error line
        raise ConfigError(errs.lines)
    return Config(
        modules=MappingProxyType(modules.loaded),
        targets=tuple(targets),
        settings=GlobalSettings(**settings),
        source=source,
        probe_access=probe_access,
        warnings=tuple(errs.warnings),
        unsupported_modules=MappingProxyType(modules.unsupported),
        unreadable_files=errs.unreadable_lines(),
    )


def load_config(path: str) -> Config:
    return parse_config(read_config_text(path), source=path)
