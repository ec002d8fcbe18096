// The Concord web UI: one page, hash-routed, talking to the same server's HTTP API.
//
// No framework and no build step: the file is compiled into the server binary as is.
// DOM is built with `el()` (text is always set as text, never parsed as HTML), every
// request goes through `api()` (bearer token, problem+json), and every live view through
// `subscribe()`, which reads Server-Sent Events over fetch() so that it can send the
// Authorization header (EventSource cannot).
'use strict';

const TOKEN_KEY = 'concord.token';
const STREAM_PAGE = 20;
const STREAMS_PAGE = 25;
const TAIL_KEEP = 500;

// ---------------------------------------------------------------------------------------
// DOM helpers

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) {
      continue;
    }
    if (key === 'class') {
      node.className = value;
    } else if (key === 'text') {
      node.textContent = value;
    } else if (key.startsWith('on') && typeof value === 'function') {
      node.addEventListener(key.slice(2), value);
    } else {
      node.setAttribute(key, value === true ? '' : String(value));
    }
  }
  appendAll(node, children);
  return node;
}

function appendAll(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) {
      continue;
    }
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

function pretty(value) {
  return JSON.stringify(value, null, 2);
}

function compact(value) {
  return JSON.stringify(value);
}

function isEmptyObject(value) {
  return value && typeof value === 'object' && !Array.isArray(value) && Object.keys(value).length === 0;
}

function formatTime(iso) {
  if (typeof iso !== 'string') {
    return '';
  }
  return iso.replace('T', ' ').replace(/Z$/, ' UTC');
}

function streamHref(name) {
  return '#/stream/' + encodeURIComponent(name);
}

function streamPath(name) {
  return '/streams/' + encodeURIComponent(name);
}

function uuid() {
  if (window.crypto && typeof crypto.randomUUID === 'function') {
    return crypto.randomUUID();
  }
  // Outside a secure context (plain HTTP to a remote host) randomUUID is absent.
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function delay(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    if (signal) {
      signal.addEventListener('abort', () => {
        clearTimeout(timer);
        resolve();
      }, { once: true });
    }
  });
}

function isAbort(error) {
  return error && error.name === 'AbortError';
}

function splitList(text) {
  return text.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
}

// ---------------------------------------------------------------------------------------
// The API: bearer token, JSON, problem+json

class ApiError extends Error {
  constructor(status, statusText, problem, message) {
    super(message || (problem && problem.detail) || `HTTP ${status} ${statusText}`);
    this.name = 'ApiError';
    this.status = status;
    this.statusText = statusText;
    this.problem = problem && typeof problem === 'object' ? problem : null;
  }

  get kind() {
    const type = this.problem && this.problem.type;
    return typeof type === 'string' ? type.replace(/^urn:concord:/, '') : '';
  }
}

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: 'Bearer ' + token } : {};
}

async function problemOf(response) {
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch (_) {
    body = null;
  }
  return new ApiError(response.status, response.statusText, body);
}

// The server answered 401: ask for a token (once for all requests waiting) and retry.
async function handleUnauthorized(response) {
  const problem = await problemOf(response);
  const hadToken = sessionStorage.getItem(TOKEN_KEY) !== null;
  if (hadToken) {
    sessionStorage.removeItem(TOKEN_KEY);
    updateTokenButton();
  }
  await askToken(hadToken ? 'The stored token was refused: ' + problem.message : problem.message, problem);
}

/**
 * Calls the API. Resolves to {status, json, text, headers} for a 2xx answer; rejects with
 * an ApiError (carrying the problem+json body) otherwise.
 */
async function api(method, path, body, options) {
  const signal = options && options.signal;
  for (;;) {
    const headers = authHeaders();
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
    }
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
        cache: 'no-store',
      });
    } catch (error) {
      if (isAbort(error)) {
        throw error;
      }
      throw new ApiError(0, '', null, 'The server cannot be reached (' + error.message + ').');
    }
    if (response.status === 401) {
      await handleUnauthorized(response);
      continue;
    }
    if (!response.ok) {
      throw await problemOf(response);
    }
    const text = await response.text();
    let json = null;
    if ((response.headers.get('content-type') || '').includes('json') && text) {
      json = JSON.parse(text);
    }
    return { status: response.status, json, text, headers: response.headers };
  }
}

// ---------------------------------------------------------------------------------------
// Token dialog

let tokenPrompt = null;
let tokenSettle = null;

function askToken(reason) {
  if (!tokenPrompt) {
    tokenPrompt = new Promise((resolve, reject) => {
      tokenSettle = { resolve, reject };
      openTokenDialog(reason);
    }).finally(() => {
      tokenPrompt = null;
      tokenSettle = null;
    });
  }
  return tokenPrompt;
}

function openTokenDialog(reason) {
  const dialog = document.getElementById('token-dialog');
  document.getElementById('token-reason').textContent = reason || '';
  document.getElementById('token-input').value = '';
  if (!dialog.open) {
    dialog.showModal();
  }
  document.getElementById('token-input').focus();
}

function updateTokenButton() {
  const button = document.getElementById('token-button');
  const has = sessionStorage.getItem(TOKEN_KEY) !== null;
  button.textContent = has ? 'Token ✓' : 'Token';
  button.title = has ? 'A bearer token is stored for this tab' : 'Enter a bearer token';
}

function setUpTokenDialog() {
  const dialog = document.getElementById('token-dialog');
  const cancel = () => {
    if (dialog.open) {
      dialog.close();
    }
    if (tokenSettle) {
      tokenSettle.reject(new ApiError(401, 'Unauthorized', {
        type: 'urn:concord:unauthorized',
        title: 'Unauthorized',
        status: 401,
        detail: 'This server needs a bearer token; use the Token button to enter one.',
      }));
    }
  };
  document.getElementById('token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const token = document.getElementById('token-input').value.trim();
    if (!token) {
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    updateTokenButton();
    dialog.close();
    if (tokenSettle) {
      tokenSettle.resolve();
    } else {
      route();
    }
  });
  document.getElementById('token-cancel').addEventListener('click', cancel);
  dialog.addEventListener('cancel', (event) => {
    event.preventDefault();
    cancel();
  });
  document.getElementById('token-forget').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    updateTokenButton();
    document.getElementById('token-input').value = '';
  });
  document.getElementById('token-button').addEventListener('click', () => {
    openTokenDialog('Enter the bearer token to use for this tab.');
  });
  updateTokenButton();
}

// ---------------------------------------------------------------------------------------
// Problems, shown as readable messages

const PROBLEM_HINTS = {
  'version-conflict': 'Someone appended to the stream since the version you based your change on.',
  'partial-duplicate': 'Some of these event ids are already in the stream; nothing was written.',
  'invalid-request': 'The request was refused before anything was written.',
  'too-large': 'The request exceeds a server limit; nothing was written.',
  'stream-not-found': 'This stream has no events (never written, or deleted).',
  'stream-deleted': 'This stream is tombstoned: deleted for good. It can never be read, written or recreated.',
  forbidden: 'The token in use does not grant this. Use the Token button to switch tokens.',
  unauthorized: 'The server needs a bearer token.',
  unavailable: 'The server cannot reach its store right now.',
  unsupported: 'The store behind this server does not offer this operation.',
};

function problemBox(error) {
  const box = el('div', { class: 'problem', role: 'alert' });
  if (!(error instanceof ApiError)) {
    box.append(el('strong', { text: 'Something went wrong' }),
      el('p', { text: String((error && error.message) || error) }));
    return box;
  }
  const p = error.problem;
  if (p && typeof p.title === 'string') {
    const kind = error.kind;
    box.append(el('strong', { class: 'problem-title', text: `${p.title} (${p.status || error.status})` }));
    if (p.detail) {
      box.append(el('p', { class: 'problem-detail', text: p.detail }));
    }
    const facts = [];
    if (p.field) {
      facts.push(['Field', p.field]);
    }
    if (p.stream) {
      facts.push(['Stream', p.stream]);
    }
    if (p.max !== undefined) {
      const unit = p.unit ? ' ' + p.unit : '';
      facts.push(['Limit', p.max + unit + (p.size !== undefined ? `, sent ${p.size}${unit}` : '')]);
    }
    if (Array.isArray(p.existing_ids)) {
      facts.push(['Ids already in the stream', p.existing_ids.join(', ')]);
    }
    if (facts.length > 0) {
      box.append(el('dl', { class: 'facts' }, facts.map(([k, v]) => [el('dt', { text: k }), el('dd', { text: v })])));
    }
    if (PROBLEM_HINTS[kind]) {
      box.append(el('p', { class: 'muted small', text: PROBLEM_HINTS[kind] }));
    }
  } else if (error.status === 0) {
    box.append(el('strong', { text: 'No answer' }), el('p', { text: error.message }));
  } else {
    box.append(el('strong', { text: `The server answered ${error.status} ${error.statusText}` }),
      el('p', { text: 'It gave no problem description.' }));
  }
  return box;
}

// ---------------------------------------------------------------------------------------
// Server-Sent Events over fetch()

/**
 * Subscribes to `path` (an SSE endpoint, its query included). Calls `onEvent(event, id)`
 * for each message, `onStatus(state, error)` with 'connecting' | 'live' | 'reconnecting' |
 * 'failed' | 'stopped'. Reconnects with Last-Event-ID after a dropped connection, so no
 * event is missed or repeated. Stops when the page is left or `stop()` is called.
 */
