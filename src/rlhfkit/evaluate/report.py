"""`write_report(run_dir)`: one static `report.html` that shows what every stage of a run did.

Design:
- One self-contained file: CSS inline, plots as PNGs embedded as base64 `data:` URIs, no scripts, no fonts
  or files from the network. It opens offline, survives being mailed or copied, and a headless browser
  renders it with every image present.
- Every section reads what exists and is skipped when its stage is missing (`rundata` never raises on a
  half-written run), so the report can be rebuilt at any point of a pipeline. The run record
  (`pipeline.json`, written atomically) is read by its schema and raises on anything it does not know.
- Every piece of text that came from a model, a dataset or a config is HTML-escaped (`_e`); model output
  is shown in `<pre>`-like blocks so whitespace and odd characters read as they were generated.

Sections: highlights, pipeline overview, demo world, training curves, reward model, PPO, evaluation
(ranking, win-rate matrix, categories, probes) and the side-by-side gallery of responses.
"""

from __future__ import annotations

import base64
import html
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from rlhfkit.artifacts import read_manifest
from rlhfkit.data.jsonl import read_jsonl_lenient
from rlhfkit.errors import RlhfkitError
from rlhfkit.evaluate import plots
from rlhfkit.evaluate.rundata import (
    agreement_numbers,
    eval_folder,
    is_number,
    label_quality,
    last_samples,
    numeric_series,
    pipeline_stages,
    read_json,
    stage_folders,
)
from rlhfkit.evaluate.winrates import compared_pairs

REPORT = "report.html"
GALLERY_PER_CATEGORY = 2
MAX_SAMPLES_SHOWN = 4


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: object, digits: int = 3) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _e(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:.{digits + 1}g}"


def _pct(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.0%}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    return f"{minutes} min {sec:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _img(png: bytes | None, alt: str) -> str:
    if not png:
        return ""
    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}"></figure>'


