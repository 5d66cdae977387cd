"""Regressions from the hostile pass against the annotation app (issue #18): each failed before its fix.

CSRF on cookie-authenticated forms and API posts, export of non-Latin-1 and CR/LF campaign names, the
form's redirect with a raw name in the URL, and annotators whose name holds a '/'. Run on SQLite, and on
PostgreSQL too when RLHFKIT_TEST_POSTGRES_URL is set (the `env` fixture of test_annotate_app).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from rlhfkit.annotate.web import csrf_token
from test_annotate_app import BACKENDS, Env, candidates, make_env

BASE = "http://testserver"


@pytest.fixture(params=BACKENDS)
def env(request, tmp_path: Path) -> Iterator[Env]:
    made = make_env(request.param, tmp_path)
    yield made
    made.store.close()


def cookie_client(env: Env, name: str) -> TestClient:
    """A browser-like client: logged in through the login link, authenticated by the cookie only."""
    client = TestClient(env.app, base_url=BASE)
    response = client.get(f"/login?token={env.tokens[name]}", follow_redirects=False)
    assert response.status_code == 303 and "rlhfkit_token" in response.cookies
    return client


def page_token(client: TestClient, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200
    return re.search(r'name="csrf-token" content="([0-9a-f]+)"', page.text).group(1)


def test_admin_forms_need_the_csrf_token_and_our_origin(env: Env) -> None:
    boss = cookie_client(env, "boss")
    token = page_token(boss, "/admin")
    assert token == csrf_token(env.tokens["boss"])
    assert f'name="csrf_token" value="{token}"' in boss.get("/admin").text  # in every admin form
    # A cross-site form: no token -> 403, and nothing was created.
    forged = boss.post("/admin/annotators", data={"name": "mallory"}, headers={"origin": "http://evil.test"})
    assert forged.status_code == 403
    assert boss.post("/admin/annotators", data={"name": "mallory"}).status_code == 403  # no token
    wrong = boss.post("/admin/annotators", data={"name": "mallory", "csrf_token": "0" * 32})
    assert wrong.status_code == 403
    # Another port of the same host is the same *site* (SameSite does not help) but not the same origin.
    other_port = boss.post(
        "/admin/annotators",
        data={"name": "mallory", "csrf_token": token},
        headers={"origin": "http://testserver:8081"},
    )
    assert other_port.status_code == 403
    referer = boss.post(
        "/admin/annotators",
        data={"name": "mallory", "csrf_token": token},
        headers={"referer": "http://evil.test/page"},
    )
    assert referer.status_code == 403
    assert env.client("boss").get("/api/annotators").json()[-1]["name"] != "mallory"
    # Our own page's form: accepted.
    ok = boss.post("/admin/annotators", data={"name": "cy", "csrf_token": token}, headers={"origin": BASE})
    assert ok.status_code == 200 and "/login?token=" in ok.text
    proxied = boss.post(  # behind a reverse proxy the browser's origin is the proxy's host
        "/admin/annotators",
        data={"name": "dee", "csrf_token": token},
        headers={"origin": "https://annotate.example.org", "x-forwarded-host": "annotate.example.org"},
    )
    assert proxied.status_code == 200
    files = {"candidates": ("c.jsonl", json.dumps(candidates(1)[0]) + "\n", "application/json")}
    no_token = boss.post("/admin/campaigns", data={"name": "w"}, files=files)
    assert no_token.status_code == 403
    created = boss.post(
        "/admin/campaigns", data={"name": "w", "csrf_token": token}, files=files, follow_redirects=False
    )
    assert created.status_code == 303
    rotate = boss.post("/admin/annotators/ana/token")
    assert rotate.status_code == 403
    assert boss.post("/admin/annotators/ana/token", data={"csrf_token": token}).status_code == 200


def test_cookie_api_posts_need_the_header_bearer_scripts_do_not(env: Env) -> None:
    env.campaign()
    ana = cookie_client(env, "ana")
    token = page_token(ana, "/c/c1")
    view = ana.get("/api/campaigns/c1/next").json()
    body = {"assignment_id": view["assignment_id"], "ranking": [r["index"] for r in view["responses"]]}
    assert ana.post("/api/campaigns/c1/labels", json=body).status_code == 403
    assert ana.post("/api/campaigns/c1/undo").status_code == 403  # a body-less post: a form could send it
    assert (
        ana.post("/api/campaigns/c1/skip", json={"assignment_id": view["assignment_id"]}).status_code == 403
    )
    foreign = ana.post(
        "/api/campaigns/c1/labels", json=body, headers={"x-csrf-token": token, "origin": "null"}
    )
    assert foreign.status_code == 403
    assert ana.post("/api/campaigns/c1/labels", json=body, headers={"x-csrf-token": token}).status_code == 201
    # Scripts with a Bearer token are not browsers: no CSRF token needed.
    bo = env.client("bo")
    view = bo.get("/api/campaigns/c1/next").json()
    body = {"assignment_id": view["assignment_id"], "ranking": [r["index"] for r in view["responses"]]}
    assert bo.post("/api/campaigns/c1/labels", json=body).status_code == 201


def test_export_of_any_campaign_name(env: Env) -> None:
    boss = env.client("boss")
    for name in ("données ✓ 日本", "q?x#y", 'a "quoted" name'):
        body = {"name": name, "candidates": candidates(1)}
        assert boss.post("/api/campaigns", json=body).status_code == 201
        response = boss.get(f"/api/campaigns/{quote(name, safe='')}/export")
        assert response.status_code == 200, (name, response.text)
        disposition = response.headers["content-disposition"]
        assert disposition.startswith('attachment; filename="')
        assert f"filename*=UTF-8''{quote(name + '-majority.jsonl', safe='')}" in disposition


def test_names_with_control_characters_are_refused(env: Env) -> None:
    boss = env.client("boss")
    for name in ("bad\r\nSet-Cookie: x=1", "tab\there", "nul\x00", "line\u2028sep"):
        response = boss.post("/api/campaigns", json={"name": name, "candidates": candidates(1)})
        assert response.status_code == 422, (name, response.text)
        assert boss.post("/api/annotators", json={"name": name}).status_code == 422
        # The page form too (a form field may hold a NUL, which the JSON API refuses earlier).
        files = {"candidates": ("c.jsonl", json.dumps(candidates(1)[0]) + "\n", "application/json")}
        assert boss.post("/admin/campaigns", data={"name": name}, files=files).status_code == 422
    assert boss.get("/api/campaigns").json() == []


def test_form_redirect_quotes_the_campaign_name(env: Env) -> None:
    boss = env.client("boss")
    files = {"candidates": ("c.jsonl", json.dumps(candidates(1)[0]) + "\n", "application/json")}
    response = boss.post("/admin/campaigns", data={"name": "q?x#y %"}, files=files, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/c/q%3Fx%23y%20%25"
    page = boss.get(response.headers["location"])
    assert page.status_code == 200 and "q?x#y %" in page.text


def test_an_annotator_with_a_slash_gets_a_new_link(env: Env) -> None:
    boss = env.client("boss")
    created = boss.post("/api/annotators", json={"name": "team a/b"})
    assert created.status_code == 201
    rotated = boss.post(f"/api/annotators/{quote('team a/b', safe='/')}/token")
    assert rotated.status_code == 200 and rotated.json()["name"] == "team a/b"
    # The dashboard's button posts to the same kind of URL.
    page = boss.post(f"/admin/annotators/{quote('team a/b', safe='/')}/token")
    assert page.status_code == 200 and "Login link for team a/b" in page.text