function subscribe(ctx, path, onEvent, onStatus) {
  const controller = new AbortController();
  const status = onStatus || (() => {});
  const handle = {
    lastId: null,
    stopped: false,
    stop() {
      if (!handle.stopped) {
        handle.stopped = true;
        controller.abort();
        status('stopped');
      }
    },
  };
  ctx.cleanups.push(() => handle.stop());

  const dispatch = (frame) => {
    if (frame.data.length === 0) {
      return;
    }
    const text = frame.data.join('\n');
    if (frame.event === 'error') {
      let problem = null;
      try {
        problem = JSON.parse(text);
      } catch (_) {
        problem = null;
      }
      throw new ApiError(problem && problem.status ? problem.status : 500, 'stream error', problem);
    }
    const event = JSON.parse(text);
    if (frame.id !== null) {
      handle.lastId = frame.id;
    }
    onEvent(event, frame.id);
  };

  const readOnce = async () => {
    const headers = Object.assign({ Accept: 'text/event-stream' }, authHeaders());
    if (handle.lastId !== null) {
      headers['Last-Event-ID'] = handle.lastId;
    }
    const response = await fetch(path, { headers, signal: controller.signal, cache: 'no-store' });
    if (response.status === 401) {
      await handleUnauthorized(response);
      return;
    }
    if (!response.ok) {
      throw await problemOf(response);
    }
    status('live');
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    let frame = { id: null, event: null, data: [] };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        return;
      }
      buffer += value;
      let newline;
      while ((newline = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, newline).replace(/\r$/, '');
        buffer = buffer.slice(newline + 1);
        if (line === '') {
          dispatch(frame);
          frame = { id: null, event: null, data: [] };
          continue;
        }
        if (line.startsWith(':')) {
          continue;
        }
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let data = colon < 0 ? '' : line.slice(colon + 1);
        if (data.startsWith(' ')) {
          data = data.slice(1);
        }
        if (field === 'data') {
          frame.data.push(data);
        } else if (field === 'id') {
          frame.id = data;
        } else if (field === 'event') {
          frame.event = data;
        }
      }
    }
  };

  (async () => {
    let pause = 500;
    status('connecting');
    while (!handle.stopped) {
      try {
        await readOnce();
        pause = 500;
      } catch (error) {
        if (handle.stopped || isAbort(error)) {
          return;
        }
        // A refusal (bad filter, no grant, no such route) will not heal by retrying.
        if (error instanceof ApiError && error.status >= 400 && error.status < 500 && error.status !== 408) {
          handle.stopped = true;
          status('failed', error);
          return;
        }
        status('reconnecting', error);
      }
      if (handle.stopped) {
        return;
      }
      status('reconnecting');
      await delay(pause, controller.signal);
      pause = Math.min(pause * 2, 5000);
    }
  })();
  return handle;
}

function liveBadge() {
  const badge = el('span', { class: 'live-badge', text: 'connecting…' });
  const set = (state, error) => {
    badge.dataset.state = state;
    badge.textContent = {
      connecting: 'connecting…',
      live: '● live',
      reconnecting: 'reconnecting…',
      failed: 'stopped: ' + (error ? error.message : 'error'),
      stopped: 'paused',
    }[state] || state;
  };
  return { badge, set };
}

// ---------------------------------------------------------------------------------------
// Events as table rows

function jsonCell(value, emptyText) {
  if (value === undefined || (emptyText && isEmptyObject(value))) {
    return el('td', { class: 'muted' }, emptyText || '');
  }
  return el('td', { class: 'json-cell' }, el('pre', { class: 'json' }, pretty(value)));
}

/** Bytes a data cell shows in hex before it says how many more there are. */
const HEX_BYTES_MAX = 256;

/**
 * An event's data: JSON pretty-printed; the bytes of any other content type (sent as
 * `data_base64`) as their content type, size and a hex dump of the first 256, 16 a line,
 * with the whole base64 text in the cell's title for copying.
 */
function dataCell(event) {
  if (event.data_base64 === undefined) {
    return jsonCell(event.data);
  }
  let binary;
  try {
    binary = atob(event.data_base64);
  } catch (_) {
    return el('td', { class: 'bytes-cell' }, el('div', { class: 'content-type', text: event.content_type + ' · undecodable base64' }));
  }
  const lines = [];
  const shown = Math.min(binary.length, HEX_BYTES_MAX);
  for (let at = 0; at < shown; at += 16) {
    const line = [];
    for (let i = at; i < Math.min(at + 16, shown); i++) {
      line.push(binary.charCodeAt(i).toString(16).padStart(2, '0'));
    }
    lines.push(line.join(' '));
  }
  if (binary.length > shown) {
    lines.push('… ' + (binary.length - shown) + ' more bytes');
  }
  const size = binary.length === 1 ? '1 byte' : binary.length + ' bytes';
  const cell = el('td', { class: 'bytes-cell', title: 'base64: ' + event.data_base64 },
    el('div', { class: 'content-type', text: event.content_type + ' · ' + size }));
  if (lines.length > 0) {
    cell.append(el('pre', { class: 'bytes' }, lines.join('\n')));
  }
  return cell;
}

function eventRow(event, options) {
  const all = options && options.all;
  const row = el('tr', {
    'data-version': event.version,
    'data-position': event.position,
    'data-type': event.type,
    class: options && options.fresh ? 'fresh' : undefined,
  });
  if (all) {
    row.append(
      el('td', { class: 'num' }, event.position),
      el('td', {}, el('a', { href: streamHref(event.stream) }, event.stream)),
      el('td', { class: 'num' }, event.version),
    );
  } else {
    row.append(el('td', { class: 'num' }, event.version));
  }
  const typeCell = el('td', {}, el('span', { class: 'event-type' }, event.type));
  if (Array.isArray(event.tags) && event.tags.length > 0) {
    typeCell.append(el('div', {}, event.tags.map((t) => el('span', { class: 'tag' }, t))));
  }
  row.append(typeCell, dataCell(event));
  row.append(jsonCell(event.metadata, '—'));
  if (!all) {
    row.append(el('td', { class: 'num' }, event.position));
  }
  row.append(el('td', { class: 'time' }, formatTime(event.recorded_at)));
  return row;
}

function eventTable(id, options) {
  const all = options && options.all;
  const heads = all
    ? ['Position', 'Stream', 'Version', 'Type', 'Data', 'Metadata', 'Recorded at']
    : ['Version', 'Type', 'Data', 'Metadata', 'Position', 'Recorded at'];
  const body = el('tbody');
  const numeric = ['Position', 'Version'];
  const table = el('table', { id, class: 'events' },
    el('thead', {}, el('tr', {}, heads.map((h) => el('th', { text: h, class: numeric.includes(h) ? 'num' : undefined })))), body);
  return { table, body };
}

// ---------------------------------------------------------------------------------------
// Pages

/** Overview: counters from /metrics and /head, refreshed every second. */
async function overviewPage(root, ctx) {
  const card = (id, label, hint) => el('div', { class: 'card' },
    el('div', { class: 'card-label', text: label }),
    el('div', { class: 'card-value', id, text: '…' }),
    hint ? el('div', { class: 'card-hint', text: hint }) : null);
  const status = el('p', { class: 'muted small', id: 'ov-updated', text: 'loading…' });
  const problems = el('div');
  const latest = eventTable('ov-latest', { all: true });
  const latestNote = el('p', { class: 'muted', id: 'ov-latest-empty', text: 'No events yet.' });
  root.append(
    el('h1', { text: 'Overview' }),
    el('div', { class: 'cards' },
      card('ov-head', 'Head position', 'the last position in the store'),
      card('ov-streams', 'Streams'),
      card('ov-rate', 'Appends / s', 'append requests, last second'),
      card('ov-conflicts', 'Conflicts', 'appends refused: stale version'),
      card('ov-rebases', 'Rebases', 'appends rebased by the server')),
    el('div', { class: 'cards small-cards' },
      card('ov-appends', 'Append requests'),
      card('ov-events', 'Events appended'),
      card('ov-duplicates', 'Duplicates'),
      card('ov-subscriptions', 'Live subscriptions'),
      card('ov-reads', 'Reads')),
    status, problems,
    scavengePanel(ctx),
    el('h2', { text: 'Latest events' }), latestNote, latest.table);

  const set = (id, value) => {
    const node = document.getElementById(id);
    if (node && node.textContent !== String(value)) {
      node.textContent = String(value);
    }
  };
  let previous = null;
  let countedAt = -1;
  let latestAt = -1;

  const countStreams = async () => {
    let count = 0;
    let after = null;
    for (let page = 0; page < 10; page++) {
      const q = new URLSearchParams({ limit: '1000' });
      if (after !== null) {
        q.set('after', after);
      }
      const r = await api('GET', '/streams?' + q, undefined, { signal: ctx.signal });
      count += r.json.streams.length;
      if (!r.json.next) {
        return String(count);
      }
      after = r.json.next;
    }
    return count + '+';
  };

  const showLatest = async (head) => {
    const from = Math.max(1, head - 9);
    const r = await api('GET', `/all?from=${from}&limit=10`, undefined, { signal: ctx.signal });
    latest.body.replaceChildren(...r.json.events.slice().reverse().map((e) => eventRow(e, { all: true })));
    latestNote.hidden = r.json.events.length > 0;
    latest.table.hidden = r.json.events.length === 0;
  };

  const refresh = async () => {
    const [metrics, head] = await Promise.all([
      api('GET', '/metrics', undefined, { signal: ctx.signal }),
      api('GET', '/head', undefined, { signal: ctx.signal }),
    ]);
    const m = parseMetrics(metrics.text);
    const now = performance.now();
    const appends = m.concord_appends_total || 0;
    set('ov-head', head.json.head);
    set('ov-conflicts', m.concord_conflicts_total || 0);
    set('ov-rebases', m.concord_rebases_total || 0);
    set('ov-appends', appends);
    set('ov-events', m.concord_events_appended_total || 0);
    set('ov-duplicates', m.concord_duplicates_total || 0);
    set('ov-subscriptions', m.concord_subscriptions_active || 0);
    set('ov-reads', m.concord_reads_total || 0);
    set('scavenge-last', describeLastScavenge(m));
    if (previous) {
      const seconds = (now - previous.at) / 1000;
      set('ov-rate', seconds > 0 ? ((appends - previous.appends) / seconds).toFixed(1) : '0.0');
    } else {
      set('ov-rate', '0.0');
    }
    previous = { at: now, appends };
    if (countedAt !== head.json.head) {
      set('ov-streams', await countStreams());
      countedAt = head.json.head;
    }
    if (latestAt !== head.json.head) {
      await showLatest(head.json.head);
      latestAt = head.json.head;
    }
    problems.replaceChildren();
    status.textContent = 'updated live · ' + new Date().toLocaleTimeString();
  };
  await ctx.every(1000, refresh, problems);
}

/**
 * Maintenance: "Scavenge now" (POST /admin/scavenge, which needs `write` on every stream)
 * and what it erased; the last run, on demand or scheduled, comes from /metrics.
 */
