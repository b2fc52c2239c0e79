"""The TLS options of the commands that hand work to a Dask cluster (``verify --cluster``,
``run-due --cluster``): one declaration, the same names and help everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ClusterCaOpt = Annotated[
    Path | None,
    typer.Option("--cluster-ca", metavar="FILE", help="The CA of the cluster's TLS."),
]
ClusterCertOpt = Annotated[
    Path | None,
    typer.Option("--cluster-cert", metavar="FILE", help="This client's TLS certificate."),
]
ClusterKeyOpt = Annotated[
    Path | None,
    typer.Option("--cluster-key", metavar="FILE", help="This client's TLS key."),
]
