"""The consortium file (TOML): who is in the consortium and where its SuperLink listens.

```toml
[consortium]
name = "eeg-consortium"

[coordinator]
host = "coord.example.org"   # DNS name, IPv4 or IPv6 address the SuperNodes dial
port = 8000                  # optional
listen = "0.0.0.0"           # optional: the address flower-superlink --host binds

[[sites]]
name = "hospital-a"
```

Ports: flwr 1.42's ``flower-superlink`` serves the Fleet, Control and Runtime APIs on one HTTP(S)
port (``--host``/``--port``, default 127.0.0.1:8000; the old gRPC ports 9092/9093 are only
started behind internal switches, and ``--fleet-api-address``/``--control-api-address`` are
deprecated). So ``port`` defaults to 8000 and ``control_port``, kept for files written for older
Flower releases, must equal it.

``listen``: the SuperLink starts its own SuperExec (the ServerApp runner) and points it at
``--host:--port`` with the wildcard replaced by loopback (``flwr.supercore.address.
resolve_bind_address``: 0.0.0.0 -> 127.0.0.1, :: -> ::1); that client verifies the TLS
certificate like any other. With the default ``listen = "0.0.0.0"`` (reachable by remote sites)
the certificate must therefore also name 127.0.0.1 — without it every ServerApp fails with
"certificate is not valid for '127.0.0.1'" (seen with flwr 1.42).
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# flwr.supercore.constant.SUPERLINK_UVICORN_DEFAULT_PORT in flwr 1.42 (a test keeps them equal);
# not imported because provisioning must not need flwr.
SUPERLINK_DEFAULT_PORT = 8000

SITE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # as SiteConfig.name
_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}
_ALLOWED_KEYS = {"<top>": "[consortium], [coordinator], [[sites]]", "consortium": "name",
                 "coordinator": "host, port, control_port, listen", "sites": "name"}
_WILDCARD_DIAL = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # as flwr's resolve_bind_address


class ConsortiumFileError(ValueError):
    """A consortium file that cannot be read, is not TOML, or has invalid settings."""


class ConsortiumInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$",
                      description="shown in every kit and in the CA's subject")


class CoordinatorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field(description="DNS name or IP address (v4 or v6) the SuperNodes dial")
    port: int = Field(default=SUPERLINK_DEFAULT_PORT, ge=1, le=65535,
                      description="the SuperLink's HTTP(S) port (flower-superlink --port)")
    control_port: int | None = Field(default=None, ge=1, le=65535,
                                     description="must equal port in flwr 1.42 (one port for all APIs)")
    listen: str = Field(default="0.0.0.0", description="the address the SuperLink binds (flower-superlink --host)")

    @field_validator("host", "listen")
    @classmethod
    def _check_host(cls, value: str) -> str:
        return normalise_host(value)

    @model_validator(mode="after")
    def _one_port(self) -> CoordinatorSpec:
        if self.control_port is not None and self.control_port != self.port:
            raise ValueError(
                f"control_port = {self.control_port} differs from port = {self.port}, but flwr 1.42 serves the "
                "Control API on the SuperLink's one port (flower-superlink --port); remove control_port "
                f"or set it to {self.port}")
        return self

    @property
    def is_ip(self) -> bool:
        return _ip(self.host) is not None

    @property
    def is_loopback(self) -> bool:
        ip = _ip(self.host)
        return ip.is_loopback if ip is not None else self.host in _LOOPBACK_NAMES or self.host.endswith(".localhost")

    @property
    def local_dial_host(self) -> str:
        """Where the SuperLink's own SuperExec connects: ``listen``, loopback for a wildcard."""
        return _WILDCARD_DIAL.get(self.listen, self.listen)

    @property
    def superlink_address(self) -> str:
        return format_address(self.host, self.port)

    @property
    def control_address(self) -> str:
        return format_address(self.host, self.control_port or self.port)


class SiteSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=SITE_NAME_PATTERN)


class ConsortiumSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    consortium: ConsortiumInfo
    coordinator: CoordinatorSpec
    sites: list[SiteSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_sites(self) -> ConsortiumSpec:
        # Case-insensitive: site folders must not collide on macOS/Windows file systems.
        seen: dict[str, int] = {}
        for index, site in enumerate(self.sites, start=1):
            key = site.name.lower()
            if key in seen:
                raise ValueError(
                    f"[[sites]] #{index} name: {site.name!r} is already the name of [[sites]] #{seen[key]} "
                    "(names are compared ignoring case); give every site a unique name")
            seen[key] = index
        return self

    @property
    def site_names(self) -> list[str]:
        return [site.name for site in self.sites]


def normalise_host(value: str) -> str:
    """An IP address in canonical form, or a lower-case DNS name; ValueError names the fix."""
    text = value.strip()
    if "://" in text or "/" in text:
        raise ValueError(f"host {value!r} looks like a URL; write only the name or address, "
                         "e.g. host = \"coord.example.org\" (the port goes in `port`)")
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]  # "[::1]" is how an IPv6 address is written in an address, not a host
    ip = _ip(text)
    if ip is not None:
        if getattr(ip, "scope_id", None):
            raise ValueError(f"host {value!r} has an IPv6 zone (%...), which no certificate can name; "
                             "use a global address or a DNS name")
        return str(ip)
    if text.count(":") == 1:
        raise ValueError(f"host {value!r} contains a port; write the port in `port` and only the name in host")
    name = text.lower().rstrip(".")
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_DNS_LABEL.match(label) for label in labels) or labels[-1].isdigit():
        raise ValueError(
            f"host {value!r} is neither an IP address nor a DNS name (dot-separated labels of letters, "
            "digits and hyphens); write e.g. host = \"coord.example.org\", \"10.0.0.5\" or \"2001:db8::5\"")
    return name


def format_address(host: str, port: int) -> str:
    """``host:port`` as Flower parses it: an IPv6 address goes in brackets."""
    ip = _ip(host)
    return f"[{host}]:{port}" if ip is not None and ip.version == 6 else f"{host}:{port}"


def parse_consortium(text: str, *, source: str = "<consortium>") -> ConsortiumSpec:
    """Parse TOML text; errors name ``source`` and every bad key."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConsortiumFileError(f"{source} is not valid TOML: {error}") from None
    try:
        return ConsortiumSpec.model_validate(raw)
    except ValidationError as error:
        raise ConsortiumFileError(format_consortium_errors(error, source=source)) from None


def load_consortium(path: Path) -> ConsortiumSpec:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConsortiumFileError(f"{path}: consortium file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConsortiumFileError(f"{path}: cannot read the consortium file ({error})") from None
    return parse_consortium(text, source=str(path))


def format_consortium_errors(error: ValidationError, *, source: str) -> str:
    lines = [f"{source}: {error.error_count()} invalid setting(s):"]
    for item in error.errors():
        location = _location(item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            section = item["loc"][0] if len(item["loc"]) > 1 else "<top>"
            message = f"unknown key (check the spelling; allowed here: {_ALLOWED_KEYS.get(str(section), '')})"
        elif item["type"] == "string_pattern_mismatch" and item["loc"][0] == "sites":
            message = (f"{_short(item['input'])} is not a valid site name: start with a letter or digit, then "
                       "letters, digits, '.', '_' or '-', at most 64 characters")
        elif item["type"] == "missing":
            message = "missing: this key is required"
        elif item["type"] != "value_error" and "input" in item:
            message = f"{message} (got {_short(item['input'])})"
        lines.append(f"  {location}: {message}" if location else f"  {message}")
    return "\n".join(lines)


def _location(loc: tuple[int | str, ...]) -> str:
    """('sites', 1, 'name') -> '[[sites]] #2 name'; ('coordinator', 'host') -> '[coordinator] host'."""
    parts = list(loc)
    if not parts:
        return ""
    head = parts.pop(0)
    if head == "sites":
        if parts and isinstance(parts[0], int):
            index = parts.pop(0)
            return " ".join([f"[[sites]] #{index + 1}", *map(str, parts)])
        return "[[sites]]"
    if head in {"consortium", "coordinator"}:
        return " ".join([f"[{head}]", *map(str, parts)])
    return ".".join(map(str, [head, *parts]))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
