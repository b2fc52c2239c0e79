"""RFC 9162 §2.1 Merkle trees: hashes, roots, inclusion and consistency proofs.

Pure functions over SHA-256 (``leaf = SHA-256(0x00 || entry)``,
``node = SHA-256(0x01 || left || right)``, the empty tree's root is ``SHA-256("")``).

Proofs are lists of 32-byte hashes ordered as RFC 9162 ``PATH()``/``PROOF()`` emit them,
leaf side first. The verifiers raise :class:`~affidavit.errors.IntegrityError` on any failure
and return ``None`` on success. Edge cases follow the transparency-dev/merkle convention:
a consistency proof from size 0 is rejected; from ``n`` to ``n`` it is accepted only when the
proof is empty and both roots are equal.

For a log kept in storage, the ``*_ranges`` functions name the tree nodes a proof needs as
half-open leaf ranges ``(start, end)``. Each range is a node of the RFC 9162 tree of the given
size: either a complete subtree (``end - start`` a power of two, ``start`` a multiple of it),
or a node on the right edge whose hash is :func:`root_from_subtrees` over the complete
subtrees that :func:`range_subtrees` lists. So a log that stores complete-subtree hashes can
build any proof with O(log n) reads.
"""

from __future__ import annotations

from collections.abc import Sequence

from affidavit.crypto.digest import SHA256_SIZE, constant_time_equal, sha256
from affidavit.errors import IntegrityError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "consistency_proof",
    "consistency_proof_ranges",
    "inclusion_proof",
    "inclusion_proof_ranges",
    "leaf_hash",
    "node_hash",
    "range_subtrees",
    "root",
    "root_from_subtrees",
    "subtree_ranges",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = SHA256_SIZE
EMPTY_ROOT = sha256(b"")
"""Root of the empty tree: SHA-256 of the empty string."""

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


def leaf_hash(entry: bytes) -> bytes:
    """Return ``SHA-256(0x00 || entry)``."""
    return sha256(_LEAF_PREFIX + entry)


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return ``SHA-256(0x01 || left || right)``."""
    return sha256(_NODE_PREFIX + left + right)


def _largest_power_of_two_below(n: int) -> int:
    """Return the largest power of two ``k`` with ``k < n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """Return the Merkle Tree Hash of a list of leaf hashes (``EMPTY_ROOT`` for none).

    Reduces level by level; an odd node at the end of a level moves up unchanged, which gives
    exactly the RFC 9162 tree.
    """
    if not leaf_hashes:
        return EMPTY_ROOT
    level = list(leaf_hashes)
    while len(level) > 1:
        paired = len(level) & ~1
        nxt = [sha256(_NODE_PREFIX + level[i] + level[i + 1]) for i in range(0, paired, 2)]
        if paired != len(level):
            nxt.append(level[-1])
        level = nxt
    return level[0]


def _check_index(index: int, tree_size: int) -> None:
    if not 0 <= index < tree_size:
        raise ValueError(f"leaf index {index} is outside a tree of size {tree_size}")


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """Return RFC 9162 ``PATH(index, D[n])`` for the tree of ``leaf_hashes``.

    Raises :class:`ValueError` when ``index`` is not a leaf of the tree.
    """
    _check_index(index, len(leaf_hashes))
    proof: list[bytes] = []
    level = list(leaf_hashes)
    position = index
    while len(level) > 1:
        sibling = position ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        paired = len(level) & ~1
        nxt = [sha256(_NODE_PREFIX + level[i] + level[i + 1]) for i in range(0, paired, 2)]
        if paired != len(level):
            nxt.append(level[-1])
        level = nxt
        position >>= 1
    return proof


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """Return RFC 9162 ``PROOF(old_size, D[n])`` for the tree of ``leaf_hashes``.

    ``old_size == n`` gives the empty proof. Raises :class:`ValueError` unless
    ``0 < old_size <= n``.
    """
    new_size = len(leaf_hashes)
    if not 0 < old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to size {new_size}")
    return _subproof(old_size, leaf_hashes, complete=True)


def _subproof(m: int, leaves: Sequence[bytes], *, complete: bool) -> list[bytes]:
    """RFC 9162 §2.1.4.1 ``SUBPROOF(m, D[n], b)``."""
    n = len(leaves)
    if m == n:
        return [] if complete else [root(leaves)]
    k = _largest_power_of_two_below(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], complete=complete), root(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], complete=False), root(leaves[:k])]


# --- ranges for storage-backed logs --------------------------------------------------------


def range_subtrees(start: int, end: int) -> list[tuple[int, int]]:
    """Split the leaf range ``[start, end)`` into complete aligned subtrees, largest first.

    For a range that is a node of an RFC 9162 tree (``start`` a multiple of the smallest power
    of two ``>= end - start``), folding the hashes of these subtrees with
    :func:`root_from_subtrees` gives that node's hash.
    """
    if not 0 <= start <= end:
        raise ValueError(f"bad leaf range [{start}, {end})")
    ranges: list[tuple[int, int]] = []
    position = start
    remaining = end - start
    while remaining:
        width = 1 << (remaining.bit_length() - 1)
        ranges.append((position, position + width))
        position += width
        remaining -= width
    return ranges


