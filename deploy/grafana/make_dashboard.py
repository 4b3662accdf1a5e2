"""Writes dashboards/mobilenet-serve.json, the Grafana dashboard provisioned by docker compose (profile
monitoring). Edit the panels here and rerun (`python deploy/grafana/make_dashboard.py`); scripts/deploy-check.sh
fails when the JSON is stale or names a metric that server/src/metrics.rs does not define.

Metrics (server/src/metrics.rs): mobilenet_requests_total, mobilenet_request_duration_seconds,
mobilenet_phase_duration_seconds, mobilenet_batch_size, mobilenet_queue_depth, mobilenet_rejected_total,
mobilenet_dropped_total, mobilenet_model_info."""
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards" / "mobilenet-serve.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'model=~"$model"'
RI = "$__rate_interval"


def panel(pid, title, targets, unit, x, y, w=12, h=8, description="", stack=False):
    return {
        "id": pid,
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "custom": {"lineWidth": 1, "fillOpacity": 10, "stacking": {"mode": "normal" if stack else "none"}},
            },
            "overrides": [],
        },
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max"]},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": [{"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend}
                    for i, (expr, legend) in enumerate(targets)],
    }


def quantile(q):
    return (f"histogram_quantile({q}, sum by (model, le) "
            f"(rate(mobilenet_request_duration_seconds_bucket{{{SEL}}}[{RI}])))", "{{model}}")


def dashboard():
    panels = [
        panel(1, "Request rate by model", [
            (f"sum by (model) (rate(mobilenet_requests_total{{{SEL}}}[{RI}]))", "{{model}}"),
        ], "reqps", 0, 0, description="Finished inference requests per second, HTTP and gRPC together."),
        panel(2, "Errors by model and outcome", [
            (f'sum by (model, outcome) (rate(mobilenet_requests_total{{{SEL}, outcome!="ok"}}[{RI}]))',
             "{{model}} {{outcome}}"),
        ], "reqps", 12, 0, description="Requests that did not succeed, by error kind."),
        panel(3, "Latency p50 by model", [quantile(0.5)], "s", 0, 8,
              description="Median end-to-end time inside the server (decode, queue, inference, postprocess)."),
        panel(4, "Latency p99 by model", [quantile(0.99)], "s", 12, 8,
              description="99th percentile end-to-end time inside the server."),
        panel(5, "Queue depth by model", [
            (f"sum by (model) (mobilenet_queue_depth{{{SEL}}})", "{{model}}"),
        ], "short", 0, 16, description="Requests waiting in each model's batcher; the HPA scales on its mean."),
        panel(6, "Batch size by model (mean and p90)", [
            (f"sum by (model) (rate(mobilenet_batch_size_sum{{{SEL}}}[{RI}])) / "
             f"sum by (model) (rate(mobilenet_batch_size_count{{{SEL}}}[{RI}]))", "{{model}} mean"),
            (f"histogram_quantile(0.9, sum by (model, le) (rate(mobilenet_batch_size_bucket{{{SEL}}}[{RI}])))",
             "{{model}} p90"),
        ], "short", 12, 16, description="Requests per ONNX Runtime run; above 1 only under concurrent load."),
        panel(7, "Rejections and drops", [
            (f"sum by (model, reason) (rate(mobilenet_rejected_total{{{SEL}}}[{RI}]))", "rejected {{model}} {{reason}}"),
            (f"sum by (model, reason) (rate(mobilenet_dropped_total{{{SEL}}}[{RI}]))", "dropped {{model}} {{reason}}"),
        ], "reqps", 0, 24, description="Refused at admission (429 / RESOURCE_EXHAUSTED: queue full, draining) "
                                       "and dropped after admission (client gone, deadline passed)."),
        panel(8, "Time per phase, p50", [
            (f"histogram_quantile(0.5, sum by (phase, le) "
             f"(rate(mobilenet_phase_duration_seconds_bucket{{{SEL}}}[{RI}])))", "{{phase}}"),
        ], "s", 12, 24, stack=True, description="Where a median request spends its time."),
    ]
    return {
        "uid": "mobilenet-serve",
        "title": "mobilenet-serve",
        "tags": ["mobilenet-serve"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source",
             "current": {"text": "Prometheus", "value": "prometheus"}},
            {"name": "model", "type": "query", "label": "Model", "datasource": DS,
             "query": {"query": "label_values(mobilenet_model_info, model)", "refId": "model"},
             "definition": "label_values(mobilenet_model_info, model)",
             "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2,
             "current": {"text": "All", "value": "$__all"}},
        ]},
        "annotations": {"list": []},
        "panels": panels,
    }


def render():
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        if not OUT.exists() or OUT.read_text() != render():
            sys.exit(f"{OUT} is stale: run python {Path(__file__).relative_to(Path.cwd())}")
        print(f"{OUT.name} is up to date")
    else:
        OUT.write_text(render())
        print(f"wrote {OUT}")