def _table(headers: list[str], rows: list[list[str]], cls: str = "") -> str:
    """Cells are already HTML (escape them when building rows); headers are escaped here."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _chips(metrics: dict, limit: int = 8) -> str:
    items = [(k, v) for k, v in metrics.items() if is_number(v)][:limit]
    # Identifiers (seeds, versions) read wrong with thousands separators.
    shown = [(k, _e(v) if "seed" in k or "version" in k else _num(v)) for k, v in items]
    return " ".join(f'<span class="chip">{_e(k)} <b>{v}</b></span>' for k, v in shown)


def _section(anchor: str, title: str, body: str, intro: str = "") -> str:
    if not body:
        return ""
    intro_html = f'<p class="intro">{intro}</p>' if intro else ""
    return f'<section id="{anchor}"><h2>{_e(title)}</h2>{intro_html}{body}</section>'


# ---------------------------------------------------------------- sections


def _overview(run_dir: Path, folders: list[tuple[str, Path]]) -> str:
    stages = pipeline_stages(run_dir)
    rows = []
    if stages:
        for s in stages:
            config = ""
            if s["command"]:
                config += f"<details><summary>command</summary><pre>{_e(' '.join(map(str, s['command'])))}</pre></details>"
            if s["config"]:
                config += f"<details><summary>config</summary><pre>{_e(json.dumps(s['config'], indent=2))}</pre></details>"
            if s["name"] == "report" and s["status"] == "running":
                s = {**s, "status": "done"}  # the pipeline's report stage is the one writing this page
            status = f'<span class="status {_e(s["status"])}">{_e(s["status"])}</span>' if s["status"] else ""
            rows.append(
                [f"<b>{_e(s['name'])}</b>", status, _duration(s["seconds"]), _chips(s["metrics"]) + config]
            )
        total = sum(s["seconds"] or 0 for s in stages)
        table = _table(["stage", "status", "duration", "headline numbers"], rows)
        return f"{table}<p class='note'>Total stage time: <b>{_duration(total)}</b>.</p>"
    for name, folder in folders:
        manifest = read_json(folder / "rlhfkit.json") or {}
        metrics = manifest.get("metrics") if isinstance(manifest.get("metrics"), dict) else {}
        seconds = metrics.get("wall_seconds") if is_number(metrics.get("wall_seconds")) else None
        rows.append(
            [f"<b>{_e(name)}</b>", _e(manifest.get("stage", "")), _duration(seconds), _chips(metrics)]
        )
    if not rows:
        return ""
    return _table(["folder", "stage", "duration", "final metrics"], rows) + (
        "<p class='note'>No pipeline.json in this run: stages listed from their folders.</p>"
    )


def _world(folder: Path | None) -> str:
    info = read_json(folder / "world.json") if folder else None
    if not info or not isinstance(info.get("files"), dict):
        return ""
    rows = []
    for name, f in info["files"].items():
        if not isinstance(f, dict):
            continue
        cats = f.get("categories") if isinstance(f.get("categories"), dict) else {}
        rows.append(
            [
                _e(name),
                _num(f.get("count", "")),
                _num(f.get("bytes", "")),
                _e(", ".join(f"{k} {v}" for k, v in cats.items())),
            ]
        )
    quality = (info["files"].get("sft.jsonl") or {}).get("quality") or {}
    note = ""
    if quality and is_number(quality.get("good")):
        share = quality["good"] / max(1, sum(v for v in quality.values() if is_number(v)))
        note = f"<p class='note'>{share:.0%} of the SFT demonstrations are flawless; the rest carry the documented imperfections (confident fabrication, ignoring the persona, over-refusal, ...) that preference learning should fix.</p>"
    head = f"<p>seed <b>{_e(info.get('seed', ''))}</b>, size <b>{_e(info.get('size', ''))}</b></p>"
    return head + _table(["file", "records", "bytes", "categories"], rows) + note


def _training(folders: list[tuple[str, Path]]) -> str:
    curves, final_rows, samples_html = {}, [], []
    for name, folder in folders:
        if name in ("ppo", "evaluate"):
            continue
        records = read_jsonl_lenient(folder / "metrics.jsonl")
        if not records:
            continue
        series = numeric_series(records)
        curves[name] = series
        last = {k: v[1][-1] for k, v in series.items() if k not in ("step", "time")}
        keys = [
            k for k in ("loss", "val_loss", "val_bpb", "val_accuracy", "tok_per_s", "cmp_per_s") if k in last
        ]
        chips = _chips({k: last[k] for k in keys} | {"steps": int(records[-1].get("step", len(records)))})
        duration = records[-1].get("time")
        final_rows.append([f"<b>{_e(name)}</b>", _duration(duration if is_number(duration) else None), chips])
        step, samples = last_samples(records)
        if samples:
            items = "".join(f"<pre class='sample'>{_e(s)}</pre>" for s in samples[:MAX_SAMPLES_SHOWN])
            samples_html.append(
                f"<details><summary>{_e(name)}: samples at step {_e(step)}</summary>{items}</details>"
            )
    if not curves:
        return ""
    body = _img(plots.loss_curves(curves), "loss curves")
    body += _table(["stage", "training time", "last logged"], final_rows)
    if samples_html:
        body += "<h3>What the model wrote at its last evaluation</h3>" + "".join(samples_html)
    return body


def _reward_model(run_dir: Path, folders: dict[str, Path]) -> str:
    rm = folders.get("reward")
    report = read_json(rm / "eval.json") if rm else None
    manifest = (read_json(rm / "rlhfkit.json") or {}) if rm else {}
    metrics = manifest.get("metrics") if isinstance(manifest.get("metrics"), dict) else {}
    if not report and not metrics:
        return ""
    report = report or {}
    accuracy = report.get("accuracy", metrics.get("val_accuracy"))
    cards = [
        ("held-out accuracy", _pct(accuracy) if is_number(accuracy) else "–"),
        ("pairs", _num(report.get("decisive_pairs", report.get("pairs", "–")))),
        ("loss", _num(report.get("loss", metrics.get("val_loss", "–")))),
        ("calibration error (ECE)", _num(report.get("ece", metrics.get("val_ece", "–")))),
    ]
    body = _cards(cards)
    comparisons = folders.get("labels")
    quality: dict = {}
    if comparisons:
        quality = label_quality(comparisons)
        quality.update({k: v for k, v in agreement_numbers(comparisons).items() if 0 <= v <= 1})
    bars: dict[str, float | None] = {"reward model, held-out": accuracy if is_number(accuracy) else None}
    if "inter_annotator_agreement" in quality:
        bars["annotators agree with each other"] = quality.pop("inter_annotator_agreement")
    if "labels_agree_with_gold" in quality:
        bars["labels agree with gold"] = quality.pop("labels_agree_with_gold")
    for key, value in quality.items():
        if isinstance(value, float) and key not in ("comparisons_read", "gold_pairs", "units_labelled_twice"):
            bars[key] = value
    body += _img(
        plots.bars(bars, "Reward model vs the labels it learned from", reference=0.5),
        "reward model accuracy vs annotator agreement",
    )
    rows = [[_e(k), _pct(v)] for k, v in bars.items() if v is not None]
    if quality.get("comparisons_read"):
        rows.append([_e("comparisons read for label quality"), _num(quality["comparisons_read"])])
    body += _table(["measure", "value"], rows)
    body += (
        "<p class='note'>Annotators who disagree with each other cap what a reward model can learn from "
        "their labels: accuracy near the annotators' own agreement is as good as the data allows. The dotted "
        "line is chance.</p>"
    )
    by_cat = report.get("by_category")
    if isinstance(by_cat, dict) and by_cat:
        rows = [
            [_e(c), _pct(v.get("accuracy")), _num(v.get("pairs", ""))]
            for c, v in by_cat.items()
            if isinstance(v, dict)
        ]
        body += "<h3>Accuracy by category</h3>" + _table(["category", "accuracy", "pairs"], rows)
    scores = report.get("scores") if isinstance(report.get("scores"), dict) else {}
    hist = (scores.get("all") or {}).get("histogram") if isinstance(scores.get("all"), dict) else None
    if isinstance(hist, dict):
        markers = {
            "mean of preferred": (scores.get("top") or {}).get("mean"),
            "mean of rejected": (scores.get("bottom") or {}).get("mean"),
        }
        body += _img(
            plots.histogram(
                hist.get("edges", []),
                hist.get("counts", []),
                "Reward-model scores on held-out comparisons",
                markers,
            ),
            "score histogram",
        )
    return body


def _ppo(folder: Path | None) -> str:
    records = read_jsonl_lenient(folder / "metrics.jsonl") if folder else []
    if not records:
        return ""
    series = numeric_series(records)
    body = _img(plots.ppo_overview(series), "PPO proxy vs gold reward vs KL")
    shown = {plots._first(series, plots.PROXY_KEYS), plots._first(series, plots.GOLD_KEYS), "watch_ema"}
    body += _img(
        plots.series_grid(series, "Everything PPO logged", plots.PPO_PREFERRED, skip=[k for k in shown if k]),
        "PPO metrics",
    )
    body += (
        "<p class='note'>The policy optimizes the reward model (proxy). The gold judge is what we really "
        "want; when proxy keeps rising while gold stalls or falls, the policy is over-optimizing the reward "
        "model, which the KL penalty to the SFT model holds back.</p>"
    )
    if "watch_ema" in series:
        body += (
            "<p class='note'>The watch score comes from reward models trained on the same labels that the policy "
            "never optimizes: what a user without a gold judge can see. The watch rule (<code>--stop-patience"
            "</code>) stops where its moving average stops reaching new bests and keeps that step's policy.</p>"
        )
    body += _audits(folder, records)
    step, samples = last_samples(records)
    if samples:
        items = "".join(f"<pre class='sample'>{_e(s)}</pre>" for s in samples[:MAX_SAMPLES_SHOWN])
        body += f"<details><summary>samples at step {_e(step)}</summary>{items}</details>"
    return body


def _audits(folder: Path, records: list[dict]) -> str:
    """The audits of a PPO run (`--audit-prompts`): what people said of the policy as it trained."""
    audits = read_jsonl_lenient(folder / "audits.jsonl")
    if not audits:
        return ""
    kl_at = {int(r["step"]): float(r["kl"]) for r in records if "kl" in r and "step" in r}
    body = _img(plots.audit_curves(audits, kl_at), "PPO audits: annotators' win rate vs the reference")
    rule = read_manifest(folder).get("stop_rule") if (folder / "rlhfkit.json").exists() else None
    kept = (
        f" The run stopped at step {_e(rule['stopped_at'])} and kept step {_e(rule['best_step'])}."
        if rule
        else ""
    )
    return body + (
        f"<p class='note'>Every few steps annotators compared the policy's answers to {_e(len(audits))} rounds of "
        "held-out prompts with the reference model's: what a user without a gold judge can see. The stop rule "
        "(<code>--stop-patience</code>) keeps the audit where the moving average of the win rate peaked; the "
        f"gold line is the demo world's answer key on the same pairs, which the rule never reads.{kept}</p>"
    )


def _rs(folder: Path | None) -> str:
    """Rejection sampling, round by round: how far the reward model's pick lifts its score above the average
    sample, and a few of the winners the policy was fine-tuned on."""
    rounds = (
        sorted((folder / "rounds").glob("*/round.json"), key=lambda p: int(p.parent.name)) if folder else []
    )
    rows = []
    for path in rounds:
        info = read_json(path) or {}  # the report reads a run leniently: a half-written file shows blanks
        rows.append(
            [
                _e(int(path.parent.name) + 1),
                _num(info.get("winners", "")),
                _num(info.get("mean_score", "")),
                _num(info.get("mean_winner_score", "")),
                _num(info.get("finished", "")),
            ]
        )
    if not rows:
        return ""
    winners = read_jsonl_lenient(rounds[-1].parent / "winners.jsonl")  # the last round's only
    body = _table(
        [
            "round",
            "winners",
            "mean RM score of all samples",
            "mean RM score of the winners",
            "finished share",
        ],
        rows,
    )
    body += (
        "<p class='note'>Each round samples n answers per prompt from the current policy, keeps the reward "
        "model's favourite and fine-tunes on those winners. It can only choose among answers the policy already "
        "gives, so it exploits the reward model's blind spots less than PPO does.</p>"
    )
    shown = [
        f"{m[-2].get('content', '')!r} -> {m[-1].get('content', '')!r}"
        for m in (w.get("messages", []) for w in winners[:MAX_SAMPLES_SHOWN])
        if len(m) >= 2
    ]
    if shown:
        items = "".join(f"<pre class='sample'>{_e(x)}</pre>" for x in shown)
        body += f"<details><summary>winners of the last round</summary>{items}</details>"
    return body


def _ranking(results: dict) -> str:
    rows = []
    for r in results.get("ranking", []):
        rows.append(
            [
                str(r["rank"]),
                f"<b>{_e(r['model'])}</b>",
                f"{r['elo']:.0f}",
                f"{r['elo_low']:.0f} – {r['elo_high']:.0f}",
                f"{r['mean_score']:.2f}",
            ]
        )
    gold = results.get("gold_mean_score")
    if gold:
        for row, r in zip(rows, results.get("ranking", [])):
            row.append(f"{gold.get(r['model'], float('nan')):.2f}")
    headers = ["#", "model", "Elo", "95% interval", f"mean score ({results.get('judge', '')})"]
    headers += ["mean gold score"] if gold else []
    body = _table(headers, rows)
    if len(rows) > 1:
        body += _img(plots.ranking(results["ranking"]), "ranking with confidence intervals")
    return body


def _heat(value: float) -> str:
    """Background colour for a win rate: red below 0.5, white at 0.5, green above."""
    t = max(-1.0, min(1.0, (value - 0.5) * 2))
    if t >= 0:
        r, g, b = int(255 - 120 * t), int(255 - 45 * t), int(255 - 120 * t)
    else:
        r, g, b = int(255 + 15 * t), int(255 + 135 * t), int(255 + 135 * t)
    return f"background:rgb({r},{g},{b})"


def _win_matrix(results: dict) -> str:
    names = list(results.get("models", {}))
    if len(names) < 2:
        return ""
    counts = results.get("pair_counts", {})
    rows = []
    for a in names:
        cells = [f"<b>{_e(a)}</b>"]
        for b in names:
            if a == b:
                cells.append("<span class='muted'>–</span>")
                continue
            rate = results["win_rates"][a][b]
            c = counts.get(a, {}).get(b, {})
            title = f"{c.get('wins', '?')} wins, {c.get('ties', '?')} ties, {c.get('losses', '?')} losses"
            cells.append(f"<span class='heat' style='{_heat(rate)}' title='{_e(title)}'>{rate:.0%}</span>")
        rows.append(cells)
    return _table(["row beats column", *names], rows, "matrix") + (
        f"<p class='note'>Share of the {results.get('n_prompts', '')} prompts on which the row model's "
        "response scored higher than the column model's; ties count half. Hover a cell for the counts.</p>"
    )


def _categories(results: dict) -> str:
    names = list(results.get("models", {}))
    by_cat = results.get("by_category") or {}
    if not by_cat:
        return ""
    rows = []
    for cat, v in by_cat.items():
        means = v.get("mean_score", {})
        best = max(means.values()) if means else None
        cells = [f"<b>{_e(cat)}</b>", _num(v.get("n", ""))]
        for m in names:
            x = means.get(m)
            cls = " class='best'" if x is not None and x == best and len(names) > 1 else ""
            cells.append(f"<span{cls}>{x:.2f}</span>" if x is not None else "–")
        rows.append(cells)
    table = {cat: v.get("mean_score", {}) for cat, v in by_cat.items()}
    chart = plots.grouped_bars(
        table, names, f"Mean score by category ({results.get('judge', '')} judge)", "mean score"
    )
    return _table(["category", "prompts", *names], rows) + _img(chart, "mean score by category")


def _probes(results: dict) -> str:
    probes = results.get("probes")
    if not probes:
        return ""
    names = list(results.get("models", {}))
    labels = results.get("probe_labels", {})
    rows, chart = [], {}
    for probe, info in labels.items():
        cells = [
            f"<b>{_e(info['label'])}</b>",
            "↑ better" if info.get("higher_is_better", True) else "↓ better",
        ]
        chart[probe] = {}
        for m in names:
            r = probes.get(m, {}).get(probe, {})
            rate = r.get("rate")
            chart[probe][m] = rate
            cells.append(
                "–" if rate is None else f"{rate:.0%} <span class='muted'>({r['hits']}/{r['n']})</span>"
            )
        rows.append(cells)
    img = plots.grouped_bars(chart, names, "Probe rates", "share of responses", ylim=(0, 1.05))
    return _table(["probe", "", *names], rows) + _img(img, "probe rates")


def _verifiable(results: dict) -> str:
    """Accuracy and pass@k on the prompts that carry an answer (RLVR), overall, by kind and by difficulty; the
    verifier's verdicts; tool use when the episodes had tools."""
    verifiable = results.get("verifiable")
    if not verifiable:
        return ""
    names = list(verifiable)
    first = verifiable[names[0]]
    ks = list(first.get("pass_at", {}))
    k = ks[-1] if ks else None

    def cell(row: dict | None) -> str:
        if not row:
            return "–"
        passed = row.get("pass_at", {}).get(k)
        extra = (
            f" <span class='muted'>pass@{k} {passed:.0%}</span>" if passed is not None and k != "1" else ""
        )
        return f"{row['accuracy']:.0%}{extra}"

    rows = [["<b>all</b>", str(first["n"]), *(cell(verifiable[n]) for n in names)]]
    for group, label in (("by_kind", "kind"), ("by_difficulty", "steps")):
        for key, row in first.get(group, {}).items():
            rows.append(
                [
                    f"{label} {_e(key)}",
                    str(row["n"]),
                    *(cell(verifiable[n].get(group, {}).get(key)) for n in names),
                ]
            )
    html = _table(["prompts", "n", *names], rows)
    chart = {"accuracy": {n: verifiable[n]["accuracy"] for n in names}}
    if k:
        chart[f"pass@{k}"] = {n: verifiable[n].get("pass_at", {}).get(k) for n in names}
    html += _img(
        plots.grouped_bars(chart, names, "Verifiable tasks", "share right", ylim=(0, 1.05)), "accuracy"
    )
    verdicts = [
        [f"<b>{_e(r)}</b>", *(_pct(verifiable[n]["verdicts"].get(r)) for n in names)]
        for r in first.get("verdicts", {})
    ]
    html += "<h3>The verifier's verdicts (first response)</h3>" + _table(["verdict", *names], verdicts)
    if any("tools" in verifiable[n] for n in names):
        tools = [
            [
                "tool calls per episode",
                *(_num(verifiable[n].get("tools", {}).get("tool_calls_per_episode"), 2) for n in names),
            ],
            [
                "calls that ran",
                *(_pct(verifiable[n].get("tools", {}).get("valid_call_share")) for n in names),
            ],
        ]
        html += "<h3>Tool use</h3>" + _table(["", *names], tools)
    return html


