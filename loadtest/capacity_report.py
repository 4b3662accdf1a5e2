"""Markdown report and plot of one `loadtest/capacity.sh` run: per task and protocol, the knee (the highest offered
rate whose run held k6's thresholds) and what gave way after it; capacity.png draws p99 and throughput against the
offered rate.

Usage: capacity_report.py RESULTS_DIR  (reads RESULTS_DIR/<task>-<protocol>-<rate>.summary.json)"""
import collections
import json
import pathlib
import sys


def runs(results):
    """{(task, protocol): [summary, ...] by offered rate}."""
    by = collections.defaultdict(list)
    for path in results.glob('*.summary.json'):
        s = json.loads(path.read_text())
        by[(s['task'], s['protocol'])].append(s)
    return {k: sorted(v, key=lambda s: s['target_rate']) for k, v in sorted(by.items())}


def why(s):
    lat, limit = s['latency_ms'], s['thresholds']
    reasons = []
    if (s['error_rate'] or 0) >= limit['max_error_rate']:
        reasons.append(f"errors {100 * (s['error_rate'] or 0):.1f}% (refused {100 * (s['shed_rate'] or 0):.1f}%)")
    if (lat['p99'] or 0) >= limit['p99_ms']:
        reasons.append(f"p99 {lat['p99']:.0f} ms over {limit['p99_ms']:.0f}")
    if (lat['p95'] or 0) >= limit['p95_ms']:
        reasons.append(f"p95 {lat['p95']:.0f} ms over {limit['p95_ms']:.0f}")
    return ', '.join(reasons) or 'thresholds crossed'


def table(by):
    print('| task | protocol | knee req/s | throughput at the knee img/s | p99 at the knee ms | next step | what gave way |')
    print('|---|---|---|---|---|---|---|')
    for (task, protocol), steps in by.items():
        held = [s for s in steps if s['thresholds_ok']]
        failed = [s for s in steps if not s['thresholds_ok']]
        knee = held[-1] if held else None
        nxt = failed[0] if failed else None
        at_knee = ([knee['target_rate'], f"{knee['throughput_per_s']:.1f}", f"{knee['latency_ms']['p99']:.0f}"]
                   if knee else ['-', '-', '-'])
        after = [nxt['target_rate'], why(nxt)] if nxt else ['-', 'never (MAX_STEPS reached)']
        print('| ' + ' | '.join(str(c) for c in [task, protocol, *at_knee, *after]) + ' |')


def plot(by, out):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    tasks = sorted({task for task, _ in by})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        right = ax.twinx()
        for i, ((t, protocol), steps) in enumerate(by.items()):
            if t != task:
                continue
            rates = [s['target_rate'] for s in steps]
            ax.plot(rates, [s['latency_ms']['p99'] for s in steps], 'o-', color=f'C{i}', label=f'{protocol} p99')
            right.plot(rates, [s['throughput_per_s'] for s in steps], 's--', color=f'C{i}', alpha=0.5,
                       label=f'{protocol} img/s')
        ax.set_title(task)
        ax.set_xlabel('offered req/s')
        ax.set_ylabel('p99 latency (ms)')
        right.set_ylabel('answered img/s')
        ax.legend(loc='upper left', fontsize=7)
        right.legend(loc='lower right', fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main(results):
    by = runs(results)
    table(by)
    try:
        plot(by, results / 'capacity.png')
        print('\n![latency and throughput against the offered rate](capacity.png)')
    except ImportError:
        print('\n(no plot: matplotlib is missing; `make loadtest` installs it from bench/requirements.txt)')


if __name__ == '__main__':
    main(pathlib.Path(sys.argv[1]))