function scavengePanel(ctx) {
  const run = el('button', { id: 'scavenge-run', type: 'button', text: 'Scavenge now' });
  const result = el('div', { id: 'scavenge-result', 'aria-live': 'polite' });
  run.addEventListener('click', async () => {
    run.disabled = true;
    result.replaceChildren(el('p', { class: 'muted', text: 'Scavenging…' }));
    try {
      const r = await api('POST', '/admin/scavenge', undefined, { signal: ctx.signal });
      const report = r.json || {};
      const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;
      result.replaceChildren(el('div', { class: 'success', id: 'scavenge-done' },
        el('strong', { text: `Scavenged: ${plural(report.events_removed, 'event')} removed from ${plural(report.streams_scavenged, 'stream')}, ${plural(report.bytes_reclaimed, 'byte')} given back` }),
        el('p', { class: 'muted small', text: 'Bytes given back: how much the embedded store\'s files shrank; Redis reports 0.' })));
    } catch (error) {
      if (!isAbort(error)) {
        result.replaceChildren(problemBox(error));
      }
    } finally {
      run.disabled = false;
    }
  });
  return el('section', { class: 'panel maintenance', id: 'scavenge' },
    el('h2', { text: 'Scavenge' }),
    el('p', { class: 'muted small', text: 'Erases the events of deleted streams and the events retention hides, from the store\'s files. The server also scavenges on its own schedule (concord serve --scavenge-every, hourly by default).' }),
    el('div', { class: 'row' }, run, el('span', { id: 'scavenge-last', class: 'small', text: '…' })),
    result);
}

function describeLastScavenge(m) {
  const runs = m.concord_scavenge_runs_total || 0;
  const failures = m.concord_scavenge_failures_total || 0;
  const last = m.concord_scavenge_last_completed_seconds || 0;
  const failed = failures > 0 ? `, ${failures} failed` : '';
  if (!last) {
    return `No scavenge has completed since the server started${failed}.`;
  }
  const when = formatTime(new Date(last * 1000).toISOString()).replace(/\.\d+ UTC$/, ' UTC');
  return `Last scavenge completed ${when} · ${runs} run${runs === 1 ? '' : 's'} since the server started${failed}, ${m.concord_scavenge_events_removed_total || 0} events removed in all.`;
}

function parseMetrics(text) {
  const values = {};
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line.trim() === '') {
      continue;
    }
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!match) {
      continue;
    }
    const value = Number(match[3]);
    if (!Number.isNaN(value)) {
      values[match[1]] = (values[match[1]] || 0) + value;
    }
  }
  return values;
}

/** Streams: search by prefix, paged by name. */
async function streamsPage(root, ctx, _arg, params) {
  const prefix = el('input', { id: 'streams-prefix', type: 'search', placeholder: 'prefix, e.g. account-', value: params.get('prefix') || '', autocomplete: 'off' });
  const body = el('tbody');
  const table = el('table', { id: 'streams-table', class: 'list' },
    el('thead', {}, el('tr', {}, el('th', { text: 'Stream' }), el('th', { class: 'num', text: 'Version' }), el('th', { class: 'num', text: 'Last position' }))), body);
  const prev = el('button', { id: 'streams-prev', type: 'button', text: '← Previous' });
  const next = el('button', { id: 'streams-next', type: 'button', text: 'Next →' });
  const info = el('span', { class: 'muted small' });
  const problems = el('div');
  const empty = el('p', { class: 'muted', id: 'streams-empty', hidden: true });
  root.append(el('h1', { text: 'Streams' }),
    el('div', { class: 'toolbar' }, el('label', { for: 'streams-prefix', text: 'Name starts with' }), prefix),
    problems, table, empty, el('div', { class: 'pager' }, prev, next, info));

  let pages = [null];
  let nextAfter = null;
  let generation = 0;
  const load = async () => {
    const mine = ++generation;
    const q = new URLSearchParams({ limit: String(STREAMS_PAGE) });
    if (prefix.value) {
      q.set('prefix', prefix.value);
    }
    const after = pages[pages.length - 1];
    if (after !== null) {
      q.set('after', after);
    }
    try {
      const r = await api('GET', '/streams?' + q, undefined, { signal: ctx.signal });
      if (mine !== generation) {
        return;
      }
      problems.replaceChildren();
      const streams = r.json.streams;
      body.replaceChildren(...streams.map((s) => el('tr', { 'data-stream': s.stream },
        el('td', {}, el('a', { href: streamHref(s.stream) }, s.stream)),
        el('td', { class: 'num' }, s.version),
        el('td', { class: 'num' }, s.last_position))));
      nextAfter = r.json.next;
      next.disabled = !nextAfter;
      prev.disabled = pages.length <= 1;
      table.hidden = streams.length === 0;
      empty.hidden = streams.length > 0;
      empty.textContent = prefix.value ? `No stream name starts with “${prefix.value}”${pages.length > 1 ? ' after this page' : ''}.` : 'No streams yet.';
      info.textContent = `page ${pages.length}`;
    } catch (error) {
      if (!isAbort(error) && mine === generation) {
        problems.replaceChildren(problemBox(error));
      }
    }
  };
  let timer = null;
  prefix.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      history.replaceState(null, '', prefix.value ? '#/streams?prefix=' + encodeURIComponent(prefix.value) : '#/streams');
      pages = [null];
      load();
    }, 200);
  });
  ctx.cleanups.push(() => clearTimeout(timer));
  next.addEventListener('click', () => {
    if (nextAfter) {
      pages.push(nextAfter);
      load();
    }
  });
  prev.addEventListener('click', () => {
    if (pages.length > 1) {
      pages.pop();
      load();
    }
  });
  await load();
  prefix.focus();
}

/** One stream: newest events first, paged backwards; new events arrive live. */
async function streamPage(root, ctx, name) {
  if (!name) {
    root.append(el('h1', { text: 'Stream' }), el('p', { text: 'No stream named. Pick one on the Streams page.' }));
    return;
  }
  const live = liveBadge();
  const versionText = el('span', { id: 'stream-version', text: '…' });
  const { table, body } = eventTable('stream-events');
  const empty = el('p', { class: 'muted', id: 'stream-empty', hidden: true, text: 'This stream has no events yet. Waiting for the first one…' });
  const newer = el('button', { id: 'stream-newer', type: 'button', text: '← Newer', disabled: true });
  const older = el('button', { id: 'stream-older', type: 'button', text: 'Older →', disabled: true });
  const fresh = el('button', { id: 'stream-fresh', type: 'button', class: 'notice', hidden: true });
  const problems = el('div');
  const notice = el('div', { id: 'stream-notice', 'aria-live': 'polite' });
  const meta = el('p', { class: 'meta' }, 'version ', versionText, ' · ', live.badge, ' · ',
    el('a', { href: '#/append?stream=' + encodeURIComponent(name), id: 'stream-append' }, 'Append to this stream'));
  const pager = el('div', { class: 'pager' }, newer, older);
  root.append(
    el('h1', {}, el('span', { class: 'muted', text: 'Stream ' }), el('span', { id: 'stream-name', text: name })),
    meta, notice, problems, fresh, empty, table, pager);

  let version = 0;
  let pageStack = [];
  let nextFrom = null;
  let unseen = 0;
  let tombstoned = false;
  let sub = null;
  let lifecycle = null;

  // A tombstoned stream answers 410 to everything: the page says so instead of an error,
  // and offers nothing that would only be refused.
  const showTombstoned = () => {
    tombstoned = true;
    if (sub) {
      sub.stop();
    }
    meta.hidden = true;
    fresh.hidden = true;
    empty.hidden = true;
    table.hidden = true;
    pager.hidden = true;
    problems.replaceChildren();
    if (lifecycle) {
      lifecycle.node.remove();
    }
    root.append(el('div', { class: 'empty-state tombstoned', id: 'stream-tombstoned', role: 'status' },
      el('strong', { text: `Stream ${name} is deleted for good (tombstoned).` }),
      el('p', { text: 'It can never be read, appended to or recreated, and its name cannot be used again. Its events are erased by the next scavenge (Overview → Scavenge now).' }),
      el('p', { class: 'muted small', text: 'The server answers 410 stream-deleted to every request about it.' })));
  };

  const show = async (from) => {
    const q = new URLSearchParams({ direction: 'backward', limit: String(STREAM_PAGE) });
    if (from !== null) {
      q.set('from', String(from));
    }
    try {
      const r = await api('GET', streamPath(name) + '?' + q, undefined, { signal: ctx.signal });
      body.replaceChildren(...r.json.events.map((e) => eventRow(e)));
      nextFrom = r.json.next;
      version = Math.max(version, r.json.version);
      versionText.textContent = version;
      empty.hidden = true;
      table.hidden = false;
    } catch (error) {
      if (error instanceof ApiError && error.kind === 'stream-not-found') {
        body.replaceChildren();
        nextFrom = null;
        versionText.textContent = '0';
        empty.hidden = false;
        table.hidden = true;
      } else if (error instanceof ApiError && error.kind === 'stream-deleted') {
        showTombstoned();
        return;
      } else {
        throw error;
      }
    }
    older.disabled = !nextFrom;
    newer.disabled = pageStack.length === 0;
  };
  const showNewest = () => {
    pageStack = [];
    unseen = 0;
    fresh.hidden = true;
    return show(null).catch((e) => isAbort(e) || problems.replaceChildren(problemBox(e)));
  };

  await show(null);
  if (tombstoned) {
    return;
  }
  older.addEventListener('click', () => {
    pageStack.push(nextFrom);
    show(nextFrom).catch((e) => isAbort(e) || problems.replaceChildren(problemBox(e)));
  });
  newer.addEventListener('click', () => {
    pageStack.pop();
    const from = pageStack.length ? pageStack[pageStack.length - 1] : null;
    show(from).catch((e) => isAbort(e) || problems.replaceChildren(problemBox(e)));
  });
  fresh.addEventListener('click', showNewest);

  lifecycle = streamLifecycle(ctx, name, {
    // What the page shows, not the highest version seen: 0 once a soft delete emptied it.
    shownVersion: () => Number(versionText.textContent) || 0,
    // Retention hides events at once: show what reads now return.
    retentionSaved: showNewest,
    deleted: (mode, at) => {
      if (mode === 'tombstone') {
        showTombstoned();
        return;
      }
      notice.replaceChildren(el('div', { class: 'success', id: 'stream-deleted-notice' },
        el('strong', { text: `Deleted ${name} (soft delete) at version ${at}` }),
        el('p', { text: `Its events no longer read, and the next scavenge erases them. An append to ${name} recreates it at version ${at + 1}, so a writer that saw the old stream still conflicts.` })));
      showNewest();
    },
  });
  meta.after(lifecycle.node);
  lifecycle.load().catch((e) => isAbort(e) || problems.replaceChildren(problemBox(e)));

  sub = subscribe(ctx, `/subscribe/streams/${encodeURIComponent(name)}?from=${version + 1}`, (event) => {
    if (event.version <= version && body.querySelector(`tr[data-version="${event.version}"]`)) {
      return;
    }
    version = Math.max(version, event.version);
    versionText.textContent = version;
    if (pageStack.length === 0) {
      empty.hidden = true;
      table.hidden = false;
      body.prepend(eventRow(event, { fresh: true }));
    } else {
      unseen += 1;
      fresh.hidden = false;
      fresh.textContent = `${unseen} new event${unseen === 1 ? '' : 's'} · show the newest`;
    }
  }, (state, error) => {
    live.set(state, error);
    if (state === 'failed' && error instanceof ApiError && error.kind === 'stream-deleted') {
      showTombstoned();
    } else if (state === 'failed' && error) {
      problems.replaceChildren(problemBox(error));
    }
  });
}

