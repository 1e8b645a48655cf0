'use strict';
// The tqserver dashboard, its view half: draws the model of data.js (the
// first script of the page; both share the page's global scope) once per
// animation frame, and handles the buttons, filters and detail dialog.
// ---- formatting -----------------------------------------------------------

function pad(n, w) { return String(n).padStart(w || 2, '0'); }
function fmtTime(iso) {
  const d = new Date(iso);
  if (isNaN(d)) return iso || '';
  return pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds()) + '.' + pad(d.getMilliseconds(), 3);
}
function fmtDur(ms) {
  if (!(ms >= 0)) return '–';
  const s = Math.floor(ms / 1000);
  if (s < 60) return s + 's';
  const m = Math.floor(s / 60);
  if (m < 60) return m + 'm ' + pad(s % 60) + 's';
  const h = Math.floor(m / 60);
  if (h < 24) return h + 'h ' + pad(m % 60) + 'm';
  return Math.floor(h / 24) + 'd ' + pad(h % 24) + 'h';
}
function fmtBytes(n) {
  if (n < 1024) return n + ' B';
  if (n < 1 << 20) return (n / 1024).toFixed(1) + ' KiB';
  return (n / (1 << 20)).toFixed(1) + ' MiB';
}
// fmtBinary shows a binary stamp however the status spells it: a string,
// or an object with some of sha256, size, mtime.
function fmtBinary(v) {
  if (v === undefined || v === null || v === '') return '–';
  if (typeof v !== 'object') return String(v);
  const parts = [];
  const sum = v.sha256 || v.sum;
  if (sum) parts.push(String(sum).slice(0, 12));
  if (typeof v.size === 'number') parts.push(fmtBytes(v.size));
  if (v.mtime) parts.push(fmtTime(v.mtime));
  return parts.length ? parts.join(' ') : JSON.stringify(v);
}
function exitText(r) {
  if (r.signal) return r.signal;
  if (r.exit_code !== undefined && r.exit_code !== null) return 'exit ' + r.exit_code;
  return '';
}

// ---- derived per worker -------------------------------------------------

function derive() {
  const d = new Map();
  for (const r of model.records) {
    if (!r.worker) continue;
    let x = d.get(r.worker);
    if (!x) { x = { restarts: 0, last: null, failure: null }; d.set(r.worker, x); }
    const started = r.to === 'starting' && !r.from; // not the spawned record that follows
    if (started && r.reason && r.reason !== 'startup') x.restarts++;
    if (isFailure(r)) x.failure = r;
    if (started || isFailure(r)) x.last = r;
  }
  // What the last reason cell shows and opens: a start caused by a
  // failure (a crash's restart) shows that failure, with its output.
  for (const x of d.values()) {
    x.shown = x.last;
    if (x.last && !isFailure(x.last) && FAIL_REASONS.has(x.last.reason) && x.failure) x.shown = x.failure;
  }
  model.derived = d;
}

// ---- rendering ------------------------------------------------------------

// Rows are grid rows of spans, not table rows: each row is its own layout
// root (CSS contain), so updating a cell or adding a record does not lay
// out every other row again, as a table did (hundreds of ms a poll at
// 200 workers).
const workerRows = new Map(); // name -> {tr, td: {col: span}, button}
let workerOrder = '';
const COLS = ['name', 'route', 'state', 'pids', 'ports', 'uptime', 'binary', 'restarts', 'reason', 'rps', 'p99'];

function setCell(td, text, title, cls) {
  if (td.textContent !== text) td.textContent = text;
  if ((td.title || '') !== (title || '')) td.title = title || '';
  if (cls !== undefined && td.className !== cls) td.className = cls;
}

function newWorkerRow(name) {
  const tr = document.createElement('div');
  tr.className = 'row';
  tr.setAttribute('role', 'row');
  tr.dataset.worker = name;
  const td = {};
  for (const c of COLS) {
    const cell = document.createElement('span');
    cell.setAttribute('role', 'cell');
    cell.dataset.col = c;
    td[c] = cell;
    tr.appendChild(cell);
  }
  td.name.className = 'name';
  const act = document.createElement('span');
  act.dataset.col = 'act';
  const button = document.createElement('button');
  button.type = 'button';
  button.textContent = 'Restart';
  button.className = 'restart';
  button.dataset.worker = name;
  button.title = 'POST /v1/workers/' + name + '/restart: a zero-downtime replacement (reason operator)';
  act.appendChild(button);
  tr.appendChild(act);
  return { tr: tr, td: td, button: button };
}

