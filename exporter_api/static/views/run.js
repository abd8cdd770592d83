// Run panel: the open run's status, progress per script and variant, and its files.
//
// The DOM of a run is built once (per run, structure and language) and then updated in place,
// so buttons and links stay put while progress streams in.

import { $, h, clear, setStatus, setProgress } from '../ui.js';
import { FINAL, runProgress, scriptProgress, whatRan } from '../state.js';

export class RunView {
  #dom = null;

  /** Renders `state` (see state.js) at time `now`. */
  render(state, i18n, now) {
    const run = state.run;
    $('#run-empty').hidden = Boolean(run);
    $('#run-body').hidden = !run;
    const cancel = $('#cancel-run');
    const noCancel = !run || FINAL.has(run.status) || !run.groups.length;
    // The run ends (a hub event may come before the cancel request's own answer): a keyboard
    // user's focus on the button, or lost while the button was disabled, stays in the panel.
    const focusLost = document.activeElement === cancel
      || (cancel.disabled && (document.activeElement === document.body || !document.activeElement));
    if (noCancel && !cancel.hidden && run && focusLost) $('#run-status').focus();
    cancel.hidden = noCancel;
    $('#run-panel').dataset.runId = run?.runId ?? '';
    if (!run) {
      clear($('#run-groups'));
      this.#dom = null;
      renderFiles(state, i18n);
      return;
    }
    const key = `${i18n.lang}|${run.runId}|${structureKey(run)}`;
    if (this.#dom?.key !== key) this.#build(run, key, i18n);

    $('#run-id').textContent = run.runId;
    $('#run-what').textContent = describeWhat(run, i18n);
    setStatus($('#run-status'), run.status, i18n);
    $('#run-started').textContent = i18n.time(run.startedAt ?? run.createdAt);
    const start = Date.parse(run.startedAt ?? run.createdAt ?? '');
    const end = FINAL.has(run.status) && run.finishedAt ? Date.parse(run.finishedAt) : now;
    $('#run-elapsed').textContent = Number.isFinite(start) ? i18n.duration(end - start) : '';
    const runError = $('#run-error');
    runError.hidden = !run.error;
    runError.textContent = run.error ?? '';

    const total = runProgress(run);
    setProgress($('#run-progress'), total.fraction, run.status);
    $('#run-progress-text').textContent = total.total
      ? [i18n.t('run.scriptsDone', { done: i18n.count(total.done), total: i18n.count(total.total) }),
        i18n.t('rows', { n: i18n.count(total.rows) }), i18n.bytes(total.bytes)].join(' · ')
      : '';
    for (const group of run.groups) {
      const dom = this.#dom.groups.get(group.groupId);
      if (dom) setStatus(dom.status, group.status, i18n);
      for (const script of group.scripts ?? []) this.#updateScript(state, group, script, i18n, now);
    }
    renderFiles(state, i18n);
  }

  #build(run, key, i18n) {
    const container = clear($('#run-groups'));
    this.#dom = { key, groups: new Map(), scripts: new Map() };
    for (const group of run.groups) {
      const status = h('span', { class: 'status', 'data-testid': 'group-status', 'data-group-id': group.groupId });
      const list = h('ul', { class: 'run-scripts' });
      container.append(h('section', {
        class: 'run-group', 'data-testid': 'live-group', 'data-group-id': group.groupId, 'aria-label': group.displayName,
      }, h('div', { class: 'run-group-head' }, h('h3', {}, group.displayName), status), list));
      this.#dom.groups.set(group.groupId, { status });
      for (const script of group.scripts ?? []) list.append(this.#buildScript(group, script, i18n));
    }
  }

  #buildScript(group, script, i18n) {
    const ids = { 'data-group-id': group.groupId, 'data-script-id': script.scriptId };
    const dom = {
      status: h('span', { class: 'status', 'data-testid': 'script-status', ...ids }),
      progress: h('progress', { max: 1, 'data-testid': 'script-progress', 'aria-label': i18n.t('run.progressOf', { name: script.displayName }) }),
      metrics: h('span', { class: 'metrics', 'data-testid': 'script-metrics', ...ids }),
      message: h('p', { class: 'message', 'data-testid': 'script-message', ...ids }),
      error: h('p', { class: 'form-error', 'data-testid': 'script-error', ...ids, hidden: true }),
      variants: new Map(),
    };
    const variantList = h('ol', { class: 'variants', 'aria-label': i18n.t('run.variantsOf', { name: script.displayName }) });
    for (const variant of script.variants ?? []) {
      const status = h('span', { class: 'status small', 'data-testid': 'variant-status', ...ids, 'data-variant': variant.variant });
      const detail = h('span', { class: 'muted' });
      variantList.append(h('li', { 'data-testid': 'variant', ...ids, 'data-variant': variant.variant },
        h('span', { class: 'variant-name' }, i18n.t('run.variant', { n: variant.variant })), status, detail));
      dom.variants.set(variant.variant, { status, detail });
    }
    this.#dom.scripts.set(`${group.groupId}/${script.scriptId}`, dom);
    return h('li', { class: 'run-script', 'data-testid': 'live-script', ...ids },
      h('div', { class: 'run-script-head' },
        h('span', { class: 'script-name' }, script.displayName),
        script.exportMode === 'CustomColumns' && script.columns
          ? h('span', { class: 'muted', title: script.columns.join(', ') }, i18n.t('run.columnsCount', { n: script.columns.length }))
          : null,
        dom.status),
      h('div', { class: 'progress-line' }, dom.progress, dom.metrics),
      dom.message, dom.error, variantList);
  }

