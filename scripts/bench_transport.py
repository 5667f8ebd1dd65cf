"""Overhead of GuardedTransport on a healthy target: the same requests to the demo's fake
provider on loopback through a plain httpx2 client and through a guarded one (prints medians
and 99th percentiles in microseconds, and their difference). Needs Redis (scripts/services)."""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid

import httpx2

from examples.demo.provider import FakeProvider
from resilience import Breaker, GuardedTransport, Settings


def timed(client: httpx2.Client, url: str, n: int) -> list[float]:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    out = []
    for _ in range(n):
        start = time.perf_counter()
        client.post(url, json=body).raise_for_status()
        out.append((time.perf_counter() - start) * 1e6)
    return out


def summary(name: str, samples: list[float]) -> float:
    median = statistics.median(samples)
    p99 = sorted(samples)[int(len(samples) * 0.99) - 1]
    print(f"{name:10s} median {median:8.0f} us   p99 {p99:8.0f} us")
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=2000, help="requests per client (2000)")
    args = parser.parse_args()
    redis_url = os.environ.get("RESILIENCE_REDIS_URL", "redis://127.0.0.1:6379/0")
    settings = Settings(redis_url=redis_url, key_prefix=f"bench-{uuid.uuid4().hex[:8]}")
    with FakeProvider(latency_s=0.0) as provider, Breaker(settings) as breaker:
        url = provider.url_for("openai") + "/v1/chat/completions"
        with (
            httpx2.Client() as plain,
            httpx2.Client(transport=GuardedTransport(breaker, "openai")) as guarded,
        ):
            timed(plain, url, 200)  # warm up connections, scripts and the local view
            timed(guarded, url, 200)
            a = summary("plain", timed(plain, url, args.n))
            b = summary("guarded", timed(guarded, url, args.n))
        print(f"overhead   median {b - a:8.0f} us per request ({args.n} requests each)")
        redis = breaker.states("openai")
        print(f"recorded   {sum(s.success_count for s in redis)} successes in Redis")


if __name__ == "__main__":
    main()