def _generation(results: dict) -> str:
    gen = results.get("generation") or {}
    rows = [
        [
            f"<b>{_e(m)}</b>",
            _num(s.get("mean_tokens")),
            _pct(s.get("truncated")),
            _num(s.get("tokens_per_s")),
            _duration(s.get("seconds")),
        ]
        for m, s in gen.items()
    ]
    if not rows:
        return ""
    cfg = results.get("config", {})
    settings = [
        ("temperature", "temperature"),
        ("top_p", "top-p"),
        ("max_new_tokens", "max new tokens"),
        ("seed", "seed"),
    ]
    said = ", ".join(f"{label} {_e(cfg[key])}" for key, label in settings if key in cfg)
    note = f"<p class='note'>One response per prompt per model{': ' + said if said else ''}.</p>"
    return (
        "<h3>Sampling</h3>"
        + _table(["model", "mean tokens", "hit length limit", "tokens/s", "time"], rows)
        + note
    )


def _pick_gallery(responses: list[dict], names: list[str]) -> list[tuple[dict, str]]:
    """Per category: the first prompt (a random one, the files are shuffled) and the one where the models'
    scores differ most, each tagged so the reader knows which is which."""
    by_cat: dict[str, list[dict]] = {}
    for r in responses:
        by_cat.setdefault(str(r.get("category", "")), []).append(r)
    picked = []
    for cat in sorted(by_cat):
        items = by_cat[cat]
        first = items[0]
        picked.append((first, "random pick"))

        def spread(r: dict) -> float:
            s = [r["responses"][m]["score"] for m in names if m in r.get("responses", {})]
            return max(s) - min(s) if s else 0.0

        widest = max(items, key=spread)
        if widest is not first and GALLERY_PER_CATEGORY > 1 and spread(widest) > 0:
            picked.append((widest, "largest difference"))
    return picked


