// Run by tests/clients/test_node_client.py against a live sidecar it starts, which passes
// WARDEN_ADDRESS, WARDEN_API_KEY (an app with a limit of one request per minute on model
// "limited") and WARDEN_DOWN_ADDRESS (a port nothing listens on). The servers of the test's own
// below answer as a newer server would, or refuse without details.
import { strict as assert } from "node:assert";
import { test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import * as path from "node:path";

import { WardenClient, WardenDenied, WardenError } from "../src/index";

function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run through tests/clients/test_node_client.py`);
  return value;
}

const client = () => new WardenClient(env("WARDEN_ADDRESS"), { apiKey: env("WARDEN_API_KEY") });
const id = (name: string) => `node-${name}-${Date.now()}-${Math.random().toString(16).slice(2)}`;

test("authorize, record usage and audit", async () => {
  const w = client();
  const d = await w.authorize({ requestId: id("a"), model: "gpt-4o-mini", maxOutputTokens: 100,
                                messages: [{ role: "user", content: "hi" }] });
  assert.ok(d.allowed);
  assert.equal(d.reason, "ALLOWED");
  assert.equal(d.model, "gpt-4o-mini");
  assert.ok(d.reservationId);
  const usage = await w.recordUsage({ requestId: d.requestId, outcome: "OUTCOME_COMPLETED",
                                      usage: { inputTokens: 10, outputTokens: 20 } });
  assert.equal(usage.duplicate, false);
  const ids = await w.audit([{ action: "tool.call", requestId: d.requestId }]);
  assert.equal(ids.length, 1);
  w.close();
});

test("a denial carries its reasons, and a guard throws it", async () => {
  const w = client();
  await w.authorize({ requestId: id("d"), model: "limited" });
  const denied = await w.authorize({ requestId: id("d"), model: "limited" });
  assert.equal(denied.allowed, false);
  assert.equal(denied.reason, "RATE_LIMITED");
  assert.ok((denied.retryAfterMs ?? 0) > 0);
  assert.equal(denied.response!.results.filter((r) => !r.allowed).length, 1);
  await assert.rejects(w.guard({ model: "limited" }, async () => "never"),
                       (e: unknown) => e instanceof WardenDenied && e.reason === "RATE_LIMITED");
  w.close();
});

test("a guard records how the call ended", async () => {
  const w = client();
  const answer = await w.guard({ model: "gpt-4o-mini" }, async (d, used) => {
    used({ inputTokens: 7, outputTokens: 3 });
    return `called ${d.model}`;
  });
  assert.equal(answer, "called gpt-4o-mini");
  await assert.rejects(w.guard({ model: "gpt-4o-mini" }, async () => { throw new Error("500"); }),
                       /500/);
  w.close();
});

test("bad input is INVALID_ARGUMENT with its field; an unknown key UNAUTHENTICATED", async () => {
  const w = client();
  await assert.rejects(w.authorize({ requestId: "not valid!", model: "m" }), (e: unknown) =>
    e instanceof WardenError && e.code === grpc.status.INVALID_ARGUMENT && "request_id" in e.violations);
  const bad = new WardenClient(env("WARDEN_ADDRESS"), { apiKey: "wk_000000000000_" + "0".repeat(43) });
  await assert.rejects(bad.authorize({ model: "m" }), (e: unknown) =>
    e instanceof WardenError && e.code === grpc.status.UNAUTHENTICATED && e.reason === "API_KEY_INVALID");
  bad.close();
  w.close();
  assert.throws(() => new WardenClient("nonsense"), TypeError);
});

test("an expired deadline and an aborted call", async () => {
  const w = client();
  await assert.rejects(w.authorize({ model: "gpt-4o-mini" }, { timeoutMs: 0 }), (e: unknown) =>
    e instanceof WardenError && e.code === grpc.status.DEADLINE_EXCEEDED && e.unavailable);
  const aborted = new AbortController();
  aborted.abort();
  await assert.rejects(w.authorize({ model: "gpt-4o-mini" }, { signal: aborted.signal }), (e: unknown) =>
    e instanceof WardenError && e.code === grpc.status.CANCELLED);
  w.close();
});

test("a sidecar that is down fails closed or open, and never hangs", async () => {
  const started = Date.now();
  const closed = new WardenClient(env("WARDEN_DOWN_ADDRESS"), { apiKey: "k", timeoutMs: 1000 });
  await assert.rejects(closed.authorize({ model: "m" }), (e: unknown) => e instanceof WardenError && e.unavailable);
  closed.close();
  const open = new WardenClient(env("WARDEN_DOWN_ADDRESS"), { apiKey: "k", timeoutMs: 1000,
                                                             onUnavailable: "fail_open" });
  const d = await open.authorize({ model: "m", maxOutputTokens: 9 });
  assert.ok(d.allowed && d.failOpen && d.maxOutputTokens === 9 && open.failOpens === 1);
  assert.equal(await open.guard({ model: "m" }, async (decision) => decision.failOpen), true);
  open.close();
  assert.ok(Date.now() - started < 10000);
});

test("an enum value from a newer server, and a refusal without details", async () => {
  const definition = protoLoader.loadSync("warden/v1/warden.proto", {
    includeDirs: [path.resolve(__dirname, "..", "..", "proto")], enums: String });
  const api = grpc.loadPackageDefinition(definition) as any;
  const server = new grpc.Server();
  server.addService(api.warden.v1.Warden.service, {
    Authorize: (call: any, done: any) => call.request.model === "refuse"
      ? done({ code: grpc.status.PERMISSION_DENIED, details: "no" })
      : done(null, { decision: 7, reason: 999 }),
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync(
    "127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  const w = new WardenClient(`127.0.0.1:${port}`, { apiKey: "k" });
  const newer = await w.authorize({ model: "new" });
  assert.equal(newer.allowed, false);
  assert.equal(newer.reason, "UNKNOWN_999");
  await assert.rejects(w.authorize({ model: "refuse" }), (e: unknown) =>
    e instanceof WardenError && e.code === grpc.status.PERMISSION_DENIED && e.reason === "");
  w.close();
  server.forceShutdown();
});
