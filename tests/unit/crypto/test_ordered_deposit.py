"""``OrderedDigest.deposit`` (issue 18, session 10): segments handed over ahead of their turn
are hashed in file order by whichever thread feeds the one before, and their memory is
released once, after they are hashed (or when the digest is closed)."""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Callable

from affidavit.crypto.segments import OrderedDigest


def _pieces(count: int) -> list[bytes]:
    rng = random.Random(18)
    return [rng.randbytes(rng.randrange(1, 5000)) for _ in range(count)]


def _shuffled_run(pieces: list[bytes], seed: int) -> tuple[OrderedDigest, list[bool], list[int]]:
    """Deposit ``pieces`` in a shuffled order; whether each release came only once every
    segment up to it had been handed over (its turn could have come), and the releases."""
    order = list(range(len(pieces)))
    random.Random(seed).shuffle(order)
    digest = OrderedDigest(len(pieces))
    deposited: set[int] = set()
    in_turn: list[bool] = []
    released: list[int] = []

    def releaser(k: int) -> Callable[[], None]:
        def release() -> None:
            in_turn.append(set(range(k + 1)) <= deposited)
            released.append(k)

        return release

    for k in order:
        deposited.add(k)
        digest.deposit(k, pieces[k], releaser(k))
    return digest, in_turn, released


def test_deposits_in_any_order_give_the_file_order_digest() -> None:
    pieces = _pieces(12)
    whole = b"".join(pieces)
    for seed in range(5):
        digest, in_turn, released = _shuffled_run(pieces, seed)
        assert released == list(range(len(pieces)))  # hashed, and released, in file order
        assert all(in_turn)
        assert digest.result(len(whole)) == hashlib.sha256(whole).hexdigest()


def test_deposit_and_blocking_feed_mixed_across_threads() -> None:
    pieces = _pieces(40)
    digest = OrderedDigest(len(pieces))
    released: list[int] = []
    lock = threading.Lock()

    def task(k: int) -> None:
        if k % 3 == 0:
            digest.feed(k, pieces[k])
        else:

            def release() -> None:
                with lock:
                    released.append(k)

            digest.deposit(k, pieces[k], release)

    threads = [threading.Thread(target=task, args=(k,)) for k in reversed(range(len(pieces)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert not any(t.is_alive() for t in threads)
    assert sorted(released) == [k for k in range(len(pieces)) if k % 3]
    whole = b"".join(pieces)
    assert digest.result(len(whole)) == hashlib.sha256(whole).hexdigest()


def test_a_segment_not_read_whole_or_a_close_leaves_no_digest_and_releases_all() -> None:
    pieces = _pieces(4)
    digest = OrderedDigest(4)
    released: list[int] = []
    digest.deposit(1, None, lambda: released.append(1))  # not read whole, ahead of its turn
    digest.deposit(0, pieces[0], lambda: released.append(0))
    digest.deposit(2, pieces[2], lambda: released.append(2))
    digest.deposit(3, pieces[3], lambda: released.append(3))
    assert released == [0, 1, 2, 3]
    assert digest.result(sum(len(p) for p in pieces)) is None
    closed = OrderedDigest(3)
    freed: list[int] = []
    closed.deposit(2, pieces[2], lambda: freed.append(2))
    closed.deposit(1, pieces[1], lambda: freed.append(1))
    assert freed == []  # waiting for segment 0
    closed.close()
    assert sorted(freed) == [1, 2]
    closed.deposit(0, pieces[0], lambda: freed.append(0))  # after close: released at once
    assert sorted(freed) == [0, 1, 2]
    assert closed.result(sum(len(p) for p in pieces[:3])) is None
