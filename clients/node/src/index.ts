// The TypeScript client of Warden, the LLM policy sidecar: authorize, recordUsage and audit
// over @grpc/grpc-js, promise-based, with deadlines and AbortSignal, typed errors read from
// the rich error details, retries of UNAVAILABLE by gRPC's retry policy, fail-open or
// fail-closed, and a guard that records usage however an LLM call ends.
import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import * as protobuf from "protobufjs";

import type { ProtoGrpcType } from "./generated/warden";
import type { AuditEvent } from "./generated/warden/v1/AuditEvent";
import type { AuthorizeRequest } from "./generated/warden/v1/AuthorizeRequest";
import type { AuthorizeResponse__Output } from "./generated/warden/v1/AuthorizeResponse";
import type { RecordUsageRequest } from "./generated/warden/v1/RecordUsageRequest";
import type { RecordUsageResponse__Output } from "./generated/warden/v1/RecordUsageResponse";
import type { WardenClient as Stub } from "./generated/warden/v1/Warden";

export type { AuditEvent, AuthorizeRequest, AuthorizeResponse__Output, RecordUsageRequest };

const PROTO_DIR = path.resolve(__dirname, "..", "..", "proto");
const LOADER = { longs: Number, enums: String, defaults: true, oneofs: true, includeDirs: [PROTO_DIR] };
const definition = protoLoader.loadSync("warden/v1/warden.proto", LOADER);
const api = grpc.loadPackageDefinition(definition) as unknown as ProtoGrpcType;
const rpc = protobuf.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"]
  .map((f) => path.join(PROTO_DIR, f)));
const STATUS = rpc.lookupType("google.rpc.Status");
const DETAILS: Record<string, protobuf.Type> = Object.fromEntries(
  ["ErrorInfo", "BadRequest", "RetryInfo"].map((n) => [`type.googleapis.com/google.rpc.${n}`,
    rpc.lookupType(`google.rpc.${n}`)]));

/** A call Warden did not answer as asked: the gRPC code, the stable reason of ErrorInfo ("" when
 * the server sent none), BadRequest's field violations and RetryInfo's delay. */
export class WardenError extends Error {
  constructor(message: string, readonly code: grpc.status, readonly reason = "",
              readonly violations: Record<string, string> = {},
              readonly retryAfterMs: number | null = null) {
    super(message);
    this.name = "WardenError";
  }

  /** The sidecar could not be reached, or did not answer in time. */
  get unavailable(): boolean {
    return this.code === grpc.status.UNAVAILABLE || this.code === grpc.status.DEADLINE_EXCEEDED;
  }
}

/** An LLM call the policies denied (thrown by guard; authorize returns the Decision). */
export class WardenDenied extends WardenError {
  constructor(readonly decision: Decision) {
    super(`denied by Warden: ${decision.reason}`, grpc.status.OK, decision.reason, {},
          decision.retryAfterMs);
    this.name = "WardenDenied";
  }
}

/** The WardenError of a failed call, with every detail the server attached. */
export function fromServiceError(error: grpc.ServiceError): WardenError {
  let reason = "";
  const violations: Record<string, string> = {};
  let retry: number | null = null;
  const raw = error.metadata?.get("grpc-status-details-bin")[0];
  if (Buffer.isBuffer(raw)) {
    try {
      const status = STATUS.decode(raw) as unknown as { details: { type_url: string; value: Uint8Array }[] };
      for (const any of status.details ?? []) {
        const type = DETAILS[any.type_url];
        if (!type) continue;
        const detail = type.toObject(type.decode(any.value), { longs: Number }) as Record<string, any>;
        if (any.type_url.endsWith("ErrorInfo")) reason = detail.reason ?? "";
        if (any.type_url.endsWith("BadRequest")) {
          for (const v of detail.fieldViolations ?? []) violations[v.field] = v.description;
        }
        if (any.type_url.endsWith("RetryInfo")) {
          const d = detail.retryDelay ?? {};
          retry = (d.seconds ?? 0) * 1000 + Math.round((d.nanos ?? 0) / 1e6);
        }
      }
    } catch {
      // A garbled trailer is as good as none.
    }
  }
  return new WardenError(error.details || error.message, error.code ?? grpc.status.UNKNOWN, reason,
                         violations, retry);
}

