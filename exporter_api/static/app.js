// The exporter console: login, catalog, runs with live progress over /hubs/runs.
//
// Data flow: REST gives snapshots (GET /api/runs/{id}), the hub gives events. Both go through
// `applyState` / `applyEvent`, which never move a status backwards (Queued -> Running -> final)
// and never shrink counters, so a late snapshot or a replayed event cannot undo newer news.
// Rendering is batched per animation frame; the DOM of a run is built once and then updated
// in place, so buttons and links stay put while progress streams in.

import { Api, ApiError } from './api.js';
import { RunsLive } from './hub.js';
import { $, h, clear, formatBytes, formatCount, formatDuration, formatTime } from './ui.js';

const FINAL = new Set(['Success', 'NoData', 'Failed', 'Cancelled']);
const RANK = { Queued: 0, Running: 1 }; // every final status ranks 2
const rank = (status) => RANK[status] ?? 2;
const newer = (current, incoming) => (!current || rank(incoming) >= rank(current) ? incoming : current);
const STATE_REFETCH_MS = 700;
const LINK_MARGIN_MS = 15_000; // re-list the files when their links expire sooner than this
const USER_KEY = 'exporter-console-user';

const api = new Api();
const live = new RunsLive(() => api.accessToken(), {
  onEvent: (name, payload) => applyEvent(name, payload),
  onState: (state, error) => showConnection(state, error),
  onResubscribed: (state) => applyState(state),
});

const model = {
  user: null,
  catalog: null,
  profiles: new Map(),
  run: null, // the RunState DTO of the open run, updated in place
  files: [],
  // Files come with signed, short-lived download links (plain <a download>, no token in the URL).
  zipUrl: null,
  linksExpireAt: 0,
  speed: new Map(), // scriptId -> {t, rows, bytes, rowRate, byteRate}
  recent: [],
};

// ------------------------------------------------------------------------------------------
// Boot, login, logout

async function boot() {
  wireStaticHandlers();
  api.onSessionLost = () => signedOut('Your session has ended. Please sign in again.');
  const options = loadLoginOptions();
  let session = null;
  try {
    session = await api.refresh();
  } catch {
    session = null;
  }
  await options;
  if (session) {
    await signedIn(session.user ?? storedUser());
  } else {
    showLogin();
  }
}

async function loadLoginOptions() {
  try {
    const [databases, streams] = await Promise.all([
      api.get('/api/catalog/databases'), api.get('/api/catalog/streams'),
    ]);
    model.databases = listOf(databases, 'databases');
    model.managers = listOf(streams, 'managers');
  } catch (error) {
    model.databases = [];
    model.managers = [];
    showError(`Could not load the login options: ${error.message}`);
  }
  fillOptions($('#login-database'), model.databases);
  fillOptions($('#login-manager'), model.managers);
  fillStreams();
}

function fillStreams() {
  const manager = model.managers?.find((m) => m.id === $('#login-manager').value);
  fillOptions($('#login-stream'), manager?.streams ?? []);
}

function fillOptions(select, items) {
  const previous = select.value;
  clear(select);
  for (const item of items) {
    select.append(h('option', { value: item.id }, item.displayName ?? item.id));
  }
  if (items.some((item) => item.id === previous)) select.value = previous;
}

function showLogin(message) {
  $('#session').hidden = true;
  $('#workspace').hidden = true;
  $('#login').hidden = false;
  const error = $('#login-error');
  error.hidden = !message;
  error.textContent = message ?? '';
  $('#login-username').focus();
}

async function submitLogin(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const body = Object.fromEntries(new FormData(form).entries());
  const error = $('#login-error');
  const submit = $('#login-submit');
  if (!body.dbUsername || !body.dbPassword) {
    error.textContent = 'Enter your database user and password.';
    error.hidden = false;
    return;
  }
  submit.disabled = true;
  error.hidden = true;
  try {
    const data = await api.login(body);
    $('#login-password').value = '';
    await signedIn(data.user);
  } catch (failure) {
    error.textContent = loginMessage(failure);
    error.hidden = false;
  } finally {
    submit.disabled = false;
  }
}

function loginMessage(failure) {
  if (!(failure instanceof ApiError)) return `Cannot reach the server: ${failure.message}`;
  switch (failure.status) {
    case 401: return 'Wrong user name or password.';
    case 429: return 'Too many attempts. Wait a moment and try again.';
    case 503: return 'The database is unreachable right now.';
    default: return failure.message;
  }
}

