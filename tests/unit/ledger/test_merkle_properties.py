"""Property tests of the RFC 9162 Merkle functions: proofs verify, tampering is rejected."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from affidavit.errors import IntegrityError
from affidavit.ledger import merkle


def _leaves(size: int, salt: int = 0) -> list[bytes]:
    return [merkle.leaf_hash(f"{salt}:{i}".encode()) for i in range(size)]


def _flip(value: bytes, bit: int) -> bytes:
    data = bytearray(value)
    data[(bit // 8) % len(data)] ^= 1 << (bit % 8)
    return bytes(data)


sizes = st.integers(min_value=1, max_value=300)


@st.composite
def tree_and_index(draw: st.DrawFn) -> tuple[list[bytes], int]:
    size = draw(sizes)
    return _leaves(size, draw(st.integers(0, 3))), draw(st.integers(0, size - 1))


@st.composite
def tree_and_old_size(draw: st.DrawFn) -> tuple[list[bytes], int]:
    size = draw(sizes)
    return _leaves(size, draw(st.integers(0, 3))), draw(st.integers(1, size))


@given(tree_and_index())
def test_every_inclusion_proof_verifies(case: tuple[list[bytes], int]) -> None:
    leaves, index = case
    proof = merkle.inclusion_proof(leaves, index)
    merkle.verify_inclusion(leaves[index], index, len(leaves), proof, merkle.root(leaves))


@given(tree_and_old_size())
def test_every_consistency_proof_verifies(case: tuple[list[bytes], int]) -> None:
    leaves, old_size = case
    proof = merkle.consistency_proof(leaves, old_size)
    old_root, new_root = merkle.root(leaves[:old_size]), merkle.root(leaves)
    merkle.verify_consistency(old_size, len(leaves), old_root, new_root, proof)


@given(tree_and_index(), st.integers(0, 255), st.data())
def test_flipped_bit_breaks_inclusion(
    case: tuple[list[bytes], int], bit: int, data: st.DataObject
) -> None:
    leaves, index = case
    proof = merkle.inclusion_proof(leaves, index)
    tree_root = merkle.root(leaves)
    target = data.draw(st.sampled_from(["leaf", "root", "proof"] if proof else ["leaf", "root"]))
    leaf = leaves[index]
    if target == "leaf":
        leaf = _flip(leaf, bit)
    elif target == "root":
        tree_root = _flip(tree_root, bit)
    else:
        position = data.draw(st.integers(0, len(proof) - 1))
        proof[position] = _flip(proof[position], bit)
    with pytest.raises(IntegrityError):
        merkle.verify_inclusion(leaf, index, len(leaves), proof, tree_root)


@given(tree_and_old_size(), st.integers(0, 255), st.data())
def test_flipped_bit_breaks_consistency(
    case: tuple[list[bytes], int], bit: int, data: st.DataObject
) -> None:
    leaves, old_size = case
    proof = merkle.consistency_proof(leaves, old_size)
    old_root, new_root = merkle.root(leaves[:old_size]), merkle.root(leaves)
    targets = ["old_root", "new_root"] + (["proof"] if proof else [])
    target = data.draw(st.sampled_from(targets))
    if target == "old_root":
        old_root = _flip(old_root, bit)
    elif target == "new_root":
        new_root = _flip(new_root, bit)
    else:
        position = data.draw(st.integers(0, len(proof) - 1))
        proof[position] = _flip(proof[position], bit)
    with pytest.raises(IntegrityError):
        merkle.verify_consistency(old_size, len(leaves), old_root, new_root, proof)


@given(tree_and_index(), st.integers(0, 299))
def test_inclusion_proof_of_another_leaf_is_rejected(
    case: tuple[list[bytes], int], other: int
) -> None:
    # The tree size itself is not bound by an inclusion proof (sizes with the same path shape
    # verify alike); the signed checkpoint binds it. The leaf and its position are bound.
    leaves, index = case
    proof = merkle.inclusion_proof(leaves, index)
    tree_root = merkle.root(leaves)
    other_index = other % len(leaves)
    if other_index != index:
        with pytest.raises(IntegrityError):
            merkle.verify_inclusion(leaves[other_index], index, len(leaves), proof, tree_root)
        with pytest.raises(IntegrityError):
            merkle.verify_inclusion(leaves[index], other_index, len(leaves), proof, tree_root)
    with pytest.raises(IntegrityError):
        merkle.verify_inclusion(leaves[index], index, len(leaves), [*proof, tree_root], tree_root)


@given(tree_and_old_size())
def test_truncated_or_extended_consistency_proof_is_rejected(
    case: tuple[list[bytes], int],
) -> None:
    leaves, old_size = case
    proof = merkle.consistency_proof(leaves, old_size)
    old_root, new_root = merkle.root(leaves[:old_size]), merkle.root(leaves)
    with pytest.raises(IntegrityError):
        merkle.verify_consistency(
            old_size, len(leaves), old_root, new_root, [*proof, merkle.EMPTY_ROOT]
        )
    if proof:
        with pytest.raises(IntegrityError):
            merkle.verify_consistency(old_size, len(leaves), old_root, new_root, proof[:-1])


@settings(max_examples=50)
@given(tree_and_index())
def test_range_inclusion_proof_equals_direct(case: tuple[list[bytes], int]) -> None:
    leaves, index = case
    ranges = merkle.inclusion_proof_ranges(index, len(leaves))
    assert [merkle.root(leaves[s:e]) for s, e in ranges] == merkle.inclusion_proof(leaves, index)


@settings(max_examples=50)
@given(tree_and_old_size())
def test_range_consistency_proof_equals_direct(case: tuple[list[bytes], int]) -> None:
    leaves, old_size = case
    ranges = merkle.consistency_proof_ranges(old_size, len(leaves))
    expected = merkle.consistency_proof(leaves, old_size)
    assert [merkle.root(leaves[s:e]) for s, e in ranges] == expected


# --- exhaustive small cases (the brief: all sizes 1..70, every index and old size) --------


LEAVES_70 = _leaves(70, salt=7)


def _node(start: int, end: int) -> bytes:
    """A range's hash the way a storage-backed log computes it: from complete subtrees."""
    parts = [merkle.root(LEAVES_70[s:e]) for s, e in merkle.range_subtrees(start, end)]
    return merkle.root_from_subtrees(parts)


