"""Settings: defaults, environment, and clear errors naming the variable."""

from __future__ import annotations

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
