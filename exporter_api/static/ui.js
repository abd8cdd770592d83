// Small DOM and formatting helpers (no framework).

export const $ = (selector) => document.querySelector(selector);

/**
 * Creates an element. `attrs`: `on*` functions become listeners, booleans toggle attributes,
 * null/undefined/false are skipped. Children: nodes or strings (never parsed as HTML).
 */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      element.addEventListener(name.slice(2), value);
    } else if (value === true) {
      element.setAttribute(name, '');
      if (name in element) element[name] = true;
    } else {
      element.setAttribute(name, String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

export function clear(element) {
  element.replaceChildren();
  return element;
}

/** Sets a status badge: the words in the chosen language, the raw status for styles and tests. */
export function setStatus(element, status, i18n) {
  element.textContent = status ? i18n.status(status) : '';
  element.dataset.status = status ?? '';
}

/** A <progress>: a fraction in [0, 1], or null for "moving, amount unknown". */
export function setProgress(element, fraction, status) {
  element.dataset.status = status ?? '';
  if (fraction === null || fraction === undefined) element.removeAttribute('value');
  else element.value = Math.min(1, Math.max(0, fraction));
}

/** Sets every `data-i18n` text and `data-i18n-label` aria-label under `root`. */
export function translateStatic(root, i18n) {
  for (const element of root.querySelectorAll('[data-i18n]')) element.textContent = i18n.t(element.dataset.i18n);
  for (const element of root.querySelectorAll('[data-i18n-label]')) {
    element.setAttribute('aria-label', i18n.t(element.dataset.i18nLabel));
  }
}
