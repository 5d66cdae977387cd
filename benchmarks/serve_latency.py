"""`rlhfkit serve` under a maximum-size request: the latency of a small chat request, and peak memory.

    taskset -c 1 .venv/bin/python benchmarks/serve_latency.py [--preset small] [--context 1024] [--probes 8]

A real server process (its own interpreter: what `rlhfkit serve --threads 1` runs, with default limits)
serves a randomly initialized `--preset` model with its stop tokens switched off, so every row runs to its
`max_tokens`: the worst case. One client sends the largest request the default limits allow: 1 prompt x n=128 choices with
max_tokens filling the 65,536-token request budget (128 x 512 tokens). While it runs, another client
sends `--probes` 4-token chat requests, one after the other, and times each. Also measured: the same chat
on the idle server, the server's resident memory before the big request and its peak (VmHWM) after, and
— as the control — the same run with `--max-active-batches 1` (no interleaving: a small request waits
for the running batch to finish). Each runs with continuous batching (the default) and static batching.
Prints one JSON object; the goal is a chat latency <= 2 s.

    flock /work/cpu.lock .venv/bin/python benchmarks/serve_latency.py --concurrent \
        --model sft=runs/demo/sft --model smol=SMOLLM2_DIR [--prompts runs/demo/world/prompts.jsonl]

`--concurrent`: continuous against static batching (`rlhfkit serve --batching`), one server process per
mode and model, in the same run. (1) `--clients` chat clients (16), each sending `--requests-per-client`
requests one after the other with fixed seeds (so both modes generate the same tokens): aggregate completion
tokens/s (goal: continuous >= 3x static). (2) With the stop tokens off, as many long completions
(`--long-tokens`) decode while 4-token chats are sent one after the other: each chat's latency (goal <= 2 s).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from cpu_info import cpu_info

SUBJECTS = ["The cat", "A farmer", "The old king", "My sister", "The baker", "A sailor", "The teacher"]
VERBS = ["sees", "takes", "sells", "paints", "finds", "carries", "watches"]
OBJECTS = ["a red apple", "the bread", "a small boat", "the letters", "a warm soup", "the map"]
PLACES = ["near the river", "in the market", "at home", "on the hill", "by the sea", "in the garden"]
CHAT = [{"role": "user", "content": "What does the baker sell?"}]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build_checkpoint(folder: Path, preset: str, context: int) -> tuple[Path, int]:
    from rlhfkit.artifacts import save_hf_checkpoint
    from rlhfkit.models import build_model, count_parameters
    from rlhfkit.tokenizer import load_tokenizer, train_tokenizer

    rng = random.Random(0)
    corpus = folder / "corpus.txt"
    lines = [
        f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(PLACES)}."
        for _ in range(20000)
    ]
    corpus.write_text("\n".join(lines) + "\n")
    train_tokenizer(corpus, 1024, folder / "tok")
    tokenizer = load_tokenizer(folder / "tok")
    model = build_model(preset, len(tokenizer), context, tokenizer, seed=0)
    out = folder / "model"
    save_hf_checkpoint(model, tokenizer, out)
    (out / "rlhfkit.json").write_text(json.dumps({"stage": "base"}))
    return out, count_parameters(model)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# `rlhfkit serve --threads 1` with default limits, except that the model's stop tokens are switched off: random
# weights would otherwise end rows at random end tokens, and every row must run to max_tokens (the worst case).
# `--batching` and the stop switch are the last two arguments (the concurrent-clients measurement keeps stops).
SERVER = """
import sys, torch
from rlhfkit.serve import create_app, load_served_models
from rlhfkit.serve.server import run
torch.set_num_threads(1)  # as `rlhfkit serve` does: only the model's worker thread decodes, with argv[6] threads
models = load_served_models(
    [sys.argv[1]], max_active_batches=int(sys.argv[3]), batching=sys.argv[4], threads=int(sys.argv[6])
)
for served in models.values():
    if sys.argv[5] == "no-stops":
        served.stop_token_ids = ()