function renderWorkers() {
  const tbody = $('workers-body');
  const names = Array.from(model.workers.keys()).sort();
  const now = Date.now();
  let instances = 0;
  let anyBinary = false;
  for (const name of names) {
    const w = model.workers.get(name);
    let row = workerRows.get(name);
    if (!row) { row = newWorkerRow(name); workerRows.set(name, row); }
    const insts = Array.from(w.instances.values()).sort((a, b) => a.instance < b.instance ? -1 : 1);
    instances += insts.length;
    const states = new Map();
    let oldestHealthy = Infinity;
    let p99 = null;
    let breakdown = {};
    let binary = w.extra.binary !== undefined ? w.extra.binary : w.extra.binstamp;
    for (const i of insts) {
      states.set(i.state, (states.get(i.state) || 0) + 1);
      if (i.state === 'healthy' && i.since) oldestHealthy = Math.min(oldestHealthy, Date.parse(i.since));
      if (typeof i.p99_ms === 'number') p99 = Math.max(p99 === null ? 0 : p99, i.p99_ms);
      if (i.requests) for (const k in i.requests) breakdown[k] = (breakdown[k] || 0) + i.requests[k];
      if (binary === undefined && i.binary !== undefined) binary = i.binary;
    }
    let stateText = 'down';
    let stateCls = 'st-down';
    if (states.size) {
      stateText = Array.from(states, ([s, n]) => n > 1 ? s + ' ×' + n : s).join(', ');
      stateCls = states.has('healthy') ? 'st-healthy' : 'st-' + insts[0].state;
    }
    const td = row.td;
    setCell(td.name, name, 'show only ' + name + ' in the timeline');
    setCell(td.route, w.route || '');
    setCell(td.state, stateText, insts.map((i) => i.instance + ': ' + i.state + (i.since ? ' since ' + i.since : '')).join('\n'), stateCls);
    setCell(td.pids, insts.map((i) => i.pid || '?').join(' ') || '–', '', 'num');
    setCell(td.ports, insts.map((i) => i.port || '?').join(' ') || '–', '', 'num');
    setCell(td.uptime, oldestHealthy === Infinity ? '–' : fmtDur(now - oldestHealthy));
    if (binary !== undefined && binary !== null && binary !== '') anyBinary = true;
    setCell(td.binary, fmtBinary(binary), binary && typeof binary === 'object' ? JSON.stringify(binary) : '');
    const dv = model.derived.get(name);
    const restarts = typeof w.extra.restarts === 'number' ? w.extra.restarts : (dv ? dv.restarts : 0);
    setCell(td.restarts, String(restarts), '', 'num');
    const last = dv && dv.shown;
    if (last) {
      const bad = isFailure(last);
      setCell(td.reason, (last.reason || last.event) + (exitText(last) ? ' (' + exitText(last) + ')' : ''),
        'record #' + last.seq + ' at ' + last.time + ': click for its detail', 'open-rec ' + (bad ? 'reason-bad' : ''));
      td.reason.dataset.seq = String(last.seq);
    } else {
      const r = insts.length ? insts[insts.length - 1].reason || '' : '';
      setCell(td.reason, r || '–', '', '');
      delete td.reason.dataset.seq;
    }
    const rate = model.rates.get(name);
    setCell(td.rps, rate === undefined ? '–' : rate.toFixed(rate < 10 ? 1 : 0),
      Object.keys(breakdown).length ? Object.keys(breakdown).sort().map((k) => k + ': ' + breakdown[k]).join('  ') : '', 'num');
    setCell(td.p99, p99 === null ? '–' : (p99 < 10 ? p99.toFixed(2) : p99.toFixed(0)) + ' ms', '', 'num');
  }
  for (const [name, row] of workerRows) {
    if (!model.workers.has(name)) { row.tr.remove(); workerRows.delete(name); }
  }
  const order = names.join('\n');
  if (order !== workerOrder) {
    const frag = document.createDocumentFragment();
    for (const name of names) frag.appendChild(workerRows.get(name).tr);
    tbody.appendChild(frag);
    workerOrder = order;
  }
  // The binary stamp is shown only when the status carries one.
  $('workers').classList.toggle('no-binary', !anyBinary);
  $('workers-count').textContent = names.length + ' workers, ' + instances + ' instances';
}

