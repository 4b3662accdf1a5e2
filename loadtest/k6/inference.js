// k6 load test of one mobilenet-serve task over one protocol.
//
// Everything is chosen by environment variables, so the runner (../run.sh) can sweep tasks x protocols:
//   TASK      classify | detect | segment                      (classify)
//   PROTOCOL  http | grpc                                      (http)
//   SCENARIO  constant | ramping | spike | saturate | levels   (constant; saturate: VUS closed-loop clients)
//   LEVEL_RATES, LEVEL_NAMES   the levels scenario: requests/s of each level and its name, space-separated; each
//             level is held DURATION s, with a linear ramp of RAMP s (5) to the next; SUMMARY_FILE then names one
//             file per level and ramp, with `{level}` in it replaced by the level's name (`0.5`, `0.5to1`)
//   RATE      target requests/s (peak of ramping, base of spike); default per task, see RATES
//   DURATION  seconds of the constant scenario, scales the others (15)
//   IMAGES    comma-separated JPEG paths, sent in turn         (required)
//   MODEL     variant name, or auto; empty lets the server route to the task's default
//   BUDGET_MS latency budget: sent with MODEL=auto, and answers within it are counted (goodput)
//   VARIANTS  comma-separated variant names whose share of the answers the summary reports
//   VUS       closed-loop clients of the saturate scenario    (8)
//   API       native | oip: our API, or the Open Inference Protocol (docs/oip.md; needs MODEL)   (native)
//   OIP_FORM  binary | json: over HTTP, the image as Triton binary data or as base64 JSON      (binary)
//   HTTP_URL  (http://127.0.0.1:8080)   GRPC_ADDR (127.0.0.1:50051): any host; the defaults are this machine
//   P95_MS, P99_MS, MAX_ERROR_RATE    thresholds; defaults per task, see LIMITS
//   SUMMARY_FILE   where handleSummary writes the JSON summary (summary.json)
import http from 'k6/http';
import grpc from 'k6/net/grpc';
import encoding from 'k6/encoding';
import { check } from 'k6';
import exec from 'k6/execution';
import { Rate, Counter, Trend } from 'k6/metrics';

const TASK = __ENV.TASK || 'classify';
const PROTOCOL = __ENV.PROTOCOL || 'http';
const SCENARIO = __ENV.SCENARIO || 'constant';
const HTTP_URL = __ENV.HTTP_URL || 'http://127.0.0.1:8080';
const GRPC_ADDR = __ENV.GRPC_ADDR || '127.0.0.1:50051';
const MODEL = __ENV.MODEL || '';
const DURATION = parseInt(__ENV.DURATION || '15', 10);
const BUDGET_MS = __ENV.BUDGET_MS ? parseFloat(__ENV.BUDGET_MS) : null;
const VARIANTS = (__ENV.VARIANTS || '').split(',').filter((v) => v);
const VUS = parseInt(__ENV.VUS || '8', 10);
const API = __ENV.API || 'native';
const OIP_FORM = __ENV.OIP_FORM || 'binary';
if (API !== 'native' && API !== 'oip') throw new Error(`API must be native or oip, not ${API}`);
if (OIP_FORM !== 'binary' && OIP_FORM !== 'json') throw new Error(`OIP_FORM must be binary or json, not ${OIP_FORM}`);
if (API === 'oip' && (!MODEL || MODEL === 'auto')) throw new Error('API=oip needs MODEL, a variant name');

// Defaults sized for the 2-core reference machine: below saturation for the default variant of each task, so a
// constant-rate run measures latency rather than queueing. Raise RATE to find the knee.
const RATES = { classify: 20, detect: 8, segment: 2 };
const LIMITS = {
  classify: { p95: 300, p99: 600 },
  detect: { p95: 600, p99: 1200 },
  segment: { p95: 3000, p99: 5000 },
};
if (!(TASK in RATES)) throw new Error(`TASK must be classify, detect or segment, not ${TASK}`);
if (PROTOCOL !== 'http' && PROTOCOL !== 'grpc') throw new Error(`PROTOCOL must be http or grpc, not ${PROTOCOL}`);
const RATE = parseFloat(__ENV.RATE || RATES[TASK]);
const RAMP = parseInt(__ENV.RAMP || '5', 10);
// The levels scenario's segments in order: each level held DURATION s, then a ramp of RAMP s to the next.
const SEGMENTS = SCENARIO === 'levels' ? levelSegments() : [];

