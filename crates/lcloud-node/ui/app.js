// λCLOUD's time-travel debugger: the node's own page, talking only to the node's API
// (/api/log pages, /api/state at a cut, /api/diff, /api/conflicts, /api/status and the
// /api/events stream) with the token it is given. No framework, no other origin.
'use strict';

const ROW = 24;       // row height, px (the CSS's)
const LANE = 14;      // lane width, px
const PAGE = 1000;    // rows per page of /api/log
const EXTRA = 20;     // rows drawn above and below what is on screen

const S = {
  token: null,
  rows: [],           // loaded experiences, newest first (canonical order reversed)
  byId: new Map(),
  lanes: [],          // author hex, in the order first seen
  next: undefined,    // cursor of the next page; null when all are loaded
  loading: null,
  a: null, b: null,   // picked cuts (experience ids)
  focus: 0,           // row index of the keyboard's place
  names: {},          // author hex -> alias
  stable: {},         // stable frontier clock
  final: {},          // clock of the deepest final checkpoint
  finalDepth: null,   // its depth
  view: {},           // the state pane's cut: query parameters
  only: '',           // the lattice shows only this node's chain when set
  contracts: new Map(), // contract id -> local name
};

const $ = (id) => document.getElementById(id);
const short = (hex) => (hex || '').slice(0, 8);
const name = (hex) => S.names[hex] || short(hex);

async function api(path, params) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, v);
  }
  const r = await fetch(url, { headers: { Authorization: 'Bearer ' + S.token } });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    const e = new Error(body.error || ('HTTP ' + r.status));
    e.status = r.status;
    throw e;
  }
  return body;
}

function fail(e) {
  $('error').textContent = e.message || String(e);
}

// ---- the history ----

function opNames(ops) {
  const out = [];
  for (const o of ops) {
    const last = out[out.length - 1];
    if (last && last[0] === o) last[1] += 1; else out.push([o, 1]);
  }
  return out.map(([o, n]) => (n === 1 ? o : o + '×' + n)).join(',');
}

function newerFirst(x, y) {
  if (x.depth !== y.depth) return y.depth - x.depth;
  return x.id < y.id ? 1 : x.id > y.id ? -1 : 0;
}

function addRows(rows) {
  let added = 0;
  for (const r of rows) {
    if (S.byId.has(r.id)) continue;
    S.byId.set(r.id, r);
    S.rows.push(r);
    added += 1;
  }
  S.rows.sort(newerFirst);
  // Lanes in the order nodes are first seen, oldest first within what is loaded.
  for (let i = S.rows.length - 1; i >= 0; i--) {
    const a = S.rows[i].author;
    if (!S.lanes.includes(a)) S.lanes.push(a);
  }
  S.index = new Map(S.rows.map((r, i) => [r.id, i]));
  S.chain = new Map(S.rows.map((r, i) => [r.author + ':' + r.seq, i]));
  return added;
}

async function loadMore() {
  if (S.next === null || S.loading) return S.loading;
  S.loading = (async () => {
    const page = await api('/api/log', { limit: PAGE, before: S.next, only: S.only });
    addRows(page.log);
    S.next = page.next;
    $('count').textContent = '(' + S.rows.length + (S.next ? '+' : '') + ')';
    render();
    // When the first rows were drawn, since the page began loading (the benchmark reads it).
    if (window.lcloudFirstPaint === undefined && S.rows.length) window.lcloudFirstPaint = performance.now();
  })().catch(fail).finally(() => { S.loading = null; });
  return S.loading;
}

function laneX(author) { return 8 + S.lanes.indexOf(author) * LANE; }

function marks(r) {
  const out = [];
  const st = status(r);
  if (st) out.push('<span class="' + st + '">' + (st === 'final' ? 'final' : 'stable') + '</span>');
  if (r.fork) out.push('<span class="fork" title="its author signed two experiences at one seq: forked">⋔ fork</span>');
  for (const j of r.rejected) {
    out.push('<span class="rejected" title="' + esc(j.text) + '">✗ op ' + j.op + ': ' + esc(j.text) + '</span>');
  }
  return out.join(' ');
}

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}

function status(r) {
  const at = (clock) => clock[r.author] !== undefined && r.seq <= clock[r.author];
  return at(S.final) ? 'final' : at(S.stable) ? 'stable' : '';
}