run(create_app(models), port=int(sys.argv[2]))
"""


def start_server(
    checkpoint: Path,
    port: int,
    max_active: int,
    batching: str = "static",
    stops: bool = False,
    threads: int = 1,
    name: str = "bench",
) -> subprocess.Popen:
    stop_switch = "stops" if stops else "no-stops"
    command = [sys.executable, "-c", SERVER, f"{name}={checkpoint}", str(port), str(max_active), batching]
    command += [stop_switch, str(threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("the server did not start")


def memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def chat_seconds(client: httpx.Client) -> float:
    start = time.perf_counter()
    response = client.post(
        "/v1/chat/completions", json={"model": "bench", "messages": CHAT, "max_tokens": 4, "seed": 1}
    )
    elapsed = time.perf_counter() - start
    response.raise_for_status()
    assert response.json()["usage"]["completion_tokens"] <= 4
    return elapsed


def measure(
    checkpoint: Path, max_active: int, probes: int, prompt: str, max_tokens: int, batching: str
) -> dict:
    port = free_port()
    server = start_server(checkpoint, port, max_active, batching)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=600) as client:
            chat_seconds(client)  # warm up
            idle = statistics.median(chat_seconds(client) for _ in range(3))
            before = memory_kib(server.pid)
            big_body = {"model": "bench", "prompt": prompt, "n": 128, "max_tokens": max_tokens, "seed": 0}
            result: dict = {}

            def big() -> None:
                start = time.perf_counter()
                with httpx.Client(base_url=base, timeout=3600) as own:
                    response = own.post("/v1/completions", json=big_body)
                result["seconds"] = time.perf_counter() - start
                result["status"] = response.status_code
                if response.status_code == 200:
                    result["completion_tokens"] = response.json()["usage"]["completion_tokens"]
                else:
                    result["error"] = response.text[:300]

            thread = threading.Thread(target=big)
            thread.start()
            time.sleep(1.0)  # the big request is decoding now
            latencies = []
            for _ in range(probes):
                if not thread.is_alive():
                    break
                latencies.append(chat_seconds(client))
                time.sleep(0.25)
            thread.join()
            after = memory_kib(server.pid)
            health = client.get("/health").json()["batching"]["bench"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {
        "batching": batching,
        "max_active_batches": max_active,
        "chat_4_tokens_idle_s": round(idle, 3),
        "chat_4_tokens_during_big_request_s": [round(x, 3) for x in latencies],
        "chat_4_tokens_during_big_request_median_s": round(statistics.median(latencies), 3)
        if latencies
        else None,
        "chat_4_tokens_during_big_request_max_s": round(max(latencies), 3) if latencies else None,
        "big_request": result,
        "server_rss_before_mib": round(before["VmRSS"] / 1024, 1),
        "server_peak_rss_mib": round(after["VmHWM"] / 1024, 1),
        "counters": health,
    }


# -- `--concurrent`: continuous against static batching under many clients ------------------------------------


def closed_loop(base: str, prompts: list[list[dict]], clients: int, per_client: int, max_tokens: int) -> dict:
    """`clients` threads, each sending `per_client` chat requests one after the other (a new one as soon as
    its answer comes): aggregate completion tokens per second over the whole run. Seeds are fixed, so both
    batching modes generate the same tokens (the same work)."""
    done: list[tuple[int, float]] = []
    errors: list[str] = []

    def client(c: int) -> None:
        with httpx.Client(base_url=base, timeout=1800) as own:
            for k in range(per_client):
                i = c * per_client + k
                body = {
                    "model": "bench",
                    "messages": prompts[i % len(prompts)],
                    "max_tokens": max_tokens,
                    "temperature": 1.0,
                    "seed": i,
                }
                start = time.perf_counter()
                response = own.post("/v1/chat/completions", json=body)
                if response.status_code != 200:
                    errors.append(response.text[:200])
                    continue
                done.append((response.json()["usage"]["completion_tokens"], time.perf_counter() - start))

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    tokens = sum(t for t, _ in done)
    return {
        "requests": len(done),
        "errors": errors[:3],
        "completion_tokens": tokens,
        "seconds": round(seconds, 2),
        "tokens_per_s": round(tokens / seconds, 1),
        "request_latency_median_s": round(statistics.median(s for _, s in done), 2) if done else None,
    }


def small_during_long(base: str, long_clients: int, long_tokens: int, probes: int) -> dict:
    """`long_clients` completions of `long_tokens` tokens each (the server's stop tokens are off) decode while
    4-token chats are sent one after the other: each chat's latency."""
    threads = []
    for c in range(long_clients):
        body = {"model": "bench", "prompt": "Once upon a time", "max_tokens": long_tokens, "seed": 1000 + c}
        thread = threading.Thread(
            target=lambda body=body: httpx.post(f"{base}/v1/completions", json=body, timeout=1800)
        )
        thread.start()
        threads.append(thread)
    time.sleep(2.0)  # every long request is decoding now
    latencies = []
    with httpx.Client(base_url=base, timeout=600) as client:
        for _ in range(probes):
            latencies.append(chat_seconds(client))
            time.sleep(0.2)
    still_running = sum(thread.is_alive() for thread in threads)
    for thread in threads:
        thread.join()
    return {
        "long_requests": long_clients,
        "long_tokens": long_tokens,
        "long_still_running_after_probes": still_running,
        "chat_4_tokens_s": [round(x, 3) for x in latencies],
        "chat_4_tokens_max_s": round(max(latencies), 3),
    }


def concurrent_run(source: str, batching: str, args, prompts: list[list[dict]]) -> dict:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(Path(source), port, 4, batching, stops=True, threads=args.threads)
    try:
        with httpx.Client(base_url=base, timeout=600) as client:
            chat_seconds(client)  # warm up
        load = closed_loop(base, prompts, args.clients, args.requests_per_client, args.max_tokens)
        load["counters"] = httpx.get(f"{base}/health").json()["batching"]["bench"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(Path(source), port, 4, batching, stops=False, threads=args.threads)
    try:
        with httpx.Client(base_url=base, timeout=600) as client:
            chat_seconds(client)
        latency = small_during_long(base, args.clients, args.long_tokens, args.probes)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {"batching": batching, "closed_loop": load, "small_during_long": latency}


def concurrent_main(args) -> None:
    from rlhfkit.data.chats import load_prompts

    if args.prompts:
        prompts = [record["messages"] for record in load_prompts(args.prompts)]
    else:
        prompts = [[{"role": "user", "content": f"What does {s.lower()} do?"}] for s in SUBJECTS]
    results = {}
    for spec in args.model:
        name, _, source = spec.partition("=")
        runs = [concurrent_run(source, batching, args, prompts) for batching in args.order.split(",")]
        by_mode: dict[str, list[dict]] = {}
        for run in runs:
            by_mode.setdefault(run["batching"], []).append(run)

        def rate(mode: str, by_mode=by_mode) -> float:
            return statistics.median(r["closed_loop"]["tokens_per_s"] for r in by_mode[mode])

        results[name] = {
            "source": source,
            "continuous_over_static_tokens_per_s": round(rate("continuous") / rate("static"), 2),
            "chat_4_tokens_during_long_max_s": {
                mode: max(r["small_during_long"]["chat_4_tokens_max_s"] for r in group)
                for mode, group in by_mode.items()
            },
            "runs": runs,
        }
    print(
        json.dumps(
            {
                "benchmark": "serve_latency --concurrent",
                "cpu": cpu_info(),
                "load_average_before": os.getloadavg(),
                "server_threads": args.threads,
                "clients": args.clients,
                "requests_per_client": args.requests_per_client,
                "max_tokens": args.max_tokens,
                "goals": {"continuous_over_static": 3.0, "chat_4_tokens_during_long_s": 2.0},
                "models": results,
            },
            indent=2,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--concurrent",
        action="store_true",
        help="continuous vs static batching under --clients chat clients, and a 4-token chat during as many "
        "long requests (needs --model)",
    )
    parser.add_argument("--model", action="append", default=[], metavar="NAME=DIR", help="with --concurrent")
    parser.add_argument(
        "--prompts", help="with --concurrent: chat prompts (JSONL); default: built-in questions"
    )
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--long-tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="the server's torch threads")
    parser.add_argument("--order", default="static,continuous", help="batching modes in run order")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--probes", type=int, default=8)
    parser.add_argument(
        "--no-control", action="store_true", help="skip the --max-active-batches 1 control run"
    )
    args = parser.parse_args()
    if args.concurrent:
        concurrent_main(args)
        return

    from rlhfkit.serve.limits import Limits

    limits = Limits()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint, parameters = build_checkpoint(Path(tmp), args.preset, args.context)
        from rlhfkit.tokenizer import load_tokenizer

        prompt = "The old king walks to the river and"
        prompt_tokens = len(load_tokenizer(checkpoint)(prompt)["input_ids"])
        max_tokens = limits.max_request_tokens // limits.max_choices - prompt_tokens  # fills the budget
        runs = [
            measure(checkpoint, 4, args.probes, prompt, max_tokens, "continuous"),
            measure(checkpoint, 4, args.probes, prompt, max_tokens, "static"),
        ]
        if not args.no_control:
            runs.append(measure(checkpoint, 1, max(2, args.probes // 4), prompt, max_tokens, "static"))
    interleaved = runs[0]
    print(
        json.dumps(
            {
                "benchmark": "serve_latency",
                "cpu": cpu_model(),
                "cpu_count": os.cpu_count(),
                "affinity": sorted(os.sched_getaffinity(0)),
                "threads": 1,
                "pinned": len(os.sched_getaffinity(0)) == 1,
                "torch_threads_server": 1,
                "python": platform.python_version(),
                "model": {
                    "preset": args.preset,
                    "parameters": parameters,
                    "context": args.context,
                    "weights": "random",
                },
                "largest_request": {
                    "choices": limits.max_choices,
                    "prompt_tokens": prompt_tokens,
                    "max_tokens": max_tokens,
                    "request_tokens": limits.max_choices * (prompt_tokens + max_tokens),
                    "limit": limits.max_request_tokens,
                },
                "goal_s": 2.0,
                "chat_latency_during_largest_request_s": interleaved[
                    "chat_4_tokens_during_big_request_max_s"
                ],
                "server_peak_rss_mib": interleaved["server_peak_rss_mib"],
                "runs": runs,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
