"""The sync and async twins offer the same public methods with the same signatures."""

from __future__ import annotations

import inspect

import pytest

from resilience import AsyncBreaker, AsyncRouter, Breaker, Router

# Methods only one twin has, by design: the context-manager and closing protocols differ,
# and pure methods (no I/O) stay plain functions on both.
ONLY_SYNC = {"close"}
ONLY_ASYNC = {"aclose"}
PURE = {"classify", "guard"}


def public_methods(cls: type) -> dict[str, object]:
    return {
        name: member
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


@pytest.mark.parametrize(("sync", "asyn"), [(Breaker, AsyncBreaker), (Router, AsyncRouter)])
def test_twins_have_the_same_methods_and_signatures(sync: type, asyn: type) -> None:
    s, a = public_methods(sync), public_methods(asyn)
    assert set(s) - ONLY_SYNC == set(a) - ONLY_ASYNC
    for name in set(s) - ONLY_SYNC:
        ss, sa = inspect.signature(s[name]), inspect.signature(a[name])  # type: ignore[arg-type]
        assert list(ss.parameters) == list(sa.parameters), name
        for p, q in zip(ss.parameters.values(), sa.parameters.values(), strict=True):
            assert (p.kind, p.default) == (q.kind, q.default), (name, p.name)
        if name in PURE:
            assert not inspect.iscoroutinefunction(a[name]), name
        else:
            is_async = inspect.iscoroutinefunction(a[name]) or inspect.isasyncgenfunction(a[name])
            assert is_async, f"AsyncX.{name} must be a coroutine function"


def test_constructors_take_the_same_options() -> None:
    for sync, asyn in [(Breaker, AsyncBreaker), (Router, AsyncRouter)]:
        s = inspect.signature(sync.__init__)
        a = inspect.signature(asyn.__init__)
        # the breakers' client arguments are named for what they are (client/async_client
        # vs client/sync_client); every other option is shared
        shared = set(s.parameters) - {"client", "async_client"}
        assert shared <= set(a.parameters), (sync.__name__, shared - set(a.parameters))