async function signedIn(user) {
  model.user = user ?? null;
  if (user) sessionStorage.setItem(USER_KEY, JSON.stringify(user));
  $('#login').hidden = true;
  $('#workspace').hidden = false;
  $('#session').hidden = false;
  $('#user-info').textContent = user
    ? `${user.login} · ${user.databaseId} · ${user.managerId}/${user.streamId}`
    : 'Signed in';
  await loadCatalog();
  live.start().catch(() => {});
  loadRecent();
  const runId = runIdFromUrl();
  if (runId) await openRun(runId, { push: false });
}

function storedUser() {
  try { return JSON.parse(sessionStorage.getItem(USER_KEY)); } catch { return null; }
}

async function logout() {
  await live.stop();
  await api.logout();
  signedOut();
}

function signedOut(message) {
  live.stop().catch(() => {});
  sessionStorage.removeItem(USER_KEY);
  model.user = null;
  closeRun();
  setRunInUrl(null);
  hideConnection();
  showLogin(message);
}

// ------------------------------------------------------------------------------------------
// Catalog: a tree of groups and scripts with export options

async function loadCatalog() {
  try {
    model.catalog = await api.get('/api/catalog/scripts');
  } catch (error) {
    showError(`Could not load the catalog: ${error.message}`);
    return;
  }
  model.profiles = new Map((model.catalog.columnsProfiles ?? []).map((p) => [p.id, p]));
  renderCatalog();
}

function renderCatalog() {
  const tree = clear($('#catalog-tree'));
  for (const group of model.catalog.groups) {
    const groupBox = h('input', {
      type: 'checkbox', id: `cg-${group.id}`, checked: true, 'data-testid': 'group-enabled',
    });
    const scriptsList = h('ul', { class: 'tree-scripts', 'aria-label': `Scripts of ${group.displayName}` });
    const item = h('li', { class: 'tree-group', 'data-testid': 'catalog-group', 'data-group-id': group.id },
      h('div', { class: 'tree-row' },
        groupBox,
        h('label', { for: groupBox.id, class: 'tree-name' }, group.displayName, ' ', h('code', {}, group.id)),
        h('button', {
          type: 'button', class: 'secondary small', 'data-testid': 'run-group',
          'data-group-id': group.id, 'aria-label': `Run group ${group.displayName}`,
          onclick: () => startRun('SingleGroup', { groupId: group.id }),
        }, 'Run group')),
      scriptsList);
    for (const script of group.scripts) scriptsList.append(renderCatalogScript(group, script));
    groupBox.addEventListener('change', () => {
      for (const box of scriptsList.querySelectorAll('[data-testid="script-enabled"]')) {
        box.checked = groupBox.checked;
      }
      groupBox.indeterminate = false;
    });
    scriptsList.addEventListener('change', (event) => {
      if (event.target.dataset.testid === 'script-enabled') syncGroupBox(groupBox, scriptsList);
    });
    tree.append(item);
  }
}

function renderCatalogScript(group, script) {
  const key = `${group.id}-${script.id}`;
  const profile = model.profiles.get(script.columnsProfileId);
  const enabled = h('input', {
    type: 'checkbox', id: `cs-${key}`, checked: true, 'data-testid': 'script-enabled',
  });
  const mode = h('select', {
    id: `mode-${key}`, class: 'small', 'data-testid': 'export-mode',
  }, h('option', { value: 'AllColumns' }, 'All columns'),
  h('option', { value: 'CustomColumns', disabled: !profile }, 'Custom columns'));
  const picker = h('fieldset', { class: 'columns', 'data-testid': 'column-picker', hidden: true },
    h('legend', {}, `Columns (${profile?.id ?? 'no profile'})`),
    ...(profile?.items ?? []).map((column) => h('label', { class: 'column' },
      h('input', { type: 'checkbox', value: column.id, checked: true, 'data-testid': 'column' }),
      ` ${column.label}`)));
  mode.addEventListener('change', () => { picker.hidden = mode.value !== 'CustomColumns'; });
  return h('li', {
    class: 'tree-script', 'data-testid': 'catalog-script',
    'data-group-id': group.id, 'data-script-id': script.id,
  },
  h('div', { class: 'tree-row' },
    enabled,
    h('label', { for: enabled.id, class: 'tree-name' }, script.displayName, ' ', h('code', {}, script.id)),
    h('span', { class: 'lane', title: 'Execution lane: scripts of one lane run one after another' },
      `lane ${script.executionLane}`),
    h('label', { for: mode.id, class: 'visually-hidden' }, `Export mode of ${script.displayName}`),
    mode,
    h('button', {
      type: 'button', class: 'secondary small', 'data-testid': 'run-script',
      'data-group-id': group.id, 'data-script-id': script.id,
      'aria-label': `Run script ${script.displayName}`,
      onclick: () => startRun('SingleScript', { groupId: group.id, scriptId: script.id }),
    }, 'Run script')),
  picker);
}

