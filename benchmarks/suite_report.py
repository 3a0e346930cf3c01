"""The suite's Markdown summary and PNG plots: every figure beside its baseline from the same run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("benchmarks.suite")

MEASURES = (
    ("burst", "burst, producer waits for all, req/s"),
    ("closed8", "closed loop, 8 in flight, req/s"),
    ("enqueue", "enqueue alone (workers paused), req/s"),
    ("drain", "drain alone (backlog waiting), req/s"),
)


def _columns(r: dict[str, Any]) -> list[tuple[str, str]]:
    cols = [("ideal", "featureless loop")]
    cols += [(k, f"this project, {r[k]['workers']} worker(s)") for k in sorted(r) if k.startswith("project")]
    if "arq" in r:
        cols.append(("arq", "arq, 1 worker"))
    return cols


def _num(v: float | None, digits: int = 0) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def _cell(r: dict[str, Any], col: str, measure: str, key: str = "rps", digits: int = 0) -> str:
    fig = r.get(col, {}).get(measure)
    if not fig or fig.get(key) is None:
        return ""
    base = r.get("ideal", {}).get(measure, {}).get(key)
    text = _num(fig[key], digits)
    lost = fig["count"] - fig["answered"] if "answered" in fig else 0
    if lost:
        text += f" ({lost} unanswered)"
    if col != "ideal" and base:
        text += f" ({fig[key] / base:.2f}x)"
    return text


def queue_table(r: dict[str, Any]) -> list[str]:
    cols = _columns(r)
    lines = ["| measure | " + " | ".join(name for _, name in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for measure, label in MEASURES:
        lines.append(f"| {label} | " + " | ".join(_cell(r, c, measure) for c, _ in cols) + " |")
    for key, label in (("p50_ms", "closed loop p50, ms"), ("p99_ms", "closed loop p99, ms")):
        lines.append(f"| {label} | " + " | ".join(_cell(r, c, "closed8", key, 2) for c, _ in cols) + " |")
    after = r.get("ideal_after")
    if after and r.get("ideal"):
        drift = [
            f"{m} {_num(after[m]['rps'])} ({100 * (after[m]['rps'] / r['ideal'][m]['rps'] - 1):+.0f}%)"
            for m, _ in MEASURES
            if after.get(m) and r["ideal"].get(m) and r["ideal"][m]["rps"]
        ]
        lines += ["", "Featureless loop measured again after the others, req/s (drift): " + "; ".join(drift) + "."]
        lines += ["A large drift means other processes changed the machine's load during the run."]
    lines += ["", "redis-server CPU during each measurement (% of one core):", ""]
    lines += ["| measure | " + " | ".join(name for _, name in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for measure, label in MEASURES:
        cells = [_num((r.get(c, {}).get(measure) or {}).get("redis_cpu_pct")) for c, _ in cols]
        lines.append(f"| {label.rsplit(',', 1)[0]} | " + " | ".join(cells) + " |")
    return lines


def model_lines(r: dict[str, Any]) -> list[str]:
    m = r.get("model")
    if not m:
        return []
    e2e, direct, cfg = m["e2e"], m["direct"], m["config"]
    lat = e2e["latency_ms"]
    return [
        "",
        f"## Real model ({Path(cfg['model']).name}), batch {cfg['batch']}, {cfg['threads']} thread(s)",
        "",
        "| | images/s | ratio |",
        "|---|---:|---:|",
        f"| ONNX Runtime alone, batch {cfg['batch']} | {direct['images_per_s']:,.0f} | 1.00 |",
        f"| end to end, 1 worker, {cfg['concurrency']} in flight (p50 {_num(lat.get('p50'), 1)} ms) | "
        f"{e2e['images_per_s']:,.0f} | {m['ratio_e2e_to_direct']:.2f} |",
        f"| ONNX Runtime alone again after (drift {100 * m['direct_drift']:+.0f}%) | "
        f"{m['direct_after']['images_per_s']:,.0f} | |",
    ]


def markdown(r: dict[str, Any]) -> str:
    m = r.get("machine", {})
    busy = r.get("cpu_busy_before")
    head = [
        "# make bench: one run, ratios to the baseline from the same run",
        "",
        f"{m.get('date_utc', '?')} · {m.get('cpu_model', '?')} · {m.get('cpus_usable', '?')} usable CPUs · "
        f"Python {m.get('python', '?')} · redis-server {r.get('redis_version', '?')} · CPU busy before the run "
        f"(other processes): {'?' if busy is None else f'{100 * busy:.0f}%'}",
        "",
        "Payload float32[1,512]; ratios are to the featureless loop (`benchmarks/ideal.py`) in the same row. "
        f"This project's workers run with `WORKER_BATCH__MAX_DELAY_MS={r.get('max_delay_ms', 2)}`"
        + (
            " (a batch is what is queued when a slot is free, as the featureless loop batches what one read returns)."
            if not r.get("max_delay_ms", 2)
            else " (each batch waits up to that long to fill)."
        ),
        "",
    ]
    ceiling = r.get("ceiling")
    if ceiling:
        head += [f"Redis ceiling (redis-benchmark XADD 2 KB, pipeline 100): {_num(ceiling.get('rps'))} req/s", ""]
    lines = head + queue_table(r) + model_lines(r)
    if r.get("notes"):
        lines += ["", "Notes:", ""] + [f"- {note}" for note in r["notes"]]
    if r.get("plots"):
        lines += [""] + [f"![{Path(p).stem}]({Path(p).name})" for p in r["plots"]]
    return "\n".join(lines) + "\n"


def plots(r: dict[str, Any], out: Path) -> list[str]:
    """Bar charts of throughput and closed-loop latency per loop; none (with a log line) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("no plots: matplotlib is missing (pip install 'redis-infer[bench]')")
        return []
    cols = [(c, name) for c, name in _columns(r) if c in r]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / max(1, len(cols))
    for i, (col, name) in enumerate(cols):
        values = [(r[col].get(m) or {}).get("rps") or 0 for m, _ in MEASURES]
        axes[0].bar([j + i * width for j in range(len(MEASURES))], values, width, label=name)
    axes[0].set_xticks([j + 0.4 - width / 2 for j in range(len(MEASURES))], [m for m, _ in MEASURES])
    axes[0].set_ylabel("requests/s")
    axes[0].legend(fontsize=7)
    for col, name in cols:
        closed = r[col].get("closed8")
        if closed and closed.get("p50_ms") is not None:
            axes[1].bar(name, closed["p50_ms"], color="tab:blue")
            axes[1].plot(name, closed["p99_ms"], "rv")
    axes[1].set_ylabel("closed loop 8 in flight: p50 bar, p99 marker (ms)")
    axes[1].tick_params(axis="x", labelrotation=20, labelsize=7)
    fig.tight_layout()
    path = out / "suite.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [str(path)]