def _gallery(folder: Path, results: dict) -> str:
    names = list(results.get("models", {}))
    responses = [
        r for r in read_jsonl_lenient(folder / "responses.jsonl") if isinstance(r.get("responses"), dict)
    ]
    if not responses:
        return ""
    cards = []
    for record, why in _pick_gallery(responses, names):
        turns = "".join(
            f"<div class='turn {_e(m.get('role', ''))}'><span class='role'>{_e(m.get('role', ''))}</span>{_e(m.get('content', ''))}</div>"
            for m in record.get("prompt", [])
            if isinstance(m, dict)
        )
        scores = {m: record["responses"][m]["score"] for m in names if m in record["responses"]}
        best = max(scores.values()) if scores else None
        cols = []
        for m in names:
            resp = record["responses"].get(m)
            if not resp:
                continue
            star = " best" if len(scores) > 1 and resp["score"] == best else ""
            cut = (
                " <span class='muted'>(cut at length limit)</span>"
                if resp.get("finish_reason") == "length"
                else ""
            )
            text = resp.get("text") or ""
            cols.append(
                f"<div class='resp'><div class='resp-head'><b>{_e(m)}</b><span class='score{star}'>{resp['score']:.2f}</span></div>"
                f"<div class='text'>{_e(text) if text else '<span class=muted>(empty)</span>'}</div>{cut}</div>"
            )
        cards.append(
            f"<div class='card'><div class='card-head'><span class='tag'>{_e(record.get('category', ''))}</span>"
            f"<span class='muted'>{_e(why)} · {_e(record.get('id', ''))}</span></div>{turns}"
            f"<div class='resps' style='grid-template-columns:repeat({max(1, len(cols))},minmax(0,1fr))'>{''.join(cols)}</div></div>"
        )
    return "".join(cards)