/** The retention settings a stream's metadata may hold, in the order the form shows them. */
const RETENTION_FIELDS = [
  { key: 'max_count', label: 'Keep at most', unit: 'events (the newest)' },
  { key: 'max_age_seconds', label: 'Keep for at most', unit: 'seconds after an event is recorded' },
  { key: 'truncate_before', label: 'Hide versions before', unit: '(a version number)' },
];

function describeDuration(seconds) {
  const units = [[86400, 'day'], [3600, 'hour'], [60, 'minute']];
  for (const [size, unit] of units) {
    if (seconds >= size && seconds % size === 0) {
      const n = seconds / size;
      return `${n} ${unit}${n === 1 ? '' : 's'}`;
    }
  }
  return `${seconds} second${seconds === 1 ? '' : 's'}`;
}

function describeRetention(m) {
  const parts = [];
  if (m.max_count !== undefined) {
    parts.push(`at most ${m.max_count} event${m.max_count === 1 ? '' : 's'}`);
  }
  if (m.max_age_seconds !== undefined) {
    parts.push(`events younger than ${describeDuration(m.max_age_seconds)}`);
  }
  if (m.truncate_before !== undefined) {
    parts.push(`versions from ${m.truncate_before} on`);
  }
  return parts.length === 0 ? 'none — every event is kept' : 'keeps ' + parts.join(', ');
}

/**
 * A stream's lifecycle controls: its retention settings (shown, and edited with
 * PUT /streams/{s}/metadata) and "Delete stream…", a confirmation that asks for the
 * stream's name, offers a soft delete or a tombstone, and deletes only at the version the
 * page showed when it was opened (a stale page gets the 409 and the events it missed).
 */
function streamLifecycle(ctx, name, hooks) {
  const metadataPath = streamPath(name) + '/metadata';
  const current = el('span', { id: 'retention-current', text: 'loading…' });
  const edit = el('button', { id: 'retention-edit', type: 'button', class: 'small-button', text: 'Edit retention' });
  const openDelete = el('button', { id: 'stream-delete-open', type: 'button', class: 'danger small-button', text: 'Delete stream…' });

  // Retention form: an empty box removes the setting (null), a number sets it, and a
  // setting the box never held is left out, so it keeps whatever the server has.
  const inputs = {};
  const fields = RETENTION_FIELDS.map((f) => {
    const input = el('input', { id: 'retention-' + f.key.replace(/_/g, '-'), type: 'text', inputmode: 'numeric', placeholder: 'not set', autocomplete: 'off' });
    inputs[f.key] = input;
    return el('div', { class: 'field' }, el('label', { for: input.id, text: f.label }),
      el('div', { class: 'row' }, input, el('span', { class: 'muted small', text: f.unit })));
  });
  const save = el('button', { id: 'retention-save', type: 'submit', class: 'primary', text: 'Save retention' });
  const close = el('button', { id: 'retention-close', type: 'button', text: 'Close' });
  const formResult = el('div', { id: 'retention-result', 'aria-live': 'polite' });
  const form = el('form', { id: 'retention-form', class: 'panel', novalidate: true, hidden: true },
    el('h3', { text: `Retention of ${name}` }),
    el('p', { class: 'muted small', text: 'Reads stop showing the events these settings exclude as soon as they are saved; the next scavenge erases them. Leave a box empty to remove that setting. The stream keeps its version.' }),
    fields, el('div', { class: 'row' }, save, close), formResult);

  let stored = {};
  const showStored = (m) => {
    stored = m && typeof m === 'object' ? m : {};
    current.textContent = describeRetention(stored);
    for (const f of RETENTION_FIELDS) {
      inputs[f.key].value = stored[f.key] === undefined ? '' : String(stored[f.key]);
    }
  };
  const load = async () => {
    let r;
    try {
      r = await api('GET', metadataPath, undefined, { signal: ctx.signal });
    } catch (error) {
      // A store without the lifecycle (501) would refuse a delete and an edit too: say so
      // once, instead of an error on every stream page and controls that only fail.
      if (error instanceof ApiError && error.kind === 'unsupported') {
        current.textContent = 'not offered by this server\'s store (nor deleting streams)';
        edit.remove();
        openDelete.remove();
        form.remove();
        dialog.node.remove();
        return;
      }
      throw error;
    }
    showStored(r.json);
  };

  edit.addEventListener('click', () => {
    form.hidden = !form.hidden;
    formResult.replaceChildren();
    if (!form.hidden) {
      inputs.max_count.focus();
    }
  });
  close.addEventListener('click', () => {
    form.hidden = true;
  });
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const change = {};
    const wrong = [];
    for (const f of RETENTION_FIELDS) {
      const text = inputs[f.key].value.trim();
      if (text === '') {
        if (stored[f.key] !== undefined) {
          change[f.key] = null;
        }
      } else if (/^[0-9]+$/.test(text)) {
        // The server owns the range (from 1, at most 2^63 - 1) and says what is wrong.
        change[f.key] = Number(text);
      } else {
        wrong.push(`${f.label}: “${text}” is not a whole number; leave the box empty to remove the setting.`);
      }
    }
    if (wrong.length > 0) {
      formResult.replaceChildren(el('div', { class: 'problem', role: 'alert', id: 'retention-invalid' },
        el('strong', { text: 'Not saved: fix the form first' }), el('ul', {}, wrong.map((w) => el('li', { text: w })))));
      return;
    }
    save.disabled = true;
    formResult.replaceChildren(el('p', { class: 'muted', text: 'Saving…' }));
    try {
      const r = await api('PUT', metadataPath, change, { signal: ctx.signal });
      showStored(r.json);
      formResult.replaceChildren(el('div', { class: 'success', id: 'retention-saved' },
        el('strong', { text: 'Retention saved' }), el('p', { text: `${name}: ${describeRetention(stored)}.` })));
      hooks.retentionSaved();
    } catch (error) {
      if (!isAbort(error)) {
        formResult.replaceChildren(el('div', { id: 'retention-refused' },
          el('p', { text: 'Not saved. The server said:' }), problemBox(error)));
      }
    } finally {
      save.disabled = false;
    }
  });

  const dialog = deleteDialog(ctx, name, hooks);
  openDelete.addEventListener('click', () => dialog.open());

  const node = el('div', { class: 'lifecycle', id: 'stream-lifecycle' },
    el('div', { class: 'lifecycle-bar' }, el('span', { class: 'muted', text: 'Retention: ' }), current, edit, openDelete),
    form, dialog.node);
  return { node, load };
}

