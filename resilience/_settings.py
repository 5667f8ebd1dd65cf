"""Settings: one class, built by the application and passed down.

Nothing reads the environment at import time: ``Settings()`` reads ``RESILIENCE_*`` variables
(names in any case) when it is constructed, and keyword arguments override them.
``Settings(_env_file=".env")`` also reads a dotenv file (real environment variables win over
the file; lines of the file that are not ``RESILIENCE_*`` settings are ignored, so one file
can serve other programs).

Durations (fields named ``*_seconds`` or ``*_timeout``) accept the CLI's forms in
variables and keywords alike: ``90``, ``90s``, ``5m``, ``1h``, ``1h30m``, ``7d``.

Every value is checked at construction (and by :meth:`Settings.model_copy`); one
:class:`~resilience.SettingsError` lists every problem found, each naming the field and its
variable, never showing a password.

A ``RESILIENCE_*`` variable that is not a setting (a typing mistake, most likely) gives one
:class:`SettingsWarning` naming the closest setting, once per process and variable.
Variables of the project's own scripts and tests (``RESILIENCE_TEST_*``,
``RESILIENCE_SERVICES_*``) are not settings and are left alone.

The class is written here rather than with pydantic-settings: ``import pydantic_settings``
alone costs more than a short-lived process's whole use of a breaker (about 130 ms), and the
rules it applied (lax parsing of numbers and booleans, bounds, patterns, one choice of
strings) fit in a page. ``Settings.model_fields``, ``model_copy`` and ``model_dump`` keep
pydantic's names for the code that used them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import stat
import threading
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import InitVar
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar, cast, get_args
from urllib.parse import unquote

from ._durations import parse_duration
from ._exceptions import SettingsError
from ._record import Record
from ._redact import redact_url

if TYPE_CHECKING:
    from typing_extensions import dataclass_transform
else:

    def dataclass_transform(**_: object) -> Any:
        """Typing only: tells type checkers the constructor's keywords are the fields."""
        return lambda obj: obj


__all__ = [
    "SecretStr",
    "SentinelAddress",
    "SettingField",
    "Settings",
    "SettingsError",
    "SettingsWarning",
    "parse_sentinel_url",
    "sentinel_address",
    "settings_error_lines",
]

ENV_PREFIX = "RESILIENCE_"
NOT_SETTINGS = ("RESILIENCE_TEST_", "RESILIENCE_SERVICES_")
"""Prefixes of variables read by the project's scripts and tests, which are not settings."""

FailMode = Literal["open", "closed"]
"""What calls do while Redis is unreachable (``Settings.fail_mode``)."""


class SettingsWarning(UserWarning):
    """A ``RESILIENCE_*`` variable that is not a setting (named with the closest one)."""


class SecretStr:
    """A string that is never shown: ``repr()`` and ``str()`` give ``**********`` (or ``''``
    when empty). Read it with :meth:`get_secret_value`."""

    __slots__ = ("_secret",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"SecretStr takes a str, not {type(value).__name__}")
        self._secret = value

    def get_secret_value(self) -> str:
        """The secret itself."""
        return self._secret

    def __str__(self) -> str:
        return "**********" if self._secret else ""

    def __repr__(self) -> str:
        return f"SecretStr({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretStr) and other._secret == self._secret

    def __hash__(self) -> int:
        return hash(self._secret)

    def __len__(self) -> int:
        return len(self._secret)


