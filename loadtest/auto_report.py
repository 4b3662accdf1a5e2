"""Markdown report of one `loadtest/auto.sh` run: per load level, the flagship named and model=auto side by side,
then the issue's goals computed from the same rows.

Usage: auto_report.py RESULTS_DIR FLAGSHIP CHEAPEST_CAPACITY  (reads RESULTS_DIR/<level>-<model>.summary.json, and
<level>to<next>-<model>.summary.json for the ramps between levels; CHEAPEST_CAPACITY is the req/s the ladder's
cheapest variant served, up to which the late-answer goal holds)"""
import json
import math
import pathlib
import sys


def row(s):
    """The figures of one run: goodput and the shares of requests answered in time, late, refused, failed."""
    requests = s['requests'] or 0
    ok = s['ok_images']
    refused = (s['shed_rate'] or 0) * requests
    failed = (s['error_rate'] or 0) * requests - refused
    share = (lambda n: n / requests) if requests else (lambda n: 0.0)
    return {
        'offered': s['target_rate'], 'requests': requests, 'goodput': s['within_budget'] / s['duration_s'],
        'in_time': share(s['within_budget']), 'late': share(ok - s['within_budget']), 'refused': share(refused),
        'failed': share(failed), 'served': {m: n / ok for m, n in s['served'].items() if ok and n},
        'served_counts': s['served'],
        'dropped': s['dropped_iterations'],
        'late_in_server': share(s.get('late_in_server', 0)),
        'outside': s.get('outside_server_ms') or {},
        'late_phases': s.get('late_phases_median_ms') or {},
        'late_predicted': s.get('late_predicted_median_ms'),
        'late_by_model': {m: (n, n / s['served'][m]) for m, n in (s.get('late_in_server_by_model') or {}).items()
                          if n and s['served'].get(m)},
    }


def pct(v):
    return f'{100 * v:.1f}%'


def ms(v):
    return '-' if v is None else f'{v:.1f}'


def segment_key(name):
    """(level, the next level for a ramp between two, else None) from a summary's segment name: `2`, `1to2`;
    None for anything else (the capacity runs, a levels run's whole-run summary)."""
    low, _, high = name.partition('to')
    try:
        return float(low), float(high) if high else None
    except ValueError:
        return None


def in_order(run):
    """Sort key of a (level, next level or None, mode) run: by level, a ramp after the level it leaves (None
    before a number would not compare: -1 stands for "no ramp")."""
    (level, to, mode), _ = run
    return level, -1 if to is None else to, mode


def main(results, flagship, cheapest):
    runs = {}
    for path in results.glob('*.summary.json'):
        name, _, model = path.name[: -len('.summary.json')].partition('-')
        key = segment_key(name)
        if model and key:
            runs[(*key, 'auto' if model == 'auto' else 'fixed')] = row(json.loads(path.read_text()))
    print('| load (x capacity) | offered req/s | model | goodput /s | in budget | late | of which late in the server '
          '| late in the server: median decode / queue / inference ms '
          '| outside the server p50 / p99 ms | refused | failed | k6 dropped | served by |')
    print('|---|---|---|---|---|---|---|---|---|---|---|---|---|')
    for (level, to, mode), r in sorted(runs.items(), key=in_order):
        load = f'{level:g}' if to is None else f'ramp {level:g} to {to:g}'
        served = ', '.join(f'{m} {pct(v)}' for m, v in sorted(r['served'].items(), key=lambda kv: -kv[1]))
        print(f"| {load} | {r['offered']:.1f} | {flagship if mode == 'fixed' else 'auto'} | {r['goodput']:.1f} "
              f"| {pct(r['in_time'])} | {pct(r['late'])} | {pct(r['late_in_server'])} "
              f"| {' / '.join(ms(r['late_phases'].get(p)) for p in ('decode', 'queue', 'inference'))} "
              f"| {ms(r['outside'].get('p50'))} / "
              f"{ms(r['outside'].get('p99'))} | {pct(r['refused'])} | {pct(r['failed'])} "
              f"| {'-' if r['dropped'] is None else r['dropped']} | {served or '-'} |")
    # A levels run counts the requests k6 could not start (no client free) for the whole run only.
    wholes = {m: results / f'run-{m}.summary.json' for m in (flagship, 'auto')}
    dropped = [f"{json.loads(p.read_text())['dropped_iterations']} ({m})" for m, p in wholes.items() if p.exists()]
    if dropped:
        print(f"\nk6 dropped, over each whole run (ramps included): {', '.join(dropped)}.")
    levels = sorted({level for level, to, _ in runs if to is None})
    if not levels:
        return
    print()
    top = levels[-1]
    fixed, auto = runs.get((top, None, 'fixed')), runs.get((top, None, 'auto'))
    if fixed and auto:
        if fixed['goodput'] > 0:
            gain, shown = auto['goodput'] / fixed['goodput'], f"{auto['goodput'] / fixed['goodput']:.2f}x"
        else:  # the flagship answered nothing in time: any goodput is infinitely more
            gain, shown = (math.inf if auto['goodput'] > 0 else 0.0), 'none in time for the flagship'
        print(f"- goodput at {top:g}x: auto {auto['goodput']:.1f}/s against {fixed['goodput']:.1f}/s, "
              f"{shown} (goal 1.5x): {'met' if gain >= 1.5 else 'NOT met'}")
    low = runs.get((levels[0], None, 'auto'))
    if low:
        share = low['served'].get(flagship, 0.0)
        others = sum(n for m, n in low['served_counts'].items() if m != flagship)
        print(f"- at {levels[0]:g}x, auto served {pct(share)} of its answers with {flagship}, {others} with another "
              f"variant (goal: every one with the flagship): {'met' if others == 0 else 'NOT met'}")
    for (level, to, mode), auto in sorted(runs.items(), key=in_order):
        if mode != 'auto':
            continue
        # A ramp is judged by the rate it ends at.
        peak = auto['offered'] if to is None else runs.get((to, None, 'auto'), auto)['offered']
        load = f'{level:g}x' if to is None else f'the ramp from {level:g}x to {to:g}x'
        verdict = ('met' if auto['late'] <= 0.01 else 'NOT met') if peak <= cheapest else \
            f"not judged: {peak:.0f} req/s is over the cheapest variant's {cheapest:.0f}"
        print(f"- auto's answers over budget at {load}: {pct(auto['late'])} (goal at most 1% while the load is "
              f"within the cheapest variant's capacity): {verdict}")
        if auto['late_predicted'] is not None:
            print(f"  - what the router predicted for them (margin included), median: {ms(auto['late_predicted'])} ms")
        if auto['late_by_model']:
            print(f"  - late in the server, by variant (count, share of its answers): "
                  + ', '.join(f'{m} {n} ({pct(v)})'
                              for m, (n, v) in sorted(auto['late_by_model'].items(), key=lambda kv: -kv[1][0])))


if __name__ == '__main__':
    main(pathlib.Path(sys.argv[1]), sys.argv[2], float(sys.argv[3]))