function syncGroupBox(groupBox, scriptsList) {
  const boxes = [...scriptsList.querySelectorAll('[data-testid="script-enabled"]')];
  const on = boxes.filter((box) => box.checked).length;
  groupBox.checked = on > 0;
  groupBox.indeterminate = on > 0 && on < boxes.length;
}

/** The contract's selection for a mode; throws a user-facing Error when it would be invalid. */
function buildSelection(mode, target) {
  const groups = [];
  let enabledScripts = 0;
  for (const item of document.querySelectorAll('[data-testid="catalog-group"]')) {
    const groupId = item.dataset.groupId;
    const groupOn = mode === 'AllGroups'
      ? item.querySelector('[data-testid="group-enabled"]').checked
      : groupId === target.groupId;
    const scripts = [];
    for (const row of item.querySelectorAll('[data-testid="catalog-script"]')) {
      const scriptId = row.dataset.scriptId;
      const scriptOn = groupOn && (mode === 'SingleScript'
        ? scriptId === target.scriptId
        : row.querySelector('[data-testid="script-enabled"]').checked);
      let exportMode = row.querySelector('[data-testid="export-mode"]').value;
      const selectedColumnItemIds = [...row.querySelectorAll('[data-testid="column"]')]
        .filter((box) => box.checked).map((box) => box.value);
      if (exportMode === 'CustomColumns' && selectedColumnItemIds.length === 0) {
        if (scriptOn) throw new Error(`Pick at least one column for ${scriptId}, or export all columns.`);
        exportMode = 'AllColumns';
      }
      if (scriptOn) enabledScripts += 1;
      scripts.push(exportMode === 'CustomColumns'
        ? { scriptId, enabled: scriptOn, exportMode, selectedColumnItemIds }
        : { scriptId, enabled: scriptOn, exportMode });
    }
    groups.push({ groupId, enabled: groupOn, scripts });
  }
  if (enabledScripts === 0) throw new Error('Nothing to run: tick at least one script.');
  return { groups };
}

async function startRun(mode, target = {}) {
  let selection;
  try {
    selection = buildSelection(mode, target);
  } catch (error) {
    showError(error.message);
    return;
  }
  setRunButtonsBusy(true);
  try {
    const created = await api.post('/api/runs', { mode, selection });
    hideError();
    await openRun(created.runId, { initial: { runId: created.runId, status: created.status, mode, groups: [] } });
    loadRecent();
  } catch (error) {
    showError(`Could not start the run: ${error.message}`);
  } finally {
    setRunButtonsBusy(false);
  }
}

function setRunButtonsBusy(busy) {
  for (const button of document.querySelectorAll('#run-all, [data-testid="run-group"], [data-testid="run-script"]')) {
    button.disabled = busy;
  }
}

// ------------------------------------------------------------------------------------------
// The open run: snapshots, events, files

let refetchTimer = null;
let refetching = false;
let filesTimer = null;
let elapsedTimer = null;

async function openRun(runId, { push = true, initial = null } = {}) {
  if (model.run?.runId !== runId) closeRun();
  setRunInUrl(runId, push);
  if (initial) applyState(initial);
  try {
    applyState(await api.get(`/api/runs/${encodeURIComponent(runId)}`));
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      closeRun();
      setRunInUrl(null);
      showError(`Run ${runId} was not found (or belongs to someone else).`);
      return;
    }
    showError(`Could not load run ${runId}: ${error.message}`);
  }
  try {
    const state = await live.subscribe(runId);
    if (state) applyState(state);
  } catch (error) {
    if (api.signedIn) showError(`Live updates for this run are unavailable: ${error.message}`);
  }
  // The snapshot carries the files (with fresh signed links): nothing else to fetch.
}

function closeRun() {
  if (model.run) live.unsubscribe().catch(() => {});
  model.run = null;
  setFiles(null);
  model.speed.clear();
  clearTimeout(refetchTimer);
  clearTimeout(filesTimer);
  clearInterval(elapsedTimer);
  elapsedTimer = null;
  runDom = null;
  render();
}