class SettingField:
    """One setting, as :attr:`Settings.model_fields` lists it.

    Attributes:
        default: the value when neither a keyword nor a variable gives one.
        description: what the setting does (the README's table says the same).
        ge, gt, le: bounds of a number (>=, >, <=), or None.
        pattern: a regular expression the whole string must match, or None.
        choices: the accepted strings of a setting with a fixed set of values, else ().
        name: the field's name (``failure_threshold``).
        kind: ``"int"``, ``"float"``, ``"bool"``, ``"str"``, ``"secret"`` or ``"choice"``.
    """

    # a plain class, not a dataclass: generating a dataclass's methods costs every
    # process's import about a millisecond
    __slots__ = ("choices", "default", "description", "ge", "gt", "kind", "le", "name", "pattern")

    def __init__(
        self,
        default: Any,
        description: str,
        *,
        ge: float | None = None,
        gt: float | None = None,
        le: float | None = None,
        pattern: str | None = None,
        choices: tuple[str, ...] = (),
    ) -> None:
        self.default = default
        self.description = description
        self.ge, self.gt, self.le = ge, gt, le
        self.pattern = pattern
        self.choices = choices
        self.name = ""  # both set by the class decorator
        self.kind = ""

    @property
    def variable(self) -> str:
        """The environment variable: ``RESILIENCE_FAILURE_THRESHOLD``."""
        return ENV_PREFIX + self.name.upper()

    @property
    def duration(self) -> bool:
        """Whether the value may be written with units (``90s``, ``5m``, ``1h``)."""
        return self.name.endswith(("_seconds", "_timeout"))

    def __repr__(self) -> str:
        return f"SettingField(name={self.name!r}, default={self.default!r}, kind={self.kind!r})"


_T = TypeVar("_T")
_C = TypeVar("_C", bound=type)


def _setting(
    *,
    default: _T,
    description: str,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    pattern: str | None = None,
    choices: tuple[str, ...] = (),
) -> _T:
    """A field of :class:`Settings` (typed as its default for type checkers)."""
    spec = SettingField(default, description, ge=ge, gt=gt, le=le, pattern=pattern, choices=choices)
    return cast(_T, spec)


_KINDS = {"int": "int", "float": "float", "bool": "bool", "str": "str", "SecretStr": "secret"}


@dataclass_transform(kw_only_default=True, frozen_default=True, field_specifiers=(_setting,))
def _settings_class(cls: _C) -> _C:
    """Collects the class's ``_setting(...)`` fields into ``model_fields``, in order.

    For type checkers (``dataclass_transform``) the constructor takes every field as a typed
    keyword and instances are frozen; :class:`Settings` implements both at run time."""
    fields: dict[str, SettingField] = {}
    for name, annotation in cls.__annotations__.items():
        spec = cls.__dict__.get(name)
        if isinstance(spec, SettingField):
            spec.name = name
            spec.kind = "choice" if spec.choices else _KINDS[annotation]
            fields[name] = spec
            delattr(cls, name)
    setattr(cls, "model_fields", fields)  # noqa: B010 (a class attribute mypy cannot see)
    return cls


