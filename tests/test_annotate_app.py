"""The annotation web app through FastAPI's TestClient: queue, labels, undo, skip, export, auth, escaping."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from rlhfkit.annotate.app import create_app
from rlhfkit.annotate.campaigns import add_annotator, get_campaign, next_assignment
from rlhfkit.annotate.store import Annotator, Assignment, Base, Item, Label, Store, open_store
from rlhfkit.cli import main

XSS = '<script>alert("pwned")</script><img src=x onerror=alert(1)>'


def candidates(n: int, k: int = 2) -> list[dict]:
    return [
        {
            "id": f"q{i}",
            "prompt": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": f"Question {i}?"},
            ],
            "completions": [[{"role": "assistant", "content": f"Answer {i}.{j}"}] for j in range(k)],
            "category": "qa",
            "meta": {"source": "test"},
        }
        for i in range(n)
    ]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


class Env:
    """A database with an admin and two annotators, and a client per person."""

    def __init__(self, tmp_path: Path, db: str | None = None) -> None:
        self.db = db or str(tmp_path / "annotate.db")
        self.store: Store = open_store(self.db)
        with self.store.transaction() as s:
            self.tokens = {
                name: add_annotator(s, name, role)[1]
                for name, role in [("boss", "admin"), ("ana", "annotator"), ("bo", "annotator")]
            }
        self.app = create_app(self.store)
        self.tmp = tmp_path

    def client(self, name: str | None = None) -> TestClient:
        client = TestClient(self.app)
        if name:
            client.headers["authorization"] = f"Bearer {self.tokens[name]}"
        return client

    def campaign(self, name: str = "c1", n: int = 3, k: int = 2, overlap: int = 2, **extra) -> None:
        body = {"name": name, "candidates": candidates(n, k), "overlap": overlap, **extra}
        response = self.client("boss").post("/api/campaigns", json=body)
        assert response.status_code == 201, response.text


# The queue and API tests also run on PostgreSQL when a (throwaway) database URL is given, e.g.
# RLHFKIT_TEST_POSTGRES_URL=postgresql+psycopg://rlhf:rlhf@127.0.0.1/annotate_test
POSTGRES = os.environ.get("RLHFKIT_TEST_POSTGRES_URL")


BACKENDS = ["sqlite"] + (["postgres"] if POSTGRES else [])


def make_env(backend: str, tmp_path: Path) -> Env:
    """A fresh Env on SQLite (a file in tmp_path) or on the PostgreSQL test database (emptied first)."""
    if backend == "postgres":
        store = Store(POSTGRES)
        Base.metadata.drop_all(store.engine)  # a clean database for every test
        store.close()
        return Env(tmp_path, POSTGRES)
    return Env(tmp_path)


@pytest.fixture(params=BACKENDS)
def env(request, tmp_path: Path) -> Iterator[Env]:
    made = make_env(request.param, tmp_path)
    yield made
    made.store.close()  # PostgreSQL: give the connections back before the next test


def label_next(client: TestClient, campaign: str = "c1", first_shown_wins: bool = True, **extra) -> dict:
    view = client.get(f"/api/campaigns/{campaign}/next").json()
    assert not view["done"]
    order = [r["index"] for r in view["responses"]]
    ranking = order if first_shown_wins else order[::-1]
    body = {"assignment_id": view["assignment_id"], "ranking": ranking, **extra}
    response = client.post(f"/api/campaigns/{campaign}/labels", json=body)
    assert response.status_code == 201, response.text
    return {"view": view, "label": response.json()}


def test_campaign_create_from_file_via_cli(tmp_path: Path) -> None:
    db = str(tmp_path / "a.db")
    path = write_jsonl(tmp_path / "cands.jsonl", candidates(4, k=3))
    gold = candidates(1, k=3)[0] | {"id": "gold-1", "ranking": [2, 0, 1]}
    gold_path = write_jsonl(tmp_path / "gold.jsonl", [gold])
    assert main(["annotate", "init", "--db", db]) == 0
    rc = main(
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
            "--overlap",
            "2",
            "--gold",
            str(gold_path),
            "--instructions",
            "Prefer the helpful one.",
        ]
    )
    assert rc == 0
    store = open_store(db)
    with store.transaction() as s:
        campaign = get_campaign(s, "c1")
        items = list(s.scalars(select(Item).where(Item.campaign_id == campaign.id).order_by(Item.position)))
    assert campaign.instructions == "Prefer the helpful one." and campaign.overlap == 2
    assert len(items) == 5 and sum(it.gold is not None for it in items) == 1
    assert {it.key for it in items} == {"q0", "q1", "q2", "q3", "gold-1"}
    assert all(len(it.completions) == 3 for it in items)
    # Pairwise mode makes one item per pair of responses: 4 prompts x 3 pairs.
    assert (
        main(
            [
                "annotate",
                "campaign",
                "create",
                "--db",
                db,
                "--name",
                "p",
                "--candidates",
                str(path),
                "--mode",
                "pairwise",
            ]
        )
        == 0
    )
    with store.transaction() as s:
        pairs = s.scalar(
            select(func.count()).select_from(Item).where(Item.campaign_id == get_campaign(s, "p").id)
        )
    assert pairs == 12


def test_malformed_candidates_name_line_and_field_and_store_nothing(tmp_path: Path, capsys) -> None:
    db = str(tmp_path / "a.db")
    good = candidates(3)
    bad = dict(good[1], completions=[[{"role": "assistant", "content": 42}], good[1]["completions"][1]])
    path = write_jsonl(tmp_path / "bad.jsonl", [good[0], bad, good[2]])
    rc = main(["annotate", "campaign", "create", "--db", db, "--name", "c1", "--candidates", str(path)])
    assert rc == 1
    err = capsys.readouterr().err
    assert "bad.jsonl:2" in err and "completions[0][0].content" in err and "expected a string" in err
    (tmp_path / "broken.jsonl").write_text(json.dumps(good[0]) + "\n{not json\n")
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
                str(tmp_path / "broken.jsonl"),
            ]
        )
        == 1
    )
    assert "broken.jsonl:2" in capsys.readouterr().err
    store = open_store(db)
    with store.transaction() as s:
        assert s.scalar(select(func.count()).select_from(Item)) == 0


def test_malformed_candidates_over_api_is_422_and_atomic(env: Env) -> None:
    records = candidates(3)
    records[2]["prompt"] = "not a list"
    response = env.client("boss").post("/api/campaigns", json={"name": "c1", "candidates": records})
    assert response.status_code == 422
    assert "candidates:3" in response.json()["detail"] and "prompt" in response.json()["detail"]
    assert env.client("boss").get("/api/campaigns").json() == []


def test_two_annotators_overlap_two_each_item_once(env: Env) -> None:
    env.campaign(n=5, overlap=2)
    seen: dict[str, list[str]] = {"ana": [], "bo": []}
    for name in ("ana", "bo"):
        client = env.client(name)
        for _ in range(5):
            seen[name].append(label_next(client)["view"]["item"]["id"])
        assert client.get("/api/campaigns/c1/next").json()["done"] is True
    assert sorted(seen["ana"]) == sorted(seen["bo"]) == [f"q{i}" for i in range(5)]
    with env.store.transaction() as s:
        pairs = s.execute(select(Label.item_id, Label.annotator_id)).all()
    assert len(pairs) == len(set(pairs)) == 10


def test_overlap_is_never_exceeded_and_queues_are_private(env: Env) -> None:
    env.campaign(n=2, overlap=1)
    ana, bo = env.client("ana"), env.client("bo")
    a_view = ana.get("/api/campaigns/c1/next").json()
    b_view = bo.get("/api/campaigns/c1/next").json()
    assert a_view["item"]["id"] != b_view["item"]["id"]
    # Reloading resumes the same item rather than taking another.
    assert ana.get("/api/campaigns/c1/next").json()["assignment_id"] == a_view["assignment_id"]
    # Bo cannot label Ana's item: it answers like a missing assignment.
    body = {"assignment_id": a_view["assignment_id"], "ranking": [0, 1]}
    assert bo.post("/api/campaigns/c1/labels", json=body).status_code == 404
    label_next(ana)
    assert ana.get("/api/campaigns/c1/next").json()["done"] is True  # overlap 1: bo holds the other item


def test_last_slot_race_between_threads(env: Env) -> None:
    env.campaign(n=1, overlap=1)
    with env.store.transaction() as s:
        people = [add_annotator(s, f"p{i}")[0] for i in range(8)]
    won: list[int] = []
    barrier = threading.Barrier(len(people))

    def ask(person) -> None:
        store = Store(env.db)  # own engine: a separate connection, as a separate worker would have
        barrier.wait()
        with store.transaction() as s:
            campaign = get_campaign(s, "c1")
            if next_assignment(s, campaign, person) is not None:
                won.append(person.id)
        store.close()

    threads = [threading.Thread(target=ask, args=(p,)) for p in people]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    with env.store.transaction() as s:
        assert s.scalar(select(func.count()).select_from(Assignment)) == 1
        assert s.scalar(select(Item.taken)) == 1


def test_label_stored_and_exported_in_shared_format(env: Env, tmp_path: Path) -> None:
    env.campaign(n=2, overlap=2, instructions="Be fair")
    ana, bo = env.client("ana"), env.client("bo")
    first = label_next(ana, flags=["factually_wrong"], rationale="more accurate", strength=3, seconds=4.5)
    label_next(ana)
    label_next(bo, first_shown_wins=False)
    stored = ana.get("/api/campaigns/c1/labels").json()
    assert len(stored) == 2 and all(r["annotator"] == "ana" for r in stored)
    assert stored[0]["flags"] == ["factually_wrong"] and stored[0]["seconds"] == 4.5
    assert stored[0]["display_order"] == [r["index"] for r in first["view"]["responses"]]

    out = tmp_path / "all.jsonl"
    assert (
        main(["annotate", "export", "--db", env.db, "--campaign", "c1", "--out", str(out), "--votes", "all"])
        == 0
    )
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 3
    rec = next(r for r in records if r["annotator"] == "ana" and r["meta"]["rationale"])
    for key in (
        "prompt",
        "completions",
        "ranking",
        "ties",
        "annotator",
        "seconds",
        "created_at",
        "id",
        "category",
        "meta",
    ):
        assert key in rec
    assert rec["prompt"][1] == {"role": "user", "content": f"Question {rec['id'][1:]}?"}
    assert rec["ranking"] == first["label"]["ranking"] and rec["flags"] == ["factually_wrong"]
    assert rec["meta"]["display_order"] == first["view"]["display_order"] and rec["meta"]["strength"] == 3
    assert rec["created_at"].endswith("+00:00")

    majority = env.client("boss").get("/api/campaigns/c1/export?votes=majority")
    assert majority.status_code == 200
    per_item = [json.loads(line) for line in majority.text.splitlines()]
    assert len(per_item) == 2 and all(r["annotator"] == "majority" for r in per_item)
    assert sum(len(r["meta"]["votes"]) for r in per_item) == 3


def test_pairwise_export_keeps_ties_and_flags(env: Env) -> None:
    env.campaign(n=1, k=3, overlap=1, mode="pairwise")
    ana = env.client("ana")
    view = ana.get("/api/campaigns/c1/next").json()
    response = ana.post(
        "/api/campaigns/c1/labels",
        json={
            "assignment_id": view["assignment_id"],
            "ranking": [0, 1],
            "ties": [[0, 1]],
            "flags": ["nonsense", "harmful"],
        },
    )
    assert response.status_code == 201
    label_next(ana)
    records = [
        json.loads(x) for x in env.client("boss").get("/api/campaigns/c1/export?votes=all").text.splitlines()
    ]
    assert len(records) == 2
    tie = next(r for r in records if r["tie"])
    assert tie["flags"] == ["harmful", "nonsense"] and tie["label"] == 0.5 and tie["margin"] == 0.0
    assert set(tie) >= {"prompt", "chosen", "rejected", "annotator", "seconds", "created_at", "id", "meta"}
    assert tie["chosen"][0]["role"] == "assistant" and tie["id"].startswith("q0:")


def test_double_submit_is_rejected(env: Env) -> None:
    env.campaign(n=2, overlap=1)
    ana = env.client("ana")
    view = ana.get("/api/campaigns/c1/next").json()
    body = {"assignment_id": view["assignment_id"], "ranking": [0, 1]}
    assert ana.post("/api/campaigns/c1/labels", json=body).status_code == 201
    assert ana.post("/api/campaigns/c1/labels", json=body).status_code == 409
    with env.store.transaction() as s:
        assert s.scalar(select(func.count()).select_from(Label)) == 1


def test_undo_reopens_last_item_and_keeps_history(env: Env) -> None:
    env.campaign(n=3, overlap=1)
    ana = env.client("ana")
    first = label_next(ana)
    second = label_next(ana)
    assert ana.post("/api/campaigns/c1/undo").status_code == 200
    again = ana.get("/api/campaigns/c1/next").json()
    assert again["item"]["id"] == second["view"]["item"]["id"]
    assert again["display_order"] == second["view"]["display_order"]  # same order as before
    assert len(ana.get("/api/campaigns/c1/labels").json()) == 1
    history = ana.get("/api/campaigns/c1/labels?include_retracted=true").json()
    assert len(history) == 2 and history[1]["retracted_at"] is not None
    ana.post("/api/campaigns/c1/labels", json={"assignment_id": again["assignment_id"], "ranking": [1, 0]})
    active = ana.get("/api/campaigns/c1/labels").json()
    assert [r["item"] for r in active] == [first["view"]["item"]["id"], second["view"]["item"]["id"]]
    assert active[1]["ranking"] == [1, 0]
    assert len(env.client("boss").get("/api/campaigns/c1/export?votes=all").text.splitlines()) == 2


def test_skip_frees_the_item_for_someone_else(env: Env) -> None:
    env.campaign(n=2, overlap=1)
    ana, bo = env.client("ana"), env.client("bo")
    view = ana.get("/api/campaigns/c1/next").json()
    assert (
        ana.post("/api/campaigns/c1/skip", json={"assignment_id": view["assignment_id"]}).status_code == 200
    )
    following = ana.get("/api/campaigns/c1/next").json()
    assert following["item"]["id"] != view["item"]["id"]
    assert bo.get("/api/campaigns/c1/next").json()["item"]["id"] == view["item"]["id"]
    # Undoing the skip fails now (bo holds the only slot) and says so.
    response = ana.post("/api/campaigns/c1/undo")
    assert response.status_code == 409 and "other annotators" in response.json()["detail"]


def test_untrusted_text_is_escaped_on_the_page(env: Env) -> None:
    records = candidates(1)
    records[0]["completions"][0][0]["content"] = XSS
    records[0]["prompt"][1]["content"] = "<b>bold?</b>"
    body = {"name": "x<script>", "candidates": records, "instructions": "<i>hi</i>"}
    assert env.client("boss").post("/api/campaigns", json=body).status_code == 201
    page = env.client("ana").get("/c/x<script>")
    assert page.status_code == 200
    assert "<script>alert" not in page.text and "<img src=x" not in page.text
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in page.text
    assert "&lt;b&gt;bold?&lt;/b&gt;" in page.text and "<i>hi</i>" not in page.text
    dashboard = env.client("boss").get("/admin/c/x<script>")
    assert dashboard.status_code == 200 and "x<script>" not in dashboard.text


def test_labelling_page_shows_everything(env: Env) -> None:
    env.campaign(n=2, k=3, overlap=1, instructions="Rank by helpfulness")
    page = env.client("ana").get("/c/c1")
    text = page.text
    assert "Be brief." in text and "Question" in text and text.count('class="response"') == 3
    for key in ("<kbd>T</kbd>", "<kbd>S</kbd>", "<kbd>U</kbd>", "<kbd>Enter</kbd>", "<kbd>3</kbd>"):
        assert key in text
    assert "Rank by helpfulness" in text and "0</strong> done" in text and "2</strong> left" in text


def test_auth(env: Env) -> None:
    env.campaign()
    anonymous = env.client()
    assert anonymous.get("/api/campaigns/c1/next").status_code == 401
    assert anonymous.get("/c/c1").status_code == 401
    assert anonymous.get("/admin").status_code == 401
    wrong = env.client()
    wrong.headers["authorization"] = "Bearer not-a-token"
    assert wrong.get("/api/me").status_code == 401
    assert anonymous.get("/login?token=nope").status_code == 401
    ana = env.client("ana")
    for path in (
        "/admin",
        "/admin/c/c1",
        "/api/campaigns/c1/stats",
        "/api/campaigns/c1/export",
        "/api/annotators",
    ):
        assert ana.get(path).status_code == 403, path
    assert ana.post("/api/campaigns", json={"name": "z", "candidates": candidates(1)}).status_code == 403
    assert ana.post("/api/annotators", json={"name": "mallory", "role": "admin"}).status_code == 403
    assert ana.get("/api/campaigns/c1/labels?annotator=bo").status_code == 403
    # The login link sets a cookie that then works for pages and the API.
    browser = env.client()
    response = browser.get(f"/login?token={env.tokens['ana']}", follow_redirects=False)
    assert response.status_code == 303 and "httponly" in response.headers["set-cookie"].lower()
    assert browser.get("/api/me").json() == {"name": "ana", "role": "annotator"}
    assert browser.get("/c/c1").status_code == 200


def test_tokens_are_stored_hashed(env: Env) -> None:
    with env.store.transaction() as s:
        stored = set(s.scalars(select(Annotator.token_hash)))
    assert len(stored) == 3 and not stored & set(env.tokens.values())
    if Path(env.db).exists():  # SQLite: the token is nowhere in the file either
        raw = b"".join(p.read_bytes() for p in Path(env.db).parent.glob(Path(env.db).name + "*"))
        assert all(token.encode() not in raw for token in env.tokens.values())


def test_bad_bodies_get_4xx_not_500(env: Env) -> None:
    env.campaign()
    ana = env.client("ana")
    view = ana.get("/api/campaigns/c1/next").json()
    aid = view["assignment_id"]
    cases = [
        ("/api/campaigns/c1/labels", b"{not json"),
        ("/api/campaigns/c1/labels", b"[1, 2]"),
        ("/api/campaigns/c1/labels", json.dumps({"assignment_id": aid, "ranking": [0, 0]}).encode()),
        ("/api/campaigns/c1/labels", json.dumps({"assignment_id": aid, "ranking": [0, 5]}).encode()),
        ("/api/campaigns/c1/labels", json.dumps({"assignment_id": aid, "ranking": "01"}).encode()),
        ("/api/campaigns/c1/labels", json.dumps({"assignment_id": 2**70, "ranking": [0, 1]}).encode()),
        (
            "/api/campaigns/c1/labels",
            json.dumps({"assignment_id": aid, "ranking": [0, 1], "flags": ["meh"]}).encode(),
        ),
        (
            "/api/campaigns/c1/labels",
            json.dumps({"assignment_id": aid, "ranking": [0, 1], "strength": 9}).encode(),
        ),
        (
            "/api/campaigns/c1/labels",
            json.dumps({"assignment_id": aid, "ranking": [0, 1], "ties": [[0, 0]]}).encode(),
        ),
        ("/api/campaigns/c1/skip", b'{"assignment_id": "x"}'),
        ("/api/campaigns/nope/labels", json.dumps({"assignment_id": aid, "ranking": [0, 1]}).encode()),
    ]
    for path, body in cases:
        response = ana.post(path, content=body, headers={"content-type": "application/json"})
        assert 400 <= response.status_code < 500, (path, body, response.status_code, response.text)
    huge = b'{"assignment_id": 1, "ranking": [0, 1], "rationale": "' + b"x" * (2 << 20) + b'"}'
    response = ana.post(
        "/api/campaigns/c1/labels", content=huge, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    # Streamed without a Content-Length: still refused.
    chunks = iter([huge[i : i + 65536] for i in range(0, len(huge), 65536)])
    response = ana.post(
        "/api/campaigns/c1/labels", content=chunks, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    # None of that stored anything, and the item is still labellable.
    body = {"assignment_id": aid, "ranking": [0, 1]}
    assert ana.post("/api/campaigns/c1/labels", json=body).status_code == 201


def test_dashboard_and_stats(env: Env) -> None:
    gold = candidates(1)[0] | {"id": "g", "ranking": [1, 0]}
    env.campaign(n=2, overlap=2, gold=[gold])
    for name in ("ana", "bo"):
        client = env.client(name)
        for _ in range(3):
            label_next(client)
    stats = env.client("boss").get("/api/campaigns/c1/stats").json()
    assert stats["progress"]["labels_done"] == 4 and stats["progress"]["percent"] == 100.0
    assert stats["labels"] == 6 and set(stats["annotators"]) == {"ana", "bo"}
    assert stats["position_bias"]["first_shown_wins"] == 1.0  # both always chose the first shown
    assert stats["annotators"]["ana"]["done"] == 3
    assert stats["annotators"]["ana"]["gold_accuracy"] in (0.0, 1.0)
    page = env.client("boss").get("/admin/c/c1")
    assert page.status_code == 200 and "Krippendorff" in page.text and "ana" in page.text
    assert "export?votes=majority" in page.text and "2 items + 1 gold" in page.text
    admin = env.client("boss").get("/admin")
    assert admin.status_code == 200 and "c1" in admin.text and "built-in method" not in admin.text


def test_admin_web_forms(env: Env) -> None:
    boss = env.client("boss")
    files = {
        "candidates": ("c.jsonl", "".join(json.dumps(r) + "\n" for r in candidates(2)), "application/json")
    }
    response = boss.post(
        "/admin/campaigns",
        data={"name": "web", "overlap": "2", "mode": "rank"},
        files=files,
        follow_redirects=False,
    )
    assert response.status_code == 303 and response.headers["location"] == "/admin/c/web"
    bad = {"candidates": ("bad.jsonl", '{"id": "a", "prompt": [], "completions": []}\n', "application/json")}
    response = boss.post("/admin/campaigns", data={"name": "bad"}, files=bad)
    assert response.status_code == 422 and "bad.jsonl:1" in response.text
    response = boss.post("/admin/annotators", data={"name": "cy", "role": "annotator"})
    assert response.status_code == 200 and "/login?token=" in response.text
    token = response.text.split("/login?token=")[1].split('"')[0]
    cy = env.client()
    cy.headers["authorization"] = f"Bearer {token}"
    assert cy.get("/api/me").json()["name"] == "cy"
    assert env.client("boss").get("/openapi.json").json()["paths"]["/api/campaigns/{name}/labels"]


def test_cli_status_and_annotator_link(tmp_path: Path, capsys) -> None:
    db = str(tmp_path / "a.db")
    assert main(["annotate", "init", "--db", db, "--base-url", "http://example.test:9"]) == 0
    assert "http://example.test:9/login?token=" in capsys.readouterr().out
    assert main(["annotate", "init", "--db", db]) == 1  # the admin exists already
    assert main(["annotate", "annotator", "add", "--db", db, "--name", "ana"]) == 0
    old = capsys.readouterr().out.split("token=")[1].strip()
    assert main(["annotate", "annotator", "link", "--db", db, "--name", "ana"]) == 0
    new = capsys.readouterr().out.split("token=")[1].strip()
    client = TestClient(create_app(db))
    assert client.get("/api/me", headers={"authorization": f"Bearer {old}"}).status_code == 401
    assert client.get("/api/me", headers={"authorization": f"Bearer {new}"}).status_code == 200
    assert main(["annotate", "status", "--db", db]) == 0
    assert "2 people (1 admin), 0 campaigns" in capsys.readouterr().out


def test_the_app_modules_import_in_one_direction():
    """web <- api <- pages <- app: no module imports one that imports it back (no import cycle)."""
    import ast
    from pathlib import Path

    import rlhfkit.annotate as package

    folder = Path(package.__file__).parent

    def imports(name: str) -> set[str]:
        tree = ast.parse((folder / f"{name}.py").read_text())
        found = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        found |= {f"{n.module}.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
                  for a in n.names}  # fmt: skip
        return {m.rsplit(".", 1)[-1] for m in found if m.startswith("rlhfkit.annotate")}

    assert not imports("web") & {"api", "pages", "app"}
    assert not imports("api") & {"pages", "app"}
    assert not imports("pages") & {"app"}