/** Merges a RunState snapshot (REST or SubscribeRun) into the model. */
function applyState(state) {
  if (!state?.runId) return;
  const current = model.run;
  if (!current || current.runId !== state.runId) {
    model.run = structuredClone(state);
    model.run.groups ??= [];
  } else {
    mergeNode(current, state);
    const groups = new Map(current.groups.map((g) => [g.groupId, g]));
    current.groups = (state.groups ?? []).map((incoming) => {
      const group = groups.get(incoming.groupId);
      if (!group) return structuredClone(incoming);
      mergeNode(group, incoming);
      const scripts = new Map((group.scripts ?? []).map((s) => [s.scriptId, s]));
      group.scripts = (incoming.scripts ?? []).map((inScript) => {
        const script = scripts.get(inScript.scriptId);
        if (!script) return structuredClone(inScript);
        mergeNode(script, inScript);
        const variants = new Map((script.variants ?? []).map((v) => [v.variant, v]));
        script.variants = (inScript.variants ?? []).map((inVariant) => {
          const variant = variants.get(inVariant.variant);
          if (!variant) return structuredClone(inVariant);
          mergeNode(variant, inVariant);
          return variant;
        });
        return script;
      });
      return group;
    });
  }
  if (Array.isArray(state.files) && state.linksExpireAt) setFiles(state);
  if (FINAL.has(model.run.status)) scheduleFiles(0);
  render();
}

/** The files of a RunFiles or RunState body (null: none), with their links' expiry. */
function setFiles(data) {
  if (data && data.files.length < model.files.length) return; // an older snapshot
  model.files = data?.files ?? [];
  model.zipUrl = data?.zipUrl ?? null;
  model.linksExpireAt = data ? Date.parse(data.linksExpireAt) : 0;
}

/** Whether the signed links will still be valid when the browser follows them. */
function linksFresh() {
  return model.linksExpireAt - Date.now() > LINK_MARGIN_MS;
}

function mergeNode(target, incoming) {
  const status = incoming.status ? newer(target.status, incoming.status) : target.status;
  const moved = !incoming.status || status !== target.status
    || rank(incoming.status) === rank(target.status);
  for (const [key, value] of Object.entries(incoming)) {
    if (Array.isArray(value)) continue;
    if (key === 'rowsExported' || key === 'bytesWritten') {
      target[key] = Math.max(target[key] ?? 0, value ?? 0);
    } else if (key !== 'status' && (moved || target[key] == null)) {
      target[key] = value;
    }
  }
  target.status = status;
}

function findGroup(groupId) {
  return model.run?.groups.find((g) => g.groupId === groupId);
}

function findScripts(scriptId, groupId) {
  const scripts = [];
  for (const group of model.run?.groups ?? []) {
    if (groupId && group.groupId !== groupId) continue;
    for (const script of group.scripts ?? []) if (script.scriptId === scriptId) scripts.push(script);
  }
  return scripts;
}

/** Applies one hub event (run.updated, group.updated, script.updated, script.progress). */
function applyEvent(name, payload) {
  if (name === 'run.updated' && payload?.runId) followMyRun(payload);
  const run = model.run;
  if (!run || payload?.runId !== run.runId) return;
  let known = true;
  switch (name) {
    case 'run.updated':
      mergeNode(run, { status: payload.status, updatedAt: payload.updatedAt });
      if (FINAL.has(run.status)) {
        run.finishedAt ??= payload.updatedAt;
        scheduleRefetch(0);
        scheduleFiles(0);
        loadRecent();
      } else if (payload.status === 'Running') {
        run.startedAt ??= payload.updatedAt;
      }
      updateRecentStatus(run.runId, run.status);
      break;
    case 'group.updated': {
      const group = findGroup(payload.groupId);
      if (group) mergeNode(group, { status: payload.status }); else known = false;
      break;
    }
    case 'script.updated': {
      const scripts = findScripts(payload.scriptId, payload.groupId);
      for (const script of scripts) {
        mergeNode(script, { status: payload.status, message: payload.message ?? null });
        if (script.status === 'Running') script.startedAt ??= new Date().toISOString();
      }
      known = scripts.length > 0;
      scheduleRefetch(STATE_REFETCH_MS); // variant details come with the snapshot
      if (FINAL.has(payload.status)) scheduleFiles(300);
      break;
    }
    case 'script.progress': {
      const scripts = findScripts(payload.scriptId);
      for (const script of scripts) {
        mergeNode(script, { rowsExported: payload.rowsExported, bytesWritten: payload.bytesWritten });
      }
      trackSpeed(payload);
      known = scripts.length > 0;
      break;
    }
    default:
      return;
  }
  if (!known) scheduleRefetch(0);
  render();
}

function trackSpeed({ scriptId, rowsExported, bytesWritten }) {
  const now = performance.now();
  const last = model.speed.get(scriptId);
  if (!last) {
    model.speed.set(scriptId, { t: now, rows: rowsExported, bytes: bytesWritten, rowRate: 0, byteRate: 0 });
    return;
  }
  const seconds = (now - last.t) / 1000;
  if (seconds < 0.2) return; // too close together to say anything about speed
  const smooth = (previous, sample) => (previous ? previous * 0.5 + sample * 0.5 : sample);
  last.rowRate = smooth(last.rowRate, Math.max(0, rowsExported - last.rows) / seconds);
  last.byteRate = smooth(last.byteRate, Math.max(0, bytesWritten - last.bytes) / seconds);
  Object.assign(last, { t: now, rows: rowsExported, bytes: bytesWritten });
}

