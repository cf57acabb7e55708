// The web console (decision 38) and tenant portal (decision 47): plain JavaScript, no
// framework, no build step. Everything it shows comes from the broker's API (docs/api.md) with
// the key kept in sessionStorage; GET /api/v0/whoami decides what it shows: everything for an
// admin key (plus the Keys page), the tenant's own endpoints and deliveries for a tenant key
// (never a call the key may not make), a message for a producer-only key. API data reaches the
// page only as text (textContent, text nodes, attribute values set one by one), never as HTML:
// URLs, headers, errors and response excerpts are chosen by others.

const KEY_STORE = 'webhook-broker.api-key';
const POLL_MS = 2000; // the chart and the page on show are refreshed this often
const CHART_POINTS = 60; // 2 minutes at POLL_MS
const PAGE_SIZE = 50;
const HEALTH_MAX = 20; // a tenant's subscriptions whose health is asked one by one per refresh

const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// el('td', {class: 'x'}, 'text', child): a new element; strings become text nodes.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('data-')) node.setAttribute(k, String(v));
    else if (k === 'class' || k === 'type' || k === 'title' || k === 'colspan') node.setAttribute(k, String(v));
    else throw new Error(`el: attribute ${k} is not allowed`);
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    node.append(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
  }
  return node;
}

function button(label, onClick, attrs) {
  const b = el('button', { type: 'button', ...attrs }, label);
  b.addEventListener('click', (ev) => {
    ev.preventDefault();
    run(() => onClick(b));
  });
  return b;
}

// Replaces tbody's rows with build()'s unless the data they show is the same as last time (a
// refresh every POLL_MS must not swap a button away under the pointer).
const rendered = new WeakMap(); // tbody -> the JSON of the data its rows show

function renderRows(tbody, data, build, empty) {
  const sig = JSON.stringify(data);
  if (rendered.get(tbody) === sig) return;
  rendered.set(tbody, sig);
  const rows = build();
  tbody.replaceChildren(...rows);
  const columns = tbody.parentElement.tHead.rows[0].cells.length;
  if (!rows.length) tbody.append(el('tr', {}, el('td', { colspan: columns, class: 'muted' }, empty)));
}

function show(node, on) {
  node.hidden = !on;
}

function notice(text, isError) {
  const n = $('notice');
  n.textContent = text || '';
  n.className = isError ? 'error' : 'ok';
}

// Runs an async action, reporting its error in the notice line (a 401 has shown the form).
async function run(action) {
  try {
    await action();
  } catch (e) {
    if (e instanceof ApiError && (e.status === 401 || e.code === 'stale')) return;
    notice(e instanceof ApiError ? `${e.status} ${e.code || ''}: ${e.message}` : String(e.message || e), true);
  }
}

// --- the API -------------------------------------------------------------------------------

function apiKey() {
  return sessionStorage.getItem(KEY_STORE);
}

// What the page shows for the key, from GET /api/v0/whoami: 'admin', 'tenant' or 'producer';
// null while no key is in use.
let mode = null;
// Bumped whenever the key changes (a new key, Forget key, a 401): an answer to a call made
// under an older key is dropped (ApiError 'stale', ignored by run) instead of being shown.
let epoch = 0;

async function api(method, path, body) {
  const key = apiKey();
  const started = epoch;
  if (!key) {
    if ($('login').hidden) showLogin(''); // not when it is on show: it may be being typed in
    throw new ApiError(401, 'unauthorized', 'no API key');
  }
  const init = {
    method,
    headers: { Authorization: `Bearer ${key}` },
    cache: 'no-store',
    credentials: 'omit',
    redirect: 'error',
  };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'network', `the broker did not answer (${e.message})`);
  }
  const text = await resp.text();
  if (started !== epoch) throw new ApiError(0, 'stale', 'the key changed during the call');
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (resp.status === 401) {
    sessionStorage.removeItem(KEY_STORE);
    showLogin('The broker refused this API key (401): it is unknown or was revoked.');
    throw new ApiError(401, 'unauthorized', 'the API key was refused');
  }
  if (!resp.ok) {
    const err = data && data.error ? data.error : {};
    throw new ApiError(resp.status, err.code || '', err.message || text.slice(0, 200) || resp.statusText);
  }
  return data;
}

const seg = encodeURIComponent;
const subPath = (s) => `/api/v0/webhooks/${seg(s.eventName)}/${seg(s.id)}`;

// --- key form ------------------------------------------------------------------------------