def _cards(items: list[tuple[str, str]]) -> str:
    return (
        "<div class='cards'>"
        + "".join(
            f"<div class='stat'><div class='value'>{value}</div><div class='label'>{_e(label)}</div></div>"
            for label, value in items
        )
        + "</div>"
    )


def _highlights(results: dict | None, stages: list[dict]) -> str:
    items: list[tuple[str, str]] = []
    if stages:
        items.append(("pipeline time", _duration(sum(s["seconds"] or 0 for s in stages))))
    if results:
        names = list(results.get("models", {}))
        for prev, cur in compared_pairs(names):
            rate = results["win_rates"][cur][prev]
            items.append((f"{cur} beats {prev}", _pct(rate)))
        probes = results.get("probes") or {}
        honest = [(m, probes.get(m, {}).get("honest_unknowable", {}).get("rate")) for m in names]
        honest = [(m, r) for m, r in honest if r is not None]
        if len(honest) >= 2:
            items.append(
                (
                    "honest on unknowable: " + " → ".join(m for m, _ in honest),
                    " → ".join(_pct(r) for _, r in honest),
                )
            )
        if results.get("ranking"):
            top = results["ranking"][0]
            items.append(("top model (Elo)", f"{_e(top['model'])} {top['elo']:.0f}"))
    return _cards(items) if items else ""