function renderServer() {
  const st = model.status;
  const run = $('srv-running');
  if (model.statusFailed) {
    run.textContent = 'unreachable';
    run.title = model.statusFailed;
    run.className = 'st-down';
  } else if (st) {
    run.textContent = st.running ? 'running' : 'not running';
    run.title = '';
    run.className = st.running ? 'st-healthy' : 'st-down';
    $('srv-pid').textContent = st.pid || '–';
    $('srv-mode').textContent = st.mode || '–';
    $('srv-listen').textContent = st.listen || '–';
    // The stream may be ahead of the last poll.
    const n = model.records.length;
    const seq = Math.max(st.last_seq || 0, n ? model.records[n - 1].seq : 0);
    $('srv-seq').textContent = String(seq);
    $('srv-workers').textContent = String((st.workers || []).length);
  }
}

function matches(r) {
  const fw = $('f-worker').value;
  const fr = $('f-reason').value;
  if (fw && r.worker !== fw) return false;
  if (fr && r.reason !== fr) return false;
  if ($('f-failures').checked && !isFailure(r)) return false;
  return true;
}

function timelineRow(r, isFresh) {
  const tr = document.createElement('div');
  tr.setAttribute('role', 'row');
  tr.dataset.seq = String(r.seq);
  if (r.worker) tr.dataset.worker = r.worker;
  if (r.reason) tr.dataset.reason = r.reason;
  tr.dataset.event = r.event || '';
  const failure = isFailure(r);
  tr.className = 'row' + (failure ? ' failure' : '') + (isFresh ? ' fresh' : '');
  const cells = [
    fmtTime(r.time), String(r.seq), r.worker || '', r.instance || '',
    r.to ? (r.from || '∅') + ' → ' + r.to : '', r.event || '', r.reason || '',
    r.pid ? String(r.pid) : '', r.port ? String(r.port) : '', exitText(r),
    r.detail ? 'detail ›' : '',
  ];
  cells.forEach((text, i) => {
    const td = document.createElement('span');
    td.setAttribute('role', 'cell');
    td.textContent = text;
    if (i === 0) td.title = r.time || '';
    if (i === 1 || i === 7 || i === 8) td.className = 'num';
    if (i === 10) td.className = 'muted';
    tr.appendChild(td);
  });
  if (r.detail) tr.title = r.detail.split('\n')[0].slice(0, 200);
  return tr;
}

function renderTimeline() {
  const tbody = $('timeline-body');
  if (dirty.rebuild) {
    const frag = document.createDocumentFragment();
    let n = 0;
    for (let i = model.records.length - 1; i >= 0 && n < CAP; i--) {
      const r = model.records[i];
      if (!matches(r)) continue;
      frag.appendChild(timelineRow(r, false));
      n++;
    }
    tbody.replaceChildren(frag);
  } else if (fresh.length) {
    const frag = document.createDocumentFragment();
    for (let i = fresh.length - 1; i >= 0; i--) {
      if (matches(fresh[i])) frag.appendChild(timelineRow(fresh[i], !!fresh[i].fresh));
    }
    tbody.insertBefore(frag, tbody.firstChild);
    while (tbody.childElementCount > CAP) tbody.lastElementChild.remove();
  }
  fresh = [];
  $('timeline-count').textContent = tbody.childElementCount + ' shown of ' + model.records.length + ' loaded';
}

function fillSelect(sel, values) {
  const keep = sel.value;
  const opts = [new Option('all', '')];
  for (const v of Array.from(values).sort()) opts.push(new Option(v, v));
  sel.replaceChildren(...opts);
  sel.value = keep;
}