@pytest.mark.parametrize("size", range(1, 71))
def test_ranges_equal_direct_proofs_exhaustive(size: int) -> None:
    leaves = LEAVES_70[:size]
    for index in range(size):
        ranges = merkle.inclusion_proof_ranges(index, size)
        direct = merkle.inclusion_proof(leaves, index)
        assert [merkle.root(leaves[s:e]) for s, e in ranges] == direct
        assert [_node(s, e) for s, e in ranges] == direct
    for old_size in range(1, size + 1):
        ranges = merkle.consistency_proof_ranges(old_size, size)
        direct = merkle.consistency_proof(leaves, old_size)
        assert [merkle.root(leaves[s:e]) for s, e in ranges] == direct
        assert [_node(s, e) for s, e in ranges] == direct


@pytest.mark.parametrize("size", range(71))
def test_subtree_ranges_fold_to_root(size: int) -> None:
    ranges = merkle.subtree_ranges(size)
    assert [e - s for s, e in ranges] == sorted((e - s for s, e in ranges), reverse=True)
    assert sum(e - s for s, e in ranges) == size
    for start, end in ranges:
        width = end - start
        assert width & (width - 1) == 0
        assert start % width == 0
    hashes = [merkle.root(LEAVES_70[s:e]) for s, e in ranges]
    assert merkle.root_from_subtrees(hashes) == merkle.root(LEAVES_70[:size])


def test_subtree_ranges_example() -> None:
    assert merkle.subtree_ranges(13) == [(0, 8), (8, 12), (12, 13)]
    assert merkle.subtree_ranges(0) == []


@pytest.mark.parametrize(
    ("old_size", "new_size"), [(0, 5), (6, 5), (-1, 5)], ids=["from-zero", "shrink", "negative"]
)
def test_consistency_ranges_reject_bad_sizes(old_size: int, new_size: int) -> None:
    with pytest.raises(ValueError, match="no consistency proof"):
        merkle.consistency_proof_ranges(old_size, new_size)


@pytest.mark.parametrize(("index", "size"), [(5, 5), (-1, 5), (0, 0)])
def test_inclusion_ranges_reject_bad_index(index: int, size: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        merkle.inclusion_proof_ranges(index, size)


def test_verifiers_reject_wrong_length_hashes() -> None:
    leaves = _leaves(5)
    proof = merkle.inclusion_proof(leaves, 2)
    tree_root = merkle.root(leaves)
    with pytest.raises(IntegrityError):
        merkle.verify_inclusion(leaves[2][:31], 2, 5, proof, tree_root)
    with pytest.raises(IntegrityError):
        merkle.verify_inclusion(leaves[2], 2, 5, [*proof[:-1], proof[-1] + b"\0"], tree_root)
    with pytest.raises(IntegrityError):
        merkle.verify_consistency(3, 5, b"", tree_root, merkle.consistency_proof(leaves, 3))