function scheduleRefetch(delay) {
  if (!model.run) return;
  clearTimeout(refetchTimer);
  refetchTimer = setTimeout(async () => {
    const run = model.run;
    if (!run) return;
    if (refetching) { scheduleRefetch(STATE_REFETCH_MS); return; }
    refetching = true;
    try {
      const state = await api.get(`/api/runs/${encodeURIComponent(run.runId)}`);
      if (model.run?.runId === state.runId) applyState(state);
    } catch { /* the next event or the hub snapshot brings it */ } finally {
      refetching = false;
    }
  }, delay);
}

function scheduleFiles(delay) {
  clearTimeout(filesTimer);
  filesTimer = setTimeout(loadFiles, delay);
}

async function loadFiles() {
  const run = model.run;
  if (!run) return;
  try {
    const data = await api.get(`/api/runs/${encodeURIComponent(run.runId)}/files`);
    if (model.run?.runId !== run.runId) return;
    setFiles(data);
    renderFiles();
  } catch { /* shown as "No files yet" */ }
}

async function cancelRun() {
  const run = model.run;
  if (!run) return;
  const button = $('#cancel-run');
  button.disabled = true;
  try {
    const state = await api.post(`/api/runs/${encodeURIComponent(run.runId)}/cancel`);
    if (state) applyState(state);
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 409)) {
      showError(`Could not cancel: ${error.message}`);
    }
    scheduleRefetch(0);
  } finally {
    button.disabled = false;
  }
}

// ------------------------------------------------------------------------------------------
// Rendering the run

let renderQueued = false;
let runDom = null; // {key, groups: Map, scripts: Map, variants: Map}

function render() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    renderRun();
  });
}

function structureKey(run) {
  return run.groups.map((g) => `${g.groupId}[${(g.scripts ?? []).map((s) => `${s.scriptId}(${(s.variants ?? []).map((v) => v.variant).join(',')})`).join(';')}]`).join('|');
}

function renderRun() {
  const run = model.run;
  $('#run-empty').hidden = Boolean(run);
  $('#run-body').hidden = !run;
  $('#cancel-run').hidden = !run || FINAL.has(run.status);
  if (!run) {
    clear($('#run-groups'));
    renderFiles();
    return;
  }
  const key = structureKey(run);
  if (!runDom || runDom.key !== key || runDom.runId !== run.runId) buildRunDom(run, key);

  $('#run-id').textContent = run.runId;
  setStatus($('#run-status'), run.status);
  $('#run-mode').textContent = run.mode ?? '';
  $('#run-started').textContent = formatTime(run.startedAt ?? run.createdAt);
  updateElapsed();
  if (!FINAL.has(run.status) && !elapsedTimer) elapsedTimer = setInterval(updateElapsed, 1000);
  if (FINAL.has(run.status) && elapsedTimer) { clearInterval(elapsedTimer); elapsedTimer = null; }
  const runError = $('#run-error');
  runError.hidden = !run.error;
  runError.textContent = run.error ?? '';

  const scripts = run.groups.flatMap((g) => g.scripts ?? []);
  const done = scripts.filter((s) => FINAL.has(s.status)).length;
  const rows = scripts.reduce((sum, s) => sum + (s.rowsExported ?? 0), 0);
  const bytes = scripts.reduce((sum, s) => sum + (s.bytesWritten ?? 0), 0);
  let runFraction = null; // indeterminate while running with nothing finished yet
  if (FINAL.has(run.status)) runFraction = 1;
  else if (run.status === 'Queued') runFraction = 0;
  else if (scripts.length && done) runFraction = done / scripts.length;
  setProgress($('#run-progress'), runFraction, run.status);
  $('#run-progress-text').textContent = scripts.length
    ? `${done}/${scripts.length} scripts · ${formatCount(rows)} rows · ${formatBytes(bytes)}`
    : '';

  for (const group of run.groups) {
    const dom = runDom.groups.get(group.groupId);
    setStatus(dom.status, group.status);
    for (const script of group.scripts ?? []) updateScriptDom(group, script);
  }
}