function levelSegments() {
  const rates = (__ENV.LEVEL_RATES || '').split(' ').filter((v) => v).map(parseFloat);
  const names = (__ENV.LEVEL_NAMES || '').split(' ').filter((v) => v);
  if (!rates.length || rates.length !== names.length || rates.some((r) => !(r > 0))) {
    throw new Error('SCENARIO=levels needs LEVEL_RATES and LEVEL_NAMES, as many of each, rates above 0');
  }
  const segments = [];
  rates.forEach((rate, i) => {
    segments.push({ name: names[i], rate, seconds: DURATION });
    if (i + 1 < rates.length) {
      segments.push({ name: `${names[i]}to${names[i + 1]}`, rate: (rate + rates[i + 1]) / 2, seconds: RAMP, to: rates[i + 1] });
    }
  });
  return segments;
}

// The segment of the levels scenario an iteration starting now belongs to (the last one past its end).
function currentSegment() {
  let elapsed = (Date.now() - exec.scenario.startTime) / 1000;
  for (const segment of SEGMENTS) {
    if (elapsed < segment.seconds) return segment.name;
    elapsed -= segment.seconds;
  }
  return SEGMENTS[SEGMENTS.length - 1].name;
}
// A spike quadruples the offered rate within 2 s and k6 itself then needs more of the same 2 CPUs, so requests
// queue while it lasts: its latency limits are twice the steady ones, to catch a server that stalls, not one
// that queues.
const SPIKE_SLACK = SCENARIO === 'spike' ? 2 : 1;
const P95 = parseFloat(__ENV.P95_MS || LIMITS[TASK].p95 * SPIKE_SLACK);
const P99 = parseFloat(__ENV.P99_MS || LIMITS[TASK].p99 * SPIKE_SLACK);
// Shedding under a spike is the server doing its job (429 / RESOURCE_EXHAUSTED), so spikes allow more errors.
const MAX_ERROR_RATE = parseFloat(__ENV.MAX_ERROR_RATE || (SCENARIO === 'spike' ? '0.10' : '0.01'));

if (!__ENV.IMAGES) throw new Error('IMAGES must list at least one JPEG (comma-separated paths)');
const IMAGES = __ENV.IMAGES.split(',').map((path) => {
  const bytes = open(path, 'b');
  const b64 = encoding.b64encode(bytes);
  return { name: path.split('/').pop(), bytes, b64, oip: API === 'oip' ? oipBody(bytes, b64) : null };
});

// An OIP inference request for one image, made once per image: the JSON form (base64), or the JSON header and
// the binary tensor after it (a 4-byte little-endian length and the bytes), with the header's length.
function oipBody(bytes, b64) {
  const input = { name: 'image', shape: [1], datatype: 'BYTES' };
  if (OIP_FORM === 'json') return { body: JSON.stringify({ inputs: [{ ...input, data: [b64] }] }), headerLength: null };
  const n = bytes.byteLength;
  const header = JSON.stringify({ inputs: [{ ...input, parameters: { binary_data_size: n + 4 } }] });
  const out = new Uint8Array(header.length + 4 + n);
  for (let i = 0; i < header.length; i++) out[i] = header.charCodeAt(i); // the header is ASCII
  new DataView(out.buffer).setUint32(header.length, n, true);
  out.set(new Uint8Array(bytes), header.length + 4);
  return { body: out.buffer, headerLength: header.length };
}