function showLogin(message) {
  epoch++;
  stopPolling();
  resetViews();
  show($('app'), false);
  show($('nav'), false);
  show($('forget-key'), false);
  show($('switch-badge'), false);
  show($('who'), false);
  show($('producer-only'), false);
  show($('login'), true);
  $('login-error').textContent = message || '';
  $('key-input').value = '';
  $('key-input').focus();
  // The next key starts on its first page (no hashchange event: nothing is routed now).
  if (location.hash) history.replaceState(null, '', location.pathname + location.search);
}

// Asks who the key is, then shows what it may use.
async function showApp() {
  epoch++;
  show($('login'), false);
  let w;
  try {
    w = await api('GET', '/api/v0/whoami');
  } catch (e) {
    if (e instanceof ApiError && (e.status === 401 || e.code === 'stale')) return; // the form is back
    showLogin(`The key could not be checked: ${e.message}`);
    return;
  }
  applyMode(w);
  show($('forget-key'), true);
  if (mode === 'producer') {
    show($('producer-only'), true);
    return;
  }
  show($('app'), true);
  show($('nav'), true);
  route();
  startPolling();
}

function applyMode(w) {
  mode = w.roles.includes('admin') ? 'admin' : w.roles.includes('tenant') ? 'tenant' : 'producer';
  // Pages are shown by route() and the badge by updateBadge(): the rest of the admin's extras here.
  for (const n of document.querySelectorAll('.admin-only:not(.page):not(.badge)')) show(n, mode === 'admin');
  const portal = mode === 'tenant';
  $('title').textContent = portal ? 'Webhook portal' : 'Webhook broker';
  document.title = portal ? `Webhook portal: ${w.tenant}` : 'Webhook broker console';
  const also = w.roles.filter((r) => r !== mode);
  const whoText = mode === 'admin' ? 'admin' : `${mode === 'tenant' ? 'tenant' : 'producer'}${w.tenant ? ` ${w.tenant}` : ''}`;
  $('who').textContent = also.length ? `${whoText} (also ${also.join(', ')})` : whoText;
  $('who').setAttribute('data-mode', mode);
  $('who').setAttribute('data-tenant', w.tenant || '');
  show($('who'), true);
  $('producer-tenant').textContent = w.tenant ? `for the tenant ${w.tenant} only` : 'for any tenant or none';
}

// Forgets everything the previous key was shown, so that the next key's pages start empty.
function resetViews() {
  mode = null;
  $('title').textContent = 'Webhook broker';
  document.title = 'Webhook broker console';
  for (const tbody of document.querySelectorAll('#app tbody')) {
    tbody.replaceChildren();
    rendered.delete(tbody);
  }
  subsCache = [];
  stopEdit();
  detailSub = null;
  detailJob = null;
  show($('sub-detail'), false);
  show($('job-detail'), false);
  $('sub-detail-fields').replaceChildren();
  $('detail-fields').replaceChildren();
  for (const id of ['sub-detail-id', 'detail-id', 'secret-sub', 'secret-value', 'key-made', 'key-value',
    'recover-progress', 'subs-more', 'who', 'producer-tenant']) $(id).textContent = '';
  show($('secret-box'), false);
  show($('key-box'), false);
  $('recover-sub').replaceChildren();
  for (const id of ['recover-form', 'jobs-filter', 'key-form', 'switch-form']) $(id).reset();
  for (const view of [jobsView, deadView]) {
    view.cursors = [null];
    view.next = null;
  }
  samples.length = 0;
  statsBase = null;
  statsPrev = null;
  for (const id of ['total-delivered', 'total-failed', 'total-dead']) $(id).textContent = '0';
  drawChart();
  notice('');
}

// --- pages ---------------------------------------------------------------------------------

const pages = {
  subscriptions: { refresh: refreshSubscriptions },
  deliveries: { refresh: () => refreshJobs(jobsView) },
  dead: { refresh: refreshDead },
  switch: { refresh: refreshSwitch, adminOnly: true },
  keys: { refresh: refreshKeys, adminOnly: true },
};