function buildRunDom(run, key) {
  const container = clear($('#run-groups'));
  runDom = { key, runId: run.runId, groups: new Map(), scripts: new Map() };
  for (const group of run.groups) {
    const status = h('span', { class: 'status', 'data-testid': 'group-status', 'data-group-id': group.groupId });
    const list = h('ul', { class: 'run-scripts' });
    container.append(h('section', {
      class: 'run-group', 'data-testid': 'live-group', 'data-group-id': group.groupId,
      'aria-label': `Group ${group.displayName}`,
    },
    h('div', { class: 'run-group-head' }, h('h3', {}, group.displayName, ' ', h('code', {}, group.groupId)), status),
    list));
    runDom.groups.set(group.groupId, { status });
    for (const script of group.scripts ?? []) list.append(buildScriptDom(group, script));
  }
}

function buildScriptDom(group, script) {
  const ids = { 'data-group-id': group.groupId, 'data-script-id': script.scriptId };
  const dom = {
    status: h('span', { class: 'status', 'data-testid': 'script-status', ...ids }),
    progress: h('progress', { max: 1, 'data-testid': 'script-progress', 'aria-label': `Progress of ${script.displayName}` }),
    metrics: h('span', { class: 'metrics', 'data-testid': 'script-metrics', ...ids }),
    message: h('p', { class: 'message', 'data-testid': 'script-message', ...ids }),
    error: h('p', { class: 'form-error', 'data-testid': 'script-error', ...ids, hidden: true }),
    variants: new Map(),
  };
  const variantList = h('ol', { class: 'variants', 'aria-label': `Variants of ${script.displayName}` });
  for (const variant of script.variants ?? []) {
    const status = h('span', {
      class: 'status small', 'data-testid': 'variant-status', ...ids, 'data-variant': variant.variant,
    });
    const detail = h('span', { class: 'muted' });
    variantList.append(h('li', { 'data-testid': 'variant', ...ids, 'data-variant': variant.variant },
      h('span', { class: 'variant-name' }, `Variant ${variant.variant}`), status, detail));
    dom.variants.set(variant.variant, { status, detail });
  }
  runDom.scripts.set(`${group.groupId}/${script.scriptId}`, dom);
  return h('li', { class: 'run-script', 'data-testid': 'live-script', ...ids },
    h('div', { class: 'run-script-head' },
      h('span', { class: 'script-name' }, script.displayName, ' ', h('code', {}, script.scriptId)),
      h('span', { class: 'lane' }, `lane ${script.executionLane}`),
      script.exportMode === 'CustomColumns' && script.columns
        ? h('span', { class: 'muted', title: script.columns.join(', ') }, `${script.columns.length} columns`)
        : null,
      dom.status),
    h('div', { class: 'progress-line' }, dom.progress, dom.metrics),
    dom.message, dom.error, variantList);
}

function updateScriptDom(group, script) {
  const dom = runDom.scripts.get(`${group.groupId}/${script.scriptId}`);
  if (!dom) return;
  setStatus(dom.status, script.status);
  const variants = script.variants ?? [];
  const total = variants.length || variantTotal(script.message);
  const finished = variants.filter((v) => FINAL.has(v.status)).length;
  const current = variantCurrent(script.message);
  // The bar counts finished variants; the row total is unknown until the end, so a running
  // script with no finished variant yet shows an indeterminate (moving) bar.
  let fraction = null;
  if (FINAL.has(script.status)) fraction = 1;
  else if (script.status === 'Queued') fraction = 0;
  else if (total) fraction = Math.max(finished, current ? current - 1 : 0) / total || null;
  setProgress(dom.progress, fraction, script.status);

  const parts = [`${formatCount(script.rowsExported ?? 0)} rows`, formatBytes(script.bytesWritten ?? 0)];
  const speed = model.speed.get(script.scriptId);
  const since = Date.parse(script.startedAt ?? '');
  if (script.status === 'Running' && speed?.rowRate) {
    parts.push(`${formatCount(Math.round(speed.rowRate))} rows/s`, `${formatBytes(speed.byteRate)}/s`);
  } else if (script.status === 'Running' && since && script.rowsExported && Date.now() - since > 500) {
    // No two progress events seen yet (e.g. just after a reload): the average since the start.
    const seconds = (Date.now() - since) / 1000;
    parts.push(`${formatCount(Math.round(script.rowsExported / seconds))} rows/s`,
      `${formatBytes(script.bytesWritten / seconds)}/s`);
  } else if (FINAL.has(script.status) && script.startedAt && script.finishedAt) {
    parts.push(formatDuration(Date.parse(script.finishedAt) - Date.parse(script.startedAt)));
  }
  dom.metrics.textContent = parts.join(' · ');
  // A final message that only repeats the status adds nothing next to the badge.
  const message = script.message && script.message !== script.status ? script.message : '';
  dom.message.textContent = message;
  dom.message.hidden = !message;
  dom.error.textContent = script.error ?? '';
  dom.error.hidden = !script.error;
  for (const variant of variants) {
    const vdom = dom.variants.get(variant.variant);
    if (!vdom) continue;
    setStatus(vdom.status, variant.status);
    let { rowsExported: rows = 0, bytesWritten: bytes = 0 } = variant;
    if (variant.status === 'Running') {
      // script.progress carries the script's totals; the running variant has what the others lack.
      const others = variants.filter((v) => v !== variant);
      rows = Math.max(rows, (script.rowsExported ?? 0) - others.reduce((sum, v) => sum + (v.rowsExported ?? 0), 0));
      bytes = Math.max(bytes, (script.bytesWritten ?? 0) - others.reduce((sum, v) => sum + (v.bytesWritten ?? 0), 0));
    }
    const bits = [];
    if (rows || FINAL.has(variant.status)) bits.push(`${formatCount(rows)} rows`);
    if (bytes) bits.push(formatBytes(bytes));
    if (variant.error) bits.push(variant.error);
    vdom.detail.textContent = bits.join(' · ');
  }
}

