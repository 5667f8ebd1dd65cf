"""Settings: one pydantic-settings class, built by the application and passed down.

Nothing reads the environment at import time: ``Settings()`` reads ``RESILIENCE_*`` variables
when it is constructed, and keyword arguments override them. ``Settings(_env_file=".env")``
also reads a dotenv file (real environment variables win over the file; lines of the file
that are not ``RESILIENCE_*`` settings are ignored, so one file can serve other programs).

Durations (fields named ``*_seconds`` or ``*_timeout``) accept the CLI's forms in
variables and keywords alike: ``90``, ``90s``, ``5m``, ``1h``, ``1h30m``, ``7d``.

A ``RESILIENCE_*`` variable that is not a setting (a typing mistake, most likely) gives one
:class:`SettingsWarning` naming the closest setting, once per process and variable.
Variables of the project's own scripts and tests (``RESILIENCE_TEST_*``,
``RESILIENCE_SERVICES_*``) are not settings and are left alone.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ._durations import parse_duration
from ._redact import redact_url

__all__ = [
    "SentinelAddress",
    "Settings",
    "SettingsWarning",
    "parse_sentinel_url",
    "sentinel_address",
    "settings_error_lines",
]

ENV_PREFIX = "RESILIENCE_"
NOT_SETTINGS = ("RESILIENCE_TEST_", "RESILIENCE_SERVICES_")
"""Prefixes of variables read by the project's scripts and tests, which are not settings."""


class SettingsWarning(UserWarning):
    """A ``RESILIENCE_*`` variable that is not a setting (named with the closest one)."""


