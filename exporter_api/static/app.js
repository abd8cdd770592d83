// The exporter console: wiring of the API, the hub, the state (state.js) and the views.
//
// Data flow: REST gives snapshots, the hub gives events; both become new states through the pure
// functions of state.js, and each change is drawn once per animation frame by the panel views.
// This module owns the side effects only: requests, timers, the URL, storage and focus.

import { Api, ApiError } from './api.js';
import { RunsLive } from './hub.js';
import { $, translateStatic } from './ui.js';
import { LANGUAGES, makeI18n, pickLanguage, storedLanguage, storeLanguage } from './i18n.js';
import * as S from './state.js';
import { RunView } from './views/run.js';
import { renderRecent } from './views/recent.js';
import { buildSelection, renderCatalog, setRunButtonsBusy } from './views/catalog.js';
import { describeUser, fillLoginOptions, fillStreams, loginMessage, showLogin, showLoginError } from './views/login.js';
import { hideConnection, hideError, renderConnection, showError } from './views/banners.js';

const STATE_REFETCH_MS = 700;
const LINK_MARGIN_MS = 15_000; // re-list the files when their links expire sooner than this
const POLL_MS = 2_000; // while the hub is away, an active run is followed by polling
const RECENT_PAGE = 10;
const USER_KEY = 'exporter-console-user';
const SESSION_HINT_KEY = 'exporter-console-session'; // "a refresh cookie may exist": no blind refresh
const COUNTERS_KEY = 'exporter-console-counters'; // the highest counts shown, per run (reload floor)