// Draws the rows on screen (and EXTRA more each side) between two spacer rows, and their
// edges to prev and deps in one SVG.
function render() {
  const sc = $('scroller');
  const head = $('lattice').tHead.offsetHeight || ROW;
  const n = S.rows.length;
  const first = Math.max(0, Math.floor((sc.scrollTop - head) / ROW) - EXTRA);
  const last = Math.min(n, Math.ceil((sc.scrollTop + sc.clientHeight) / ROW) + EXTRA);
  const width = 16 + S.lanes.length * LANE;
  document.querySelector('#lattice th.graph').style.width = width + 'px';
  const html = ['<tr aria-hidden="true" style="height:' + first * ROW + 'px"></tr>'];
  for (let i = first; i < last; i++) {
    const r = S.rows[i];
    const cls = ['row', r.id === S.a ? 'a' : '', r.id === S.b ? 'b' : ''].join(' ');
    html.push('<tr class="' + cls + '" data-i="' + i + '" data-id="' + r.id + '" data-status="' + (status(r) || 'open') + '" tabindex="' + (i === S.focus ? 0 : -1) +
      '" aria-selected="' + (r.id === S.a || r.id === S.b) + '"><td class="graph"></td><td title="' + r.id + '">' + short(r.id) +
      '</td><td title="' + r.author + '">' + esc(name(r.author)) + '</td><td>' + r.seq + '</td><td>' + esc(opNames(r.ops)) +
      (r.deps.length ? ' ← ' + r.deps.map(short).join(',') : '') + '</td><td>' + marks(r) + '</td></tr>');
  }
  html.push('<tr aria-hidden="true" style="height:' + (n - last) * ROW + 'px"></tr>');
  $('rows').innerHTML = html.join('');
  // Edges: to the author's previous experience and to each dep, where loaded.
  const y = (i) => head + i * ROW + ROW / 2;
  const svg = [];
  for (let i = first; i < last; i++) {
    const r = S.rows[i];
    const x = laneX(r.author);
    const targets = [...r.deps];
    const prev = S.chain.get(r.author + ':' + (r.seq - 1));
    if (prev !== undefined) targets.push(S.rows[prev].id);
    for (const t of targets) {
      const j = S.index.get(t);
      if (j === undefined) continue;
      const tx = laneX(S.rows[j].author);
      const ty = Math.min(y(j), y(last) + ROW);
      svg.push('<path d="M' + x + ' ' + y(i) + ' C' + x + ' ' + (y(i) + ROW) + ' ' + tx + ' ' + (ty - ROW) + ' ' + tx + ' ' + ty + '" stroke="#888" fill="none"/>');
    }
  }
  for (let i = first; i < last; i++) {
    const r = S.rows[i];
    const st = status(r);
    const fill = r.fork ? '#b3261e' : st === 'final' ? '#5f2b9b' : st === 'stable' ? '#137333' : '#0b57d0';
    const ring = r.id === S.a || r.id === S.b ? ' stroke="#111" stroke-width="2"' : '';
    svg.push('<circle cx="' + laneX(r.author) + '" cy="' + y(i) + '" r="5" fill="' + fill + '"' + ring + '><title>' +
      esc(name(r.author)) + ' seq ' + r.seq + (st ? ' (' + st + ')' : '') + '</title></circle>');
  }
  // The deepest final checkpoint: a line above the first row at or below its depth.
  if (S.finalDepth !== null) {
    const k = S.rows.findIndex((r) => r.depth <= S.finalDepth);
    if (k >= first && k < last) {
      const ly = head + k * ROW;
      svg.push('<line class="checkpoint" data-depth="' + S.finalDepth + '" x1="0" x2="' + (width + 2000) + '" y1="' + ly + '" y2="' + ly +
        '" stroke="#5f2b9b" stroke-dasharray="4 3"><title>final checkpoint at depth ' + S.finalDepth + ': every member attested this state</title></line>');
    }
  }
  const edges = $('edges');
  edges.setAttribute('width', width);
  edges.setAttribute('height', head + n * ROW);
  edges.innerHTML = svg.join('');
  // Near the end of what is loaded: the next page.
  if (S.next && last >= n - EXTRA) loadMore();
}

function rowEl(i) { return document.querySelector('#rows tr[data-i="' + i + '"]'); }