/** What Authorize decided, read for an application. `allowed` only for DECISION_ALLOW (a value
 * from a newer server denies). `failOpen`: the sidecar could not be reached and the client was
 * made with onUnavailable "fail_open"; nothing was reserved. */
export interface Decision {
  requestId: string;
  allowed: boolean;
  reason: string;
  model: string;
  provider: string;
  maxOutputTokens: number;
  reservationId: string;
  retryAfterMs: number | null;
  failOpen: boolean;
  response: AuthorizeResponse__Output | null;
}

/** A Reason without its prefix; UNKNOWN_<n> for a value this client does not know. */
export function reasonName(value: string | number): string {
  return typeof value === "string" ? value.replace(/^REASON_/, "") : `UNKNOWN_${value}`;
}

export interface ClientOptions {
  /** The app's Warden key (default WARDEN_API_KEY). */
  apiKey?: string;
  /** Deadline of each call, in milliseconds (default 2000). */
  timeoutMs?: number;
  /** "fail_open": authorize answers an allow marked failOpen when the sidecar cannot be
   * reached; "fail_closed" (default) throws. */
  onUnavailable?: "fail_closed" | "fail_open";
  /** More attempts of an UNAVAILABLE call (default 3). */
  retries?: number;
  /** TLS or mTLS (grpc.credentials.createSsl); plaintext otherwise. */
  credentials?: grpc.ChannelCredentials;
}

export interface CallOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface Usage {
  inputTokens: number;
  outputTokens: number;
  cachedInputTokens?: number;
}

export class WardenClient {
  private readonly stub: Stub;
  private readonly apiKey: string;
  private readonly timeoutMs: number;
  private readonly failOpen: boolean;
  /** Calls answered as allowed because the sidecar could not be reached. */
  failOpens = 0;

  /** `address`: "host:port" or "unix:/path" (default WARDEN_ADDRESS, else 127.0.0.1:50051). */
  constructor(address?: string, options: ClientOptions = {}) {
    const target = address || process.env.WARDEN_ADDRESS || "127.0.0.1:50051";
    if (!target.startsWith("unix:") && !/^[^:]+:\d+$|^\[.*\]:\d+$/.test(target)) {
      throw new TypeError(`address ${JSON.stringify(target)}: expected host:port or unix:/path`);
    }
    const retries = options.retries ?? 3;
    const serviceConfig = retries > 0 ? {
      methodConfig: [{
        name: [{ service: "warden.v1.Warden" }],
        retryPolicy: { maxAttempts: retries + 1, initialBackoff: "0.05s", maxBackoff: "1s",
                       backoffMultiplier: 2, retryableStatusCodes: ["UNAVAILABLE"] },
      }],
    } : { methodConfig: [] };
    this.stub = new api.warden.v1.Warden(target, options.credentials ?? grpc.credentials.createInsecure(),
      { "grpc.service_config": JSON.stringify(serviceConfig), "grpc.enable_retries": retries > 0 ? 1 : 0 });
    this.apiKey = options.apiKey ?? process.env.WARDEN_API_KEY ?? "";
    this.timeoutMs = options.timeoutMs ?? 2000;
    this.failOpen = options.onUnavailable === "fail_open";
  }

  close(): void {
    this.stub.close();
  }

