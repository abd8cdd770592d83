// Automatic reconnect when the SERVER goes away, driven together with pytest:
//
//   node tests/compat/reconnect.mjs --base http://127.0.0.1:PORT --transport T --protocol P
//
// Prints one JSON line per event. pytest (test_official_client.py) stops and restarts the compat
// server between the events:
//   {"event":"ready"}                      connected, Echo works
//   {"event":"reconnecting","round":n,...} the connection was lost (closeMessage: the server sent
//                                          a Close message, allowReconnect: it allowed a reconnect)
//   {"event":"reconnected","round":n,...}  reconnected to the restarted server, Echo works again
//   {"event":"done"} | {"event":"error","error":...}
// Round 1 is a graceful shutdown (SIGTERM: the server tells clients they may reconnect), round 2
// a crash (SIGKILL: the connection just drops).

import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
const BASE = args.base.replace(/\/$/, "");
const ROUNDS = 2;
const PHASE_TIMEOUT_MS = 30000;

function emit(record) { process.stdout.write(JSON.stringify(record) + "\n"); }

class Logger {
    constructor() { this.closeMessage = false; this.lines = []; }
    log(level, message) {
        const text = String(message);
        if (text.startsWith("Close message received from server")) this.closeMessage = true;
        if (level >= signalR.LogLevel.Information) {
            this.lines.push(`${signalR.LogLevel[level]}: ${text.slice(0, 300)}`);
            if (this.lines.length > 30) this.lines.shift();
        }
    }
}

const logger = new Logger();
const connection = new signalR.HubConnectionBuilder()
    .withUrl(`${BASE}/testhub`, { transport: signalR.HttpTransportType[args.transport], logger })
    .withHubProtocol(args.protocol === "messagepack" ? new MessagePackHubProtocol() : new signalR.JsonHubProtocol())
    .configureLogging(logger)
    // Keep retrying every 200 ms while the server restarts.
    .withAutomaticReconnect({ nextRetryDelayInMilliseconds: (ctx) => (ctx.elapsedMilliseconds < 25000 ? 200 : null) })
    .build();

let waiter = null;
function next(kind) {
    return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out waiting for ${kind}`)), PHASE_TIMEOUT_MS);
        waiter = { kind, resolve: (v) => { clearTimeout(timer); resolve(v); } };
    });
}
function fire(kind, value) {
    if (waiter && waiter.kind === kind) { const w = waiter; waiter = null; w.resolve(value); }
}

connection.onreconnecting((error) => fire("reconnecting", error));
connection.onreconnected((id) => fire("reconnected", id));
connection.onclose((error) => fire("closed", error));

async function main() {
    await connection.start();
    const echo = await connection.invoke("Echo", "before");
    if (echo !== "before") throw new Error(`Echo returned ${echo}`);
    let id = connection.connectionId;
    emit({ event: "ready", connectionId: id });
    for (let round = 1; round <= ROUNDS; round++) {
        logger.closeMessage = false;
        const error = await next("reconnecting");
        emit({ event: "reconnecting", round, closeMessage: logger.closeMessage, error: error ? error.message : null });
        const newId = await next("reconnected");
        const echoed = await connection.invoke("Echo", `round ${round}`);
        const serverId = await connection.invoke("GetCallerConnectionId");
        emit({ event: "reconnected", round, newConnectionId: newId !== id, serverIdMatches: serverId === newId, echo: echoed });
        id = newId;
    }
    const closed = next("closed");
    await connection.stop();
    const error = await closed;
    emit({ event: "done", closeError: error ? error.message : null });
}

main().then(() => process.exit(0), (e) => {
    emit({ event: "error", error: String(e && e.message || e), logs: logger.lines });
    process.exit(1);
});