function currentPage() {
  const name = location.hash.replace(/^#/, '');
  return Object.hasOwn(pages, name) && (mode === 'admin' || !pages[name].adminOnly) ? name : 'subscriptions';
}

function route() {
  const name = currentPage();
  for (const p of Object.keys(pages)) {
    show($(`page-${p}`), p === name);
    $(`nav-${p}`).classList.toggle('current', p === name);
  }
  show($('job-detail'), false);
  show($('sub-detail'), false);
  notice('');
  run(pages[name].refresh);
}

let timer = null;
let ticking = false;

function startPolling() {
  if (timer === null) {
    timer = setInterval(tick, POLL_MS);
    tick();
  }
}

function stopPolling() {
  if (timer !== null) clearInterval(timer);
  timer = null;
}

async function tick() {
  if (ticking || document.hidden || !mode || mode === 'producer') return;
  ticking = true;
  // Each step is a new call: none may start under a key typed after this tick began (run()
  // swallows the 'stale' answer of the step in flight, so the next step checks for itself).
  const started = epoch;
  const live = () => epoch === started && apiKey();
  try {
    await run(pollStats);
    if (live()) await run(pages[currentPage()].refresh);
    if (live() && !$('job-detail').hidden && detailJob) await run(() => openJob(detailJob));
    if (live() && !$('sub-detail').hidden && detailSub) await run(() => openSubscription(detailSub));
  } finally {
    ticking = false;
  }
}

function fmtTime(t) {
  return t ? t.replace('T', ' ').replace('Z', ' UTC') : '';
}

// --- subscriptions -------------------------------------------------------------------------

let subsCache = [];
let editing = null; // the subscription being edited, or null

async function refreshSubscriptions() {
  const [list, adminHealth] = await Promise.all([
    api('GET', '/api/v0/webhooks?page_size=500'),
    mode === 'admin' ? healthOfAll() : null,
  ]);
  const health = adminHealth || await healthOfEach(list.webhooks);
  subsCache = list.webhooks;
  renderRows($('subs-table').tBodies[0], [list.webhooks, [...health.values()]], () => list.webhooks.map((s) => {
    const h = health.get(s.id);
    const paused = s.status === 'paused';
    const actions = el('td', { class: 'actions' },
      button('Health', () => openSubscription(s), { 'data-action': 'health' }),
      button('Edit', () => startEdit(s), { 'data-action': 'edit' }),
      paused
        ? button('Resume', () => setStatus(s, 'active'), { 'data-action': 'resume' })
        : button('Pause', () => setStatus(s, 'paused'), { 'data-action': 'pause' }),
      button('Rotate secret', () => rotate(s), { 'data-action': 'rotate' }),
      button('Dead letters', () => {
        location.hash = '#dead';
        $('recover-sub').value = s.id;
      }, { 'data-action': 'dead' }),
      button('Delete', () => remove(s), { 'data-action': 'delete', class: 'danger' }));
    return el('tr', { 'data-id': s.id, 'data-status': s.status },
      el('td', {}, s.eventName),
      el('td', { class: 'url' }, s.webhookUrl),
      mode === 'admin' ? el('td', { 'data-field': 'tenant', class: s.tenant ? undefined : 'muted' }, s.tenant || 'global') : null,
      el('td', { class: `status status-${s.status}`, 'data-field': 'status' }, s.status),
      el('td', { class: `health health-${h ? h.health : 'unknown'}`, 'data-field': 'health',
        title: h && h.disabledReason ? h.disabledReason : undefined }, h ? h.health : '?'),
      el('td', { 'data-field': 'failures' }, h ? String(h.consecutiveFailures) : ''),
      el('td', { 'data-field': 'description' }, s.description || ''),
      actions);
  }), 'No subscriptions yet.');
  $('subs-more').textContent = list.total > list.webhooks.length
    ? `Showing ${list.webhooks.length} of ${list.total}.` : '';
  fillRecoverSelect();
}

// id -> {health, consecutiveFailures, disabledReason}. An admin key gets every subscription's
// from GET /api/v0/admin/delivery (which also feeds the switch badge); that route is the
// admin's, so a tenant key asks GET .../status of its first HEALTH_MAX subscriptions.
async function healthOfAll() {
  const delivery = await api('GET', '/api/v0/admin/delivery');
  updateBadge(delivery);
  const health = new Map();
  for (const h of (delivery.subscriptions && delivery.subscriptions.listed) || []) health.set(h.id, h);
  return health;
}

async function healthOfEach(subs) {
  const health = new Map();
  await Promise.all(subs.slice(0, HEALTH_MAX).map(async (s) => {
    const st = await api('GET', `${subPath(s)}/status`);
    health.set(s.id, { id: s.id, health: st.health, consecutiveFailures: st.consecutiveFailures,
      disabledReason: st.disabledReason });
  }));
  return health;
}

// GET .../status: the health, the counts of the last hour and day, the latency and the latest
// attempts and lifecycle changes of one subscription.
let detailSub = null;

async function openSubscription(s) {
  const st = await api('GET', `${subPath(s)}/status`);
  detailSub = s;
  $('sub-detail-id').textContent = `${st.eventName} → ${st.url} (${st.subscriptionId})`;
  const counts = (c) => `${c.delivered} delivered, ${c.failedAttempts} failed attempts, ${c.dead} dead`;
  const fields = [
    ['Health', st.health], ['Disabled', st.disabledReason ? `${fmtTime(st.disabledAt)}: ${st.disabledReason}` : ''],
    ['Paused', fmtTime(st.pausedAt)], ['Circuit open until', fmtTime(st.circuitOpenUntil)],
    ['Failing since', fmtTime(st.failingSince)], ['Consecutive failures', String(st.consecutiveFailures)],
    ['Last success', fmtTime(st.lastSuccessAt)], ['Last failure', fmtTime(st.lastFailureAt)],
    ['Last hour', counts(st.lastHour)], ['Last 24 hours', counts(st.last24Hours)],
    ['Latency', st.latencyMs.samples ? `p50 ${st.latencyMs.p50} ms, p99 ${st.latencyMs.p99} ms (${st.latencyMs.samples} attempts)` : ''],
    ['Jobs waiting', String(st.jobsWaiting)],
  ];
  $('sub-detail-fields').replaceChildren(...fields.flatMap(([k, v]) => [el('dt', {}, k),
    el('dd', { 'data-field': k.toLowerCase().replace(/ /g, '-') }, v || '')]));
  const rows = st.recentActivity.map((a) => el('tr', { 'data-kind': a.kind },
    el('td', {}, fmtTime(a.at)),
    el('td', {}, a.kind),
    el('td', {}, a.jobId || ''),
    el('td', {}, a.attempt === undefined ? '' : String(a.attempt)),
    el('td', {}, a.statusCode === undefined || a.statusCode === null ? '' : String(a.statusCode)),
    el('td', {}, a.durationMs === undefined || a.durationMs === null ? '' : String(a.durationMs)),
    el('td', {}, a.kind === 'attempt' ? a.error || '' : a.detail || '')));
  $('activity-table').tBodies[0].replaceChildren(...rows);
  show($('sub-detail'), true);
}

// Parses an optional JSON field of the form: undefined when empty.
function jsonField(id, what) {
  const text = $(id).value.trim();
  if (!text) return undefined;
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`${what} is not valid JSON: ${e.message}`);
  }
}

