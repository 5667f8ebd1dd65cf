"""Settings: defaults, environment, and clear errors naming the variable."""

from __future__ import annotations

from typing import Any

import pytest

from resilience import ResilienceError, Settings, SettingsError


def test_defaults() -> None:
    s = Settings()
    assert s.redis_url == "redis://localhost:6379/0"
    assert s.key_prefix == "resilience"
    assert s.failure_threshold == 5
    assert s.fail_mode == "open"


def test_environment_and_kwargs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESILIENCE_FAILURE_THRESHOLD", "7")
    monkeypatch.setenv("RESILIENCE_KEY_PREFIX", "svc")
    s = Settings(key_prefix="override")
    assert s.failure_threshold == 7
    assert s.key_prefix == "override"


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"failure_threshold": 0}, "RESILIENCE_FAILURE_THRESHOLD"),
        ({"jitter": 0.5}, "RESILIENCE_JITTER"),
        ({"key_prefix": "bad{tag}"}, "RESILIENCE_KEY_PREFIX"),
        ({"fail_mode": "maybe"}, "RESILIENCE_FAIL_MODE"),
        ({"open_seconds": 100, "max_open_seconds": 10}, "RESILIENCE_MAX_OPEN_SECONDS"),
        ({"redis_url": "http://x"}, "RESILIENCE_REDIS_URL"),
        ({"no_such_field": 1}, "no_such_field"),
    ],
)
def test_invalid_values_name_the_variable(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        Settings(**kwargs)


def test_invalid_environment_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESILIENCE_OPEN_SECONDS", "soon")
    with pytest.raises(ValueError, match="RESILIENCE_OPEN_SECONDS"):
        Settings()


def test_repr_hides_passwords() -> None:
    s = Settings(
        redis_url="redis://user:hunter2@localhost:6379/0",
        database_url="postgresql://u:s3cret@db/x",
    )
    text = repr(s)
    assert "hunter2" not in text
    assert "s3cret" not in text


def test_errors_are_settings_errors_without_passwords() -> None:
    with pytest.raises(SettingsError, match="RESILIENCE_REDIS_URL") as info:
        Settings(redis_url="http://user:hunter2@host/0", database_url="postgresql://u:pw2@h/d")
    assert "hunter2" not in str(info.value)
    with pytest.raises(SettingsError) as info2:
        Settings(open_seconds=100, max_open_seconds=1, database_url="postgresql://u:pw2@h/d")
    assert "pw2" not in str(info2.value)
    assert isinstance(info2.value, ValueError) and isinstance(info2.value, ResilienceError)


def test_durations_accept_the_cli_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESILIENCE_OPEN_SECONDS", "90s")
    monkeypatch.setenv("RESILIENCE_MAX_OPEN_SECONDS", "1h")
    monkeypatch.setenv("RESILIENCE_STATE_TTL_SECONDS", "7d")
    monkeypatch.setenv("RESILIENCE_REDIS_SOCKET_TIMEOUT", "0.5")
    monkeypatch.setenv("RESILIENCE_STORE_RETRY_SECONDS", "0s")
    s = Settings(provider_block_seconds="5m")
    assert (s.open_seconds, s.max_open_seconds, s.state_ttl_seconds) == (90.0, 3600.0, 604800)
    assert (s.redis_socket_timeout, s.store_retry_seconds, s.provider_block_seconds) == (
        0.5,
        0.0,
        300.0,
    )
    with pytest.raises(ValueError, match="invalid duration '5 minutes'"):
        Settings(open_seconds="5 minutes")
    with pytest.raises(ValueError, match="at most 3650d"):
        Settings(open_seconds="99999999999d")
    with pytest.raises(ValueError, match="RESILIENCE_FAILURE_THRESHOLD"):
        Settings(failure_threshold="5m")  # not a duration: no units


def test_a_mistyped_variable_warns_once_with_the_closest_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import uuid
    import warnings

    from resilience._settings import SettingsWarning

    typo = f"RESILIENCE_FAILURE_THRESHOLD_{uuid.uuid4().hex[:4].upper()}"
    monkeypatch.setenv(typo, "3")
    monkeypatch.setenv("RESILIENCE_TEST_SOMETHING", "1")  # the project's own: not a setting
    with pytest.warns(
        SettingsWarning, match=f"{typo} .* did you mean RESILIENCE_FAILURE_THRESHOLD"
    ):
        Settings()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Settings()  # once per process
    monkeypatch.setenv("RESILIENCE_QQQQ", "1")
    with pytest.warns(SettingsWarning, match=r"RESILIENCE_QQQQ in the environment .* ignored$"):
        Settings()


def test_a_dotenv_file(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    env = tmp_path / ".env"
    env.write_text(
        "# the application's file\nRESILIENCE_FAILURE_THRESHOLD=9\nRESILIENCE_OPEN_SECONDS=2m\n"
        "DATABASE_PASSWORD=other-programs\n"
    )
    s = Settings(_env_file=str(env))
    assert (s.failure_threshold, s.open_seconds) == (9, 120.0)
    monkeypatch.setenv("RESILIENCE_FAILURE_THRESHOLD", "4")
    assert Settings(_env_file=str(env)).failure_threshold == 4
    assert Settings(_env_file=str(env), failure_threshold=3).failure_threshold == 3
    default = Settings.model_fields["open_seconds"].default
    assert Settings().open_seconds == default != 120.0  # read only when asked


def test_error_lines_are_short() -> None:
    from resilience._settings import settings_error_lines

    with pytest.raises(SettingsError) as info:
        Settings(failure_threshold=0, jitter=0.5)
    assert info.value.fields == ("failure_threshold", "jitter")
    assert settings_error_lines(info.value) == [
        "failure_threshold (RESILIENCE_FAILURE_THRESHOLD): must be greater than or equal to 1 "
        "(got 0)",
        "jitter (RESILIENCE_JITTER): must be less than or equal to 0.2 (got 0.5)",
    ]
    assert str(info.value) == "2 invalid settings:\n  " + "\n  ".join(info.value.problems)
    assert settings_error_lines(ValueError("plain\n  text")) == ["plain text"]


# --------------------------------------------------------------------------- every problem


def test_one_error_lists_every_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESILIENCE_MIN_CALLS", "many")
    with pytest.raises(SettingsError) as info:
        Settings(
            redis_url="http://u:hunter2@host/0",
            key_prefix="bad{tag}",
            failure_threshold="1.5",
            open_seconds="soon",
            jitter=0.5,
            fail_mode="OPEN",
            local_view="maybe",
            no_such_field=1,
            failure_treshold=3,
        )
    err = info.value
    assert err.fields == (
        "redis_url",
        "key_prefix",
        "failure_threshold",
        "min_calls",
        "open_seconds",
        "jitter",
        "fail_mode",
        "local_view",
        "no_such_field",
        "failure_treshold",
    )
    lines = dict(zip(err.fields, err.problems, strict=True))
    assert lines["redis_url"].startswith("redis_url (RESILIENCE_REDIS_URL): must start with")
    assert lines["redis_url"].endswith("(got 'http://u:***@host/0')")
    assert lines["key_prefix"] == (
        r"key_prefix (RESILIENCE_KEY_PREFIX): must match ^[A-Za-z0-9_.\-]{1,64}$ "
        "(got 'bad{tag}')"
    )
    assert lines["failure_threshold"] == (
        "failure_threshold (RESILIENCE_FAILURE_THRESHOLD): must be a whole number (got '1.5')"
    )
    assert (
        lines["min_calls"]
        == "min_calls (RESILIENCE_MIN_CALLS): must be a whole number (got 'many')"
    )
    assert lines["open_seconds"].startswith(
        "open_seconds (RESILIENCE_OPEN_SECONDS): invalid duration 'soon': use e.g. 90s"
    )
    assert lines["fail_mode"] == (
        "fail_mode (RESILIENCE_FAIL_MODE): must be 'open' or 'closed' (got 'OPEN')"
    )
    assert lines["local_view"].startswith(
        "local_view (RESILIENCE_LOCAL_VIEW): must be true or false"
    )
    assert lines["no_such_field"] == "no_such_field: not a setting"
    assert lines["failure_treshold"] == (
        "failure_treshold: not a setting (did you mean failure_threshold?)"
    )
    text = str(err)
    assert text.startswith("10 invalid settings:\n")
    assert "hunter2" not in text


def test_contradictions_are_listed_with_bad_values() -> None:
    with pytest.raises(SettingsError) as info:
        Settings(
            open_seconds=100,
            max_open_seconds=10,
            failure_threshold=0,
            redis_url="redis+sentinel://s1/m",
            redis_cluster=True,
        )
    # in the order of the settings
    assert info.value.fields == ("redis_cluster", "failure_threshold", "max_open_seconds")
    assert info.value.problems[2] == (
        "max_open_seconds (RESILIENCE_MAX_OPEN_SECONDS): must be >= RESILIENCE_OPEN_SECONDS "
        "(100.0) (got 10.0)"
    )
    # a relation is checked only between valid values: the bad value is the one problem
    with pytest.raises(SettingsError) as info:
        Settings(open_seconds="soon", max_open_seconds=1)
    assert info.value.fields == ("open_seconds",)


@pytest.mark.parametrize(
    ("kwargs", "secret"),
    [
        ({"redis_sentinel_password": "hunter2"}, "hunter2"),  # needs a sentinel URL
        ({"redis_sentinel_password": 1234567}, "1234567"),  # not a string
        ({"redis_url": "user:hunter2@host:6379"}, "hunter2"),  # no scheme: not shown at all
        ({"redis_url": "redis+sentinel://u:hunter2@s1:0/m"}, "hunter2"),
        ({"database_url": 5, "redis_url": "redis://:hunter2@h/0", "jitter": 1}, "hunter2"),
    ],
)
def test_errors_never_show_passwords(kwargs: dict[str, Any], secret: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings(**kwargs)
    assert secret not in str(info.value)
    assert secret not in repr(info.value)


def test_the_error_survives_pickling() -> None:
    import pickle

    with pytest.raises(SettingsError) as info:
        Settings(failure_threshold=0, jitter=0.5)
    again = pickle.loads(pickle.dumps(info.value))
    assert (again.fields, again.problems, str(again)) == (
        info.value.fields,
        info.value.problems,
        str(info.value),
    )


# --------------------------------------------------------------------------- sources


def test_variable_names_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("resilience_failure_threshold", "8")
    monkeypatch.setenv("Resilience_Key_Prefix", "mixed")
    s = Settings()
    assert (s.failure_threshold, s.key_prefix) == (8, "mixed")


def test_precedence_keywords_environment_file_defaults(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = tmp_path / "app.env"
    env.write_text(
        "export RESILIENCE_FAILURE_THRESHOLD=9\n"
        "resilience_min_calls = 30  # a comment\n"
        "RESILIENCE_KEY_PREFIX='from-file'\n"
        'RESILIENCE_DATABASE_SCHEMA="quoted_schema"\n'
        "RESILIENCE_SHADOW\n"  # a bare name sets nothing
    )
    later = tmp_path / "later.env"
    later.write_text("RESILIENCE_MIN_CALLS=40\n")
    monkeypatch.setenv("RESILIENCE_KEY_PREFIX", "from-env")
    s = Settings(_env_file=[env, later], failure_threshold=3)
    assert s.failure_threshold == 3  # keyword over file
    assert s.key_prefix == "from-env"  # environment over file
    assert s.min_calls == 40  # a later file over an earlier one
    assert s.database_schema == "quoted_schema"
    assert s.shadow is False  # default
    s = Settings(_env_file=env)
    assert (s.failure_threshold, s.min_calls) == (9, 30)
    # a missing file is skipped, as pydantic-settings did (the CLI refuses it itself)
    assert Settings(_env_file=tmp_path / "none.env").min_calls == 20


def test_dotenv_variables_may_refer_to_others(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_SETTINGS_REDIS_PASSWORD", "hunter2")
    env = tmp_path / ".env"
    env.write_text("RESILIENCE_REDIS_URL=redis://:${TEST_SETTINGS_REDIS_PASSWORD}@db:6379/2\n")
    s = Settings(_env_file=str(env))
    assert s.redis_url == "redis://:hunter2@db:6379/2"
    assert "hunter2" not in repr(s)


def test_a_mistyped_name_in_a_dotenv_file_warns(tmp_path: Any) -> None:
    import uuid

    from resilience._settings import SettingsWarning

    typo = f"RESILIENCE_OPEN_SECOND_{uuid.uuid4().hex[:4].upper()}"
    env = tmp_path / ".env"
    env.write_text(f"{typo}=5\nRESILIENCE_TEST_X=1\nOTHER=1\n")
    with pytest.warns(SettingsWarning, match=f"{typo} in the env file") as caught:
        Settings(_env_file=str(env))
    assert len(caught) == 1
    assert caught[0].filename == __file__  # points at the caller of Settings()


def test_keywords_are_not_variables() -> None:
    with pytest.raises(SettingsError, match="FAILURE_THRESHOLD: not a setting"):
        Settings(FAILURE_THRESHOLD=3)
    with pytest.raises(SettingsError, match="_env_prefix: not a setting"):
        Settings(_env_prefix="APP_")


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        *[(v, True) for v in (True, 1, 1.0, "1", "true", "True", "TRUE", "yes", "Yes", "on")],
        *[(v, True) for v in ("ON", "t", "y")],
        *[(v, False) for v in (False, 0, 0.0, "0", "false", "FALSE", "no", "off", "f", "n")],
        *[(v, None) for v in ("", " true ", "2", "1.0", "maybe", 2, 0.5, None, b"true")],
    ],
)
def test_booleans(value: Any, expected: bool | None, monkeypatch: pytest.MonkeyPatch) -> None:
    if expected is None:
        with pytest.raises(SettingsError, match="RESILIENCE_SHADOW"):
            Settings(shadow=value)
    else:
        assert Settings(shadow=value).shadow is expected
    if isinstance(value, str):
        monkeypatch.setenv("RESILIENCE_SHADOW", value)
        if expected is None:
            with pytest.raises(SettingsError, match="must be true or false"):
                Settings()
        else:
            assert Settings().shadow is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (7, 7),
        (7.0, 7),
        ("7", 7),
        (" 7 ", 7),
        ("+7", 7),
        ("7.0", 7),
        ("1_000", 1000),
        *[(v, None) for v in ("1.5", 1.5, "7e1", "0x10", "", "seven", "٧", True, None, "7s")],
        *[(v, None) for v in (float("inf"), float("nan"), [7], b"7")],
    ],
)
def test_whole_numbers(value: Any, expected: int | None) -> None:
    if expected is None:
        with pytest.raises(SettingsError, match="RESILIENCE_MIN_CALLS"):
            Settings(min_calls=value)
    else:
        s = Settings(min_calls=value)
        assert s.min_calls == expected and type(s.min_calls) is int


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (2, 2.0),
        (2.5, 2.5),
        ("2.5", 2.5),
        (" 2.5 ", 2.5),
        ("1e1", 10.0),
        ("+3", 3.0),
        *[(v, None) for v in ("inf", "infinity", "nan", float("inf"), float("nan"), True)],
        *[(v, None) for v in ("", "two", "2x", "٢", None, b"2")],
        pytest.param(10**400, None, id="too-large"),
    ],
)
def test_numbers(value: Any, expected: float | None) -> None:
    if expected is None:
        with pytest.raises(SettingsError, match=r"\(RESILIENCE_BACKOFF_FACTOR\): must be a"):
            Settings(backoff_factor=value)
    else:
        s = Settings(backoff_factor=value)
        assert s.backoff_factor == expected and type(s.backoff_factor) is float


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("open_seconds", "90s", 90.0),
        ("open_seconds", " 90S ", 90.0),
        ("open_seconds", "1.5m", 90.0),
        ("open_seconds", "90", 90.0),
        ("max_open_seconds", "1h30m", 5400.0),
        ("max_open_seconds", "7d", 604800.0),
        ("store_retry_seconds", "0s", 0.0),
        ("redis_socket_timeout", "250", 250.0),
        ("state_ttl_seconds", "1.5m", 90),  # a whole number of seconds
        ("state_ttl_seconds", "2w", 1209600),
        ("open_seconds", "0s", None),  # must be > 0
        ("open_seconds", "-5s", None),
        ("open_seconds", "5 minutes", None),
        ("open_seconds", "1h30", None),
        ("state_ttl_seconds", "1.01m", None),  # 60.6 s is not whole
        ("failure_threshold", "5m", None),  # not a duration: no units
        ("backoff_factor", "2s", None),
    ],
)
def test_durations(field: str, value: str, expected: float | None) -> None:
    if expected is None:
        with pytest.raises(SettingsError, match=f"RESILIENCE_{field.upper()}"):
            Settings(**{field: value})
    else:
        got = getattr(Settings(**{field: value}), field)
        assert got == expected and type(got) is type(expected)