@_settings_class
class Settings:
    """Configuration of breakers, routers, the snapshot job and the CLI.

    Every field can be set by keyword or by the environment variable ``RESILIENCE_<FIELD>``
    (in any case); keywords win. Durations are seconds unless the name says otherwise.
    Invalid values raise :class:`~resilience.SettingsError` (a ``ValueError``) at
    construction, listing every problem with the field and its variable; URL passwords and
    the sentinel password never appear in the message. Instances are frozen: derive changed
    settings with :meth:`model_copy`.

    ``Settings(_env_file=path)`` also reads a dotenv file (or a sequence of them, later ones
    winning); the environment wins over it. A missing file is skipped.
    """

    model_fields: ClassVar[Mapping[str, SettingField]]
    """Every setting by name, in order (its default, description and bounds)."""

    # --- where state lives
    redis_url: str = _setting(
        default="redis://localhost:6379/0",
        description="Redis URL (redis://, rediss:// for TLS, unix://); user, password and "
        "database number as redis-py accepts them. A master managed by Sentinel: "
        "redis+sentinel://[user:password@]host:port[,host:port...]/master-name[/db] "
        "(rediss+sentinel:// for TLS to the master and the sentinels; the user and password "
        "are the master's). Never logged with its password.",
    )
    redis_cluster: bool = _setting(
        default=False,
        description="Connect to a Redis Cluster (redis_url names any one node). Every key "
        "of a provider shares one hash slot; providers spread over the nodes.",
    )
    redis_sentinel_username: str = _setting(
        default="",
        description="ACL user for the sentinels of a redis+sentinel:// URL (empty: none, or "
        "only a password).",
    )
    redis_sentinel_password: SecretStr = _setting(
        default=SecretStr(""),
        description="Password for the sentinels of a redis+sentinel:// URL (their "
        "requirepass or the ACL user's); empty: none. Never shown or logged.",
    )
    database_url: str = _setting(
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        description="PostgreSQL URL for the snapshot job, reports and migrations.",
    )
    database_schema: str = _setting(
        default="public",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$",
        description="PostgreSQL schema holding the tables.",
    )
    key_prefix: str = _setting(
        default="resilience",
        pattern=r"^[A-Za-z0-9_.\-]{1,64}$",
        description="Prefix of every Redis key and channel; separates applications and tests.",
    )

    # --- trip rules
    failure_threshold: int = _setting(
        default=5, ge=1, description="Consecutive counted failures that open a target."
    )
    window_seconds: float = _setting(
        default=60.0, gt=0, description="Length of the sliding window for the failure rate (s)."
    )
    failure_rate_threshold: float = _setting(
        default=0.5,
        gt=0,
        le=1,
        description="Failure rate over the window (0-1] that opens a target.",
    )
    min_calls: int = _setting(
        default=20, ge=1, description="Calls needed in the window before the failure rate can trip."
    )
    model_not_found_threshold: int = _setting(
        default=2, ge=1, description="Consecutive model_not_found failures that blacklist a model."
    )

    # --- breaks
    open_seconds: float = _setting(
        default=20.0,
        gt=0,
        description="Break after a trip (s): the fleet probes once per break, so this bounds "
        "the time from a provider's recovery to traffic.",
    )
    backoff_factor: float = _setting(
        default=1.0,
        ge=1,
        description="Each failed probe in a row multiplies the break by this (1: every break "
        "of an outage is as long as the first).",
    )
    max_open_seconds: float = _setting(
        default=600.0,
        gt=0,
        description="Cap of every grown break and of a server's Retry-After (s).",
    )
    jitter: float = _setting(
        default=0.1,
        ge=0,
        le=0.2,
        description="Random spread of a break, as a fraction either way (0-0.2).",
    )
    flap_window_seconds: float = _setting(
        default=300.0,
        ge=0,
        description="A trip within this long after a probe closed the target is a flap (s); "
        "0 turns the rule off.",
    )
    flap_factor: float = _setting(
        default=2.0,
        ge=1,
        description="Each flap in a row multiplies the break by this, so a model that keeps "
        "failing again soon after recovering is let back in less and less often.",
    )
    retry_after_floor_seconds: float = _setting(
        default=5.0,
        gt=0,
        description="Shortest break a Retry-After on a server error or overload (503, 529) "
        "sets in place of the computed break (s); max_open_seconds caps it (the cap wins).",
    )
    model_not_found_open_seconds: float = _setting(
        default=21600.0, gt=0, description="Blacklist of a model that does not exist (s)."
    )
    provider_block_seconds: float = _setting(
        default=3600.0,
        gt=0,
        description="Block after auth, permission or quota failures (s); a longer "
        "Retry-After wins.",
    )
    rate_limit_default_seconds: float = _setting(
        default=5.0, gt=0, description="Break after a 429 that gave no Retry-After (s)."
    )
    max_retry_after_seconds: float = _setting(
        default=86400.0,
        gt=0,
        description="Largest Retry-After honoured (s); longer ones are capped.",
    )

    # --- half-open probing
    half_open_successes: int = _setting(
        default=1, ge=1, description="Probe successes needed to close a target again."
    )
    probe_lease_seconds: float = _setting(
        default=30.0,
        gt=0,
        description="How long one worker holds the probe; a lease of a dead worker expires.",
    )

    # --- Redis housekeeping
    state_ttl_seconds: int = _setting(
        default=7 * 86400,
        ge=60,
        description="Idle time after which a target's state expires (s), added to any break.",
    )
    events_max_len: int = _setting(
        default=10000,
        ge=100,
        description="Transitions kept per provider in the Redis event log (approximate cap).",
    )
    redis_socket_timeout: float = _setting(
        default=0.25, gt=0, description="Redis read/write timeout (s); keep short for fail-open."
    )
    redis_max_connections: int = _setting(
        default=32,
        ge=2,
        description="Connections per breaker and kind (sync, asyncio). Concurrent script "
        "calls share pipelined round trips, so a few suffice; when all are busy a call waits "
        "for one (up to the socket timeout) instead of failing.",
    )
    redis_connect_timeout: float = _setting(
        default=0.25, gt=0, description="Redis connect timeout (s)."
    )
    store_retry_seconds: float = _setting(
        default=1.0,
        ge=0,
        description="After a Redis failure, how long calls use the in-process breaker before "
        "Redis is tried again (s).",
    )
    fail_mode: FailMode = _setting(
        default="open",
        choices=get_args(FailMode),
        description="'open': calls go ahead when Redis is unreachable (an in-process breaker "
        "keeps protecting). 'closed' (strict): calls are denied instead.",
    )

    # --- local view
    local_view: bool = _setting(
        default=True,
        description="Answer allow() for healthy and open targets from a per-process view kept "
        "current by pub/sub, saving a round trip per call.",
    )
    local_view_max_age_seconds: float = _setting(
        default=5.0,
        gt=0,
        description="Oldest entry of the local view that is trusted (s); bounds staleness if a "
        "pub/sub message is lost.",
    )

    local_view_max_entries: int = _setting(
        default=10_000,
        ge=1,
        description="Most targets the local view holds per breaker (least recently used "
        "dropped first; about 250 bytes each).",
    )
    fallback_max_entries: int = _setting(
        default=10_000,
        ge=1,
        description="Most targets and providers the in-process fallback holds while Redis is "
        "unavailable (least recently written dropped first).",
    )

    # --- batched success accounting
    success_flush_seconds: float = _setting(
        default=1.0,
        ge=0,
        description="A healthy target's successes are summed in-process and written to Redis "
        "this often, one script call per provider (s); failures, probes and anything on a "
        "target that is not healthy stay immediate. 0: every success is written at once.",
    )
    success_flush_count: int = _setting(
        default=1000,
        ge=1,
        description="Write the summed successes sooner, as soon as one target has this many "
        "waiting.",
    )

    # --- history in PostgreSQL
    snapshot_keyframe_seconds: float = _setting(
        default=86400.0,
        gt=0,
        description="A snapshot writes history rows only for targets that changed, and one "
        "for every target when the last such keyframe is this old (s).",
    )

    # --- messages
    max_message_chars: int = _setting(
        default=500, ge=32, description="Stored error messages are redacted and cut to this length."
    )

    # --- rollout switches
    enabled: bool = _setting(
        default=True,
        description="Kill switch: False records nothing and never blocks; calls behave as "
        "without the library.",
    )
    shadow: bool = _setting(
        default=False,
        description="Shadow mode: record and report, log what would have been blocked, "
        "never block.",
    )

    _env_file: InitVar[str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None] = None

    if not TYPE_CHECKING:  # type checkers see the typed keywords dataclass_transform gives

        def __init__(self, **values: Any) -> None:
            env_file = values.pop("_env_file", None)
            self.__dict__.update(_validated(_gathered(values, env_file)))

    def model_copy(
        self, *, update: Mapping[str, Any] | None = None, deep: bool = False
    ) -> Settings:
        """A copy with the values in ``update`` changed, checked like the constructor's
        (unlike pydantic's ``model_copy``, which trusts them); the environment is not read
        again. ``deep`` is accepted for pydantic's signature: values are immutable anyway.

        Raises:
            SettingsError: a value of ``update`` is invalid or not a setting.
        """
        copy = object.__new__(type(self))
        copy.__dict__.update(_validated({**self.__dict__, **(update or {})}))
        return copy

    def model_dump(self) -> dict[str, Any]:
        """Every setting by name, as a new dict (``Settings(**s.model_dump()) == s``; the
        sentinel password stays a :class:`SecretStr`)."""
        return dict(self.__dict__)

    def __setattr__(self, name: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(
            f"Settings are frozen: use model_copy(update={{{name!r}: ...}})"
        )

    def __delattr__(self, name: str) -> None:
        raise dataclasses.FrozenInstanceError(f"Settings are frozen: cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash(tuple(self.__dict__.values()))

    def __repr__(self) -> str:
        shown = (f"{name}={_shown_value(name, value)!r}" for name, value in self.__dict__.items())
        return f"{type(self).__name__}({', '.join(shown)})"


def _shown_value(name: str, value: Any) -> Any:
    """``value`` as ``repr`` shows it: URLs without their passwords."""
    if name in ("redis_url", "database_url") and isinstance(value, str):
        return redact_url(value)
    return value


# --------------------------------------------------------------------------- sources


def _gathered(keywords: dict[str, Any], env_file: Any) -> dict[str, Any]:
    """The raw values of the settings: keywords over environment variables over the dotenv
    file. Unknown ``RESILIENCE_*`` names in the environment and the file are warned about;
    unknown keywords are kept (the check refuses them)."""
    environ = {
        name.upper(): value
        for name, value in os.environ.items()
        if name[: len(ENV_PREFIX)].upper() == ENV_PREFIX
    }
    _warn_unknown(environ, "environment")
    values: dict[str, Any] = {}
    if env_file is not None:
        from_file = _read_env_files(env_file)
        _warn_unknown(from_file, "env file")
        values.update(_known(from_file))
    values.update(_known(environ))
    values.update(keywords)
    return values


def _known(variables: Mapping[str, str]) -> dict[str, str]:
    """The values of the variables that are settings, by field name."""
    return {_VARIABLES[name]: value for name, value in variables.items() if name in _VARIABLES}


def _read_env_files(env_file: Any) -> dict[str, str]:
    """The ``NAME=value`` lines of the dotenv file(s) (names upper-cased; later files win),
    parsed by python-dotenv as pydantic-settings did (quotes, ``export``, ``${VAR}``)."""
    from dotenv import dotenv_values  # only when a file is asked for

    paths = [env_file] if isinstance(env_file, str | os.PathLike) else list(env_file)
    found: dict[str, str] = {}
    for path in paths:
        path = os.path.expanduser(path)
        try:
            mode = os.stat(path).st_mode
        except OSError:
            continue  # a missing file is skipped, as pydantic-settings did
        if stat.S_ISREG(mode) or stat.S_ISFIFO(mode):
            for name, value in dotenv_values(path, encoding="utf-8").items():
                if value is not None:  # a bare NAME line sets nothing
                    found[name.upper()] = value
    return found


# --------------------------------------------------------------------------- checks

_HIDDEN = object()
"""In a problem, in place of a value that must not be shown."""


def _validated(values: Mapping[str, Any]) -> dict[str, Any]:
    """Every setting's value, converted and checked; raises :class:`SettingsError` listing
    every problem (bad values, settings that contradict each other, unknown names)."""
    fields = Settings.model_fields
    good: dict[str, Any] = {}
    problems: list[tuple[str, str, Any]] = []
    for name, spec in fields.items():
        raw = values.get(name, spec.default)
        try:
            good[name] = _converted(spec, raw)
        except ValueError as exc:
            problems.append((name, str(exc), raw))
    problems.extend(_contradictions(good))
    order = {name: i for i, name in enumerate(fields)}
    problems.sort(key=lambda problem: order[problem[0]])
    for name in values:
        if name not in fields:
            problems.append((name, _not_a_setting(name), _HIDDEN))
    if problems:
        raise SettingsError([(name, _line(name, what, raw)) for name, what, raw in problems])
    return good


def _converted(spec: SettingField, value: Any) -> Any:
    """``value`` as the setting's type, within its bounds; ValueError saying what is wrong."""
    if spec.duration and isinstance(value, str) and not _is_number(value):
        value = parse_duration(value, allow_zero=True)
    value = _CONVERTERS[spec.kind](value, spec)
    if spec.ge is not None and not value >= spec.ge:
        raise ValueError(f"must be greater than or equal to {spec.ge}")
    if spec.gt is not None and not value > spec.gt:
        raise ValueError(f"must be greater than {spec.gt}")
    if spec.le is not None and not value <= spec.le:
        raise ValueError(f"must be less than or equal to {spec.le}")
    if spec.pattern is not None and not re.fullmatch(spec.pattern, value):
        raise ValueError(f"must match {spec.pattern}")
    check = _CHECKS.get(spec.name)
    if check is not None:
        check(value)
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})
_WHOLE = r"\s*([+-]?[0-9]+(?:_[0-9]+)*)(?:\.0*)?\s*"
"""A whole number as text: ``5``, ``+5``, `` 5 ``, ``1_000``, ``5.0`` (as pydantic read it)."""


