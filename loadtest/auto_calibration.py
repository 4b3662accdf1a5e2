"""How model=auto's predictions held, from the server's own log of a run: a markdown section for the report.

The server logs one debug event per auto-routed answer ("model=auto answered": variant, budget, prediction
without margin, margin, actual time from the request's head to its answer), when it runs with
`LOG_FORMAT=json` and `RUST_LOG=...,mobilenet_serve::service=debug` (auto.sh starts it so). Tables:

- by the prediction (margin left out), in tenths of the budget: how many answers, how many came late, and how
  far the actual time fell from the prediction (median and 99.5th percentile), beside the median margin;
- by how many answers the same variant had given in the 4 s before the request was routed: the sample its
  margin was taken from (auto::Margin keeps the answers of the last 4 s);
- by how many requests were routed to the other variants while it was on its way: work sharing the CPUs that
  the prediction, made when it was routed, could not count;
- by variant, the prediction's parts beside the times measured for the same answers (medians): decoding
  predicted against measured, the variant's queue and run predicted against measured, the other models' share
  of the CPUs predicted against what the answer's phases leave unexplained.

Usage: auto_calibration.py SERVER_LOG; prints nothing when the log holds no such events.
"""

import bisect
import json
import math
import sys
from dataclasses import dataclass
from datetime import datetime

EVENT = "model=auto answered"
# auto::Margin's MARGIN_MAX_AGE: the answers a margin is taken from.
MARGIN_AGE_MS = 4000.0
HISTORY_BINS = [(0, 0), (1, 9), (10, 49), (50, 199), (200, None)]
MEANWHILE_BINS = [(0, 0), (1, 2), (3, 4), (5, 6), (7, None)]


@dataclass
class Answer:
    done_ms: float
    model: str
    budget_ms: float
    predicted_ms: float
    margin_ms: float
    took_ms: float
    # The prediction's parts and the measured phases; None in logs from before they were logged.
    own_ms: float | None = None
    decode_predicted_ms: float | None = None
    spent_ms: float | None = None
    decode_ms: float | None = None
    queue_ms: float | None = None
    inference_ms: float | None = None

    @property
    def routed_ms(self) -> float:
        return self.done_ms - self.took_ms

    @property
    def late(self) -> bool:
        return self.took_ms > self.budget_ms

    @property
    def overrun_ms(self) -> float:
        return self.took_ms - self.predicted_ms


def answers(path: str) -> list[Answer]:
    found = []
    with open(path, encoding="utf-8", errors="replace") as log:
        for line in log:
            if EVENT not in line:
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            f = event.get("fields", {})
            if f.get("message") != EVENT or f.get("outcome") != "ok" or f.get("predicted_ms") is None:
                continue
            done = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp() * 1e3
            parts = ["own_ms", "decode_predicted_ms", "spent_ms", "decode_ms", "queue_ms", "inference_ms"]
            found.append(
                Answer(
                    done,
                    f["model"],
                    f["budget_ms"],
                    f["predicted_ms"],
                    f["margin_ms"],
                    f["took_ms"],
                    **{k: f.get(k) for k in parts},
                )
            )
    found.sort(key=lambda a: a.done_ms)
    return found


