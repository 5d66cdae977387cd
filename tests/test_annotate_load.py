"""Load and fault tests against a real server on loopback: concurrent annotators, SIGKILL, double submits.

Every test runs on SQLite and, when RLHFKIT_TEST_POSTGRES_URL is set (``.ci/run`` sets it), on PostgreSQL.
The full size (20 annotators x 100 labels = 2,000, with a ``kill -9`` and a restart in the middle) runs
in the default suite; the same 2,000 without a kill is marked slow.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from rlhfkit.annotate.campaigns import CampaignSpec, add_annotator, create_campaign
from rlhfkit.annotate.candidates import parse_record
from rlhfkit.annotate.store import Base, Label, Store, open_store

POSTGRES = os.environ.get("RLHFKIT_TEST_POSTGRES_URL")
BACKENDS = ["sqlite"] + (["postgres"] if POSTGRES else [])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(db: str, port: int) -> subprocess.Popen:
    code = (
        "import sys, uvicorn; from rlhfkit.annotate.app import create_app; "
        "uvicorn.run(create_app(sys.argv[1]), host='127.0.0.1', port=int(sys.argv[2]), log_level='warning')"
    )
    process = subprocess.Popen([sys.executable, "-c", code, db, str(port)])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=1)
            return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not start")


def setup_db(
    tmp_path: Path, people: int, items: int, overlap: int, backend: str = "sqlite"
) -> tuple[str, dict]:
    db = str(tmp_path / "load.db")
    if backend == "postgres":
        db = POSTGRES
        store = Store(db)
        Base.metadata.drop_all(store.engine)  # a clean database for every test
        store.close()
    store = open_store(db)
    records = [
        {
            "id": f"q{i}",
            "prompt": [{"role": "user", "content": f"question {i}"}],
            "completions": [[{"role": "assistant", "content": f"answer {i}{c}"}] for c in "ab"],
        }
        for i in range(items)
    ]
    with store.transaction() as s:
        tokens = {f"p{i}": add_annotator(s, f"p{i}")[1] for i in range(people)}
        tokens["admin"] = add_annotator(s, "admin", "admin")[1]
        spec = CampaignSpec("c1", [parse_record(r, "mem", i) for i, r in enumerate(records)], overlap=overlap)
        create_campaign(s, spec)
    store.close()
    return db, tokens


def annotate_loop(
    base: str, token: str, count: int | None, acked: list, errors: list, stop: threading.Event
) -> None:
    """One annotator: fetch the next item, submit a label; record every 201 the server sent back.

    `count` labels, or (None) until the queue is done."""
    with httpx.Client(base_url=base, headers={"authorization": f"Bearer {token}"}, timeout=60) as client:
        for _ in itertools.count() if count is None else range(count):
            if stop.is_set():
                return
            try:
                view = client.get("/api/campaigns/c1/next").json()
                if view["done"]:
                    if count is not None:
                        errors.append("queue ended early")
                    return
                body = {
                    "assignment_id": view["assignment_id"],
                    "ranking": [view["responses"][0]["index"], view["responses"][1]["index"]],
                }
                response = client.post("/api/campaigns/c1/labels", json=body)
            except (httpx.HTTPError, json.JSONDecodeError, KeyError):
                return  # the server went away (the kill test)
            if response.status_code == 201:
                acked.append(response.json()["label_id"])
            else:
                errors.append(f"{response.status_code} {response.text}")


def run_load(tmp_path: Path, people: int, per_person: int, backend: str) -> None:
    db, tokens = setup_db(tmp_path, people, per_person, overlap=people, backend=backend)
    port = free_port()
    server = start_server(db, port)
    acked: list[int] = []
    errors: list[str] = []
    try:
        stop = threading.Event()
        base = f"http://127.0.0.1:{port}"
        threads = [
            threading.Thread(
                target=annotate_loop, args=(base, tokens[f"p{i}"], per_person, acked, errors, stop)
            )
            for i in range(people)
        ]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        print(
            f"{len(acked)} labels from {people} annotators in {elapsed:.1f} s ({len(acked) / elapsed:.0f}/s)"
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert errors == []
    assert len(acked) == len(set(acked)) == people * per_person
    store = open_store(db)
    with store.transaction() as s:
        assert s.scalar(select(func.count()).select_from(Label)) == people * per_person
        pairs = s.execute(select(Label.item_id, Label.annotator_id)).all()
    assert len(set(pairs)) == people * per_person  # nobody labelled an item twice
    store.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_annotators_small(tmp_path: Path, backend: str) -> None:
    run_load(tmp_path, people=5, per_person=20, backend=backend)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_annotators_2000_labels(tmp_path: Path, backend: str) -> None:
    run_load(tmp_path, people=20, per_person=100, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_2000_labels_through_a_kill_9_lose_nothing(tmp_path: Path, backend: str) -> None:
    """20 annotators x 100 items: kill -9 the server mid-load, restart it, finish every queue. Every label
    the server acknowledged is stored, and in the end each annotator labelled each item exactly once."""
    people, per_person = 20, 100
    db, tokens = setup_db(tmp_path, people, per_person, overlap=people, backend=backend)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    acked: list[int] = []
    errors: list[str] = []

    def crowd(stop: threading.Event) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=annotate_loop, args=(base, tokens[f"p{i}"], None, acked, errors, stop))
            for i in range(people)
        ]
        for t in threads:
            t.start()
        return threads

    server = start_server(db, port)
    stop = threading.Event()
    threads = crowd(stop)
    deadline = time.monotonic() + 120
    while len(acked) < 600 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(server.pid, signal.SIGKILL)  # requests are in flight
    server.wait(timeout=30)
    stop.set()
    for t in threads:
        t.join()
    before_restart = len(acked)
    assert 600 <= before_restart < people * per_person and errors == []
    server = start_server(db, port)  # the same database
    try:
        for t in crowd(threading.Event()):
            t.join()
        admin = httpx.Client(
            base_url=base, headers={"authorization": f"Bearer {tokens['admin']}"}, timeout=60
        )
        stored = admin.get("/api/campaigns/c1/labels").json()
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert errors == []
    assert set(acked) <= {row["label_id"] for row in stored}  # nothing acknowledged was lost
    assert len(acked) == len(set(acked))
    pairs = [(row["item"], row["annotator"]) for row in stored]
    assert len(pairs) == len(set(pairs)) == people * per_person  # every label once, none doubled
    print(f"{backend}: {before_restart} labels acknowledged before kill -9, {len(stored)} stored in the end")


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_mid_load_loses_no_acknowledged_label(tmp_path: Path, backend: str) -> None:
    people, per_person = 6, 200
    db, tokens = setup_db(tmp_path, people, per_person, overlap=people, backend=backend)
    port = free_port()
    server = start_server(db, port)
    acked: list[int] = []
    errors: list[str] = []
    stop = threading.Event()
    base = f"http://127.0.0.1:{port}"
    threads = [
        threading.Thread(target=annotate_loop, args=(base, tokens[f"p{i}"], per_person, acked, errors, stop))
        for i in range(people)
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acked) < 60 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(server.pid, signal.SIGKILL)  # mid-load: requests are in flight
    server.wait(timeout=30)
    stop.set()
    for t in threads:
        t.join()
    assert len(acked) >= 60 and errors == []
    assert len(acked) < people * per_person  # it really was killed mid-load
    server = start_server(db, port)  # restart on the same database
    try:
        admin = httpx.Client(
            base_url=base, headers={"authorization": f"Bearer {tokens['admin']}"}, timeout=30
        )
        stored = admin.get("/api/campaigns/c1/labels").json()
        stored_ids = {row["label_id"] for row in stored}
        assert set(acked) <= stored_ids  # every success answer is still there
        assert len({(row["item"], row["annotator"]) for row in stored}) == len(stored)
        # Work goes on after the restart: each annotator resumes their queue.
        again = httpx.Client(base_url=base, headers={"authorization": f"Bearer {tokens['p0']}"}, timeout=30)
        assert again.get("/api/campaigns/c1/next").json()["done"] is False
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.parametrize("backend", BACKENDS)
def test_double_submit_race_over_http(tmp_path: Path, backend: str) -> None:
    db, tokens = setup_db(tmp_path, 1, 3, overlap=1, backend=backend)
    port = free_port()
    server = start_server(db, port)
    try:
        base = f"http://127.0.0.1:{port}"
        headers = {"authorization": f"Bearer {tokens['p0']}"}
        view = httpx.get(f"{base}/api/campaigns/c1/next", headers=headers).json()
        body = {"assignment_id": view["assignment_id"], "ranking": [0, 1]}
        statuses: list[int] = []
        barrier = threading.Barrier(4)

        def send() -> None:
            barrier.wait()
            statuses.append(
                httpx.post(f"{base}/api/campaigns/c1/labels", json=body, headers=headers).status_code
            )

        threads = [threading.Thread(target=send) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(statuses) == [201, 409, 409, 409]
    finally:
        server.terminate()
        server.wait(timeout=30)
    store = open_store(db)
    with store.transaction() as s:
        assert s.scalar(select(func.count()).select_from(Label)) == 1
