"""Lineage: OpenLineage run events and the graph from source datasets to export destinations.

Everything here is a pure value derived from ledger events (``services/lineage.py`` reads
them): a :class:`LineageEvent` renders as an OpenLineage ``RunEvent`` (spec 2-0-2) with
affidavit's custom facets, and a :class:`LineageGraph` holds the datasets and runs those
events connect. The naming scheme of datasets and the facets are documented in
``docs/lineage.md``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import urlsplit

OPENLINEAGE_SCHEMA: Final = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
COLUMN_LINEAGE_SCHEMA: Final = (
    "https://openlineage.io/spec/facets/1-2-0/ColumnLineageDatasetFacet.json"
    "#/$defs/ColumnLineageDatasetFacet"
)
ERROR_MESSAGE_SCHEMA: Final = (
    "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet"
)
FACETS_DOC: Final = "https://example.invalid/affidavit/docs/lineage.md"
"""Where affidavit's custom facets are described (their ``_schemaURL`` is an anchor here)."""

RUN_NAMESPACE: Final = uuid.UUID("8f0c2a49-7d1e-5b8a-9c3e-4a61d2f0b7c5")
"""The UUID namespace of run ids (UUIDv5 over ``<ledger origin>/<operation>``)."""

EventType = Literal["START", "COMPLETE", "FAIL"]
JobKind = Literal["backup", "verification", "drill", "export"]
NodeKind = Literal["source", "artifact", "target", "destination", "run"]

INGESTED_NAMESPACE: Final = "affidavit-ingested"
"""The namespace of the datasets of a backup ingested without a registered source."""
DESTINATION_NAMESPACE: Final = "file"
"""The namespace of export destinations (local files, as OpenLineage names them)."""


def run_id(origin: str, operation: str) -> str:
    """The runId of ``operation`` (``backup:bk-...``) in the ledger ``origin``: a UUIDv5, the
    same every time the events are derived."""
    return str(uuid.uuid5(RUN_NAMESPACE, f"{origin}/{operation}"))


def source_namespace(uri: str | None) -> str:
    """``mongodb://host:port`` / ``redis://host:port``: the scheme and host list of a source's
    recorded URI, without user, path or options (a multi-host MongoDB URI keeps its hosts,
    comma-separated, in the order given); ``affidavit-ingested`` without a URI."""
    if not uri:
        return INGESTED_NAMESPACE
    parts = urlsplit(uri)
    hosts = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme.lower()}://{hosts}"


def facet(name: str, **fields: Any) -> dict[str, Any]:
    """A custom affidavit facet: ``fields`` with ``_producer`` filled in later and the
    ``_schemaURL`` of its section in docs/lineage.md."""
    return {"_schemaURL": f"{FACETS_DOC}#{name}", **fields}