function deleteDialog(ctx, name, hooks) {
  const soft = el('input', { type: 'radio', name: 'delete-mode', id: 'delete-mode-soft', value: 'soft', checked: true });
  const tombstone = el('input', { type: 'radio', name: 'delete-mode', id: 'delete-mode-tombstone', value: 'tombstone' });
  const onlyIf = el('input', { type: 'checkbox', id: 'delete-only-if', checked: true });
  const onlyIfText = el('span', { id: 'delete-only-if-text' });
  const warning = el('div', { class: 'problem', id: 'delete-tombstone-warning', hidden: true },
    el('strong', { text: 'Permanent — this cannot be undone.' }),
    el('p', { text: `A tombstoned stream can never be read, appended to or recreated; the name ${name} is gone for good.` }));
  const confirmInput = el('input', { id: 'delete-confirm', type: 'text', autocomplete: 'off', spellcheck: 'false', 'aria-describedby': 'delete-confirm-help' });
  const submit = el('button', { id: 'delete-submit', type: 'submit', class: 'danger', disabled: true, text: 'Delete this stream' });
  const cancel = el('button', { id: 'delete-cancel', type: 'button', text: 'Cancel' });
  const result = el('div', { id: 'delete-result', 'aria-live': 'polite' });
  const form = el('form', { id: 'delete-form', novalidate: true },
    el('h2', {}, 'Delete stream ', el('code', { text: name })),
    el('fieldset', { class: 'choices' },
      el('legend', { text: 'How' }),
      el('label', { class: 'check' }, soft, el('span', {}, el('strong', { text: 'Soft delete' }),
        ' — its events stop reading at once and the next scavenge erases them; the name can be written again, its versions going on after the last one.')),
      el('label', { class: 'check' }, tombstone, el('span', {}, el('strong', { text: 'Tombstone' }),
        ' — deleted permanently: the stream can never be read or written again.'))),
    warning,
    el('label', { class: 'check' }, onlyIf, onlyIfText),
    el('label', { for: 'delete-confirm', id: 'delete-confirm-help' }, 'Type ', el('code', { text: name }), ' to confirm'),
    confirmInput,
    result,
    el('div', { class: 'row' }, submit, cancel));
  const node = el('dialog', { id: 'delete-dialog', class: 'danger-dialog' }, form);

  let expected = 0;
  const mode = () => (tombstone.checked ? 'tombstone' : 'soft');
  const sync = () => {
    warning.hidden = mode() !== 'tombstone';
    submit.textContent = mode() === 'tombstone' ? 'Tombstone this stream forever' : 'Delete this stream';
    submit.disabled = confirmInput.value !== name;
    onlyIfText.textContent = ` Only if it is still at version ${expected}, as this page showed (else nothing is deleted and you see what you missed)`;
  };
  for (const input of [soft, tombstone, confirmInput]) {
    input.addEventListener('input', sync);
    input.addEventListener('change', sync);
  }
  cancel.addEventListener('click', () => node.close());

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (confirmInput.value !== name) {
      result.replaceChildren(el('div', { class: 'problem', role: 'alert', id: 'delete-refused' },
        el('strong', { text: 'Not deleted' }),
        el('p', { text: `The name typed, “${confirmInput.value}”, is not “${name}”. Type the stream's name exactly to confirm.` })));
      return;
    }
    const chosen = mode();
    const q = new URLSearchParams();
    if (onlyIf.checked) {
      q.set('expected_version', String(expected));
    }
    if (chosen === 'tombstone') {
      q.set('tombstone', 'true');
    }
    submit.disabled = true;
    result.replaceChildren(el('p', { class: 'muted', text: 'Deleting…' }));
    try {
      await api('DELETE', streamPath(name) + (q.toString() ? '?' + q : ''), undefined, { signal: ctx.signal });
      node.close();
      hooks.deleted(chosen, expected);
    } catch (error) {
      if (isAbort(error)) {
        return;
      }
      if (error instanceof ApiError && error.kind === 'version-conflict') {
        const p = error.problem;
        const missed = Array.isArray(p.concurrent_events) ? p.concurrent_events : [];
        expected = Number(p.actual_version);
        const box = el('div', { class: 'conflict', id: 'delete-conflict', role: 'alert' },
          el('strong', { text: 'Not deleted: the stream changed since this page showed it' }),
          el('p', {}, `You confirmed at version ${p.expected_version}; ${name} is now at version `,
            el('span', { class: 'actual-version', id: 'delete-actual-version', text: String(p.actual_version) }), '.'));
        if (missed.length > 0) {
          box.append(el('p', { text: `The event${missed.length === 1 ? '' : 's'} you missed${p.truncated ? ' (the first 100)' : ''}:` }));
          // Compact: the dialog is narrow, and the type and data are what to review here.
          box.append(el('table', { id: 'delete-missed', class: 'list compact' },
            el('thead', {}, el('tr', {}, el('th', { class: 'num', text: 'Version' }), el('th', { text: 'Type' }), el('th', { text: 'Data' }))),
            el('tbody', {}, missed.map((e) => el('tr', { 'data-version': e.version },
              el('td', { class: 'num', text: String(e.version) }),
              el('td', { class: 'event-type', text: e.type }),
              el('td', {}, el('code', { text: e.data_base64 === undefined ? compact(e.data) : `${e.content_type}, base64 ${e.data_base64.length} chars` })))))));
        }
        box.append(el('p', { class: 'muted small', text: `Confirm again to delete it at version ${expected}.` }));
        result.replaceChildren(box);
      } else {
        result.replaceChildren(el('div', { id: 'delete-failed' }, problemBox(error)));
      }
    } finally {
      sync();
    }
  });

  return {
    node,
    open() {
      expected = hooks.shownVersion();
      confirmInput.value = '';
      soft.checked = true;
      onlyIf.checked = true;
      result.replaceChildren();
      sync();
      node.showModal();
      confirmInput.focus();
    },
  };
}

/** All events: a live tail of the global log, filtered, with pause and resume. */
async function allPage(root, ctx, _arg, params) {
  const category = el('input', { id: 'tail-category', type: 'text', placeholder: 'e.g. account', value: params.get('category') || '', autocomplete: 'off' });
  const types = el('input', { id: 'tail-types', type: 'text', placeholder: 'e.g. Deposited, Withdrawn', value: params.get('types') || '', autocomplete: 'off' });
  const apply = el('button', { id: 'tail-apply', type: 'submit', text: 'Apply filters' });
  const pause = el('button', { id: 'tail-pause', type: 'button', text: 'Pause' });
  const live = liveBadge();
  live.badge.id = 'tail-status';
  const note = el('span', { class: 'muted small', id: 'tail-note' });
  const problems = el('div');
  const { table, body } = eventTable('tail-events', { all: true });
  const form = el('form', { class: 'toolbar', id: 'tail-form' },
    el('label', { for: 'tail-category', text: 'Category' }), category,
    el('label', { for: 'tail-types', text: 'Types' }), types, apply, pause, live.badge, note);
  root.append(el('h1', { text: 'All events' }),
    el('p', { class: 'muted', text: 'The global log, newest first, as it is written. A category is a stream name up to its first “-”.' }),
    form, problems, table);

  let sub = null;
  let lastPosition = null;
  let startFrom = 1;
  let historyHead = 0;

  const start = (from) => {
    problems.replaceChildren();
    const q = new URLSearchParams({ from: String(from) });
    if (category.value.trim()) {
      q.set('category', category.value.trim());
    }
    if (types.value.trim()) {
      q.set('types', splitList(types.value).join(','));
    }
    sub = subscribe(ctx, '/subscribe/all?' + q, (event) => {
      lastPosition = event.position;
      // Highlight what arrives live, not the history the tail starts with.
      body.prepend(eventRow(event, { all: true, fresh: event.position > historyHead }));
      while (body.rows.length > TAIL_KEEP) {
        body.deleteRow(body.rows.length - 1);
      }
      note.textContent = `${body.rows.length} shown, from position ${startFrom}`;
    }, (state, error) => {
      live.set(state, error);
      if (state === 'failed' && error) {
        problems.replaceChildren(problemBox(error));
      }
    });
  };

  const restart = async () => {
    if (sub) {
      sub.stop();
    }
    body.replaceChildren();
    lastPosition = null;
    const head = await api('GET', '/head', undefined, { signal: ctx.signal });
    historyHead = head.json.head;
    startFrom = Math.max(1, head.json.head - 49);
    note.textContent = `from position ${startFrom}`;
    pause.textContent = 'Pause';
    start(startFrom);
  };

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const q = new URLSearchParams();
    if (category.value.trim()) {
      q.set('category', category.value.trim());
    }
    if (types.value.trim()) {
      q.set('types', types.value.trim());
    }
    history.replaceState(null, '', '#/all' + (q.toString() ? '?' + q : ''));
    restart().catch((e) => isAbort(e) || problems.replaceChildren(problemBox(e)));
  });
  pause.addEventListener('click', () => {
    if (sub && !sub.stopped) {
      sub.stop();
      pause.textContent = 'Resume';
      note.textContent = lastPosition === null ? 'paused' : `paused after position ${lastPosition}`;
    } else {
      pause.textContent = 'Pause';
      start(lastPosition === null ? startFrom : Number(lastPosition) + 1);
    }
  });
  await restart();
}

