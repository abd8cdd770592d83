// The official @microsoft/signalr client against two servers sharing one Redis backplane.
//
//   node tests/signalr_core/redis_scaleout.mjs http://127.0.0.1:PORT_A http://127.0.0.1:PORT_B [SCENARIO]
//
// Prints one JSON line {"ok", "error", ...scenario results}.
//
// fanout (default): c1 (user alice, JSON) is on server A; c2 (user bob, MessagePack) and c3
//   (user alice, JSON) are on server B. "got": {c1: [...], c2: [...], c3: [...]} holds the
//   server-to-client calls each client received, in order.
// results: c2 (MessagePack) and c3 (JSON) on server B answer client-result invocations made
//   through server A's hub context (POST A/invoke). "answers": {name: A's JSON answer}.
// close: c4 (user carol, JSON, automatic reconnect) is on server B, c1 (alice) on A; server A
//   closes user carol (POST A/close_user). "closed" is A's answer, "onclose" the error message
//   c4's onclose got, "reconnecting" whether c4 tried to reconnect, "states" final states.

import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";

const [A, B, scenario = "fanout"] = process.argv.slice(2);
const EVENTS = ["All", "Group", "User", "Direct", "Notify"];
const got = { c1: [], c2: [], c3: [] };

function connect(base, user, label, msgpack, reconnect = false) {
    let builder = new signalR.HubConnectionBuilder()
        .withUrl(`${base}/hub`, {
            transport: signalR.HttpTransportType.WebSockets,
            accessTokenFactory: () => user,
        })
        .configureLogging(signalR.LogLevel.Warning);
    if (msgpack) builder = builder.withHubProtocol(new MessagePackHubProtocol());
    if (reconnect) builder = builder.withAutomaticReconnect([0, 100, 100]);
    const connection = builder.build();
    for (const name of EVENTS) {
        connection.on(name, (...args) => (got[label] ??= []).push([name, ...args]));
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

async function post(url) {
    const response = await fetch(url, { method: "POST" });
    if (response.status !== 200) throw new Error(`${url} answered ${response.status}`);
    return await response.json().catch(() => null);
}

const has = (label, name) => got[label].some((e) => e[0] === name);

async function fanout(c1, c2, c3) {
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
    return { got };
}

async function results(c2, c3) {
    for (const c of [c2, c3]) {
        c.on("Add", (a, b) => a + b);
        c.on("Fail", () => {
            throw new Error("nope");
        });
        c.on("Text", () => "not a number");
        c.on("Slow", () => new Promise((r) => setTimeout(() => r(1), 1500)));
    }
    const ask = (c, method, args, timeout = 5) =>
        post(
            `${A}/invoke?connection_id=${encodeURIComponent(c.connectionId)}` +
                `&method=${method}&args=${encodeURIComponent(JSON.stringify(args))}&timeout=${timeout}`,
        );
    const answers = {
        addMsgpack: await ask(c2, "Add", [2, 3]),
        addJson: await ask(c3, "Add", [40, 2]),
        fail: await ask(c2, "Fail", []),
        missing: await ask(c3, "Missing", []),
        text: await ask(c3, "Text", []),
        slow: await ask(c2, "Slow", [], 0.3),
        unknown: await post(`${A}/invoke?connection_id=nobody&method=Add&args=[1,2]`),
    };
    // The slow handler's late answer must not disturb the next invocation.
    await new Promise((r) => setTimeout(r, 1400));
    answers.afterSlow = await ask(c2, "Add", [1, 1]);
    return { answers };
}

async function close(c1, c4) {
    let onclose;
    let reconnecting = false;
    const closed = new Promise((resolve) => {
        c4.onclose((err) => {
            onclose = err ? err.message : null;
            resolve();
        });
    });
    c4.onreconnecting(() => (reconnecting = true));
    const answer = await post(`${A}/close_user?user=carol&error=bye`);
    await Promise.race([
        closed,
        new Promise((_, reject) => setTimeout(() => reject(new Error("c4 not closed")), 5000)),
    ]);
    await new Promise((r) => setTimeout(r, 300)); // a reconnect attempt would start now
    return { closed: answer, onclose, reconnecting, states: { c1: c1.state, c4: c4.state } };
}

let connections = [];
try {
    let out;
    if (scenario === "fanout") {
        const c1 = connect(A, "alice", "c1", false);
        const c2 = connect(B, "bob", "c2", true);
        const c3 = connect(B, "alice", "c3", false);
        connections = [c1, c2, c3];
        await Promise.all(connections.map((c) => c.start()));
        out = await fanout(c1, c2, c3);
    } else if (scenario === "results") {
        const c2 = connect(B, "bob", "c2", true);
        const c3 = connect(B, "alice", "c3", false);
        connections = [c2, c3];
        await Promise.all(connections.map((c) => c.start()));
        out = await results(c2, c3);
    } else if (scenario === "close") {
        const c1 = connect(A, "alice", "c1", false);
        const c4 = connect(B, "carol", "c4", false, true);
        connections = [c1, c4];
        await Promise.all(connections.map((c) => c.start()));
        out = await close(c1, c4);
    } else {
        throw new Error(`unknown scenario ${scenario}`);
    }
    console.log(JSON.stringify({ ok: true, error: null, ...out }));
} catch (err) {
    console.log(JSON.stringify({ ok: false, error: String((err && err.stack) || err), got }));
} finally {
    await Promise.all(connections.map((c) => c.stop().catch(() => {})));
}