def quantile(values: list[float], q: float) -> float:
    """The value at rank ceil(q * n), as auto::Margin takes it."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q * len(ordered))))
    return ordered[rank - 1]


def by_prediction(found: list[Answer]) -> list[str]:
    budget = max(a.budget_ms for a in found)
    tenth = budget / 10
    bins: dict[int, list[Answer]] = {}
    for a in found:
        bins.setdefault(min(int(a.predicted_ms // tenth), 9), []).append(a)
    rows = [
        "| predicted (margin left out), ms | answers | late | actual - predicted: median / 99.5th, ms | median margin, ms |",
        "|---|---|---|---|---|",
    ]
    for b in sorted(bins):
        group = bins[b]
        late = sum(a.late for a in group)
        overruns = [a.overrun_ms for a in group]
        rows.append(
            f"| {b * tenth:.0f}-{(b + 1) * tenth:.0f} | {len(group)} | {late} ({100 * late / len(group):.1f}%) "
            f"| {quantile(overruns, 0.5):.1f} / {quantile(overruns, 0.995):.1f} "
            f"| {quantile([a.margin_ms for a in group], 0.5):.1f} |"
        )
    return rows


def by_history(found: list[Answer]) -> list[str]:
    per_model: dict[str, list[float]] = {}
    for a in found:
        per_model.setdefault(a.model, []).append(a.done_ms)
    bins = {b: [0, 0] for b in HISTORY_BINS}
    for a in found:
        done = per_model[a.model]
        recent = bisect.bisect_left(done, a.routed_ms) - bisect.bisect_left(done, a.routed_ms - MARGIN_AGE_MS)
        for lo, hi in HISTORY_BINS:
            if recent >= lo and (hi is None or recent <= hi):
                bins[(lo, hi)][0] += 1
                bins[(lo, hi)][1] += a.late
    rows = [
        "| answers of the same variant in the 4 s before | answers | late |",
        "|---|---|---|",
    ]
    for (lo, hi), (n, late) in bins.items():
        if n:
            span = f"{lo}+" if hi is None else (f"{lo}" if lo == hi else f"{lo}-{hi}")
            rows.append(f"| {span} | {n} | {late} ({100 * late / n:.1f}%) |")
    return rows


def by_routed_meanwhile(found: list[Answer]) -> list[str]:
    """By how many requests were routed to the task's other variants while the answer was on its way: work that
    shares the CPUs with it and that its prediction, made when it was routed, could not count."""
    routed = sorted(a.routed_ms for a in found)
    per_model: dict[str, list[float]] = {}
    for a in found:
        per_model.setdefault(a.model, []).append(a.routed_ms)
    for times in per_model.values():
        times.sort()

    def within(times: list[float], a: Answer) -> int:
        return bisect.bisect_left(times, a.done_ms) - bisect.bisect_right(times, a.routed_ms)

    bins: dict[tuple[int, int | None], list[Answer]] = {b: [] for b in MEANWHILE_BINS}
    for a in found:
        meanwhile = within(routed, a) - within(per_model[a.model], a)
        for lo, hi in MEANWHILE_BINS:
            if meanwhile >= lo and (hi is None or meanwhile <= hi):
                bins[(lo, hi)].append(a)
    rows = [
        "| requests routed to other variants while it was on its way | answers | late "
        "| actual - predicted: median / 99.5th, ms |",
        "|---|---|---|---|",
    ]
    for (lo, hi), group in bins.items():
        if group:
            late = sum(a.late for a in group)
            overruns = [a.overrun_ms for a in group]
            span = f"{lo}+" if hi is None else (f"{lo}" if lo == hi else f"{lo}-{hi}")
            rows.append(
                f"| {span} | {len(group)} | {late} ({100 * late / len(group):.1f}%) "
                f"| {quantile(overruns, 0.5):.1f} / {quantile(overruns, 0.995):.1f} |"
            )
    return rows


def by_part(found: list[Answer]) -> list[str]:
    """Per variant, medians of each part of the prediction against the measured time it stands for."""
    logged = [a for a in found if None not in (a.own_ms, a.decode_predicted_ms, a.spent_ms, a.decode_ms,
                                                  a.queue_ms, a.inference_ms)]
    rows = [
        "| variant | answers | decode: predicted / measured | queue + run: predicted / measured "
        "| other models: predicted / unexplained | in the server before routing | total: predicted / measured |",
        "|---|---|---|---|---|---|---|",
    ]
    per_model: dict[str, list[Answer]] = {}
    for a in logged:
        per_model.setdefault(a.model, []).append(a)
    for model, group in sorted(per_model.items(), key=lambda kv: -len(kv[1])):
        def med(f) -> float:
            return quantile([f(a) for a in group], 0.5)

        rows.append(
            f"| {model} | {len(group)} "
            f"| {med(lambda a: a.decode_predicted_ms):.1f} / {med(lambda a: a.decode_ms):.1f} "
            f"| {med(lambda a: a.own_ms - a.decode_predicted_ms):.1f} / {med(lambda a: a.queue_ms + a.inference_ms):.1f} "
            f"| {med(lambda a: a.predicted_ms - a.own_ms - a.spent_ms):.1f} "
            f"/ {med(lambda a: a.took_ms - a.spent_ms - a.decode_ms - a.queue_ms - a.inference_ms):.1f} "
            f"| {med(lambda a: a.spent_ms):.1f} "
            f"| {med(lambda a: a.predicted_ms):.1f} / {med(lambda a: a.took_ms):.1f} |"
        )
    return rows if len(rows) > 2 else []


def main() -> None:
    found = answers(sys.argv[1])
    if not found:
        return
    late = sum(a.late for a in found)
    print("## How the router's predictions held (the server's log, every level)")
    print()
    print(
        f"{len(found)} auto-routed answers, {late} ({100 * late / len(found):.1f}%) late in the server; "
        "times from the request's head to its answer."
    )
    print()
    print("\n".join(by_prediction(found)))
    print()
    print("\n".join(by_history(found)))
    print()
    print("\n".join(by_routed_meanwhile(found)))
    parts = by_part(found)
    if parts:
        print()
        print("\n".join(parts))


if __name__ == "__main__":
    main()
