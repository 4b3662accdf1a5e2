"""Markdown report of one `loadtest/oip.sh` run: each form's throughput (median of its rounds, and the range) and
its ratio to the native API over the same protocol, round by round, with the issue's goal.

Usage: oip_report.py RESULTS_DIR  (reads RESULTS_DIR/<form>.<round>.summary.json)"""
import json
import pathlib
import statistics
import sys

NATIVE = {'http': 'native-http', 'grpc': 'native-grpc'}
GOAL = 0.90  # binary HTTP and gRPC at least 90% of the native API's throughput


def main(results):
    runs = {}
    for path in results.glob('*.summary.json'):
        form, round_, _ = path.name.split('.', 2)
        s = json.loads(path.read_text())
        runs.setdefault(form, {})[int(round_)] = (s['throughput_per_s'], s['error_rate'] or 0.0)
    print('| form | img/s, median (range) | errors | over the native API, same protocol, median (range) | goal |')
    print('|---|---|---|---|---|')
    for form in ['native-http', 'oip-binary-http', 'oip-json-http', 'native-grpc', 'oip-grpc']:
        if form not in runs:
            continue
        rounds = runs[form]
        rates = [r for r, _ in rounds.values()]
        errors = max(e for _, e in rounds.values())
        native = runs.get(NATIVE[form.rsplit('-', 1)[1]], {})
        ratios = [rounds[k][0] / native[k][0] for k in rounds if k in native and native[k][0] > 0]
        ratio = '-' if form.startswith('native') or not ratios else \
            f'{statistics.median(ratios):.3f} ({min(ratios):.3f}–{max(ratios):.3f})'
        goal = ''
        if form in ('oip-binary-http', 'oip-grpc') and ratios:
            goal = f"≥ {GOAL:.2f}: {'met' if statistics.median(ratios) >= GOAL else 'NOT met'}"
        print(f'| {form} | {statistics.median(rates):.1f} ({min(rates):.1f}–{max(rates):.1f}) | '
              f'{100 * errors:.1f}% | {ratio} | {goal} |')


if __name__ == '__main__':
    main(pathlib.Path(sys.argv[1]))
