"""One router per resource; each route declares its gate (``affidavit.server.gates``) and
calls one service inside ``Caller.acting()``, answering with the CLI's ``--json`` shapes."""

from __future__ import annotations

from fastapi import APIRouter

from affidavit.server.routes import (
    access_log,
    access_reviews,
    accounts,
    audit,
    auth,
    backups,
    baselines,
    calendar,
    credentials,
    custody,
    drills,
    evidence,
    exports,
    findings,
    health,
    holds,
    inventory,
    ledger,
    log_exports,
    oidc,
    policy,
    progress,
    requests,
    schedule,
    sources,
    tokens,
    vaults,
    verifications,
)

ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    auth.router,
    oidc.router,
    sources.router,
    vaults.router,
    backups.router,
    verifications.router,
    drills.router,
    holds.router,
    ledger.router,
    policy.router,
    accounts.router,
    tokens.router,
    requests.router,
    custody.router,
    access_reviews.router,
    access_log.router,
    findings.router,
    baselines.router,
    schedule.router,
    inventory.router,
    evidence.router,
    audit.router,
    calendar.router,
    credentials.router,
    log_exports.router,
    progress.router,
    exports.router,
)
"""Every router of the API, in the order the routes table lists them."""