# ---------------------------------------------------------------- page


def build_html(run_dir: Path) -> str:
    """The report's HTML for a run folder (see the module docstring)."""
    folders = stage_folders(run_dir)
    by_name = dict(folders)
    evaluation = eval_folder(run_dir)
    results = read_json(evaluation / "results.json") if evaluation else None
    stages = pipeline_stages(run_dir)

    sections = [
        (
            "overview",
            "Pipeline",
            _overview(run_dir, folders),
            "What ran, how long it took, and each stage's headline numbers.",
        ),
        (
            "world",
            "Demo world",
            _world(by_name.get("world")),
            "The seeded world every stage learns from, and the hidden gold judge that measures the results.",
        ),
        (
            "training",
            "Training curves",
            _training(folders),
            "Loss of each training stage against its step (validation loss where it was evaluated).",
        ),
        (
            "reward",
            "Reward model",
            _reward_model(run_dir, by_name),
            "How often the reward model prefers the response the annotators preferred, on comparisons it never trained on.",
        ),
        (
            "ppo",
            "PPO",
            _ppo(by_name.get("ppo")),
            "Reinforcement learning against the reward model, with a KL penalty to the SFT model.",
        ),
        (
            "rs",
            "Rejection sampling",
            _rs(by_name.get("rs")),
            "Fine-tuning on the reward model's best of n samples per prompt.",
        ),
    ]
    if results:
        judge = _e(results.get("judge", ""))
        n = _e(results.get("n_prompts", ""))
        # Every prompt has a known answer (an RLVR evaluation): the verifier is the measure, and the gold
        # judge, which sees these as unknown tasks, would rank and probe the models on nothing.
        checked = [v.get("n") for v in (results.get("verifiable") or {}).values()]
        only_verifiable = bool(checked) and min(checked) == results.get("n_prompts")
        sections += [
            (
                "ranking",
                "Ranking",
                _ranking(results),
                f"Bradley-Terry strengths on the Elo scale from head-to-head comparisons on {n} held-out prompts, judged by the {judge} judge.",
            ),
            (
                "verifiable",
                "Verifiable tasks",
                _verifiable(results),
                "Accuracy (first response) and pass@k on prompts with a known answer, checked by the verifier, not a judge.",
            ),
            ("winrates", "Win rates", _win_matrix(results), ""),
            ("categories", "By category", _categories(results), "Mean judge score per prompt category."),
            (
                "probes",
                "Probes",
                _probes(results) + _generation(results),
                "How often each model shows the behaviours the demo world tests (read from the gold judge's parts).",
            ),
            (
                "gallery",
                "Before and after",
                _gallery(evaluation, results),
                "The same prompts answered by each model. Scores are the judge's; the best in each row is highlighted.",
            ),
        ]
        if only_verifiable:
            sections = [x for x in sections if x[0] not in ("ranking", "winrates", "categories", "probes")]
    sections = [s for s in sections if s[2]]
    if not sections:
        raise RlhfkitError(
            f"{run_dir}: nothing to report (no stage folders with metrics, no eval/results.json)"
        )
    nav = "".join(f"<a href='#{a}'>{_e(t)}</a>" for a, t, _, _ in sections)
    body = "".join(_section(a, t, b, i) for a, t, b, i in sections)
    created = time.strftime("%Y-%m-%d %H:%M", time.localtime())
    title = f"rlhfkit · {run_dir.resolve().name}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><style>{CSS}</style></head>