async function focusRow(i) {
  if (i < 0) i = 0;
  while (i >= S.rows.length && S.next) await loadMore();
  if (i >= S.rows.length) i = S.rows.length - 1;
  S.focus = i;
  const sc = $('scroller');
  const head = $('lattice').tHead.offsetHeight || ROW;
  const top = head + i * ROW;
  if (top < sc.scrollTop + head) sc.scrollTop = top - head;
  else if (top + ROW > sc.scrollTop + sc.clientHeight) sc.scrollTop = top + ROW - sc.clientHeight;
  render();
  const el = rowEl(i);
  if (el) el.focus({ preventScroll: true });
}

async function jumpTo(id) {
  while (!S.index.has(id) && S.next) await loadMore();
  if (S.index.has(id)) await focusRow(S.index.get(id));
  else fail(new Error('experience ' + short(id) + ' is not in this node\'s history'));
}

function pick(id, second) {
  if (second && S.a && S.a !== id) {
    S.b = id;
    showDiff();
  } else {
    S.a = id;
    S.b = null;
    S.view = { heads: id };
    showState();
    $('diff').tBodies[0].innerHTML = '';
    $('diff-label').textContent = 'pick a second cut (Shift+click) to see what changed';
  }
  render();
}

// ---- the state pane ----

function pointer(parts) {
  return parts.map((p) => '/' + String(p).replace(/~/g, '~0').replace(/\//g, '~1')).join('');
}

function tree(value, parts, label) {
  const here = label === undefined ? '' : esc(label) + ': ';
  if (value !== null && typeof value === 'object') {
    const entries = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
    const kids = entries.map(([k, v]) => tree(v, parts.concat([k]), String(k))).join('');
    const kind = Array.isArray(value) ? '[' + value.length + ']' : '{' + entries.length + '}';
    return '<details open role="treeitem"><summary>' + here + kind + '</summary>' + kids + '</details>';
  }
  return '<div class="leaf" role="treeitem" tabindex="0" data-path="' + esc(pointer(parts)) + '">' + here + esc(JSON.stringify(value)) + '</div>';
}

function cutText() {
  const v = S.view;
  if (v.heads) return 'the cut of ' + short(v.heads) + ' (' + name(S.byId.get(v.heads)?.author) + ' seq ' + (S.byId.get(v.heads)?.seq ?? '?') + ')';
  const parts = [];
  if (v.at) parts.push('at ' + v.at);
  if (v.seen_by) parts.push('as seen by ' + v.seen_by);
  if (v.without) parts.push('without ' + name(v.without));
  return parts.length ? parts.join(', ') : 'now';
}

async function showState() {
  $('error').textContent = '';
  $('cut-label').textContent = cutText();
  try {
    const value = await api('/api/state', viewParams());
    $('tree').innerHTML = tree(value, []);
    $('tree').dataset.state = JSON.stringify(value);
    showContracts();
  } catch (e) {
    $('tree').innerHTML = '';
    fail(e);
  }
}

async function showDiff() {
  const from = '@' + S.a, to = '@' + S.b;
  $('diff-label').textContent = 'from ' + short(S.a) + ' to ' + short(S.b);
  try {
    const d = await api('/api/diff', { from, to });
    const body = $('diff').tBodies[0];
    body.innerHTML = d.changes.map((c) => '<tr><td>' + esc(c.path) + '</td><td>' + esc(c.before === null ? '—' : JSON.stringify(c.before)) +
      '</td><td>' + esc(c.after === null ? '—' : JSON.stringify(c.after)) + '</td></tr>').join('');
    if (!d.changes.length) $('diff-label').textContent += ': no changes';
  } catch (e) { fail(e); }
}

function viewParams() {
  const v = S.view;
  return { heads: v.heads, at: v.at, seen_by: v.seen_by, without: v.without };
}

async function who(path) {
  $('who-label').textContent = 'who wrote ' + (path || '/') + ' (' + cutText() + ')';
  const list = $('who');
  try {
    const c = await api('/api/conflicts', { path, ...viewParams() });
    list.innerHTML = c.values.map((v, i) => '<li>' + (i + 1 === c.values.length ? 'shown: ' : 'lost: ') +
      '<a href="#" data-id="' + v.experience + '">' + short(v.experience) + '</a> by ' + esc(name(v.author)) + ': ' + esc(JSON.stringify(v.value)) + '</li>').join('');
  } catch (e) {
    list.innerHTML = '<li>' + esc(e.status === 404 ? 'not a register value (a counter, a set or a map holds no single writer): ' + e.message : e.message) + '</li>';
  }
}

// Who set key `key` of a contract's state (the call that made each change, oldest first; the
// last wrote the value shown), at the cut the state pane shows.
async function whoKey(contract, key) {
  const label = S.contracts.get(contract) || short(contract);
  $('who-label').textContent = 'who set ' + label + ' ' + key + ' (' + cutText() + ')';
  const list = $('who');
  try {
    const w = await api('/api/contracts/' + encodeURIComponent(contract) + '/writes', { key, ...viewParams() });
    const rows = w.changes.map((c, i) => '<li>' + (i + 1 === w.changes.length ? 'shown: ' : 'before: ') +
      '<a href="#" data-id="' + c.experience + '">' + short(c.experience) + '</a> ' + esc(c.function || '?') + ' by ' + esc(name(c.author)) +
      ': ' + esc(c.value === null ? '(removed)' : JSON.stringify(c.value)) + '</li>');
    if (!w.complete) rows.unshift('<li>(earlier changes left out)</li>');
    list.innerHTML = rows.join('') || '<li>' + esc(key) + ' was never set</li>';
  } catch (e) {
    list.innerHTML = '<li>' + esc(e.message) + '</li>';
  }
}

// A JSON Pointer's one part, unescaped.
function unpointer(path) {
  return path.slice(1).replace(/~1/g, '/').replace(/~0/g, '~');
}

async function showForks() {
  try {
    const forks = await api('/api/forks');
    $('forks').innerHTML = forks.map((f) => '<li>' + esc(name(f.author)) + ' at seq ' + f.seq +
      ': proof <code title="canonical DAG-CBOR of the two signed headers, hex">' + esc(f.proof.slice(0, 32)) + '…</code> (' + f.proof.length / 2 + ' bytes)</li>').join('') || '<li>none</li>';
  } catch (e) { fail(e); }
}

// Shows only `who`'s chain (every node's when empty): the history is paged in again.
async function showOnly(who) {
  S.only = who;
  S.rows = []; S.byId = new Map(); S.index = new Map(); S.chain = new Map();
  S.next = undefined; S.focus = 0;
  $('scroller').scrollTop = 0;
  await S.loading;
  await loadMore();
}

async function showContracts() {
  try {
    const list = await api('/api/contracts');
    const parts = [];
    for (const c of list) {
      S.contracts.set(c.id, c.name);
      const state = await api('/api/contracts/' + encodeURIComponent(c.id) + '/state', viewParams())
        .catch((e) => ({ error: e.message }));
      parts.push('<details data-contract="' + c.id + '"><summary>' + esc(c.name || short(c.id)) + ' · deployed by ' + esc(name(c.deployed_by)) +
        ' in <a href="#" data-id="' + c.experience + '">' + short(c.experience) + '</a> · ' + c.keys + ' keys</summary>' + tree(state, []) + '</details>');
    }
    $('contracts').innerHTML = parts.join('') || '<p>none</p>';
  } catch (e) { fail(e); }
}

// ---- the node ----

async function refreshStatus() {
  const s = await api('/api/status');
  S.stable = s.finality?.frontier || {};
  S.final = s.finality?.final_checkpoint?.clock || {};
  S.finalDepth = s.finality?.final_checkpoint?.depth ?? null;
  $('node').textContent = 'node ' + name(s.node) + ' · cloud ' + short(s.cloud) + ' · ' + s.experiences + ' experiences · root ' + short(s.root);
}

// New experiences as they arrive: the newest page again, merged, keeping the reader's place.
let refreshing = null;
function arrived() {
  if (refreshing) return;
  refreshing = setTimeout(async () => {
    refreshing = null;
    const sc = $('scroller');
    const anchor = S.rows[Math.max(0, Math.floor(sc.scrollTop / ROW))]?.id;
    const page = await api('/api/log', { limit: 100, only: S.only }).catch(fail);
    if (!page) return;
    const added = addRows(page.log);
    if (added && sc.scrollTop > 0 && anchor !== undefined) {
      sc.scrollTop += (S.index.get(anchor) - Math.floor(sc.scrollTop / ROW)) * ROW;
    }
    $('count').textContent = '(' + S.rows.length + (S.next ? '+' : '') + ')';
    render();
    refreshStatus().catch(fail);
    if (!S.view.heads && !S.view.at && !S.view.seen_by) showState();
    showForks();
  }, 100);
}

async function events() {
  for (;;) {
    try {
      const r = await fetch('/api/events', { headers: { Authorization: 'Bearer ' + S.token } });
      if (!r.ok || !r.body) throw new Error('events: HTTP ' + r.status);
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let end;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          if (/^event: (experience|lagged)$/m.test(block)) arrived();
        }
      }
    } catch (e) { /* the node restarted or the stream was refused: try again */ }
    await new Promise((ok) => setTimeout(ok, 2000));
  }
}

