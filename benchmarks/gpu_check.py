"""Every stage on one GPU in about 6 minutes: one prepared check, one JSON file of results.

    bash benchmarks/gpu_check.sh                # on a machine with a GPU, from a source checkout
    DEVICE=cpu bash benchmarks/gpu_check.sh     # a dry run on the CPU: the same jobs at toy sizes

First it checks the environment (torch >= 2.11 with CUDA, transformers 5.x, every dependency pyproject.toml
lists, and `rlhfkit.cli`'s parser, which imports every command module); if anything is missing it says what
and stops. Then it runs each job as its own subprocess with a timeout, most important first, never stopping
at a failure, and rewrites the JSON after every job (so a check cut short still leaves what it measured):
`$OUT/gpu.json` when OUT is set, else docs/results/gpu.json (cpu: docs/results/gpu_dry_run_cpu.json).

Jobs, in order. Each ends "ok", "failed", "timeout" (its own limit), "cut" (stopped by the check's budget) or
"skipped" (less than MIN_START_S of the budget left); the exit code is 1 when one failed or timed out.
JOBS=prefix,... runs only the jobs whose names start so, with the ones they need:
1. `pipeline --quick` (stage times; the issue's target is <= 20 s on a GPU);
2. prepare: the demo world (`small`), a 4,096-token tokenizer, random `tiny` policy and reward model
   (benchmarks/ppo.py's `prepare`) and preference pairs;
3. PARALLEL (6) at a time, sharing the GPU (each shows that a stage works; speeds are not comparable):
   pretrain, sft, reward and dpo under torchrun (1 process) with `--shard ddp` and `--shard fsdp` (FSDP2);
   ppo, grpo and rloo with `--dtype bfloat16`; building a random Qwen2-0.5B-shaped policy and reward model;
4. PPO on the 0.5B model, alone on the GPU: full fine-tuning and LoRA, each without and with gradient
   checkpointing (seconds per step after the first, peak memory);
5. batch-64 sampling, rlhfkit's engine vs `transformers.generate` (benchmarks/generation.py), alone;
6. the default pipeline, with whatever time is left (if cut, its finished stages are recorded).

Peak GPU memory is per process (torch.cuda.max_memory_allocated): each job writes its own through
$RLHFKIT_PEAK_MEMORY_FILE (rlhfkit.cuda_report). Environment: DEVICE (cuda|cpu), BUDGET_S (total seconds for
the jobs), PARALLEL, WORK (scratch folder), OUT.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ppo_memory import SHAPE

ROOT = Path(__file__).resolve().parent.parent
MIN_START_S = 15  # a job is not started with less time than this left in the budget
TAIL_CHARS = 8000  # of a failed job's stderr (and stdout), kept in the JSON


@dataclass(frozen=True)
class Sizes:
    """Everything that differs between the GPU check and its CPU dry run (the code paths do not)."""

    budget_s: int
    parallel: int
    steps: int  # pretrain/sft/reward/dpo optimizer steps
    batch: int
    micro: int
    rl_steps: int  # ppo/grpo/rloo rollouts
    rl_batch: int
    rl_minibatch: int
    new_tokens: int
    qwen: dict  # Qwen2Config sizes
    qwen_steps: int
    qwen_batch: int
    qwen_minibatch: int
    qwen_new_tokens: int
    sample_preset: str
    sample_new_tokens: int
    sample_repeats: int
    default_pipeline_cap_s: int
    rl_bf16: bool  # ppo/grpo/rloo with --dtype bfloat16 (a bf16 autocast; the old --bf16) (on a CPU without native bf16 it is 10x slower)
    timeout_scale: float  # every job's timeout is multiplied by it


# Qwen2.5-0.5B's shape (benchmarks/ppo_memory.py's, full vocabulary: the demo tokenizer uses its first 4,096
# ids); the CPU dry run keeps its head layout at toy width and depth.
QWEN2_05B = SHAPE
QWEN2_TOY = {**SHAPE, "hidden_size": 56, "intermediate_size": 112, "num_hidden_layers": 2, "vocab_size": 4608}
SIZES = {
    "cuda": Sizes(
        budget_s=320,
        parallel=6,
        steps=30,
        batch=64,
        micro=32,
        rl_steps=6,
        rl_batch=64,
        rl_minibatch=16,
        new_tokens=48,
        qwen=QWEN2_05B,
        qwen_steps=3,
        qwen_batch=32,
        qwen_minibatch=8,
        qwen_new_tokens=64,
        sample_preset="small",
        sample_new_tokens=64,
        sample_repeats=2,
        default_pipeline_cap_s=600,
        rl_bf16=True,
        timeout_scale=1.0,
    ),
    "cpu": Sizes(
        budget_s=1200,
        parallel=2,
        steps=2,
        batch=8,
        micro=4,
        rl_steps=2,
        rl_batch=8,
        rl_minibatch=4,
        new_tokens=8,
        qwen=QWEN2_TOY,
        qwen_steps=2,
        qwen_batch=4,
        qwen_minibatch=2,
        qwen_new_tokens=8,
        sample_preset="micro",
        sample_new_tokens=8,
        sample_repeats=1,
        default_pipeline_cap_s=8,  # only shows that a job out of time is stopped and recorded
        rl_bf16=False,
        timeout_scale=4.0,  # two shared cores: 20-60 s to start a process, 4 minutes for pipeline --quick
    ),
}


# --- preflight


def missing_requirements(device: str) -> tuple[list[str], dict]:
    """What this environment lacks for the check (one line each) and the versions it has."""
    from importlib import metadata

    problems: list[str] = []
    versions = {"python": platform.python_version()}
    try:
        import tomllib

        deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    except (OSError, KeyError) as exc:
        return [f"cannot read the dependencies from pyproject.toml: {exc}"], versions
    try:
        from packaging.requirements import Requirement
    except ImportError:
        return ["packaging (transformers needs it; is transformers installed?)"], versions
    for line in deps:
        req = Requirement(line)
        if req.name == "torch":  # pinned for CPU installs; the GPU machine brings its own CUDA build
            req = Requirement("torch>=2.11")
        try:
            have = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            problems.append(f"{req.name} is not installed (the check needs {req})")
            continue
        versions[req.name] = have
        if not req.specifier.contains(have, prereleases=True):
            problems.append(f"{req.name} {have} does not satisfy {req}")
    if problems:
        return problems, versions
    try:
        import torch

        from rlhfkit.cli import build_parser

        build_parser()  # imports every command module
    except Exception as exc:  # any import failure is what we are looking for
        return [f"rlhfkit.cli does not import: {type(exc).__name__}: {exc}"], versions
    for module in ("peft", "safetensors", "tokenizers", "fastapi", "uvicorn", "sqlalchemy", "matplotlib"):
        try:
            importlib.import_module(module)
        except Exception as exc:
            problems.append(f"{module} does not import: {type(exc).__name__}: {exc}")
    if device == "cuda":
        if not torch.cuda.is_available():
            build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            problems.append(f"torch {torch.__version__} sees no CUDA device ({build})")
        elif not torch.distributed.is_nccl_available():
            problems.append("torch.distributed has no NCCL backend")
        else:
            versions["gpu"] = torch.cuda.get_device_name()
            versions["cuda"] = torch.version.cuda
    return problems, versions


# --- jobs


@dataclass
class Job:
    name: str
    argv: list[str]
    timeout_s: int
    parallel: bool = False  # may share the GPU with other parallel jobs
    out: Path | None = None  # the stage folder (or pipeline run folder) to read metrics from
    result_file: Path | None = None  # a JSON the job writes (benchmarks)
    needs: list[str] = field(default_factory=list)  # jobs whose output it reads
    env: dict[str, str] = field(default_factory=dict)  # on top of the check's own environment
    result: dict = field(default_factory=dict)


def rlhfkit(*args: str) -> list[str]:
    return [sys.executable, "-m", "rlhfkit.cli", *args]


def torchrun(*args: str) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
    return [*launcher, "-m", "rlhfkit.cli", *args]


def build_jobs(device: str, s: Sizes, work: Path) -> list[Job]:
    w, dev, scale = work, ["--device", device], s.timeout_scale
    policy, rm, prompts = str(w / "policy-tiny"), str(w / "rm-tiny"), str(w / "world" / "prompts.jsonl")
    jobs = [
        Job("pipeline-quick", rlhfkit("pipeline", "--quick", "--out", str(w / "quick")), 90, out=w / "quick"),
        Job("prepare", [sys.executable, __file__, "prepare", str(w), "--device", device], 120),
    ]
    # pretrain/sft/reward/dpo under torchrun with each --shard (the former distributed_gpu.sh settings).
    batch = ["--batch-size", str(s.batch), "--micro-batch-size", str(s.micro)]
    pairs_batch = ["--batch-size", str(s.batch // 2), "--micro-batch-size", str(s.micro // 2)]
    steps = ["--epochs", "0", "--max-steps", str(s.steps)]
    stages = {
        "pretrain": [
            "pretrain",
            "--data",
            str(w / "world" / "corpus.jsonl"),
            "--tokenizer",
            policy,
            "--preset",
            "tiny",
            "--seq-len",
            "256",
            "--max-steps",
            str(s.steps),
            *batch,
        ],
        "sft": ["sft", "--model", policy, "--data", str(w / "world" / "sft.jsonl"), *steps, *batch],
        "reward": [
            "reward",
            "train",
            "--model",
            policy,
            "--data",
            str(w / "pairs.jsonl"),
            *steps,
            *pairs_batch,
        ],
        "dpo": ["dpo", "--policy", policy, "--data", str(w / "pairs.jsonl"), *steps, *pairs_batch],
    }
    for shard in ("ddp", "fsdp"):
        for stage, argv in stages.items():
            out = w / f"{stage}-{shard}"
            evals = ["--eval-every", str(s.steps)] if stage in ("pretrain", "sft") else []
            cmd = torchrun(*argv, *evals, "--shard", shard, *dev, "--out", str(out))
            jobs.append(Job(f"{stage}-{shard}", cmd, 120, parallel=True, out=out, needs=["prepare"]))
    rl = [
        "--steps",
        str(s.rl_steps),
        "--batch-size",
        str(s.rl_batch),
        "--minibatch-size",
        str(s.rl_minibatch),
    ]
    rl += ["--max-new-tokens", str(s.new_tokens), "--save-every", "1000", "--sample-every", "0", *dev]
    rl += ["--dtype", "bfloat16"] if s.rl_bf16 else []
    for method in ("ppo", "grpo", "rloo"):
        out = w / f"{method}-rl"
        cmd = rlhfkit(
            method, "--policy", policy, "--reward", rm, "--prompts", prompts, *rl, "--out", str(out)
        )
        jobs.append(Job(out.name, cmd, 150, parallel=True, out=out, needs=["prepare"]))
    qwen_build = [sys.executable, __file__, "qwen", str(w), "--device", device]
    jobs.append(Job("build-qwen2-0.5b", qwen_build, 90, parallel=True, needs=["prepare"]))
    qwen = ["--policy", str(w / "qwen-policy"), "--reward", str(w / "qwen-rm"), "--prompts", prompts]
    qwen += ["--steps", str(s.qwen_steps), "--batch-size", str(s.qwen_batch), "--epochs", "1"]
    qwen += ["--minibatch-size", str(s.qwen_minibatch), "--max-new-tokens", str(s.qwen_new_tokens)]
    qwen += ["--save-every", "1000", "--sample-every", "0", "--max-approx-kl", "0", *dev]
    for name, extra in (
        ("full", []),
        ("lora", ["--lora-r", "16"]),
        ("full-gc", ["--gradient-checkpointing"]),
        ("lora-gc", ["--lora-r", "16", "--gradient-checkpointing"]),
    ):
        out = w / f"ppo-qwen2-0.5b-{name}"
        cmd = rlhfkit("ppo", *qwen, *extra, "--out", str(out))
        jobs.append(Job(out.name, cmd, 120, out=out, needs=["prepare", "build-qwen2-0.5b"]))
    sampling = w / "sampling.json"
    bench = [sys.executable, __file__, "with-peak-memory", str(ROOT / "benchmarks" / "generation.py")]
    bench += [
        "--batch-sizes",
        "64",
        "--new-tokens",
        str(s.sample_new_tokens),
        "--repeats",
        str(s.sample_repeats),
    ]
    bench += ["--preset", s.sample_preset, "--device", device, "--out", str(sampling)]
    jobs.append(Job("sampling-batch64", bench, 120, result_file=sampling))
    default = rlhfkit("pipeline", "--out", str(w / "default"))
    jobs.append(Job("pipeline-default", default, s.default_pipeline_cap_s, out=w / "default"))
    threads = str(max(1, (os.cpu_count() or 1) // s.parallel))
    for job in jobs:
        job.timeout_s = int(job.timeout_s * scale)
        if job.parallel:  # PARALLEL processes each with every core's worth of threads would thrash the CPU
            job.env["OMP_NUM_THREADS"] = threads
    return jobs


def select(jobs: list[Job], wanted: str) -> list[Job]:
    """JOBS=name,prefix,...: only those jobs (and the ones they need), in the usual order."""
    if not wanted.strip():
        return jobs
    prefixes = [w.strip() for w in wanted.split(",") if w.strip()]
    chosen = {j.name for j in jobs if any(j.name.startswith(p) for p in prefixes)}
    chosen |= {need for j in jobs if j.name in chosen for need in j.needs}
    if not chosen:
        raise SystemExit(f"gpu_check: JOBS={wanted!r} matches none of: {', '.join(j.name for j in jobs)}")
    return [j for j in jobs if j.name in chosen]


def run_job(job: Job, work: Path, deadline: float) -> dict:
    """Run one job as its own process group (torchrun's workers die with it on a timeout); never raises."""
    left = deadline - time.monotonic()
    record = {"name": job.name, "command": shlex.join(job.argv), "parallel": job.parallel}
    if left < MIN_START_S:
        return {**record, "status": "skipped", "why": f"{left:.0f} s of the budget left"}
    timeout = int(min(job.timeout_s, left))
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    peak_file = logs / f"{job.name}.peak.json"
    peak_file.unlink(missing_ok=True)
    from rlhfkit.cuda_report import PEAK_MEMORY_ENV

    env = {**os.environ, **job.env, PEAK_MEMORY_ENV: str(peak_file)}
    out_log, err_log = logs / f"{job.name}.out", logs / f"{job.name}.err"
    print(f"gpu_check: start {job.name} (timeout {timeout} s)", flush=True)
    t0 = time.monotonic()
    with out_log.open("w") as out, err_log.open("w") as err:
        proc = subprocess.Popen(job.argv, cwd=ROOT, env=env, stdout=out, stderr=err, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
            status = "ok" if code == 0 else "failed"
        except subprocess.TimeoutExpired:
            stop_group(proc)
            # "cut": stopped by the check's budget (or the default pipeline's cap), not by its own timeout.
            cut = timeout < job.timeout_s or job.name == "pipeline-default"
            code, status = proc.returncode, "cut" if cut else "timeout"
    seconds = round(time.monotonic() - t0, 1)
    record.update(status=status, exit_code=code, seconds=seconds, timeout_s=timeout)
    record.update(read_outputs(job))
    peak = read_peak(peak_file)
    if peak:
        record["peak_gpu_memory"] = peak
    if status != "ok":
        record["stderr_tail"] = err_log.read_text(errors="replace")[-TAIL_CHARS:]
        record["stdout_tail"] = out_log.read_text(errors="replace")[-TAIL_CHARS // 4 :]
    print(f"gpu_check: {job.name}: {status} in {seconds} s", flush=True)
    return record


def stop_group(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def read_peak(path: Path) -> dict | None:
    """The job's peak memory in GiB, summed over ranks when torchrun wrote one file each."""
    files = [path] if path.exists() else sorted(path.parent.glob(path.name + ".rank*"))
    reports = [json.loads(f.read_text()) for f in files]
    if not reports:
        return None
    gib = 2**30
    return {
        "device": reports[0]["device"],
        "max_allocated_gib": round(sum(r["max_memory_allocated_bytes"] for r in reports) / gib, 3),
        "max_reserved_gib": round(sum(r["max_memory_reserved_bytes"] for r in reports) / gib, 3),
    }


def read_outputs(job: Job) -> dict:
    """Final metrics, the last logged row, tokens/s and seconds per step: whatever the job left on disk."""
    found: dict = {}
    try:
        if job.result_file is not None and job.result_file.exists():
            found["result"] = json.loads(job.result_file.read_text())
        if job.out is None:
            return found
        if (job.out / "pipeline.json").exists():
            data = json.loads((job.out / "pipeline.json").read_text())
            found["stages"] = {
                name: {k: rec[k] for k in ("status", "seconds", "metrics") if k in rec}
                for name, rec in data.get("stages", {}).items()
            }
            found["stage_seconds_total"] = round(
                sum(r.get("seconds", 0) for r in data.get("stages", {}).values()), 1
            )
        if (job.out / "rlhfkit.json").exists():
            found["final_metrics"] = json.loads((job.out / "rlhfkit.json").read_text()).get("metrics", {})
        rows = []
        if (job.out / "metrics.jsonl").exists():
            rows = [
                json.loads(line)
                for line in (job.out / "metrics.jsonl").read_text().splitlines()
                if line.strip()
            ]
        if rows:
            found["last_logged"] = rows[-1]
            rate_keys = [k for k in rows[-1] if k.endswith("per_s")]  # tok_per_s, cmp_per_s, episodes_per_s
            timed = rows[1:] or rows  # the first step includes warm-up (allocation, autotuning)
            for key in rate_keys:
                values = [r[key] for r in timed if isinstance(r.get(key), int | float)]
                if values:
                    found[f"mean_{key}"] = round(sum(values) / len(values), 1)
            steps = [r["time_step"] for r in timed if isinstance(r.get("time_step"), int | float)]
            if steps:
                found["seconds_per_step_after_first"] = round(sum(steps) / len(steps), 3)
    except (OSError, ValueError) as exc:  # a job killed mid-write: say so, keep the rest
        found["read_error"] = f"{type(exc).__name__}: {exc}"
    return found


def run_all(device: str, work: Path, result_path: Path) -> int:
    s = SIZES[device]
    budget = float(os.environ.get("BUDGET_S", s.budget_s))
    parallel = int(os.environ.get("PARALLEL", s.parallel))
    report = {
        "check": "benchmarks/gpu_check.py",
        "device": device,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "budget_s": budget,
        "parallel": parallel,
        "sizes": s.__dict__,
        "environment": {},
        "runs": [],
    }
    problems, versions = missing_requirements(device)
    report["environment"] = {**versions, "commit": git_commit(), "cpu_count": os.cpu_count()}
    if problems:
        report["missing"] = problems
        save(report, result_path)
        print("gpu_check: this environment cannot run the check:", file=sys.stderr)
        for line in problems:
            print(f"  - {line}", file=sys.stderr)
        return 2
    print(
        f"gpu_check: {json.dumps(report['environment'])}; budget {budget:.0f} s; writing {result_path}",
        flush=True,
    )
    fresh_work_dir(work)
    # Every job: this checkout's code, no network (a model load that would fetch something fails loudly).
    src = str(ROOT / "src")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    deadline = time.monotonic() + budget
    t0 = time.monotonic()
    jobs = select(build_jobs(device, s, work), os.environ.get("JOBS", ""))
    i = 0
    while i < len(jobs):
        if not jobs[i].parallel:
            report["runs"].append(run_job(jobs[i], work, deadline))
            save(report, result_path)
            i += 1
            continue
        group = []
        while i < len(jobs) and jobs[i].parallel:
            group.append(jobs[i])
            i += 1
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            for record in pool.map(lambda job: run_job(job, work, deadline), group):
                report["runs"].append(record)
                save(report, result_path)
    report["seconds"] = round(time.monotonic() - t0, 1)
    statuses = ("ok", "failed", "timeout", "cut", "skipped")
    report["summary"] = {st: [r["name"] for r in report["runs"] if r["status"] == st] for st in statuses}
    save(report, result_path)
    print(f"gpu_check: {json.dumps(report['summary'])} in {report['seconds']} s; see {result_path}")
    return 0 if not (report["summary"]["failed"] or report["summary"]["timeout"]) else 1


def fresh_work_dir(work: Path) -> None:
    """An empty scratch folder: a leftover run would be resumed or skipped as up to date, and timed wrong."""
    marker = work / ".gpu_check"
    if work.exists():
        if not marker.exists() and any(work.iterdir()):
            raise SystemExit(
                f"gpu_check: {work} is not empty and not a gpu_check folder; set WORK to another"
            )
        shutil.rmtree(work)
    work.mkdir(parents=True)
    marker.touch()


def save(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(path)


def git_commit() -> str | None:
    """HEAD, with "+changes" when the working tree differs from it (None outside a git checkout)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


# --- helpers run as jobs


def prepare(work: Path) -> None:
    """benchmarks/ppo.py's world, tokenizer, tiny policy and RM; pairs: a chat's own answer over another's."""
    import random

    from ppo import prepare as prepare_models

    prepare_models(work, "tiny")
    lines = (work / "world" / "sft.jsonl").read_text().splitlines()
    chats = [json.loads(line) for line in lines if line.strip()][:512]
    rng = random.Random(0)
    with (work / "pairs.jsonl").open("w") as fh:
        for i, chat in enumerate(chats):
            other = chats[rng.randrange(len(chats))]["messages"][-1]["content"]
            pair = {
                "prompt": chat["messages"][:-1],
                "chosen": [chat["messages"][-1]],
                "rejected": [{"role": "assistant", "content": other}],
                "id": f"g{i}",
            }
            fh.write(json.dumps(pair) + "\n")


def build_qwen(work: Path, device: str) -> None:
    """A random Qwen2-0.5B-shaped policy and reward model (same body), with the demo tokenizer."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2ForSequenceClassification

    from rlhfkit.artifacts import save_hf_checkpoint
    from rlhfkit.tokenizer import load_tokenizer

    tok = load_tokenizer(work / "policy-tiny")
    config = Qwen2Config(
        **SIZES[device].qwen,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    with torch.device(device):  # initialize on the GPU: seconds instead of a minute of CPU
        torch.manual_seed(0)
        policy = Qwen2ForCausalLM(config)
        print(f"qwen2 policy: {sum(p.numel() for p in policy.parameters()):,} parameters", flush=True)
        save_hf_checkpoint(policy, tok, work / "qwen-policy")
        del policy
        config.num_labels = 1
        torch.manual_seed(1)
        rm = Qwen2ForSequenceClassification(config)
        rm.save_pretrained(work / "qwen-rm")
        tok.save_pretrained(work / "qwen-rm")


def with_peak_memory(script: str, args: list[str]) -> None:
    """Run a benchmark script as __main__, then write its peak CUDA memory like the rlhfkit command does."""
    import runpy

    from rlhfkit.cuda_report import write_peak_memory

    sys.argv = [script, *args]
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        write_peak_memory()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what")
    for name in ("prepare", "qwen"):
        p = sub.add_parser(name)
        p.add_argument("work", type=Path)
        p.add_argument("--device", default="cuda")
    p = sub.add_parser("with-peak-memory")
    p.add_argument("script")
    p.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.what == "prepare":
        prepare(args.work)
    elif args.what == "qwen":
        build_qwen(args.work, args.device)
    elif args.what == "with-peak-memory":
        with_peak_memory(args.script, args.args)
    else:
        device = os.environ.get("DEVICE", "cuda")
        if device not in SIZES:
            parser.error(f"DEVICE must be one of {', '.join(SIZES)}, not {device!r}")
        default = "gpu.json" if device == "cuda" else f"gpu_dry_run_{device}.json"
        result = (
            Path(os.environ["OUT"]) / "gpu.json"
            if os.environ.get("OUT")
            else ROOT / "docs" / "results" / default
        )
        work = Path(os.environ.get("WORK", f"/tmp/rlhfkit-gpu-check-{device}"))
        return run_all(device, work, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
