"""Key encoding: any provider/model string maps to a key and back, unambiguously."""

from __future__ import annotations

import uuid

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resilience import Breaker, ErrorKind, Settings, Target
from resilience._keys import KeySpace, decode_name, encode_name

names = st.text(min_size=1, max_size=60)


@given(names)
def test_encoding_round_trips(name: str) -> None:
    encoded = encode_name(name)
    assert decode_name(encoded) == name
    assert not set(encoded) & set("{}:*?[]\\ \t\n")


@given(names, names)
def test_distinct_names_give_distinct_keys(a: str, b: str) -> None:
    keys = KeySpace("p")
    if a != b:
        assert keys.target(Target(a, "m")) != keys.target(Target(b, "m"))
        assert keys.target(Target("p", a)) != keys.target(Target("p", b))


@given(names, names)
def test_every_key_of_a_target_shares_one_hash_tag(provider: str, model: str) -> None:
    keys = KeySpace("pfx")
    tags = {k[k.index("{") + 1 : k.index("}")] for k in keys.script_keys(Target(provider, model))}
    assert tags == {encode_name(provider)}


@given(names)
def test_provider_of_index_inverts_index(provider: str) -> None:
    keys = KeySpace("pfx")
    assert keys.provider_of_index(keys.index(provider)) == provider
    assert keys.provider_of_index("other:{x}:idx") is None


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(provider=names, model=names)
def test_hostile_names_round_trip_through_redis(
    redis_url: str, prefix: str, provider: str, model: str
) -> None:
    sub = f"{prefix}-{uuid.uuid4().hex[:8]}"  # fresh keys for every example
    s = Settings(redis_url=redis_url, key_prefix=sub, local_view=False)
    try:
        with Breaker(s) as b:
            t = Target(provider, model)
            b.record_failure(t, ErrorKind.SERVER_ERROR)
            state = b.state(t)
            assert (state.provider, state.model, state.error_count) == (provider, model, 1)
            assert [x.target for x in b.states()] == [t]
            assert b.providers() == [provider]
    finally:
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(match=f"{sub}:*"):
            client.delete(key)
        client.close()


def test_known_hostile_examples(breaker: Breaker) -> None:
    examples = [
        Target("together", "meta-llama/x:y{z}"),
        Target("open}ai", "{gpt}"),
        Target("a:b", "c:d"),
        Target("ünï", "模型/🚀"),
        Target("*", "?[]"),
        Target("p%20", "%"),
    ]
    for t in examples:
        breaker.record_success(t)
    found = {s.target for s in breaker.states()}
    assert found == set(examples)