async function open() {
  $('error').textContent = '';
  try {
    S.names = await api('/api/aliases');
    await refreshStatus();
  } catch (e) {
    if (e.status === 401 || e.status === 403) {
      sessionStorage.removeItem('lcloud-token');
      $('login').hidden = false;
    }
    return fail(e);
  }
  $('login').hidden = true;
  await loadMore();
  const without = $('without');
  for (const a of S.lanes) without.add(new Option(name(a), a));
  for (const a of S.lanes) $('only').add(new Option(name(a), a));
  showState();
  showForks();
  events();
}

function wire() {
  $('scroller').addEventListener('scroll', () => requestAnimationFrame(render));
  window.addEventListener('resize', () => render());
  $('rows').addEventListener('click', (ev) => {
    const tr = ev.target.closest('tr.row');
    if (!tr) return;
    S.focus = Number(tr.dataset.i);
    pick(tr.dataset.id, ev.shiftKey);
  });
  // The keyboard's place follows focus, however the row got it (a click, Tab, a link).
  $('rows').addEventListener('focusin', (ev) => {
    const tr = ev.target.closest('tr.row');
    if (tr) S.focus = Number(tr.dataset.i);
  });
  $('rows').addEventListener('keydown', (ev) => {
    const i = S.focus;
    const page = Math.max(1, Math.floor($('scroller').clientHeight / ROW) - 1);
    const to = { ArrowDown: i + 1, ArrowUp: i - 1, PageDown: i + page, PageUp: i - page, Home: 0, End: S.rows.length - 1 }[ev.key];
    if (to !== undefined) { ev.preventDefault(); focusRow(to); }
    if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); pick(S.rows[i].id, ev.shiftKey); }
  });
  $('tree').addEventListener('click', (ev) => {
    const leaf = ev.target.closest('.leaf');
    if (leaf) who(leaf.dataset.path);
  });
  $('tree').addEventListener('keydown', (ev) => {
    const leaf = ev.target.closest('.leaf');
    if (leaf && ev.key === 'Enter') who(leaf.dataset.path);
  });
  const contractKey = (ev) => {
    const leaf = ev.target.closest('.leaf');
    const contract = leaf?.closest('details[data-contract]')?.dataset.contract;
    if (contract && (ev.type === 'click' || ev.key === 'Enter')) whoKey(contract, unpointer(leaf.dataset.path));
  };
  $('contracts').addEventListener('click', contractKey);
  $('contracts').addEventListener('keydown', contractKey);
  for (const list of ['who', 'contracts']) {
    $(list).addEventListener('click', (ev) => {
      const a = ev.target.closest('a[data-id]');
      if (!a) return;
      ev.preventDefault();
      jumpTo(a.dataset.id);
    });
  }
  $('cut').addEventListener('submit', (ev) => {
    ev.preventDefault();
    S.a = null; S.b = null;
    S.view = { at: $('at').value.trim(), without: $('without').value, seen_by: $('seen-by').value.trim() };
    showState();
    render();
  });
  $('now').addEventListener('click', () => {
    S.a = null; S.b = null; S.view = {};
    $('at').value = ''; $('seen-by').value = ''; $('without').value = '';
    showState();
    render();
  });
  $('only').addEventListener('change', () => showOnly($('only').value));
  $('login').addEventListener('submit', (ev) => {
    ev.preventDefault();
    S.token = $('token').value.trim();
    sessionStorage.setItem('lcloud-token', S.token);
    open();
  });
}

window.addEventListener('DOMContentLoaded', () => {
  wire();
  // A token handed over in the address's fragment (never sent to the server) is kept for
  // this tab and taken out of the address.
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem('lcloud-token', decodeURIComponent(m[1]));
    history.replaceState(null, '', location.pathname);
  }
  S.token = sessionStorage.getItem('lcloud-token');
  if (!S.token) { $('login').hidden = false; return; }
  open();
});
