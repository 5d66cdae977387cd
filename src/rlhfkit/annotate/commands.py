"""`rlhfkit annotate ...`: run the web app and administer campaigns from the shell.

    rlhfkit annotate init --db runs/annotate.db            # tables + the first admin (prints a login link)
    rlhfkit annotate annotator add --name ana              # prints ana's personal login link
    rlhfkit annotate campaign create --name c1 --candidates runs/demo/candidates/candidates.jsonl --overlap 2
    rlhfkit annotate serve                                  # http://127.0.0.1:8080
    rlhfkit annotate status
    rlhfkit annotate export --campaign c1 --out runs/demo/labels/c1.jsonl --votes majority

``--db`` takes a SQLite file path or any SQLAlchemy URL (``postgresql+psycopg://user@host/db``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sqlalchemy import select

from rlhfkit.annotate.campaigns import (
    CampaignSpec,
    add_annotator,
    campaign_progress,
    create_campaign,
    get_campaign,
    login_url,
    rotate_token,
)
from rlhfkit.annotate.candidates import read_candidates
from rlhfkit.annotate.export import VOTES, export_records
from rlhfkit.annotate.store import MODES, ROLES, Annotator, Campaign, Store, open_store
from rlhfkit.config import add_command_group
from rlhfkit.data.jsonl import write_jsonl
from rlhfkit.errors import RlhfkitError

DEFAULT_DB = "runs/annotate.db"
DEFAULT_BASE_URL = "http://127.0.0.1:8080"


def _open(db: str) -> Store:
    if "://" not in db:
        Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return open_store(db)


def _transaction(db: str):
    """One transaction on the annotation database `db` (created if it does not exist yet)."""
    return _open(db).transaction()


def _db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db", default=DEFAULT_DB, help=f"SQLite path or SQLAlchemy URL (default {DEFAULT_DB})"
    )


def _base_url_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base-url", default=DEFAULT_BASE_URL, help="where people reach the server (for links)"
    )


def register(sub: argparse._SubParsersAction) -> None:
    cmds = add_command_group(sub, "annotate", help="web app where people compare model responses")

    serve = cmds.add_parser("serve", help="run the annotation web app")
    _db_option(serve)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.set_defaults(func=cmd_serve)

    init = cmds.add_parser(
        "init", help="create the database and the first admin; prints the admin's login link"
    )
    _db_option(init)
    init.add_argument("--name", default="admin", help="the admin's name (default admin)")
    _base_url_option(init)
    init.set_defaults(func=cmd_init)

    campaign_cmds = add_command_group(cmds, "campaign", help="manage campaigns")
    create = campaign_cmds.add_parser("create", help="create a campaign from a candidates file")
    _db_option(create)
    create.add_argument("--name", required=True)
    create.add_argument("--candidates", required=True, help="candidates JSONL (prompt + K completions)")
    create.add_argument("--instructions", default="", help="instructions text, or a file holding them")
    create.add_argument("--overlap", type=int, default=1, help="different annotators per item (default 1)")
    create.add_argument("--gold", help="gold items: candidates records with a known 'ranking'")
    create.add_argument("--mode", choices=MODES, default="rank", help="rank all K responses, or pairwise")
    create.add_argument("--seed", type=int, default=0, help="seed for display orders and gold placement")
    create.add_argument("--lease-seconds", type=int, default=3600, help="how long an item stays reserved")
    create.set_defaults(func=cmd_campaign_create)

    people_cmds = add_command_group(cmds, "annotator", help="manage annotators")
    add = people_cmds.add_parser("add", help="add a person; prints their personal login link")
    _db_option(add)
    add.add_argument("--name", required=True)
    add.add_argument("--role", choices=ROLES, default="annotator")
    _base_url_option(add)
    add.set_defaults(func=cmd_annotator_add)
    link = people_cmds.add_parser("link", help="issue a new login link (the old one stops working)")
    _db_option(link)
    link.add_argument("--name", required=True)
    _base_url_option(link)
    link.set_defaults(func=cmd_annotator_link)

    status = cmds.add_parser("status", help="progress of every campaign")
    _db_option(status)
    status.set_defaults(func=cmd_status)

    export = cmds.add_parser("export", help="write a campaign's labels as comparisons JSONL")
    _db_option(export)
    export.add_argument("--campaign", required=True)
    export.add_argument("--out", required=True)
    export.add_argument(
        "--votes", choices=VOTES, default="majority", help="one record per item, or per label"
    )
    export.add_argument("--include-gold", action="store_true", help="also export the gold (honeypot) items")
    export.set_defaults(func=cmd_export)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from rlhfkit.annotate.app import create_app

    store = _open(args.db)
    with store.transaction() as s:
        admins = s.scalar(select(Annotator).where(Annotator.role == "admin"))
    if admins is None:
        print(f"no admin yet: run `rlhfkit annotate init --db {args.db}` for a login link")
    print(f"rlhfkit annotate: http://{args.host}:{args.port}  (API docs at /docs)")
    uvicorn.run(create_app(store), host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    store = _open(args.db)
    with store.transaction() as s:
        if s.scalar(select(Annotator).where(Annotator.name == args.name)) is not None:
            raise RlhfkitError(
                f"{args.db}: '{args.name}' already exists; for a new link run "
                f"`rlhfkit annotate annotator link --db {args.db} --name {args.name}`"
            )
        _, token = add_annotator(s, args.name, "admin")
    print(f"database ready: {store.url}")
    print(f"admin login link for {args.name} (shown once): {login_url(args.base_url, token)}")
    return 0


def _instructions(value: str) -> str:
    path = Path(value)
    if value and len(value) < 4096 and path.is_file():
        return path.read_text(encoding="utf-8")
    return value


def cmd_campaign_create(args: argparse.Namespace) -> int:
    candidates = read_candidates(args.candidates)  # validates every line before touching the database
    gold = read_candidates(args.gold, gold=True) if args.gold else []
    spec = CampaignSpec(
        name=args.name,
        candidates=candidates,
        instructions=_instructions(args.instructions),
        overlap=args.overlap,
        mode=args.mode,
        gold=gold,
        seed=args.seed,
        lease_seconds=args.lease_seconds,
        source=str(args.candidates),
    )
    with _transaction(args.db) as s:
        campaign = create_campaign(s, spec)
        progress = campaign_progress(s, campaign)
    print(
        f"campaign {campaign.name!r}: {progress['items']} items, {progress['gold_items']} gold, "
        f"{campaign.mode} mode, overlap {campaign.overlap} -> {progress['labels_needed']} labels needed"
    )
    return 0


def cmd_annotator_add(args: argparse.Namespace) -> int:
    with _transaction(args.db) as s:
        person, token = add_annotator(s, args.name, args.role)
    print(
        f"{person.role} {person.name} added; personal login link (shown once): {login_url(args.base_url, token)}"
    )
    return 0


def cmd_annotator_link(args: argparse.Namespace) -> int:
    with _transaction(args.db) as s:
        token = rotate_token(s, args.name)
    print(f"new login link for {args.name} (the old one no longer works): {login_url(args.base_url, token)}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with _transaction(args.db) as s:
        people = list(s.scalars(select(Annotator).order_by(Annotator.id)))
        campaigns = [(c, campaign_progress(s, c)) for c in s.scalars(select(Campaign).order_by(Campaign.id))]
    print(
        f"{len(people)} people ({sum(p.role == 'admin' for p in people)} admin), {len(campaigns)} campaigns"
    )
    for c, p in campaigns:
        print(
            f"  {c.name}: {c.mode}, overlap {c.overlap}, {p['items']} items (+{p['gold_items']} gold), "
            f"{p['labels_done']}/{p['labels_needed']} labels ({p['percent']}%), {p['items_complete']} items complete"
        )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    with _transaction(args.db) as s:
        records = export_records(
            s, get_campaign(s, args.campaign), votes=args.votes, include_gold=args.include_gold
        )
    write_jsonl(args.out, records)  # atomic: a crash never leaves half an export behind
    print(f"wrote {len(records)} comparisons ({args.votes}) to {args.out}")
    return 0