  #updateScript(state, group, script, i18n, now) {
    const dom = this.#dom.scripts.get(`${group.groupId}/${script.scriptId}`);
    if (!dom) return;
    setStatus(dom.status, script.status, i18n);
    const p = scriptProgress(script, state.tracks[script.scriptId], { now, hub: state.hub });
    setProgress(dom.progress, p.fraction, script.status);
    const parts = [i18n.t('rows', { n: i18n.count(script.rowsExported) }), i18n.bytes(script.bytesWritten)];
    if (script.status === 'Running') {
      if (p.fraction !== null && (state.tracks[script.scriptId]?.rowsExpected ?? script.rowsExpected) > 0) {
        parts.push(i18n.percent(p.fraction));
      }
      if (p.stale) {
        parts.push(i18n.t('stale'));
      } else {
        if (p.rate) parts.push(i18n.t('rate', { rows: i18n.count(p.rate.rows), bytes: i18n.bytes(p.rate.bytes) }));
        if (p.etaMs !== null) parts.push(i18n.t('eta', { eta: i18n.duration(p.etaMs) }));
      }
      if (p.elapsedMs !== null) parts.push(i18n.t('elapsed', { d: i18n.duration(p.elapsedMs) }));
    } else if (FINAL.has(script.status) && p.elapsedMs !== null) {
      parts.push(i18n.t('took', { d: i18n.duration(p.elapsedMs) }));
    }
    dom.metrics.textContent = parts.join(' · ');
    dom.metrics.dataset.rows = String(script.rowsExported ?? 0);
    dom.metrics.dataset.stale = String(p.stale);
    dom.metrics.dataset.fraction = p.fraction === null ? '' : String(p.fraction);
    // The running variant from the event's fields (never parsed out of the server's wording).
    const message = p.variant && p.variantCount > 1 ? i18n.t('run.variantOf', { n: p.variant, total: p.variantCount }) : '';
    dom.message.textContent = message;
    dom.message.hidden = !message;
    dom.message.dataset.variant = p.variant ?? '';
    dom.message.dataset.variantCount = p.variantCount ?? '';
    dom.error.textContent = script.error ?? '';
    dom.error.hidden = !script.error;
    const variants = script.variants ?? [];
    for (const variant of variants) {
      const vdom = dom.variants.get(variant.variant);
      if (!vdom) continue;
      setStatus(vdom.status, variant.status, i18n);
      let { rowsExported: rows = 0, bytesWritten: bytes = 0 } = variant;
      if (variant.status === 'Running') {
        // script.progress carries the script's totals; the running variant has what the others lack.
        const others = variants.filter((v) => v !== variant);
        rows = Math.max(rows, (script.rowsExported ?? 0) - others.reduce((sum, v) => sum + (v.rowsExported ?? 0), 0));
        bytes = Math.max(bytes, (script.bytesWritten ?? 0) - others.reduce((sum, v) => sum + (v.bytesWritten ?? 0), 0));
      }
      const bits = [];
      if (rows || FINAL.has(variant.status)) bits.push(i18n.t('rows', { n: i18n.count(rows) }));
      if (bytes) bits.push(i18n.bytes(bytes));
      if (variant.error) bits.push(variant.error);
      vdom.detail.textContent = bits.join(' · ');
    }
  }
}

