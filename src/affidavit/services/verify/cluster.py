"""The segments of a backup checked on a Dask distributed cluster (``verify --cluster``).

The client (this process) keeps everything that judges: it checks the signed manifest,
unwraps the backup's age identity, opens each artifact's age header and derives the payload
key, then hands one task per segment (:class:`~.segments.SegmentJob`: the vault, the path,
the payload key and geometry, the segment's place and signed row) to the cluster. A worker
runs :func:`~.segments.check_segment`, the very function a local thread runs: it opens the
artifact in the vault, reads only its segment (``pread``), hashes the ciphertext, opens the
chunks, hashes the plaintext and frames the documents into exact record pairs, and returns
those plain values (:class:`~.segments.SegmentPart`). The client merges them in segment
order (:func:`~.segments.read_segments`) into exactly a local run's result, and signs it.

Trust (docs/scale.md, "Trust model"). The payload key of the backup being verified travels
in the task, so the scheduler and the workers that run a backup's segments learn that key
and the plaintext of those segments; never the age identity (the client keeps it: no other
backup's key, no other artifact of this backup unless its segments are sent too), never the
ledger key (the verification is signed here), nothing written to disk by affidavit. So the
address must be ``tls://`` (Dask's mutual TLS: the client, the scheduler and every worker
prove a certificate of one CA), or ``tcp://`` to a scheduler on this machine's loopback.
What the cluster could do is lie: a worker is trusted to report the digests it computed, as
a local thread is. Only the segments' digests, decryption verdicts and record pairs come
back, and the client compares them with the signed table.

A worker that dies mid-run loses its tasks; the scheduler runs them again on another worker
(Dask's ``allowed-failures``, 3 by default) and the result is the same, since a segment's
part depends only on its bytes. A cluster that cannot be reached is exit 3 before anything
is read or recorded; one that loses its workers for good, or a worker that cannot read the
vault, stops the run with exit 3 (recorded as ``verification.could_not_run``).
"""

from __future__ import annotations

import ipaddress
import logging
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from affidavit.errors import InputError, OperationError
from affidavit.services.verify.segments import SegmentJob, SegmentPart, check_segment

__all__ = ["Cluster", "ClusterTls", "check_cluster_url"]

