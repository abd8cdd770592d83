// Catalog panel: groups and scripts with their export options, and the Run buttons.

import { $, h, clear } from '../ui.js';

/**
 * Renders the tree. `onRun(mode, target)` starts a run. The ticks and column choices live in
 * the DOM (they are form state), so a re-render for another language keeps them.
 */
export function renderCatalog(catalog, i18n, onRun) {
  const tree = $('#catalog-tree');
  const kept = readChoices(tree);
  clear(tree);
  const profiles = new Map((catalog.columnsProfiles ?? []).map((p) => [p.id, p]));
  for (const group of catalog.groups ?? []) {
    const groupBox = h('input', { type: 'checkbox', id: `cg-${group.id}`, checked: true, 'data-testid': 'group-enabled' });
    const scriptsList = h('ul', { class: 'tree-scripts', 'aria-label': i18n.t('catalog.scriptsOf', { name: group.displayName }) });
    tree.append(h('li', { class: 'tree-group', 'data-testid': 'catalog-group', 'data-group-id': group.id },
      h('div', { class: 'tree-row' },
        h('label', { for: groupBox.id, class: 'tree-name check' }, groupBox, h('span', {}, group.displayName)),
        h('button', {
          type: 'button', class: 'secondary small', 'data-testid': 'run-group', 'data-group-id': group.id,
          'aria-label': i18n.t('catalog.runGroupLabel', { name: group.displayName }),
          onclick: () => onRun('SingleGroup', { groupId: group.id }),
        }, i18n.t('catalog.runGroup'))),
      scriptsList));
    for (const script of group.scripts ?? []) {
      scriptsList.append(renderScript(group, script, profiles.get(script.columnsProfileId), i18n, onRun));
    }
    groupBox.addEventListener('change', () => {
      for (const box of scriptsList.querySelectorAll('[data-testid="script-enabled"]')) box.checked = groupBox.checked;
      groupBox.indeterminate = false;
    });
    scriptsList.addEventListener('change', (event) => {
      if (event.target.dataset.testid === 'script-enabled') syncGroupBox(groupBox, scriptsList);
    });
  }
  restoreChoices(tree, kept);
}

function renderScript(group, script, profile, i18n, onRun) {
  const key = `${group.id}-${script.id}`;
  const enabled = h('input', { type: 'checkbox', id: `cs-${key}`, checked: true, 'data-testid': 'script-enabled' });
  const mode = h('select', { id: `mode-${key}`, class: 'small', 'data-testid': 'export-mode' },
    h('option', { value: 'AllColumns' }, i18n.t('catalog.allColumns')),
    h('option', { value: 'CustomColumns', disabled: !profile }, i18n.t('catalog.customColumns')));
  const picker = h('fieldset', { class: 'columns', 'data-testid': 'column-picker', hidden: true },
    h('legend', {}, i18n.t('catalog.columns')),
    ...(profile?.items ?? []).map((column) => h('label', { class: 'column check' },
      h('input', { type: 'checkbox', value: column.id, checked: true, 'data-testid': 'column' }),
      h('span', {}, column.label))));
  mode.addEventListener('change', () => { picker.hidden = mode.value !== 'CustomColumns'; });
  return h('li', { class: 'tree-script', 'data-testid': 'catalog-script', 'data-group-id': group.id, 'data-script-id': script.id },
    h('div', { class: 'tree-row' },
      h('label', { for: enabled.id, class: 'tree-name check' }, enabled, h('span', {}, script.displayName)),
      h('label', { for: mode.id, class: 'visually-hidden' }, i18n.t('catalog.modeOf', { name: script.displayName })),
      mode,
      h('button', {
        type: 'button', class: 'secondary small', 'data-testid': 'run-script',
        'data-group-id': group.id, 'data-script-id': script.id,
        'aria-label': i18n.t('catalog.runScriptLabel', { name: script.displayName }),
        onclick: () => onRun('SingleScript', { groupId: group.id, scriptId: script.id }),
      }, i18n.t('catalog.runScript'))),
    picker);
}

function syncGroupBox(groupBox, scriptsList) {
  const boxes = [...scriptsList.querySelectorAll('[data-testid="script-enabled"]')];
  const on = boxes.filter((box) => box.checked).length;
  groupBox.checked = on > 0;
  groupBox.indeterminate = on > 0 && on < boxes.length;
}

function choiceKey(input) {
  const row = input.closest('[data-testid="catalog-script"], [data-testid="catalog-group"]');
  const value = input.tagName === 'SELECT' ? '' : input.value;
  return `${row?.dataset.groupId}/${row?.dataset.scriptId ?? ''}/${input.dataset.testid}/${value}`;
}

function readChoices(tree) {
  const choices = new Map();
  for (const input of tree.querySelectorAll('input, select')) {
    choices.set(choiceKey(input), input.tagName === 'SELECT'
      ? { value: input.value } : { checked: input.checked, indeterminate: input.indeterminate });
  }
  return choices;
}

function restoreChoices(tree, choices) {
  for (const input of tree.querySelectorAll('input, select')) {
    const saved = choices.get(choiceKey(input));
    if (!saved) continue;
    if ('checked' in saved) Object.assign(input, saved);
    if ('value' in saved) { input.value = saved.value; input.dispatchEvent(new Event('change')); }
  }
}

/** The contract's selection for a mode; throws a user-facing Error when it would be invalid. */
export function buildSelection(mode, target, catalog, i18n) {
  const names = new Map();
  for (const group of catalog?.groups ?? []) for (const s of group.scripts ?? []) names.set(s.id, s.displayName);
  const groups = [];
  let enabledScripts = 0;
  for (const item of document.querySelectorAll('[data-testid="catalog-group"]')) {
    const groupId = item.dataset.groupId;
    const groupOn = mode === 'AllGroups' ? item.querySelector('[data-testid="group-enabled"]').checked : groupId === target.groupId;
    const scripts = [];
    for (const row of item.querySelectorAll('[data-testid="catalog-script"]')) {
      const scriptId = row.dataset.scriptId;
      const scriptOn = groupOn && (mode === 'SingleScript'
        ? scriptId === target.scriptId
        : row.querySelector('[data-testid="script-enabled"]').checked);
      let exportMode = row.querySelector('[data-testid="export-mode"]').value;
      const selectedColumnItemIds = [...row.querySelectorAll('[data-testid="column"]')].filter((b) => b.checked).map((b) => b.value);
      if (exportMode === 'CustomColumns' && selectedColumnItemIds.length === 0) {
        if (scriptOn) throw new Error(i18n.t('catalog.pickColumn', { name: names.get(scriptId) ?? scriptId }));
        exportMode = 'AllColumns';
      }
      if (scriptOn) enabledScripts += 1;
      scripts.push(exportMode === 'CustomColumns'
        ? { scriptId, enabled: scriptOn, exportMode, selectedColumnItemIds }
        : { scriptId, enabled: scriptOn, exportMode });
    }
    groups.push({ groupId, enabled: groupOn, scripts });
  }
  if (enabledScripts === 0) throw new Error(i18n.t('catalog.nothing'));
  return { groups };
}

export function setRunButtonsBusy(busy) {
  for (const button of document.querySelectorAll('#run-all, [data-testid="run-group"], [data-testid="run-script"]')) button.disabled = busy;
}