@dataclass(frozen=True, slots=True, kw_only=True)
class DatasetRef:
    """One OpenLineage dataset: ``namespace`` + ``name`` (docs/lineage.md, naming), what kind of
    node it is in the graph, the digest it carries (fingerprint or SHA-256) and its facets."""

    namespace: str
    name: str
    kind: NodeKind
    digest: str | None = None
    facets: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @property
    def node_id(self) -> str:
        """The graph node: ``namespace/name`` joined by a ``|`` (never in either part's
        meaning)."""
        return f"{self.namespace}|{self.name}"

    def to_openlineage(self, producer: str) -> dict[str, Any]:
        """``{"namespace", "name", "facets"}`` with every facet's ``_producer`` set."""
        out: dict[str, Any] = {"namespace": self.namespace, "name": self.name}
        if self.facets:
            out["facets"] = {k: {"_producer": producer, **v} for k, v in self.facets.items()}
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class LineageEvent:
    """One OpenLineage run event derived from the ledger entry ``seq`` (whose Merkle leaf hash
    is ``leaf_hash``): the ``event_type`` of run ``operation`` of job ``job`` at
    ``event_time``."""

    seq: int
    leaf_hash: str
    action: str
    event_type: EventType
    event_time: str
    kind: JobKind
    job: str
    operation: str  # backup:bk-..., verification:vf-..., drill:dr-..., export:ex-...
    inputs: tuple[DatasetRef, ...] = ()
    outputs: tuple[DatasetRef, ...] = ()
    run_facets: Mapping[str, Any] = field(default_factory=dict, hash=False)
    digest: str | None = None  # the operation's manifest (backup, export) or predicate digest

    def to_openlineage(self, *, origin: str, producer: str) -> dict[str, Any]:
        """The OpenLineage ``RunEvent`` (JSON object) of this event."""
        facets = {
            "affidavit_ledger": facet(
                "affidavit_ledger",
                seq=self.seq,
                leafHash=self.leaf_hash,
                action=self.action,
                origin=origin,
            ),
            **self.run_facets,
        }
        return {
            "eventType": self.event_type,
            "eventTime": self.event_time,
            "producer": producer,
            "schemaURL": OPENLINEAGE_SCHEMA,
            "run": {
                "runId": run_id(origin, self.operation),
                "facets": {k: {"_producer": producer, **v} for k, v in facets.items()},
            },
            "job": {"namespace": origin, "name": self.job},
            "inputs": [d.to_openlineage(producer) for d in self.inputs],
            "outputs": [d.to_openlineage(producer) for d in self.outputs],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class RunNode:
    """One operation in the graph: its ledger-recorded end."""

    operation: str
    kind: JobKind
    job: str
    state: EventType
    seq: int
    time: str
    digest: str | None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "id": self.operation,
            "kind": self.kind,
            "job": self.job,
            "state": self.state,
            "seq": self.seq,
            "time": self.time,
            "digest": self.digest,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Edge:
    """A dataset read by a run (``dataset -> run``) or written by one (``run -> dataset``),
    vouched for by the ledger entry ``seq``; ``digest`` is the dataset's as that entry (or
    the manifest it vouches for) records it."""

    source: str
    target: str
    seq: int
    digest: str | None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"from": self.source, "to": self.target, "seq": self.seq, "digest": self.digest}