def subtree_ranges(size: int) -> list[tuple[int, int]]:
    """Return the complete subtrees, largest first, whose fold is the root of a tree of ``size``.

    These are the binary digits of ``size``: ``subtree_ranges(13) == [(0, 8), (8, 12), (12, 13)]``.
    """
    if size < 0:
        raise ValueError(f"bad tree size {size}")
    return range_subtrees(0, size)


def root_from_subtrees(hashes: Sequence[bytes]) -> bytes:
    """Fold complete-subtree hashes (largest first) right to left into a root.

    ``root_from_subtrees([h(0,8), h(8,12), h(12,13)]) == node(h(0,8), node(h(8,12), h(12,13)))``;
    an empty list gives ``EMPTY_ROOT``.
    """
    if not hashes:
        return EMPTY_ROOT
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def inclusion_proof_ranges(index: int, tree_size: int) -> list[tuple[int, int]]:
    """Return the nodes, as leaf ranges in proof order, of the inclusion proof of ``index``.

    ``[root(leaves[s:e]) for s, e in inclusion_proof_ranges(i, n)]`` equals
    ``inclusion_proof(leaves[:n], i)``. Raises :class:`ValueError` unless ``0 <= index < n``.
    """
    _check_index(index, tree_size)
    ranges: list[tuple[int, int]] = []
    start, end = 0, tree_size
    while end - start > 1:
        middle = start + _largest_power_of_two_below(end - start)
        if index < middle:
            ranges.append((middle, end))
            end = middle
        else:
            ranges.append((start, middle))
            start = middle
    ranges.reverse()
    return ranges


def consistency_proof_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """Return the nodes, as leaf ranges in proof order, of the consistency proof ``old -> new``.

    ``[root(leaves[s:e]) for s, e in consistency_proof_ranges(m, n)]`` equals
    ``consistency_proof(leaves[:n], m)``. Raises :class:`ValueError` unless
    ``0 < old_size <= new_size``.
    """
    if not 0 < old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to size {new_size}")
    ranges: list[tuple[int, int]] = []
    start, end, complete = 0, new_size, True
    while old_size - start != end - start:
        middle = start + _largest_power_of_two_below(end - start)
        if old_size <= middle:
            ranges.append((middle, end))
            end = middle
        else:
            ranges.append((start, middle))
            start = middle
            complete = False
    if not complete:
        ranges.append((start, end))
    ranges.reverse()
    return ranges


# --- verification (RFC 9162 §2.1.3.2 and §2.1.4.2) ------------------------------------------


def _check_hashes(proof: Sequence[bytes], what: str, **named: bytes) -> None:
    for label, value in named.items():
        if len(value) != HASH_SIZE:
            raise IntegrityError(f"{label.replace('_', ' ')} is not a {HASH_SIZE}-byte hash")
    for position, element in enumerate(proof):
        if len(element) != HASH_SIZE:
            raise IntegrityError(f"{what} element {position} is not a {HASH_SIZE}-byte hash")


def verify_inclusion(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``tree_size`` with ``root``.

    Implements RFC 9162 §2.1.3.2. Raises :class:`IntegrityError` on any failure.
    """
    _check_hashes(proof, "inclusion proof", leaf_hash=leaf_hash, root=root)
    if not 0 <= index < tree_size:
        raise IntegrityError(f"leaf index {index} is outside a tree of size {tree_size}")
    fn, sn = index, tree_size - 1
    r = bytes(leaf_hash)
    for p in proof:
        if sn == 0:
            raise IntegrityError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise IntegrityError("inclusion proof is too short")
    if not constant_time_equal(r, root):
        raise IntegrityError(f"inclusion proof for leaf {index} does not match the root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of ``old_size``/``old_root`` is a prefix of ``new_size``/``new_root``.

    Implements RFC 9162 §2.1.4.2 for ``0 < old_size < new_size``; ``old_size == 0`` is rejected
    and ``old_size == new_size`` passes only with an empty proof and equal roots. Raises
    :class:`IntegrityError` on any failure.
    """
    _check_hashes(proof, "consistency proof", old_root=old_root, new_root=new_root)
    if old_size <= 0:
        raise IntegrityError(f"no consistency proof from tree size {old_size}")
    if old_size > new_size:
        raise IntegrityError(f"tree shrank from size {old_size} to {new_size}")
    if old_size == new_size:
        if proof:
            raise IntegrityError("consistency proof between equal sizes must be empty")
        if not constant_time_equal(old_root, new_root):
            raise IntegrityError(f"two different roots for tree size {old_size}")
        return
    if not proof:
        raise IntegrityError("consistency proof is empty")
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, bytes(old_root))
    fr, sr = _fold_consistency(path, old_size - 1, new_size - 1)
    old_ok = constant_time_equal(fr, old_root)
    new_ok = constant_time_equal(sr, new_root)
    if not (old_ok and new_ok):
        raise IntegrityError(
            f"consistency proof from size {old_size} to {new_size} does not match the roots"
        )


def _fold_consistency(path: Sequence[bytes], fn: int, sn: int) -> tuple[bytes, bytes]:
    """The loop of RFC 9162 §2.1.4.2 step 5-7; returns the recomputed (old, new) roots."""
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise IntegrityError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise IntegrityError("consistency proof is too short")
    return fr, sr