function formSettings() {
  const body = {
    webhookUrl: $('sub-url').value.trim(),
    description: $('sub-description').value === '' ? null : $('sub-description').value,
  };
  const headers = jsonField('sub-headers', 'Headers');
  const retry = jsonField('sub-retry', 'Retry policy');
  const rate = jsonField('sub-rate', 'Rate limit');
  const timeout = $('sub-timeout').value.trim();
  if (editing) {
    // PATCH: an empty field resets the setting to the default; only what changed is sent, so
    // the subscription's activity log names just that.
    body.headers = headers === undefined ? null : headers;
    body.retryPolicy = retry === undefined ? null : retry;
    body.rateLimit = rate === undefined ? null : rate;
    body.timeoutSeconds = timeout === '' ? null : Number(timeout);
    const was = { ...editing, headers: editing.headers && Object.keys(editing.headers).length ? editing.headers : null };
    for (const k of Object.keys(body)) {
      if (JSON.stringify(body[k]) === JSON.stringify(was[k] === undefined ? null : was[k])) delete body[k];
    }
  } else {
    if (headers !== undefined) body.headers = headers;
    if (retry !== undefined) body.retryPolicy = retry;
    if (rate !== undefined) body.rateLimit = rate;
    if (timeout !== '') body.timeoutSeconds = Number(timeout);
    if (body.description === null) delete body.description;
    const tenant = $('sub-tenant').value.trim();
    if (mode === 'admin' && tenant) body.tenant = tenant; // a tenant key's land in its tenant
  }
  return body;
}