const variantCurrent = (message) => Number(/variant\s+(\d+)\s*\/\s*\d+/i.exec(message ?? '')?.[1] ?? 0);
const variantTotal = (message) => Number(/variant\s+\d+\s*\/\s*(\d+)/i.exec(message ?? '')?.[1] ?? 0);

function setStatus(element, status) {
  element.textContent = status ?? '';
  element.dataset.status = status ?? '';
}

function setProgress(element, fraction, status) {
  element.dataset.status = status ?? '';
  if (fraction === null || fraction === undefined) {
    element.removeAttribute('value'); // indeterminate
  } else {
    element.value = Math.min(1, Math.max(0, fraction));
  }
}

function updateElapsed() {
  const run = model.run;
  const start = run && Date.parse(run.startedAt ?? run.createdAt ?? '');
  if (!start) { $('#run-elapsed').textContent = ''; return; }
  const end = run.finishedAt && FINAL.has(run.status) ? Date.parse(run.finishedAt) : Date.now();
  $('#run-elapsed').textContent = formatDuration(end - start);
}

function renderFiles() {
  const list = clear($('#files'));
  const run = model.run;
  $('#files-empty').hidden = model.files.length > 0;
  const zip = $('#zip-link');
  zip.hidden = !run || model.files.length === 0;
  if (model.zipUrl) zip.href = model.zipUrl;
  // Files in the run's order: groups, scripts, then variants.
  const order = new Map();
  for (const group of run?.groups ?? []) {
    for (const script of group.scripts ?? []) order.set(`${group.groupId}/${script.scriptId}`, order.size);
  }
  const position = (file) => order.get(`${file.groupId}/${file.scriptId}`) ?? order.size;
  const files = [...model.files].sort((a, b) => position(a) - position(b) || a.variant - b.variant);
  for (const file of files) {
    const link = h('a', {
      href: file.downloadUrl, download: file.name, 'data-testid': 'file-link',
      'data-file-id': file.fileId, 'data-script-id': file.scriptId, 'data-variant': file.variant,
    }, file.name);
    list.append(h('li', { 'data-testid': 'file' },
      link,
      h('span', { class: 'muted' },
        `${file.groupId}/${file.scriptId} · variant ${file.variant} · ${formatCount(file.rows)} rows · ${formatBytes(file.sizeBytes)}`,
        ' · sha256 ', h('code', { title: file.sha256 }, file.sha256?.slice(0, 12) ?? ''))));
  }
}

// ------------------------------------------------------------------------------------------
// Recent runs

async function loadRecent() {
  try {
    const data = await api.get('/api/runs?limit=10');
    model.recent = listOf(data, 'items');
  } catch {
    return;
  }
  const body = clear($('#recent-list'));
  $('#recent-empty').hidden = model.recent.length > 0;
  $('#recent-table').hidden = model.recent.length === 0;
  for (const run of model.recent) {
    const current = run.runId === model.run?.runId;
    body.append(h('tr', { 'data-testid': 'recent-run', 'data-run-id': run.runId, class: current ? 'current' : '' },
      h('td', {}, h('time', { datetime: run.createdAt }, formatTime(run.createdAt)),
        h('br'), h('code', { class: 'run-ulid' }, run.runId)),
      h('td', {}, run.mode),
      h('td', {}, h('span', { class: 'status small', 'data-status': run.status, 'data-testid': 'recent-status' }, run.status)),
      h('td', {}, h('button', {
        type: 'button', class: 'link', 'aria-label': `Open run ${run.runId}`,
        onclick: () => openRun(run.runId),
      }, current ? 'Open ✓' : 'Open'))));
  }
}

