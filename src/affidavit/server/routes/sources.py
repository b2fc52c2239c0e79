"""``GET /sources``, ``GET /sources/{name}``: the registered sources (``source.read``);
``POST /sources`` (``source.manage``): register one; ``POST /sources/{name}/test``
(``source.test``): connect to one from the server's host; ``POST /dataset-classifications``
(``dataset.classify``): give a dataset its own classification.

A source registered through the server keeps a *reference* to its password, as on the host:
the name of an environment variable of the server's process or the absolute path of a file on
the server's host, read when the server connects. No password travels in a request. The
server's own secrets are not for sources: a variable named ``AFFIDAVIT_*`` and a file inside
the server's home are refused (a source's password is sent to the source, which whoever
registers it may control)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from affidavit.errors import InputError
from affidavit.models.inventory import SecretRef, parse_classification, parse_engine
from affidavit.models.permissions import Permission
from affidavit.server.gates import Caller, allow
from affidavit.server.replies import reply
from affidavit.services import inventory
from affidavit.services.context import App
from affidavit.services.secrets import make_secret_ref, own_secret_problem
from affidavit.services.views import dataset_json, source_json, source_test_json

router = APIRouter(tags=["sources"])
Reader = Annotated[Caller, Depends(allow(Permission.SOURCE_READ))]


@router.get("/sources")
def list_sources(caller: Reader) -> Response:
    """Every registered source (``source list --json``)."""
    with caller.acting() as app:
        found = inventory.list_sources(app)
    return reply({"sources": [source_json(s) for s in found]})


@router.get("/sources/{name}")
def show_source(caller: Reader, name: str) -> Response:
    """One source with the datasets the catalog knows of it (``source show --json``)."""
    with caller.acting() as app:
        source, datasets = inventory.get_source(app, name)
    return reply({**source_json(source), "datasets": [dataset_json(d) for d in datasets]})


class NewSource(BaseModel):
    """What ``source add`` takes; the password by reference only (``secret_env``: a variable
    of the server's process, ``secret_file``: an absolute path on the server's host)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    engine: str = Field(min_length=1, max_length=32)
    uri: str = Field(min_length=1, max_length=4000)
    classification: str = Field(min_length=1, max_length=32)
    secret_env: str | None = Field(default=None, max_length=200)
    secret_file: str | None = Field(default=None, max_length=4000)
    region: str | None = Field(default=None, max_length=200)
    owner: str | None = Field(default=None, max_length=320)


@router.post("/sources", status_code=201)
def add_source(
    caller: Annotated[Caller, Depends(allow(Permission.SOURCE_MANAGE))], body: NewSource
) -> Response:
    """Register a source (``source add --json``)."""
    engine = parse_engine(body.engine)
    level = parse_classification(body.classification)
    with caller.acting() as app:
        secret = server_secret_ref(app, env=body.secret_env, file=body.secret_file)
        source = inventory.add_source(
            app,
            name=body.name,
            engine=engine,
            uri=body.uri,
            secret=secret,
            classification=level,
            region=body.region,
            owner=body.owner,
        )
    return reply(source_json(source), 201)


@router.post("/sources/{name}/test")
def probe_source(
    caller: Annotated[Caller, Depends(allow(Permission.SOURCE_TEST))], name: str
) -> Response:
    """Connect to a source from the server's host (``source test --json``; records nothing;
    an unreachable source is a result, ``"reachable": false``, with its exit code)."""
    with caller.acting() as app:
        result = inventory.test_source(app, name)
    return reply(source_test_json(result))


def server_secret_ref(app: App, *, env: str | None, file: str | None) -> SecretRef | None:
    """A source's secret reference given through the API: as ``source add`` makes it, but a
    file must be named by an absolute path (a relative one would mean the server's working
    folder), and neither may name the server's own secrets (``AFFIDAVIT_*``, the home)."""
    if file is not None and not Path(file).is_absolute():
        raise InputError(
            "through the server, --secret-file names a file on the server's host by its "
            "absolute path",
            hint="e.g. --secret-file /run/secrets/orders-db (readable by the server only)",
        )
    ref = make_secret_ref(env=env, file=file)
    problem = None if ref is None else own_secret_problem(ref, app.settings.home)
    if problem is not None:
        raise InputError(
            f"a source's secret may not be one of the server's own: {problem}",
            hint="give the source's password its own variable or a file outside the home",
        )
    return ref


class Classification(BaseModel):
    """What ``dataset classify`` takes: ``SOURCE/DATASET``, the level and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = Field(min_length=1, max_length=600)
    level: str = Field(min_length=1, max_length=32)
    reason: str = Field(max_length=2000)


@router.post("/dataset-classifications")
def classify(
    caller: Annotated[Caller, Depends(allow(Permission.DATASET_CLASSIFY))], body: Classification
) -> Response:
    """Classify one dataset (``dataset classify --json``)."""
    level = parse_classification(body.level)
    with caller.acting() as app:
        dataset = inventory.classify_dataset(app, body.dataset, level, reason=body.reason)
    return reply(dataset_json(dataset))