class Settings(BaseSettings):
    """Configuration of breakers, routers, the snapshot job and the CLI.

    Every field can be set by keyword or by the environment variable ``RESILIENCE_<FIELD>``
    (upper case). Durations are seconds unless the name says otherwise. Invalid values raise
    ``pydantic.ValidationError`` (a ``ValueError``) at construction, naming the field and its
    variable; URL passwords never appear in the message.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        validate_default=True,
        frozen=True,
        # model_not_found_*: pydantic < 2.10 warns about fields starting with "model_"
        protected_namespaces=(),
    )

    # --- where state lives
    redis_url: str = Field(
        "redis://localhost:6379/0",
        description="Redis URL (redis://, rediss:// for TLS, unix://); user, password and "
        "database number as redis-py accepts them. A master managed by Sentinel: "
        "redis+sentinel://[user:password@]host:port[,host:port...]/master-name[/db] "
        "(rediss+sentinel:// for TLS to the master and the sentinels; the user and password "
        "are the master's). Never logged with its password.",
    )
    redis_cluster: bool = Field(
        False,
        description="Connect to a Redis Cluster (redis_url names any one node). Every key "
        "of a provider shares one hash slot; providers spread over the nodes.",
    )
    redis_sentinel_username: str = Field(
        "",
        description="ACL user for the sentinels of a redis+sentinel:// URL (empty: none, or "
        "only a password).",
    )
    redis_sentinel_password: SecretStr = Field(
        SecretStr(""),
        description="Password for the sentinels of a redis+sentinel:// URL (their "
        "requirepass or the ACL user's); empty: none. Never shown or logged.",
    )
    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/postgres",
        description="PostgreSQL URL for the snapshot job, reports and migrations.",
    )
    database_schema: str = Field(
        "public",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$",
        description="PostgreSQL schema holding the tables.",
    )
    key_prefix: str = Field(
        "resilience",
        pattern=r"^[A-Za-z0-9_.\-]{1,64}$",
        description="Prefix of every Redis key and channel; separates applications and tests.",
    )

    # --- trip rules
    failure_threshold: int = Field(
        5, ge=1, description="Consecutive counted failures that open a target."
    )
    window_seconds: float = Field(
        60.0, gt=0, description="Length of the sliding window for the failure rate (s)."
    )
    failure_rate_threshold: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Failure rate over the window (0-1] that opens a target.",
    )
    min_calls: int = Field(
        20, ge=1, description="Calls needed in the window before the failure rate can trip."
    )
    model_not_found_threshold: int = Field(
        2, ge=1, description="Consecutive model_not_found failures that blacklist a model."
    )

    # --- breaks
    open_seconds: float = Field(
        20.0,
        gt=0,
        description="Break after a trip (s): the fleet probes once per break, so this bounds "
        "the time from a provider's recovery to traffic.",
    )
    backoff_factor: float = Field(
        1.0,
        ge=1,
        description="Each failed probe in a row multiplies the break by this (1: every break "
        "of an outage is as long as the first).",
    )
    max_open_seconds: float = Field(
        600.0, gt=0, description="Cap of every grown break and of a server's Retry-After (s)."
    )
    jitter: float = Field(
        0.1,
        ge=0,
        le=0.2,
        description="Random spread of a break, as a fraction either way (0-0.2).",
    )
    flap_window_seconds: float = Field(
        300.0,
        ge=0,
        description="A trip within this long after a probe closed the target is a flap (s); "
        "0 turns the rule off.",
    )
    flap_factor: float = Field(
        2.0,
        ge=1,
        description="Each flap in a row multiplies the break by this, so a model that keeps "
        "failing again soon after recovering is let back in less and less often.",
    )
    retry_after_floor_seconds: float = Field(
        5.0,
        gt=0,
        description="Shortest break a Retry-After on a server error or overload (503, 529) "
        "sets in place of the computed break (s); max_open_seconds caps it (the cap wins).",
    )
    model_not_found_open_seconds: float = Field(
        21600.0, gt=0, description="Blacklist of a model that does not exist (s)."
    )
    provider_block_seconds: float = Field(
        3600.0,
        gt=0,
        description="Block after auth, permission or quota failures (s); a longer "
        "Retry-After wins.",
    )
    rate_limit_default_seconds: float = Field(
        5.0, gt=0, description="Break after a 429 that gave no Retry-After (s)."
    )
    max_retry_after_seconds: float = Field(
        86400.0, gt=0, description="Largest Retry-After honoured (s); longer ones are capped."
    )

    # --- half-open probing
    half_open_successes: int = Field(
        1, ge=1, description="Probe successes needed to close a target again."
    )
    probe_lease_seconds: float = Field(
        30.0,
        gt=0,
        description="How long one worker holds the probe; a lease of a dead worker expires.",
    )

    # --- Redis housekeeping
    state_ttl_seconds: int = Field(
        7 * 86400,
        ge=60,
        description="Idle time after which a target's state expires (s), added to any break.",
    )
    events_max_len: int = Field(
        10000,
        ge=100,
        description="Transitions kept per provider in the Redis event log (approximate cap).",
    )
    redis_socket_timeout: float = Field(
        0.25, gt=0, description="Redis read/write timeout (s); keep short for fail-open."
    )
    redis_max_connections: int = Field(
        32,
        ge=2,
        description="Connections per breaker and kind (sync, asyncio). Concurrent script "
        "calls share pipelined round trips, so a few suffice; when all are busy a call waits "
        "for one (up to the socket timeout) instead of failing.",
    )
    redis_connect_timeout: float = Field(0.25, gt=0, description="Redis connect timeout (s).")
    store_retry_seconds: float = Field(
        1.0,
        ge=0,
        description="After a Redis failure, how long calls use the in-process breaker before "
        "Redis is tried again (s).",
    )
    fail_mode: Literal["open", "closed"] = Field(
        "open",
        description="'open': calls go ahead when Redis is unreachable (an in-process breaker "
        "keeps protecting). 'closed' (strict): calls are denied instead.",
    )

    # --- local view
    local_view: bool = Field(
        True,
        description="Answer allow() for healthy and open targets from a per-process view kept "
        "current by pub/sub, saving a round trip per call.",
    )
    local_view_max_age_seconds: float = Field(
        5.0,
        gt=0,
        description="Oldest entry of the local view that is trusted (s); bounds staleness if a "
        "pub/sub message is lost.",
    )

    local_view_max_entries: int = Field(
        10_000,
        ge=1,
        description="Most targets the local view holds per breaker (least recently used "
        "dropped first; about 250 bytes each).",
    )
    fallback_max_entries: int = Field(
        10_000,
        ge=1,
        description="Most targets and providers the in-process fallback holds while Redis is "
        "unavailable (least recently written dropped first).",
    )

    # --- batched success accounting
    success_flush_seconds: float = Field(
        1.0,
        ge=0,
        description="A healthy target's successes are summed in-process and written to Redis "
        "this often, one script call per provider (s); failures, probes and anything on a "
        "target that is not healthy stay immediate. 0: every success is written at once.",
    )
    success_flush_count: int = Field(
        1000,
        ge=1,
        description="Write the summed successes sooner, as soon as one target has this many "
        "waiting.",
    )

    # --- history in PostgreSQL
    snapshot_keyframe_seconds: float = Field(
        86400.0,
        gt=0,
        description="A snapshot writes history rows only for targets that changed, and one "
        "for every target when the last such keyframe is this old (s).",
    )

    # --- messages
    max_message_chars: int = Field(
        500, ge=32, description="Stored error messages are redacted and cut to this length."
    )

    # --- rollout switches
    enabled: bool = Field(
        True,
        description="Kill switch: False records nothing and never blocks; calls behave as "
        "without the library.",
    )
    shadow: bool = Field(
        False,
        description="Shadow mode: record and report, log what would have been blocked, "
        "never block.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The usual sources, in the usual order (keywords, environment, dotenv file,
        secrets), with two additions: unknown ``RESILIENCE_*`` names in the environment or
        the dotenv file are warned about, and a dotenv file's other lines are ignored
        rather than refused as extra inputs."""
        return (
            init_settings,
            _Checked(env_settings, "environment"),
            _Checked(dotenv_settings, "env file", only_fields=True),
            file_secret_settings,
        )

    @field_validator("*", mode="before")
    @classmethod
    def _durations_with_units(cls, value: Any, info: ValidationInfo) -> Any:
        """``"5m"`` -> 300.0 for duration fields; anything else is left to the field's type."""
        if isinstance(value, str) and _is_duration(info.field_name or ""):
            try:
                float(value)
            except ValueError:
                return parse_duration(value, allow_zero=True)
        return value

    @model_validator(mode="after")
    def _check_relations(self) -> Settings:
        if self.max_open_seconds < self.open_seconds:
            raise ValueError(
                f"{ENV_PREFIX}MAX_OPEN_SECONDS ({self.max_open_seconds}) must be >= "
                f"{ENV_PREFIX}OPEN_SECONDS ({self.open_seconds})"
            )
        sentinel = _scheme(self.redis_url) in SENTINEL_SCHEMES
        if sentinel and self.redis_cluster:
            raise ValueError(
                f"{ENV_PREFIX}REDIS_CLUSTER=true and a redis+sentinel:// "
                f"{ENV_PREFIX}REDIS_URL exclude each other: a cluster fails over by itself"
            )
        if not sentinel and (
            self.redis_sentinel_username or self.redis_sentinel_password.get_secret_value()
        ):
            raise ValueError(
                f"{ENV_PREFIX}REDIS_SENTINEL_USERNAME and {ENV_PREFIX}REDIS_SENTINEL_PASSWORD "
                f"are for sentinels: {ENV_PREFIX}REDIS_URL must then be a redis+sentinel:// "
                "or rediss+sentinel:// URL"
            )
        return self

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        scheme = _scheme(value)
        if scheme in SENTINEL_SCHEMES:
            parse_sentinel_url(value)  # raises ValueError saying what is wrong
        elif scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                "must start with redis://, rediss://, unix://, redis+sentinel:// or "
                "rediss+sentinel://"
            )
        return value

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _named(exc) from None

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            if name in ("redis_url", "database_url") and isinstance(value, str):
                value = redact_url(value)
            yield name, value


