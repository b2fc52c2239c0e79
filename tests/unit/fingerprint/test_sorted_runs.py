"""Runs sorted away from the accumulator (issue 18): pairs sorted by :func:`sort_pairs` on
worker threads and filed with :meth:`Accumulator.add_sorted` give the fingerprint that
:meth:`Accumulator.add_pairs` gives for the same pairs, in memory and once spilled past the
memory budget, in any split; pairs cut for other bucket bits, or an accumulator that keeps
keys, are refused."""

from __future__ import annotations

import random

import pytest

from affidavit.fingerprint import accumulator as acc_module
from affidavit.fingerprint.accumulator import Accumulator, sort_pairs
from affidavit.fingerprint.model import PAIR_SIZE


def _pairs(n: int, seed: int) -> bytes:
    rng = random.Random(seed)
    # include equal key-hash heads and whole duplicates: the full stable sort must decide
    pairs = [rng.randbytes(PAIR_SIZE) for _ in range(n)]
    pairs += [pairs[3][:8] + rng.randbytes(PAIR_SIZE - 8), pairs[5]]
    rng.shuffle(pairs)
    return b"".join(pairs)


def _reference(pairs: bytes, bits: int) -> tuple[str, int]:
    acc = Accumulator("exact", keep_keys=False, bucket_bits=bits)
    acc.add_pairs(pairs, None)
    fingerprint, duplicates = acc.finish(None)
    return fingerprint.text, duplicates


@pytest.mark.parametrize("bits", [0, 4, 12])
@pytest.mark.parametrize("budget", [256 << 20, 3 * 64 * 100])
def test_sorted_runs_give_the_same_fingerprint(
    bits: int, budget: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(acc_module, "SORTED_IN_MEMORY", budget)  # small: most runs spill
    pairs = _pairs(5000, bits)
    acc = Accumulator("exact", keep_keys=False, bucket_bits=bits)
    cuts = sorted(random.Random(bits).sample(range(1, 5000), 9))
    at = 0
    for cut in [*cuts, len(pairs) // PAIR_SIZE]:
        acc.add_sorted(sort_pairs(pairs[at * PAIR_SIZE : cut * PAIR_SIZE], bucket_bits=bits))
        at = cut
    acc.add_sorted(sort_pairs(b"", bucket_bits=bits))  # an empty run adds nothing
    assert acc.count == len(pairs) // PAIR_SIZE
    fingerprint, duplicates = acc.finish(None)
    assert (fingerprint.text, duplicates) == _reference(pairs, bits)


def test_mixed_with_add_pairs() -> None:
    pairs = _pairs(3000, 1)
    acc = Accumulator("exact", keep_keys=False)
    half = 1500 * PAIR_SIZE
    acc.add_pairs(pairs[:half], None)
    acc.add_sorted(sort_pairs(pairs[half:]))
    fingerprint, _ = acc.finish(None)
    assert fingerprint.text == _reference(pairs, acc.bucket_bits)[0]


def test_refused() -> None:
    with pytest.raises(ValueError, match="other segments"):
        Accumulator("exact", keep_keys=False, bucket_bits=4).add_sorted(
            sort_pairs(_pairs(10, 2), bucket_bits=12)
        )
    with pytest.raises(ValueError, match="keeps keys"):
        Accumulator("exact").add_sorted(sort_pairs(_pairs(10, 2)))
    with pytest.raises(ValueError, match="whole number"):
        sort_pairs(b"x" * 65)


def test_a_run_that_is_not_what_it_claims_is_refused() -> None:
    """A sorted run may come from a cluster's worker: its order and bounds are checked
    before it is filed (the fold relies on both)."""
    import dataclasses

    import numpy as np

    good = sort_pairs(_pairs(3000, 7))
    acc = Accumulator("exact", keep_keys=False)
    shuffled = good.pairs.copy()
    shuffled[[10, 20]] = shuffled[[20, 10]]
    tied = good.pairs.copy()  # equal 8-byte heads (the fast check passes), tails reversed
    head = bytes(tied[10])[:8]
    tied[10] = head + b"\x02" * 56
    tied[11] = head + b"\x01" * 56
    bounds = good.bounds.copy()
    bounds[5] += 1
    for bad in (
        dataclasses.replace(good, pairs=shuffled),
        dataclasses.replace(good, pairs=tied),
        dataclasses.replace(good, bounds=bounds),
        dataclasses.replace(good, pairs=good.pairs.astype("S32")),
        dataclasses.replace(good, bounds=good.bounds.astype(np.int32)),
    ):
        with pytest.raises(ValueError, match=r"sorted|bounds|64-byte|int64"):
            acc.add_sorted(bad)
    assert acc.count == 0
    acc.add_sorted(good)
    assert acc.count == 3002