const errors = new Rate('inference_errors');
// Requests started: k6's own `iterations` counts the finished ones.
const offered = new Counter('offered');
const shed = new Rate('inference_shed');
const images = new Counter('images');
// Answers within BUDGET_MS (client-side time), and answers by the variant that served them.
const withinBudget = new Counter('within_budget');
const served = new Counter('served');
// Where a late answer lost its time: answers the server itself took longer than BUDGET_MS over (its
// `timings.total_ms`), and the client's time minus the server's (the connection, the client's own CPU).
const lateInServer = new Counter('late_in_server');
const outsideServer = new Trend('outside_server_ms');
// Where the answers late in the server spent their time, by the server's own phase timings.
const LATE_PHASES = ['decode', 'queue', 'inference'];
const latePhase = Object.fromEntries(LATE_PHASES.map((p) => [p, new Trend(`late_${p}_ms`)]));
// What the router predicted for those answers (model=auto), margin included: how far off it was.
const latePredicted = new Trend('late_predicted_ms');

// gRPC: the proto is read from the repository (no reflection round trip per VU).
const grpcClient = new grpc.Client();
if (PROTOCOL === 'grpc') {
  grpcClient.load(['../../proto/proto'], API === 'oip' ? 'inference/grpc_service.proto' : 'mobilenet/v1/inference.proto');
}

function scenario() {
  // Arrival-rate executors keep offering load when the server slows down (an open model), which is what exposes
  // queueing; a VU pool sized for ~4 s of latency at the peak rate bounds the client's own memory.
  const peak = SCENARIO === 'spike' ? RATE * 4 : RATE;
  const vus = Math.max(4, Math.ceil(peak * 4));
  const base = { preAllocatedVUs: Math.min(vus, 50), maxVUs: vus, timeUnit: '1s', gracefulStop: '5s' };
  const d = DURATION;
  switch (SCENARIO) {
    case 'constant':
      return { executor: 'constant-arrival-rate', rate: RATE, duration: `${d}s`, ...base };
    case 'ramping':
      return {
        executor: 'ramping-arrival-rate',
        startRate: 1,
        stages: [
          { target: RATE, duration: `${Math.ceil(d / 2)}s` },
          { target: RATE, duration: `${Math.ceil(d / 2)}s` },
          { target: 1, duration: `${Math.ceil(d / 4)}s` },
        ],
        ...base,
      };
    case 'saturate':
      return { executor: 'constant-vus', vus: VUS, duration: `${d}s`, gracefulStop: '5s' };
    case 'spike':
      return {
        executor: 'ramping-arrival-rate',
        startRate: RATE,
        stages: [
          { target: RATE, duration: `${Math.ceil(d / 3)}s` },
          { target: RATE * 4, duration: '2s' },
          { target: RATE * 4, duration: `${Math.ceil(d / 3)}s` },
          { target: RATE, duration: '2s' },
          { target: RATE, duration: `${Math.ceil(d / 3)}s` },
        ],
        ...base,
      };
    case 'levels': {
      // One run through every level, so that the server's learned state carries from one level to the next as
      // it would under a load that rises (a fresh k6 run per level starts each from nothing, docs/auto.md).
      const top = Math.max(...SEGMENTS.map((s) => s.rate));
      const pool = Math.max(4, Math.ceil(top * 4));
      return {
        executor: 'ramping-arrival-rate',
        startRate: SEGMENTS[0].rate,
        stages: SEGMENTS.map((s) => ({ target: s.to || s.rate, duration: `${s.seconds}s` })),
        preAllocatedVUs: Math.min(pool, 50), maxVUs: pool, timeUnit: '1s', gracefulStop: '5s',
      };
    }
    default:
      throw new Error(`SCENARIO must be constant, ramping, spike, saturate or levels, not ${SCENARIO}`);
  }
}

const latency = PROTOCOL === 'http' ? 'http_req_duration' : 'grpc_req_duration';

// A metric's name with tags selecting a sub-metric: `served{model:m,level:2}`.
function tagged(metric, ...tags) {
  const t = tags.filter((x) => x);
  return t.length ? `${metric}{${t.join(',')}}` : metric;
}