async function submitSubscription() {
  const body = formSettings();
  if (editing) {
    const s = await api('PATCH', subPath(editing), body);
    notice(`Subscription ${s.id} saved.`);
    stopEdit();
  } else {
    body.eventName = $('sub-event').value.trim();
    const s = await api('POST', '/api/v0/webhooks', body);
    showSecret(s);
    notice(`Subscription ${s.id} ${s.status === 'active' ? 'created' : 'registered'} for ${s.eventName}.`);
    $('sub-form').reset();
  }
  await refreshSubscriptions();
}

function startEdit(s) {
  editing = s;
  $('sub-form-title').textContent = `Edit subscription ${s.id}`;
  $('sub-event').value = s.eventName;
  $('sub-event').disabled = true;
  $('sub-tenant').value = s.tenant || '';
  $('sub-tenant').disabled = true; // fixed at creation
  $('sub-url').value = s.webhookUrl;
  $('sub-description').value = s.description || '';
  $('sub-headers').value = s.headers && Object.keys(s.headers).length ? JSON.stringify(s.headers) : '';
  $('sub-retry').value = s.retryPolicy ? JSON.stringify(s.retryPolicy) : '';
  $('sub-rate').value = s.rateLimit ? JSON.stringify(s.rateLimit) : '';
  $('sub-timeout').value = s.timeoutSeconds === null || s.timeoutSeconds === undefined ? '' : String(s.timeoutSeconds);
  $('sub-submit').textContent = 'Save';
  show($('sub-cancel'), true);
  $('sub-url').focus();
}

function stopEdit() {
  editing = null;
  $('sub-form').reset();
  $('sub-form-title').textContent = 'New subscription';
  $('sub-event').disabled = false;
  $('sub-tenant').disabled = false;
  $('sub-submit').textContent = 'Create';
  show($('sub-cancel'), false);
}

async function setStatus(s, status) {
  await api('PATCH', subPath(s), { status });
  notice(`Subscription ${s.id} ${status === 'paused' ? 'paused' : 'resumed'}.`);
  await refreshSubscriptions();
}

async function rotate(s) {
  if (!confirm(`Rotate the signing secret of ${s.eventName} → ${s.webhookUrl}? The old one keeps signing for 24 hours.`)) return;
  const r = await api('POST', `${subPath(s)}/rotate-secret`, {});
  showSecret(r);
  notice(`New secret for ${s.id}; the previous one signs until ${fmtTime(r.previousSecretExpiresAt) || 'now'}.`);
}

async function remove(s) {
  if (!confirm(`Delete the subscription ${s.eventName} → ${s.webhookUrl}? Its waiting jobs are cancelled.`)) return;
  await api('DELETE', subPath(s));
  if (detailSub && detailSub.id === s.id) {
    detailSub = null;
    show($('sub-detail'), false);
  }
  if (editing && editing.id === s.id) stopEdit();
  notice(`Subscription ${s.id} deleted.`);
  await refreshSubscriptions();
}

function showSecret(s) {
  $('secret-sub').textContent = `${s.eventName} → ${s.webhookUrl} (${s.id})`;
  $('secret-value').textContent = s.secret || '';
  $('secret-copy').textContent = 'Copy';
  show($('secret-box'), Boolean(s.secret));
}

// A Copy button: the text of the element named by its data-copy, to the clipboard; when the
// browser refuses, the text is selected for Ctrl+C instead.
async function copyText(btn) {
  const node = $(btn.getAttribute('data-copy'));
  try {
    await navigator.clipboard.writeText(node.textContent);
    btn.textContent = 'Copied';
  } catch {
    const range = document.createRange();
    range.selectNodeContents(node);
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    btn.textContent = 'Selected: press Ctrl+C';
  }
}

// --- jobs: recent deliveries and dead letters ----------------------------------------------

// A paged, filtered job list: cursors[] are the pages' starting cursors (null: the newest).
function jobView(tableId, prefix, fixedStatus) {
  return { table: $(tableId), prefix, fixedStatus, cursors: [null], next: null };
}
const jobsView = jobView('jobs-table', 'jobs', null);
const deadView = jobView('dead-table', 'dead', 'dead');

function jobQuery(view) {
  const q = new URLSearchParams({ limit: String(PAGE_SIZE) });
  const status = view.fixedStatus || $('filter-status').value;
  if (status) q.set('status', status);
  if (!view.fixedStatus) {
    const ev = $('filter-event').value.trim();
    const sub = $('filter-sub').value.trim();
    if (ev) q.set('event', ev);
    if (sub) q.set('subscription', sub);
  }
  const cursor = view.cursors[view.cursors.length - 1];
  if (cursor) q.set('cursor', cursor);
  return q;
}

