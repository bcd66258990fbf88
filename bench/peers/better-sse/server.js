// The better-sse peer of bench/compare: Express, one better-sse channel per topic, the
// same HTTP API as the Tidings hub (GET /events?topic=a, POST /publish {"topic","data"}).
// Written the way better-sse's README shows; data goes through its default serializer
// (JSON.stringify), so the bench reads the numbers out of a quoted string.
// Usage: node server.js [PORT] (default 8093), listening on 127.0.0.1.
const express = require("express");
const { createSession, createChannel } = require("better-sse");

const port = Number(process.argv[2] || 8093);
const channels = new Map();
const channel = (topic) => {
  if (!channels.has(topic)) channels.set(topic, createChannel());
  return channels.get(topic);
};
let nextId = 0;

const app = express();
app.use(express.json({ limit: "2mb" }));

app.get("/events", async (req, res) => {
  const session = await createSession(req, res);
  channel(String(req.query.topic || "a")).register(session);
});

app.post("/publish", (req, res) => {
  const { topic, data } = req.body || {};
  if (typeof topic !== "string" || typeof data !== "string") {
    return res.status(400).json({ error: "topic and data must be strings" });
  }
  channel(topic).broadcast(data);
  res.json({ id: String(nextId++) });
});

const server = app.listen(port, "127.0.0.1");
server.maxConnections = 20000;
server.keepAliveTimeout = 0; // streams stay open however long; publish connections too
server.requestTimeout = 0;
server.headersTimeout = 60000;
