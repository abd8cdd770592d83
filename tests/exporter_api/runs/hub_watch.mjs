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

import { hubSession, parseArgs } from "./hub_client.mjs";

const args = parseArgs();

const FINAL = new Set(["Success", "NoData", "Failed", "Cancelled"]);
const started = Date.now();
const out = (obj) => process.stdout.write(JSON.stringify({ ...obj, t: Date.now() - started }) + "\n");

const { connection, finish, start, end } = hubSession(args, out, {
    transport: args.transport || "WebSockets",
    onEvent: (name, payload) => {
        if (name === "run.updated" && payload.runId === args.run && FINAL.has(payload.status) && !args.hold) finish();
    },
});

await start();
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
await end(Number(args.timeout || 60000));
