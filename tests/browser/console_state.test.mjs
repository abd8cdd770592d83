// Unit tests of the console's pure state functions (exporter_api/static/state.js) and its
// formatting (i18n.js): `node --test tests/browser/console_state.test.mjs`, also run by
// tests/browser/test_console_state.py.

import test from 'node:test';
import assert from 'node:assert/strict';
import * as S from '../../exporter_api/static/state.js';
import { makeI18n, pickLanguage } from '../../exporter_api/static/i18n.js';

const A = '01AAAAAAAAAAAAAAAAAAAAAAAA';
const B = '01BBBBBBBBBBBBBBBBBBBBBBBB';
const T0 = Date.parse('2026-01-23T12:00:00.000Z');

function snapshot(runId, over = {}) {
  return {
    runId, status: 'Running', mode: 'SingleGroup', createdAt: '2026-01-23T12:00:00.000Z', startedAt: '2026-01-23T12:00:00.000Z',
    groups: [{
      groupId: 'g', displayName: 'Продажи', status: 'Running',
      scripts: [{
        scriptId: 's', displayName: 'Заказы', status: 'Running', rowsExported: 100, bytesWritten: 1000,
        startedAt: '2026-01-23T12:00:00.000Z',
        variants: [{ variant: 1, status: 'Running', rowsExported: 0, bytesWritten: 0 }],
      }],
    }],
    ...over,
  };
}

const filesOf = (runId) => ({
  files: [{ fileId: 'f1', groupId: 'g', scriptId: 's', variant: 1, name: `${runId}.csv`, downloadUrl: `/api/runs/${runId}/files/f1?sig=x` }],
  zipUrl: `/api/runs/${runId}/files.zip?sig=x`,
  linksExpireAt: '2026-01-23T13:00:00.000Z',
});

test('opening run B drops every file and link of run A at once', () => {
  let s = S.openRun(S.initialState(), A);
  s = S.applySnapshot(s, { ...snapshot(A, { status: 'Success' }), ...filesOf(A) });
  assert.equal(s.files.runId, A);
  assert.equal(s.files.items.length, 1);
  s = S.openRun(s, B, { runId: B, status: 'Queued', mode: 'SingleGroup', groups: [] });
  assert.equal(s.run.runId, B);
  assert.deepEqual(s.files, { runId: B, items: [], zipUrl: null, linksExpireAt: 0 });
  // A's files arriving late (a request started before B was opened) are dropped.
  const late = S.applyFiles(s, A, filesOf(A));
  assert.equal(late, s);
  const lateSnapshot = S.applySnapshot(s, { ...snapshot(A, { status: 'Success' }), ...filesOf(A) });
  assert.equal(lateSnapshot.run.runId, B);
  assert.equal(lateSnapshot.files.items.length, 0);
});

test('statuses never move backwards and counters never shrink', () => {
  let s = S.openRun(S.initialState(), A);
  s = S.applySnapshot(s, snapshot(A));
  s = S.applyEvent(s, 'run.updated', { runId: A, status: 'Success', updatedAt: '2026-01-23T12:01:00.000Z' }, T0).state;
  s = S.applySnapshot(s, snapshot(A, { status: 'Running' })); // an older snapshot
  assert.equal(s.run.status, 'Success');
  assert.equal(s.run.finishedAt, '2026-01-23T12:01:00.000Z');
  s = S.applyEvent(s, 'script.progress', { runId: A, scriptId: 's', rowsExported: 500, bytesWritten: 5000 }, T0).state;
  s = S.applyEvent(s, 'script.progress', { runId: A, scriptId: 's', rowsExported: 400, bytesWritten: 4000 }, T0 + 1).state;
  assert.equal(s.run.groups[0].scripts[0].rowsExported, 500);
});

test('a reload floor keeps counts from going backwards', () => {
  let s = S.openRun(S.initialState(), A);
  s = S.applySnapshot(s, snapshot(A)); // REST says 100 rows
  s = S.applyFloor(s, A, { s: { rowsExported: 900, bytesWritten: 9000 } }); // the page had shown 900
  assert.equal(s.run.groups[0].scripts[0].rowsExported, 900);
  assert.deepEqual(S.countersOf(s.run), { s: { rowsExported: 900, bytesWritten: 9000 } });
  assert.equal(S.applyFloor(s, B, { s: { rowsExported: 5 } }), s, 'another run\'s floor is ignored');
});

