// Login panel: the dropdowns come from the anonymous catalog endpoints.

import { $, h, clear } from '../ui.js';
import { ApiError } from '../api.js';

export function fillOptions(select, items) {
  const previous = select.value;
  clear(select);
  for (const item of items) select.append(h('option', { value: item.id }, item.displayName ?? item.id));
  if (items.some((item) => item.id === previous)) select.value = previous;
}

export function fillLoginOptions(databases, managers) {
  fillOptions($('#login-database'), databases);
  fillOptions($('#login-manager'), managers);
  fillStreams(managers);
}

export function fillStreams(managers) {
  const manager = managers.find((m) => m.id === $('#login-manager').value);
  fillOptions($('#login-stream'), manager?.streams ?? []);
}

export function showLogin(message) {
  $('#session').hidden = true;
  $('#workspace').hidden = true;
  $('#login').hidden = false;
  showLoginError(message);
  $($('#login-username').value ? '#login-password' : '#login-username').focus();
}

export function showLoginError(message) {
  const error = $('#login-error');
  error.hidden = !message;
  error.textContent = message ?? '';
}

export function loginMessage(failure, i18n) {
  if (!(failure instanceof ApiError)) return i18n.t('login.offline', { error: failure.message });
  switch (failure.status) {
    case 401: return i18n.t('login.wrong');
    case 429: return failure.retryAfterS
      ? i18n.t('login.locked', { wait: i18n.duration(failure.retryAfterS * 1000) })
      : i18n.t('login.lockedSoon');
    case 503: return i18n.t('login.unreachable');
    default: return failure.message;
  }
}

/** "USER1 · Test database · Manager 1 / Stream 1", in the catalog's display names. */
export function describeUser(user, databases, managers) {
  if (!user) return '';
  const database = databases.find((d) => d.id === user.databaseId);
  const manager = managers.find((m) => m.id === user.managerId);
  const stream = manager?.streams?.find((s) => s.id === user.streamId);
  return `${user.login} · ${database?.displayName ?? user.databaseId} · ${manager?.displayName ?? user.managerId} / ${stream?.displayName ?? user.streamId}`;
}
