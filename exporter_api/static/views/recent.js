// Recent runs panel: what ran, when, how long, rows, size and status, newest first.

import { $, h, clear, setStatus } from '../ui.js';
import { FINAL, runTotals } from '../state.js';
import { describeWhat } from './run.js';

/** `onOpen(runId)` opens a run; `onOlder()` loads the next page (shown while there is one). */
export function renderRecent(state, i18n, now, { onOpen, onOlder }) {
  const { items, nextCursor, details } = state.recent;
  const list = clear($('#recent-list'));
  $('#recent-empty').hidden = items.length > 0;
  $('#recent-older').hidden = !nextCursor;
  $('#recent-older').onclick = onOlder;
  for (const run of items) {
    const detail = details[run.runId];
    const open = run.runId === state.run?.runId;
    // The open run's own state is the freshest; else the detail fetched for the row.
    const source = open ? state.run : detail;
    const what = source?.groups?.length ? describeWhat({ ...source, mode: run.mode }, i18n) : i18n.t(`mode.${run.mode}`);
    const totals = source ? runTotals(source) : { rows: null, bytes: null, durationMs: null };
    const start = Date.parse(run.startedAt ?? '');
    const duration = totals.durationMs ?? (Number.isFinite(start) && !FINAL.has(run.status) ? now - start : null);
    const when = i18n.time(run.createdAt);
    const status = h('span', { class: 'status small', 'data-testid': 'recent-status' });
    setStatus(status, run.status, i18n);
    const facts = [
      duration !== null ? i18n.duration(duration) : null,
      totals.rows !== null ? i18n.t('rows', { n: i18n.count(totals.rows) }) : null,
      totals.bytes !== null ? i18n.bytes(totals.bytes) : null,
    ].filter(Boolean).join(' · ');
    // The accessible name starts with the visible words (WCAG 2.5.3), then says which run.
    const label = open ? i18n.t('recent.current') : i18n.t('recent.open');
    list.append(h('li', { class: `recent-run${open ? ' current' : ''}`, 'data-testid': 'recent-run', 'data-run-id': run.runId },
      h('div', { class: 'recent-main' },
        h('span', { class: 'recent-what', 'data-testid': 'recent-what' }, what),
        h('span', { class: 'muted' }, h('time', { datetime: run.createdAt }, when), facts ? ` · ${facts}` : ''),
        run.error ? h('span', { class: 'form-error' }, run.error) : null),
      status,
      h('button', {
        type: 'button', class: 'secondary small', 'data-testid': 'recent-open',
        'aria-label': i18n.t('recent.openLabel', { label, what, when }),
        'aria-current': open ? 'true' : null,
        onclick: () => onOpen(run.runId),
      }, label)));
  }
}
