"""The Redis data set the benchmarks share: ``n`` keys of six kinds (strings, hashes, lists,
sets, sorted sets, strings with a 30-day expiry), written with pipelines."""

from __future__ import annotations

import redis


def seed_redis(port: int, n: int) -> None:
    """Write the sample into db0 of the server on 127.0.0.1:``port``."""
    client = redis.Redis(port=port)
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        kind = i % 6
        key = f"k:{i}"
        if kind == 0:
            pipe.set(key, f"value-{i}" * 4)
        elif kind == 1:
            pipe.hset(key, mapping={"a": i, "b": "x" * 20})
        elif kind == 2:
            pipe.rpush(key, "a", "b", str(i))
        elif kind == 3:
            pipe.sadd(key, "a", "b", str(i))
        elif kind == 4:
            pipe.zadd(key, {"a": 1.5, str(i): i})
        else:
            pipe.set(key, str(i), ex=86400 * 30)
        if i % 20_000 == 19_999:
            pipe.execute()
    pipe.execute()
    client.close()
