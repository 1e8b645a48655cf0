'use strict';
// The tqserver dashboard, its data half: the admin API of this origin
// (CONTRACT.md §9) into one model. One GET v1/status every 2 s for all
// workers, the history once, and v1/events for every new record (resumed
// after a disconnect from the last seq held, so the server replays the
// gap). view.js, the second script of the page, draws the model at most
// once per animation frame (schedule) and starts the loops at its end.
const TOKEN_KEY = 'tqserver.admin_token';
const CAP = 2000; // records kept, and timeline rows shown
const STATUS_EVERY_MS = 2000; // never more often than this
const RETRY_MAX_MS = 10000;
const FAIL_REASONS = new Set(['crashed', 'rollback', 'health_failed', 'checksum_mismatch']);
const FAIL_EVENTS = new Set(['build_failed', 'binary_rejected', 'config_rejected', 'ports_exhausted']);
const $ = (id) => document.getElementById(id);

let token = sessionStorage.getItem(TOKEN_KEY) || '';
let tokenWaiters = [];

const model = {
  status: null, // the last v1/status answer
  statusAt: 0, // performance.now() of that answer
  statusFailed: '', // why the last poll failed
  workers: new Map(), // name -> {name, route, extra, instances: Map(instance -> fields)}
  prevCounts: new Map(), // instance -> requests total at statusAt
  rates: new Map(), // worker -> requests per second (absent: unknown)
  records: [], // oldest first, at most CAP
  bySeq: new Map(), // seq -> record
  derived: new Map(), // worker -> {restarts, last, failure, shown}
  workerNames: new Set(),
  reasons: new Set(),
};
const dirty = { server: false, workers: false, timeline: false, rebuild: false, derive: false, filters: false };
let fresh = []; // records appended since the last render, oldest first
let frame = 0;
let live = false;

function schedule() {
  if (!frame) frame = requestAnimationFrame(render);
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- the API ------------------------------------------------------------

function needToken(msg) {
  $('auth-msg').textContent = msg;
  $('auth').hidden = false;
  $('auth-token').focus();
  return new Promise((resolve) => tokenWaiters.push(resolve));
}

$('auth').addEventListener('submit', (e) => {
  e.preventDefault();
  const v = $('auth-token').value.trim();
  if (!v) return;
  token = v;
  sessionStorage.setItem(TOKEN_KEY, v);
  $('auth-token').value = '';
  $('auth').hidden = true;
  const w = tokenWaiters;
  tokenWaiters = [];
  w.forEach((resolve) => resolve());
});

// api fetches path (relative to the page, so a proxy prefix keeps
// working) with the bearer token when one is known; on 401 it asks for
// the token and tries again. A non-2xx answer throws its first line.
async function api(path, init) {
  init = init || {};
  for (;;) {
    const used = token;
    const headers = new Headers(init.headers || {});
    if (used) headers.set('Authorization', 'Bearer ' + used);
    const res = await fetch(path, Object.assign({}, init, { headers: headers, cache: 'no-store' }));
    if (res.status === 401) {
      // Another request may have got a new token meanwhile.
      if (token === used) {
        await needToken(used
          ? 'The server refused this token. Admin token:'
          : 'This server needs its admin token (server.admin_token or TQ_ADMIN_TOKEN):');
      }
      continue;
    }
    if (!res.ok) {
      const body = (await res.text()).trim().split('\n')[0];
      const what = body.startsWith(String(res.status)) ? body : (res.status + ' ' + body).trim();
      throw new Error((init.method || 'GET') + ' /' + path + ': ' + what);
    }
    return res;
  }
}

// ---- records ------------------------------------------------------------

function isFailure(r) {
  return (FAIL_REASONS.has(r.reason) && r.to === 'stopped') || FAIL_EVENTS.has(r.event) ||
    (r.to === 'stopped' && (r.exit_code !== undefined || r.signal !== undefined) && r.reason !== 'replaced' && r.reason !== 'shutdown');
}

// addRecords merges records into the model; live ones (from the stream)
// flash when they appear.
function addRecords(recs, fromStream) {
  for (const r of recs) {
    if (!r || typeof r.seq !== 'number' || model.bySeq.has(r.seq)) continue;
    model.bySeq.set(r.seq, r);
    const n = model.records.length;
    if (n === 0 || r.seq > model.records[n - 1].seq) {
      model.records.push(r);
      if (fromStream) r.fresh = true;
      fresh.push(r);
    } else {
      // An older record (the initial history arriving after live ones).
      let lo = 0, hi = n;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (model.records[mid].seq < r.seq) lo = mid + 1; else hi = mid;
      }
      model.records.splice(lo, 0, r);
      dirty.rebuild = true;
    }
    if (r.worker && !model.workerNames.has(r.worker)) { model.workerNames.add(r.worker); dirty.filters = true; }
    if (r.reason && !model.reasons.has(r.reason)) { model.reasons.add(r.reason); dirty.filters = true; }
    applyLive(r);
  }
  if (model.records.length > CAP) {
    for (const old of model.records.splice(0, model.records.length - CAP)) model.bySeq.delete(old.seq);
  }
  if (fresh.length > CAP) fresh = fresh.slice(fresh.length - CAP);
  dirty.timeline = dirty.derive = dirty.workers = dirty.server = true;
  schedule();
}

