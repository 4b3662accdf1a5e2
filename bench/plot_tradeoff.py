"""The trade-off plot of `make tradeoff`: quality against a lone request's latency, each point labelled with its
variant and multiply-adds (the paper's Figure 5, on this machine's CPU).

Published accuracies and the agreements with the task's default that `make models` measured are different scales,
so they get separate panels: one per task for the published figures, and one per task that has measured variants,
where the default stands at 100% agreement with itself. Variants with no quality figure are in the table only.

Usage: plot_tradeoff.py TRADEOFF_JSON PNG_OUT"""
import json
import sys

import matplotlib

matplotlib.use("Agg")  # no display: write the file only
import matplotlib.pyplot as plt  # noqa: E402

TASKS = ("classification", "detection", "segmentation")


def panels(variants):
    """(title, y label, [(variant, y)]) per panel."""
    out = []
    for task in TASKS:
        rated = [v for v in variants if v["task"] == task and v.get("quality")]
        published = [v for v in rated if not v["quality"]["source"].startswith("measured")]
        measured = [v for v in rated if v["quality"]["source"].startswith("measured")]
        if published:
            metric = " / ".join(sorted({v["quality"]["metric"] for v in published}))
            out.append((f"{task}: published", metric, [(v, v["quality"]["value"]) for v in published]))
        if measured:
            default = published[0] if published else None  # the ladder's head: the task's default
            points = [(v, v["quality"]["value"]) for v in measured]
            if default:
                points.append((default, 100.0))
            out.append((f"{task}: agreement with the default", "top-1 agreement on the reference images (%)", points))
    return out


def main(source, out):
    doc = json.load(open(source))
    chosen = panels(doc["variants"])
    fig, axes = plt.subplots(1, len(chosen), figsize=(5 * len(chosen), 4.8), squeeze=False)
    for ax, (title, ylabel, points) in zip(axes[0], chosen):
        for i, (v, y) in enumerate(points):
            ax.scatter(v["request_ms"], y, s=60, color="C0")
            ax.annotate(f"{v['name']}\n{v['multiply_adds'] / 1e6:.0f}M MAdds", (v["request_ms"], y),
                        textcoords="offset points", xytext=(6, -10 if i % 2 else 2), fontsize=7)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("one request in-process, decoding included (ms, median)", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.margins(x=0.35, y=0.15)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Quality against latency, {doc['machine']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"plot: {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
