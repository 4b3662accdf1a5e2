// The page at `/` (server/src/http/ui.rs): pick an image, a task and a variant, run it through the native HTTP API
// and draw the answer: classes as bars, boxes on the image, the mask over it. No framework and no build: the
// server embeds this file as it is.
'use strict';

const $ = (id) => document.getElementById(id);
const ENDPOINT = { classification: 'classify', detection: 'detect', segmentation: 'segment' };
const TASK_ORDER = ['classification', 'detection', 'segmentation'];
const state = { models: [], file: null, mask: null, classes: [] };

// PASCAL VOC's colour map: class i's colour from the bits of i, as the dataset's own masks use.
function vocColor(i) {
  let [r, g, b, c] = [0, 0, 0, i];
  for (let j = 0; j < 8; j++) {
    r |= ((c >> 0) & 1) << (7 - j);
    g |= ((c >> 1) & 1) << (7 - j);
    b |= ((c >> 2) & 1) << (7 - j);
    c >>= 3;
  }
  return [r, g, b];
}

function describe(m) {
  const parts = [m.dataset, `width ${m.width}`, `${m.resolution} px`, m.precision, `${Math.round(m.multiply_adds / 1e6)}M MAdds`].filter(Boolean);
  if (m.quality) parts.push(`${m.quality.metric} ${m.quality.value}`);
  return `${m.name}: ${parts.join(', ')}`;
}

function modelsOf(task) {
  return state.models.filter((m) => m.task === task);
}

// The variant the picker stands for: the one named, else the task's default (also for `auto`).
function pickedModel() {
  const value = $('variant').value;
  const models = modelsOf($('task').value);
  return models.find((m) => m.name === value) || models.find((m) => m.is_default);
}

async function loadModels() {
  const res = await fetch('/v1/models');
  if (!res.ok) return showError(`the model list could not be loaded (HTTP ${res.status})`);
  state.models = (await res.json()).models;
  const tasks = TASK_ORDER.filter((t) => modelsOf(t).length);
  $('task').replaceChildren(...tasks.map((t) => new Option(t, t)));
  fillVariants();
}

function fillVariants() {
  const models = modelsOf($('task').value);
  const options = [];
  const fallback = models.find((m) => m.is_default);
  if (fallback) options.push(new Option(`default (${fallback.name})`, ''));
  if (models.some((m) => m.auto_rank !== null && m.auto_rank !== undefined)) {
    options.push(new Option('auto: the best that fits a latency budget', 'auto'));
  }
  const ranked = [...models].sort((a, b) => (a.auto_rank ?? 99) - (b.auto_rank ?? 99) || a.name.localeCompare(b.name));
  for (const m of ranked) options.push(new Option(describe(m), m.name));
  $('variant').replaceChildren(...options);
  variantChanged();
}

function variantChanged() {
  const value = $('variant').value;
  $('budget-field').hidden = value !== 'auto';
  const model = pickedModel();
  $('variant-info').textContent = value === 'auto'
    ? 'The server picks the most accurate variant it predicts will answer within the budget, under its current load.'
    : model ? [model.description, model.parameters && `${(model.parameters / 1e6).toFixed(1)}M parameters`].filter(Boolean).join('. ') : '';
}

function showError(text) {
  $('error').textContent = text;
  $('error').hidden = false;
}

function clearResult() {
  $('error').hidden = true;
  $('classes').replaceChildren();
  $('legend').replaceChildren();
  $('answer-model').textContent = '';
  $('timings').hidden = true;
  $('opacity-field').hidden = true;
  const overlay = $('overlay');
  overlay.getContext('2d').clearRect(0, 0, overlay.width, overlay.height);
  delete overlay.dataset.boxes;
  delete overlay.dataset.maskPixels;
  state.mask = null;
}

async function setFile(file) {
  if (!file) return;
  state.file = file;
  $('file-name').textContent = file.name;
  clearResult();
  $('comparison').hidden = true;
  const photo = $('photo');
  try {
    const bitmap = await createImageBitmap(file);
    photo.width = bitmap.width;
    photo.height = bitmap.height;
    photo.getContext('2d').drawImage(bitmap, 0, 0);
  } catch {
    // Not something the browser can show: the server will say what is wrong with it.
    photo.width = 0;
    photo.height = 0;
  }
  $('run').disabled = false;
  $('compare').disabled = false;
}

// A bundled sample (embedded in the server): loaded as if the person had picked the file, with the task it
// shows best.
async function useSample(button) {
  const name = button.dataset.sample;
  const res = await fetch(`/ui/samples/${name}`);
  if (!res.ok) return showError(`the sample could not be loaded (HTTP ${res.status})`);
  const file = new File([await res.blob()], name, { type: 'image/jpeg' });
  if (modelsOf(button.dataset.task).length && $('task').value !== button.dataset.task) {
    $('task').value = button.dataset.task;
    fillVariants();
  }
  await setFile(file);
}