def _is_duration(field: str) -> bool:
    return field.endswith(("_seconds", "_timeout"))


# --------------------------------------------------------------------------- Sentinel URLs

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
SENTINEL_PORT = 26379
"""A sentinel's port when the URL names none."""

_SENTINEL_FORM = "redis+sentinel://[user:password@]host:port[,host:port...]/master-name[/db]"


@dataclass(frozen=True)
class SentinelAddress:
    """A master managed by Sentinel, from a ``redis+sentinel://`` URL.

    Attributes:
        sentinels: the sentinels' ``(host, port)``, in the URL's order.
        master: the master's name in the sentinels' configuration.
        tls: ``rediss+sentinel://``: TLS to the master and to the sentinels.
        options: connection options of the master as redis-py's URL parser gives them
            (``username``, ``password``, ``db``, ``ssl_*`` and other query parameters).
    """

    sentinels: tuple[tuple[str, int], ...]
    master: str
    tls: bool
    options: Mapping[str, Any] = field(default_factory=dict, repr=False)


def sentinel_address(settings: Settings) -> SentinelAddress | None:
    """The sentinels and master of a ``redis+sentinel://`` ``settings.redis_url``, else
    None."""
    if _scheme(settings.redis_url) not in SENTINEL_SCHEMES:
        return None
    return parse_sentinel_url(settings.redis_url)


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def parse_sentinel_url(url: str) -> SentinelAddress:
    """Parses ``redis+sentinel://[user:password@]host[:port][,host[:port]...]/master[/db]``
    (``rediss+sentinel://`` for TLS; query parameters as redis-py accepts them in a Redis
    URL; a port defaults to 26379; IPv6 hosts in brackets).

    Raises:
        ValueError: saying what is missing or wrong (never echoing the password).
    """
    from redis.connection import parse_url

    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme not in SENTINEL_SCHEMES:
        raise ValueError("a sentinel URL starts with redis+sentinel:// or rediss+sentinel://")
    rest = rest.split("#", 1)[0]
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    sentinels = tuple(_host_port(item) for item in hosts.split(",") if item.strip())
    if not sentinels:
        raise ValueError(f"names no sentinel: the form is {_SENTINEL_FORM}")
    parts = [unquote(p) for p in path.split("/")] if path else []
    if not parts or not parts[0]:
        raise ValueError(f"names no master: the form is {_SENTINEL_FORM}")
    if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ValueError(
            f"the path must be /master-name or /master-name/db (a number): {_SENTINEL_FORM}"
        )
    tls = scheme == "rediss+sentinel"
    db = parts[1] if len(parts) == 2 else "0"
    # redis-py's own parser reads the credentials and the query parameters
    plain = f"{'rediss' if tls else 'redis'}://{userinfo}{at}localhost/{db}"
    options = parse_url(plain + (f"?{query}" if query else ""))  # type: ignore[no-untyped-call]
    for key in ("host", "port", "connection_class"):
        options.pop(key, None)
    return SentinelAddress(sentinels, parts[0], tls, options)


