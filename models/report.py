"""The markdown tables printed by `prepare.py --report`: measured size/cost beside the paper, and verification results.

Owns: presentation only. Every number in the "measured" columns comes from config.json attributes (counted from the
ONNX graph by graph_stats.py) or from the verification records prepare.py wrote; paper figures come from the manifest."""


def _m(x, unit):
    return "" if x is None else (f"{x / 1e9:.2f}B" if unit == "B" else f"{x / 1e6:.2f}M")


def size_table(variants: list[dict], configs: dict) -> str:
    rows = ["| variant | width | res | precision | params (measured) | MAdds (measured) | paper params | paper MAdds "
            "| paper source | why they differ |", "|---|---|---|---|---|---|---|---|---|---|"]
    for v in variants:
        cfg = configs.get(v["name"])
        if cfg is None:
            rows.append(f"| {v['name']} | | | | not built | | | | | |")
            continue
        a, p = cfg["attributes"], v.get("paper", {})
        unit = "B" if a["multiply_adds"] >= 1e9 or (p.get("madds") or 0) >= 1e9 else "M"
        rows.append(f"| {v['name']} | {a['width']} | {a['resolution']} | {a['precision']} | {_m(a['parameters'], 'M')} "
                    f"| {_m(a['multiply_adds'], unit)} | {_m(p.get('params'), 'M')} | {_m(p.get('madds'), unit)} "
                    f"| {p.get('table', '-')} | {p.get('note', '')} |")
    return "\n".join(rows)


def verification_table(records: dict) -> str:
    rows = ["| variant | check | result | detail |", "|---|---|---|---|"]
    for name, checks in records.items():
        for c in checks:
            status = "info" if not c["fatal"] else ("pass" if c["ok"] else "FAIL")
            rows.append(f"| {name} | {c['check']} | {status} | {c['detail']} |")
    return "\n".join(rows)
