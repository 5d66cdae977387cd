"""Load and fault tests against a real server on loopback: concurrent annotators, SIGKILL, double submits.

The default run is small (5 annotators x 20 labels); the issue's full size (20 x 100 = 2,000 labels) is
marked slow: ``pytest tests/test_annotate_load.py -m slow``.
"""

from __future__ import annotations

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
from rlhfkit.annotate.store import Label, open_store


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


def setup_db(tmp_path: Path, people: int, items: int, overlap: int) -> tuple[str, dict[str, str]]:
    db = str(tmp_path / "load.db")
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
    base: str, token: str, count: int, acked: list, errors: list, stop: threading.Event
) -> None:
    """One annotator: fetch the next item, submit a label; record every 201 the server sent back."""
    with httpx.Client(base_url=base, headers={"authorization": f"Bearer {token}"}, timeout=60) as client:
        for _ in range(count):
            if stop.is_set():
                return
            try:
                view = client.get("/api/campaigns/c1/next").json()
                if view["done"]:
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


def run_load(tmp_path: Path, people: int, per_person: int) -> None:
    db, tokens = setup_db(tmp_path, people, per_person, overlap=people)
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


def test_concurrent_annotators_small(tmp_path: Path) -> None:
    run_load(tmp_path, people=5, per_person=20)


@pytest.mark.slow
def test_concurrent_annotators_2000_labels(tmp_path: Path) -> None:
    run_load(tmp_path, people=20, per_person=100)


def test_sigkill_mid_load_loses_no_acknowledged_label(tmp_path: Path) -> None:
    people, per_person = 6, 200
    db, tokens = setup_db(tmp_path, people, per_person, overlap=people)
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


def test_double_submit_race_over_http(tmp_path: Path) -> None:
    db, tokens = setup_db(tmp_path, 1, 3, overlap=1)
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