def test_strings_and_choices() -> None:
    assert Settings(fail_mode="closed").fail_mode == "closed"
    assert Settings(database_url="").database_url == ""  # not checked beyond its type
    for kwargs in (
        {"fail_mode": "Closed"},
        {"fail_mode": " open"},
        {"key_prefix": "x" * 65},
        {"key_prefix": "ok\n"},
        {"database_schema": "1abc"},
        {"database_url": 5},
        {"redis_sentinel_username": None},
    ):
        with pytest.raises(SettingsError):
            Settings(**kwargs)


# --------------------------------------------------------------------------- the object


def test_model_copy_checks_the_update(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings(key_prefix="copy")
    monkeypatch.setenv("RESILIENCE_FAILURE_THRESHOLD", "9")  # not read again by a copy
    c = s.model_copy(update={"open_seconds": "5m", "local_view": "off"})
    assert (c.open_seconds, c.local_view, c.failure_threshold, c.key_prefix) == (
        300.0,
        False,
        5,
        "copy",
    )
    assert s.open_seconds == 20.0 and s.local_view is True  # the original is unchanged
    assert s.model_copy() == s and s.model_copy() is not s
    with pytest.raises(SettingsError) as info:
        s.model_copy(update={"failure_threshold": 0, "max_open_seconds": 1, "nope": 1})
    assert info.value.fields == ("failure_threshold", "max_open_seconds", "nope")


def test_frozen_equal_hashable_and_picklable() -> None:
    import dataclasses
    import pickle

    s = Settings(
        key_prefix="frozen", redis_sentinel_password="pw", redis_url="redis+sentinel://s/m"
    )
    with pytest.raises(dataclasses.FrozenInstanceError, match="model_copy"):
        s.key_prefix = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del s.key_prefix  # type: ignore[misc]
    assert s == Settings(**s.model_dump())
    assert s != Settings(key_prefix="frozen")
    assert s != "frozen"
    assert hash(s) == hash(s.model_copy())
    assert pickle.loads(pickle.dumps(s)) == s
    assert {s, s.model_copy()} == {s}


def test_model_dump_and_fields() -> None:
    s = Settings()
    dump = s.model_dump()
    assert list(dump) == list(Settings.model_fields)
    assert dump["failure_threshold"] == 5
    dump["failure_threshold"] = 6  # a new dict: the settings are unchanged
    assert s.failure_threshold == 5
    field = Settings.model_fields["jitter"]
    assert (field.default, field.ge, field.le, field.variable) == (0.1, 0, 0.2, "RESILIENCE_JITTER")
    assert field.description.startswith("Random spread of a break")
    assert Settings.model_fields["fail_mode"].choices == ("open", "closed")
    for name, f in Settings.model_fields.items():
        assert f.name == name and f.description
        assert getattr(s, name) == f.default


def test_repr_hides_secrets() -> None:
    s = Settings(
        redis_url="redis+sentinel://app:hunter2@s1:26379/m",
        redis_sentinel_password="s3cret",
        database_url="postgresql://u:pw2@db/x",
    )
    for text in (repr(s), str(s)):
        assert "hunter2" not in text and "s3cret" not in text and "pw2" not in text
    assert "redis_sentinel_password=SecretStr('**********')" in repr(s)
    assert "redis_url='redis+sentinel://app:***@s1:26379/m'" in repr(s)
    assert s.redis_sentinel_password.get_secret_value() == "s3cret"
    assert str(s.redis_sentinel_password) == "**********"
    assert repr(Settings().redis_sentinel_password) == "SecretStr('')"


def test_a_worker_never_imports_pydantic(redis_url: str, prefix: str) -> None:
    import subprocess
    import sys

    code = (
        "import sys, resilience\n"
        "from resilience import Breaker, Settings\n"
        f"with Breaker(Settings(redis_url={redis_url!r}, key_prefix={prefix!r})) as b:\n"
        "    b.guard('openai', 'gpt-4o')(lambda: 1)()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pydantic', 'pydantic_core', 'pydantic_settings', 'dotenv')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