/** Append: one event, with an expectation; conflicts explained, with a way forward. */
async function appendPage(root, ctx, _arg, params) {
  const field = (label, input, help) => el('div', { class: 'field' },
    el('label', { for: input.id, text: label }), input, help || null);
  const stream = el('input', { id: 'append-stream', type: 'text', value: params.get('stream') || 'account-1', autocomplete: 'off', required: true });
  const type = el('input', { id: 'append-type', type: 'text', value: params.get('type') || 'Deposited', autocomplete: 'off', required: true });
  const data = el('textarea', { id: 'append-data', rows: 6, spellcheck: 'false' });
  data.value = '{"amount": 100}';
  const dataStatus = el('div', { id: 'append-data-status', class: 'validity' });
  const metadata = el('textarea', { id: 'append-metadata', rows: 2, spellcheck: 'false' });
  metadata.value = '{"actor": "ui"}';
  const metadataStatus = el('div', { id: 'append-metadata-status', class: 'validity' });
  const tags = el('input', { id: 'append-tags', type: 'text', placeholder: 'optional, comma-separated: account:1', autocomplete: 'off' });
  const kind = el('select', { id: 'append-expected-kind' },
    el('option', { value: 'any', text: 'any — no check' }),
    el('option', { value: 'exact', text: 'exact version' }),
    el('option', { value: 'no_stream', text: 'no_stream — must not exist yet' }),
    el('option', { value: 'exists', text: 'exists — must have events' }));
  const version = el('input', { id: 'append-expected-version', type: 'number', min: '0', step: '1', value: '0', disabled: true });
  const rebase = el('input', { id: 'append-rebase', type: 'checkbox' });
  const rebaseUnless = el('input', { id: 'append-rebase-unless', type: 'text', placeholder: 'e.g. AccountClosed, Withdrawn', disabled: true, autocomplete: 'off' });
  const submit = el('button', { id: 'append-submit', type: 'submit', class: 'primary', text: 'Append' });
  const result = el('div', { id: 'append-result', 'aria-live': 'polite' });
  const form = el('form', { id: 'append-form', class: 'append-form', novalidate: true },
    field('Stream', stream),
    field('Event type', type),
    field('Data (JSON)', data, dataStatus),
    field('Metadata (JSON object)', metadata, metadataStatus),
    field('Tags', tags),
    el('div', { class: 'field' },
      el('label', { for: 'append-expected-kind', text: 'Expected version' }),
      el('div', { class: 'row' }, kind, version)),
    el('div', { class: 'field' },
      el('label', { class: 'check' }, rebase, ' Server-side rebase unless one of these types was appended meanwhile'),
      rebaseUnless,
      el('div', { class: 'muted small', text: 'With an exact expected version that turns out stale, the server appends after the concurrent events instead of refusing — unless one of them has a listed type. An empty list rebases over anything.' })),
    el('div', { class: 'row' }, submit));
  root.append(el('h1', { text: 'Append' }), el('div', { class: 'two-columns' }, form, result));

  const parse = (textarea, status, mustBeObject) => {
    const text = textarea.value;
    try {
      const value = JSON.parse(text);
      if (mustBeObject && (value === null || typeof value !== 'object' || Array.isArray(value))) {
        status.textContent = '✗ must be a JSON object, like {"actor": "me"}';
        status.dataset.valid = 'false';
        return { ok: false };
      }
      status.textContent = '✓ valid JSON';
      status.dataset.valid = 'true';
      return { ok: true, value };
    } catch (error) {
      status.textContent = '✗ not valid JSON: ' + error.message;
      status.dataset.valid = 'false';
      return { ok: false };
    }
  };
  data.addEventListener('input', () => parse(data, dataStatus, false));
  metadata.addEventListener('input', () => parse(metadata, metadataStatus, true));
  parse(data, dataStatus, false);
  parse(metadata, metadataStatus, true);
  const syncKind = () => {
    version.disabled = kind.value !== 'exact';
  };
  kind.addEventListener('change', syncKind);
  rebase.addEventListener('change', () => {
    rebaseUnless.disabled = !rebase.checked;
  });

  // A re-send after a conflict reuses the request's event id: it can never write twice.
  const send = async (request) => {
    submit.disabled = true;
    result.replaceChildren(el('p', { class: 'muted', text: 'Sending…' }));
    try {
      const r = await api('POST', streamPath(request.stream), request.body, { signal: ctx.signal });
      showSuccess(request, r.json);
      if (kind.value === 'exact') {
        version.value = String(r.json.last_version);
      }
    } catch (error) {
      if (isAbort(error)) {
        return;
      }
      if (error instanceof ApiError && error.kind === 'version-conflict') {
        showConflict(request, error.problem);
      } else {
        result.replaceChildren(problemBox(error));
      }
    } finally {
      submit.disabled = false;
    }
  };

  const showSuccess = (request, body) => {
    const where = body.first_version === body.last_version ? `version ${body.last_version}` : `versions ${body.first_version}–${body.last_version}`;
    const box = el('div', { class: 'success', id: 'append-success' });
    if (body.duplicate) {
      box.append(el('strong', { text: 'Already appended' }),
        el('p', { text: `These event ids are already in ${body.stream} at ${where}; nothing was written.` }));
    } else {
      box.append(el('strong', { text: `Appended to ${body.stream} at ${where}` }),
        el('p', { text: `Position ${body.last_position}. Event id ${request.body.events[0].id}.` }));
    }
    if (body.rebased) {
      const concurrent = body.rebased.concurrent_events || [];
      box.append(el('p', { id: 'append-rebased', text: `Rebased: you expected version ${body.rebased.expected_version}; the server appended after ${concurrent.length} concurrent event${concurrent.length === 1 ? '' : 's'}:` }));
      const t = eventTable('append-concurrent');
      t.body.append(...concurrent.map((e) => eventRow(e)));
      box.append(t.table);
    }
    box.append(el('p', {}, el('a', { href: streamHref(body.stream) }, 'Open the stream →')));
    result.replaceChildren(box);
  };

  const showConflict = (request, p) => {
    const missed = Array.isArray(p.concurrent_events) ? p.concurrent_events : [];
    const box = el('div', { class: 'conflict', id: 'append-conflict' });
    box.append(el('strong', { text: 'Version conflict — nothing was written' }),
      el('p', {}, `You expected ${describeExpected(p.expected_version)}; the stream ${p.stream} is at version `,
        el('span', { class: 'actual-version', id: 'append-actual-version', text: String(p.actual_version) }), '.'));
    if (missed.length > 0) {
      box.append(el('p', { text: `The event${missed.length === 1 ? '' : 's'} you missed${p.truncated ? ' (the first 100)' : ''}:` }));
      const t = eventTable('append-missed');
      t.body.append(...missed.map((e) => eventRow(e)));
      box.append(t.table);
    }
    const actions = el('div', { class: 'row' });
    if (typeof p.expected_version === 'number') {
      const again = el('button', { id: 'append-resend-rebase', type: 'button', class: 'primary', text: 'Re-send with server-side rebase' });
      again.addEventListener('click', () => {
        const body = Object.assign({}, request.body, { rebase_unless: request.body.rebase_unless || splitList(rebaseUnless.value) });
        rebase.checked = true;
        rebaseUnless.disabled = false;
        send({ stream: request.stream, body });
      });
      actions.append(again);
    }
    const reviewed = el('button', { id: 'append-resend-actual', type: 'button', text: `Re-send expecting version ${p.actual_version} (I have reviewed the missed events)` });
    reviewed.addEventListener('click', () => {
      const body = Object.assign({}, request.body, { expected_version: p.actual_version });
      kind.value = 'exact';
      syncKind();
      version.value = String(p.actual_version);
      send({ stream: request.stream, body });
    });
    actions.append(reviewed);
    box.append(actions, el('p', { class: 'muted small', text: 'Both re-send the same event id, so a re-send can never write the event twice.' }));
    result.replaceChildren(box);
  };

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const problems = [];
    const parsedData = parse(data, dataStatus, false);
    const parsedMeta = parse(metadata, metadataStatus, true);
    if (!stream.value.trim()) {
      problems.push('Name the stream.');
    }
    if (!type.value.trim()) {
      problems.push('Give the event a type.');
    }
    if (!parsedData.ok) {
      problems.push('Data: ' + dataStatus.textContent.replace(/^✗ /, ''));
    }
    if (!parsedMeta.ok) {
      problems.push('Metadata: ' + metadataStatus.textContent.replace(/^✗ /, ''));
    }
    let expected = kind.value;
    if (kind.value === 'exact') {
      const n = Number(version.value);
      if (version.value.trim() === '' || !Number.isInteger(n) || n < 0) {
        problems.push('The expected version must be a whole number from 0 (0: the stream must not exist).');
      }
      expected = n;
    }
    if (problems.length > 0) {
      result.replaceChildren(el('div', { class: 'problem', role: 'alert', id: 'append-invalid' },
        el('strong', { text: 'Not sent: fix the form first' }), el('ul', {}, problems.map((p) => el('li', { text: p })))));
      return;
    }
    const body = {
      expected_version: expected,
      events: [{
        id: uuid(),
        type: type.value.trim(),
        data: parsedData.value,
        metadata: parsedMeta.value,
        tags: splitList(tags.value),
      }],
    };
    if (rebase.checked) {
      body.rebase_unless = splitList(rebaseUnless.value);
    }
    send({ stream: stream.value.trim(), body });
  });
}

function describeExpected(expected) {
  if (typeof expected === 'number') {
    return expected === 0 ? 'no stream (version 0)' : `version ${expected}`;
  }
  return { no_stream: 'that the stream did not exist', exists: 'that the stream existed', any: 'any version' }[expected] || String(expected);
}

/** Conflict lab: MISSION.md's example, live on a fresh stream. */
async function labPage(root, ctx) {
  const policyReject = el('input', { type: 'radio', name: 'lab-policy', id: 'lab-policy-reject', value: 'reject', checked: true });
  const policyRebase = el('input', { type: 'radio', name: 'lab-policy', id: 'lab-policy-rebase', value: 'rebase' });
  const amountA = el('input', { id: 'lab-amount-a', type: 'number', value: '2000', min: '1', step: '1' });
  const amountB = el('input', { id: 'lab-amount-b', type: 'number', value: '3000', min: '1', step: '1' });
  const openButton = el('button', { id: 'lab-open', type: 'button', text: '1. Open a fresh account with 1000' });
  const submitButton = el('button', { id: 'lab-submit', type: 'button', class: 'primary', text: '2. Submit A and B together', disabled: true });
  const runButton = el('button', { id: 'lab-run', type: 'button', text: 'Run the whole example' });
  const writerA = el('div', { class: 'writer', id: 'lab-writer-a' });
  const writerB = el('div', { class: 'writer', id: 'lab-writer-b' });
  const output = el('div', { id: 'lab-output' });
  const problems = el('div');
  root.append(
    el('h1', { text: 'Conflict lab' }),
    el('p', { class: 'lede' }, 'An account holds 1000. Writer A deposits 2000 and writer B deposits 3000 at the same moment, both having seen version 1. ',
      'The versions collide, so the store knows the two requests were concurrent — with no lock — and a policy decides what happens to the one that lost the race.'),
    el('div', { class: 'toolbar' },
      el('span', { text: 'Policy for the loser:' }),
      el('label', { class: 'check' }, policyReject, ' reject — it learns the actual version and the event it missed'),
      el('label', { class: 'check' }, policyRebase, ' rebase — deposits commute, append it after the winner')),
    el('div', { class: 'toolbar' },
      el('label', { for: 'lab-amount-a', text: 'A deposits' }), amountA,
      el('label', { for: 'lab-amount-b', text: 'B deposits' }), amountB),
    el('div', { class: 'row' }, openButton, submitButton, runButton),
    problems,
    el('div', { class: 'writers' }, writerA, writerB),
    output);

  let lab = null;
  const policy = () => (policyRebase.checked ? 'rebase' : 'reject');
  const amounts = () => ({ A: Math.trunc(Number(amountA.value)) || 2000, B: Math.trunc(Number(amountB.value)) || 3000 });
  const showWriters = () => {
    for (const [actor, box] of [['A', writerA], ['B', writerB]]) {
      box.replaceChildren();
      if (!lab) {
        continue;
      }
      box.append(el('h3', { text: `Writer ${actor}` }),
        el('p', { text: `read ${lab.stream}: version ${lab.version}, balance ${lab.balance}` }),
        el('p', {}, 'prepares ', el('code', { text: `Deposited {"amount": ${amounts()[actor]}}` }), ` expecting version ${lab.version}`));
    }
  };

  const open = async () => {
    const id = 'lab-' + Date.now().toString(36) + Math.random().toString(36).slice(2, 6);
    const stream = 'account-' + id;
    output.replaceChildren();
    await api('POST', streamPath(stream), {
      expected_version: 'no_stream',
      events: [{ id: uuid(), type: 'AccountOpened', data: { owner: 'admin', balance: 1000 }, metadata: { actor: 'admin' }, tags: ['account:' + id] }],
    }, { signal: ctx.signal });
    // Both writers read the stream: they see the same version and balance.
    const read = await api('GET', streamPath(stream), undefined, { signal: ctx.signal });
    lab = { id, stream, version: read.json.version, balance: balanceOf(read.json.events) };
    showWriters();
    submitButton.disabled = false;
  };

  const submitTogether = async () => {
    if (!lab) {
      return;
    }
    const chosen = policy();
    const { id, stream, version } = lab;
    const a = amounts();
    submitButton.disabled = true;
    const request = (actor) => {
      const body = {
        expected_version: version,
        events: [{ id: uuid(), type: 'Deposited', data: { amount: a[actor] }, metadata: { actor }, tags: ['account:' + id] }],
      };
      if (chosen === 'rebase') {
        body.rebase_unless = ['AccountClosed'];
      }
      return api('POST', streamPath(stream), body, { signal: ctx.signal })
        .then((r) => ({ actor, amount: a[actor], ok: true, result: r.json }), (error) => {
          if (isAbort(error)) {
            throw error;
          }
          return { actor, amount: a[actor], ok: false, error };
        });
    };
    // Both requests leave in the same tick: neither waits for the other's answer.
    const outcomes = await Promise.all([request('A'), request('B')]);
    const log = await api('GET', streamPath(stream), undefined, { signal: ctx.signal });
    showOutcome(chosen, lab, outcomes, log.json);
    lab = null;
  };

  const showOutcome = (chosen, base, outcomes, log) => {
    const attempted = base.version + 1;
    const rank = (o) => (o.ok && !o.result.rebased ? 0 : 1);
    const ordered = outcomes.slice().sort((x, y) => rank(x) - rank(y) || x.actor.localeCompare(y.actor));
    const rows = [el('tr', { 'data-actor': 'admin' },
      el('td', { text: 'admin' }), el('td', { text: 'AccountOpened' }), el('td', { text: '1000' }), el('td', { text: String(base.version) }))];
    const story = [];
    for (const o of ordered) {
      let versionCell;
      if (o.ok && !o.result.rebased) {
        versionCell = el('td', { text: String(o.result.first_version) });
      } else if (o.ok) {
        versionCell = el('td', { class: 'conflict-cell' }, `${attempted} ← conflict: version ${attempted} is taken`,
          el('span', { class: 'verdict rebased', text: ` → rebased to version ${o.result.first_version}` }));
        const over = o.result.rebased.concurrent_events || [];
        story.push(el('p', { id: 'lab-verdict-' + o.actor.toLowerCase() }, el('strong', { text: `${o.actor} was rebased. ` }),
          `Deposits commute, so the store appended ${o.actor}'s deposit at version ${o.result.first_version}, after ${describeEvents(over)}, in the same atomic step — no lock, no retry round trip. `,
          `${o.actor}'s answer names the concurrent event${over.length === 1 ? '' : 's'}, so ${o.actor} knows it raced.`));
      } else if (o.error.kind === 'version-conflict') {
        const p = o.error.problem;
        versionCell = el('td', { class: 'conflict-cell' }, `${attempted} ← conflict: version ${attempted} is taken`,
          el('span', { class: 'verdict rejected', text: ' → rejected' }));
        story.push(el('p', { id: 'lab-verdict-' + o.actor.toLowerCase() }, el('strong', { text: `${o.actor} was rejected (409). ` }),
          `Nothing of ${o.actor}'s was written. ${o.actor} learns the actual version, ${p.actual_version}, and the event${(p.concurrent_events || []).length === 1 ? '' : 's'} it missed: ${describeEvents(p.concurrent_events || [])}. `,
          `It can re-read the balance and decide again.`));
      } else {
        versionCell = el('td', {}, problemBox(o.error));
      }
      rows.push(el('tr', { 'data-actor': o.actor, class: o.ok && !o.result.rebased ? '' : 'lost' },
        el('td', { text: o.actor }), el('td', { text: 'Deposited' }), el('td', { text: String(o.amount) }), versionCell));
    }
    const table = el('table', { id: 'lab-table', class: 'mission' },
      el('thead', {}, el('tr', {}, ['actor', 'event type', 'data', 'version'].map((h) => el('th', { text: h })))),
      el('tbody', {}, rows));
    const logTable = el('table', { id: 'lab-log', class: 'list' },
      el('thead', {}, el('tr', {}, ['version', 'actor', 'event type', 'data', 'position'].map((h) => el('th', { text: h, class: h === 'version' || h === 'position' ? 'num' : undefined })))),
      el('tbody', {}, log.events.map((e) => el('tr', { 'data-version': e.version },
        el('td', { class: 'num', text: String(e.version) }),
        el('td', { text: (e.metadata && e.metadata.actor) || '' }),
        el('td', { text: e.type }),
        el('td', {}, el('code', { text: compact(e.data) })),
        el('td', { class: 'num', text: String(e.position) })))));
    output.replaceChildren(
      el('h2', { text: `What happened — policy: ${chosen}` }),
      table,
      el('div', { id: 'lab-outcome', class: chosen === 'reject' ? 'conflict' : 'success' }, story),
      el('h2', {}, 'The stream now: ', el('a', { href: streamHref(base.stream), text: base.stream })),
      logTable,
      el('p', { id: 'lab-balance', class: 'meta', text: `Balance: ${balanceOf(log.events)}` }));
  };

  const guard = (fn) => async () => {
    problems.replaceChildren();
    try {
      await fn();
    } catch (error) {
      if (!isAbort(error)) {
        problems.replaceChildren(problemBox(error));
      }
    }
  };
  openButton.addEventListener('click', guard(open));
  submitButton.addEventListener('click', guard(submitTogether));
  runButton.addEventListener('click', guard(async () => {
    await open();
    await submitTogether();
  }));
  amountA.addEventListener('input', showWriters);
  amountB.addEventListener('input', showWriters);
}