<body><header><div class="wrap"><h1>{_e(title)}</h1><p class="sub">Report generated {created} from <code>{_e(run_dir)}</code></p>
{_highlights(results, stages)}<nav>{nav}</nav></div></header>
<main class="wrap">{body}</main>
<footer class="wrap">Made by <code>rlhfkit report</code>. Static file: no scripts, no network; images are embedded.</footer>
</body></html>
"""


@dataclass
class ReportConfig:
    """`rlhfkit report`: the static report.html of a run."""

    run: str = ""  # run folder (runs/NAME) or an evaluation folder


def run(cfg: ReportConfig) -> Path:
    """Write `report.html` into `cfg.run`; return its path."""
    if not cfg.run:
        raise RlhfkitError("report: expected a run folder (rlhfkit report runs/NAME)")
    path = write_report(cfg.run)
    print(f"report: written to {path}")
    return path


def write_report(run_dir: str | Path) -> Path:
    """Write `report.html` into `run_dir` (a pipeline run folder, or an evaluation output folder)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise RlhfkitError(f"{run}: run folder not found")
    path = run / REPORT
    path.write_text(build_html(run), encoding="utf-8")
    return path


CSS = """
:root{--fg:#1f2430;--muted:#6b7280;--line:#e5e7eb;--bg:#f7f8fa;--card:#fff;--accent:#4C72B0;--good:#2f8f4e}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:var(--fg);background:var(--bg)}
.wrap{max-width:1180px;margin:0 auto;padding:0 24px}
header{background:linear-gradient(135deg,#1f2a44,#34508a);color:#fff;padding:28px 0 0}
header h1{margin:0;font-size:26px;letter-spacing:-.01em}
header .sub{margin:4px 0 18px;color:#c9d3ea}
header code{color:#fff}
nav{display:flex;flex-wrap:wrap;gap:4px;padding:10px 0 12px}
nav a{color:#e6ecfa;text-decoration:none;padding:4px 10px;border-radius:999px;font-size:13px;background:rgba(255,255,255,.1)}
nav a:hover{background:rgba(255,255,255,.25)}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:8px 0 6px}
.stat{background:rgba(255,255,255,.95);color:var(--fg);border-radius:10px;padding:10px 16px;min-width:150px;box-shadow:0 1px 3px rgba(0,0,0,.12)}
.stat .value{font-size:22px;font-weight:700;color:var(--accent)}
.stat .label{font-size:12px;color:var(--muted)}
section{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:18px 22px;margin:22px 0;box-shadow:0 1px 2px rgba(0,0,0,.04)}
h2{margin:0 0 4px;font-size:20px}
h3{font-size:15px;margin:18px 0 8px}
.intro{color:var(--muted);margin:0 0 14px}
.note{color:var(--muted);font-size:13px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:14px;margin:6px 0 10px}
th{text-align:left;font-weight:600;color:var(--muted);border-bottom:2px solid var(--line);padding:6px 10px;white-space:nowrap}
td{border-bottom:1px solid var(--line);padding:6px 10px;vertical-align:top}
tbody tr:nth-child(even){background:#fafbfc}
table.matrix td{text-align:center}
table.matrix td:first-child{text-align:left}
.heat{display:inline-block;min-width:56px;padding:3px 8px;border-radius:6px;font-weight:600}
.best{font-weight:700;color:var(--good)}
.muted{color:var(--muted)}
.chip{display:inline-block;background:#eef2fa;border-radius:6px;padding:1px 7px;margin:2px 2px;font-size:12.5px;white-space:nowrap}
.status{font-size:12px;padding:1px 8px;border-radius:999px;background:#eef2fa}
.status.skipped{background:#f3f4f6;color:var(--muted)}
.status.ran,.status.done{background:#e3f4e8;color:var(--good)}
.status.failed{background:#fde8e8;color:#b42318}
.status.running{background:#fff4d6;color:#8a5a00}
figure{margin:10px 0}
figure img{max-width:100%;height:auto;display:block}
details{margin:6px 0}
summary{cursor:pointer;color:var(--accent)}
pre{white-space:pre-wrap;word-break:break-word;background:#f6f7f9;border-radius:6px;padding:8px 10px;font-size:12.5px;margin:6px 0}
pre.sample{border-left:3px solid var(--accent)}
.card{border:1px solid var(--line);border-radius:10px;padding:12px 14px;margin:14px 0}
.card-head{display:flex;gap:10px;align-items:center;margin-bottom:8px}
.tag{background:var(--accent);color:#fff;border-radius:999px;padding:1px 10px;font-size:12px}
.turn{margin:4px 0;white-space:pre-wrap}
.turn .role{display:inline-block;min-width:64px;font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
.turn.system{color:#6b4fa0;font-style:italic}
.resps{display:grid;gap:10px;margin-top:10px}
.resp{background:#f8f9fb;border:1px solid var(--line);border-radius:8px;padding:8px 10px;min-width:0}
.resp-head{display:flex;justify-content:space-between;margin-bottom:4px}
.resp .text{white-space:pre-wrap;word-break:break-word;font-size:13.5px}
.score{font-variant-numeric:tabular-nums;background:#eceff4;border-radius:6px;padding:0 7px;font-size:12.5px}
.score.best{background:#dff3e5;color:var(--good)}
footer{color:var(--muted);font-size:12px;padding:10px 24px 40px}
"""
