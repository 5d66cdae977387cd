"""Real-browser test: headless Debian Chromium, driven by Playwright, labels items with the keyboard only.

Needs ``pip install playwright`` (the dev extra) and ``apt-get install chromium``; skipped without them, and a
failure under CI (``CI=true``), where they must run. Saves a screenshot of the labelling page to ``runs/test-artifacts/annotate-label-page.png`` (or to
``$RLHFKIT_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from conftest import CHROMIUM
from rlhfkit.annotate.store import Assignment, Item, Label, open_store
from rlhfkit.cli import main

pytestmark = pytest.mark.usefixtures("browser_ready")

PWN = '<script>window.__pwned = 1</script><img src="x" onerror="window.__pwned = 2">'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(db: str, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "rlhfkit.cli", "annotate", "serve", "--db", db, "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=1)
            return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("server did not start")


def _setup(tmp_path: Path, capsys) -> tuple[str, str]:
    import json

    db = str(tmp_path / "browser.db")
    records = [
        {
            "id": f"q{i}",
            "prompt": [
                {"role": "system", "content": "Be helpful."},
                {"role": "user", "content": f"Question {i}?"},
            ],
            "completions": [
                [{"role": "assistant", "content": PWN if i == 0 else f"Short answer {i}."}],
                [
                    {
                        "role": "assistant",
                        "content": "\n".join(f"Line {n} of a long answer." for n in range(60)),
                    }
                ],
            ],
        }
        for i in range(4)
    ]
    path = tmp_path / "cands.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["annotate", "init", "--db", db]) == 0
    assert (
        main(
            [
                "annotate",
                "campaign",
                "create",
                "--db",
                db,
                "--name",
                "c1",
                "--candidates",
                str(path),
                "--instructions",
                "Choose the more helpful answer.",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["annotate", "annotator", "add", "--db", db, "--name", "ana"]) == 0
    token = capsys.readouterr().out.strip().split("token=")[1]
    return db, token


def test_keyboard_only_labelling_in_chromium(tmp_path: Path, capsys) -> None:
    db, token = _setup(tmp_path, capsys)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = _serve(db, port)
    artifacts = Path(
        os.environ.get("RLHFKIT_TEST_ARTIFACTS", Path(__file__).parents[1] / "runs" / "test-artifacts")
    )
    artifacts.mkdir(parents=True, exist_ok=True)
    shown: list[list[int]] = []
    from playwright import sync_api

    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{base}/login?token={token}")  # the personal link: sets the cookie, lands on home
            assert "Your campaigns" in page.content()
            page.goto(f"{base}/c/c1")

            def done(n: int) -> None:
                page.wait_for_function(
                    f"document.querySelector('#progress-text').textContent.includes('{n} done')",
                    timeout=15000,
                )

            def order() -> list[int]:
                return [
                    int(x)
                    for x in page.eval_on_selector_all(".response", "els => els.map(e => e.dataset.index)")
                ]

            # Item 1 holds a script and an onerror image: it must show as text and never run.
            assert page.evaluate("window.__pwned") is None
            assert "<script>window.__pwned = 1</script>" in page.inner_text("section.responses")
            shown.append(order())
            page.keyboard.press("1")
            page.keyboard.press("Enter")
            done(1)
            shown.append(order())
            page.keyboard.press("2")
            page.keyboard.press("h")  # flag: harmful
            page.keyboard.press("Enter")
            done(2)
            shown.append(order())
            page.keyboard.press("t")  # tie
            page.keyboard.press("Enter")
            done(3)
            page.keyboard.press("u")  # undo the tie
            done(2)
            assert order() == shown[2]  # the same item, in the same order
            page.keyboard.press("2")
            page.keyboard.press("x")  # expand long responses
            page.keyboard.press("q")  # slightly better
            # What the annotator sees: the third item's question and both responses, its place in the queue.
            body = page.inner_text("body")
            assert any(f"Question {i}?" in body for i in range(1, 4)) and "Line 59 of a long answer." in body
            assert len(page.query_selector_all(".response")) == 2 and "2 done" in page.inner_text(
                "#progress-text"
            )
            page.screenshot(path=str(artifacts / "annotate-label-page.png"))
            page.keyboard.press("Enter")
            done(3)
            assert page.evaluate("window.__pwned") is None
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)

    assert (artifacts / "annotate-label-page.png").read_bytes().startswith(b"\x89PNG")
    store = open_store(db)
    with store.transaction() as s:
        rows = s.execute(
            select(Label, Item.key).join(Item, Item.id == Label.item_id).order_by(Label.id)
        ).all()
        assignments = s.scalars(select(Assignment)).all()
    active = [(label, key) for label, key in rows if label.retracted_at is None]
    retracted = [label for label, _ in rows if label.retracted_at is not None]
    assert (
        len(active) == 3 and len(retracted) == 1 and len(assignments) == 4
    )  # 4th item is on screen, unlabelled
    (l1, _), (l2, _), (l3, _) = active
    assert l1.display_order == shown[0] and l1.ranking[0] == shown[0][0] and l1.flags == [] and l1.ties == []
    assert l2.ranking[0] == shown[1][1] and l2.flags == ["harmful"]
    assert retracted[0].ties == [[0, 1]] and retracted[0].strength == 0
    assert l3.ranking[0] == shown[2][1] and l3.ties == [] and l3.strength == 1
    assert all(label.seconds > 0 for label, _ in rows)
