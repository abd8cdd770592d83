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

import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";
import { createInterface } from "node:readline";

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].slice(2)] = process.argv[i + 1];
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const builder = new signalR.HubConnectionBuilder()
    .withUrl(args.hub, { accessTokenFactory: () => args.token })
    .withAutomaticReconnect([0, 200, 500])
    .configureLogging(signalR.LogLevel.None);
if (args.protocol === "messagepack") builder.withHubProtocol(new MessagePackHubProtocol());
const connection = builder.build();

let finish;
let stopping = false;
const finished = new Promise((resolve) => { finish = resolve; });
connection.onreconnecting((err) => out({ type: "reconnecting", message: String(err && err.message) }));
connection.onreconnected(() => out({ type: "reconnected" }));
connection.onclose((err) => {
    if (stopping) return;
    out({ type: "closed", message: String(err && err.message) });
    finish();
});
for (const name of ["run.updated", "group.updated", "script.updated", "script.progress"]) {
    connection.on(name, (payload) => out({ type: "event", name, payload }));
}

try {
    await connection.start();
    out({ type: "connected" });
} catch (err) {
    out({ type: "connect_error", message: String(err && err.message) });
    process.exit(0);
}
createInterface({ input: process.stdin }).on("line", async (line) => {
    if (line.trim() === "stop") { finish(); return; }
    const { call, method, arg } = JSON.parse(line);
    try {
        out({ type: "result", call, result: await connection.invoke(method, arg) ?? null });
    } catch (err) {
        out({ type: "error", call, message: String(err && err.message) });
    }
});
const timeout = setTimeout(() => { out({ type: "timeout" }); finish(); }, 60000);
await finished;
clearTimeout(timeout);
stopping = true;
await connection.stop();
out({ type: "done" });
process.exit(0);
