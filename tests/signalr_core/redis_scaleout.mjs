// The official @microsoft/signalr client against two servers sharing one Redis backplane.
//
//   node tests/signalr_core/redis_scaleout.mjs http://127.0.0.1:PORT_A http://127.0.0.1:PORT_B
//
// c1 (user alice, JSON) is on server A; c2 (user bob, MessagePack) and c3 (user alice, JSON) are
// on server B. Prints one JSON line: {"ok", "error", "got": {c1: [...], c2: [...], c3: [...]}}
// where each list holds the server-to-client calls the client received, in order.

import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";

const [A, B] = process.argv.slice(2);
const EVENTS = ["All", "Group", "User", "Direct", "Notify"];
const got = { c1: [], c2: [], c3: [] };

function connect(base, user, label, msgpack) {
    let builder = new signalR.HubConnectionBuilder()
        .withUrl(`${base}/hub`, {
            transport: signalR.HttpTransportType.WebSockets,
            accessTokenFactory: () => user,
        })
        .configureLogging(signalR.LogLevel.Warning);
    if (msgpack) builder = builder.withHubProtocol(new MessagePackHubProtocol());
    const connection = builder.build();
    for (const name of EVENTS) {
        connection.on(name, (...args) => got[label].push([name, ...args]));
    }
    return connection;
}

async function until(predicate, what, ms = 5000) {
    const deadline = Date.now() + ms;
    while (!predicate()) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 10));
    }
}

const has = (label, name) => got[label].some((e) => e[0] === name);

let c1, c2, c3;
try {
    c1 = connect(A, "alice", "c1", false);
    c2 = connect(B, "bob", "c2", true);
    c3 = connect(B, "alice", "c3", false);
    await Promise.all([c1.start(), c2.start(), c3.start()]);

    // send_all from A reaches B's connections.
    await c1.invoke("SendAll", "hello");
    await until(() => ["c1", "c2", "c3"].every((l) => has(l, "All")), "All");

    // A adds a connection that lives on B to a group (ack round trip), then sends to the group.
    const id2 = await c2.invoke("GetConnectionId");
    await c1.invoke("AddToGroup", id2, "room");
    await c1.invoke("SendToGroup", "room", "g1");
    await until(() => has("c2", "Group"), "Group");

    // A user send from B reaches alice on A and on B.
    await c2.invoke("SendToUser", "alice", "u1");
    await until(() => has("c1", "User") && has("c3", "User"), "User");

    // A single-connection send from A to a connection on B.
    await c1.invoke("SendToConnection", c3.connectionId, "d1");
    await until(() => has("c3", "Direct"), "Direct");

    // The hub context of server A (outside any hub) reaches everyone.
    const response = await fetch(`${A}/notify?message=n1`, { method: "POST" });
    if (response.status !== 200) throw new Error(`notify answered ${response.status}`);
    await until(() => ["c1", "c2", "c3"].every((l) => has(l, "Notify")), "Notify");

    await new Promise((r) => setTimeout(r, 200)); // anything misrouted would show up now
    console.log(JSON.stringify({ ok: true, error: null, got }));
} catch (err) {
    console.log(JSON.stringify({ ok: false, error: String(err && err.stack || err), got }));
} finally {
    await Promise.all([c1, c2, c3].filter(Boolean).map((c) => c.stop().catch(() => {})));
}