def _to_int(value: Any, spec: SettingField) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and (match := re.fullmatch(_WHOLE, value, re.ASCII)):
        return int(match.group(1))
    raise ValueError("must be a whole number")


def _to_float(value: Any, spec: SettingField) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("must be a number")
    if isinstance(value, str) and not value.isascii():
        raise ValueError("must be a number")  # float() would read other scripts' digits
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise ValueError("must be a number") from None
    if math.isnan(number):
        raise ValueError("must be a number")
    if math.isinf(number):
        raise ValueError("must be a finite number")
    return number


def _to_bool(value: Any, spec: SettingField) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in _TRUE:
        return True
    if isinstance(value, str) and value.lower() in _FALSE:
        return False
    raise ValueError("must be true or false (also 1/0, yes/no, on/off)")


def _to_str(value: Any, spec: SettingField) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _to_secret(value: Any, spec: SettingField) -> SecretStr:
    if isinstance(value, SecretStr):
        return value
    return SecretStr(_to_str(value, spec))


def _to_choice(value: Any, spec: SettingField) -> str:
    if not isinstance(value, str) or value not in spec.choices:
        raise ValueError("must be " + " or ".join(repr(c) for c in spec.choices))
    return value


_CONVERTERS = {
    "int": _to_int,
    "float": _to_float,
    "bool": _to_bool,
    "str": _to_str,
    "secret": _to_secret,
    "choice": _to_choice,
}


