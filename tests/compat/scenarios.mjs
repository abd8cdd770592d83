// Drives the official @microsoft/signalr client (and its MessagePack protocol) against the
// compatibility server (examples/compat_server.py).
//
//   node tests/compat/scenarios.mjs --base http://127.0.0.1:PORT --transport WebSockets \
//        --protocol json [--only invoke,send] [--list]
//
// Runs every scenario that applies to the (transport, protocol) pair, one after the other, and
// prints one JSON line per scenario: {"scenario", "ok", "error", "ms", "logs"}. The pytest module
// tests/compat/test_official_client.py turns each line into its own test id. Expected values and
// error texts are those of the ASP.NET Core functional tests of this client
// (dotnet/aspnetcore: src/SignalR/clients/ts/FunctionalTests/ts/HubConnectionTests.ts).

import { createHmac, randomBytes } from "node:crypto";
import { createRequire } from "node:module";
import net from "node:net";

import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";

const require = createRequire(import.meta.url);
const { getUserAgentHeader } = require("@microsoft/signalr/dist/cjs/Utils.js");
// The transport layer under HubConnection, no longer exported: ASP.NET's own ConnectionTests
// import it from the package's files the same way.
const { HttpConnection } = require("@microsoft/signalr/dist/cjs/HttpConnection.js");

const SCENARIO_TIMEOUT_MS = 30000;
const UNICODE_MESSAGE = "你好，世界！";

// ---------------------------------------------------------------------------------------------
// Command line

function parseArgs(argv) {
    const args = { only: null, list: false };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        if (a === "--base") args.base = argv[++i];
        else if (a === "--transport") args.transport = argv[++i];
        else if (a === "--protocol") args.protocol = argv[++i];
        else if (a === "--only") args.only = new Set(argv[++i].split(","));
        else if (a === "--list") args.list = true;
        else throw new Error(`unknown argument ${a}`);
    }
    if (!["WebSockets", "ServerSentEvents", "LongPolling"].includes(args.transport)) {
        throw new Error("--transport must be WebSockets, ServerSentEvents or LongPolling");
    }
    if (!["json", "messagepack"].includes(args.protocol)) {
        throw new Error("--protocol must be json or messagepack");
    }
    return args;
}

const ARGS = parseArgs(process.argv.slice(2));
const BASE = (ARGS.base || "").replace(/\/$/, "");
const TRANSPORT = signalR.HttpTransportType[ARGS.transport];
const IS_MSGPACK = ARGS.protocol === "messagepack";

// ---------------------------------------------------------------------------------------------
// Helpers

class CaptureLogger {
    constructor() { this.lines = []; }
    log(level, message) {
        if (level >= signalR.LogLevel.Information) {
            const text = String(message);
            this.lines.push(`${signalR.LogLevel[level]}: ${text.length > 300 ? text.slice(0, 300) + "..." : text}`);
            if (this.lines.length > 40) this.lines.shift();
        }
    }
}

let LOGGER = new CaptureLogger();
let OPEN = [];

function protocol() {
    return IS_MSGPACK ? new MessagePackHubProtocol() : new signalR.JsonHubProtocol();
}

// A connection to `path` with this pair's transport and protocol; `options` override.
function build(path = "/testhub", options = {}, { reconnect = false, hubProtocol = protocol() } = {}) {
    const url = /^https?:/.test(path) ? path : BASE + path;
    const opts = { transport: TRANSPORT, logger: LOGGER, logMessageContent: true, ...options };
    if (opts.transport === undefined) delete opts.transport;
    let builder = new signalR.HubConnectionBuilder().withUrl(url, opts).withHubProtocol(hubProtocol)
        .configureLogging(LOGGER);
    if (reconnect) builder = builder.withAutomaticReconnect([0, 100, 500, 1000, 2000]);
    const connection = builder.build();
    OPEN.push(connection);
    return connection;
}

function deferred() {
    let resolve, reject;
    const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
    return { promise, resolve, reject };
}

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

function within(promise, ms, what) {
    let timer;
    const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    });
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function fmt(v) {
    if (v instanceof Uint8Array) return `bytes[${Array.from(v).join(",")}]`;
    if (v instanceof Date) return `Date(${v.toISOString()})`;
    return JSON.stringify(v, (k, x) => (x instanceof Uint8Array || (x && x.type === "Buffer")) ? `bytes[${Array.from(x.data || x).join(",")}]` : x);
}

function eq(actual, expected, what) {
    if (fmt(actual) !== fmt(expected)) {
        throw new Error(`${what}: expected ${fmt(expected)}, got ${fmt(actual)}`);
    }
}

function check(cond, message) { if (!cond) throw new Error(message); }

// Awaits `promise` expecting a rejection; returns the error.
async function rejects(promise, what) {
    try {
        const value = await promise;
        throw new Error(`${what}: expected an error, got result ${fmt(value)}`);
    } catch (e) {
        if (e && e.message && e.message.startsWith(`${what}: expected an error`)) throw e;
        return e;
    }
}

async function errorOf(promise, what) {
    const e = await rejects(promise, what);
    return e && e.message !== undefined ? e.message : String(e);
}

// Collects the errors passed to onclose.
// Start an HttpConnection, send each message and wait for its echo, stop; the connection must
// close without an error (ConnectionTests.ts).
async function httpConnectionEcho(url, options, messages = ["Hello World!"]) {
    const connection = new HttpConnection(url, { logger: LOGGER, logMessageContent: true, ...options });
    const closed = deferred();
    connection.onclose = (error) => closed.resolve(error);
    let received = "";
    let waiting = null;
    connection.onreceive = (data) => {
        check(typeof data === "string", `text connection received ${typeof data}`);
        received += data;
        if (waiting !== null && received.length >= waiting.length) waiting.done.resolve();
    };
    await within(connection.start(signalR.TransferFormat.Text), 10000, "HttpConnection start");
    for (const message of messages) {
        received = "";
        waiting = { length: message.length, done: deferred() };
        await connection.send(message);
        await within(waiting.done.promise, 10000, "echo");
        eq(received, message, "echoed text");
    }
    await within(connection.stop(), 10000, "HttpConnection stop");
    eq(await within(closed.promise, 10000, "HttpConnection onclose"), undefined, "close error");
}

function closeTracker(connection) {
    const closes = [];
    const closed = deferred();
    connection.onclose((error) => { closes.push(error); closed.resolve(error); });
    return { closes, closed: closed.promise };
}

async function expectCleanStop(connection, tracker) {
    await connection.stop();
    const error = await within(tracker.closed, 5000, "onclose");
    check(error === undefined, `onclose got an error after stop(): ${error && error.message}`);
}

function streamToArray(connection, method, ...args) {
    const done = deferred();
    const items = [];
    connection.stream(method, ...args).subscribe({
        next: (item) => items.push(item),
        complete: () => done.resolve(items),
        error: (err) => done.reject(err),
    });
    return done.promise;
}

async function getJwtToken() {
    const response = await fetch(`${BASE}/generateJwtToken`);
    check(response.status === 200, `GET /generateJwtToken answered ${response.status}`);
    return await response.text();
}

