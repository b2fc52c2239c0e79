"""``affidavit recipient add|verify|list``: who governed exports may go to."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated

import typer

from affidavit.cli import client
from affidavit.cli.output import JsonOpt, plain, print_list, print_result, when
from affidavit.cli.state import app_for
from affidavit.errors import OperationError
from affidavit.services.exports import recipients as svc
from affidavit.services.exports.files import read_text, refuse_existing, write_new

app = typer.Typer(
    help="Recipients of exports: an organisation, a contact and an age key whose possession "
    "they proved.",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(metavar="NAME", help="The recipient's name.")]


@app.command("add")
def add(
    ctx: typer.Context,
    name: NameArg,
    org: Annotated[str, typer.Option("--org", help="The receiving organisation.")],
    contact: Annotated[str, typer.Option(help="Who answers for it (name, e-mail).")],
    public_key: Annotated[
        str, typer.Option("--public-key", help="The recipient's age X25519 key (age1...).")
    ],
    challenge_out: Annotated[
        Path,
        typer.Option(
            "--challenge-out",
            help="Where to write the challenge the recipient decrypts (must not exist).",
        ),
    ],
    dpa: Annotated[
        str | None,
        typer.Option(help="The data-processing agreement reference (needed for restricted data)."),
    ] = None,
    json_out: JsonOpt = False,
) -> int:
    """Add a recipient and write its challenge: an age file only the holder of the key can
    decrypt (`age -d -i KEY FILE`). Exports go to it once `recipient verify` checked the
    answer. Remote-capable (--server: the challenge is written here, to --challenge-out)."""
    body = {"name": name, "org": org, "contact": contact, "public_key": public_key, "dpa": dpa}
    remote = client.remote(ctx)
    if remote is not None:
        refuse_existing(challenge_out, "the challenge file")  # before the server records
        data = dict(remote.post("/recipients", body))
        try:
            sealed = base64.b64decode(str(data.pop("challenge")), validate=True)
        except (KeyError, ValueError) as exc:
            raise OperationError("the server's answer holds no challenge file") from exc
        write_new(challenge_out, sealed, "the challenge file")
    else:
        with app_for(ctx) as application:
            data = svc.add_recipient(
                application,
                name,
                organisation=org,
                contact=contact,
                public_key=public_key,
                dpa=dpa,
                challenge_path=challenge_out,
            ).to_json()
    return print_result(
        {**data, "challenge": str(challenge_out)},
        f"Added recipient {data['name']}. Send {challenge_out} to {data['contact']}; "
        f"they decrypt it and you run `affidavit recipient verify {data['name']} "
        "--response FILE` with what it holds.",
        json_out=json_out,
    )


@app.command("verify")
def verify(
    ctx: typer.Context,
    name: NameArg,
    response: Annotated[
        Path, typer.Option(help="The recipient's answer: the decrypted challenge.")
    ],
    json_out: JsonOpt = False,
) -> int:
    """Check the recipient's answer to its challenge (exit 2 when it is wrong: nothing is
    recorded). Remote-capable (--server: the response file is read here and its text sent)."""
    remote = client.remote(ctx)
    if remote is not None:
        answer = read_text(response, "the challenge response", limit=4096)
        data = remote.post(f"{client.route('recipients', name)}/verify", {"response": answer})
    else:
        with app_for(ctx) as application:
            data = svc.verify_recipient(application, name, response).to_json()
    return print_result(
        data,
        f"Recipient {data['name']} proved possession of {data['public_key'][:20]}...",
        json_out=json_out,
    )


@app.command("list")
def list_(ctx: typer.Context, json_out: JsonOpt = False) -> int:
    """Every recipient and whether it proved possession of its key (remote-capable:
    --server)."""
    found = client.view(
        ctx,
        "/recipients",
        local=lambda app: {"recipients": [r.to_json() for r in svc.list_recipients(app)]},
    )["recipients"]
    return print_list(
        "Recipients",
        "recipients",
        found,
        item_json=dict,
        columns=["name", "organisation", "contact", "key", "DPA", "verified"],
        row=lambda r: [
            plain(r["name"]),
            plain(r["organisation"]),
            plain(r["contact"]),
            r["public_key"][:20] + "...",
            plain(r["dpa"]),
            when(r["verified_at"]) or "no",
        ],
        json_out=json_out,
        empty="No recipients yet: `affidavit recipient add NAME ...`.",
    )