def _check_redis_url(value: str) -> None:
    scheme = _scheme(value)
    if scheme in SENTINEL_SCHEMES:
        parse_sentinel_url(value)  # raises ValueError saying what is wrong
    elif scheme not in ("redis", "rediss", "unix"):
        raise ValueError(
            "must start with redis://, rediss://, unix://, redis+sentinel:// or rediss+sentinel://"
        )


_CHECKS = {"redis_url": _check_redis_url}
"""Checks of one field beyond its type and bounds (ValueError saying what is wrong)."""


def _contradictions(good: Mapping[str, Any]) -> Iterator[tuple[str, str, Any]]:
    """Valid values that exclude each other, as problems of the field to change."""
    opened, cap = good.get("open_seconds"), good.get("max_open_seconds")
    if opened is not None and cap is not None and cap < opened:
        yield "max_open_seconds", f"must be >= {ENV_PREFIX}OPEN_SECONDS ({opened})", cap
    url = good.get("redis_url")
    if url is None:
        return
    sentinel = _scheme(url) in SENTINEL_SCHEMES
    if sentinel and good.get("redis_cluster"):
        yield (
            "redis_cluster",
            f"a redis+sentinel:// {ENV_PREFIX}REDIS_URL excludes a cluster: a cluster fails "
            "over by itself",
            True,
        )
    if not sentinel:
        for name in ("redis_sentinel_username", "redis_sentinel_password"):
            value = good.get(name)
            if value:
                yield (
                    name,
                    f"is for sentinels: {ENV_PREFIX}REDIS_URL must then be a redis+sentinel:// "
                    "or rediss+sentinel:// URL",
                    value,
                )


