"""The lineage value types: dataset naming, run ids, the graph walk and DOT output."""

from __future__ import annotations

import uuid

from affidavit.models.lineage import (
    DatasetRef,
    LineageEvent,
    LineageGraph,
    LineageReport,
    run_id,
    source_namespace,
)


def test_source_namespaces_drop_user_path_and_options() -> None:
    assert source_namespace("mongodb://***@db1:27017,db2:27017/admin?tls=true") == (
        "mongodb://db1:27017,db2:27017"
    )
    assert source_namespace("redis://cache.example.com:6379/0") == "redis://cache.example.com:6379"
    assert source_namespace(None) == "affidavit-ingested"


def test_run_ids_are_stable_uuids_per_origin_and_operation() -> None:
    a = run_id("affidavit.local/h/1", "backup:bk-1")
    assert a == run_id("affidavit.local/h/1", "backup:bk-1")
    assert uuid.UUID(a).version == 5
    assert a != run_id("affidavit.local/h/2", "backup:bk-1")
    assert a != run_id("affidavit.local/h/1", "backup:bk-2")


def _ref(name: str, kind: str = "artifact") -> DatasetRef:
    return DatasetRef(namespace="ns", name=name, kind=kind, digest=f"sha256:{name}")  # type: ignore[arg-type]


def _event(seq: int, op: str, ins: tuple[str, ...], outs: tuple[str, ...]) -> LineageEvent:
    return LineageEvent(
        seq=seq, leaf_hash="00" * 32, action="x", event_type="COMPLETE",
        event_time="2026-12-05T00:00:00.000000Z", kind="backup", job="j", operation=op,
        inputs=tuple(_ref(i) for i in ins), outputs=tuple(_ref(o) for o in outs),
    )  # fmt: skip


def test_around_walks_upstream_and_downstream_only() -> None:
    graph = LineageGraph.from_events(
        [
            _event(1, "backup:a", ("src",), ("art1",)),
            _event(2, "backup:b", ("src",), ("art2",)),
            _event(3, "export:e", ("art1",), ("out",)),
        ]
    )
    part = graph.around(["export:e"])
    assert set(part.runs) == {"backup:a", "export:e"}  # not the sibling backup b
    assert set(part.datasets) == {"ns|src", "ns|art1", "ns|out"}
    whole = graph.around(["ns|src"])
    assert set(whole.runs) == {"backup:a", "backup:b", "export:e"}


def test_dot_quotes_hostile_names() -> None:
    graph = LineageGraph.from_events([_event(1, "backup:a", ('x"] -> evil [',), ("y\\n",))])
    dot = graph.to_dot()
    assert '"ns|x\\"] -> evil ["' in dot
    assert '"ns|y\\\\n"' in dot  # a backslash in a name stays a backslash
    for line in dot.splitlines():  # no quote left open: the name cannot add a statement
        bare = line.replace("\\\\", "").replace('\\"', "")
        assert bare.count('"') % 2 == 0, line
    edges = [line for line in dot.splitlines() if '" -> "' in line]
    assert len(edges) == 2


def test_an_empty_lineage_does_not_verify() -> None:
    report = LineageReport(
        edges=0, artifacts_checked=0, outputs_checked=0, events_checked=0, skipped=(),
        findings=(),
    )  # fmt: skip
    assert report.ok is False