function b64url(data) { return Buffer.from(data).toString("base64url"); }

// An HS256 JWT with the right claims signed with a key the server has never seen.
function forgedJwt() {
    const header = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
    const now = Math.floor(Date.now() / 1000);
    const payload = b64url(JSON.stringify({ sub: "testuser", iat: now, exp: now + 60 }));
    const signature = createHmac("sha256", randomBytes(32)).update(`${header}.${payload}`).digest("base64url");
    return `${header}.${payload}.${signature}`;
}

// A valid token whose payload was changed after signing.
function tamperedJwt(token) {
    const [header, , signature] = token.split(".");
    const now = Math.floor(Date.now() / 1000);
    const payload = b64url(JSON.stringify({ sub: "admin", iat: now, exp: now + 60 }));
    return `${header}.${payload}.${signature}`;
}

function expectUnauthorized(error, what) {
    const text = error && error.message !== undefined ? error.message : String(error);
    const status = error && error.statusCode;
    check(status === 401 || /401|Unauthorized/.test(text), `${what}: expected a 401 refusal, got: ${text}`);
}

function complexForProtocol(json, msgpack) {
    return IS_MSGPACK ? msgpack : json;
}

function normalizeComplex(value) {
    if (value && IS_MSGPACK && value.ByteArray) value.ByteArray = new Uint8Array(value.ByteArray);
    return value;
}

// ---------------------------------------------------------------------------------------------
// Scenarios. Each entry: name -> { run, when? (pair filter) }.

const WS = "WebSockets", SSE = "ServerSentEvents", LP = "LongPolling";

