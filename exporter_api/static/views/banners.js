// The connection and error banners.

import { $ } from '../ui.js';

export function renderConnection(hub, error, i18n) {
  const banner = $('#connection-banner');
  banner.dataset.state = hub;
  if (hub === 'connected' || hub === 'connecting') {
    if (hub === 'connected') banner.hidden = true;
    return;
  }
  banner.hidden = false;
  $('#reconnect').hidden = hub !== 'disconnected';
  const text = $('#connection-text');
  text.textContent = i18n.t(hub === 'reconnecting' ? 'conn.reconnecting' : 'conn.disconnected');
  text.title = error?.message ?? '';
}

export function hideConnection() {
  $('#connection-banner').hidden = true;
}

export function showError(message) {
  $('#error-text').textContent = message;
  $('#error-banner').hidden = false;
}

export function hideError() {
  $('#error-banner').hidden = true;
}
