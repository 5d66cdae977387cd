"""The report's figures: matplotlib (Agg, no display needed) -> PNG bytes, one function per figure.

Figures are built on `matplotlib.figure.Figure` directly rather than `pyplot`, so nothing global (open
figures, the interactive backend) leaks between calls or threads. Each function takes plain data and
returns PNG bytes, or None when there is nothing to draw, so the report can skip the section.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

Series = Mapping[str, tuple[Sequence[float], Sequence[float]]]

PALETTE = (
    "#4C72B0",
    "#DD8452",
    "#55A868",
    "#C44E52",
    "#8172B3",
    "#937860",
    "#DA8BC3",
    "#8C8C8C",
    "#CCB974",
    "#64B5CD",
)
STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
    "legend.fontsize": 8,
    "figure.dpi": 100,
}
PROXY_KEYS = ("reward", "proxy_reward", "rm_reward", "rm_score", "score")
GOLD_KEYS = ("gold", "gold_reward", "gold_score")
KL_KEYS = ("kl", "kl_mean", "approx_kl", "kl_div")
PPO_PREFERRED = (
    *PROXY_KEYS,
    *GOLD_KEYS,
    *KL_KEYS,
    "beta",
    "kl_coef",
    "entropy",
    "policy_loss",
    "value_loss",
    "loss",
    "clip_frac",
    "approx_kl",
    "response_len",
    "length",
    "lr",
)
NOT_PLOTTED = {"time", "step", "epoch"}


def model_color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _style():
    import matplotlib

    return matplotlib.rc_context(STYLE)


def _first(series: Series, keys: Sequence[str]) -> str | None:
    return next((k for k in keys if k in series and len(series[k][1]) > 0), None)


def _grid(n: int, cols: int = 3) -> tuple[int, int]:
    cols = max(1, min(cols, n))
    return math.ceil(n / cols), cols


def loss_curves(stages: Mapping[str, Series]) -> bytes | None:
    """One panel per stage: training loss and, where logged, validation loss against the step."""
    stages = {k: v for k, v in stages.items() if "loss" in v or "val_loss" in v}
    if not stages:
        return None
    rows, cols = _grid(len(stages))
    with _style():
        fig = _figure(3.6 * cols, 2.7 * rows)
        for i, (stage, series) in enumerate(stages.items()):
            ax = fig.add_subplot(rows, cols, i + 1)
            if "loss" in series:
                ax.plot(*series["loss"], color=PALETTE[0], lw=1.2, label="train loss")
            if "val_loss" in series:
                ax.plot(*series["val_loss"], "o-", color=PALETTE[1], lw=1.4, ms=3, label="val loss")
            ax.set_title(stage)
            ax.set_xlabel("step")
            ax.legend(loc="upper right")
        return _png(fig)


def series_grid(
    series: Series, title: str, preferred: Sequence[str] = (), skip: Sequence[str] = ()
) -> bytes | None:
    """Small multiples of every numeric series (preferred keys first), one panel each."""
    keys = [k for k in preferred if k in series]
    keys += sorted(k for k in series if k not in keys)
    keys = [k for k in keys if k not in NOT_PLOTTED and k not in skip and len(series[k][1]) > 1]
    if not keys:
        return None
    rows, cols = _grid(len(keys), 4)
    with _style():
        fig = _figure(3.0 * cols, 2.2 * rows)
        fig.suptitle(title, fontweight="bold")
        for i, key in enumerate(keys):
            ax = fig.add_subplot(rows, cols, i + 1)
            ax.plot(*series[key], color=model_color(i), lw=1.2)
            ax.set_title(key)
        return _png(fig)


def ppo_overview(series: Series) -> bytes | None:
    """Proxy (reward model) vs gold reward over training, KL over training, and gold/proxy against KL."""
    proxy, gold, kl = _first(series, PROXY_KEYS), _first(series, GOLD_KEYS), _first(series, KL_KEYS)
    if not (proxy or gold):
        return None
    panels = 1 + bool(kl) + bool(kl)
    with _style():
        fig = _figure(4.0 * panels, 3.0)
        ax = fig.add_subplot(1, panels, 1)
        ax.set_title("proxy vs gold reward")
        ax.set_xlabel("step")
        lines = []
        if proxy:
            lines += ax.plot(*series[proxy], color=PALETTE[0], lw=1.4, label=f"proxy ({proxy})")
            ax.set_ylabel("reward model score")
        if "watch_ema" in series:  # reward models the policy never optimizes (ppo --watch-reward): own scale
            wax = ax.twinx()
            wax.spines["right"].set_position(("axes", 1.2))
            wax.grid(False)
            wax.set_ylabel("watch score")
            lines += wax.plot(*series["watch_ema"], color=PALETTE[4], lw=1.4, label="watch RMs (moving avg.)")
            best = series.get("watch_best_step")
            if best and best[1]:
                lines.append(
                    ax.axvline(best[1][-1], color=PALETTE[4], ls=":", lw=1, label="watch rule's best")
                )
        if gold:
            gax = ax.twinx() if proxy else ax
            lines += gax.plot(*series[gold], color=PALETTE[2], lw=1.4, label=f"gold ({gold})")
            gax.set_ylabel("gold judge score")
            gax.grid(False)
        ax.legend(lines, [line.get_label() for line in lines], loc="lower right")
        if kl:
            ax2 = fig.add_subplot(1, panels, 2)
            ax2.plot(*series[kl], color=PALETTE[3], lw=1.4, label=kl)
            beta = _first(series, ("beta", "kl_coef"))
            if beta:
                bax = ax2.twinx()
                bax.plot(*series[beta], color=PALETTE[7], lw=1, ls="--", label=beta)
                bax.set_ylabel(beta)
                bax.grid(False)
            ax2.set_title("KL to the reference (SFT) model")
            ax2.set_xlabel("step")
            ax2.set_ylabel(kl)
            ax3 = fig.add_subplot(1, panels, 3)
            _reward_vs_kl(ax3, series, kl, proxy, gold)
        return _png(fig)


def audit_curves(audits: Sequence[Mapping], kl_at: Mapping[int, float] | None = None) -> bytes | None:
    """PPO's audits (`ppo --audit-prompts`): the annotators' win rate of the policy against the reference, its
    moving average and the audit the stop rule would keep; the gold judge's verdict on the same pairs (the demo
    world's answer key, which the rule never reads); and, given the KL at each step, both against the KL."""
    if len(audits) < 2:
        return None
    steps = [a["step"] for a in audits]
    emas = [a["audit_ema"] for a in audits]  # the rule's own moving average, at the run's --audit-smoothing
    best = audits[-1]["audit_best_step"]
    panels = 2 if kl_at else 1
    with _style():
        fig = _figure(4.5 * panels, 3.0)
        ax = fig.add_subplot(1, panels, 1)
        ax.set_title("audits: the policy against the reference")
        ax.set_xlabel("step")
        ax.set_ylabel("win rate (ties half)")
        ax.axhline(0.5, color=PALETTE[7], lw=0.8)
        ax.plot(steps, [a["audit_win"] for a in audits], "o", ms=3, color=PALETTE[0], label="annotators")
        ax.plot(steps, emas, color=PALETTE[0], lw=1.4, label="annotators (moving avg.)")
        if all("audit_gold_win" in a for a in audits):
            ax.plot(
                steps, [a["audit_gold_win"] for a in audits], color=PALETTE[2], lw=1.2, ls="--", label="gold"
            )
        ax.axvline(best, color=PALETTE[4], ls=":", lw=1, label="the rule's best audit")
        ax.legend(loc="lower left")
        if kl_at:
            ax2 = fig.add_subplot(1, panels, 2)
            ax2.set_title("audit win rate vs KL")
            ax2.set_xlabel("KL to the reference (nats)")
            pts = [(kl_at.get(s, 0.0 if s == 0 else None), a) for s, a in zip(steps, audits)]
            pts = [(k, a) for k, a in pts if k is not None]
            ax2.scatter([k for k, _ in pts], [a["audit_win"] for _, a in pts], s=10, color=PALETTE[0])
            if all("audit_gold_win" in a for _, a in pts):
                ax2.scatter(
                    [k for k, _ in pts], [a["audit_gold_win"] for _, a in pts], s=10, color=PALETTE[2]
                )
            ax2.axhline(0.5, color=PALETTE[7], lw=0.8)
        return _png(fig)


