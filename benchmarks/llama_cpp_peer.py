"""`rlhfkit serve` against llama.cpp's `llama-server` on the same weights, same prompts, same CPU threads.

    flock /work/cpu.lock .venv/bin/python benchmarks/llama_cpp_peer.py --model SMOLLM2_DIR \
        --gguf smollm2-q8_0.gguf --llama-server llama.cpp/build/bin/llama-server [--threads 2]

Both sides are OpenAI-compatible HTTP servers on this machine, started one at a time (never two running a
workload at once), each with `--threads` CPU threads: rlhfkit with `--quantize int8` (weight-only int8), fp32
and, with `--sides bf16` (the default), bf16 weights (`--dtype bfloat16`); llama-server on the Q8_0 GGUF converted from the same folder (the recipe is in
docs/performance.md). Every request is a `/v1/completions` call whose prompt is the same token ids on both
sides (the chat prompts rendered by the folder's chat template), greedy, and every reply is exactly
`--new-tokens` tokens long: rlhfkit's server runs with its stop tokens switched off, llama-server is sent
`ignore_eos`. Measured, in `--rounds` rounds that start each side's server in turn:

- batch 1: one client, the prompts one after the other. Decode tokens/s = (new_tokens - 1) / (seconds for
  `--new-tokens` tokens - seconds for 1 token), the second being the prefill and HTTP round trip.
- `--clients` concurrent clients (8), each sending `--requests-per-client` requests one after the other:
  aggregate completion tokens/s. llama-server runs `-np CLIENTS` slots (its continuous batching is on by
  default) with room for every slot's prompt and reply.
- quality (greedy-token agreement with rlhfkit fp32, on the same 16 chat prompts): the fp32 greedy reply
  (ending at the model's end token) is fed to each quantized side token by token, and at every position we
  compare that side's greedy next token with fp32's (rlhfkit int8 and bf16 in-process, what its servers run;
  llama-server by asking for 1 token after each prefix, its prompt cache making that a one-token step).
  Also how many free-running greedy replies equal fp32's text.

Without `--llama-server` or `--gguf` (or with a path that does not exist), it exits with what to build.
Prints one JSON object (and writes it to `--out`); the ratios are medians over the rounds.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from cpu_info import cpu_info
from int8_decode import QUESTIONS, forced_logits
from serve_latency import free_port

HOW_TO_GET_LLAMA = """llama_cpp_peer.py needs llama.cpp's llama-server and a Q8_0 GGUF of the same model:
  pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36   # vendors llama.cpp in vendor/llama.cpp
  cmake -S vendor/llama.cpp -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \\
      -DLLAMA_OPENSSL=OFF && ninja -C build llama-server llama-quantize
  PYTHONPATH=vendor/llama.cpp/gguf-py python vendor/llama.cpp/convert_hf_to_gguf.py MODEL_DIR --outtype f32 \
      --outfile model-f32.gguf   # it imports sentencepiece even for a tokenizer.json model
  build/bin/llama-quantize model-f32.gguf model-q8_0.gguf Q8_0
then pass --llama-server build/bin/llama-server --gguf model-q8_0.gguf (docs/performance.md has details)."""

# `rlhfkit serve --quantize Q --threads T --dtype D` with the model's stop tokens switched off, so every reply runs to
# its max_tokens (llama-server's `ignore_eos` does the same there): equal output lengths on both sides.
RLHFKIT_SERVER = """
import sys, torch
from rlhfkit.serve import create_app, load_served_models
from rlhfkit.serve.server import run
torch.set_num_threads(1)  # as `rlhfkit serve` does: only the model's worker thread decodes, with argv[4] threads
models = load_served_models([sys.argv[1]], quantize=sys.argv[3], threads=int(sys.argv[4]), dtype=sys.argv[5])
for served in models.values():
    served.stop_token_ids = ()
