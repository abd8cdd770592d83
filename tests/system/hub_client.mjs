// A long-lived official @microsoft/signalr client for the system tests (tests/system/client.py).
//
//   node hub_client.mjs --hub http://127.0.0.1:HAPROXY/hubs/runs --token JWT --client NAME
//        [--pin SERVER] [--transport WebSockets|ServerSentEvents|LongPolling]
//
// It connects (WebSockets unless told otherwise) with withAutomaticReconnect and an accessTokenFactory, and sends
// `X-Client: NAME` on every request so HAProxy's log tells which server each request reached.
// Without --pin, HAProxy's sticky cookie (SRV) lives in the client's own cookie jar: in Node the
// client wraps fetch with fetch-cookie over a tough-cookie jar and copies the jar's cookies into
// the WebSocket upgrade request, so negotiate and connect reach the same server. --pin SERVER
// sends `Cookie: SRV=SERVER` instead (HAProxy then routes there and sets no cookie of its own):
// the tests use it to put the connection on a chosen instance.
//
// stdin, one command a line: `subscribe RUN_ID` (SubscribeRun, remembered and called again
// after every reconnect), `stop`. stdout, one JSON line per observation, each with `ts` (epoch
// seconds, the same clock as the Python side):
//   {"type": "connected", "connectionId"}            the first start() succeeded
//   {"type": "connect_error", "message"}             the first start() failed (then it exits)
//   {"type": "state", "runId", "state"}              SubscribeRun's result
//   {"type": "subscribe_error", "runId", "message"}
//   {"type": "event", "name", "payload"}             run.updated / group.updated / ...
//   {"type": "reconnecting", "message"} / {"type": "reconnected", "connectionId"}
//   {"type": "closed", "message"}                    closed for good (no reconnect, or given up)
//   {"type": "stopped"}                              after `stop`

import * as signalR from "@microsoft/signalr";
import { createInterface } from "node:readline";

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].slice(2)] = process.argv[i + 1];

const out = (obj) => process.stdout.write(JSON.stringify({ ...obj, ts: Date.now() / 1000 }) + "\n");

const headers = { "X-Client": args.client };
if (args.pin) headers.Cookie = `SRV=${args.pin}`;

const connection = new signalR.HubConnectionBuilder()
    .withUrl(args.hub, {
        accessTokenFactory: () => args.token,
        transport: signalR.HttpTransportType[args.transport || "WebSockets"],
        headers,
    })
    // Keep trying every 250 ms for a minute: an instance restarts in a few seconds.
    .withAutomaticReconnect({
        nextRetryDelayInMilliseconds: (ctx) => (ctx.elapsedMilliseconds < 60000 ? 250 : null),
    })
    .configureLogging(signalR.LogLevel.None)
    .build();

const subscribed = [];
let stopping = false;

async function subscribe(runId) {
    try {
        out({ type: "state", runId, state: await connection.invoke("SubscribeRun", runId) });
    } catch (err) {
        out({ type: "subscribe_error", runId, message: String(err && err.message) });
    }
}

for (const name of ["run.updated", "group.updated", "script.updated", "script.progress"]) {
    connection.on(name, (payload) => out({ type: "event", name, payload }));
}
connection.onreconnecting((err) => out({ type: "reconnecting", message: String(err && err.message) }));
connection.onreconnected(async (connectionId) => {
    out({ type: "reconnected", connectionId });
    for (const runId of subscribed) await subscribe(runId);
});
connection.onclose((err) => {
    if (!stopping) out({ type: "closed", message: err ? String(err.message) : null });
});

try {
    await connection.start();
} catch (err) {
    out({ type: "connect_error", message: String(err && err.message) });
    process.exit(0);
}
out({ type: "connected", connectionId: connection.connectionId });

createInterface({ input: process.stdin }).on("line", async (line) => {
    const [command, value] = line.trim().split(/\s+/);
    if (command === "subscribe") {
        subscribed.push(value);
        await subscribe(value);
    } else if (command === "stop") {
        stopping = true;
        await connection.stop();
        out({ type: "stopped" });
        process.exit(0);
    }
});