function render() {
  frame = 0;
  if (dirty.derive) { derive(); dirty.derive = false; }
  if (dirty.filters) {
    fillSelect($('f-worker'), model.workerNames);
    fillSelect($('f-reason'), model.reasons);
    dirty.filters = false;
  }
  if (dirty.server) { renderServer(); dirty.server = false; }
  if (dirty.workers) { renderWorkers(); dirty.workers = false; }
  if (dirty.timeline || dirty.rebuild) { renderTimeline(); dirty.timeline = dirty.rebuild = false; }
}

// ---- detail ---------------------------------------------------------------

function openDetail(r) {
  $('detail-title').textContent = 'record #' + r.seq + ' · ' + (r.event || '') + (r.worker ? ' · ' + r.worker : '');
  const dl = $('detail-fields');
  const rows = [
    ['time', r.time], ['worker', r.worker], ['instance', r.instance], ['route', r.route],
    ['transition', r.to ? (r.from || '∅') + ' → ' + r.to : ''], ['event', r.event], ['reason', r.reason],
    ['pid', r.pid], ['port', r.port], ['exit code', r.exit_code], ['signal', r.signal],
  ];
  const frag = document.createDocumentFragment();
  for (const [k, v] of rows) {
    if (v === undefined || v === null || v === '') continue;
    const dt = document.createElement('dt');
    dt.textContent = k;
    const dd = document.createElement('dd');
    dd.textContent = String(v);
    dd.dataset.field = k;
    frag.append(dt, dd);
  }
  dl.replaceChildren(frag);
  $('detail-output-title').textContent = isFailure(r) ? 'detail (output tail / error)' : 'detail';
  $('detail-output').textContent = r.detail || '(this record has no detail)';
  const d = $('detail');
  if (!d.open) d.showModal();
}

// ---- notices and actions ----------------------------------------------------

function notice(text, bad) {
  const box = $('notices');
  const p = document.createElement('p');
  p.className = 'notice' + (bad ? ' bad' : '');
  p.textContent = text;
  p.title = 'click to dismiss';
  box.prepend(p);
  while (box.children.length > 3) box.lastElementChild.remove();
}

function describe(what, res) {
  const parts = [];
  if (res.changes && res.changes.length) parts.push(res.changes.join('; '));
  if (res.failures && res.failures.length) parts.push('failed: ' + res.failures.join('; '));
  if (res.error) parts.push('error: ' + res.error);
  return what + ': ' + (parts.length ? parts.join('\n') : 'nothing to do');
}

async function act(button, what, path) {
  button.disabled = true;
  try {
    const res = await api(path, { method: 'POST' });
    const text = await res.text();
    let v = {};
    try { v = JSON.parse(text); } catch (e) { v = { changes: text.trim() ? [text.trim()] : [] }; }
    notice(describe(what, v), !!(v.error || (v.failures && v.failures.length)));
  } catch (e) {
    notice(what + ': ' + e.message, true);
  } finally {
    button.disabled = false;
  }
}

$('reload').addEventListener('click', (e) => act(e.currentTarget, 'reload', 'v1/reload'));
$('workers-body').addEventListener('click', (e) => {
  const b = e.target.closest('button.restart');
  if (b) {
    act(b, 'restart ' + b.dataset.worker, 'v1/workers/' + encodeURIComponent(b.dataset.worker) + '/restart');
    return;
  }
  const td = e.target.closest('[data-col]');
  if (!td) return;
  if (td.dataset.seq) {
    const r = model.bySeq.get(Number(td.dataset.seq));
    if (r) openDetail(r);
  } else if (td.dataset.col === 'name') {
    $('f-worker').value = td.textContent;
    dirty.rebuild = true;
    schedule();
  }
});
$('timeline-body').addEventListener('click', (e) => {
  const tr = e.target.closest('.row');
  const r = tr && model.bySeq.get(Number(tr.dataset.seq));
  if (r) openDetail(r);
});
for (const id of ['f-worker', 'f-reason', 'f-failures']) {
  $(id).addEventListener('change', () => { dirty.rebuild = true; schedule(); });
}
$('notices').addEventListener('click', (e) => {
  if (e.target.classList.contains('notice')) e.target.remove();
});
$('detail').addEventListener('click', (e) => {
  if (e.target === $('detail')) $('detail').close(); // a click on the backdrop
});

pollStatus();
const initial = loadHistory().catch((e) => notice('history: ' + e.message, true));
stream(initial);