def _host_port(item: str) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):  # [v6] or [v6]:port
        host, _, tail = item[1:].partition("]")
        port = tail.removeprefix(":") if tail.startswith(":") else ""
        if tail and not tail.startswith(":"):
            raise ValueError(f"bad sentinel address {item!r}: the form is [v6-address]:port")
    else:
        host, _, port = item.partition(":") if item.count(":") == 1 else (item, "", "")
        if item.count(":") > 1:
            raise ValueError(f"bad sentinel address {item!r}: put an IPv6 address in brackets")
    if not host:
        raise ValueError(f"bad sentinel address {item!r}: no host")
    if not port:
        return host, SENTINEL_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad sentinel address {item!r}: the port must be 1-65535")
    return host, int(port)


def _named(exc: ValidationError) -> ValidationError:
    """The same validation error, each location naming its environment variable too
    (``failure_threshold (RESILIENCE_FAILURE_THRESHOLD)``), URLs shown without passwords,
    and without pydantic's link to its error documentation (the message says it all).

    Still a ``pydantic.ValidationError`` (and so a ``ValueError``), with the same error
    types."""
    details: list[Any] = []
    for err in exc.errors():
        loc = tuple(
            f"{part} ({ENV_PREFIX}{str(part).upper()})" if isinstance(part, str) else part
            for part in err.get("loc", ())
        )
        value = _hide_urls(err.get("input"))
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        # A custom error type carries no documentation link; the type name stays the same.
        kind = PydanticCustomError(err["type"], msg.replace("{", "{{").replace("}", "}}"))
        details.append({"type": kind, "loc": loc, "input": value})
    return ValidationError.from_exception_data("Settings", details)