function describeEvents(events) {
  if (events.length === 0) {
    return 'no event';
  }
  return events.map((e) => `${(e.metadata && e.metadata.actor) || 'someone'}'s ${e.type} ${compact(e.data)} at version ${e.version}`).join(', ');
}

function balanceOf(events) {
  let balance = 0;
  for (const e of events) {
    const d = e.data || {};
    if (e.type === 'AccountOpened') {
      balance = Number(d.balance) || 0;
    } else if (e.type === 'Deposited') {
      balance += Number(d.amount) || 0;
    } else if (e.type === 'Withdrawn') {
      balance -= Number(d.amount) || 0;
    }
  }
  return balance;
}

/** Projections: the read side's status, when the server has one. */
async function projectionsPage(root, ctx) {
  const body = el('div', { id: 'projections' });
  const problems = el('div');
  const notice = el('div', { id: 'projections-notice' });
  root.append(el('h1', { text: 'Projections' }),
    el('p', { class: 'muted', text: 'Read models built from the event streams, kept separate from the write side.' }),
    notice, problems, body);
  let missing = false;

  const load = async () => {
    if (missing) {
      return;
    }
    let r;
    try {
      r = await api('GET', '/projections', undefined, { signal: ctx.signal });
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        missing = true;
        body.replaceChildren(el('div', { class: 'empty-state', id: 'projections-missing' },
          el('strong', { text: 'No projections endpoint on this server.' }),
          el('p', { class: 'muted', text: 'GET /projections answered 404: this server runs no read models. Start one with projections enabled to see their status, checkpoint and lag here.' })));
        return;
      }
      throw error;
    }
    const list = Array.isArray(r.json) ? r.json : (r.json && Array.isArray(r.json.projections) ? r.json.projections : []);
    if (list.length === 0) {
      body.replaceChildren(el('div', { class: 'empty-state', id: 'projections-empty' },
        el('strong', { text: 'This server runs no projections.' }),
        el('p', { class: 'muted', text: 'Start the server with its read side enabled to see each read model\'s status, checkpoint and lag here.' })));
      return;
    }
    const rows = list.map((p) => {
      const rebuild = el('button', { type: 'button', class: 'rebuild', 'data-name': p.name, text: 'Rebuild' });
      rebuild.addEventListener('click', async () => {
        rebuild.disabled = true;
        try {
          await api('POST', '/projections/' + encodeURIComponent(p.name) + '/rebuild', undefined, { signal: ctx.signal });
          notice.replaceChildren(el('div', { class: 'success', text: `Rebuilding ${p.name} from position 1…` }));
          await load();
        } catch (error) {
          if (!isAbort(error)) {
            notice.replaceChildren(problemBox(error));
          }
        } finally {
          rebuild.disabled = false;
        }
      });
      const skipped = Array.isArray(p.skipped_events) ? p.skipped_events : [];
      const latest = skipped.length > 0 ? 'latest skipped: ' + compact(skipped[0]) : '';
      const trouble = p.failure ? compact(p.failure) : (p.last_error || latest);
      return el('tr', { 'data-projection': p.name },
        el('td', { text: p.name }),
        el('td', {}, el('span', { class: 'status status-' + String(p.status), text: String(p.status) })),
        el('td', { class: 'num', text: String(p.checkpoint) }),
        el('td', { class: 'num', text: String(p.head) }),
        el('td', { class: 'num', text: String(p.lag) }),
        el('td', { class: 'num', text: p.events_applied === undefined ? '' : String(p.events_applied) }),
        el('td', { class: 'num', 'data-skipped': String(p.skipped || 0), title: skipped.map(compact).join('\n'), text: String(p.skipped || 0) }),
        el('td', { class: 'small', text: trouble }),
        el('td', {}, rebuild));
    });
    body.replaceChildren(el('table', { class: 'list', id: 'projections-table' },
      el('thead', {}, el('tr', {}, ['Name', 'Status', 'Checkpoint', 'Head', 'Lag', 'Applied', 'Skipped', 'Problem', ''].map((h, i) => el('th', { text: h, class: i >= 2 && i <= 6 ? 'num' : undefined })))),
      el('tbody', {}, rows)));
  };
  await ctx.every(2000, load, problems);
}

// ---------------------------------------------------------------------------------------
// Consumer groups

const GROUP_SAMPLES = 60;
const GROUP_REFRESH_MS = 2000;

function groupHref(name) {
  return '#/group/' + encodeURIComponent(name);
}

function groupPath(name) {
  return '/groups/' + encodeURIComponent(name);
}

function sourceText(source) {
  if (!source) {
    return '';
  }
  if (source.stream !== undefined) {
    return 'stream ' + source.stream;
  }
  const all = source.all || {};
  const parts = [];
  if (all.category) {
    parts.push('category ' + all.category);
  }
  if (Array.isArray(all.types) && all.types.length) {
    parts.push('types ' + all.types.join(', '));
  }
  if (Array.isArray(all.tags) && all.tags.length) {
    parts.push('tags ' + all.tags.join(', '));
  }
  return parts.length ? 'all: ' + parts.join('; ') : 'all events';
}

/** A small bar chart of `samples` ({t, v}), oldest at the left, one bar per sample. */
function lagChart(samples) {
  const max = Math.max(1, ...samples.map((s) => s.v));
  const bars = el('div', { class: 'chart-bars' });
  for (const s of samples) {
    const bar = el('div', { class: 'chart-bar', title: `${s.v} pending at ${new Date(s.t).toLocaleTimeString()}` });
    bar.style.height = `${Math.max(1, Math.round((s.v / max) * 100))}%`;
    bars.append(bar);
  }
  return el('div', { id: 'group-lag-chart', class: 'chart', role: 'img', 'data-points': String(samples.length),
    'aria-label': `pending events over time, at most ${max}` },
    el('div', { class: 'chart-label', text: `max ${max}` }), bars);
}