// Thresholds that always hold, so that k6 keeps the sub-metrics the summary reads for one segment (`level:2`;
// '' for the whole run, whose own metrics k6 keeps anyway).
function segmentThresholds(segment) {
  const perModel = VARIANTS.flatMap((v) => ['served', 'late_in_server'].map((m) => [tagged(m, `model:${v}`, segment), ['count>=0']]));
  if (!segment) return perModel;
  const counters = ['offered', 'images', 'within_budget', 'late_in_server'].map((m) => [tagged(m, segment), ['count>=0']]);
  const rates = ['inference_errors', 'inference_shed'].map((m) => [tagged(m, segment), ['rate>=0']]);
  const trends = [latency, 'outside_server_ms', 'late_predicted_ms', ...LATE_PHASES.map((p) => `late_${p}_ms`)]
    .map((m) => [tagged(m, segment), ['max>=0']]);
  return [...perModel, ...counters, ...rates, ...trends];
}

export const options = {
  scenarios: { [SCENARIO]: scenario() },
  thresholds: {
    [latency]: [`p(95)<${P95}`, `p(99)<${P99}`],
    inference_errors: [`rate<${MAX_ERROR_RATE}`],
    // k6 reports a tagged sub-metric only when a threshold names it: one that always holds, per variant, and
    // per segment of the levels scenario.
    ...Object.fromEntries(['', ...SEGMENTS.map((s) => `level:${s.name}`)].flatMap(segmentThresholds)),
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max', 'count'],
};

// Counts one answer: who served it, whether it came within the budget, and how much of its time the server
// accounts for.
// `timings` is the answer's phase timings in milliseconds (`total`, `decode`, ...), when it has them;
// `predicted` the router's prediction plus margin in milliseconds, for model=auto.
function answered(model, started, timings, predicted) {
  const took = Date.now() - started;
  served.add(1, { model });
  const serverMs = timings ? timings.total : undefined;
  if (typeof serverMs === 'number') outsideServer.add(Math.max(0, took - serverMs));
  if (BUDGET_MS === null) return;
  if (took <= BUDGET_MS) withinBudget.add(1);
  if (typeof serverMs === 'number' && serverMs > BUDGET_MS) {
    lateInServer.add(1, { model });
    for (const p of LATE_PHASES) if (typeof timings[p] === 'number') latePhase[p].add(timings[p]);
    if (typeof predicted === 'number') latePredicted.add(predicted);
  }
}

// The phase timings of an answer, from the native JSON (`decode_ms`) or gRPC's JSON form (`decodeMs`).
function phaseTimings(t) {
  if (!t) return undefined;
  const pick = (name) => t[`${name}_ms`] !== undefined ? t[`${name}_ms`] : t[`${name}Ms`];
  return Object.fromEntries(['total', ...LATE_PHASES].map((p) => [p, pick(p)]));
}

// OIP over HTTP: the answer is JSON (no output is asked for in binary form).
function oipHttpCall(image) {
  const headers = { 'content-type': image.oip.headerLength === null ? 'application/json' : 'application/octet-stream' };
  if (image.oip.headerLength !== null) headers['inference-header-content-length'] = String(image.oip.headerLength);
  const started = Date.now();
  const res = http.post(`${HTTP_URL}/v2/models/${MODEL}/infer`, image.oip.body, { headers, tags: { task: TASK } });
  const ok = check(res, {
    'status 200': (r) => r.status === 200,
    'names its model': (r) => r.status !== 200 || (r.json('model_name') || '') !== '',
  });
  shed.add(res.status === 429 || res.status === 503);
  if (ok) answered(res.json('model_name'), started);
  return ok;
}

function httpCall(image) {
  if (API === 'oip') return oipHttpCall(image);
  const params = new URLSearchParamsLite();
  if (MODEL) params.add('model', MODEL);
  if (MODEL === 'auto' && BUDGET_MS !== null) params.add('latency_budget_ms', BUDGET_MS);
  if (TASK === 'segment') params.add('format', 'json');
  const body = { image: http.file(image.bytes, image.name, 'image/jpeg') };
  const started = Date.now();
  const res = http.post(`${HTTP_URL}/v1/${TASK}${params.toString()}`, body, { tags: { task: TASK } });
  const ok = check(res, {
    'status 200': (r) => r.status === 200,
    'names its model': (r) => r.status !== 200 || (r.json('model') || '') !== '',
  });
  shed.add(res.status === 429 || res.status === 503);
  if (ok) {
    const auto = res.json('auto');
    const predicted = auto && typeof auto.predicted_ms === 'number' ? auto.predicted_ms + auto.margin_ms : undefined;
    answered(res.json('model'), started, phaseTimings(res.json('timings')), predicted);
  }
  return ok;
}

const METHODS = { classify: 'Classify', detect: 'Detect', segment: 'Segment' };

// Each VU has its own JS runtime, so this is per VU: connect on its first iteration, then keep the connection.
let connected = false;

function grpcCall(image) {
  if (!connected) {
    grpcClient.connect(GRPC_ADDR, { plaintext: true, timeout: '5s', maxReceiveSize: 64 << 20 });
    connected = true;
  }
  if (API === 'oip') return oipGrpcCall(image);
  const request = { image: image.b64 };
  if (MODEL) request.model = { model: MODEL };
  if (MODEL === 'auto' && BUDGET_MS !== null) request.model.latency_budget_ms = BUDGET_MS;
  const started = Date.now();
  const res = grpcClient.invoke(`mobilenet.v1.Inference/${METHODS[TASK]}`, request, { tags: { task: TASK } });
  const ok = check(res, {
    'status OK': (r) => r && r.status === grpc.StatusOK,
    'names its model': (r) => !r || r.status !== grpc.StatusOK || (r.message && r.message.model !== ''),
  });
  shed.add(!!res && (res.status === grpc.StatusResourceExhausted || res.status === grpc.StatusUnavailable));
  if (ok) {
    const auto = res.message.auto;
    const predicted = auto && typeof auto.predictedMs === 'number' ? auto.predictedMs + auto.marginMs : undefined;
    answered(res.message.model, started, phaseTimings(res.message.timings), predicted);
  }
  return ok;
}

// OIP over gRPC: the image in the input's bytes_contents (base64 in k6's JSON form of bytes fields).
function oipGrpcCall(image) {
  const request = {
    model_name: MODEL,
    inputs: [{ name: 'image', datatype: 'BYTES', shape: [1], contents: { bytes_contents: [image.b64] } }],
  };
  const started = Date.now();
  const res = grpcClient.invoke('inference.GRPCInferenceService/ModelInfer', request, { tags: { task: TASK } });
  const ok = check(res, {
    'status OK': (r) => r && r.status === grpc.StatusOK,
    'names its model': (r) => !r || r.status !== grpc.StatusOK || (r.message && r.message.modelName !== ''),
  });
  shed.add(!!res && (res.status === grpc.StatusResourceExhausted || res.status === grpc.StatusUnavailable));
  if (ok) answered(res.message.modelName, started);
  return ok;
}

// k6 has no URLSearchParams without a remote jslib; the runner targets 127.0.0.1 with no internet.
class URLSearchParamsLite {
  constructor() { this.pairs = []; }
  add(k, v) { this.pairs.push(`${encodeURIComponent(k)}=${encodeURIComponent(v)}`); }
  toString() { return this.pairs.length ? `?${this.pairs.join('&')}` : ''; }
}

export default function () {
  // Every metric this iteration emits carries its segment of the levels scenario.
  if (SEGMENTS.length) exec.vu.metrics.tags.level = currentSegment();
  offered.add(1);
  const image = IMAGES[(__VU + __ITER) % IMAGES.length];
  let ok = false;
  try {
    ok = PROTOCOL === 'http' ? httpCall(image) : grpcCall(image);
  } catch (e) {
    // k6's gRPC client throws on connection failures; count them as errors and reconnect next time.
    connected = false;
    console.error(`${TASK}/${PROTOCOL}: ${e}`);
  }
  errors.add(!ok);
  if (ok) images.add(1);
}

function metricValue(data, name, stat) {
  const m = data.metrics[name];
  return m && m.values && stat in m.values ? m.values[stat] : null;
}

// The figures of the whole run (`segment` '') or of one segment of the levels scenario (`level:2`), for the
// runner's markdown report.
function summarize(data, segment, seconds, rate) {
  const value = (name, stat, ...tags) => metricValue(data, tagged(name, ...tags, segment), stat);
  const ok = value('images', 'count') || 0;
  const late = value('late_in_server', 'count') || 0;
  return {
    task: TASK,
    protocol: PROTOCOL,
    scenario: SCENARIO,
    segment: segment ? segment.slice('level:'.length) : null,
    model: MODEL || '(default)',
    api: API === 'oip' && PROTOCOL === 'http' ? `oip-${OIP_FORM}` : API,
    target_rate: rate,
    duration_s: seconds,
    requests: value('offered', 'count') || 0,
    ok_images: ok,
    throughput_per_s: ok / seconds,
    error_rate: value('inference_errors', 'rate'),
    shed_rate: value('inference_shed', 'rate'),
    // k6 counts the iterations it could not start (no free VU) for the whole run only.
    dropped_iterations: segment ? null : metricValue(data, 'dropped_iterations', 'count') || 0,
    latency_ms: {
      p50: value(latency, 'med'),
      p95: value(latency, 'p(95)'),
      p99: value(latency, 'p(99)'),
      max: value(latency, 'max'),
    },
    thresholds: { p95_ms: P95, p99_ms: P99, max_error_rate: MAX_ERROR_RATE },
    budget_ms: BUDGET_MS,
    within_budget: value('within_budget', 'count') || 0,
    late_in_server: late,
    outside_server_ms: { p50: value('outside_server_ms', 'med'), p99: value('outside_server_ms', 'p(99)') },
    // An empty sub-metric reports 0, not nothing.
    late_phases_median_ms: Object.fromEntries(LATE_PHASES.map((p) => [p, late ? value(`late_${p}_ms`, 'med') : null])),
    late_predicted_median_ms: late ? value('late_predicted_ms', 'med') : null,
    served: Object.fromEntries(VARIANTS.map((v) => [v, value('served', 'count', `model:${v}`) || 0])),
    late_in_server_by_model: Object.fromEntries(VARIANTS.map((v) =>
      [v, value('late_in_server', 'count', `model:${v}`) || 0])),
    thresholds_ok: Object.values(data.metrics).every((m) => !m.thresholds ||
      Object.values(m.thresholds).every((t) => t.ok)),
  };
}

// The JSON summary feeds the runner's markdown report; stdout gets the few figures a person reads first. The
// levels scenario writes one file per segment besides the whole run's (`{level}` in SUMMARY_FILE: `run`).
export function handleSummary(data) {
  const seconds = data.state.testRunDurationMs / 1000;
  const file = __ENV.SUMMARY_FILE || 'summary.json';
  const summary = { ...summarize(data, '', seconds, RATE), k6: data.metrics };
  const out = { [file.replace('{level}', 'run')]: JSON.stringify(summary, null, 2) };
  for (const s of SEGMENTS) {
    out[file.replace('{level}', s.name)] = JSON.stringify(summarize(data, `level:${s.name}`, s.seconds, s.rate), null, 2);
  }
  const f = (v) => (v === null || v === undefined ? '-' : v.toFixed(1));
  out.stdout = `${TASK}/${PROTOCOL}/${SCENARIO}: ${f(summary.throughput_per_s)} img/s, p50 ${f(summary.latency_ms.p50)}` +
    ` p95 ${f(summary.latency_ms.p95)} p99 ${f(summary.latency_ms.p99)} ms, errors ${f((summary.error_rate || 0) * 100)}%` +
    `, thresholds ${summary.thresholds_ok ? 'passed' : 'FAILED'}\n`;
  return out;
}