// applyLive moves an instance as a record newer than the last status
// says, so the table follows the stream between two polls.
function applyLive(r) {
  if (!r.worker || !r.instance || !r.to) return;
  if (model.status && r.seq <= (model.status.last_seq || 0)) return;
  let w = model.workers.get(r.worker);
  if (!w) {
    w = { name: r.worker, route: r.route || '', extra: {}, instances: new Map() };
    model.workers.set(r.worker, w);
  }
  if (r.route) w.route = r.route;
  if (r.to === 'stopped') {
    w.instances.delete(r.instance);
    return;
  }
  const cur = w.instances.get(r.instance) || { instance: r.instance };
  cur.state = r.to;
  cur.since = r.time;
  if (r.pid) cur.pid = r.pid;
  if (r.port) cur.port = r.port;
  if (r.reason) cur.reason = r.reason;
  w.instances.set(r.instance, cur);
}

function parseLines(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    let v;
    try { v = JSON.parse(line); } catch (e) { notice('history: a line is not JSON: ' + line.slice(0, 120), true); continue; }
    if (v && v.error !== undefined && v.seq === undefined) { notice('history: ' + v.error, true); continue; }
    out.push(v);
  }
  return out;
}

async function loadHistory() {
  const res = await api('v1/history?limit=' + CAP);
  addRecords(parseLines(await res.text()), false);
}

// stream reads v1/events (text/event-stream) with fetch rather than
// EventSource, which cannot send the Authorization header. Each event's
// id is its record's seq; every (re)connect sends the last seq the page
// holds as Last-Event-ID and the server replays the records after it, so
// nothing between the history and the stream, or during a reconnect, is
// lost. seq numbers drop any overlap.
async function stream(initial) {
  await initial;
  let wait = 500;
  let reported = false;
  for (;;) {
    try {
      const headers = { Accept: 'text/event-stream' };
      const n = model.records.length;
      if (n) headers['Last-Event-ID'] = String(model.records[n - 1].seq);
      const res = await api('v1/events', { headers: headers });
      setLive(true);
      wait = 500;
      reported = false;
      // The first history fetch failed: now that the stream holds every
      // new record, fetch the older ones again.
      if (!n) loadHistory().catch((e) => notice('history: ' + e.message, true));
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      let data = [];
      let type = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          let line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          if (line.endsWith('\r')) line = line.slice(0, -1);
          if (line === '') {
            if (data.length && (type === '' || type === 'message')) onEventData(data.join('\n'));
            data = [];
            type = '';
            continue;
          }
          if (line.startsWith(':')) continue;
          const c = line.indexOf(':');
          const field = c < 0 ? line : line.slice(0, c);
          let v = c < 0 ? '' : line.slice(c + 1);
          if (v.startsWith(' ')) v = v.slice(1);
          if (field === 'data') data.push(v);
          else if (field === 'event') type = v;
        }
      }
    } catch (e) {
      if (!reported) notice('live stream: ' + e.message + ' (retrying)', true);
      reported = true;
    }
    setLive(false);
    await sleep(wait);
    wait = Math.min(wait * 2, RETRY_MAX_MS);
  }
}

function onEventData(text) {
  let r;
  try { r = JSON.parse(text); } catch (e) { return; }
  addRecords([r], true);
}

function setLive(on) {
  live = on;
  const el = $('live');
  el.textContent = on ? 'live' : 'reconnecting…';
  el.className = 'live ' + (on ? 'on' : 'off');
}

// ---- status ---------------------------------------------------------------

function sumRequests(req) {
  if (!req || typeof req !== 'object') return null;
  let n = 0;
  for (const k in req) if (typeof req[k] === 'number') n += req[k];
  return n;
}

async function loadStatus() {
  const st = await (await api('v1/status')).json();
  const now = performance.now();
  const dt = model.statusAt ? (now - model.statusAt) / 1000 : 0;
  const counts = new Map();
  const workers = new Map();
  model.rates = new Map();
  for (const ws of st.workers || []) {
    const instances = new Map();
    let rate;
    for (const inst of ws.instances || []) {
      instances.set(inst.instance, Object.assign({}, inst));
      // requests (by status class) when the proxy's metrics are there;
      // served counts the same requests otherwise.
      let total = sumRequests(inst.requests);
      if (total === null && typeof inst.served === 'number') total = inst.served;
      if (total === null) continue;
      counts.set(inst.instance, total);
      if (!dt) continue;
      // An instance started since the last poll began at zero.
      const prev = model.prevCounts.has(inst.instance) ? model.prevCounts.get(inst.instance) : 0;
      rate = (rate || 0) + Math.max(0, total - prev) / dt;
    }
    const extra = {};
    for (const k in ws) if (k !== 'name' && k !== 'route' && k !== 'instances') extra[k] = ws[k];
    workers.set(ws.name, { name: ws.name, route: ws.route || '', extra: extra, instances: instances });
    if (rate !== undefined) model.rates.set(ws.name, rate);
    if (!model.workerNames.has(ws.name)) { model.workerNames.add(ws.name); dirty.filters = true; }
  }
  model.status = st;
  model.statusAt = now;
  model.prevCounts = counts;
  model.workers = workers;
  model.statusFailed = '';
  // Records the status did not know yet still apply.
  for (const r of model.records) if (r.seq > (st.last_seq || 0)) applyLive(r);
  dirty.server = dirty.workers = true;
  schedule();
}

async function pollStatus() {
  for (;;) {
    const began = performance.now();
    if (!document.hidden) {
      try {
        await loadStatus();
      } catch (e) {
        model.statusFailed = e.message;
        dirty.server = true;
        schedule();
      }
    }
    await sleep(Math.max(0, STATUS_EVERY_MS - (performance.now() - began)));
  }
}
