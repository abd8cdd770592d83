// The console's state and its pure update functions: (state, input) -> new state.
//
// Theory of operation. Two sources tell the page about runs: REST snapshots (GET /api/runs/{id},
// the hub's SubscribeRun answer) and hub events (run.updated, group.updated, script.updated,
// script.progress). Both are folded in here and neither can undo newer news: a status never
// moves backwards (Queued -> Running -> final) and row/byte counters never shrink, also across a
// reload (the page keeps the highest counts it showed and passes them back as a floor).
//
// Everything the page shows about the open run belongs to that run: opening another run (or
// starting one) replaces the run, its files and its progress tracks in one step, and files or
// snapshots that arrive later for a run that is no longer open are dropped. Nothing here touches
// the DOM, timers or the network; `now` is passed in, so the tests drive time themselves.

export const FINAL = new Set(['Success', 'NoData', 'Failed', 'Cancelled']);
const RANK = { Queued: 0, Running: 1 }; // every final status ranks 2
const rank = (status) => RANK[status] ?? 2;
const COUNTERS = ['rowsExported', 'bytesWritten'];
export const RATE_WINDOW_MS = 20_000; // the rate is measured over this much recent history
const MIN_RATE_SPAN_MS = 2_000; // below this the samples say nothing honest about speed

export function initialState() {
  return {
    run: null, // RunState DTO of the open run
    files: { runId: null, items: [], zipUrl: null, linksExpireAt: 0 },
    tracks: {}, // scriptId -> {samples, rowsExpected, expectedAtRows, etaSeconds, etaAt, variant, variantCount}
    hub: 'connecting',
    recent: { items: [], nextCursor: null, details: {} },
  };
}

// --- the open run ------------------------------------------------------------------------------

/** Opens `runId` (a new run, a recent one, or the one in the URL): nothing of another run stays. */
export function openRun(state, runId, initial = null) {
  if (state.run?.runId === runId) return initial ? applySnapshot(state, initial) : state;
  const next = {
    ...state,
    run: { runId, status: initial?.status ?? 'Queued', groups: [] },
    files: { runId, items: [], zipUrl: null, linksExpireAt: 0 },
    tracks: {},
  };
  return initial ? applySnapshot(next, initial) : next;
}

export function closeRun(state) {
  return { ...state, run: null, files: { runId: null, items: [], zipUrl: null, linksExpireAt: 0 }, tracks: {} };
}

/** Merges one node (run, group, script, variant) without moving its status backwards. */
export function mergeNode(target, incoming) {
  const status = incoming.status && (!target.status || rank(incoming.status) >= rank(target.status))
    ? incoming.status : target.status;
  const moved = !incoming.status || status !== target.status || rank(incoming.status) === rank(target.status);
  const out = { ...target };
  for (const [key, value] of Object.entries(incoming)) {
    if (Array.isArray(value)) continue;
    if (COUNTERS.includes(key)) out[key] = Math.max(target[key] ?? 0, value ?? 0);
    else if (key !== 'status' && (moved || target[key] == null)) out[key] = value;
  }
  out.status = status;
  return out;
}

function mergeList(current = [], incoming = [], key, mergeChildren) {
  const known = new Map(current.map((item) => [item[key], item]));
  return incoming.map((item) => {
    const old = known.get(item[key]);
    const merged = old ? mergeNode(old, item) : { ...item };
    return mergeChildren ? mergeChildren(merged, old, item) : merged;
  });
}

function mergeRun(current, snapshot) {
  const run = mergeNode(current, snapshot);
  run.groups = mergeList(current.groups, snapshot.groups ?? [], 'groupId', (group, old, inGroup) => ({
    ...group,
    scripts: mergeList(old?.scripts, inGroup.scripts ?? [], 'scriptId', (script, oldScript, inScript) => ({
      ...script,
      variants: mergeList(oldScript?.variants, inScript.variants ?? [], 'variant'),
    })),
  }));
  return run;
}

