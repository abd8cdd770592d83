// What hub_watch.mjs and hub_frontend.mjs share: the command line, a connection to /hubs/runs
// with the official @microsoft/signalr client, its run events and its end as JSON lines.

import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";

/** The `--name value` pairs of the command line. */
export function parseArgs() {
    const args = {};
    for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].slice(2)] = process.argv[i + 1];
    return args;
}

/**
 * A connection to `args.hub` with `args.token` (MessagePack with `--protocol messagepack`; the
 * `transport` named, else the client's own choice), reconnecting at once, that prints each run
 * event through `out` (then calls `onEvent(name, payload)`), "reconnecting" and "closed" (which
 * ends the session). `start()` prints "connect_error" and exits when the connection is refused;
 * `end(timeoutMs)` waits for `finish()` (or prints "timeout"), stops, prints "done" and exits.
 */
export function hubSession(args, out, { transport, onEvent } = {}) {
    const options = { accessTokenFactory: () => args.token };
    if (transport) options.transport = signalR.HttpTransportType[transport];
    const builder = new signalR.HubConnectionBuilder()
        .withUrl(args.hub, options)
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
            if (onEvent) onEvent(name, payload);
        });
    }

    const start = async () => {
        try {
            await connection.start();
        } catch (err) {
            out({ type: "connect_error", message: String(err && err.message) });
            process.exit(0);
        }
    };
    const end = async (timeoutMs) => {
        const timeout = setTimeout(() => { out({ type: "timeout" }); finish(); }, timeoutMs);
        await finished;
        clearTimeout(timeout);
        stopping = true;
        await connection.stop();
        out({ type: "done" });
        process.exit(0); // stdin (read for calls) would keep the process alive
    };
    return { connection, finish, start, end };
}