@dataclass(frozen=True, slots=True, kw_only=True)
class LineageGraph:
    """Datasets and runs, connected by edges in ledger order."""

    datasets: Mapping[str, DatasetRef]
    runs: Mapping[str, RunNode]
    edges: tuple[Edge, ...]

    @classmethod
    def from_events(cls, events: Iterable[LineageEvent]) -> LineageGraph:
        """The graph of the runs' last events (COMPLETE or FAIL; a run with only a START is
        shown running, with the datasets its START names)."""
        last: dict[str, LineageEvent] = {}
        for event in events:
            last[event.operation] = event
        datasets: dict[str, DatasetRef] = {}
        runs: dict[str, RunNode] = {}
        edges: list[Edge] = []
        for event in sorted(last.values(), key=lambda e: e.seq):
            runs[event.operation] = RunNode(
                operation=event.operation,
                kind=event.kind,
                job=event.job,
                state=event.event_type,
                seq=event.seq,
                time=event.event_time,
                digest=event.digest,
            )
            for ref in event.inputs:
                datasets.setdefault(ref.node_id, ref)
                edges.append(
                    Edge(
                        source=ref.node_id, target=event.operation, seq=event.seq, digest=ref.digest
                    )
                )
            for ref in event.outputs:
                datasets[ref.node_id] = ref
                edges.append(
                    Edge(
                        source=event.operation, target=ref.node_id, seq=event.seq, digest=ref.digest
                    )
                )
        return cls(datasets=datasets, runs=runs, edges=tuple(edges))

    def around(self, starts: Iterable[str]) -> LineageGraph:
        """The part of the graph upstream and downstream of the nodes ``starts``."""
        forward: dict[str, list[Edge]] = {}
        backward: dict[str, list[Edge]] = {}
        for edge in self.edges:
            forward.setdefault(edge.source, []).append(edge)
            backward.setdefault(edge.target, []).append(edge)
        begin = set(starts)
        kept: set[Edge] = set()
        for links, end in ((forward, "target"), (backward, "source")):
            seen = set(begin)
            todo = list(seen)
            while todo:
                for edge in links.get(todo.pop(), ()):
                    kept.add(edge)
                    nxt = getattr(edge, end)
                    if nxt not in seen:
                        seen.add(nxt)
                        todo.append(nxt)
        nodes = {e.source for e in kept} | {e.target for e in kept} | begin
        return LineageGraph(
            datasets={k: v for k, v in self.datasets.items() if k in nodes},
            runs={k: v for k, v in self.runs.items() if k in nodes},
            edges=tuple(e for e in self.edges if e in kept),
        )

    def to_json(self) -> dict[str, Any]:
        """``{"datasets", "runs", "edges"}``."""
        return {
            "datasets": [
                {
                    "id": k,
                    "kind": d.kind,
                    "namespace": d.namespace,
                    "name": d.name,
                    "digest": d.digest,
                }
                for k, d in self.datasets.items()
            ],
            "runs": [r.to_json() for r in self.runs.values()],
            "edges": [e.to_json() for e in self.edges],
        }

    def to_dot(self) -> str:
        """Graphviz DOT: datasets as boxes, runs as ellipses, edges labelled with the ledger
        seq and the start of the digest."""
        lines = ["digraph lineage {", "  rankdir=LR;"]
        for key, ref in self.datasets.items():
            label = f"{ref.namespace}\n{ref.name}" + (
                f"\n{_short(ref.digest)}" if ref.digest else ""
            )
            lines.append(f"  {_quote(key)} [shape=box, label={_quote(label)}];")
        for key, run in self.runs.items():
            label = f"{run.operation}\n{run.state}"
            lines.append(f"  {_quote(key)} [shape=ellipse, label={_quote(label)}];")
        for edge in self.edges:
            label = f"#{edge.seq}" + (f" {_short(edge.digest)}" if edge.digest else "")
            lines.append(
                f"  {_quote(edge.source)} -> {_quote(edge.target)} [label={_quote(label)}];"
            )
        lines.append("}")
        return "\n".join(lines) + "\n"


def _short(digest: str) -> str:
    """The start of a digest, for people: ``sha256:0123456789ab``, ``afp1:...:0123456789ab``."""
    head, _, tail = digest.rpartition(":")
    return f"{head[:24]}:{tail[:12]}" if head else digest[:12]


def _quote(text: str) -> str:
    """A DOT string literal: backslashes and quotes escaped, new lines as ``\\n``."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


@dataclass(frozen=True, slots=True, kw_only=True)
class LineageFinding:
    """One edge whose digests no longer match: ``code``, the node or run it concerns, what is
    wrong, and the ledger entry that vouches for the edge (when there is one)."""

    code: str
    subject: str
    message: str
    seq: int | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "code": self.code,
            "subject": self.subject,
            "message": self.message,
            "seq": self.seq,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class LineageReport:
    """What ``lineage verify`` checked and found; ``ok`` only when it checked something and
    found nothing."""

    edges: int
    artifacts_checked: int
    outputs_checked: int
    events_checked: int
    skipped: tuple[str, ...]
    findings: tuple[LineageFinding, ...]

    @property
    def ok(self) -> bool:
        """Nothing found, and something checked (an empty lineage fails closed)."""
        return not self.findings and self.edges > 0

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "ok": self.ok,
            "edges": self.edges,
            "artifacts_checked": self.artifacts_checked,
            "outputs_checked": self.outputs_checked,
            "events_checked": self.events_checked,
            "skipped": list(self.skipped),
            "findings": [f.to_json() for f in self.findings],
        }
