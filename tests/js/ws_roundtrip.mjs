// MQTT.js over WebSocket: connect to ws://127.0.0.1:PORT/mqtt (MQTT 5, then 3.1.1),
// subscribe, publish, and expect the message back. Exits 0 on success.
import mqtt from "mqtt";

const port = process.argv[2];
const url = `ws://127.0.0.1:${port}/mqtt`;

function roundtrip(protocolVersion) {
  return new Promise((resolve, reject) => {
    const topic = `js/${protocolVersion}/${Date.now()}`;
    const client = mqtt.connect(url, { protocolVersion, reconnectPeriod: 0, connectTimeout: 10000 });
    const timer = setTimeout(() => reject(new Error(`v${protocolVersion}: timed out`)), 15000);
    client.on("error", (e) => { clearTimeout(timer); reject(e); });
    client.on("connect", () => {
      client.subscribe(topic, { qos: 1 }, (err) => {
        if (err) { clearTimeout(timer); return reject(err); }
        client.publish(topic, "hello from mqtt.js", { qos: 1 });
      });
    });
    client.on("message", (t, payload) => {
      clearTimeout(timer);
      client.end();
      if (t === topic && payload.toString() === "hello from mqtt.js") resolve();
      else reject(new Error(`unexpected ${t} ${payload}`));
    });
  });
}

try {
  await roundtrip(5);
  await roundtrip(4);
  console.log("mqtt.js: 2 passed, 0 failed");
  process.exit(0);
} catch (e) {
  console.error("mqtt.js failed:", e);
  process.exit(1);
}
