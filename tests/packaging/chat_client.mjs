// The official client against the README's chat example: two connections, a message from one
// reaches both, and a server-to-client stream. Prints one JSON line: {"ok": true, ...}.
import * as signalR from "@microsoft/signalr";

const url = process.argv[2];
const timeout = (ms) => new Promise((_, reject) => setTimeout(() => reject(new Error("timeout")), ms));

function connect() {
  return new signalR.HubConnectionBuilder()
    .withUrl(url)
    .configureLogging(signalR.LogLevel.Warning)
    .build();
}

async function main() {
  const sender = connect();
  const listener = connect();
  const received = (connection) =>
    new Promise((resolve) => connection.on("ReceiveMessage", (user, message) => resolve([user, message])));
  const atSender = received(sender);
  const atListener = received(listener);
  await sender.start();
  await listener.start();
  await sender.invoke("SendMessage", "ada", "hello ☃");
  const messages = await Promise.race([Promise.all([atSender, atListener]), timeout(10000)]);
  const items = [];
  await Promise.race([
    new Promise((resolve, reject) =>
      listener.stream("Counter", 3).subscribe({ next: (i) => items.push(i), complete: resolve, error: reject }),
    ),
    timeout(10000),
  ]);
  const transport = sender.connection.transport?.constructor?.name ?? null;
  await sender.stop();
  await listener.stop();
  console.log(JSON.stringify({ ok: true, messages, items, transport }));
}

main().catch((error) => {
  console.log(JSON.stringify({ ok: false, error: String(error) }));
  process.exitCode = 1;
});