run(create_app(models), port=int(sys.argv[2]))
"""


class Side:
    """One server to measure: its name, how to start it, and what its requests must add."""

    def __init__(self, name: str, command: list[str], extra: dict, env: dict | None = None):
        self.name, self.command, self.extra, self.env = name, command, extra, env

    def start(self, port: int) -> subprocess.Popen:
        command = [part.replace("{port}", str(port)) for part in self.command]
        server = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **(self.env or {})},
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(f"{self.name}: the server exited with {server.returncode}: {command}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    return server
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        server.kill()
        raise RuntimeError(f"{self.name}: the server did not start: {command}")


def complete(client: httpx.Client, side: Side, prompt: list[int], max_tokens: int) -> tuple[int, float]:
    body = {"model": "bench", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, **side.extra}
    start = time.perf_counter()
    response = client.post("/v1/completions", json=body)
    seconds = time.perf_counter() - start
    response.raise_for_status()
    tokens = response.json()["usage"]["completion_tokens"]
    if tokens != max_tokens:
        raise RuntimeError(f"{side.name}: {tokens} tokens for max_tokens={max_tokens}: lengths must be equal")
    return tokens, seconds


def batch_one(base: str, side: Side, prompts: list[list[int]], new_tokens: int) -> dict:
    with httpx.Client(base_url=base, timeout=600) as client:
        complete(client, side, prompts[0], 8)  # warm up (int8 packing, oneDNN primitives, llama's graph)
        full = [complete(client, side, p, new_tokens)[1] for p in prompts]
        first = [complete(client, side, p, 1)[1] for p in prompts]
    decode = (new_tokens - 1) / (statistics.median(full) - statistics.median(first))
    return {
        "decode_tokens_per_s": round(decode, 1),
        "end_to_end_tokens_per_s": round(new_tokens / statistics.median(full), 1),
        "first_token_s": round(statistics.median(first), 4),
    }


def concurrent(
    base: str, side: Side, prompts: list[list[int]], clients: int, per_client: int, new_tokens: int
):
    done: list[int] = []
    errors: list[str] = []

    def client(c: int) -> None:
        with httpx.Client(base_url=base, timeout=1800) as own:
            for k in range(per_client):
                try:
                    done.append(
                        complete(own, side, prompts[(c * per_client + k) % len(prompts)], new_tokens)[0]
                    )
                except (httpx.HTTPError, RuntimeError) as exc:
                    errors.append(str(exc)[:200])

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{side.name}: {errors[0]}")
    return {"tokens_per_s": round(sum(done) / seconds, 1), "seconds": round(seconds, 2)}


def measure(side: Side, args, prompts: list[list[int]]) -> dict:
    port = free_port()
    server = side.start(port)
    base = f"http://127.0.0.1:{port}"
    try:
        one = batch_one(base, side, prompts[: args.batch1_prompts], args.new_tokens)
        many = concurrent(base, side, prompts, args.clients, args.requests_per_client, args.new_tokens)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {"side": side.name, "batch_1": one, f"clients_{args.clients}": many}


def llama_quality(
    args, prompts: list[list[int]], replies: list[list[int]], stop_ids: set[int], decode
) -> dict:
    """llama-server's greedy next token after every prefix of each fp32 reply, and its free-running replies."""
    port = free_port()
    side = llama_side(args, slots=1)
    server = side.start(port)
    agree = positions = same = 0
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
            for prompt, reply in zip(prompts, replies):
                for i, token in enumerate(reply):
                    body = {
                        "prompt": prompt + reply[:i],
                        "n_predict": 1,
                        "temperature": 0,
                        "return_tokens": True,
                    }
                    answer = client.post("/completion", json=body).json()
                    # An end token is not returned as a token: the reply stops with stop_type "eos".
                    got = answer["tokens"][0] if answer.get("tokens") else None
                    agree += got == token or (got is None and token in stop_ids)
                    positions += 1
                body = {"prompt": prompt, "n_predict": len(reply), "temperature": 0}
                text = client.post("/completion", json=body).json()["content"]
                same += text.strip() == decode(reply).strip()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {
        "positions": positions,
        "teacher_forced_top1_agreement": round(agree / positions, 4),
        "free_running_greedy_identical_replies": f"{same}/{len(prompts)}",
    }


def rlhfkit_quality(model, tokenizer, prompts: list[list[int]], new_tokens: int) -> tuple[dict, list]:
    """fp32 greedy replies (to the end token), and the agreement with them of what rlhfkit's servers run:
    int8 (`--quantize int8`) and a bf16 copy of the model (`--dtype bfloat16`)."""
    import torch

    from rlhfkit.generation import SamplingParams, generate, pad_id

    stop_ids = tuple(sorted(stop_token_ids(model, tokenizer)))
    params = SamplingParams(max_new_tokens=new_tokens, temperature=0, stop_token_ids=stop_ids)
    pad = pad_id(tokenizer)
    exact = generate(model, prompts, params, pad_token_id=pad, batch_size=1)
    fp32_logits = [forced_logits(model, p, reply.token_ids, "none") for p, reply in zip(prompts, exact)]
    bf16_model = copy.deepcopy(model).to(torch.bfloat16)
    variants = {"rlhfkit int8": (model, "int8"), "rlhfkit bf16": (bf16_model, "none")}
    results = {}
    for name, (decoder_model, quantize) in variants.items():
        replies = generate(decoder_model, prompts, params, pad_token_id=pad, batch_size=1, quantize=quantize)
        agree = positions = 0
        for prompt, reply, a in zip(prompts, exact, fp32_logits):
            b = forced_logits(decoder_model, prompt, reply.token_ids, quantize)
            agree += int((a.argmax(-1) == b.argmax(-1)).sum())
            positions += len(reply.token_ids)
        same = sum(e.token_ids == q.token_ids for e, q in zip(exact, replies))
        results[name] = {
            "positions": positions,
            "teacher_forced_top1_agreement": round(agree / positions, 4),
            "free_running_greedy_identical_replies": f"{same}/{len(prompts)}",
        }
    return results, [reply.token_ids for reply in exact]


def stop_token_ids(model, tokenizer) -> set[int]:
    from rlhfkit.serve.served import _stop_token_ids

    return set(_stop_token_ids(model, tokenizer))


