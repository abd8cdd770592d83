// Live run updates over /hubs/runs with the official client (global `signalR`, loaded from
// /static/vendor/signalr.min.js).
//
// The hub puts a connection in the SignalR group `runs:{runId}` when it calls SubscribeRun, and
// the answer is the run's full state, so nothing is missed between loading and subscribing.
// Groups belong to a connection: after an automatic reconnect (a new connection) the
// subscription is renewed and the state fetched again.

export const HUB_EVENTS = ['run.updated', 'group.updated', 'script.updated', 'script.progress'];
const RETRY_AFTER_CLOSE_MS = 5_000;

export class RunsLive {
  #connection = null;
  #runId = null;
  #retryTimer = null;
  #stopped = true;
  #restarting = false;

  /**
   * @param {() => Promise<string>} accessTokenFactory
   * @param {{onEvent: (name: string, payload: object) => void,
   *          onState: (state: 'connecting'|'connected'|'reconnecting'|'disconnected', error?: Error) => void,
   *          onResubscribed: (state: object) => void}} handlers
   */
  constructor(accessTokenFactory, handlers) {
    this.accessTokenFactory = accessTokenFactory;
    this.handlers = handlers;
  }

  get connected() {
    return this.#connection?.state === signalR.HubConnectionState.Connected;
  }

  async start() {
    this.#stopped = false;
    if (this.#connection) return;
    const connection = new signalR.HubConnectionBuilder()
      .withUrl('/hubs/runs', { accessTokenFactory: this.accessTokenFactory })
      .withAutomaticReconnect()
      .configureLogging(signalR.LogLevel.Warning)
      .build();
    for (const name of HUB_EVENTS) {
      connection.on(name, (payload) => this.handlers.onEvent(name, payload));
    }
    connection.onreconnecting((error) => this.handlers.onState('reconnecting', error));
    connection.onreconnected(() => {
      this.handlers.onState('connected');
      this.#resubscribe();
    });
    connection.onclose((error) => {
      // withAutomaticReconnect gave up (or the server closed us): keep trying while signed in.
      if (this.#stopped || this.#restarting) return;
      this.handlers.onState('disconnected', error);
      this.#scheduleRetry();
    });
    this.#connection = connection;
    await this.#connect();
  }

  /** Tries to connect now (the banner's "Reconnect now" button). */
  async reconnect() {
    if (!this.#connection || this.connected) return;
    clearTimeout(this.#retryTimer);
    await this.#connect();
  }

  async stop() {
    this.#stopped = true;
    clearTimeout(this.#retryTimer);
    const connection = this.#connection;
    this.#connection = null;
    this.#runId = null;
    if (connection) await connection.stop();
  }

  /** Subscribes to one run (dropping the previous one) and returns its current state. */
  async subscribe(runId) {
    const previous = this.#runId;
    this.#runId = runId;
    if (!this.connected) return null; // the state comes with the (re)connection
    if (previous && previous !== runId) {
      await this.#connection.invoke('UnsubscribeRun', previous).catch(() => {});
    }
    try {
      return await this.#connection.invoke('SubscribeRun', runId);
    } catch (error) {
      if (!/unauthori[sz]ed/i.test(error.message)) throw error;
      // The connection was authenticated with an access token that has expired since: connect
      // again (the token factory refreshes it) and subscribe on the new connection.
      await this.#restart();
      return this.#connection.invoke('SubscribeRun', runId);
    }
  }

  async unsubscribe() {
    const runId = this.#runId;
    this.#runId = null;
    if (runId && this.connected) {
      await this.#connection.invoke('UnsubscribeRun', runId).catch(() => {});
    }
  }

  async #restart() {
    this.#restarting = true;
    try {
      await this.#connection.stop();
    } finally {
      this.#restarting = false;
    }
    await this.#connection.start();
    this.handlers.onState('connected');
  }

  async #connect() {
    this.handlers.onState('connecting');
    try {
      await this.#connection.start();
    } catch (error) {
      if (this.#stopped) return;
      this.handlers.onState('disconnected', error);
      this.#scheduleRetry();
      return;
    }
    this.handlers.onState('connected');
    await this.#resubscribe();
  }

  async #resubscribe() {
    if (!this.#runId || !this.connected) return;
    try {
      const state = await this.#connection.invoke('SubscribeRun', this.#runId);
      this.handlers.onResubscribed(state);
    } catch (error) {
      this.handlers.onState('connected', error);
    }
  }

  #scheduleRetry() {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => {
      if (!this.#stopped && this.#connection && !this.connected
          && this.#connection.state === signalR.HubConnectionState.Disconnected) {
        this.#connect();
      }
    }, RETRY_AFTER_CLOSE_MS);
  }
}