/** A RunState snapshot (REST or the hub's SubscribeRun answer) for the open run. */
export function applySnapshot(state, snapshot) {
  if (!snapshot?.runId || state.run?.runId !== snapshot.runId) return state;
  let next = { ...state, run: mergeRun(state.run, snapshot) };
  if (Array.isArray(snapshot.files) && snapshot.linksExpireAt) next = applyFiles(next, snapshot.runId, snapshot);
  return withRecentStatus(next, snapshot.runId, next.run.status, next.run);
}

/** Counters the page showed before a reload ({scriptId: {rowsExported, bytesWritten}}): a floor. */
export function applyFloor(state, runId, floor) {
  if (!floor || state.run?.runId !== runId) return state;
  const groups = state.run.groups.map((group) => ({
    ...group,
    scripts: (group.scripts ?? []).map((script) => {
      const seen = floor[script.scriptId];
      return seen ? mergeNode(script, { rowsExported: seen.rowsExported, bytesWritten: seen.bytesWritten }) : script;
    }),
  }));
  return { ...state, run: { ...state.run, groups } };
}

/** The counters to remember for `applyFloor` after a reload. */
export function countersOf(run) {
  const out = {};
  for (const group of run?.groups ?? []) {
    for (const script of group.scripts ?? []) {
      out[script.scriptId] = { rowsExported: script.rowsExported ?? 0, bytesWritten: script.bytesWritten ?? 0 };
    }
  }
  return out;
}

/** The files of a RunFiles or RunState body; dropped unless `runId` is the open run. */
export function applyFiles(state, runId, data) {
  if (!data || state.run?.runId !== runId) return state;
  const current = state.files.runId === runId ? state.files : null;
  const items = data.files ?? [];
  // A snapshot taken before the last file was recorded must not hide that file again; fresher
  // links (a later expiry) always replace older ones.
  if (current && items.length < current.items.length) return state;
  return {
    ...state,
    files: { runId, items, zipUrl: data.zipUrl ?? null, linksExpireAt: Date.parse(data.linksExpireAt) || 0 },
  };
}

function mapScripts(run, groupId, scriptId, fn) {
  let found = false;
  const groups = run.groups.map((group) => {
    if (groupId && group.groupId !== groupId) return group;
    const scripts = (group.scripts ?? []).map((script) => {
      if (script.scriptId !== scriptId) return script;
      found = true;
      return fn(script);
    });
    return { ...group, scripts };
  });
  return { run: { ...run, groups }, found };
}

/**
 * One hub event. Returns `{state, refetch}`: `refetch` is true when the event names something
 * the page has not seen yet (a snapshot brings it).
 */
export function applyEvent(state, name, payload, now) {
  if (!payload?.runId) return { state, refetch: false };
  let next = state;
  if (name === 'run.updated') next = withRecentStatus(next, payload.runId, payload.status);
  const run = next.run;
  if (!run || run.runId !== payload.runId) return { state: next, refetch: false };
  switch (name) {
    case 'run.updated': {
      const merged = mergeNode(run, { status: payload.status, updatedAt: payload.updatedAt });
      if (FINAL.has(merged.status)) merged.finishedAt ??= payload.updatedAt;
      if (merged.status === 'Running') merged.startedAt ??= payload.updatedAt;
      return { state: { ...next, run: merged }, refetch: FINAL.has(merged.status) };
    }
    case 'group.updated': {
      let found = false;
      const groups = run.groups.map((group) => {
        if (group.groupId !== payload.groupId) return group;
        found = true;
        return mergeNode(group, { status: payload.status });
      });
      return { state: { ...next, run: { ...run, groups } }, refetch: !found };
    }
    case 'script.updated': {
      const stamp = new Date(now).toISOString();
      const { run: updated, found } = mapScripts(run, payload.groupId, payload.scriptId, (script) => {
        const merged = mergeNode(script, { status: payload.status, message: payload.message ?? null });
        if (merged.status === 'Running') merged.startedAt ??= stamp;
        return merged;
      });
      const track = { ...(next.tracks[payload.scriptId] ?? { samples: [] }) };
      if (Number.isInteger(payload.variantCount)) track.variantCount = payload.variantCount;
      if (payload.variant !== undefined) track.variant = payload.variant;
      return { state: { ...next, run: updated, tracks: { ...next.tracks, [payload.scriptId]: track } }, refetch: !found };
    }
    case 'script.progress': {
      const { run: updated, found } = mapScripts(run, null, payload.scriptId, (script) =>
        mergeNode(script, { rowsExported: payload.rowsExported, bytesWritten: payload.bytesWritten }));
      return {
        state: { ...next, run: updated, tracks: { ...next.tracks, [payload.scriptId]: trackProgress(next.tracks[payload.scriptId], payload, now) } },
        refetch: !found,
      };
    }
    default:
      return { state: next, refetch: false };
  }
}