async function refreshJobs(view) {
  const data = await api('GET', `/api/v0/jobs?${jobQuery(view)}`);
  view.next = data.next;
  renderRows(view.table.tBodies[0], data.jobs, () => data.jobs.map((j) => {
    const actions = el('td', { class: 'actions' },
      button('Attempts', () => openJob(j.id), { 'data-action': 'attempts' }));
    if (j.status === 'dead' || j.status === 'cancelled' || j.status === 'delivered') {
      actions.append(button(j.status === 'delivered' ? 'Send again' : 'Retry',
        () => retryJob(j, view), { 'data-action': 'retry' }));
    }
    return el('tr', { 'data-id': j.id, 'data-status': j.status, 'data-subscription': j.subscriptionId },
      el('td', {}, fmtTime(j.createdAt)),
      el('td', {}, j.eventName),
      el('td', { class: 'url' }, j.url),
      el('td', { class: `status status-${j.status}`, 'data-field': 'status' }, j.status),
      el('td', { 'data-field': 'attempts' }, String(j.attempts)),
      el('td', { class: 'answer' }, lastAnswer(j)),
      actions);
  }), 'No jobs.');
  show($(`${view.prefix}-older`), Boolean(data.next));
  show($(`${view.prefix}-newest`), view.cursors.length > 1);
}

function lastAnswer(j) {
  const parts = [];
  if (j.lastStatusCode !== null && j.lastStatusCode !== undefined) parts.push(`HTTP ${j.lastStatusCode}`);
  if (j.lastError && j.lastError !== `HTTP ${j.lastStatusCode}`) parts.push(j.lastError);
  if (j.nextAttemptAt) parts.push(`next attempt ${fmtTime(j.nextAttemptAt)}`);
  return parts.join(' · ');
}

async function retryJob(j, view) {
  const r = await api('POST', `/api/v0/jobs/${seg(j.id)}/retry`);
  notice(`Job ${r.id} queued again for attempt ${r.nextAttempt}.`);
  await refreshJobs(view);
}

let detailJob = null;

async function openJob(id) {
  const j = await api('GET', `/api/v0/jobs/${seg(id)}`);
  detailJob = id;
  $('detail-id').textContent = j.id;
  const fields = [
    ['Status', j.status], ['Event', `${j.eventName} (${j.eventId})`], ['Subscription', j.subscriptionId],
    ['URL', j.url], ['Attempts', String(j.attempts)], ['Last answer', lastAnswer(j)],
    ['Created', fmtTime(j.createdAt)], ['Updated', fmtTime(j.updatedAt)],
    ['Delivered', fmtTime(j.deliveredAt)],
  ];
  $('detail-fields').replaceChildren(...fields.flatMap(([k, v]) => [el('dt', {}, k),
    el('dd', { 'data-field': k.toLowerCase() }, v || '')]));
  $('detail-fields').parentElement.setAttribute('data-status', j.status);
  const rows = (j.attemptLog || []).map((a) => el('tr', { 'data-attempt': a.attempt },
    el('td', {}, String(a.attempt)),
    el('td', {}, fmtTime(a.startedAt)),
    el('td', {}, a.durationMs === null ? '' : String(a.durationMs)),
    el('td', { 'data-field': 'code' }, a.statusCode === null ? '-' : String(a.statusCode)),
    el('td', {}, a.error || ''),
    el('td', { class: 'excerpt' }, a.responseExcerpt || '')));
  $('attempts-table').tBodies[0].replaceChildren(...rows);
  show($('job-detail'), true);
}

// --- recover -------------------------------------------------------------------------------

// The dead letters, and the subscriptions for the recover form when no other page loaded them.
async function refreshDead() {
  await refreshJobs(deadView);
  if (!subsCache.length) {
    subsCache = (await api('GET', '/api/v0/webhooks?page_size=500')).webhooks;
    fillRecoverSelect();
  }
}

function fillRecoverSelect() {
  const sel = $('recover-sub');
  const keep = sel.value;
  sel.replaceChildren(...subsCache.map((s) => {
    const o = el('option', {}, `${s.eventName} → ${s.webhookUrl}`);
    o.value = s.id;
    return o;
  }));
  if (keep) sel.value = keep;
  if (!$('recover-since').value) {
    $('recover-since').value = new Date(Date.now() - 24 * 3600 * 1000).toISOString();
  }
}

