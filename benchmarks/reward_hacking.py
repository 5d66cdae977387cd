"""Reward hacking, shown: PPO without a KL leash (beta = 0) next to the default run (Gao et al. 2022).

Runs (or reads, with --no-train) two PPO runs from the same SFT policy and reward model of a pipeline run
folder: the default (KL penalty, adaptive beta) and beta = 0. For each, the proxy reward (the RM the policy is
trained against) and the gold reward (the demo world's hidden judge) are plotted against d = sqrt(KL to the
SFT model), and Gao et al.'s RL form is fitted to the gold gain:

    R(d) = d * (alpha - beta_g * log d)        (least squares on R/d = alpha - beta_g * log d)

The proxy keeps rising while the gold reward peaks and then falls when the policy is unleashed. Writes
`reward_hacking.png` and `reward_hacking.json` in `<run>/reward_hacking/` and prints the JSON.

Usage: python benchmarks/reward_hacking.py --run runs/demo [--steps 60] [--no-train]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def load_curve(ppo_dir: Path) -> dict:
    rows = [json.loads(line) for line in (ppo_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "kl" in r and "reward" in r and not r.get("skipped")]
    return {
        "step": [r["step"] for r in rows],
        "kl": [max(0.0, float(r["kl"])) for r in rows],
        "proxy": [float(r["reward"]) for r in rows],
        "gold": [float(r["gold_reward"]) for r in rows if "gold_reward" in r],
    }


def smooth(values: list[float], window: int = 5) -> list[float]:
    """Trailing moving average: rollouts are 64 episodes, so single steps are noisy."""
    out = []
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1) : i + 1]
        out.append(sum(chunk) / len(chunk))
    return out


def fit_gao(kl: list[float], gain: list[float]) -> dict:
    """Least squares of gain = alpha * d - beta * d log d (linear in alpha, beta; no intercept), d = sqrt(KL)."""
    rows = [(math.sqrt(k), g) for k, g in zip(kl, gain) if k > 1e-6]
    if len(rows) < 3:
        return {"alpha": None, "beta": None, "points": len(rows)}
    f1 = [d for d, _ in rows]
    f2 = [-d * math.log(d) for d, _ in rows]
    y = [g for _, g in rows]
    a11, a12, a22 = sum(x * x for x in f1), sum(x * z for x, z in zip(f1, f2)), sum(z * z for z in f2)
    b1, b2 = sum(x * v for x, v in zip(f1, y)), sum(z * v for z, v in zip(f2, y))
    det = a11 * a22 - a12 * a12
    if abs(det) < 1e-12:
        return {"alpha": None, "beta": None, "points": len(rows)}
    alpha, beta = (b1 * a22 - b2 * a12) / det, (a11 * b2 - a12 * b1) / det
    pred = [alpha * x + beta * z for x, z in zip(f1, f2)]
    mean = sum(y) / len(y)
    ss_res = sum((v - p) ** 2 for v, p in zip(y, pred))
    ss_tot = sum((v - mean) ** 2 for v in y) or 1e-12
    peak_d = math.exp(alpha / beta - 1) if beta > 0 else None  # dR/dd = alpha - beta (log d + 1) = 0
    return {"alpha": alpha, "beta": beta, "r2": 1 - ss_res / ss_tot, "points": len(rows),
            "peak_kl": peak_d**2 if peak_d else None}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/demo", help="pipeline run folder with sft/, rm/ and world/")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--no-train", action="store_true", help="only analyse existing runs")
    args = ap.parse_args()

    from rlhfkit.cli import main as cli
    from rlhfkit.pipeline.stages import run_path

    run = Path(args.run)
    out = run / "reward_hacking"
    out.mkdir(parents=True, exist_ok=True)
    variants = {"default (KL leash)": out / "ppo_default", "beta = 0 (no leash)": out / "ppo_beta0"}
    common = ["ppo", "--policy", str(run / "sft"), "--reward", str(run_path(run, "reward")), "--prompts", str(run / "world" / "prompts.jsonl"),
              "--steps", str(args.steps), "--sample-every", "0", "--max-new-tokens", "128"]  # fmt: skip
    if not args.no_train:
        assert cli([*common, "--out", str(variants["default (KL leash)"])]) == 0
        assert (
            cli([*common, "--out", str(variants["beta = 0 (no leash)"]), "--beta", "0", "--kl-target", "0"])
            == 0
        )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    result = {}
    for (name, path), color in zip(variants.items(), ("tab:blue", "tab:red")):
        c = load_curve(path)
        d = [math.sqrt(k) for k in smooth(c["kl"])]
        proxy0, gold0 = c["proxy"][0], c["gold"][0] if c["gold"] else 0.0
        proxy = [p - proxy0 for p in smooth(c["proxy"])]
        gold = [g - gold0 for g in smooth(c["gold"])] if c["gold"] else []
        axes[0].plot(d, proxy, color=color, label=name)
        if gold:
            axes[1].plot(d, gold, color=color, label=name)
        fit = fit_gao(smooth(c["kl"]), gold) if gold else {}
        if fit.get("alpha") is not None:
            ds = [x / 20 * max(d) for x in range(1, 21)]
            axes[1].plot(ds, [x * (fit["alpha"] - fit["beta"] * math.log(x)) for x in ds], color=color, ls="--", lw=1,
                         label=f"fit d(α−β log d): α={fit['alpha']:.2f} β={fit['beta']:.2f}")  # fmt: skip
        peak = max(range(len(gold)), key=lambda i: gold[i]) if gold else None
        result[name] = {
            "final_kl": c["kl"][-1], "final_proxy_gain": proxy[-1], "final_gold_gain": gold[-1] if gold else None,
            "peak_gold_gain": gold[peak] if gold else None, "peak_gold_step": c["step"][peak] if gold else None,
            "peak_gold_kl": smooth(c["kl"])[peak] if gold else None, "gao_fit": fit,
        }  # fmt: skip
    axes[0].set(title="proxy reward (reward model)", xlabel="d = sqrt(KL to SFT)", ylabel="gain over SFT")
    axes[1].set(title="gold reward (hidden judge)", xlabel="d = sqrt(KL to SFT)", ylabel="gain over SFT")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "reward_hacking.png", dpi=110)
    (out / "reward_hacking.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