/**
 * The hub's user feed sends run.updated for every run of this user (not only the open one):
 * it keeps the statuses in Recent runs current, and lists a run started elsewhere (another
 * tab, the API) without polling.
 */
function followMyRun(payload) {
  const known = model.recent.find((r) => r.runId === payload.runId);
  if (known) {
    known.status = payload.status;
    updateRecentStatus(payload.runId, payload.status);
  } else if (payload.runId !== model.run?.runId) {
    scheduleRecent();
  }
}

let recentTimer = null;
function scheduleRecent() {
  if (recentTimer) return;  // one reload for a burst of new runs
  recentTimer = setTimeout(() => { recentTimer = null; loadRecent(); }, 500);
}

function updateRecentStatus(runId, status) {
  const badge = document.querySelector(`[data-testid="recent-run"][data-run-id="${CSS.escape(runId)}"] [data-testid="recent-status"]`);
  if (badge) setStatus(badge, status);
}

// ------------------------------------------------------------------------------------------
// Banners, URL, wiring

// While the hub is down, an active run is still followed by polling its snapshot.
const POLL_MS = 2_000;
let pollTimer = null;

function pollWhileDisconnected(on) {
  clearInterval(pollTimer);
  pollTimer = on ? setInterval(() => {
    if (model.run && !FINAL.has(model.run.status)) scheduleRefetch(0);
  }, POLL_MS) : null;
}

function showConnection(state, error) {
  pollWhileDisconnected(state === 'reconnecting' || state === 'disconnected');
  const banner = $('#connection-banner');
  const text = $('#connection-text');
  const retry = $('#reconnect');
  banner.dataset.state = state;
  if (state === 'connected' || state === 'connecting') {
    if (state === 'connected') banner.hidden = true;
    if (state === 'connected' && error) showError(`Live updates: ${error.message}`);
    return;
  }
  banner.hidden = false;
  retry.hidden = state !== 'disconnected';
  text.textContent = state === 'reconnecting'
    ? 'Connection to the server lost. Reconnecting…'
    : 'Live updates are disconnected. Retrying every few seconds…';
  text.title = error?.message ?? '';
}

function hideConnection() {
  pollWhileDisconnected(false);
  $('#connection-banner').hidden = true;
}

function showError(message) {
  $('#error-text').textContent = message;
  $('#error-banner').hidden = false;
}

function hideError() {
  $('#error-banner').hidden = true;
}

function runIdFromUrl() {
  const params = new URLSearchParams(location.search);
  return params.get('run') || new URLSearchParams(location.hash.slice(1)).get('run');
}

function setRunInUrl(runId, push = false) {
  const url = new URL(location.href);
  if (runId) url.searchParams.set('run', runId); else url.searchParams.delete('run');
  url.hash = '';
  if (url.href === location.href) return;
  if (push) history.pushState({ runId }, '', url); else history.replaceState({ runId }, '', url);
}

function listOf(data, key) {
  if (Array.isArray(data)) return data;
  return data?.[key] ?? data?.items ?? [];
}

function wireStaticHandlers() {
  $('#login-form').addEventListener('submit', submitLogin);
  $('#login-manager').addEventListener('change', fillStreams);
  $('#logout').addEventListener('click', logout);
  $('#run-all').addEventListener('click', () => startRun('AllGroups'));
  $('#cancel-run').addEventListener('click', cancelRun);
  $('#recent-refresh').addEventListener('click', loadRecent);
  $('#reconnect').addEventListener('click', () => live.reconnect());
  $('#error-dismiss').addEventListener('click', hideError);
  // Downloads are plain links the browser follows itself (no file is held in page memory); a
  // link about to expire is first swapped for a fresh one.
  $('#zip-link').addEventListener('click', (event) => {
    if (linksFresh()) return;
    event.preventDefault();
    followFresh(() => $('#zip-link'));
  });
  $('#files').addEventListener('click', (event) => {
    const link = event.target.closest('a[data-testid="file-link"]');
    if (!link || linksFresh()) return;
    event.preventDefault();
    const fileId = link.dataset.fileId;
    followFresh(() => document.querySelector(`a[data-testid="file-link"][data-file-id="${CSS.escape(fileId)}"]`));
  });
  window.addEventListener('popstate', () => {
    if (!api.signedIn) return;
    const runId = runIdFromUrl();
    if (runId && runId !== model.run?.runId) openRun(runId, { push: false });
    if (!runId) closeRun();
  });
}

async function followFresh(findLink) {
  await loadFiles();
  if (!linksFresh()) { showError('Download failed: could not get a fresh download link'); return; }
  findLink()?.click();
}

// Exposed for debugging in the browser console and for tests that want to peek at the state.
window.exporterConsole = { model, api, live };

boot();