async function submitRecover() {
  if (!subsCache.length) await refreshSubscriptions();
  const s = subsCache.find((x) => x.id === $('recover-sub').value);
  if (!s) throw new Error('choose a subscription');
  const body = { since: $('recover-since').value.trim() };
  const until = $('recover-until').value.trim();
  if (until) body.until = until;
  const started = epoch;
  let rec = await api('POST', `${subPath(s)}/recover`, body);
  const progress = $('recover-progress');
  for (let i = 0; i < 150; i++) {
    progress.textContent = `Recovery ${rec.id}: ${rec.status}, ${rec.done} of ${rec.total} dead jobs sent again` +
      (rec.error ? ` (${rec.error})` : '');
    if (rec.status !== 'running') break;
    await new Promise((ok) => setTimeout(ok, 1000));
    if (epoch !== started) return; // another key now: its pages are not this recovery's
    rec = await api('GET', `${subPath(s)}/recover/${seg(rec.id)}`);
  }
  await refreshJobs(deadView);
}

// --- the global delivery switch ------------------------------------------------------------

function updateBadge(d) {
  const badge = $('switch-badge');
  badge.textContent = d.status === 'offline' ? 'deliveries OFFLINE' : 'deliveries online';
  badge.className = `badge switch-${d.status}`;
  show(badge, true);
}

async function refreshSwitch() {
  const d = await api('GET', '/api/v0/admin/delivery');
  updateBadge(d);
  $('switch-status').textContent = d.status;
  $('page-switch').setAttribute('data-status', d.status);
  $('switch-message').textContent = d.message === null ? '' : d.message;
  $('switch-since').textContent = fmtTime(d.since);
  $('switch-waiting').textContent = String(d.waitingJobs);
}

async function submitSwitch(status) {
  const note = $('switch-note').value;
  const body = { status };
  if (note !== '') body.message = note;
  const d = await api('PUT', '/api/v0/admin/delivery', body);
  notice(`Deliveries are ${d.status}.`);
  await refreshSwitch();
}

// --- API keys (admin) ----------------------------------------------------------------------

async function refreshKeys() {
  const data = await api('GET', '/api/v0/keys');
  const keys = data.keys.slice().reverse(); // newest first
  renderRows($('keys-table').tBodies[0], keys, () => keys.map((k) => {
    const actions = el('td', { class: 'actions' });
    if (!k.revokedAt) actions.append(button('Revoke', () => revokeKey(k), { 'data-action': 'revoke', class: 'danger' }));
    return el('tr', { 'data-id': k.id, 'data-revoked': k.revokedAt ? 'yes' : 'no' },
      el('td', { 'data-field': 'name' }, k.name || ''),
      el('td', { class: 'url', 'data-field': 'prefix' }, `${k.prefix}…`),
      el('td', { 'data-field': 'roles' }, k.roles.join(', ')),
      el('td', { 'data-field': 'tenant' }, k.tenant || ''),
      el('td', {}, fmtTime(k.createdAt)),
      el('td', { 'data-field': 'revoked' }, fmtTime(k.revokedAt)),
      actions);
  }), 'No keys made through the API yet (the WEBHOOK_API_KEYS of the environment are not listed).');
}

async function submitKey() {
  const roles = ['admin', 'tenant', 'producer'].filter((r) => $(`key-role-${r}`).checked);
  if (!roles.length) throw new Error('choose at least one role');
  const body = { roles };
  const tenant = $('key-tenant').value.trim();
  const name = $('key-name').value.trim();
  if (tenant) body.tenant = tenant;
  if (name) body.name = name;
  const k = await api('POST', '/api/v0/keys', body);
  $('key-made').textContent = `${k.name || k.id} (roles ${k.roles.join(', ')}${k.tenant ? `; tenant ${k.tenant}` : ''})`;
  $('key-value').textContent = k.key;
  $('key-copy').textContent = 'Copy';
  show($('key-box'), true);
  $('key-form').reset();
  notice(`Key ${k.prefix}… made.`);
  await refreshKeys();
}

async function revokeKey(k) {
  if (!confirm(`Revoke the key ${k.name || ''} ${k.prefix}…? It stops working at once, on every broker.`)) return;
  const r = await api('DELETE', `/api/v0/keys/${seg(k.id)}`);
  notice(`Key ${r.prefix}… revoked.`);
  await refreshKeys();
}

// --- the live chart ------------------------------------------------------------------------

