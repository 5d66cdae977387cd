#!/usr/bin/env bash
# Every training stage on CUDA under torchrun (1 process per GPU, default 1), DDP and FSDP2, on the demo `tiny`
# preset; a one-shot check for a machine with GPUs (about 3-5 minutes on one GPU). Prints one JSON line per run
# (stage, shard, seconds, final loss or reward) and leaves the runs under $WORK.
#
#   NPROC=1 bash benchmarks/distributed_gpu.sh            # from the repository root, with the venv's python
set -euo pipefail
PY=${PY:-.venv/bin/python}
NPROC=${NPROC:-1}
WORK=${WORK:-/tmp/rlhfkit-gpu-check}
DEVICE=${DEVICE:-cuda}    # DEVICE=cpu STEPS=2 PPO_STEPS=2: a dry run of the script itself on a CPU
STEPS=${STEPS:-100}
PPO_STEPS=${PPO_STEPS:-10}
mkdir -p "$WORK"
export PYTHONPATH=${PYTHONPATH:-src}

# Models and data: benchmarks/ppo.py's world prompts, tokenizer and random tiny policy + reward model; pairs from
# the world's SFT chats (the chat's own answer preferred over another chat's).
"$PY" - "$WORK" <<'EOF'
import json, random, sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from ppo import prepare
work = Path(sys.argv[1])
paths = prepare(work, "tiny")
chats = [json.loads(l) for l in (work / "world" / "sft.jsonl").read_text().splitlines() if l][:512]
rng = random.Random(0)
with (work / "pairs.jsonl").open("w") as fh:
    for i, c in enumerate(chats):
        other = chats[rng.randrange(len(chats))]["messages"][-1]
        fh.write(json.dumps({"prompt": c["messages"][:-1], "chosen": [c["messages"][-1]],
                             "rejected": [{"role": "assistant", "content": other["content"]}], "id": f"g{i}"}) + "\n")
EOF

run() {  # run NAME OUT ARGS...: time one torchrun job, print a JSON line with its last metrics
  local name=$1 out=$2; shift 2
  rm -rf "$out"
  local t0=$(date +%s.%N)
  "$PY" -m torch.distributed.run --standalone --nproc_per_node="$NPROC" -m rlhfkit.cli -- "$@" --out "$out" \
    > "$out.log" 2>&1 || { echo "{\"run\": \"$name\", \"error\": \"see $out.log\"}"; return 0; }
  local t1=$(date +%s.%N)
  "$PY" - "$name" "$out" "$t0" "$t1" <<'EOF'
import json, sys
name, out, t0, t1 = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
last = json.loads([l for l in open(f"{out}/metrics.jsonl") if l.strip()][-1])
keep = {k: last[k] for k in ("step", "loss", "reward", "kl", "tok_per_s", "episodes_per_s", "val_loss") if k in last}
print(json.dumps({"run": name, "seconds": round(t1 - t0, 1), **keep}))
EOF
}

W=$WORK
COMMON=(--device "$DEVICE")
for shard in ddp fsdp; do
  run "pretrain-$shard" "$W/pretrain-$shard" pretrain --data "$W/world/corpus.jsonl" --tokenizer "$W/policy-tiny" \
    --preset tiny --seq-len 256 --batch-size 64 --micro-batch-size 32 --max-steps "$STEPS" --eval-every "$STEPS" \
    --shard "$shard" "${COMMON[@]}"
  run "sft-$shard" "$W/sft-$shard" sft --model "$W/policy-tiny" --data "$W/world/sft.jsonl" --epochs 0 \
    --max-steps "$STEPS" --batch-size 64 --eval-every "$STEPS" --shard "$shard" "${COMMON[@]}"
  run "reward-$shard" "$W/reward-$shard" reward train --model "$W/policy-tiny" --data "$W/pairs.jsonl" --epochs 0 \
    --max-steps "$STEPS" --batch-size 32 --shard "$shard" "${COMMON[@]}"
  run "dpo-$shard" "$W/dpo-$shard" dpo --policy "$W/policy-tiny" --data "$W/pairs.jsonl" --epochs 0 \
    --max-steps "$STEPS" --batch-size 32 --shard "$shard" "${COMMON[@]}"
done
run "ppo-ddp" "$W/ppo-ddp" ppo --policy "$W/policy-tiny" --reward "$W/rm-tiny" --prompts "$W/world/prompts.jsonl" \
  --steps "$PPO_STEPS" --batch-size 64 --minibatch-size 16 --max-new-tokens 48 "${COMMON[@]}" $([ "$DEVICE" = cuda ] && echo --bf16)
