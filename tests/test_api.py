"""The public API: what the issues name is exported, sorted, typed and documented."""

from __future__ import annotations

import inspect
import os
import re
from pathlib import Path

import pytest

import resilience
from resilience import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_all_is_sorted_and_complete() -> None:
    assert resilience.__all__ == sorted(resilience.__all__)
    for name in resilience.__all__:
        assert hasattr(resilience, name), name


def test_names_the_issues_promise() -> None:
    from resilience import (  # noqa: F401
        AllTargetsFailedError,
        AsyncBreaker,
        AsyncRouter,
        Breaker,
        CircuitOpenError,
        Classification,
        ErrorKind,
        Router,
        Settings,
        Target,
        TargetState,
        classify,
    )


def test_error_kinds() -> None:
    assert {k.value for k in resilience.ErrorKind} == {
        "rate_limited", "quota_exhausted", "overloaded", "server_error", "timeout",
        "connection", "model_not_found", "endpoint_mismatch", "auth", "permission",
        "context_length", "content_policy", "bad_request", "cancelled", "unknown",
    }  # fmt: skip


def test_public_callables_have_docstrings() -> None:
    for name in resilience.__all__:
        obj = getattr(resilience, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, f"{name} has no docstring"
            for attr, member in vars(obj).items() if inspect.isclass(obj) else ():
                if not attr.startswith("_") and inspect.isfunction(member):
                    assert member.__doc__, f"{name}.{attr} has no docstring"


def test_target_state_fields() -> None:
    fields = set(resilience.TargetState.__dataclass_fields__)
    assert {
        "provider", "model", "state", "error_count", "success_count", "consecutive_errors",
        "trips", "blacklisted", "open_until", "last_error_kind", "last_error_message",
        "last_error_time", "last_success_time", "endpoint_hint",
    } <= fields  # fmt: skip


def test_target_validation() -> None:
    with pytest.raises(ValueError, match="provider"):
        resilience.Target("", "m")
    with pytest.raises(TypeError, match="model"):
        resilience.Target("p", 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at most"):
        resilience.Target("p", "x" * 600)


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    table = set(re.findall(r"^\| `(RESILIENCE_[A-Z_]+)` \|", readme, flags=re.M))
    fields = {f"RESILIENCE_{name.upper()}" for name in Settings.model_fields}
    assert table == fields


def test_readme_quickstart_runs(
    redis_url: str, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quickstart", 1)[1]
    code = re.search(r"```python\n(.*?)```", quick, flags=re.S)
    assert code is not None
    source = (
        code.group(1)
        .replace('"quickstart"', repr(prefix))
        .replace("redis://127.0.0.1:6379/0", redis_url)
    )
    exec(compile(source, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "a reply" in out
    assert "answered by anthropic/claude-sonnet-4" in out


def test_readme_policy_table_is_the_policy() -> None:
    from resilience._policy import policy_table_markdown

    readme = (ROOT / "README.md").read_text()
    assert policy_table_markdown() in readme


def test_the_demo_uses_the_public_api_only() -> None:
    """The demo is an example: it imports ``resilience`` and nothing private."""
    sources = list((ROOT / "examples").rglob("*.py"))
    assert sources
    for path in sources:
        text = path.read_text("utf-8")
        assert not re.search(r"resilience\._|from resilience\.\w", text), path
        assert "import resilience." not in text, path


def test_import_is_light() -> None:
    """A worker's ``import resilience`` loads neither the operator's part (psycopg, the
    report, the snapshot job, the CLI), the router, classification, pydantic nor the demo."""
    import subprocess
    import sys

    code = (
        "import sys, resilience; "
        "print(' '.join(m for m in ('psycopg', 'resilience._report', 'resilience._snapshot', "
        "'resilience._db', 'resilience.cli', 'examples', 'prometheus_client', 'litellm', "
        "'resilience._router', 'resilience._classify', 'pydantic', 'pydantic_settings') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


ONLY_WHEN_USED = (
    "resilience._attempts",  # the router's attempts and AllTargetsFailedError
    "resilience._bulk",  # listings
    "resilience._classification",  # the first failure or hint
    "resilience._compat",  # Needs, adapt()
    "resilience._hooks",  # hook events
    "resilience._states",  # TargetState, ProviderState, TransitionEvent
    "resilience._stream",  # the first stream a guarded call returns
)


def test_a_guarded_success_builds_only_what_it_uses(redis_url: str, prefix: str) -> None:
    """A short-lived process that imports resilience and makes guarded calls that succeed
    loads none of the modules of the classes it does not use (each costs import time: a
    dataclass is about a millisecond to build); each loads at its first use."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from resilience import Breaker, Settings\n"
        f"with Breaker(Settings(redis_url={redis_url!r}, key_prefix={prefix!r})) as b:\n"
        "    call = b.guard('openai', 'gpt-4o')(lambda: 1)\n"
        "    for _ in range(5):\n"
        "        call()\n"
        f"    print(' '.join(m for m in {ONLY_WHEN_USED!r} if m in sys.modules))\n"
        "    b.states()\n"
        "    import resilience\n"
        "    resilience.TargetState, resilience.Classification, resilience.Hook\n"
        f"    print(' '.join(m for m in {ONLY_WHEN_USED!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = out.stdout.split("\n")[:2]
    assert before == ""
    assert set(after.split()) >= {
        "resilience._bulk",
        "resilience._states",
        "resilience._classification",
        "resilience._hooks",
    }


def test_status_command_is_light(redis_url: str, prefix: str) -> None:
    """``resilience status`` reads Redis only: it loads neither psycopg, the report, the
    snapshot job nor the metrics server."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from resilience.cli import main\n"
        "code = main(['status', '--format', 'json'])\n"
        "print(code, ' '.join(m for m in ('psycopg', 'resilience._report', "
        "'resilience._snapshot', 'resilience._db', 'resilience._metrics', 'prometheus_client') "
        "if m in sys.modules))"
    )
    env = {**os.environ, "RESILIENCE_REDIS_URL": redis_url, "RESILIENCE_KEY_PREFIX": prefix}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip().splitlines()[-1].strip() == "0"


def test_readme_short_lived_examples(
    redis_url: str, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The serverless example runs; the Celery one compiles (Celery is not a dependency)."""
    readme = (ROOT / "README.md").read_text()
    part = readme.split("## Short-lived processes", 1)[1].split("\n## ", 1)[0]
    serverless, celery = re.findall(r"```python\n(.*?)```", part, flags=re.S)
    source = serverless.replace('"lambda"', repr(prefix)).replace(
        "redis://127.0.0.1:6379/0", redis_url
    )
    namespace: dict[str, object] = {}
    exec(compile(source, "README.md", "exec"), namespace)
    assert "gpt-4o: an answer to hello" in capsys.readouterr().out
    namespace["breaker"].close()  # type: ignore[attr-defined]
    compile(celery, "README.md", "exec")