def settings_error_lines(exc: ValueError) -> list[str]:
    """Short lines for people, one per problem: ``field (VARIABLE): problem (got 'x')``.

    ``exc`` is what :class:`Settings` raised; any other ValueError gives its text."""
    if not isinstance(exc, ValidationError):
        return [" ".join(str(exc).split())]
    lines = []
    for err in exc.errors():
        where = " ".join(str(part) for part in err.get("loc", ())) or "settings"
        problem = " ".join(str(err.get("msg", "invalid value")).split())
        value = err.get("input")
        got = ""
        if err["type"] != "missing" and isinstance(value, str | int | float | bool):
            shown = repr(value)
            got = f" (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
        lines.append(f"{where}: {problem}{got}")
    return lines


# --------------------------------------------------------------------------- unknown variables

_warned: set[str] = set()
_warned_lock = threading.Lock()


def _field_variables() -> dict[str, str]:
    """``RESILIENCE_FAILURE_THRESHOLD`` -> ``failure_threshold`` for every field."""
    return {f"{ENV_PREFIX}{name.upper()}": name for name in Settings.model_fields}


def unknown_variables(names: Iterable[str]) -> list[tuple[str, str | None]]:
    """The ``RESILIENCE_*`` names (case-insensitive) that are not settings, each with the
    closest setting's variable (or None when nothing is close)."""
    known = _field_variables()
    out = []
    for raw in names:
        name = raw.upper()
        if not name.startswith(ENV_PREFIX) or name in known or name.startswith(NOT_SETTINGS):
            continue
        import difflib  # only for an unknown name: keeps Settings() light

        # compare what follows the prefix, which every name shares
        rest = name.removeprefix(ENV_PREFIX)
        close = difflib.get_close_matches(rest, [k.removeprefix(ENV_PREFIX) for k in known], 1)
        out.append((raw, ENV_PREFIX + close[0] if close else None))
    return out


def _warn_unknown(names: Iterable[str], where: str) -> None:
    for name, close in unknown_variables(names):
        key = f"{where}:{name.upper()}"
        with _warned_lock:
            if key in _warned:
                continue
            _warned.add(key)
        hint = f"; did you mean {close}?" if close else ""
        warnings.warn(
            f"{name.upper()} in the {where} is not a resilience setting and is ignored{hint}",
            SettingsWarning,
            stacklevel=2,
        )


class _Checked(PydanticBaseSettingsSource):
    """A settings source that warns about unknown ``RESILIENCE_*`` names it sees, and may
    keep only the values of fields (a dotenv file may hold other programs' variables)."""

    def __init__(
        self, source: PydanticBaseSettingsSource, where: str, *, only_fields: bool = False
    ) -> None:
        super().__init__(source.settings_cls)
        self._source = source
        self._where = where
        self._only_fields = only_fields

    def _set_current_state(self, state: dict[str, Any]) -> None:
        super()._set_current_state(state)
        self._source._set_current_state(state)

    def _set_settings_sources_data(self, states: dict[str, dict[str, Any]]) -> None:
        super()._set_settings_sources_data(states)
        self._source._set_settings_sources_data(states)

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._source.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        data = self._source()
        seen: Mapping[str, Any] = getattr(self._source, "env_vars", None) or {}
        if self._where == "environment":
            seen = os.environ
        _warn_unknown(seen, self._where)
        if self._only_fields:
            return {k: v for k, v in data.items() if k in Settings.model_fields}
        return data


def _hide_urls(value: Any) -> Any:
    """``value`` without URL passwords, nor the values of fields named ``*password*``."""
    if isinstance(value, str) and "://" in value:
        return redact_url(value)
    if isinstance(value, dict):
        return {
            k: "***" if "password" in str(k).lower() and v else _hide_urls(v)
            for k, v in value.items()
        }
    return value
