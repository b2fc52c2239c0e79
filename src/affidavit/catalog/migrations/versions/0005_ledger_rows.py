"""Ledger storage in fewer B-trees: subtree hashes in the entry row, one checkpoint per size.

An append used to touch seven B-trees (entries with its primary-key index and action index,
the node table and its key, checkpoints and their size index); each is a page in the
write-ahead log that the commit's fsync has to write. Now the hashes of the complete
subtrees a leaf closes live in its entry row (``nodes``), ``seq`` is SQLite's rowid (no
separate key index) and checkpoints are keyed by their tree size: three B-trees.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_ROWID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_BATCH = 10_000


def _closed_nodes(bind: sa.Connection) -> Iterator[tuple[int, bytes]]:
    """(seq, nodes) for every entry that closes subtrees, from the old node table: the
    subtree (level, index) ends at leaf ``(index + 1) * 2**level - 1``. A level missing from
    the old table (an altered catalog) ends that row's list there, so the gap stays visible
    to proofs and to ``ledger verify``."""
    rows = bind.execute(sa.text('SELECT level, "index", hash FROM ledger_nodes WHERE level > 0'))
    per_seq: dict[int, dict[int, bytes]] = {}
    for level, index, digest in rows:
        per_seq.setdefault(((int(index) + 1) << int(level)) - 1, {})[int(level)] = bytes(digest)
    for seq, levels in per_seq.items():
        blob = bytearray()
        level = 1
        while level in levels and len(levels[level]) == 32:
            blob += levels[level]
            level += 1
        yield seq, bytes(blob)


def upgrade() -> None:
    """Move subtree hashes into entry rows; key checkpoints by size; drop ``ledger_nodes``."""
    bind = op.get_bind()
    with op.batch_alter_table("ledger_entries", recreate="auto") as batch:
        batch.alter_column("seq", existing_type=sa.BigInteger(), type_=_ROWID)
        batch.add_column(sa.Column("nodes", sa.LargeBinary(), nullable=True))
    update = sa.text("UPDATE ledger_entries SET nodes = :nodes WHERE seq = :seq")
    batch_rows: list[dict[str, object]] = []
    for seq, blob in _closed_nodes(bind):
        batch_rows.append({"seq": seq, "nodes": blob})
        if len(batch_rows) >= _BATCH:
            bind.execute(update, batch_rows)
            batch_rows = []
    if batch_rows:
        bind.execute(update, batch_rows)
    bind.execute(
        sa.text("UPDATE ledger_entries SET nodes = :empty WHERE nodes IS NULL"), {"empty": b""}
    )
    with op.batch_alter_table("ledger_entries", recreate="auto") as batch:
        batch.alter_column("nodes", existing_type=sa.LargeBinary(), nullable=False)

    # one checkpoint per size: the newest of each size stays
    bind.execute(
        sa.text(
            "DELETE FROM ledger_checkpoints WHERE id NOT IN "
            "(SELECT max(id) FROM ledger_checkpoints GROUP BY size)"
        )
    )
    op.drop_index("ix_ledger_checkpoints_size", table_name="ledger_checkpoints")
    with op.batch_alter_table("ledger_checkpoints", recreate="always") as batch:
        batch.drop_constraint("pk_ledger_checkpoints", type_="primary")
        batch.drop_column("id")
        batch.alter_column("size", existing_type=sa.BigInteger(), type_=_ROWID)
        batch.create_primary_key("pk_ledger_checkpoints", ["size"])
    op.drop_table("ledger_nodes")


def downgrade() -> None:
    """Back to the node table and checkpoint ids (tests of the migration chain)."""
    bind = op.get_bind()
    op.create_table(
        "ledger_nodes",
        sa.Column("level", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("level", "index", name="pk_ledger_nodes"),
    )
    insert = sa.text('INSERT INTO ledger_nodes (level, "index", hash) VALUES (:l, :i, :h)')
    pending: list[dict[str, object]] = []
    for seq, leaf, nodes in bind.execute(
        sa.text("SELECT seq, leaf_hash, nodes FROM ledger_entries ORDER BY seq")
    ):
        pending.append({"l": 0, "i": int(seq), "h": bytes(leaf)})
        blob = bytes(nodes or b"")
        for level in range(1, len(blob) // 32 + 1):
            index = ((int(seq) + 1) >> level) - 1
            pending.append({"l": level, "i": index, "h": blob[(level - 1) * 32 : level * 32]})
        if len(pending) >= _BATCH:
            bind.execute(insert, pending)
            pending = []
    if pending:
        bind.execute(insert, pending)
    with op.batch_alter_table("ledger_entries", recreate="always") as batch:
        batch.drop_column("nodes")
        batch.alter_column("seq", existing_type=_ROWID, type_=sa.BigInteger())
    with op.batch_alter_table("ledger_checkpoints", recreate="always") as batch:
        batch.drop_constraint("pk_ledger_checkpoints", type_="primary")
        batch.alter_column("size", existing_type=_ROWID, type_=sa.BigInteger())
        batch.add_column(sa.Column("id", sa.Integer(), nullable=True))
    bind.execute(sa.text("UPDATE ledger_checkpoints SET id = size + 1"))
    with op.batch_alter_table("ledger_checkpoints", recreate="always") as batch:
        batch.alter_column("id", existing_type=sa.Integer(), nullable=False)
        batch.create_primary_key("pk_ledger_checkpoints", ["id"])
    op.create_index("ix_ledger_checkpoints_size", "ledger_checkpoints", ["size"])