  private call<Req, Res>(method: string, request: Req, options: CallOptions = {}): Promise<Res> {
    return new Promise<Res>((resolve, reject) => {
      if (options.signal?.aborted) {
        reject(new WardenError("aborted before the call", grpc.status.CANCELLED));
        return;
      }
      const deadline = new Date(Date.now() + (options.timeoutMs ?? this.timeoutMs));
      const fn = (this.stub as any)[method].bind(this.stub);
      const call: grpc.ClientUnaryCall = fn(request, { deadline },
        (error: grpc.ServiceError | null, response: Res) => {
          options.signal?.removeEventListener("abort", abort);
          if (error) reject(fromServiceError(error));
          else resolve(response);
        });
      const abort = () => call.cancel();
      options.signal?.addEventListener("abort", abort, { once: true });
    });
  }

  /** May this LLM call go ahead, and how? A request without requestId gets a new one. */
  async authorize(request: AuthorizeRequest, options?: CallOptions): Promise<Decision> {
    const req: AuthorizeRequest = { apiKey: this.apiKey, ...request,
                                    requestId: request.requestId || crypto.randomUUID() };
    let response: AuthorizeResponse__Output;
    try {
      response = await this.call("Authorize", req, options);
    } catch (error) {
      if (error instanceof WardenError && error.unavailable && this.failOpen) {
        this.failOpens += 1;
        return { requestId: req.requestId!, allowed: true, reason: "FAIL_OPEN", model: req.model ?? "",
                 provider: req.provider ?? "", maxOutputTokens: Number(req.maxOutputTokens ?? 0),
                 reservationId: "", retryAfterMs: null, failOpen: true, response: null };
      }
      throw error;
    }
    const route = response.route;
    const retry = response.retryAfter;
    return {
      requestId: req.requestId!, allowed: response.decision === "DECISION_ALLOW",
      reason: reasonName(response.reason), model: route?.model || req.model || "",
      provider: route?.provider || req.provider || "",
      maxOutputTokens: Number(route?.maxOutputTokens || req.maxOutputTokens || 0),
      reservationId: response.reservationId,
      retryAfterMs: retry ? retry.seconds * 1000 + Math.round(retry.nanos / 1e6) : null,
      failOpen: false, response,
    };
  }

  /** What an authorized call used. */
  recordUsage(request: RecordUsageRequest, options?: CallOptions): Promise<RecordUsageResponse__Output> {
    return this.call("RecordUsage", { apiKey: this.apiKey, ...request }, options);
  }

  /** Store audit events; their ids, in order. */
  async audit(events: AuditEvent[], options?: CallOptions): Promise<string[]> {
    const reply: { eventIds: string[] } = await this.call("Audit", { apiKey: this.apiKey, events }, options);
    return reply.eventIds;
  }

  /** Authorize, run `llmCall` with the decision (throwing WardenDenied when denied), and
   * record its usage however it ends: completed when it resolves, cancelled when `signal`
   * aborted, failed when it throws; `used` reports the provider's usage. A call that failed
   * open records nothing. */
  async guard<T>(request: AuthorizeRequest,
                 llmCall: (decision: Decision, used: (usage: Usage) => void) => Promise<T>,
                 options: CallOptions = {}): Promise<T> {
    const decision = await this.authorize(request, options);
    if (!decision.allowed) throw new WardenDenied(decision);
    let usage: Usage = { inputTokens: 0, outputTokens: 0 };
    const started = Date.now();
    const record = async (outcome: string) => {
      if (decision.failOpen) return;
      const ms = Date.now() - started;
      await this.recordUsage({
        requestId: decision.requestId, reservationId: decision.reservationId,
        outcome: outcome as RecordUsageRequest["outcome"],
        usage: { inputTokens: usage.inputTokens, outputTokens: usage.outputTokens,
                 cachedInputTokens: usage.cachedInputTokens ?? 0 },
        latency: { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 },
      });
    };
    let result: T;
    try {
      result = await llmCall(decision, (u) => { usage = u; });
    } catch (error) {
      await record(options.signal?.aborted ? "OUTCOME_CANCELLED" : "OUTCOME_FAILED");
      throw error;
    }
    await record("OUTCOME_COMPLETED");
    return result;
  }
}
