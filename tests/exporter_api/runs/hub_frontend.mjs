// An "existing frontend" on /hubs/runs with the official @microsoft/signalr client: it connects
// to the URL it is given (the test puts ?runId=... there), records every run event, and calls
// whatever hub method the test tells it to.
//
//   node hub_frontend.mjs --hub URL --token JWT [--protocol json|messagepack]
//
// Prints one JSON line per observation: {"type": "connected"} once start() resolved (or
// {"type": "connect_error", "message"}), {"type": "event", "name", "payload"} for each run
// event, {"type": "result", "call", "result"} / {"type": "error", "call", "message"} for each
// call. Each stdin line is a call, {"call": 1, "method": "JoinRun", "arg": ...}, or "stop".
// The Python test reads the lines (tests/exporter_api/runs/test_hub_frontend.py).

import { createInterface } from "node:readline";

import { hubSession, parseArgs } from "./hub_client.mjs";

const args = parseArgs();
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const { connection, finish, start, end } = hubSession(args, out);
connection.onreconnected(() => out({ type: "reconnected" }));

await start();
out({ type: "connected" });
createInterface({ input: process.stdin }).on("line", async (line) => {
    if (line.trim() === "stop") { finish(); return; }
    const { call, method, arg } = JSON.parse(line);
    try {
        out({ type: "result", call, result: await connection.invoke(method, arg) ?? null });
    } catch (err) {
        out({ type: "error", call, message: String(err && err.message) });
    }
});
await end(60000);
