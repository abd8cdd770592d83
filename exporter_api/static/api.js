// REST client of the console.
//
// The access token lives only in memory. The refresh token is an HttpOnly cookie scoped to
// /api/auth that this code never sees: POST /api/auth/refresh (with the same-origin signal
// `X-Requested-With`) trades it for a new access token and rotates it. Because the server treats
// a reused refresh token as theft and revokes the session, refreshes are single-flight inside
// the tab and serialised across tabs with the Web Locks API when the browser has it.

const SAME_ORIGIN = { 'X-Requested-With': 'XMLHttpRequest' };
const REFRESH_LOCK = 'exporter-console-refresh';
const REFRESH_MARGIN_MS = 30_000; // refresh this long before expiry (or at 75 % of the lifetime)

export class ApiError extends Error {
  constructor(status, problem, retryAfter = null) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
    // Seconds to wait, from the Retry-After header (429, 503), when the server sent one.
    const seconds = Number(retryAfter);
    this.retryAfterS = retryAfter !== null && Number.isFinite(seconds) ? seconds : null;
  }
}

/** Decodes the `exp` and `iat` claims of a JWT (no verification: the server does that). */
function tokenTimes(token) {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(payload.padEnd(Math.ceil(payload.length / 4) * 4, '=')));
    const now = Date.now();
    const exp = typeof claims.exp === 'number' ? claims.exp * 1000 : now + 5 * 60_000;
    const iat = typeof claims.iat === 'number' ? claims.iat * 1000 : now;
    return { exp, iat };
  } catch {
    return { exp: Date.now() + 5 * 60_000, iat: Date.now() };
  }
}

async function readProblem(response) {
  const type = response.headers.get('content-type') || '';
  if (type.includes('json')) {
    try { return await response.json(); } catch { /* fall through */ }
  }
  return { title: response.statusText || `HTTP ${response.status}` };
}

export class Api {
  #token = null;
  #expiresAt = 0;
  #lifetime = 0;
  #timer = null;
  #refreshing = null;

  /** Called once when the session is gone (refresh refused): the UI shows the login form. */
  onSessionLost = () => {};

  get signedIn() { return this.#token !== null; }

  // --- session ------------------------------------------------------------------------------

  async login(body) {
    const data = await this.#send('POST', '/api/auth/login', body, { auth: false });
    this.#setToken(data.accessToken);
    return data;
  }

  /** Trades the refresh cookie for a new access token; resolves null when there is no session. */
  refresh() {
    if (!this.#refreshing) {
      this.#refreshing = this.#withLock(() => this.#doRefresh())
        .finally(() => { this.#refreshing = null; });
    }
    return this.#refreshing;
  }

  async logout() {
    const token = this.#token;
    this.#clear();
    const headers = { ...SAME_ORIGIN };
    if (token) headers.Authorization = `Bearer ${token}`;
    try {
      await fetch('/api/auth/logout', { method: 'POST', headers, credentials: 'same-origin' });
    } catch { /* offline: the cookie dies with its TTL, the token is already forgotten */ }
  }

  /** The current access token, refreshed first when it is about to expire (hub token factory). */
  async accessToken() {
    if (this.#token && !this.#expiring()) return this.#token;
    const data = await this.refresh();
    if (!data) throw new Error('signed out');
    return this.#token;
  }

  // --- resources ----------------------------------------------------------------------------

  get(path) { return this.#send('GET', path); }
  post(path, body) { return this.#send('POST', path, body); }

  // --- internals ----------------------------------------------------------------------------

  async #send(method, path, body, { auth = true } = {}) {
    const response = await this.#fetch(method, path, body, auth);
    if (!response.ok) {
      throw new ApiError(response.status, await readProblem(response), response.headers.get('Retry-After'));
    }
    if (response.status === 204) return null;
    return response.json();
  }

  async #fetch(method, path, body, auth = true) {
    const attempt = () => {
      const headers = { Accept: 'application/json', ...SAME_ORIGIN };
      if (body !== undefined) headers['Content-Type'] = 'application/json';
      if (auth && this.#token) headers.Authorization = `Bearer ${this.#token}`;
      return fetch(path, {
        method, headers, credentials: 'same-origin',
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    };
    if (auth && this.#token && this.#expiring()) await this.refresh();
    let response = await attempt();
    if (auth && response.status === 401 && this.#token) {
      // The token may have been revoked or expired in a sleeping tab: one refresh, one retry.
      const data = await this.refresh();
      if (data) response = await attempt();
    }
    return response;
  }

  async #doRefresh() {
    let response;
    try {
      response = await fetch('/api/auth/refresh', {
        method: 'POST', headers: { Accept: 'application/json', ...SAME_ORIGIN },
        credentials: 'same-origin',
      });
    } catch (error) {
      // Network trouble is not a lost session: keep the token, retry soon.
      this.#schedule(Date.now() + 10_000);
      throw error;
    }
    if (response.status === 401 || response.status === 403) {
      const hadSession = this.#token !== null;
      this.#clear();
      if (hadSession) this.onSessionLost();
      return null;
    }
    if (!response.ok) {
      this.#schedule(Date.now() + 10_000);
      throw new ApiError(response.status, await readProblem(response));
    }
    const data = await response.json();
    this.#setToken(data.accessToken);
    return data;
  }

  /** True when the token is in the last 10 % of its life (at most 5 s): do not send it. */
  #expiring() {
    return Date.now() >= this.#expiresAt - Math.min(5_000, this.#lifetime * 0.1);
  }

  #withLock(fn) {
    if (navigator.locks?.request) return navigator.locks.request(REFRESH_LOCK, fn);
    return fn();
  }

  #setToken(token) {
    this.#token = token;
    // Timed from now with the token's own lifetime, so a skewed browser clock does not matter.
    const { exp, iat } = tokenTimes(token);
    const lifetime = Math.max(exp - iat, 2_000);
    this.#lifetime = lifetime;
    const now = Date.now();
    this.#expiresAt = now + lifetime;
    const refreshIn = Math.max(lifetime * 0.5, Math.min(lifetime - REFRESH_MARGIN_MS, lifetime * 0.75));
    this.#schedule(now + refreshIn);
  }

  #schedule(at) {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => { this.refresh().catch(() => {}); }, Math.max(at - Date.now(), 1_000));
  }

  #clear() {
    clearTimeout(this.#timer);
    this.#timer = null;
    this.#token = null;
    this.#expiresAt = 0;
  }
}
