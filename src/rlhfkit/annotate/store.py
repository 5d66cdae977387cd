"""The annotation database: SQLAlchemy 2.0 models, engine and transactions.

Design
------
Five tables. ``annotators`` (token stored as a SHA-256 hash only), ``campaigns``, ``items`` (one row per
thing to label: a prompt with 2..K responses), ``assignments`` (who holds which item: the per-annotator
display order, the lease, the state) and ``labels`` (the judgements). Labels are never deleted: *undo*
marks a label ``retracted_at`` and re-opens its assignment, so every keystroke that reached the server is
kept for audit.

Concurrency and data safety rest on two portable mechanisms, so the same code is correct on SQLite and
PostgreSQL:

* **Slot counter with a conditional UPDATE.** ``items.taken`` counts the leased-or-done assignments of an
  item; a slot is claimed with ``UPDATE items SET taken = taken + 1 WHERE id = :id AND taken < overlap``
  and the claim succeeded only when one row changed. Two annotators asking for the last slot at once
  cannot both win (row lock on PostgreSQL; a single writer on SQLite).
* **Unique constraints.** ``(item_id, annotator_id)`` on assignments means nobody gets an item twice;
  ``(assignment_id, attempt)`` on labels means a double submit of the same item is rejected, not counted.

SQLite runs in WAL mode with ``synchronous=FULL`` (a commit is on disk before the HTTP answer goes out,
so a killed server loses nothing it acknowledged) and every transaction starts with ``BEGIN IMMEDIATE``:
SQLite then serialises writers up front (waiting up to ``busy_timeout``) instead of failing a reader that
later tries to write.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

ROLES = ("annotator", "admin")
MODES = ("rank", "pairwise")
# Assignment states: leased (on someone's screen), done (labelled), skipped, expired (lease ran out).
LEASED, DONE, SKIPPED, EXPIRED = "leased", "done", "skipped", "expired"


def utcnow() -> datetime:
    """Naive UTC 'now' (SQLite drops time zones; storing naive UTC everywhere keeps both backends equal)."""
    return datetime.now(UTC).replace(tzinfo=None)


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.replace(tzinfo=UTC).isoformat(timespec="seconds")


def new_token() -> str:
    return secrets.token_urlsafe(24)


def hash_token(token: str) -> str:
    """Tokens are 192 random bits, so a plain SHA-256 is enough (no password stretching needed)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Base(DeclarativeBase):
    pass


class Annotator(Base):
    __tablename__ = "annotators"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(20), default="annotator")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Campaign(Base):
    __tablename__ = "campaigns"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    instructions: Mapped[str] = mapped_column(Text, default="")
    mode: Mapped[str] = mapped_column(String(20), default="rank")
    overlap: Mapped[int] = mapped_column(Integer, default=1)
    lease_seconds: Mapped[int] = mapped_column(Integer, default=3600)
    seed: Mapped[int] = mapped_column(Integer, default=0)
    source: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (UniqueConstraint("campaign_id", "position"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    key: Mapped[str] = mapped_column(String(300))  # export id: source id, plus ":i-j" for pairs
    source_id: Mapped[str] = mapped_column(String(300))
    prompt: Mapped[list[Any]] = mapped_column(JSON)
    completions: Mapped[list[Any]] = mapped_column(JSON)
    category: Mapped[str] = mapped_column(String(200), default="")
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    gold: Mapped[dict[str, Any] | None] = mapped_column(
        JSON(none_as_null=True), nullable=True
    )  # {"ranking", "ties"}
    taken: Mapped[int] = mapped_column(Integer, default=0)


class Assignment(Base):
    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("item_id", "annotator_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), index=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id"), index=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    display_order: Mapped[list[int]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(20), default=LEASED)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    leased_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    lease_expires: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Label(Base):
    __tablename__ = "labels"
    __table_args__ = (UniqueConstraint("assignment_id", "attempt"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), index=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id"), index=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    ranking: Mapped[list[int]] = mapped_column(JSON)  # item completion indices, best first
    ties: Mapped[list[list[int]]] = mapped_column(JSON, default=list)
    strength: Mapped[int] = mapped_column(Integer, default=2)  # 1 slight, 2 clear, 3 strong
    flags: Mapped[list[str]] = mapped_column(JSON, default=list)
    rationale: Mapped[str] = mapped_column(Text, default="")
    display_order: Mapped[list[int]] = mapped_column(JSON)
    seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    retracted_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


def normalize_url(db: str) -> str:
    """Accept a bare file path as a SQLite database; anything with ``://`` is a SQLAlchemy URL."""
    if "://" in db:
        return db
    return f"sqlite:///{Path(db).expanduser().resolve()}"


def make_engine(db: str) -> Engine:
    """Engine for ``db`` (URL or SQLite path); SQLite gets WAL, FULL sync, IMMEDIATE transactions."""
    url = normalize_url(db)
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (see module docstring)
        cursor = dbapi_connection.cursor()
        if ":memory:" not in url and url != "sqlite://":
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class Store:
    """An engine plus a session factory; ``with store.transaction() as s:`` commits or rolls back."""

    def __init__(self, db: str) -> None:
        self.url = normalize_url(db)
        self.engine = make_engine(db)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def create_tables(self) -> None:
        Base.metadata.create_all(self.engine)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    def close(self) -> None:
        self.engine.dispose()


def open_store(db: str, create: bool = True) -> Store:
    store = Store(db)
    if create:
        store.create_tables()
    return store
