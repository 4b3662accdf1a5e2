"""Markdown report of one `loadtest/run.sh` run: one row per k6 summary, plus the mean batch size that the
server's /metrics histogram `mobilenet_batch_size` shows for the run (scraped before and after it).

Usage: report.py RESULTS_DIR  (reads RESULTS_DIR/*.summary.json and *.metrics-{before,after}.txt)"""
import json
import pathlib
import re
import sys

LINE = re.compile(r'^mobilenet_batch_size_(sum|count)\{([^}]*)\}\s+([0-9.eE+-]+)$')


def batch_totals(path):
    """{model: [sum, count]} from a Prometheus text scrape; empty when the scrape failed."""
    totals = {}
    if not path.is_file():
        return totals
    for line in path.read_text().splitlines():
        m = LINE.match(line.strip())
        if not m:
            continue
        model = re.search(r'model="([^"]*)"', m.group(2))
        if model:
            slot = totals.setdefault(model.group(1), [0.0, 0.0])
            slot[0 if m.group(1) == 'sum' else 1] += float(m.group(3))
    return totals


def mean_batch(before, after):
    """Requests per batch over the run, across the models that ran batches in it."""
    requests = batches = 0.0
    for model, (s1, c1) in after.items():
        s0, c0 = before.get(model, [0.0, 0.0])
        requests += s1 - s0
        batches += c1 - c0
    return requests / batches if batches > 0 else None


def fmt(v, digits=1):
    return '-' if v is None else f'{v:.{digits}f}'


def main(results):
    rows = []
    for summary_path in sorted(results.glob('*.summary.json')):
        s = json.loads(summary_path.read_text())
        stem = summary_path.name[: -len('.summary.json')]
        mb = mean_batch(batch_totals(results / f'{stem}.metrics-before.txt'),
                        batch_totals(results / f'{stem}.metrics-after.txt'))
        lat = s['latency_ms']
        rows.append(
            f"| {s['task']} | {s['protocol']} | {s['scenario']} | {s['model']} | {fmt(s['target_rate'], 0)} "
            f"| {fmt(s['throughput_per_s'])} | {fmt(lat['p50'])} | {fmt(lat['p95'])} | {fmt(lat['p99'])} "
            f"| {fmt((s['error_rate'] or 0) * 100, 2)}% | {s['dropped_iterations']} | {fmt(mb, 2)} "
            f"| {'pass' if s['thresholds_ok'] else '**FAIL**'} |")
    header = (
        '| task | protocol | scenario | model | offered req/s | throughput img/s | p50 ms | p95 ms | p99 ms '
        '| errors | dropped | mean batch | thresholds |\n'
        '|---|---|---|---|---|---|---|---|---|---|---|---|---|')
    print('\n'.join([header, *rows]))


if __name__ == '__main__':
    main(pathlib.Path(sys.argv[1]))