/** Adds one script.progress sample (and the expectation it may carry) to a script's track. */
export function trackProgress(track = { samples: [] }, payload, now) {
  const samples = track.samples.filter((s) => now - s.t <= RATE_WINDOW_MS);
  const last = samples.at(-1);
  const rows = Math.max(payload.rowsExported ?? 0, last?.rows ?? 0);
  const bytes = Math.max(payload.bytesWritten ?? 0, last?.bytes ?? 0);
  samples.push({ t: now, rows, bytes });
  const out = { ...track, samples };
  if (Number(payload.rowsExpected) > 0) {
    out.rowsExpected = payload.rowsExpected;
  }
  if (Number.isFinite(payload.etaSeconds)) {
    out.etaSeconds = payload.etaSeconds;
    out.etaAt = now;
  }
  return out;
}

export function setHub(state, hub) {
  return state.hub === hub ? state : { ...state, hub };
}

// --- what the page shows about a script ----------------------------------------------------------

/**
 * The progress line of one script: `fraction` (null: unknown, the bar moves without a value),
 * `rate` ({rows, bytes} per second, or null when nothing honest can be said), `etaMs`,
 * `elapsedMs`, `stale` (the hub is away: nothing on screen is live) and the running variant.
 */
export function scriptProgress(script, track, { now, hub }) {
  const status = script.status;
  const final = FINAL.has(status);
  const rows = script.rowsExported ?? 0;
  const variants = script.variants ?? [];
  const variantCount = track?.variantCount ?? (variants.length || null);
  const running = variants.find((v) => v.status === 'Running');
  const variant = running?.variant ?? (track?.variant ?? null);
  const started = Date.parse(script.startedAt ?? '');
  const ended = Date.parse(script.finishedAt ?? '');
  const elapsedMs = Number.isFinite(started) ? Math.max(0, (final && Number.isFinite(ended) ? ended : now) - started) : null;
  const out = { fraction: null, rate: null, etaMs: null, elapsedMs, stale: false, variant: final ? null : variant, variantCount };
  if (final) { out.fraction = 1; return out; }
  if (status === 'Queued') { out.fraction = 0; return out; }
  out.stale = hub !== 'connected';

  const samples = (track?.samples ?? []).filter((s) => now - s.t <= RATE_WINDOW_MS);
  if (!out.stale && samples.length >= 2) {
    const first = samples[0];
    const last = samples.at(-1);
    const span = last.t - first.t;
    if (span >= MIN_RATE_SPAN_MS) {
      out.rate = { rows: (last.rows - first.rows) / (span / 1000), bytes: (last.bytes - first.bytes) / (span / 1000) };
    }
  }
  // From the last script.progress, else from the snapshot (a reload): the script's state has them too.
  const expected = track?.rowsExpected ?? script.rowsExpected;
  if (expected > 0) {
    // Expectations are estimates: never claim 100 % before the script says it is done.
    out.fraction = Math.min(rows / expected, 0.99);
    if (Number.isFinite(track?.etaSeconds)) {
      out.etaMs = Math.max(0, track.etaSeconds * 1000 - (now - track.etaAt));
    } else if (Number.isFinite(script.etaSeconds)) {
      out.etaMs = script.etaSeconds * 1000;
    } else if (out.rate?.rows > 0) {
      out.etaMs = Math.max(0, (expected - rows) / out.rate.rows) * 1000;
    }
    if (out.stale) out.etaMs = null;
  } else if (variantCount > 1) {
    const done = variants.filter((v) => FINAL.has(v.status)).length;
    out.fraction = Math.max(done, variant ? variant - 1 : 0) / variantCount || null;
  }
  return out;
}