test('percent and ETA come from the expectation when the server sends one', () => {
  let s = S.openRun(S.initialState(), A);
  s = S.applySnapshot(s, snapshot(A));
  s = S.setHub(s, 'connected');
  s = S.applyEvent(s, 'script.progress', { runId: A, scriptId: 's', rowsExported: 500_000, bytesWritten: 1e7, rowsExpected: 2_000_000, etaSeconds: 30 }, T0).state;
  const script = s.run.groups[0].scripts[0];
  const p = S.scriptProgress(script, s.tracks.s, { now: T0 + 10_000, hub: 'connected' });
  assert.equal(p.fraction, 0.25);
  assert.equal(p.etaMs, 20_000, 'the ETA counts down between events');
  assert.equal(p.elapsedMs, 10_000 + (T0 - Date.parse(script.startedAt)));
});

test('after a reload the expectation comes from the snapshot until the next event', () => {
  let s = S.openRun(S.initialState(), A);
  const snap = snapshot(A);
  Object.assign(snap.groups[0].scripts[0], { rowsExported: 400, rowsExpected: 1000, etaSeconds: 12 });
  s = S.applySnapshot(s, snap);
  const p = S.scriptProgress(s.run.groups[0].scripts[0], s.tracks.s, { now: T0, hub: 'connected' });
  assert.equal(p.fraction, 0.4);
  assert.equal(p.etaMs, 12_000);
  const done = S.scriptProgress({ ...s.run.groups[0].scripts[0], rowsExported: 5000 }, undefined, { now: T0, hub: 'connected' });
  assert.equal(done.fraction, 0.99, 'an estimate never says 100 % before the end');
});

test('without an expectation: an honest rate over a window, no percent for one variant', () => {
  let s = S.openRun(S.initialState(), A);
  s = S.applySnapshot(s, snapshot(A));
  const progress = (rows, t) => { s = S.applyEvent(s, 'script.progress', { runId: A, scriptId: 's', rowsExported: rows, bytesWritten: rows * 10 }, t).state; };
  progress(1000, T0);
  let p = S.scriptProgress(s.run.groups[0].scripts[0], s.tracks.s, { now: T0, hub: 'connected' });
  assert.equal(p.rate, null, 'one sample says nothing about speed');
  assert.equal(p.fraction, null, 'one variant, no expectation: unknown amount');
  progress(2000, T0 + 1000);
  progress(5000, T0 + 4000);
  p = S.scriptProgress(s.run.groups[0].scripts[0], s.tracks.s, { now: T0 + 4000, hub: 'connected' });
  assert.equal(p.rate.rows, 1000);
  assert.equal(p.rate.bytes, 10_000);
  assert.equal(p.etaMs, null);
  // Samples older than the window no longer count.
  progress(6000, T0 + 4000 + S.RATE_WINDOW_MS + 1);
  progress(16000, T0 + 4000 + S.RATE_WINDOW_MS + 5001);
  p = S.scriptProgress(s.run.groups[0].scripts[0], s.tracks.s, { now: T0 + 4000 + S.RATE_WINDOW_MS + 5001, hub: 'connected' });
  assert.equal(p.rate.rows, 2000);
});

test('while the hub is away the progress is stale: no rate, no ETA', () => {
  let s = S.openRun(S.initialState(), A);
  s = S.applySnapshot(s, snapshot(A));
  s = S.applyEvent(s, 'script.progress', { runId: A, scriptId: 's', rowsExported: 200, bytesWritten: 1, rowsExpected: 1000, etaSeconds: 5 }, T0).state;
  s = S.applyEvent(s, 'script.progress', { runId: A, scriptId: 's', rowsExported: 500, bytesWritten: 5 }, T0 + 3000).state;
  const p = S.scriptProgress(s.run.groups[0].scripts[0], s.tracks.s, { now: T0 + 3000, hub: 'reconnecting' });
  assert.equal(p.stale, true);
  assert.equal(p.rate, null);
  assert.equal(p.etaMs, null);
  assert.equal(p.fraction, 0.5, 'the last known amount stays');
});

