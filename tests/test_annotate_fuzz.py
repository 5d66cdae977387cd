"""API fuzz test of the annotation app: generated hostile and edge-case requests against a real server.

A seeded generator sends label, skip, undo, campaign and annotator requests with mutated bodies (wrong
types, huge and negative numbers, NaN, NUL and other odd Unicode, deep nesting, oversized fields), odd
campaign and annotator names in paths and query strings, garbage tokens and cookies, forms with and
without CSRF tokens, and raw bodies that are not JSON or not UTF-8 — from 8 clients at once, on SQLite and
(with RLHFKIT_TEST_POSTGRES_URL) PostgreSQL. No answer may be a 5xx, the server must still label
afterwards, and what it stored must still export. The count and status histogram are printed (`-s`).
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from rlhfkit.annotate.web import csrf_token
from rlhfkit.serve.server import background
from test_annotate_app import BACKENDS, Env, candidates, make_env

REQUESTS = 400
SEED = 18

HOSTILE = [
    None, True, False, 0, -1, 1, 2, 3, 9, 2**31, 2**62, 2**63, 2**64, -(2**63), 10**30, 0.5, 1e308, -1e308,
    float("nan"), float("inf"), "", " ", "x", "0", "1", "NaN", "\u0000", "a\u0000b", "\u202e\u200b",
    "\U0001f600" * 20, "é" * 300, "x" * 20000, "\r\n", "<script>alert(1)</script>", [], {}, [[]], [0, 0],
    [0, 1], [1, 0], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [-1, 0], [[0, 1]], [[0, 0]], [["a"]], {"a": 1},
    ["clear"], ["meh"], list(range(100)),
]  # fmt: skip
NAMES = [
    "c1",
    "",
    " ",
    "nope",
    "%00",
    "..",
    "a" * 300,
    "日本",
    "%2F",
    "q?x#y",
    "\u202e",
    "c1/next",
    "%",
    "NUL\x00",
]
LABEL_FIELDS = ["assignment_id", "ranking", "ties", "strength", "flags", "rationale", "seconds", "extra"]
CAMPAIGN_FIELDS = ["name", "candidates", "instructions", "overlap", "mode", "gold", "seed", "lease_seconds"]


@pytest.fixture(params=BACKENDS)
def served(request, tmp_path: Path) -> Iterator[tuple[str, Env]]:
    env = make_env(request.param, tmp_path)
    env.campaign(n=4, k=3, overlap=2)
    try:
        with background(env.app) as url:
            yield url.removesuffix("/v1"), env
    finally:
        env.store.close()


def _mutate(rng: random.Random, body: dict, fields: list[str]) -> dict:
    body = dict(body)
    for _ in range(rng.randint(1, 3)):
        roll = rng.random()
        if roll < 0.7:
            body[rng.choice(fields)] = rng.choice(HOSTILE)
        elif roll < 0.85 and body:
            body.pop(rng.choice(sorted(body)))
        else:
            body[rng.choice(fields)] = f"@@DEEP{rng.choice([5, 40, 3000])}@@"
    return body


def _encode(rng: random.Random, body) -> bytes:
    text = json.dumps(body, ensure_ascii=rng.random() < 0.5, allow_nan=True)
    text = re.sub(r'"@@DEEP(\d+)@@"', lambda m: "[" * int(m.group(1)) + "]" * int(m.group(1)), text)
    return text.encode("utf-8", "surrogatepass")


def _hostile_candidate(rng: random.Random) -> object:
    record = candidates(1, k=rng.randint(2, 3))[0]
    roll = rng.random()
    if roll < 0.3:
        record[rng.choice(["id", "prompt", "completions", "category", "meta", "ranking"])] = rng.choice(
            HOSTILE
        )
    elif roll < 0.6:
        record["completions"][0][0]["content"] = rng.choice(HOSTILE)
    elif roll < 0.8:
        record["prompt"][-1]["role"] = rng.choice(HOSTILE)
    else:
        return rng.choice(HOSTILE)
    return record


def generate(rng: random.Random, env: Env) -> list[tuple[str, str, bytes, dict]]:
    """(method, path, body, headers) requests."""
    auth = {name: {"authorization": f"Bearer {token}"} for name, token in env.tokens.items()}
    json_type = {"content-type": "application/json"}
    cases = []
    for _ in range(REQUESTS):
        who = rng.choice(["ana", "bo", "boss", "boss", None, "garbage", "cookie"])
        if who in env.tokens:
            headers = dict(auth[who])
        elif who == "garbage":
            headers = {
                "authorization": rng.choice(
                    ["Bearer", "Bearer x", "Basic abc", "bearer  x", "Bearer " + "x" * 5000]
                )
            }
        elif who == "cookie":
            token = env.tokens[rng.choice(["ana", "boss"])]
            headers = {"cookie": f"rlhfkit_token={token}"}
            if rng.random() < 0.5:
                headers["x-csrf-token"] = csrf_token(token)
            if rng.random() < 0.3:
                headers["origin"] = rng.choice(["http://evil.test", "null", "http://127.0.0.1:1"])
        else:
            headers = {}
        name = "c1" if rng.random() < 0.6 else rng.choice(NAMES)
        path_name = quote(name, safe="") if rng.random() < 0.8 else name.replace("\x00", "%00")
        kind = rng.random()
        if kind < 0.35:
            label = {
                "assignment_id": rng.randint(1, 12),
                "ranking": [0, 1, 2],
                "strength": 2,
                "flags": [],
                "rationale": "",
            }
            body = _mutate(rng, label, LABEL_FIELDS) if rng.random() < 0.8 else label
            cases.append(
                ("POST", f"/api/campaigns/{path_name}/labels", _encode(rng, body), {**headers, **json_type})
            )
        elif kind < 0.45:
            action = rng.choice(["skip", "undo"])
            body = _mutate(rng, {"assignment_id": rng.randint(1, 12)}, ["assignment_id"])
            cases.append(
                ("POST", f"/api/campaigns/{path_name}/{action}", _encode(rng, body), {**headers, **json_type})
            )
        elif kind < 0.6:
            campaign = {"name": rng.choice(NAMES[:4] + ["f" + str(rng.randint(0, 10**6))]),
                        "candidates": [_hostile_candidate(rng) for _ in range(rng.randint(1, 3))]}  # fmt: skip
            body = _mutate(rng, campaign, CAMPAIGN_FIELDS) if rng.random() < 0.5 else campaign
            cases.append(("POST", "/api/campaigns", _encode(rng, body), {**headers, **json_type}))
        elif kind < 0.7:
            person = _mutate(
                rng, {"name": "p" + str(rng.randint(0, 10**6)), "role": "annotator"}, ["name", "role"]
            )
            cases.append(("POST", "/api/annotators", _encode(rng, person), {**headers, **json_type}))
            cases.append(("POST", f"/api/annotators/{path_name}/token", b"", headers))
        elif kind < 0.85:
            query = rng.choice(["", "?votes=all", "?votes=bogus", "?include_gold=maybe", "?annotator=%00",
                                "?include_retracted=1", "?votes=" + "x" * 3000])  # fmt: skip
            what = rng.choice(["next", "labels", "stats", "export"])
            cases.append(("GET", f"/api/campaigns/{path_name}/{what}{query}", b"", headers))
        elif kind < 0.93:
            page = rng.choice(["/", "/admin", f"/admin/c/{path_name}", f"/c/{path_name}", "/login?token=" + path_name,
                               "/logout", "/api/me", "/api/campaigns", "/api/annotators", "/openapi.json"])  # fmt: skip
            cases.append(("GET", page, b"", {**headers, "accept": rng.choice(["text/html", "*/*"])}))
        else:
            form = {"name": rng.choice(NAMES), "role": rng.choice(["annotator", "admin", "root"])}
            if rng.random() < 0.6 and "cookie" in headers:
                form["csrf_token"] = csrf_token(headers["cookie"].split("=", 1)[1])
            encoded = "&".join(f"{k}={quote(str(v))}" for k, v in form.items()).encode()
            cases.append(
                (
                    "POST",
                    "/admin/annotators",
                    encoded,
                    {**headers, "content-type": "application/x-www-form-urlencoded"},
                )
            )
    boss = auth["boss"]
    cases += [
        ("POST", "/api/campaigns/c1/labels", b"{", {**auth["ana"], **json_type}),
        ("POST", "/api/campaigns/c1/labels", b"\xff\xfe{}", {**auth["ana"], **json_type}),
        ("POST", "/api/campaigns/c1/labels", b"[" * 50000, {**auth["ana"], **json_type}),
        ("POST", "/api/campaigns/c1/labels", b'{"assignment_id": 1, "ranking": [0, 1], "rationale": "\\ud800"}', {**auth["ana"], **json_type}),
        ("POST", "/api/campaigns/c1/labels", b"x" * (1 << 21), {**auth["ana"], **json_type}),
        ("POST", "/api/campaigns/c1/labels", b'{"assignment_id": 1}', {**auth["ana"], "content-type": "text/plain"}),
        ("POST", "/api/campaigns", b"null", {**boss, **json_type}),
        ("POST", "/admin/campaigns", b"--x\r\n\r\n--x--", {**boss, "content-type": "multipart/form-data; boundary=x"}),
        ("POST", "/admin/campaigns", b"garbage", {**boss, "content-type": "multipart/form-data"}),
        ("POST", "/admin/annotators", b"name=%ff%fe", {**boss, "content-type": "application/x-www-form-urlencoded"}),
        ("DELETE", "/api/campaigns/c1", b"", boss),
        ("GET", "/api/campaigns/" + "%ff" * 20 + "/next", b"", boss),
    ]  # fmt: skip
    return cases


def test_fuzzed_annotation_requests_never_get_a_5xx(served):
    base, env = served
    rng = random.Random(SEED)
    cases = generate(rng, env)
    statuses: Counter[int] = Counter()

    def run(case) -> tuple[int, str]:
        method, path, content, headers = case
        with httpx.Client(base_url=base, timeout=60) as client:
            response = client.request(method, path, content=content, headers=headers)
        return response.status_code, f"{method} {path[:120]} {content[:200]!r} -> {response.text[:300]}"

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(run, cases))
    statuses.update(status for status, _ in results)
    errors = [what for status, what in results if status >= 500]
    print(f"\nannotate fuzz: {len(cases)} requests, statuses {dict(sorted(statuses.items()))}")
    assert errors == [], "\n".join(errors)
    assert (
        statuses[200] + statuses[201] + statuses[303] >= 20
        and sum(v for k, v in statuses.items() if 400 <= k < 500) > 100
    )

    # Still serving: labels go in, and everything stored exports.
    boss = httpx.Client(base_url=base, headers={"authorization": f"Bearer {env.tokens['boss']}"}, timeout=60)
    with httpx.Client(
        base_url=base, headers={"authorization": f"Bearer {env.tokens['bo']}"}, timeout=60
    ) as bo:
        view = bo.get("/api/campaigns/c1/next").json()
        if not view["done"]:
            body = {
                "assignment_id": view["assignment_id"],
                "ranking": [r["index"] for r in view["responses"]],
            }
            assert bo.post("/api/campaigns/c1/labels", json=body).status_code == 201
    for campaign in boss.get("/api/campaigns").json():
        response = boss.get(f"/api/campaigns/{quote(campaign['name'], safe='')}/export?votes=all")
        assert response.status_code == 200, (campaign["name"], response.text[:300])
    boss.close()