async function groupsPage(root, ctx) {
  const body = el('div', { id: 'groups' });
  const problems = el('div');
  root.append(el('h1', { text: 'Consumer groups' }),
    el('p', { class: 'muted', text: 'Competing consumers: each event of a group\'s source goes to one consumer at a time, until it is acked.' }),
    problems, body);
  const load = async () => {
    const r = await api('GET', '/groups', undefined, { signal: ctx.signal });
    const list = r.json && Array.isArray(r.json.groups) ? r.json.groups : [];
    if (list.length === 0) {
      body.replaceChildren(el('div', { class: 'empty-state', id: 'groups-empty' },
        el('strong', { text: 'No consumer groups yet.' }),
        el('p', { class: 'muted', text: 'Create one with concord group create NAME --category C, or PUT /groups/{group}.' })));
      return;
    }
    const rows = list.map((g) => el('tr', { 'data-group': g.group },
      el('td', {}, el('a', { href: groupHref(g.group), text: g.group })),
      el('td', { text: sourceText(g.source) }),
      el('td', { text: g.ordering }),
      el('td', { class: 'num', text: String(g.acked) }),
      el('td', { class: 'num', text: String(g.in_flight) }),
      el('td', { class: 'num', text: String(g.parked) }),
      el('td', { class: 'num', text: String(g.pending) })));
    body.replaceChildren(el('table', { class: 'list', id: 'groups-table' },
      el('thead', {}, el('tr', {}, ['Group', 'Source', 'Ordering', 'Acked', 'In flight', 'Parked', 'Pending'].map((h, i) => el('th', { text: h, class: i >= 3 ? 'num' : undefined })))),
      el('tbody', {}, rows)));
  };
  await ctx.every(GROUP_REFRESH_MS, load, problems);
}

async function groupPage(root, ctx, name) {
  if (!name) {
    root.append(el('h1', { text: 'Group' }), el('p', { text: 'No group named. Pick one on the Groups page.' }));
    return;
  }
  const counter = (id, label) => el('div', { class: 'card' },
    el('div', { class: 'card-label', text: label }), el('div', { class: 'card-value', id, text: '…' }));
  const source = el('span', { id: 'group-source', text: '…' });
  const settings = el('span', { id: 'group-settings', text: '' });
  const chartBox = el('div', { id: 'group-chart' });
  const inFlight = el('div', { id: 'group-in-flight' });
  const parked = el('div', { id: 'group-parked' });
  const notice = el('div', { id: 'group-notice' });
  const problems = el('div');
  const replay = el('button', { id: 'group-replay', type: 'button', text: 'Replay parked', disabled: true });
  root.append(
    el('h1', {}, el('span', { class: 'muted', text: 'Group ' }), el('span', { id: 'group-name', text: name })),
    el('p', { class: 'meta' }, source, ' · ', settings),
    problems, notice,
    el('div', { class: 'cards' },
      counter('group-acked', 'acked'), counter('group-rate', 'acked/s'), counter('group-in-flight-count', 'in flight'),
      counter('group-parked-count', 'parked'), counter('group-pending', 'pending (lag)')),
    el('h2', { text: 'Lag over time' }),
    el('p', { class: 'muted small', text: `Pending events, sampled every ${GROUP_REFRESH_MS / 1000} s since this page was opened.` }),
    chartBox,
    el('h2', { text: 'In flight' }), inFlight,
    el('h2', {}, 'Parked ', replay), parked);

  const samples = [];
  let gone = false;
  const load = async () => {
    if (gone) {
      return;
    }
    let status;
    try {
      status = (await api('GET', groupPath(name), undefined, { signal: ctx.signal })).json;
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        gone = true;
        problems.replaceChildren(el('div', { class: 'empty-state', id: 'group-missing' },
          el('strong', { text: `There is no group ${name}.` }),
          el('p', {}, el('a', { href: '#/groups', text: 'Back to the groups' }))));
        return;
      }
      throw error;
    }
    const now = Date.now();
    const previous = samples[samples.length - 1];
    samples.push({ t: now, v: status.pending, acked: status.acked });
    while (samples.length > GROUP_SAMPLES) {
      samples.shift();
    }
    const rate = previous && now > previous.t ? ((status.acked - previous.acked) * 1000) / (now - previous.t) : 0;
    source.textContent = sourceText(status.source) + ', from ' + status.from;
    settings.textContent = `ack timeout ${status.ack_timeout_ms} ms · max ${status.max_deliveries} deliveries · ordering ${status.ordering}`;
    document.getElementById('group-acked').textContent = String(status.acked);
    document.getElementById('group-rate').textContent = rate.toFixed(rate < 10 ? 1 : 0);
    document.getElementById('group-in-flight-count').textContent = String(status.in_flight);
    document.getElementById('group-parked-count').textContent = String(status.parked);
    document.getElementById('group-pending').textContent = String(status.pending);
    chartBox.replaceChildren(lagChart(samples));

    const messages = Array.isArray(status.in_flight_messages) ? status.in_flight_messages : [];
    inFlight.replaceChildren(messages.length === 0
      ? el('p', { class: 'muted', id: 'group-in-flight-empty', text: 'Nothing in flight.' })
      : el('table', { class: 'list', id: 'group-in-flight-table' },
        el('thead', {}, el('tr', {}, ['Event', 'Delivery', 'Consumer', 'Back to the group in'].map((h) => el('th', { text: h })))),
        el('tbody', {}, messages.map((m) => el('tr', { 'data-offset': m.offset },
          el('td', {}, el('a', { href: streamHref(m.stream), text: `${m.stream}@${m.version}` })),
          el('td', { class: 'num', text: String(m.delivery) }),
          el('td', { text: m.consumer }),
          el('td', { class: 'num', text: Math.max(0, Math.round((m.deadline - now) / 1000)) + ' s' }))))));

    const list = (await api('GET', groupPath(name) + '/parked', undefined, { signal: ctx.signal })).json.parked || [];
    replay.disabled = list.length === 0;
    parked.replaceChildren(list.length === 0
      ? el('p', { class: 'muted', id: 'group-parked-empty', text: 'Nothing parked.' })
      : el('table', { class: 'list', id: 'group-parked-table' },
        el('thead', {}, el('tr', {}, ['Event', 'Type', 'Deliveries', 'Data'].map((h) => el('th', { text: h })))),
        el('tbody', {}, list.map((p) => el('tr', { 'data-event': `${p.stream}@${p.version}` },
          el('td', {}, el('a', { href: streamHref(p.stream), text: `${p.stream}@${p.version}` })),
          el('td', { text: p.event ? p.event.type : '(gone)' }),
          el('td', { class: 'num', text: String(p.deliveries) }),
          el('td', {}, p.event ? dataCell(p.event) : ''))))));
  };
  replay.addEventListener('click', async () => {
    replay.disabled = true;
    try {
      const r = await api('POST', groupPath(name) + '/replay-parked', undefined, { signal: ctx.signal });
      notice.replaceChildren(el('div', { class: 'success', id: 'group-replayed', text: `${r.json.replayed} parked event${r.json.replayed === 1 ? '' : 's'} returned to the group.` }));
      await load();
    } catch (error) {
      if (!isAbort(error)) {
        notice.replaceChildren(problemBox(error));
      }
    }
  });
  await ctx.every(GROUP_REFRESH_MS, load, problems);
}

function notFoundPage(root) {
  root.append(el('h1', { text: 'No such page' }), el('p', {}, el('a', { href: '#/', text: 'Back to the overview' })));
}

// ---------------------------------------------------------------------------------------
// Router

const PAGES = {
  '': overviewPage,
  overview: overviewPage,
  streams: streamsPage,
  stream: streamPage,
  all: allPage,
  append: appendPage,
  lab: labPage,
  projections: projectionsPage,
  groups: groupsPage,
  group: groupPage,
};

const NAV_OF = { '': 'overview', stream: 'streams', group: 'groups' };

let current = null;

function parseHash() {
  const hash = location.hash.replace(/^#\/?/, '');
  const q = hash.indexOf('?');
  const path = q < 0 ? hash : hash.slice(0, q);
  const params = new URLSearchParams(q < 0 ? '' : hash.slice(q + 1));
  const slash = path.indexOf('/');
  const page = slash < 0 ? path : path.slice(0, slash);
  let arg = slash < 0 ? '' : path.slice(slash + 1);
  try {
    arg = decodeURIComponent(arg);
  } catch (_) {
    // Leave a malformed escape as typed.
  }
  return { page, arg, params };
}

function newContext() {
  const controller = new AbortController();
  const ctx = {
    alive: true,
    signal: controller.signal,
    cleanups: [() => controller.abort()],
    /** Runs `fn` now and every `ms` until the page is left; failures show in `problems`. */
    async every(ms, fn, problems) {
      let running = false;
      const tick = async () => {
        if (running || !ctx.alive) {
          return;
        }
        running = true;
        try {
          await fn();
        } catch (error) {
          if (!isAbort(error) && ctx.alive) {
            problems.replaceChildren(problemBox(error));
          }
        } finally {
          running = false;
        }
      };
      const timer = setInterval(tick, ms);
      ctx.cleanups.push(() => clearInterval(timer));
      await tick();
    },
  };
  return ctx;
}

function route() {
  if (current) {
    current.alive = false;
    for (const cleanup of current.cleanups) {
      cleanup();
    }
  }
  const ctx = newContext();
  current = ctx;
  const { page, arg, params } = parseHash();
  const active = NAV_OF[page] || page;
  for (const link of document.querySelectorAll('#nav a')) {
    link.classList.toggle('active', link.dataset.page === active);
  }
  const root = el('div', { class: 'page', 'data-page': page || 'overview' });
  document.getElementById('page').replaceChildren(root);
  const render = PAGES[page] || notFoundPage;
  Promise.resolve()
    .then(() => render(root, ctx, arg, params))
    .catch((error) => {
      if (!isAbort(error) && ctx.alive) {
        root.append(problemBox(error));
      }
    });
}

async function showBackend() {
  const badge = document.getElementById('store-badge');
  try {
    const r = await fetch('/health', { cache: 'no-store' });
    const body = await r.json();
    badge.textContent = `${body.store} · ${body.status}`;
    badge.dataset.state = body.status;
  } catch (_) {
    badge.textContent = 'unreachable';
    badge.dataset.state = 'unavailable';
  }
}

function start() {
  setUpTokenDialog();
  window.addEventListener('hashchange', route);
  showBackend();
  route();
  window.concordReady = true;
}

start();