test('the running variant comes from script.updated fields, not from its message', () => {
  let s = S.openRun(S.initialState(), A);
  const snap = snapshot(A);
  snap.groups[0].scripts[0].variants = [1, 2, 3].map((variant) => ({ variant, status: variant === 1 ? 'Success' : 'Queued' }));
  s = S.applySnapshot(s, snap);
  s = S.applyEvent(s, 'script.updated', { runId: A, groupId: 'g', scriptId: 's', status: 'Running', message: 'Выполняется', variant: 2, variantCount: 3 }, T0).state;
  const p = S.scriptProgress(s.run.groups[0].scripts[0], s.tracks.s, { now: T0, hub: 'connected' });
  assert.equal(p.variant, 2);
  assert.equal(p.variantCount, 3);
  assert.equal(p.fraction, 1 / 3);
});

test('events of another run only touch its Recent runs row; unknown scripts ask for a snapshot', () => {
  let s = S.openRun(S.initialState(), A);
  s = S.applySnapshot(s, snapshot(A));
  s = S.applyRecent(s, { items: [{ runId: B, status: 'Running', mode: 'SingleScript' }, { runId: A, status: 'Running', mode: 'SingleGroup' }], nextCursor: 'c1' }, false);
  const out = S.applyEvent(s, 'run.updated', { runId: B, status: 'Failed', updatedAt: 'x' }, T0);
  assert.equal(out.state.recent.items[0].status, 'Failed');
  assert.equal(out.state.run.status, 'Running');
  assert.equal(S.applyEvent(s, 'script.updated', { runId: A, groupId: 'g', scriptId: 'new', status: 'Running' }, T0).refetch, true);
});

test('Recent runs: older pages append, a refresh keeps them, a detail corrects a missed failure', () => {
  let s = S.initialState();
  const run = (n, status = 'Success') => ({ runId: `01${String(n).padStart(24, '0')}`, status, mode: 'SingleGroup' });
  s = S.applyRecent(s, { items: [run(9, 'Running'), run(8)], nextCursor: run(8).runId }, false);
  s = S.applyRecent(s, { items: [run(7), run(6)], nextCursor: null }, true);
  assert.deepEqual(s.recent.items.map((r) => r.runId), [run(9), run(8), run(7), run(6)].map((r) => r.runId));
  assert.equal(s.recent.nextCursor, null);
  s = S.applyRecent(s, { items: [run(10), run(9, 'Running')], nextCursor: run(9).runId }, false);
  assert.deepEqual(s.recent.items.map((r) => r.runId), [run(10), run(9), run(8), run(7), run(6)].map((r) => r.runId));
  assert.equal(s.recent.nextCursor, null, 'the older rows are all loaded already');
  assert.deepEqual(S.unsettledRecent(s), [run(9).runId]);
  // The run failed while the hub was away: its state, read on reconnect, corrects the row.
  s = S.applyRecentDetail(s, { ...snapshot(run(9).runId, { status: 'Failed', finishedAt: '2026-01-23T12:05:00.000Z', error: 'boom' }) });
  const row = s.recent.items.find((r) => r.runId === run(9).runId);
  assert.equal(row.status, 'Failed');
  assert.equal(row.error, 'boom');
  assert.deepEqual(S.unsettledRecent(s), []);
  const totals = S.runTotals(s.recent.details[run(9).runId]);
  assert.deepEqual(totals, { rows: 100, bytes: 1000, durationMs: 300_000 });
  assert.deepEqual(S.whatRan(s.recent.details[run(9).runId]), { kind: 'SingleGroup', names: ['Продажи'] });
});

test('language: stored choice, else the browser\'s, else English; Intl formatting per language', () => {
  assert.equal(pickLanguage(null, ['ru-RU', 'en']), 'ru');
  assert.equal(pickLanguage('en', ['ru-RU']), 'en');
  assert.equal(pickLanguage(null, ['de-DE']), 'en');
  const ru = makeI18n('ru');
  assert.equal(ru.count(2_000_000), '2\u00a0000\u00a0000');
  assert.equal(ru.bytes(9_876_543), '9,88\u00a0МБ');
  assert.equal(ru.status('NoData'), 'Нет данных');
  assert.equal(ru.t('run.variantOf', { n: 2, total: 3 }), 'вариант 2 из 3');
  const en = makeI18n('en', ['en-US']);
  assert.equal(en.count(2_000_000), '2,000,000');
  assert.equal(en.bytes(999), '999\u00a0B');
  assert.equal(en.duration(4_200), '4.2s');
  assert.equal(en.time('2026-01-23T12:34:56.000Z').includes('2026'), true);
});