def _reward_vs_kl(ax, series: Series, kl: str, proxy: str | None, gold: str | None) -> None:
    kl_at = dict(zip(*series[kl]))
    ax.set_title("reward vs KL (over-optimization)")
    ax.set_xlabel(kl)
    for key, color in ((proxy, PALETTE[0]), (gold, PALETTE[2])):
        if not key:
            continue
        xs, ys = zip(*[(kl_at[s], v) for s, v in zip(*series[key]) if s in kl_at], strict=False) or ((), ())
        if not xs:
            continue
        target = ax if key == proxy or not proxy else ax.twinx()
        target.scatter(xs, ys, s=10, color=color, label=key, alpha=0.8)
        if target is not ax:
            target.grid(False)
        target.set_ylabel(key)


def bars(
    values: Mapping[str, float],
    title: str,
    xlabel: str = "",
    limit: tuple[float, float] | None = (0.0, 1.0),
    percent: bool = True,
    reference: float | None = None,
) -> bytes | None:
    """Horizontal bars with their values written at the end (RM accuracy next to annotator agreement)."""
    values = {k: v for k, v in values.items() if v is not None and math.isfinite(v)}
    if not values:
        return None
    with _style():
        fig = _figure(7.5, 0.45 * len(values) + 1.0)
        ax = fig.add_subplot(1, 1, 1)
        names = list(values)[::-1]
        ax.barh(names, [values[n] for n in names], color=[model_color(i) for i in range(len(names))][::-1])
        for i, n in enumerate(names):
            ax.text(values[n], i, f" {values[n]:.0%}" if percent else f" {values[n]:.3g}", va="center")
        if reference is not None:
            ax.axvline(reference, color="#888", ls=":", lw=1)
        if limit:
            ax.set_xlim(limit[0], limit[1] * 1.12)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.grid(axis="y", visible=False)
        return _png(fig)