_SCHEMES = ("tcp", "tls")
_HINT = (
    "check that the Dask scheduler runs at that address and that this machine can reach it "
    "(tls:// needs --cluster-ca, --cluster-cert and --cluster-key); or verify without "
    "--cluster"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterTls:
    """The files of Dask's mutual TLS for the client: the CA that signed the scheduler's
    and the workers' certificates, and this client's certificate and key (None: Dask's own
    configuration, ``distributed.comm.tls.*``)."""

    ca_file: Path | None = None
    cert: Path | None = None
    key: Path | None = None


def check_cluster_url(url: str) -> str:
    """``url`` when it names a Dask scheduler the payload key may travel to: ``tls://HOST:
    PORT``, or ``tcp://HOST:PORT`` with HOST on this machine's loopback. Raises
    :class:`InputError` (exit 2) otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise InputError(
            f"--cluster {url!r}: the address of a Dask scheduler is tls://HOST:PORT "
            "(or tcp://127.0.0.1:PORT on this machine)",
            hint="for example --cluster tls://scheduler.example:8786",
        )
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None or parts.path not in ("", "/") or parts.username:
        raise InputError(
            f"--cluster {url!r}: give the scheduler's host and port, nothing else",
            hint=f"for example --cluster {parts.scheme}://scheduler.example:8786",
        )
    if parts.scheme == "tcp" and not _loopback(parts.hostname):
        raise InputError(
            f"--cluster {url!r}: the backup's payload key would travel unencrypted; tcp:// is "
            "accepted only for a scheduler on this machine's loopback",
            hint=f"use tls://{parts.hostname}:{port} with --cluster-ca, --cluster-cert and "
            "--cluster-key (docs/scale.md, Trust model)",
        )
    return f"{parts.scheme}://{parts.netloc}"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Cluster:
    """A connection to one Dask scheduler that runs segment jobs (:meth:`run`). Connects
    on :meth:`connect` (exit 3 when nothing answers, or no worker has joined, within
    ``timeout`` seconds), closes on :meth:`close`; also a context manager. A cluster that
    loses every worker during a run waits for new ones, as Dask does (Ctrl-C ends it)."""

    def __init__(self, url: str, *, tls: ClusterTls | None = None, timeout: float = 10.0) -> None:
        self.url = check_cluster_url(url)
        self._tls = tls or ClusterTls()
        self._timeout = timeout
        self._client: Any = None

    def connect(self) -> Cluster:
        """Open the connection. Raises :class:`InputError` for TLS files that are missing,
        :class:`OperationError` (exit 3) when the scheduler does not answer."""
        security = self._security()
        logging.getLogger("distributed").setLevel(logging.CRITICAL)  # errors are ours to word
        try:
            self._client = _distributed().Client(
                self.url,
                security=security,
                timeout=self._timeout,
                set_as_default=False,
            )
        except (OSError, TimeoutError, ValueError) as exc:
            raise OperationError(
                f"the Dask scheduler at {self.url} does not answer: {_first_line(exc)}",
                hint=_HINT,
            ) from exc
        try:  # tasks sent to a scheduler without workers would wait forever
            self._client.wait_for_workers(1, timeout=self._timeout)
        except (OSError, TimeoutError) as exc:
            self.close()
            raise OperationError(
                f"the Dask scheduler at {self.url} has no workers",
                hint="start workers (dask worker "
                f"{self.url}) that can read the vault, or verify without --cluster",
            ) from exc
        return self

    def _security(self) -> Any:
        if not self.url.startswith("tls://"):
            return None
        tls = self._tls
        for what, path in (("CA", tls.ca_file), ("certificate", tls.cert), ("key", tls.key)):
            if path is not None and not path.is_file():
                raise InputError(f"the cluster's TLS {what} file {path} does not exist")
        security = _distributed().security.Security(
            tls_ca_file=str(tls.ca_file) if tls.ca_file else None,
            tls_client_cert=str(tls.cert) if tls.cert else None,
            tls_client_key=str(tls.key) if tls.key else None,
            require_encryption=True,
        )
        if not (security.tls_ca_file and security.tls_client_cert):
            raise InputError(
                f"--cluster {self.url}: TLS needs the cluster's CA and this client's "
                "certificate and key",
                hint="give --cluster-ca, --cluster-cert and --cluster-key (or set Dask's "
                "distributed.comm.tls.ca-file and distributed.comm.tls.client.cert/key)",
            )
        return security

    def run(self, jobs: Sequence[SegmentJob]) -> Iterator[SegmentPart]:
        """Run ``jobs`` on the cluster; yield their parts in the jobs' order. Raises
        :class:`OperationError` when the cluster cannot finish one (its workers died more
        often than Dask's ``allowed-failures``, the scheduler went away)."""
        client = self._client
        assert client is not None, "connect() first"
        run_id = uuid.uuid4().hex[:12]
        futures = client.map(
            check_segment,
            list(jobs),
            key=[f"affidavit-segment-{run_id}-{job.index}" for job in jobs],
            pure=False,
        )
        try:
            for job, future in zip(jobs, futures, strict=True):
                try:
                    part = future.result()
                except Exception as exc:  # anything the cluster raises: it did not finish
                    raise OperationError(
                        f"the cluster at {self.url} did not finish segment {job.index} of "
                        f"{job.path}: {type(exc).__name__}: {_first_line(exc)}",
                        hint="check the cluster's workers (memory, restarts) and run the "
                        "verification again",
                    ) from exc
                if not isinstance(part, SegmentPart):
                    raise OperationError(
                        f"the cluster at {self.url} answered segment {job.index} with "
                        f"{type(part).__name__}, not a segment's result",
                        hint="run the same affidavit version on the workers",
                    )
                yield part
        finally:
            client.cancel(futures)

    def close(self) -> None:
        """Close the connection (the cluster keeps running)."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def __enter__(self) -> Cluster:
        return self.connect()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _distributed() -> Any:
    """The ``distributed`` package (imported on first use: the ``cluster`` extra), untyped."""
    try:
        import distributed
        import distributed.security
    except ImportError as exc:
        raise InputError(
            "--cluster needs Dask's distributed package",
            hint="pip install 'affidavit[cluster]'",
        ) from exc
    return distributed


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
