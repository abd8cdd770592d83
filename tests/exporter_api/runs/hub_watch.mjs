// Watches one run through /hubs/runs with the official @microsoft/signalr client.
//
//   node hub_watch.mjs --hub http://127.0.0.1:PORT/hubs/runs --token JWT --run RUN_ID
//        [--protocol json|messagepack] [--transport WebSockets|ServerSentEvents|LongPolling]
//   node hub_watch.mjs --hub ... --token JWT --create RUN_BODY_JSON --api http://127.0.0.1:PORT
//
// With --create the run is started (POST /api/runs) only once the hub connection is open, and
// subscribed right after, so the test sees the run's events from its first moments
// ({"type": "created", "runId": ...}).
//
// Prints one JSON line per observation: {"type": "state", "state": ...} for the SubscribeRun
// result, {"type": "event", "name": ..., "payload": ..., "t": ms} for each run event, and stops
// once the run's status is final ({"type": "done"}). A refused subscription prints
// {"type": "subscribe_error", "message": ...}; a refused connection {"type": "connect_error"}; a
// connection the server closes {"type": "closed", "message": ...} (then it stops; the client is
// built withAutomaticReconnect, so a "reconnecting" line would show a close that allowed it).
// With --hold 1 it does not stop at the final status (neither the state's nor a run.updated
// event's): each line on stdin ("again") calls SubscribeRun once more on the same connection and
// prints the outcome; "stop" ends it.
// The Python test reads the lines (tests/exporter_api/runs/test_runs_live.py).

import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].slice(2)] = process.argv[i + 1];

const FINAL = new Set(["Success", "NoData", "Failed", "Cancelled"]);
const started = Date.now();
const out = (obj) => process.stdout.write(JSON.stringify({ ...obj, t: Date.now() - started }) + "\n");

const builder = new signalR.HubConnectionBuilder()
    .withUrl(args.hub, {
        accessTokenFactory: () => args.token,
        transport: signalR.HttpTransportType[args.transport || "WebSockets"],
    })
    .withAutomaticReconnect([0, 200, 500])
    .configureLogging(signalR.LogLevel.None);
if (args.protocol === "messagepack") builder.withHubProtocol(new MessagePackHubProtocol());
const connection = builder.build();

let finish;
let stopping = false;
const finished = new Promise((resolve) => { finish = resolve; });
connection.onreconnecting((err) => out({ type: "reconnecting", message: String(err && err.message) }));
connection.onclose((err) => {
    if (stopping) return;
    out({ type: "closed", message: String(err && err.message) });
    finish();
});
for (const name of ["run.updated", "group.updated", "script.updated", "script.progress"]) {
    connection.on(name, (payload) => {
        out({ type: "event", name, payload });
        if (name === "run.updated" && payload.runId === args.run && FINAL.has(payload.status) && !args.hold) finish();
    });
}

try {
    await connection.start();
} catch (err) {
    out({ type: "connect_error", message: String(err && err.message) });
    process.exit(0);
}
if (args.create) {
    const response = await fetch(`${args.api}/api/runs`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${args.token}` },
        body: args.create,
    });
    const created = await response.json();
    if (response.status !== 201) {
        out({ type: "create_error", status: response.status, body: created });
        process.exit(0);
    }
    args.run = created.runId;
    out({ type: "created", runId: created.runId, status: created.status });
}
try {
    const state = await connection.invoke("SubscribeRun", args.run);
    out({ type: "state", state });
    if (FINAL.has(state.status) && !args.hold) finish();
} catch (err) {
    out({ type: "subscribe_error", message: String(err && err.message) });
    if (!args.hold) finish();
}
if (args.hold) {
    const { createInterface } = await import("node:readline");
    createInterface({ input: process.stdin }).on("line", async (line) => {
        if (line.trim() === "stop") { finish(); return; }
        try {
            out({ type: "state", state: await connection.invoke("SubscribeRun", args.run) });
        } catch (err) {
            out({ type: "subscribe_error", message: String(err && err.message) });
        }
    });
}
const timeout = setTimeout(() => { out({ type: "timeout" }); finish(); }, Number(args.timeout || 60000));
await finished;
clearTimeout(timeout);
stopping = true;
await connection.stop();
out({ type: "done" });
process.exit(0); // stdin (--hold) would keep the process alive