def _not_a_setting(name: str) -> str:
    import difflib  # only for a mistake: keeps Settings() light

    close = difflib.get_close_matches(name, list(Settings.model_fields), 1)
    return "not a setting" + (f" (did you mean {close[0]}?)" if close else "")


def _line(name: str, problem: str, value: Any) -> str:
    """``field (VARIABLE): problem (got 'x')``; the value only when it may be shown."""
    spec = Settings.model_fields.get(name)
    where = f"{name} ({spec.variable})" if spec is not None else name
    problem = " ".join(problem.split())
    shown = _printable(spec, value)
    if shown is None or shown in problem:
        return f"{where}: {problem}"
    return f"{where}: {problem} (got {shown if len(shown) <= 60 else shown[:57] + '...'})"


def _printable(spec: SettingField | None, value: Any) -> str | None:
    """``repr(value)`` when a problem may show it: never a secret, URLs without their
    passwords, and no URL-ish text that might hold one."""
    if spec is None or spec.kind == "secret" or isinstance(value, SecretStr):
        return None
    if value is _HIDDEN:
        return None
    if value is not None and not isinstance(value, str | int | float | bool):
        return f"a {type(value).__name__}"
    if isinstance(value, str) and spec.name.endswith("_url"):
        if "://" in value:
            return repr(redact_url(value))
        if "@" in value:
            return None
    return repr(value)