// GET /api/v0/stats with a fixed since (an hour before this page opened, so a browser clock
// ahead of the broker's is not "in the future") gives counts that only grow; the difference
// between two polls over the time between them is a rate per second.
const statsSince = new Date(Date.now() - 3600 * 1000).toISOString();
let statsBase = null;
let statsPrev = null;
const samples = []; // {delivered, failed} per second

async function pollStats() {
  const s = await api('GET', `/api/v0/stats?since=${seg(statsSince)}`);
  const now = performance.now();
  const t = s.total;
  if (statsBase === null) statsBase = t;
  if (statsPrev !== null) {
    const dt = (now - statsPrev.at) / 1000;
    if (dt > 0) {
      samples.push({
        delivered: Math.max(0, t.delivered - statsPrev.t.delivered) / dt,
        failed: Math.max(0, t.failedAttempts - statsPrev.t.failedAttempts) / dt,
      });
      if (samples.length > CHART_POINTS) samples.shift();
    }
  }
  statsPrev = { t, at: now };
  $('total-delivered').textContent = String(t.delivered - statsBase.delivered);
  $('total-failed').textContent = String(t.failedAttempts - statsBase.failedAttempts);
  $('total-dead').textContent = String(t.dead - statsBase.dead);
  drawChart();
}

function drawChart() {
  const last = samples[samples.length - 1];
  $('rate-delivered').textContent = last ? last.delivered.toFixed(1) : '-';
  $('rate-failed').textContent = last ? last.failed.toFixed(1) : '-';
  let top = 1;
  for (const p of samples) top = Math.max(top, p.delivered, p.failed);
  const scale = niceCeil(top);
  $('chart-scale').textContent = String(scale);
  const w = 600;
  const h = 120;
  const step = w / (CHART_POINTS - 1);
  const x0 = w - (samples.length - 1) * step;
  const pts = (key) => samples.map((p, i) =>
    `${(x0 + i * step).toFixed(1)},${(h - 2 - (p[key] / scale) * (h - 4)).toFixed(1)}`).join(' ');
  $('chart-delivered').setAttribute('points', pts('delivered'));
  $('chart-failed').setAttribute('points', pts('failed'));
  $('chart').setAttribute('data-samples', String(samples.length));
}

// 1, 2, 5, 10, 20, 50, ... at or above v.
function niceCeil(v) {
  let m = 1;
  for (;;) {
    for (const f of [1, 2, 5]) if (f * m >= v) return f * m;
    m *= 10;
  }
}

// --- wiring --------------------------------------------------------------------------------

function init() {
  $('login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const key = $('key-input').value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_STORE, key);
    $('login-error').textContent = '';
    showApp();
  });
  $('forget-key').addEventListener('click', () => {
    sessionStorage.removeItem(KEY_STORE);
    showLogin('The key was forgotten.');
  });
  $('sub-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    run(submitSubscription);
  });
  $('sub-cancel').addEventListener('click', stopEdit);
  $('secret-hide').addEventListener('click', () => {
    $('secret-value').textContent = '';
    show($('secret-box'), false);
  });
  $('key-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    run(submitKey);
  });
  $('key-hide').addEventListener('click', () => {
    $('key-value').textContent = '';
    show($('key-box'), false);
  });
  for (const b of document.querySelectorAll('button[data-copy]')) b.addEventListener('click', () => run(() => copyText(b)));
  $('jobs-filter').addEventListener('submit', (ev) => {
    ev.preventDefault();
    jobsView.cursors = [null];
    run(() => refreshJobs(jobsView));
  });
  for (const view of [jobsView, deadView]) {
    $(`${view.prefix}-older`).addEventListener('click', () => {
      if (view.next) view.cursors.push(view.next);
      run(() => refreshJobs(view));
    });
    $(`${view.prefix}-newest`).addEventListener('click', () => {
      view.cursors = [null];
      run(() => refreshJobs(view));
    });
  }
  $('recover-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    run(submitRecover);
  });
  $('switch-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const status = ev.submitter && ev.submitter.getAttribute('data-status');
    if (status === 'offline' || status === 'online') run(() => submitSwitch(status));
  });
  $('sub-detail-close').addEventListener('click', () => {
    detailSub = null;
    show($('sub-detail'), false);
  });
  $('detail-close').addEventListener('click', () => {
    detailJob = null;
    show($('job-detail'), false);
  });
  window.addEventListener('hashchange', () => {
    if (apiKey() && mode && mode !== 'producer') route();
  });
  if (apiKey()) showApp();
  else showLogin('');
}

init();