/** The progress of the whole run: finished scripts of all, with totals. */
export function runProgress(run) {
  const scripts = (run?.groups ?? []).flatMap((g) => g.scripts ?? []);
  const done = scripts.filter((s) => FINAL.has(s.status)).length;
  let fraction = null;
  if (run && FINAL.has(run.status)) fraction = 1;
  else if (run?.status === 'Queued') fraction = 0;
  else if (scripts.length && done) fraction = done / scripts.length;
  return {
    fraction,
    done,
    total: scripts.length,
    rows: scripts.reduce((sum, s) => sum + (s.rowsExported ?? 0), 0),
    bytes: scripts.reduce((sum, s) => sum + (s.bytesWritten ?? 0), 0),
  };
}

// --- Recent runs --------------------------------------------------------------------------------

/**
 * A page of GET /api/runs, newest first. `append`: a "Load older" page, after the rows shown.
 * A refresh (first page again) keeps the older rows already loaded and their cursor.
 */
export function applyRecent(state, page, append) {
  const incoming = page?.items ?? [];
  const old = new Map(state.recent.items.map((r) => [r.runId, r]));
  const fresh = incoming.map((item) => (old.has(item.runId) ? mergeNode(old.get(item.runId), item) : { ...item }));
  const ids = new Set(fresh.map((r) => r.runId));
  let items;
  let nextCursor = page?.nextCursor ?? null;
  if (append) {
    items = [...state.recent.items.filter((r) => !ids.has(r.runId)), ...fresh];
  } else {
    // ULIDs sort by time: rows older than this page's last one were loaded with "Load older".
    const oldest = fresh.at(-1)?.runId;
    const older = oldest && nextCursor ? state.recent.items.filter((r) => r.runId < oldest && !ids.has(r.runId)) : [];
    items = [...fresh, ...older];
    if (older.length) nextCursor = state.recent.nextCursor;
  }
  return { ...state, recent: { ...state.recent, items, nextCursor } };
}

/** A run's full state fetched for its Recent runs row (names, rows, size, duration). */
export function applyRecentDetail(state, detail) {
  if (!detail?.runId) return state;
  const old = state.recent.details[detail.runId];
  const merged = old ? mergeRun(old, detail) : detail;
  const next = { ...state, recent: { ...state.recent, details: { ...state.recent.details, [detail.runId]: merged } } };
  return withRecentStatus(next, detail.runId, merged.status, merged);
}

function withRecentStatus(state, runId, status, source = null) {
  const index = state.recent.items.findIndex((r) => r.runId === runId);
  if (index < 0 || !status) return state;
  const items = [...state.recent.items];
  const patch = { status };
  if (source) {
    for (const key of ['startedAt', 'finishedAt', 'error']) if (source[key] != null) patch[key] = source[key];
  }
  items[index] = mergeNode(items[index], patch);
  return { ...state, recent: { ...state.recent, items } };
}

/** Runs of the list whose status may still change (to re-read after the hub was away). */
export function unsettledRecent(state) {
  return state.recent.items.filter((r) => !FINAL.has(r.status)).map((r) => r.runId);
}

/**
 * What a run exported, in words from the catalog: `{kind, names}` where kind is the mode and
 * names are display names (group, or "script (group)"), from the run's state.
 */
export function whatRan(run) {
  const groups = (run?.groups ?? []);
  const names = [];
  for (const group of groups) {
    const scripts = group.scripts ?? [];
    if (run.mode === 'SingleScript' || (run.mode === 'AllGroups' && scripts.length < 3)) {
      for (const script of scripts) names.push(script.displayName ?? script.scriptId);
    } else {
      names.push(group.displayName ?? group.groupId);
    }
  }
  return { kind: run?.mode ?? null, names };
}

/** Totals of a run for its Recent runs row. */
export function runTotals(run) {
  const { rows, bytes } = runProgress(run);
  const start = Date.parse(run?.startedAt ?? '');
  const end = Date.parse(run?.finishedAt ?? '');
  return { rows, bytes, durationMs: Number.isFinite(start) && Number.isFinite(end) ? end - start : null };
}