def settings_error_lines(exc: ValueError) -> list[str]:
    """Short lines for people, one per problem: ``field (VARIABLE): problem (got 'x')``.

    ``exc`` is what :class:`Settings` raised; any other ValueError gives its text."""
    if isinstance(exc, SettingsError):
        return list(exc.problems)
    return [" ".join(str(exc).split())]


# --------------------------------------------------------------------------- Sentinel URLs

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
SENTINEL_PORT = 26379
"""A sentinel's port when the URL names none."""

_SENTINEL_FORM = "redis+sentinel://[user:password@]host:port[,host:port...]/master-name[/db]"


class SentinelAddress(Record):
    """A master managed by Sentinel, from a ``redis+sentinel://`` URL.

    Attributes:
        sentinels: the sentinels' ``(host, port)``, in the URL's order.
        master: the master's name in the sentinels' configuration.
        tls: ``rediss+sentinel://``: TLS to the master and to the sentinels.
        options: connection options of the master as redis-py's URL parser gives them
            (``username``, ``password``, ``db``, ``ssl_*`` and other query parameters).
    """

    __slots__ = ("master", "options", "sentinels", "tls")

    def __init__(
        self,
        sentinels: tuple[tuple[str, int], ...],
        master: str,
        tls: bool,
        options: Mapping[str, Any] = MappingProxyType({}),
    ) -> None:
        self.sentinels = sentinels
        self.master = master
        self.tls = tls
        self.options = options

    def __repr__(self) -> str:  # the options hold the password: never shown
        return (
            f"SentinelAddress(sentinels={self.sentinels!r}, master={self.master!r}, tls={self.tls})"
        )


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


# --------------------------------------------------------------------------- unknown variables

_VARIABLES = {spec.variable: name for name, spec in Settings.model_fields.items()}
"""``RESILIENCE_FAILURE_THRESHOLD`` -> ``failure_threshold`` for every field."""

_warned: set[str] = set()
_warned_lock = threading.Lock()


def unknown_variables(names: Iterable[str]) -> list[tuple[str, str | None]]:
    """The ``RESILIENCE_*`` names (case-insensitive) that are not settings, each with the
    closest setting's variable (or None when nothing is close)."""
    out = []
    for raw in names:
        name = raw.upper()
        if not name.startswith(ENV_PREFIX) or name in _VARIABLES or name.startswith(NOT_SETTINGS):
            continue
        import difflib  # only for an unknown name: keeps Settings() light

        # compare what follows the prefix, which every name shares
        rest = name.removeprefix(ENV_PREFIX)
        known = [k.removeprefix(ENV_PREFIX) for k in _VARIABLES]
        close = difflib.get_close_matches(rest, known, 1)
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
            stacklevel=4,  # the caller of Settings()
        )