function structureKey(run) {
  return run.groups.map((g) => `${g.groupId}[${(g.scripts ?? []).map((s) => `${s.scriptId}(${(s.variants ?? []).map((v) => v.variant).join(',')})`).join(';')}]`).join('|');
}

/** "Group: Sales", "Script: Orders export", "Selected scripts: A, B and 2 more". */
export function describeWhat(run, i18n) {
  const { kind, names } = whatRan(run);
  if (!kind) return '';
  const label = i18n.t(`mode.${kind}`);
  if (!names.length) return label;
  const shown = names.length > 2 ? i18n.t('what.more', { first: names.slice(0, 2).join(', '), n: names.length - 2 }) : names.join(', ');
  return `${label}: ${shown}`;
}

/**
 * The files of the open run only: another run's files are never on screen. Rebuilt only when
 * they change, so a link keeps its focus (and a click in progress) while the clock redraws.
 */
function renderFiles(state, i18n) {
  const run = state.run;
  const files = run && state.files.runId === run.runId ? state.files : { items: [], zipUrl: null };
  const list = $('#files');
  const key = `${i18n.lang}|${run?.runId}|${files.zipUrl}|${files.items.map((f) => f.downloadUrl).join(' ')}|${structureKey(run ?? { groups: [] })}`;
  if (list.dataset.key === key) return;
  list.dataset.key = key;
  clear(list);
  $('#files-empty').hidden = files.items.length > 0;
  const zip = $('#zip-link');
  zip.hidden = !files.zipUrl || files.items.length === 0;
  if (files.zipUrl) zip.href = files.zipUrl; else zip.removeAttribute('href');
  const order = new Map();
  const names = new Map();
  for (const group of run?.groups ?? []) {
    for (const script of group.scripts ?? []) {
      order.set(`${group.groupId}/${script.scriptId}`, order.size);
      names.set(`${group.groupId}/${script.scriptId}`, script.displayName);
    }
  }
  const position = (file) => order.get(`${file.groupId}/${file.scriptId}`) ?? order.size;
  for (const file of [...files.items].sort((a, b) => position(a) - position(b) || a.variant - b.variant)) {
    const format = file.format;
    list.append(h('li', { 'data-testid': 'file' },
      h('a', {
        href: file.downloadUrl, download: file.name, 'data-testid': 'file-link',
        'data-file-id': file.fileId, 'data-script-id': file.scriptId, 'data-variant': file.variant,
        title: file.sha256 ? `SHA-256 ${file.sha256}` : null,
      }, file.name),
      h('span', { class: 'muted' }, [
        names.get(`${file.groupId}/${file.scriptId}`) ?? file.scriptId,
        i18n.t('run.variant', { n: file.variant }),
        i18n.t('rows', { n: i18n.count(file.rows) }),
        i18n.bytes(file.sizeBytes),
        format ? String(format).toUpperCase() : null,
      ].filter(Boolean).join(' · '))));
  }
}