const scenarios = {
    // "can invoke server method and receive result"
    invoke: { async run() {
        const c = build(); const t = closeTracker(c);
        await c.start();
        eq(await c.invoke("Echo", UNICODE_MESSAGE), UNICODE_MESSAGE, "Echo result");
        await expectCleanStop(c, t);
    } },

    // "can invoke server method non-blocking and not receive result"
    send: { async run() {
        const c = build(); const t = closeTracker(c);
        const received = deferred();
        c.on("Message", (m) => received.resolve(m));
        await c.start();
        const sent = await c.send("Echo", UNICODE_MESSAGE);
        eq(sent, undefined, "send() resolution");
        // A fire-and-forget call with a server-side effect: the server calls us back.
        await c.send("InvokeWithString", "sent, not invoked");
        eq(await within(received.promise, 5000, "Message after send()"), "sent, not invoked", "Message");
        await expectCleanStop(c, t);
    } },

    // "can receive server calls" (client method names are case-insensitive)
    server_calls: { async run() {
        const c = build(); const t = closeTracker(c);
        const received = deferred();
        c.on("mEssAge", (m) => received.resolve(m));
        await c.start();
        eq(await c.invoke("InvokeWithString", "你好 SignalR！"), null, "InvokeWithString result");
        eq(await within(received.promise, 5000, "Message"), "你好 SignalR！", "Message argument");
        await expectCleanStop(c, t);
    } },

    // "can invoke server method structural object and receive structural result"
    custom_object: { async run() {
        const c = build(); const t = closeTracker(c);
        const received = deferred();
        c.on("CustomObject", (o) => received.resolve(o));
        await c.start();
        await c.send("SendCustomObject", { Name: "test", Value: 42 });
        const o = await within(received.promise, 5000, "CustomObject");
        eq(o.Name, "test", "CustomObject.Name");
        eq(o.Value, 42, "CustomObject.Value");
        await expectCleanStop(c, t);
    } },

    // "can stream server method and receive result"
    stream: { async run() {
        const c = build(); const t = closeTracker(c);
        await c.start();
        eq(await within(streamToArray(c, "Stream"), 5000, "Stream"), ["a", "b", "c"], "Stream items");
        await expectCleanStop(c, t);
    } },

    empty_stream: { async run() {
        const c = build(); const t = closeTracker(c);
        await c.start();
        eq(await within(streamToArray(c, "EmptyStream"), 5000, "EmptyStream"), [], "EmptyStream items");
        await expectCleanStop(c, t);
    } },

    // "can stream server method and cancel stream"
    cancel_stream: { async run() {
        const c = build(); const t = closeTracker(c);
        const canceled = deferred();
        c.on("StreamCanceled", () => canceled.resolve());
        await c.start();
        let failed = null;
        const subscription = c.stream("InfiniteStream").subscribe({
            next() {}, complete() {}, error(err) { failed = err; },
        });
        await sleep(100);
        subscription.dispose();
        await within(canceled.promise, 5000, "StreamCanceled after disposing the subscription");
        check(failed === null, `stream errored: ${failed && failed.message}`);
        eq(await c.invoke("Echo", "still open"), "still open", "Echo after cancel");
        await expectCleanStop(c, t);
    } },

    // "can stream from client to server with rxjs"
    upload_stream: { async run() {
        const c = build(); const t = closeTracker(c);
        await c.start();
        const subject = new signalR.Subject();
        const result = c.invoke("StreamingConcat", subject);
        subject.next("Hello ");
        subject.next("world");
        subject.next("!");
        subject.complete();
        eq(await within(result, 5000, "StreamingConcat"), "Hello world!", "StreamingConcat result");
        await expectCleanStop(c, t);
    } },

    // "can stream from client to server and close with error with rxjs"
    upload_stream_error: { async run() {
        const c = build(); const t = closeTracker(c);
        await c.start();
        const subject = new signalR.Subject();
        const result = c.invoke("StreamingConcat", subject);
        subject.next("Hello ");
        subject.next("world");
        subject.error(new Error("Something bad"));
        const message = await within(errorOf(result, "StreamingConcat"), 5000, "StreamingConcat error");
        eq(message, "An unexpected error occurred invoking 'StreamingConcat' on the server. HubException: Something bad",
            "StreamingConcat error text");
        await expectCleanStop(c, t);
    } },

    // "rethrows an exception from the server when streaming"
    stream_error: { async run() {
        const c = build(); const t = closeTracker(c);
        await c.start();
        const message = await within(errorOf(streamToArray(c, "StreamThrowException", "An error occurred."),
            "StreamThrowException"), 5000, "stream error");
        eq(message, "An unexpected error occurred invoking 'StreamThrowException' on the server. InvalidOperationException: An error occurred.",
            "stream error text");
        // An error after some items (ASP.NET: StreamResultsAsync's text).
        const items = [];
        const midway = deferred();
        c.stream("StreamThrowMidway", "Broke midway.").subscribe({
            next: (item) => items.push(item), complete: () => midway.reject(new Error("completed without an error")),
            error: (err) => midway.resolve(err.message),
        });
        eq(await within(midway.promise, 5000, "StreamThrowMidway error"),
            "An error occurred on the server while streaming results. InvalidOperationException: Broke midway.",
            "midway stream error text");
        eq(items, ["a"], "items before the error");
        await expectCleanStop(c, t);
    } },

    // "rethrows an exception from the server when invoking" (detailed errors on)
    error_exception: { async run() {
        const c = build(); const t = closeTracker(c);
        await c.start();
        eq(await errorOf(c.invoke("ThrowException", "An error occurred."), "ThrowException"),
            "An unexpected error occurred invoking 'ThrowException' on the server. InvalidOperationException: An error occurred.",
            "ThrowException error text");
        eq(await c.invoke("Echo", "still open"), "still open", "Echo after the error");
        await expectCleanStop(c, t);
    } },

    // A HubException's message always reaches the client (ASP.NET: with its type name).
    error_hub_exception: { async run() {
        const c = build(); const t = closeTracker(c);
        await c.start();
        eq(await errorOf(c.invoke("ThrowHubException", "Shown to the client."), "ThrowHubException"),
            "An unexpected error occurred invoking 'ThrowHubException' on the server. HubException: Shown to the client.",
            "ThrowHubException error text");
        await expectCleanStop(c, t);
    } },

    // "throws an exception when invoking streaming method with invoke" and the reverse.
    error_stream_mismatch: { async run() {
        const c = build(); const t = closeTracker(c);
        await c.start();
        eq(await errorOf(c.invoke("EmptyStream"), "invoke EmptyStream"),
            "The client attempted to invoke the streaming 'EmptyStream' method with a non-streaming invocation.",
            "invoke(EmptyStream) error text");
        eq(await errorOf(c.invoke("Stream"), "invoke Stream"),
            "The client attempted to invoke the streaming 'Stream' method with a non-streaming invocation.",
            "invoke(Stream) error text");
        eq(await within(errorOf(streamToArray(c, "Echo", "42"), "stream Echo"), 5000, "stream(Echo) error"),
            "The client attempted to invoke the non-streaming 'Echo' method with a streaming invocation.",
            "stream(Echo) error text");
        await expectCleanStop(c, t);
    } },

    error_unknown_method: { async run() {
        const c = build(); const t = closeTracker(c);
        await c.start();
        eq(await errorOf(c.invoke("NoSuchMethod", 1), "NoSuchMethod"),
            "Failed to invoke 'NoSuchMethod' due to an error on the server. HubException: Method does not exist.",
            "unknown method error text");
        eq(await c.invoke("Echo", "still open"), "still open", "Echo after the error");
        await expectCleanStop(c, t);
    } },

    error_argument_count: { async run() {
        const c = build(); const t = closeTracker(c);
        await c.start();
        eq(await errorOf(c.invoke("Echo", "a", "b"), "Echo(a, b)"),
            "Failed to invoke 'Echo' due to an error on the server. InvalidDataException: Invocation provides 2 argument(s) but target expects 1.",
            "argument count error text");
        eq(await c.invoke("Echo", "still open"), "still open", "Echo after the error");
        await expectCleanStop(c, t);
    } },

    // A value of the wrong type for a typed parameter (ASP.NET: a binding failure).
    error_argument_type: { async run() {
        const c = build(); const t = closeTracker(c);
        await c.start();
        eq(await errorOf(c.invoke("SendCustomObject", "not an object"), "SendCustomObject(string)"),
            "Failed to invoke 'SendCustomObject' due to an error on the server. InvalidDataException: Error binding arguments. Make sure that the types of the provided values match the types of the hub method being invoked.",
            "binding error text");
        eq(await c.invoke("Echo", "still open"), "still open", "Echo after the error");
        await expectCleanStop(c, t);
    } },

    // A message over the 32 KB default limit closes the connection with an error.
    message_too_large: { async run() {
        const c = build(); const t = closeTracker(c);
        await c.start();
        const big = "y".repeat(30 * 1024); // under the limit, with the message envelope
        eq(await c.invoke("Echo", big), big, "Echo of 30 KB");
        c.invoke("Echo", "x".repeat(40 * 1024)).catch(() => {});
        const e = await within(t.closed, 5000, "onclose after a too large message");
        eq(e && e.message,
            "Server returned an error on close: Connection closed with an error. InvalidDataException: The maximum message size of 32768B was exceeded. The message size can be configured in AddHubOptions.",
            "close error");
    } },

    // A protocol the server does not know: the handshake answer carries ASP.NET's error text.
    handshake_unknown_protocol: { async run() {
        const json = new signalR.JsonHubProtocol();
        const unknown = {
            name: "nosuchprotocol", version: 1, transferFormat: signalR.TransferFormat.Text,
            parseMessages: (input, logger) => json.parseMessages(input, logger),
            writeMessage: (message) => json.writeMessage(message),
        };
        const c = build("/testhub", {}, { hubProtocol: unknown });
        const message = await errorOf(c.start(), "start with an unknown protocol");
        eq(message, "Server returned handshake error: The protocol 'nosuchprotocol' is not supported.", "handshake error");
    } },

    // Preflight and actual negotiate request from a browser origin (CORS with credentials).
    cors: { when: (tr, pr) => tr === WS && pr === "json", async run() {
        const origin = "http://localhost:9876";
        const pre = await fetch(`${BASE}/testhub/negotiate?negotiateVersion=1`, { method: "OPTIONS", headers: {
            Origin: origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-requested-with,x-signalr-user-agent" } });
        check(pre.status === 204 || pre.status === 200, `preflight status ${pre.status}`);
        eq(pre.headers.get("access-control-allow-origin"), origin, "preflight Access-Control-Allow-Origin");
        eq(pre.headers.get("access-control-allow-credentials"), "true", "preflight Access-Control-Allow-Credentials");
        const allowedHeaders = (pre.headers.get("access-control-allow-headers") || "").toLowerCase();
        check(allowedHeaders.includes("x-requested-with") && allowedHeaders.includes("x-signalr-user-agent"),
            `preflight Access-Control-Allow-Headers: ${allowedHeaders}`);
        check((pre.headers.get("access-control-allow-methods") || "").includes("POST"), "preflight allows POST");
        const neg = await fetch(`${BASE}/testhub/negotiate?negotiateVersion=1`, { method: "POST", headers: { Origin: origin } });
        eq(neg.status, 200, "negotiate status");
        eq(neg.headers.get("access-control-allow-origin"), origin, "negotiate Access-Control-Allow-Origin");
        eq(neg.headers.get("access-control-allow-credentials"), "true", "negotiate Access-Control-Allow-Credentials");
    } },

    // A client asking for stateful reconnect (negotiate ?useStatefulReconnect=true) against a
    // server that has it off: negotiate does not advertise it and the connection works as usual.
    stateful_reconnect_off: { async run() {
        const url = BASE + "/testhub";
        const c = new signalR.HubConnectionBuilder()
            .withUrl(url, { transport: TRANSPORT, logger: LOGGER })
            .withHubProtocol(protocol()).configureLogging(LOGGER)
            .withStatefulReconnect().build();
        OPEN.push(c);
        const t = closeTracker(c);
        const negotiate = await fetch(`${url}/negotiate?negotiateVersion=1&useStatefulReconnect=true`, { method: "POST" });
        const body = await negotiate.json();
        check(!("useStatefulReconnect" in body), `negotiate advertised stateful reconnect: ${JSON.stringify(body)}`);
        await c.start();
        eq(await c.invoke("Echo", "stateful"), "stateful", "Echo");
        await expectCleanStop(c, t);
    } },

    // "can be restarted" + "can receive server calls without rebinding handler when restarted"
    restart: { async run() {
        const c = build();
        const closes = [];
        let closedOnce = deferred();
        c.onclose((e) => { closes.push(e); closedOnce.resolve(e); });
        const messages = [];
        c.on("Message", (m) => messages.push(m));
        for (let round = 1; round <= 2; round++) {
            await c.start();
            eq(await c.invoke("Echo", UNICODE_MESSAGE), UNICODE_MESSAGE, `Echo in round ${round}`);
            await c.invoke("InvokeWithString", `round ${round}`);
            await c.stop();
            const e = await within(closedOnce.promise, 5000, `onclose in round ${round}`);
            check(e === undefined, `onclose error in round ${round}: ${e && e.message}`);
            closedOnce = deferred();
        }
        eq(closes.length, 2, "onclose calls");
        eq(messages, ["round 1", "round 2"], "Message calls across restarts");
    } },

    // "can handle different types"
    complex_echo: { async run() {
        const c = build(); const t = closeTracker(c);
        await c.start();
        const complexObject = {
            ByteArray: complexForProtocol("aGVsbG8=", new Uint8Array([0x68, 0x65, 0x6c, 0x6c, 0x6f])),
            DateTime: complexForProtocol("2002-04-01T10:20:15Z", new Date(Date.UTC(2002, 3, 1, 10, 20, 15))),
            Guid: "00010203-0405-0607-0706-050403020100",
            IntArray: [0x01, 0x02, 0x03, 0xff],
            String: "Hello, World!",
        };
        const value = normalizeComplex(await c.invoke("EchoComplexObject", complexObject));
        for (const key of Object.keys(complexObject)) eq(value[key], complexObject[key], `EchoComplexObject.${key}`);
        eq(Object.keys(value).sort(), Object.keys(complexObject).sort(), "EchoComplexObject keys");
        await expectCleanStop(c, t);
    } },

    // "can receive different types"
    complex_receive: { async run() {
        const c = build(); const t = closeTracker(c);
        await c.start();
        const expected = {
            ByteArray: complexForProtocol("AQID", new Uint8Array([0x1, 0x2, 0x3])),
            DateTime: complexForProtocol("2000-01-01T00:00:00Z", new Date(Date.UTC(2000, 0, 1))),
            Guid: "00010203-0405-0607-0706-050403020100",
            IntArray: [0x01, 0x02, 0x03],
            String: "hello world",
        };
        const value = normalizeComplex(await c.invoke("SendComplexObject"));
        for (const key of Object.keys(expected)) eq(value[key], expected[key], `SendComplexObject.${key}`);
        eq(Object.keys(value).sort(), Object.keys(expected).sort(), "SendComplexObject keys");
        await expectCleanStop(c, t);
    } },

    // "can connect to hub with authorization" (+ async token factory). In Node the token travels
    // in the Authorization header (WebSockets, Long Polling) or the access_token query (SSE).
    auth_token_factory: { async run() {
        const token = await getJwtToken();
        for (const accessTokenFactory of [() => token, () => getJwtToken()]) {
            const c = build("/authorizedhub", { accessTokenFactory }); const t = closeTracker(c);
            await c.start();
            eq(await c.invoke("Echo", UNICODE_MESSAGE), UNICODE_MESSAGE, "authorized Echo");
            await expectCleanStop(c, t);
        }
    } },

    // The token only in the URL's access_token query value (every request carries it).
    auth_query_token: { async run() {
        const token = await getJwtToken();
        const c = build(`/authorizedhub?access_token=${encodeURIComponent(token)}`); const t = closeTracker(c);
        await c.start();
        eq(await c.invoke("Echo", "query token"), "query token", "authorized Echo");
        await expectCleanStop(c, t);
    } },

    auth_refused_missing: { async run() {
        const c = build("/authorizedhub");
        expectUnauthorized(await rejects(c.start(), "start without a token"), "start without a token");
        eq(c.state, signalR.HubConnectionState.Disconnected, "state after refused start");
    } },

    // The client's error text names the reason, as with Kestrel's status line (the body
    // carries it: hypercorn sends no reason phrase).
    auth_refused_texts: { async run() {
        const anonymous = await rejects(build("/authorizedhub").start(), "start without a token");
        eq(anonymous.message, "Failed to complete negotiation with the server: Error: Unauthorized: Status code '401'",
            "401 text");
        eq(anonymous.errorType, "FailedToNegotiateWithServerError", "401 error type");
        const token = await getJwtToken();
        const forbidden = await rejects(build("/adminhub", { accessTokenFactory: () => token }).start(),
            "start as a non-admin");
        eq(forbidden.message, "Failed to complete negotiation with the server: Error: Forbidden: Status code '403'",
            "403 text");
    } },

    auth_refused_forged: { async run() {
        const valid = await getJwtToken();
        for (const [label, token] of [["foreign key", forgedJwt()], ["tampered payload", tamperedJwt(valid)], ["garbage", "not-a-jwt"]]) {
            const c = build("/authorizedhub", { accessTokenFactory: () => token });
            expectUnauthorized(await rejects(c.start(), `start with ${label} token`), `start with ${label} token`);
            const q = build(`/authorizedhub?access_token=${encodeURIComponent(token)}`);
            expectUnauthorized(await rejects(q.start(), `start with ${label} query token`), `start with ${label} query token`);
        }
    } },

    // WebSockets without negotiate: the upgrade itself is refused.
    auth_refused_skip_negotiation: { when: (tr) => tr === WS, async run() {
        const c = build("/authorizedhub", { skipNegotiation: true, transport: signalR.HttpTransportType.WebSockets });
        await rejects(c.start(), "skipNegotiation start without a token");
        eq(c.state, signalR.HubConnectionState.Disconnected, "state after refused start");
        const token = await getJwtToken();
        const ok = build("/authorizedhub", { skipNegotiation: true, transport: signalR.HttpTransportType.WebSockets, accessTokenFactory: () => token });
        const t = closeTracker(ok);
        await ok.start();
        eq(await ok.invoke("Echo", "skip"), "skip", "authorized Echo without negotiate");
        await expectCleanStop(ok, t);
    } },

    // "preserves cookies between requests" + "expired cookies are not preserved"
    cookies: { async run() {
        const c = build(); const t = closeTracker(c);
        await c.start();
        eq(await c.invoke("GetCookie", "testCookie"), "testValue", "testCookie");
        eq(await c.invoke("GetCookie", "testCookie2"), "testValue2", "testCookie2");
        eq(await c.invoke("GetCookie", "expiredCookie"), null, "expiredCookie");
        eq(await c.invoke("GetCookie", "noSuchCookie"), null, "absent cookie");
        await expectCleanStop(c, t);
    } },

    connection_id: { async run() {
        const c = build(); const t = closeTracker(c);
        eq(c.connectionId, null, "connectionId before start");
        await c.start();
        check(typeof c.connectionId === "string" && c.connectionId.length > 0, `connectionId after start: ${c.connectionId}`);
        eq(await c.invoke("GetCallerConnectionId"), c.connectionId, "server-side connection id");
        await expectCleanStop(c, t);
        eq(c.connectionId, null, "connectionId after stop");
    } },

    // "can reconnect": the client stops hearing from the server and reconnects on its own.
    reconnect_client_timeout: { async run() {
        const c = build("/testhub", {}, { reconnect: true }); const t = closeTracker(c);
        const reconnecting = deferred(), reconnected = deferred();
        c.onreconnecting((e) => reconnecting.resolve(e));
        c.onreconnected((id) => reconnected.resolve(id));
        await c.start();
        const firstId = c.connectionId;
        c.serverTimeout(); // induce the reconnect as the ASP.NET functional tests do
        await within(reconnecting.promise, 5000, "onreconnecting");
        const newId = await within(reconnected.promise, 10000, "onreconnected");
        check(newId && newId !== firstId, `reconnected id ${newId} should differ from ${firstId}`);
        eq(await c.invoke("GetCallerConnectionId"), newId, "server-side id after reconnect");
        eq(await c.invoke("Echo", "test"), "test", "Echo after reconnect");
        await expectCleanStop(c, t);
    } },

    // "can reconnect after negotiate redirect" + "connection id matches server side connection id"
    redirect: { async run() {
        const c = build("/redirect", {}, { reconnect: true }); const t = closeTracker(c);
        const reconnecting = deferred(), reconnected = deferred();
        c.onreconnecting(() => reconnecting.resolve());
        c.onreconnected((id) => reconnected.resolve(id));
        await c.start();
        const before = await c.invoke("GetNumRedirects");
        check(Number.isInteger(before) && before >= 1, `GetNumRedirects after the first redirect: ${fmt(before)}`);
        eq(await c.invoke("GetCallerConnectionId"), c.connectionId, "server-side id");
        const firstId = c.connectionId;
        c.serverTimeout();
        await within(reconnecting.promise, 5000, "onreconnecting");
        const newId = await within(reconnected.promise, 10000, "onreconnected");
        check(newId !== firstId, "a new connection id after reconnect");
        eq(await c.invoke("GetCallerConnectionId"), newId, "server-side id after reconnect");
        const after = await c.invoke("GetNumRedirects");
        check(after > before, `GetNumRedirects should grow across the reconnect: ${before} then ${after}`);
        await expectCleanStop(c, t);
    } },

    // "can reconnect after skipping negotiation" + "connection id is always null ..."
    skip_negotiation: { when: (tr) => tr === WS, async run() {
        const c = build("/testhub", { skipNegotiation: true }, { reconnect: true }); const t = closeTracker(c);
        const reconnecting = deferred(), reconnected = deferred();
        c.onreconnecting(() => reconnecting.resolve());
        c.onreconnected((id) => reconnected.resolve(id));
        await c.start();
        eq(c.connectionId, null, "connectionId without negotiate");
        eq(await c.invoke("Echo", "skipped"), "skipped", "Echo without negotiate");
        eq(await c.invoke("GetActiveTransportName"), "WebSockets", "transport");
        c.serverTimeout();
        await within(reconnecting.promise, 5000, "onreconnecting");
        eq(await within(reconnected.promise, 10000, "onreconnected"), undefined, "reconnected id without negotiate");
        eq(await c.invoke("Echo", "test"), "test", "Echo after reconnect");
        await expectCleanStop(c, t);
    } },

    // The pair's transport as reported by the server.
    transport_name: { async run() {
        const c = build(); const t = closeTracker(c);
        await c.start();
        eq(await c.invoke("GetActiveTransportName"), ARGS.transport, "GetActiveTransportName");
        await expectCleanStop(c, t);
    } },

    // /testhub-nowebsockets with WebSockets allowed by the client too: the client falls back.
    // JSON ends on ServerSentEvents, MessagePack on LongPolling (it skips SSE: text only).
    transport_fallback: { when: (tr, pr) => tr !== WS && !(tr === SSE && pr === "messagepack"), async run() {
        const all = ARGS.transport === SSE || IS_MSGPACK;
        const options = all ? { transport: undefined }
            : { transport: signalR.HttpTransportType.WebSockets | signalR.HttpTransportType.LongPolling };
        const c = build("/testhub-nowebsockets", options); const t = closeTracker(c);
        await c.start();
        eq(await c.invoke("GetActiveTransportName"), ARGS.transport, "transport after fallback");
        eq(await c.invoke("Echo", "fallback"), "fallback", "Echo after fallback");
        await expectCleanStop(c, t);
    } },

    // "transport falls back from WebSockets to SSE or LongPolling": the server offers WebSockets
    // but opening one fails on the client (a WebSocket constructor that throws).
    transport_fallback_ws_failure: { when: (tr, pr) => tr !== WS && !(tr === SSE && pr === "messagepack"), async run() {
        class BrokenWebSocket { constructor() { throw new Error("Kick rocks"); } }
        const all = ARGS.transport === SSE || IS_MSGPACK;
        const transport = all ? undefined
            : signalR.HttpTransportType.WebSockets | signalR.HttpTransportType.LongPolling;
        const c = build("/testhub", { transport, WebSocket: BrokenWebSocket }); const t = closeTracker(c);
        await c.start();
        eq(await c.invoke("GetActiveTransportName"), ARGS.transport, "transport after the WebSocket failed");
        eq(await c.invoke("Echo", "fallback"), "fallback", "Echo after fallback");
        await expectCleanStop(c, t);
    } },

    // /testhub-nowebsockets refuses a client that only speaks WebSockets.
    websockets_disabled: { when: (tr) => tr === WS, async run() {
        const c = build("/testhub-nowebsockets");
        const e = await rejects(c.start(), "WebSockets-only start on /testhub-nowebsockets");
        // The server does not offer WebSockets, so the client tries nothing it may use.
        check(e.message.startsWith("Unable to connect to the server with any of the available transports."),
            `start error: ${e.message}`);
        check(!/WebSockets failed/.test(e.message), `the client should not have tried WebSockets: ${e.message}`);
        eq(c.state, signalR.HubConnectionState.Disconnected, "state after refused start");
    } },

    // "over LongPolling it sends DELETE request and waits for poll to terminate"
    longpolling_stop: { when: (tr) => tr === LP, async run() {
        const inner = new signalR.DefaultHttpClient(LOGGER);
        const requests = [];
        class RecordingClient extends signalR.HttpClient {
            constructor() { super(); this.pollPromise = null; }
            send(request) {
                requests.push(request.method);
                const p = inner.send(request);
                if (request.method === "GET") this.pollPromise = p;
                if (request.method === "DELETE") this.deleteResponse = p;
                return p;
            }
            getCookieString(url) { return inner.getCookieString(url); }
        }
        const client = new RecordingClient();
        const c = build("/testhub", { httpClient: client }); const t = closeTracker(c);
        await c.start();
        check(client.pollPromise !== null, "a poll is pending after start");
        eq(await c.invoke("Echo", "lp"), "lp", "Echo");
        const began = Date.now();
        const stopped = c.stop();
        let pollStatus = "aborted";
        try {
            const r = await within(client.pollPromise, 3000, "the pending poll to end after stop()");
            pollStatus = r.statusCode;
        } catch (e) {
            if (!(e instanceof signalR.AbortError)) throw e;
        }
        await within(stopped, 3000, "stop()");
        const elapsed = Date.now() - began;
        check(elapsed < 5000, `stop() took ${elapsed} ms`);
        check(requests.includes("DELETE"), `no DELETE sent: ${requests.join(",")}`);
        // 202, or 404 when the Close message the client sent just before (fire and forget, in
        // its own POST) already ended the connection; the client accepts both.
        let deleteStatus;
        try {
            deleteStatus = (await client.deleteResponse).statusCode;
        } catch (e) {
            deleteStatus = e instanceof signalR.HttpError ? e.statusCode : String(e);
        }
        check(deleteStatus === 202 || deleteStatus === 404, `DELETE answered ${deleteStatus}`);
        check(pollStatus === "aborted" || pollStatus === 204, `poll ended with ${pollStatus}`);
        const e = await within(t.closed, 3000, "onclose");
        check(e === undefined, `onclose error: ${e && e.message}`);
    } },

    // "sets the user agent header": in Node the client sends User-Agent on every transport.
    user_agent: { async run() {
        const c = build(); const t = closeTracker(c);
        await c.start();
        const [name, value] = getUserAgentHeader();
        eq(name, "User-Agent", "user agent header name in Node");
        check(value.startsWith("Microsoft SignalR/"), `user agent value ${value}`);
        eq(await c.invoke("GetHeader", name), value, "User-Agent seen by the hub");
        eq(await c.invoke("GetHeader", "X-SignalR-User-Agent"), null, "X-SignalR-User-Agent (browser only)");
        eq(await c.invoke("GetHeader", "X-No-Such-Header"), null, "absent header");
        await expectCleanStop(c, t);
    } },

    // "overwrites library headers with user headers"
    custom_headers: { async run() {
        const headers = { "User-Agent": "Custom Agent", "X-HEADER": "VALUE", "X-SignalR-User-Agent": "Browser Agent" };
        const c = build("/testhub", { headers }); const t = closeTracker(c);
        await c.start();
        eq(await c.invoke("GetHeader", "User-Agent"), "Custom Agent", "User-Agent");
        eq(await c.invoke("GetHeader", "x-header"), "VALUE", "X-HEADER (case-insensitive lookup)");
        eq(await c.invoke("GetHeader", "X-SignalR-User-Agent"), "Browser Agent", "X-SignalR-User-Agent");
        await expectCleanStop(c, t);
    } },

    // GetContentTypeHeader reads the connection's request: none by default in Node (no body on
    // the WebSocket upgrade, the SSE GET or the first poll); the value the client sets otherwise.
    content_type: { async run() {
        const plain = build(); const t1 = closeTracker(plain);
        await plain.start();
        eq(await plain.invoke("GetContentTypeHeader"), null, "Content-Type without a custom header");
        await expectCleanStop(plain, t1);
        const c = build("/testhub", { headers: { "Content-Type": "text/plain;charset=UTF-8" } }); const t2 = closeTracker(c);
        await c.start();
        eq(await c.invoke("GetContentTypeHeader"), "text/plain;charset=UTF-8", "Content-Type");
        await expectCleanStop(c, t2);
    } },

    // Client results (ASP.NET 7+): the hub awaits the value the client's handler returns.
    // ConnectionTests.ts "can send and receive messages": HttpConnection against the raw echo
    // connection handler (/echo), over this pair's transport.
    http_connection_echo: { when: (tr, pr) => pr === "json", async run() {
        await httpConnectionEcho(BASE + "/echo", { transport: TRANSPORT });
        // A second message after the first round trip, and a larger one (several chunks).
        const big = "x".repeat(20000);
        await httpConnectionEcho(BASE + "/echo", { transport: TRANSPORT }, ["first", big]);
    } },

    // ConnectionTests.ts "follows HTTP redirects": /echoredirect answers 307 to /echo (no
    // transport given: the client picks one that works through the redirect).
    http_connection_redirect: { when: (tr, pr) => tr === WS && pr === "json", async run() {
        await httpConnectionEcho(BASE + "/echoredirect", {});
    } },

    // ConnectionTests.ts "contains server response in error".
    http_connection_bad_negotiate: { when: (tr, pr) => tr === WS && pr === "json", async run() {
        const connection = new HttpConnection(BASE + "/bad-negotiate", { logger: LOGGER, logMessageContent: true });
        const error = await rejects(connection.start(signalR.TransferFormat.Text), "start against /bad-negotiate");
        eq(error.message, "Failed to complete negotiation with the server: Error: Some response from server: Status code '400'",
            "bad negotiate error");
    } },

    // HubConnectionTests.ts "can return result to server" / "can throw result to server" /
    // "returns result error to server when no result given": the server asks through the hub
    // context (GET /clientresult/{connectionId}).
    client_result_endpoint: { async run() {
        const c = build(); const t = closeTracker(c);
        await c.start();
        const ask = async () => {
            const response = await fetch(`${BASE}/clientresult/${c.connectionId}`);
            check(response.status === 200, `GET /clientresult answered ${response.status}`);
            return await response.text();
        };
        c.on("Result", () => 10);
        eq(await ask(), "10", "result");
        c.off("Result");
        c.on("Result", () => { throw new Error("from callback"); });
        eq(await ask(), "Error: from callback", "thrown result");
        c.off("Result");
        eq(await ask(), "Client didn't provide a result.", "no handler");
        await expectCleanStop(c, t);
    } },

    client_results: { async run() {
        const c = build(); const t = closeTracker(c);
        const prefix = "An unexpected error occurred invoking 'GetClientResult' on the server.";
        c.on("Result", (m) => `${m} back`);
        await c.start();
        eq(await c.invoke("GetClientResult", UNICODE_MESSAGE), `${UNICODE_MESSAGE} back`, "sync handler result");
        c.off("Result");
        c.on("Result", async (m) => { await sleep(50); return { text: m, n: [1, 2] }; });
        eq(await c.invoke("GetClientResult", "obj"), { text: "obj", n: [1, 2] }, "async handler result");
        c.off("Result");
        // While the hub method waits, the client may invoke other methods on the same
        // connection (the waiting invocation lends its slot, as ASP.NET 8).
        c.on("Result", async (m) => await c.invoke("Echo", `inner ${m}`));
        eq(await c.invoke("GetClientResult", "nested"), "inner nested", "result needing another invocation");
        c.off("Result");
        c.on("Result", () => { throw new Error("boom"); });
        eq(await errorOf(c.invoke("GetClientResult", "x"), "throwing handler"), `${prefix} HubException: Error: boom`, "throwing handler");
        c.off("Result");
        eq(await errorOf(c.invoke("GetClientResult", "x"), "no handler"), `${prefix} HubException: Client didn't provide a result.`, "no handler");
        c.on("Result", () => new Promise(() => {}));
        const timeoutError = await errorOf(c.invoke("GetClientResultWithTimeout", "x", 0.3), "timeout");
        eq(timeoutError, `An unexpected error occurred invoking 'GetClientResultWithTimeout' on the server. TimeoutError: No result for 'Result' from connection '${c.connectionId}' within 0.3 s.`, "timeout");
        eq(await c.invoke("Echo", "after"), "after", "Echo after client results");
        await expectCleanStop(c, t);
    } },

    // A hub method asks ANOTHER connection for a result; and a connection that goes away.
    client_results_other: { async run() {
        const a = build(), b = build(); const ta = closeTracker(a);
        b.on("Result", (m) => `b says ${m}`);
        await Promise.all([a.start(), b.start()]);
        const bId = await b.invoke("GetCallerConnectionId");
        eq(await a.invoke("GetClientResultFrom", bId, "hi"), "b says hi", "result from another connection");
        eq(await errorOf(a.invoke("GetClientResultFrom", "no-such-connection", "hi"), "unknown id"),
            "An unexpected error occurred invoking 'GetClientResultFrom' on the server. IOException: Connection 'no-such-connection' does not exist.", "unknown id");
        b.off("Result");
        b.on("Result", () => new Promise(() => {}));
        const pending = errorOf(a.invoke("GetClientResultFrom", bId, "never"), "connection closed while waiting");
        await sleep(100);
        await b.stop();
        eq(await within(pending, 5000, "the pending client result to fail"),
            `An unexpected error occurred invoking 'GetClientResultFrom' on the server. IOException: Connection '${bId}' disconnected.`, "connection closed while waiting");
        await expectCleanStop(a, ta);
    } },

    // Stateful reconnect (ASP.NET 8, withStatefulReconnect()): the socket is cut mid-stream
    // (by a proxy, in both directions); the client reconnects with the same connection token,
    // both sides replay what the other did not acknowledge and drop duplicates. No message is
    // lost or duplicated and the connection (id, per-connection state) survives.
    stateful_reconnect: { when: (tr) => tr === WS, async run() {
        const proxy = await startProxy();
        try {
            const c = new signalR.HubConnectionBuilder()
                .withUrl(proxy.url + "/statefulhub", { transport: TRANSPORT, logger: LOGGER })
                .withHubProtocol(protocol()).configureLogging(LOGGER)
                .withStatefulReconnect().build();
            OPEN.push(c);
            const t = closeTracker(c);
            const numbers = [];
            c.on("Number", (n) => numbers.push(n));
            await c.start();
            const id = c.connectionId;
            const total = 300;
            const streaming = c.invoke("SendNumbers", total);
            await waitFor(() => numbers.length >= 60, 10000, "the first numbers");
            check(proxy.cut() > 0, "the proxy had connections to cut");
            // Sent while the socket is dead: the client buffers them and resends after the
            // reconnect; some may have reached the server already, which must drop repeats.
            const increments = [];
            for (let i = 0; i < 25; i++) increments.push(c.send("Increment"));
            eq(await within(streaming, 20000, "SendNumbers to complete across the cut"), total, "SendNumbers result");
            await Promise.all(increments);
            eq(numbers.length, total, "numbers received (none lost, none twice)");
            eq(numbers, Array.from({ length: total }, (_, i) => i), "numbers in order");
            await sleep(300);
            proxy.cut(); // once more while idle
            eq(await within(c.invoke("GetCount"), 15000, "GetCount after the second cut"), 25, "increments counted once each");
            eq(await c.invoke("GetCallerConnectionId"), id, "server-side connection id after reconnects");
            eq(c.connectionId, id, "client-side connection id after reconnects");
            check(t.closes.length === 0, `onclose fired: ${t.closes.map(String).join("; ")}`);
            await expectCleanStop(c, t);
        } finally {
            await proxy.close();
        }
    } },

    // Closing a connection from outside the hub (what a logout does): the client gets the
    // error text, does not reconnect although it could, and other connections stay open.
    close_from_outside: { async run() {
        const c = build("/testhub", {}, { reconnect: true }); const t = closeTracker(c);
        const other = build(); const to = closeTracker(other);
        let reconnecting = 0;
        c.onreconnecting(() => { reconnecting++; });
        await Promise.all([c.start(), other.start()]);
        const id = await c.invoke("GetCallerConnectionId");
        const answer = await fetch(`${BASE}/closeConnection?id=${encodeURIComponent(id)}&error=${encodeURIComponent("Logged out.")}`, { method: "POST" });
        eq(await answer.json(), { closed: 1 }, "closeConnection answer");
        const e = await within(t.closed, 5000, "onclose after closeConnection");
        eq(e && e.message, "Server returned an error on close: Logged out.", "onclose error");
        await sleep(300);
        eq(reconnecting, 0, "reconnect attempts after a close without allowReconnect");
        eq(c.state, signalR.HubConnectionState.Disconnected, "state of the closed connection");
        eq(await other.invoke("Echo", "still here"), "still here", "Echo on the other connection");
        const again = await fetch(`${BASE}/closeConnection?id=${encodeURIComponent(id)}`, { method: "POST" });
        eq(await again.json(), { closed: 0 }, "closing an ended connection");
        await expectCleanStop(other, to);
    } },

    // Context.Abort() from a hub method ends the caller's connection without reconnecting.
    abort_from_hub: { async run() {
        const c = build("/testhub", {}, { reconnect: true }); const t = closeTracker(c);
        let reconnecting = 0;
        c.onreconnecting(() => { reconnecting++; });
        await c.start();
        await rejects(c.invoke("AbortConnection"), "AbortConnection");
        const e = await within(t.closed, 5000, "onclose after AbortConnection");
        check(e === undefined, `onclose error after Context.Abort(): ${e && e.message}`);
        await sleep(300);
        eq(reconnecting, 0, "reconnect attempts after Context.Abort()");
    } },

    groups: { async run() {
        const a = build(), b = build();
        const ta = closeTracker(a), tb = closeTracker(b);
        const gotA = [], gotB = [];
        a.on("GroupMessage", (g, m) => gotA.push([g, m]));
        b.on("GroupMessage", (g, m) => gotB.push([g, m]));
        await Promise.all([a.start(), b.start()]);
        const group = `g-${randomBytes(4).toString("hex")}`;
        await a.invoke("JoinGroup", group);
        await b.invoke("JoinGroup", group);
        await a.invoke("SendToGroup", group, "to both");
        await waitFor(() => gotA.length === 1 && gotB.length === 1, 5000, "both members to get the first message");
        await b.invoke("LeaveGroup", group);
        await b.invoke("SendToGroup", group, "after leave");
        await waitFor(() => gotA.length === 2, 5000, "the remaining member to get the second message");
        await a.invoke("Echo", "flush"); await b.invoke("Echo", "flush");
        await sleep(200);
        eq(gotA, [[group, "to both"], [group, "after leave"]], "messages of the member");
        eq(gotB, [[group, "to both"]], "messages of the member that left");
        await a.invoke("SendToGroup", `${group}-empty`, "nobody");
        await expectCleanStop(a, ta);
        await expectCleanStop(b, tb);
    } },

    concurrent_50: { async run() {
        const connections = Array.from({ length: 50 }, () => build());
        await Promise.all(connections.map((c) => c.start()));
        const ids = await Promise.all(connections.map((c) => c.invoke("GetCallerConnectionId")));
        eq(new Set(ids).size, 50, "distinct server-side connection ids");
        const echoes = await Promise.all(connections.map((c, i) => c.invoke("Echo", `c${i}`)));
        eq(echoes, connections.map((_, i) => `c${i}`), "echoes");
        await Promise.all(connections.map((c) => c.stop()));
    } },

    ordered_500: { async run() {
        const c = build(); const t = closeTracker(c);
        const seen = [];
        c.on("Seq", (v) => seen.push(v));
        await c.start();
        const n = 500;
        const results = await within(Promise.all(Array.from({ length: n }, (_, i) => c.invoke("Echo", `m${i}`))), 15000, "500 invocations");
        eq(results, Array.from({ length: n }, (_, i) => `m${i}`), "invocation results");
        await Promise.all(Array.from({ length: n }, (_, i) => c.send("SendToCaller", "Seq", `s${i}`)));
        await waitFor(() => seen.length === n, 15000, "500 server calls");
        eq(seen, Array.from({ length: n }, (_, i) => `s${i}`), "server call order");
        await expectCleanStop(c, t);
    } },

    keep_alive: { async run() { throw new Error("runs in the background, see startKeepAlive"); } },

    // "closed with error or start fails if hub cannot be created"
    uncreatable: { async run() {
        const c = build("/uncreatable");
        const expected = "Server returned an error on close: Connection closed with an error. InvalidOperationException: Unable to resolve service for type 'System.Object' while attempting to activate 'FunctionalTests.UncreatableHub'.";
        const closed = deferred();
        c.onclose((e) => closed.resolve(e));
        let message;
        try {
            await c.start();
            const e = await within(closed.promise, 5000, "onclose after a started connection to /uncreatable");
            message = e && e.message;
        } catch (e) {
            message = e && e.message;
        }
        eq(message, expected, "error text");
    } },
};

// A TCP proxy in front of the compat server whose cut() breaks every connection through it
// at once (no close frames: the client and the server both see the socket die).
async function startProxy() {
    const target = new URL(BASE);
    const sockets = new Set();
    const server = net.createServer((client) => {
        const upstream = net.connect(Number(target.port), target.hostname);
        sockets.add(client); sockets.add(upstream);
        const end = () => {
            client.destroy(); upstream.destroy();
            sockets.delete(client); sockets.delete(upstream);
        };
        client.on("error", end); upstream.on("error", end);
        client.on("close", end); upstream.on("close", end);
        client.pipe(upstream); upstream.pipe(client);
    });
    await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
    return {
        url: `http://127.0.0.1:${server.address().port}`,
        cut() {
            const n = sockets.size;
            for (const s of [...sockets]) s.resetAndDestroy ? s.resetAndDestroy() : s.destroy();
            return n;
        },
        close() { this.cut(); return new Promise((resolve) => server.close(() => resolve())); },
    };
}

async function waitFor(predicate, ms, what) {
    const deadline = Date.now() + ms;
    while (!predicate()) {
        if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
        await sleep(20);
    }
}

export function applicable(transport, protocolName) {
    return Object.entries(scenarios)
        .filter(([, s]) => !s.when || s.when(transport, protocolName))
        .map(([name]) => name);
}

// Server pings keep an idle connection open: 17 s without a message from us, and at least one
// Ping must arrive in that time (not over Long Polling, see below).
function startKeepAlive() {
    const began = Date.now();
    const pings = { count: 0 };
    const inner = protocol();
    const counting = {
        name: inner.name, version: inner.version, transferFormat: inner.transferFormat,
        parseMessages(input, logger) {
            const messages = inner.parseMessages(input, logger);
            pings.count += messages.filter((m) => m.type === signalR.MessageType.Ping).length;
            return messages;
        },
        writeMessage: (message) => inner.writeMessage(message),
    };
    const c = new signalR.HubConnectionBuilder()
        .withUrl(BASE + "/testhub", { transport: TRANSPORT, logger: signalR.NullLogger.instance })
        .withHubProtocol(counting).configureLogging(signalR.NullLogger.instance)
        .build();
    const closes = [];
    c.onclose((e) => closes.push(e ? e.message : "closed"));
    const done = (async () => {
        await c.start();
        await sleep(17000);
        check(closes.length === 0, `the idle connection closed: ${closes.join("; ")}`);
        // Long Polling has inherent keep-alive (each poll), so ASP.NET sends no pings there and
        // the client applies no server timeout; the other transports need the 15 s pings.
        if (ARGS.transport !== LP) {
            check(pings.count >= 1, `no Ping from the server in ${Date.now() - began} ms of silence`);
        }
        eq(await c.invoke("Echo", "awake"), "awake", "Echo after the idle period");
        await c.stop();
    })();
    done.catch(() => {});
    return { connection: c, done };
}

async function runOne(name, background = null) {
    LOGGER = new CaptureLogger();
    OPEN = background ? [background.connection] : [];
    const began = Date.now();
    let error = null;
    try {
        await within(background ? background.done : scenarios[name].run(), SCENARIO_TIMEOUT_MS, `scenario ${name}`);
    } catch (e) {
        error = e && e.stack ? String(e.message || e) : String(e);
    }
    // Never leak a connection into the next scenario.
    await Promise.allSettled(OPEN.map((c) => within(c.stop(), 5000, "cleanup stop")));
    const line = { scenario: name, ok: error === null, error, ms: Date.now() - began };
    if (error !== null) line.logs = LOGGER.lines;
    process.stdout.write(JSON.stringify(line) + "\n");
}

async function main() {
    const names = applicable(ARGS.transport, ARGS.protocol).filter((n) => !ARGS.only || ARGS.only.has(n));
    if (ARGS.list) {
        for (const n of names) process.stdout.write(n + "\n");
        return;
    }
    // keep_alive idles for longer than the server's 15 s ping interval: it starts first and
    // runs alongside the others.
    const background = names.includes("keep_alive") ? startKeepAlive() : null;
    for (const name of names) {
        if (name === "keep_alive") continue;
        await runOne(name);
    }
    if (background) await runOne("keep_alive", background);
    process.stdout.write(JSON.stringify({ done: true }) + "\n");
}

process.on("unhandledRejection", (reason) => {
    process.stderr.write(`unhandled rejection: ${reason && reason.stack || reason}\n`);
});

main().then(() => process.exit(0), (e) => {
    process.stderr.write(`${e && e.stack || e}\n`);
    process.exit(2);
});