/** Named timeouts and intervals, so each effect has one pending timer at most. */
class Timers {
  #timers = new Map();
  after(name, ms, fn) { this.clear(name); this.#timers.set(name, setTimeout(() => { this.#timers.delete(name); fn(); }, ms)); }
  every(name, ms, fn) { this.clear(name); this.#timers.set(name, setInterval(fn, ms)); }
  has(name) { return this.#timers.has(name); }
  clear(name) { clearTimeout(this.#timers.get(name)); clearInterval(this.#timers.get(name)); this.#timers.delete(name); }
}

class Console {
  constructor() {
    this.api = new Api();
    this.live = new RunsLive(() => this.api.accessToken(), {
      onEvent: (name, payload) => this.onEvent(name, payload),
      onState: (hub, error) => this.onHub(hub, error),
      onResubscribed: (snapshot) => this.update((s) => S.applySnapshot(s, snapshot)),
    });
    this.state = S.initialState();
    this.languages = navigator.languages ?? [navigator.language];
    this.i18n = makeI18n(pickLanguage(storedLanguage(), this.languages), this.languages);
    this.session = { user: null, catalog: null, databases: [], managers: [] };
    this.timers = new Timers();
    this.runView = new RunView();
    this.drawQueued = false;
    this.refetching = false;
    this.confirmAfterMs = 60_000; // cancelling an export older than this asks first
    this.hubAway = false; // the hub was lost since the last 'connected'
  }

  // --- state and drawing ----------------------------------------------------------------------

  update(fn) {
    const before = this.state;
    this.state = fn(this.state);
    if (this.state === before) return;
    this.remember();
    this.draw();
  }

  draw() {
    if (this.drawQueued) return;
    this.drawQueued = true;
    requestAnimationFrame(() => {
      this.drawQueued = false;
      const now = Date.now();
      this.runView.render(this.state, this.i18n, now);
      renderRecent(this.state, this.i18n, now, { onOpen: (id) => this.openRun(id), onOlder: () => this.loadRecent(true) });
      const run = this.state.run;
      // Elapsed times, rates and "stale" move with the clock: redraw every second while live.
      const ticking = (run && !S.FINAL.has(run.status)) || this.state.recent.items.some((r) => r.status === 'Running');
      if (ticking && !this.timers.has('tick')) this.timers.every('tick', 1000, () => this.draw());
      if (!ticking) this.timers.clear('tick');
    });
  }

  /** Keeps the highest counts shown for the open run, for the floor after a reload. */
  remember() {
    const run = this.state.run;
    if (!run?.groups.length) return;
    try {
      sessionStorage.setItem(COUNTERS_KEY, JSON.stringify({ runId: run.runId, counters: S.countersOf(run) }));
    } catch { /* storage full or off: the snapshot alone is shown */ }
  }

  floorFor(runId) {
    try {
      const saved = JSON.parse(sessionStorage.getItem(COUNTERS_KEY) ?? 'null');
      return saved?.runId === runId ? saved.counters : null;
    } catch { return null; }
  }

  /** `remember`: the person chose it (else it follows the browser until they do). */
  setLanguage(lang, remember = false) {
    this.i18n = makeI18n(lang, this.languages);
    if (remember) storeLanguage(lang);
    document.documentElement.lang = lang;
    document.title = this.i18n.t('app.title');
    translateStatic(document, this.i18n);
    $('#language').value = lang;
    if (this.session.catalog) renderCatalog(this.session.catalog, this.i18n, (mode, target) => this.startRun(mode, target));
    $('#user-info').textContent = describeUser(this.session.user, this.session.databases, this.session.managers);
    renderConnection(this.state.hub, null, this.i18n);
    this.draw();
  }

  // --- boot, login, logout --------------------------------------------------------------------

  async boot() {
    const select = $('#language');
    for (const [code, name] of Object.entries(LANGUAGES)) select.append(new Option(name, code));
    this.setLanguage(this.i18n.lang);
    this.wire();
    this.api.onSessionLost = () => this.signedOut(this.i18n.t('session.ended'), { keepRun: true });
    const options = this.loadLoginOptions();
    let session = null;
    // Without a hint that this browser signed in, there is no refresh cookie to trade: asking
    // anyway only earns a 401 in the browser console of every first visit.
    if (localStorage.getItem(SESSION_HINT_KEY)) {
      try { session = await this.api.refresh(); } catch { session = null; }
      if (!session) localStorage.removeItem(SESSION_HINT_KEY);
    }
    await options;
    if (session) await this.signedIn(session.user ?? storedUser(), { focus: false });
    else showLogin();
  }

  async loadLoginOptions() {
    try {
      const [databases, streams] = await Promise.all([this.api.get('/api/catalog/databases'), this.api.get('/api/catalog/streams')]);
      this.session.databases = listOf(databases, 'databases');
      this.session.managers = listOf(streams, 'managers');
    } catch (error) {
      showError(this.i18n.t('login.optionsFailed', { error: error.message }));
    }
    fillLoginOptions(this.session.databases, this.session.managers);
  }

  async submitLogin(event) {
    event.preventDefault();
    const body = Object.fromEntries(new FormData(event.currentTarget).entries());
    if (!body.dbUsername || !body.dbPassword) { showLoginError(this.i18n.t('login.missing')); return; }
    const submit = $('#login-submit');
    submit.disabled = true;
    showLoginError(null);
    try {
      const data = await this.api.login(body);
      $('#login-password').value = '';
      await this.signedIn(data.user, { focus: true });
    } catch (failure) {
      showLoginError(loginMessage(failure, this.i18n));
      $('#login-password').focus();
    } finally {
      submit.disabled = false;
    }
  }

  async signedIn(user, { focus }) {
    this.session.user = user ?? null;
    localStorage.setItem(SESSION_HINT_KEY, '1');
    if (user) sessionStorage.setItem(USER_KEY, JSON.stringify(user));
    $('#login').hidden = true;
    $('#workspace').hidden = false;
    $('#session').hidden = false;
    $('#user-info').textContent = describeUser(user, this.session.databases, this.session.managers);
    const runId = runIdFromUrl();
    // Out of the hidden form and onto what comes next: the run being reopened, else the catalog.
    if (focus) $(runId ? '#run-title' : '#catalog-title').focus();
    await this.loadCatalog();
    this.live.start().catch(() => {});
    this.loadRecent(false);
    if (runId) await this.openRun(runId, { push: false });
  }

  async logout() {
    await this.live.stop();
    await this.api.logout();
    this.signedOut();
  }

  /** `keepRun`: the session expired, so signing in again reopens the run in the URL. */
  signedOut(message, { keepRun = false } = {}) {
    this.live.stop().catch(() => {});
    localStorage.removeItem(SESSION_HINT_KEY);
    sessionStorage.removeItem(USER_KEY);
    const previous = this.session.user;
    this.session.user = null;
    if (keepRun && previous) {
      // Signing in again is one password away: the rest of the form is as it was.
      $('#login-database').value = previous.databaseId;
      $('#login-manager').value = previous.managerId;
      fillStreams(this.session.managers);
      $('#login-stream').value = previous.streamId;
      $('#login-username').value = previous.login;
    }
    this.closeRun();
    if (!keepRun) setRunInUrl(null);
    this.timers.clear('poll');
    hideConnection();
    this.update((s) => ({ ...S.initialState(), hub: s.hub }));
    showLogin(message);
  }

  async loadCatalog() {
    try {
      this.session.catalog = await this.api.get('/api/catalog/scripts');
    } catch (error) {
      showError(this.i18n.t('catalog.failed', { error: error.message }));
      return;
    }
    renderCatalog(this.session.catalog, this.i18n, (mode, target) => this.startRun(mode, target));
  }

  // --- runs -----------------------------------------------------------------------------------

  async startRun(mode, target = {}) {
    let selection;
    try {
      selection = buildSelection(mode, target, this.session.catalog, this.i18n);
    } catch (error) {
      showError(error.message);
      return;
    }
    setRunButtonsBusy(true);
    try {
      const created = await this.api.post('/api/runs', { mode, selection });
      hideError();
      // The panel is for the new run from this moment: no file of the previous run stays.
      const opening = this.openRun(created.runId, { initial: { runId: created.runId, status: created.status, mode, groups: [] } });
      // On a phone the run panel is below the catalog: bring it into view, with the focus.
      $('#run-panel').scrollIntoView({ block: 'start' });
      $('#run-title').focus({ preventScroll: true });
      await opening;
      this.loadRecent(false);
    } catch (error) {
      showError(this.i18n.t('run.startFailed', { error: error.message }));
    } finally {
      setRunButtonsBusy(false);
    }
  }

  async openRun(runId, { push = true, initial = null } = {}) {
    if (this.state.run?.runId !== runId) this.closeRun();
    setRunInUrl(runId, push);
    this.update((s) => S.openRun(s, runId, initial));
    try {
      const snapshot = await this.api.get(`/api/runs/${encodeURIComponent(runId)}`);
      this.update((s) => S.applyFloor(S.applySnapshot(s, snapshot), runId, this.floorFor(runId)));
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        this.closeRun();
        setRunInUrl(null);
        showError(this.i18n.t('run.notFound'));
        return;
      }
      showError(this.i18n.t('run.loadFailed', { error: error.message }));
    }
    try {
      const snapshot = await this.live.subscribe(runId);
      if (snapshot) this.update((s) => S.applySnapshot(s, snapshot));
    } catch (error) {
      if (this.api.signedIn) showError(this.i18n.t('run.liveFailed', { error: error.message }));
    }
    if (this.state.run && S.FINAL.has(this.state.run.status)) this.timers.after('files', 0, () => this.loadFiles());
  }

  closeRun() {
    if (this.state.run) this.live.unsubscribe().catch(() => {});
    for (const name of ['refetch', 'files']) this.timers.clear(name);
    this.update(S.closeRun);
  }

  onEvent(name, payload) {
    const { state, refetch } = S.applyEvent(this.state, name, payload, Date.now());
    this.update(() => state);
    const run = this.state.run;
    if (name === 'run.updated' && payload?.runId && !this.state.recent.items.some((r) => r.runId === payload.runId)) {
      // A run started elsewhere (another tab, the API): list it, one reload for a burst.
      if (!this.timers.has('recent')) this.timers.after('recent', 500, () => this.loadRecent(false));
    }
    if (!run || payload?.runId !== run.runId) {
      if (name === 'run.updated' && S.FINAL.has(payload.status)) this.loadRecentDetails([payload.runId]);
      return;
    }
    if (refetch) this.scheduleRefetch(0);
    if (name === 'script.updated') {
      this.scheduleRefetch(STATE_REFETCH_MS); // variant details come with the snapshot
      if (S.FINAL.has(payload.status)) this.timers.after('files', 300, () => this.loadFiles());
    }
    if (name === 'run.updated' && S.FINAL.has(payload.status)) {
      this.timers.after('files', 0, () => this.loadFiles());
      this.loadRecentDetails([payload.runId]);
    }
  }

  onHub(hub, error) {
    this.update((s) => S.setHub(s, hub));
    renderConnection(hub, error, this.i18n);
    if (hub === 'connected' && error) showError(this.i18n.t('conn.error', { error: error.message }));
    const away = hub === 'reconnecting' || hub === 'disconnected';
    const wasAway = this.hubAway;
    if (away) this.hubAway = true;
    else if (hub === 'connected') this.hubAway = false;
    if (away) {
      this.timers.every('poll', POLL_MS, () => {
        if (this.state.run && !S.FINAL.has(this.state.run.status)) this.scheduleRefetch(0);
      });
    } else {
      this.timers.clear('poll');
    }
    // Back after an outage: what ended meanwhile sent no event this page saw; read it again.
    // (A new connection after 'disconnected' passes through 'connecting': hence the flag.)
    if (hub === 'connected' && wasAway && this.session.user) {
      this.loadRecent(false);
      this.loadRecentDetails(S.unsettledRecent(this.state));
    }
  }

  scheduleRefetch(delay) {
    if (!this.state.run) return;
    this.timers.after('refetch', delay, async () => {
      const runId = this.state.run?.runId;
      if (!runId) return;
      if (this.refetching) { this.scheduleRefetch(STATE_REFETCH_MS); return; }
      this.refetching = true;
      try {
        const snapshot = await this.api.get(`/api/runs/${encodeURIComponent(runId)}`);
        this.update((s) => S.applySnapshot(s, snapshot));
        if (S.FINAL.has(snapshot.status)) this.timers.after('files', 0, () => this.loadFiles());
      } catch { /* the next event or the hub snapshot brings it */ } finally {
        this.refetching = false;
      }
    });
  }

  async loadFiles() {
    const runId = this.state.run?.runId;
    if (!runId) return;
    try {
      const data = await this.api.get(`/api/runs/${encodeURIComponent(runId)}/files`);
      this.update((s) => S.applyFiles(s, runId, data)); // dropped if another run is open by now
    } catch { /* shown as "No files yet" */ }
  }

  linksFresh() {
    return this.state.files.linksExpireAt - Date.now() > LINK_MARGIN_MS;
  }

  async followFresh(findLink) {
    await this.loadFiles();
    if (!this.linksFresh()) { showError(this.i18n.t('files.linkFailed')); return; }
    await new Promise((resolve) => requestAnimationFrame(resolve));
    findLink()?.click();
  }

  async cancelRun() {
    const run = this.state.run;
    if (!run) return;
    const started = Date.parse(run.startedAt ?? run.createdAt ?? '');
    const elapsed = Date.now() - started;
    if (Number.isFinite(started) && elapsed >= this.confirmAfterMs
        && !window.confirm(this.i18n.t('run.confirmCancel', { elapsed: this.i18n.duration(elapsed) }))) {
      return;
    }
    const button = $('#cancel-run');
    button.disabled = true;
    try {
      const snapshot = await this.api.post(`/api/runs/${encodeURIComponent(run.runId)}/cancel`);
      if (snapshot) this.update((s) => S.applySnapshot(s, snapshot));
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 409)) showError(this.i18n.t('run.cancelFailed', { error: error.message }));
      this.scheduleRefetch(0);
    } finally {
      button.disabled = false;
      // The button goes away with the run's end: keep the focus in the run panel.
      $('#run-status').focus();
    }
  }

  // --- Recent runs ------------------------------------------------------------------------------

  async loadRecent(older) {
    const cursor = older ? this.state.recent.nextCursor : null;
    if (older && !cursor) return;
    let page;
    try {
      page = await this.api.get(`/api/runs?limit=${RECENT_PAGE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    } catch {
      return;
    }
    this.update((s) => S.applyRecent(s, page, older));
    const missing = listOf(page, 'items').map((r) => r.runId)
      .filter((id) => !this.state.recent.details[id] || !S.FINAL.has(this.state.recent.details[id].status));
    await this.loadRecentDetails(missing);
    if (older) $(`[data-testid="recent-run"][data-run-id="${CSS.escape(listOf(page, 'items')[0]?.runId ?? '')}"] button`)?.focus();
  }

  /** The state of each run (what ran, rows, size): a final run's never changes, so once. */
  async loadRecentDetails(runIds) {
    await Promise.all(runIds.map(async (runId) => {
      try {
        const detail = await this.api.get(`/api/runs/${encodeURIComponent(runId)}`);
        this.update((s) => S.applyRecentDetail(s, detail));
      } catch { /* the row keeps what the list said */ }
    }));
  }

  // --- wiring -----------------------------------------------------------------------------------

  wire() {
    $('#language').addEventListener('change', (event) => this.setLanguage(event.target.value, true));
    $('#login-form').addEventListener('submit', (event) => this.submitLogin(event));
    $('#login-manager').addEventListener('change', () => fillStreams(this.session.managers));
    $('#logout').addEventListener('click', () => this.logout());
    $('#run-all').addEventListener('click', () => this.startRun('AllGroups'));
    $('#cancel-run').addEventListener('click', () => this.cancelRun());
    $('#recent-refresh').addEventListener('click', () => this.loadRecent(false));
    $('#reconnect').addEventListener('click', () => this.live.reconnect());
    $('#error-dismiss').addEventListener('click', hideError);
    // Downloads are plain links the browser follows itself (no file is held in page memory); a
    // link about to expire is first swapped for a fresh one.
    $('#zip-link').addEventListener('click', (event) => {
      if (this.linksFresh()) return;
      event.preventDefault();
      this.followFresh(() => $('#zip-link'));
    });
    $('#files').addEventListener('click', (event) => {
      const link = event.target.closest('a[data-testid="file-link"]');
      if (!link || this.linksFresh()) return;
      event.preventDefault();
      const fileId = link.dataset.fileId;
      this.followFresh(() => document.querySelector(`a[data-testid="file-link"][data-file-id="${CSS.escape(fileId)}"]`));
    });
    window.addEventListener('popstate', () => {
      if (!this.api.signedIn) return;
      const runId = runIdFromUrl();
      if (runId && runId !== this.state.run?.runId) this.openRun(runId, { push: false });
      if (!runId) this.closeRun();
    });
  }
}

function storedUser() {
  try { return JSON.parse(sessionStorage.getItem(USER_KEY)); } catch { return null; }
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

const app = new Console();
// Exposed for debugging in the browser console and for tests that want to peek at the state.
window.exporterConsole = app;
app.boot();