def histogram(
    edges: Sequence[float], counts: Sequence[int], title: str, markers: Mapping[str, float]
) -> bytes | None:
    """A precomputed histogram (e.g. reward-model scores) with labelled vertical markers."""
    if not counts or len(edges) != len(counts) + 1:
        return None
    with _style():
        fig = _figure(6.5, 2.8)
        ax = fig.add_subplot(1, 1, 1)
        widths = [b - a for a, b in zip(edges, edges[1:])]
        ax.bar(edges[:-1], counts, width=widths, align="edge", color=PALETTE[0], alpha=0.7, edgecolor="white")
        for i, (label, x) in enumerate(markers.items()):
            if x is not None and math.isfinite(x):
                ax.axvline(x, color=PALETTE[(i + 2) % len(PALETTE)], lw=1.5, label=f"{label} {x:.2f}")
        ax.set_title(title)
        ax.set_xlabel("score")
        ax.set_ylabel("completions")
        if markers:
            ax.legend()
        return _png(fig)


def ranking(rows: Sequence[Mapping]) -> bytes | None:
    """Elo with its bootstrap interval, one row per model (strongest on top)."""
    if not rows:
        return None
    with _style():
        fig = _figure(6.5, 0.5 * len(rows) + 1.0)
        ax = fig.add_subplot(1, 1, 1)
        for i, row in enumerate(reversed(rows)):
            lo, hi = row["elo_low"], row["elo_high"]
            ax.errorbar(
                row["elo"],
                i,
                xerr=[[row["elo"] - lo], [hi - row["elo"]]],
                fmt="o",
                capsize=4,
                color=model_color(len(rows) - 1 - i),
                ms=6,
            )
        ax.set_yticks(range(len(rows)), [r["model"] for r in reversed(rows)])
        ax.axvline(1000, color="#888", ls=":", lw=1)
        ax.set_title("Bradley-Terry ranking (Elo scale, 95% bootstrap interval)")
        ax.set_xlabel("Elo")
        ax.grid(axis="y", visible=False)
        return _png(fig)


def grouped_bars(
    table: Mapping[str, Mapping[str, float | None]],
    models: Sequence[str],
    title: str,
    ylabel: str,
    ylim: tuple[float, float] | None = None,
) -> bytes | None:
    """Groups (categories, probes) on x, one bar per model in each group."""
    groups = [g for g, row in table.items() if any(row.get(m) is not None for m in models)]
    if not groups or not models:
        return None
    width = 0.8 / len(models)
    with _style():
        fig = _figure(max(6.5, 0.55 * len(groups) * max(2, len(models)) / 2 + 2), 3.2)
        ax = fig.add_subplot(1, 1, 1)
        for j, model in enumerate(models):
            xs = [i + (j - (len(models) - 1) / 2) * width for i in range(len(groups))]
            ys = [table[g].get(model) for g in groups]
            ax.bar(
                [x for x, y in zip(xs, ys) if y is not None],
                [y for y in ys if y is not None],
                width=width,
                color=model_color(j),
                label=model,
            )
        ax.set_xticks(range(len(groups)), groups, rotation=20, ha="right")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        if ylim:
            ax.set_ylim(*ylim)
        ax.grid(axis="x", visible=False)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return _png(fig)
