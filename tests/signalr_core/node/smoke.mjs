// Smoke test of signalr_core with the official client: node smoke.mjs URL TRANSPORT PROTOCOL
import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";

const [url, transportName, protocolName] = process.argv.slice(2);
const transport = signalR.HttpTransportType[transportName];
const builder = new signalR.HubConnectionBuilder()
  .withUrl(url, { transport })
  .configureLogging(signalR.LogLevel.Warning);
if (protocolName === "messagepack") builder.withHubProtocol(new MessagePackHubProtocol());
const connection = builder.build();

const result = {};
const pong = new Promise((resolve) => connection.on("Pong", resolve));
const groupMessage = new Promise((resolve) =>
  connection.on("GroupMessage", (group, message) => resolve(`${group}:${message}`)),
);
await connection.start();
result.transport = await connection.invoke("TransportName");
result.echo = await connection.invoke("Echo", "hello");
result.stream = await new Promise((resolve, reject) => {
  const items = [];
  connection.stream("Counter", 3).subscribe({
    next: (item) => items.push(item),
    complete: () => resolve(items),
    error: reject,
  });
});
const subject = new signalR.Subject();
const concat = connection.invoke("Concat", subject);
subject.next("a");
subject.next("b");
subject.complete();
result.concat = await concat;
await connection.send("PingMe", "x");
result.pong = await pong;
await connection.invoke("JoinGroup", "g");
await connection.invoke("SendToGroup", "g", "m");
result.group = await groupMessage;
try {
  await connection.invoke("Fail");
} catch (e) {
  result.error = e.message;
}
await connection.stop();
result.state = connection.state;
console.log(JSON.stringify(result));