function requestUrl(task, variant) {
  const params = new URLSearchParams();
  if (variant) params.set('model', variant);
  if (variant === 'auto') params.set('latency_budget_ms', $('budget').value);
  if (task === 'classification') params.set('top_k', '5');
  const query = params.toString();
  return `/v1/${ENDPOINT[task]}${query ? '?' + query : ''}`;
}

async function infer(task, variant) {
  const body = new FormData();
  body.append('image', state.file, state.file.name);
  const started = performance.now();
  const res = await fetch(requestUrl(task, variant), { method: 'POST', body });
  const roundTrip = performance.now() - started;
  let json = null;
  try {
    json = await res.json();
  } catch {
    // A non-JSON body (a proxy's error page): reported by status alone.
  }
  if (!res.ok) {
    const detail = json && json.error ? `${json.kind}: ${json.error}` : res.statusText;
    throw new Error(`HTTP ${res.status}: ${detail}`);
  }
  return { answer: json, roundTrip };
}

async function run() {
  const task = $('task').value;
  clearResult();
  $('run').disabled = true;
  try {
    const { answer } = await infer(task, $('variant').value);
    render(task, answer);
  } catch (e) {
    showError(e.message);
  } finally {
    $('run').disabled = false;
  }
}

function render(task, answer) {
  const auto = answer.auto ? `, chosen by auto: predicted ${answer.auto.predicted_ms?.toFixed(1)} ms for a ${answer.auto.budget_ms} ms budget` : '';
  $('answer-model').textContent = `Answered by ${answer.model}${auto}.`;
  const rows = ['decode', 'queue', 'inference', 'postprocess', 'total'].map((p) => {
    const tr = document.createElement('tr');
    tr.append(Object.assign(document.createElement('th'), { textContent: p }),
      Object.assign(document.createElement('td'), { textContent: answer.timings[`${p}_ms`].toFixed(2) }));
    return tr;
  });
  $('timings').tBodies[0].replaceChildren(...rows);
  $('timings').hidden = false;
  const overlay = $('overlay');
  overlay.width = answer.image_width;
  overlay.height = answer.image_height;
  if (task === 'classification') renderClasses(answer.classes.map((c) => [c.label, c.score]));
  if (task === 'detection') renderDetections(answer.detections);
  if (task === 'segmentation') renderSegmentation(answer);
}

function renderClasses(items) {
  $('classes').replaceChildren(...items.map(([label, score]) => {
    const li = document.createElement('li');
    const bar = document.createElement('span');
    bar.className = 'bar';
    bar.style.width = `${Math.max(1, score * 100)}%`;
    const track = Object.assign(document.createElement('span'), { className: 'track' });
    track.append(bar);
    li.append(Object.assign(document.createElement('span'), { className: 'label', textContent: label }), track,
      Object.assign(document.createElement('span'), { className: 'score', textContent: `${(score * 100).toFixed(1)}%` }));
    return li;
  }));
}

function renderDetections(detections) {
  const overlay = $('overlay');
  const ctx = overlay.getContext('2d');
  const line = Math.max(2, overlay.width / 300);
  ctx.lineWidth = line;
  ctx.font = `${Math.max(12, overlay.width / 45)}px system-ui, sans-serif`;
  for (const d of detections) {
    const [r, g, b] = vocColor(d.class_index + 1);
    ctx.strokeStyle = `rgb(${r},${g},${b})`;
    ctx.fillStyle = ctx.strokeStyle;
    const { x1, y1, x2, y2 } = d.box;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const text = `${d.label} ${(d.score * 100).toFixed(0)}%`;
    const height = parseInt(ctx.font, 10) + 4;
    ctx.fillRect(x1, Math.max(0, y1 - height), ctx.measureText(text).width + 6, height);
    ctx.fillStyle = '#fff';
    ctx.fillText(text, x1 + 3, Math.max(height - 4, y1 - 4));
  }
  overlay.dataset.boxes = String(detections.length);
  renderClasses(detections.map((d) => [d.label, d.score]));
}

function renderSegmentation(answer) {
  state.mask = answer.mask;
  state.classes = answer.classes;
  drawMask();
  $('opacity-field').hidden = false;
  $('legend').replaceChildren(...answer.classes.map((c) => {
    const [r, g, b] = vocColor(c.index);
    const li = document.createElement('li');
    const swatch = Object.assign(document.createElement('span'), { className: 'swatch' });
    swatch.style.background = `rgb(${r},${g},${b})`;
    li.append(swatch, `${c.label} ${(c.fraction * 100).toFixed(1)}%`);
    return li;
  }));
}

function drawMask() {
  const mask = state.mask;
  if (!mask) return;
  const overlay = $('overlay');
  overlay.width = mask.width;
  overlay.height = mask.height;
  const ctx = overlay.getContext('2d');
  const image = ctx.createImageData(mask.width, mask.height);
  const alpha = Math.round((Number($('opacity').value) / 100) * 255);
  let at = 0;
  let painted = 0;
  for (let i = 0; i < mask.values.length; i++) {
    const value = mask.values[i];
    const [r, g, b] = vocColor(value);
    for (let n = 0; n < mask.lengths[i]; n++, at += 4) {
      if (value === 0) continue; // background stays clear
      image.data[at] = r;
      image.data[at + 1] = g;
      image.data[at + 2] = b;
      image.data[at + 3] = alpha;
      painted++;
    }
  }
  ctx.putImageData(image, 0, 0);
  overlay.dataset.maskPixels = String(painted);
}

