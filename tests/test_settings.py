"""Settings: defaults, environment, and clear errors naming the variable."""

from __future__ import annotations

from typing import Any

import pytest

from resilience import Settings


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


def test_errors_are_pydantic_validation_errors_without_passwords() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="RESILIENCE_REDIS_URL") as info:
        Settings(redis_url="http://user:hunter2@host/0", database_url="postgresql://u:pw2@h/d")
    assert "hunter2" not in str(info.value)
    with pytest.raises(ValidationError) as info2:
        Settings(open_seconds=100, max_open_seconds=1, database_url="postgresql://u:pw2@h/d")
    assert "pw2" not in str(info2.value)


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
    s = Settings(_env_file=str(env))  # type: ignore[call-arg]
    assert (s.failure_threshold, s.open_seconds) == (9, 120.0)
    monkeypatch.setenv("RESILIENCE_FAILURE_THRESHOLD", "4")
    assert Settings(_env_file=str(env)).failure_threshold == 4  # type: ignore[call-arg]
    assert Settings(_env_file=str(env), failure_threshold=3).failure_threshold == 3  # type: ignore[call-arg]
    default = Settings.model_fields["open_seconds"].default
    assert Settings().open_seconds == default != 120.0  # read only when asked


def test_errors_have_no_documentation_link_and_short_lines() -> None:
    from pydantic import ValidationError

    from resilience._settings import settings_error_lines

    with pytest.raises(ValidationError) as info:
        Settings(failure_threshold=0, jitter=0.5)
    text = str(info.value)
    assert "errors.pydantic.dev" not in text and "further information" not in text
    assert [e["type"] for e in info.value.errors()] == ["greater_than_equal", "less_than_equal"]
    assert settings_error_lines(info.value) == [
        "failure_threshold (RESILIENCE_FAILURE_THRESHOLD): Input should be greater than or "
        "equal to 1 (got 0)",
        "jitter (RESILIENCE_JITTER): Input should be less than or equal to 0.2 (got 0.5)",
    ]
