// Recent runs panel: what ran, when, how long, rows, size and status, newest first.

import { $, h, clear, setStatus } from '../ui.js';
import { FINAL, runTotals } from '../state.js';
import { describeWhat } from './run.js';

/**
 * `onOpen(runId)` opens a run; `onOlder()` loads the next page (shown while there is one). Rows
 * are updated in place (the list is redrawn every second while a run is going): a keyboard
 * user's focus on an Open button stays where it is.
 */
export function renderRecent(state, i18n, now, { onOpen, onOlder }) {
  const { items, nextCursor, details } = state.recent;
  const list = $('#recent-list');
  $('#recent-empty').hidden = items.length > 0;
  $('#recent-older').hidden = !nextCursor;
  $('#recent-older').onclick = onOlder;
  const order = `${i18n.lang}|${items.map((r) => r.runId).join(' ')}`;
  if (list.dataset.order !== order) {
    const focused = document.activeElement?.closest?.('[data-testid="recent-run"]')?.dataset.runId;
    clear(list);
    for (const run of items) list.append(buildRow(run, onOpen));
    list.dataset.order = order;
    if (focused) list.querySelector(`[data-run-id="${CSS.escape(focused)}"] button`)?.focus();
  }
  const rows = new Map([...list.children].map((li) => [li.dataset.runId, li]));
  for (const run of items) {
    const li = rows.get(run.runId);
    if (li) updateRow(li, run, details[run.runId], state, i18n, now);
  }
}

function buildRow(run, onOpen) {
  return h('li', { class: 'recent-run', 'data-testid': 'recent-run', 'data-run-id': run.runId },
    h('div', { class: 'recent-main' },
      h('span', { class: 'recent-what', 'data-testid': 'recent-what' }),
      h('span', { class: 'muted recent-facts' }, h('time', { datetime: run.createdAt }), h('span', {})),
      h('span', { class: 'form-error', hidden: true })),
    h('span', { class: 'status small', 'data-testid': 'recent-status' }),
    h('button', { type: 'button', class: 'secondary small', 'data-testid': 'recent-open', onclick: () => onOpen(run.runId) }));
}

function updateRow(li, run, detail, state, i18n, now) {
  const open = run.runId === state.run?.runId;
  // The open run's own state is the freshest; else the detail fetched for the row.
  const source = open ? state.run : detail;
  const what = source?.groups?.length ? describeWhat({ ...source, mode: run.mode }, i18n) : i18n.t(`mode.${run.mode}`);
  const totals = source ? runTotals(source) : { rows: null, bytes: null, durationMs: null };
  const start = Date.parse(run.startedAt ?? '');
  const duration = totals.durationMs ?? (Number.isFinite(start) && !FINAL.has(run.status) ? now - start : null);
  const when = i18n.time(run.createdAt);
  const facts = [
    duration !== null ? i18n.duration(duration) : null,
    totals.rows !== null ? i18n.t('rows', { n: i18n.count(totals.rows) }) : null,
    totals.bytes !== null ? i18n.bytes(totals.bytes) : null,
  ].filter(Boolean).join(' · ');
  li.classList.toggle('current', open);
  li.querySelector('.recent-what').textContent = what;
  li.querySelector('time').textContent = when;
  li.querySelector('.recent-facts > span').textContent = facts ? ` · ${facts}` : '';
  const error = li.querySelector('.form-error');
  error.textContent = run.error ?? '';
  error.hidden = !run.error;
  setStatus(li.querySelector('[data-testid="recent-status"]'), run.status, i18n);
  // The accessible name starts with the visible words (WCAG 2.5.3), then says which run.
  const label = open ? i18n.t('recent.current') : i18n.t('recent.open');
  const button = li.querySelector('button');
  button.textContent = label;
  button.setAttribute('aria-label', i18n.t('recent.openLabel', { label, what, when }));
  if (open) button.setAttribute('aria-current', 'true'); else button.removeAttribute('aria-current');
}