function summary(task, answer) {
  if (task === 'classification') {
    const top = answer.classes[0];
    return top ? `${top.label} ${(top.score * 100).toFixed(1)}%` : '-';
  }
  if (task === 'detection') {
    const labels = answer.detections.slice(0, 3).map((d) => d.label).join(', ');
    return `${answer.detections.length} boxes${labels ? ': ' + labels : ''}`;
  }
  const objects = answer.classes.filter((c) => c.index !== 0);
  return objects.length ? objects.map((c) => `${c.label} ${(c.fraction * 100).toFixed(1)}%`).join(', ') : 'background only';
}

async function compare() {
  const task = $('task').value;
  const table = $('comparison');
  const body = table.tBodies[0];
  body.replaceChildren();
  table.hidden = false;
  $('compare').disabled = true;
  // Within one label set: a bird classifier's answer says nothing about an ImageNet one's.
  const dataset = pickedModel()?.dataset;
  const ranked = modelsOf(task).filter((m) => m.dataset === dataset).sort((a, b) => (a.auto_rank ?? 99) - (b.auto_rank ?? 99) || a.name.localeCompare(b.name));
  for (const m of ranked) {
    const tr = document.createElement('tr');
    const cell = (text) => Object.assign(document.createElement('td'), { textContent: text });
    try {
      const { answer, roundTrip } = await infer(task, m.name);
      tr.append(cell(m.name), cell(summary(task, answer)), cell(answer.timings.total_ms.toFixed(1)), cell(roundTrip.toFixed(1)));
    } catch (e) {
      tr.append(cell(m.name), cell(e.message), cell('-'), cell('-'));
    }
    body.append(tr);
  }
  $('compare').disabled = false;
}

// The live panel: the server's own Prometheus counters, read every two seconds and differenced.
let previous = null;
function sumOf(text, name, filter = () => true) {
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name) || !filter(line)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== '{' && rest[0] !== ' ') continue;
    total += Number(line.slice(line.lastIndexOf(' ') + 1)) || 0;
  }
  return total;
}

function buckets(text, name) {
  const byLe = new Map();
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}_bucket{`)) continue;
    const le = /le="([^"]+)"/.exec(line);
    if (!le) continue;
    byLe.set(le[1], (byLe.get(le[1]) || 0) + (Number(line.slice(line.lastIndexOf(' ') + 1)) || 0));
  }
  return byLe;
}

function quantile(delta, q) {
  const entries = [...delta.entries()].map(([le, n]) => [le === '+Inf' ? Infinity : Number(le), n]).sort((a, b) => a[0] - b[0]);
  const total = entries.length ? entries[entries.length - 1][1] : 0;
  if (total <= 0) return null;
  const bound = entries.find(([, n]) => n >= q * total);
  return bound ? bound[0] : null;
}

async function refreshLive() {
  try {
    const text = await (await fetch('/metrics')).text();
    const now = performance.now();
    const current = {
      at: now,
      requests: sumOf(text, 'mobilenet_requests_total'),
      latency: buckets(text, 'mobilenet_request_duration_seconds'),
      batchSum: sumOf(text, 'mobilenet_batch_size_sum'),
      batchCount: sumOf(text, 'mobilenet_batch_size_count'),
    };
    if (previous) {
      const seconds = (now - previous.at) / 1000;
      $('live-rps').textContent = ((current.requests - previous.requests) / seconds).toFixed(1);
      const delta = new Map([...current.latency].map(([le, n]) => [le, n - (previous.latency.get(le) || 0)]));
      const ms = (v) => (v === null ? '-' : v === Infinity ? '>max' : (v * 1000).toFixed(0));
      $('live-latency').textContent = `${ms(quantile(delta, 0.5))} / ${ms(quantile(delta, 0.99))}`;
      const batches = current.batchCount - previous.batchCount;
      $('live-batch').textContent = batches > 0 ? ((current.batchSum - previous.batchSum) / batches).toFixed(2) : '-';
    }
    previous = current;
  } catch {
    // The panel is a convenience: a failed read leaves the last figures.
  }
}

function wire() {
  $('file').addEventListener('change', (e) => setFile(e.target.files[0]));
  for (const button of document.querySelectorAll('#samples button')) {
    button.addEventListener('click', () => useSample(button));
  }
  const drop = $('drop');
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    setFile(e.dataTransfer.files[0]);
  });
  $('task').addEventListener('change', () => { fillVariants(); clearResult(); $('comparison').hidden = true; });
  $('variant').addEventListener('change', variantChanged);
  $('opacity').addEventListener('input', drawMask);
  $('run').addEventListener('click', run);
  $('compare').addEventListener('click', compare);
  loadModels();
  refreshLive();
  setInterval(refreshLive, 2000);
}

wire();