def llama_side(args, slots: int) -> Side:
    # Room for every slot's prompt (chat prompts here are < 100 tokens) and reply; llama-server splits -c
    # evenly between its -np slots.
    context = slots * (256 + args.new_tokens)
    command = [args.llama_server, "-m", args.gguf, "--host", "127.0.0.1", "--port", "{port}"]
    command += ["-t", str(args.threads), "-tb", str(args.threads), "-np", str(slots), "-c", str(context)]
    return Side("llama.cpp Q8_0", command + ["--no-webui"], {"ignore_eos": True})


def rlhfkit_side(args, quantize: str, dtype: str = "float32") -> Side:
    command = [
        sys.executable,
        "-c",
        RLHFKIT_SERVER,
        f"bench={args.model}",
        "{port}",
        quantize,
        str(args.threads),
        dtype,
    ]
    name = "rlhfkit int8" if quantize == "int8" else "rlhfkit bf16" if dtype == "bfloat16" else "rlhfkit fp32"
    return Side(name, command, {}, {"OMP_NUM_THREADS": str(args.threads)})


def check_llama(args) -> None:
    missing = [
        f"{flag} {path or '(not given)'}"
        for flag, path in (("--llama-server", args.llama_server), ("--gguf", args.gguf))
        if not path or not Path(path).is_file()
    ]
    if missing:
        sys.exit(f"missing: {', '.join(missing)}\n{HOW_TO_GET_LLAMA}")


def llama_version(path: str) -> str:
    run = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
    return " ".join((run.stdout + run.stderr).split())[-300:]


def summarize(runs: list[dict], clients: int) -> dict:
    def median(side: str, part: str, field: str) -> float:
        return statistics.median(r[part][field] for r in runs if r["side"] == side)

    sides = sorted({r["side"] for r in runs})
    table = {
        side: {
            "batch_1_decode_tokens_per_s": median(side, "batch_1", "decode_tokens_per_s"),
            "batch_1_end_to_end_tokens_per_s": median(side, "batch_1", "end_to_end_tokens_per_s"),
            f"clients_{clients}_tokens_per_s": median(side, f"clients_{clients}", "tokens_per_s"),
        }
        for side in sides
    }
    peer = table["llama.cpp Q8_0"]
    ratios = {
        f"{side} / llama.cpp Q8_0": {key: round(value / peer[key], 2) for key, value in numbers.items()}
        for side, numbers in table.items()
        if side != "llama.cpp Q8_0"
    }
    return {"medians": table, "ratios": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="the Hugging Face folder the GGUF was converted from")
    parser.add_argument("--gguf", help="the Q8_0 GGUF of --model")
    parser.add_argument("--llama-server", help="llama.cpp's llama-server binary")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--batch1-prompts", type=int, default=4)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quality-tokens", type=int, default=64)
    parser.add_argument(
        "--sides",
        default="bf16",
        help="'bf16' adds rlhfkit with bf16 weights (`--dtype bfloat16`); '' leaves it out",
    )
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    check_llama(args)

    import torch

    from rlhfkit.generation import render_chat
    from rlhfkit.generation.loading import load_for_generation

    torch.set_num_threads(args.threads)
    model, tokenizer = load_for_generation(args.model, device="cpu", dtype="float32")
    model.requires_grad_(False)
    chats = [[{"role": "user", "content": q}] for q in QUESTIONS]
    prompts = [tokenizer(render_chat(tokenizer, c), add_special_tokens=False)["input_ids"] for c in chats]
    result: dict = {
        "benchmark": "llama_cpp_peer",
        "cpu": cpu_info(),
        "load_average_before": os.getloadavg(),
        "model": args.model,
        "gguf": args.gguf,
        "llama_server_version": llama_version(args.llama_server),
        "threads_per_server": args.threads,
        "new_tokens": args.new_tokens,
        "equal_lengths": "rlhfkit's stop tokens switched off; llama-server sent ignore_eos",
        "clients": args.clients,
        "requests_per_client": args.requests_per_client,
        "goals": {"int8_batch_1_over_llama": 0.8, f"int8_clients_{args.clients}_over_llama": 1.5},
    }
    if not args.skip_speed:
        sides = [rlhfkit_side(args, "int8"), llama_side(args, args.clients), rlhfkit_side(args, "none")]
        if "bf16" in args.sides:
            sides.append(rlhfkit_side(args, "none", "bfloat16"))
        runs = []
        for round_ in range(args.rounds):
            for side in sides if round_ % 2 == 0 else sides[::-1]:  # alternate the order against drift
                runs.append({"round": round_, **measure(side, args, prompts)})
                print(json.dumps(runs[-1]), file=sys.stderr)
        result.update(summarize(runs, args.clients), runs=runs)
    if not args.skip_quality:
        ours, replies = rlhfkit_quality(model, tokenizer, prompts, args.quality_tokens)
        stops = stop_token_ids(model, tokenizer)
        llama = llama_quality(
            args, prompts, replies, stops, lambda ids: tokenizer.decode(ids, skip_special_tokens=True)
        )
        result["quality_vs_rlhfkit_fp32"] = {**ours, "llama.cpp Q8_0": llama}
        result["load_average_after"] = os.getloadavg()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
