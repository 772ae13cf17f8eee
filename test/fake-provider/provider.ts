// A local stand-in for an OpenAI-style API: per-key request, token and per-day limits with realistic
// 429s (saying which limit bound) and x-ratelimit-* headers (or none), so tests and the bench can drive
// the whole lease loop without a network.
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export interface RateLimits {
  /** Requests a key may make per window (the bucket's capacity). */
  requestsPerWindow: number;
  /** The window over which the bucket refills completely, in ms (OpenAI's is a minute). */
  windowMs: number;
  /** Tokens a key may use per window (0: no token limit): a request needs its estimate left, and is charged what it used. */
  tokensPerWindow: number;
  /** Requests a key may make per day (0: no daily limit), refilled continuously over `dayMs`. */
  requestsPerDay: number;
  dayMs: number;
}

/** Which limit a 429 reports, as the error's `type` (OpenAI's "requests" and "tokens"). */
type LimitKind = "requests" | "tokens" | "requests_per_day";

export interface FakeProviderOptions {
  /** 0 picks a free port. The server only ever listens on 127.0.0.1. */
  port?: number;
  /** Default per-key limits. */
  limits?: Partial<RateLimits>;
  /** Keys accepted from the start (more can be added with addKey or POST /_fake/keys). */
  keys?: string[];
  /** Delay before every answer, in ms. */
  latencyMs?: number;
  /** False: answers carry no x-ratelimit-* headers (429s still carry retry-after), as some providers do. Default true. */
  rateLimitHeaders?: boolean;
  /** Current time in ms; inject a fake clock in tests. */
  now?: () => number;
}

interface KeyStats {
  ok: number;
  rateLimited: number;
  /** 429s by the limit that bound. */
  rateLimitedBy: Record<LimitKind, number>;
  /** Tokens the key's successful requests used. */
  tokens: number;
  /** Scripted 5xx/529 answers. */
  failed: number;
  unauthorized: number;
  inFlight: number;
  maxInFlight: number;
}

interface ProviderStats {
  /** Per registered key (fake keys are test data, not secrets). */
  keys: Record<string, KeyStats>;
  /** Requests with no key or a key the provider does not know. */
  unknownKey: number;
}

export interface FakeProvider {
  /** Base URL, e.g. http://127.0.0.1:41234 (append /v1/chat/completions). */
  url: string;
  stats(): ProviderStats;
  /** Accepts a key from now on, with its own limits if given. */
  addKey(key: string, limits?: Partial<RateLimits>): void;
  /** Makes the provider answer 401 for a key, as when a key is revoked upstream. */
  revokeKey(key: string): void;
  /** Answers the key's next `count` requests with `status` (a 429 carries `retry-after: retryAfterS`). */
  failNext(key: string, fault: Fault): void;
  close(): Promise<void>;
}

/** A scripted failure: 5xx, 529, or a 429 with a retry-after, for the next `count` requests of a key. */
interface Fault {
  status: number;
  count: number;
  retryAfterS?: number;
}

export const DEFAULT_LIMITS: RateLimits = { requestsPerWindow: 60, windowMs: 60_000, tokensPerWindow: 0, requestsPerDay: 0, dayMs: 86_400_000 };
const MAX_BODY_BYTES = 1 << 20;

interface KeyState {
  limits: RateLimits;
  faults: Fault[];
  /** The three buckets' levels: requests, tokens, requests today. */
  requests: number;
  tokens: number;
  today: number;
  refilledAt: number;
  revoked: boolean;
  stats: KeyStats;
}

/** A Go-style duration as OpenAI sends it: "20ms", "1s", "1.5s", "6m0s", "1h2m3.5s". */
export function formatDuration(ms: number): string {
  ms = Math.max(0, Math.ceil(ms));
  if (ms < 1000) return `${ms}ms`;
  const hours = Math.floor(ms / 3_600_000);
  const minutes = Math.floor((ms % 3_600_000) / 60_000);
  const seconds = (ms % 60_000) / 1000;
  let out = "";
  if (hours > 0) out += `${hours}h`;
  if (hours > 0 || minutes > 0) out += `${minutes}m`;
  return `${out}${seconds}s`;
}

function maskKey(key: string): string {
  return key.length <= 8 ? "sk-…" : `${key.slice(0, 3)}…${key.slice(-4)}`;
}

function errorBody(message: string, type: string, code: string | null): string {
  return JSON.stringify({ error: { message, type, param: null, code } });
}

function bearerKey(req: IncomingMessage): string | undefined {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? "");
  return match?.[1];
}

/** The request's JSON object body, or undefined when it is too large, not JSON or not an object. */
async function readJsonObject(req: IncomingMessage): Promise<Record<string, unknown> | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) return undefined;
    chunks.push(chunk);
  }
  try {
    const value: unknown = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    return typeof value === "object" && value !== null && !Array.isArray(value)
      ? (value as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}

function parseLimits(value: unknown): Partial<RateLimits> | undefined {
  if (value === undefined) return {};
  if (typeof value !== "object" || value === null) return undefined;
  const limits: Partial<RateLimits> = {};
  for (const name of ["requestsPerWindow", "windowMs", "tokensPerWindow", "requestsPerDay", "dayMs"] as const) {
    const n = (value as Record<string, unknown>)[name];
    if (n === undefined) continue;
    if (typeof n !== "number" || !(n > 0)) return undefined;
    limits[name] = n;
  }
  return limits;
}

/**
 * What a request costs in tokens: `fake_tokens: {estimate, actual}` when the body gives it (the bench's
 * sized requests), else the echo's own (a quarter of the prompt's characters, doubled, plus one); the
 * estimate is what must be left (OpenAI checks prompt + max_tokens), the actual what is charged.
 */
function tokenCost(body: Record<string, unknown>, promptTokens: number): { estimate: number; actual: number; input: number; output: number } {
  const given = body.fake_tokens as { estimate?: unknown; actual?: unknown } | undefined;
  const n = (v: unknown) => (typeof v === "number" && Number.isSafeInteger(v) && v > 0 ? v : undefined);
  const actual = n(given?.actual) ?? 2 * promptTokens + 1;
  const estimate = Math.max(actual, n(given?.estimate) ?? actual);
  const input = given?.actual !== undefined ? Math.ceil(actual / 2) : promptTokens;
  return { estimate, actual, input, output: actual - input };
}

function lastUserText(body: Record<string, unknown>): string {
  if (!Array.isArray(body.messages)) return "";
  const last = body.messages.at(-1) as { content?: unknown } | undefined;
  return typeof last?.content === "string" ? last.content : "";
}

export async function startFakeProvider(options: FakeProviderOptions = {}): Promise<FakeProvider> {
  const defaults: RateLimits = { ...DEFAULT_LIMITS, ...options.limits };
  const now = options.now ?? Date.now;
  const latencyMs = options.latencyMs ?? 0;
  const keys = new Map<string, KeyState>();
  let unknownKey = 0;

  function addKey(key: string, limits?: Partial<RateLimits>): void {
    const merged = { ...defaults, ...limits };
    keys.set(key, {
      limits: merged,
      faults: [],
      requests: merged.requestsPerWindow,
      tokens: merged.tokensPerWindow,
      today: merged.requestsPerDay,
      refilledAt: now(),
      revoked: false,
      stats: { ok: 0, rateLimited: 0, rateLimitedBy: { requests: 0, tokens: 0, requests_per_day: 0 }, tokens: 0, failed: 0, unauthorized: 0, inFlight: 0, maxInFlight: 0 },
    });
  }
  for (const key of options.keys ?? []) addKey(key);

  // Token buckets: each of capacity L refilled continuously over its window (L/window), as providers meter.
  function refill(state: KeyState): void {
    const t = now();
    const { requestsPerWindow, windowMs, tokensPerWindow, requestsPerDay, dayMs } = state.limits;
    const elapsed = t - state.refilledAt;
    state.requests = Math.min(requestsPerWindow, state.requests + (elapsed * requestsPerWindow) / windowMs);
    if (tokensPerWindow > 0) state.tokens = Math.min(tokensPerWindow, state.tokens + (elapsed * tokensPerWindow) / windowMs);
    if (requestsPerDay > 0) state.today = Math.min(requestsPerDay, state.today + (elapsed * requestsPerDay) / dayMs);
    state.refilledAt = t;
  }

  function rateLimitHeaders(state: KeyState): Record<string, string> {
    if (options.rateLimitHeaders === false) return {};
    const { requestsPerWindow, windowMs, tokensPerWindow } = state.limits;
    const headers: Record<string, string> = {
      "x-ratelimit-limit-requests": String(requestsPerWindow),
      "x-ratelimit-remaining-requests": String(Math.floor(state.requests)),
      "x-ratelimit-reset-requests": formatDuration(((requestsPerWindow - state.requests) * windowMs) / requestsPerWindow),
    };
    if (tokensPerWindow > 0) {
      headers["x-ratelimit-limit-tokens"] = String(tokensPerWindow);
      headers["x-ratelimit-remaining-tokens"] = String(Math.max(0, Math.floor(state.tokens)));
      headers["x-ratelimit-reset-tokens"] = formatDuration(((tokensPerWindow - state.tokens) * windowMs) / tokensPerWindow);
    }
    return headers;
  }

  /** The limit that refuses a request needing `tokens`, with the wait until it would not, if any. */
  function bound(state: KeyState, tokens: number): { kind: LimitKind; limit: number; waitMs: number } | undefined {
    const { requestsPerWindow, windowMs, tokensPerWindow, requestsPerDay, dayMs } = state.limits;
    if (state.requests < 1) return { kind: "requests", limit: requestsPerWindow, waitMs: Math.ceil(((1 - state.requests) * windowMs) / requestsPerWindow) };
    if (requestsPerDay > 0 && state.today < 1) return { kind: "requests_per_day", limit: requestsPerDay, waitMs: Math.ceil(((1 - state.today) * dayMs) / requestsPerDay) };
    if (tokensPerWindow > 0 && state.tokens < tokens) {
      return { kind: "tokens", limit: tokensPerWindow, waitMs: Math.ceil(((tokens - state.tokens) * windowMs) / tokensPerWindow) };
    }
    return undefined;
  }

  const LIMIT_WORDS: Record<LimitKind, string> = { requests: "requests per min (RPM)", tokens: "tokens per min (TPM)", requests_per_day: "requests per day (RPD)" };

  function send(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
    const finish = () => {
      if (res.destroyed) return;
      res.writeHead(status, { "content-type": "application/json", ...headers });
      res.end(body);
    };
    if (latencyMs > 0) setTimeout(finish, latencyMs);
    else finish();
  }

  async function completions(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const key = bearerKey(req);
    const state = key === undefined ? undefined : keys.get(key);
    if (key === undefined || state === undefined) {
      unknownKey++;
      const message =
        key === undefined
          ? "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
          : `Incorrect API key provided: ${maskKey(key)}. You can find your API key at https://platform.openai.com/account/api-keys.`;
      send(res, 401, errorBody(message, "invalid_request_error", key === undefined ? null : "invalid_api_key"));
      return;
    }
    if (state.revoked) {
      state.stats.unauthorized++;
      send(res, 401, errorBody(`Incorrect API key provided: ${maskKey(key)}.`, "invalid_request_error", "invalid_api_key"));
      return;
    }
    const fault = state.faults[0];
    if (fault) {
      if (--fault.count <= 0) state.faults.shift();
      sendFault(res, state, fault);
      return;
    }
    const body = await readJsonObject(req);
    if (body === undefined) {
      send(res, 400, errorBody("We could not parse the JSON body of your request.", "invalid_request_error", null));
      return;
    }
    const prompt = lastUserText(body);
    const promptTokens = Math.max(1, Math.ceil(prompt.length / 4));
    const cost = tokenCost(body, promptTokens);
    refill(state);
    const refused = bound(state, cost.estimate);
    if (refused) {
      state.stats.rateLimited++;
      state.stats.rateLimitedBy[refused.kind]++;
      const requested = refused.kind === "tokens" ? cost.estimate : 1;
      const message =
        `Rate limit reached for fake-model in organization org-fake on ${LIMIT_WORDS[refused.kind]}: ` +
        `Limit ${refused.limit}, Requested ${requested}. Please try again in ${formatDuration(refused.waitMs)}.`;
      send(res, 429, errorBody(message, refused.kind, "rate_limit_exceeded"), {
        ...rateLimitHeaders(state),
        "retry-after": String(Math.ceil(refused.waitMs / 1000)),
        "retry-after-ms": String(refused.waitMs),
      });
      return;
    }
    state.requests -= 1;
    if (state.limits.requestsPerDay > 0) state.today -= 1;
    if (state.limits.tokensPerWindow > 0) state.tokens -= cost.actual;
    state.stats.ok++;
    state.stats.tokens += cost.actual;
    state.stats.inFlight++;
    state.stats.maxInFlight = Math.max(state.stats.maxInFlight, state.stats.inFlight);
    res.on("close", () => state.stats.inFlight--);
    send(
      res,
      200,
      JSON.stringify({
        id: `chatcmpl-fake-${state.stats.ok}`,
        object: "chat.completion",
        created: Math.floor(now() / 1000),
        model: typeof body.model === "string" ? body.model : "fake-model",
        choices: [{ index: 0, message: { role: "assistant", content: `echo: ${prompt}` }, finish_reason: "stop" }],
        usage: { prompt_tokens: cost.input, completion_tokens: cost.output, total_tokens: cost.actual },
      }),
      rateLimitHeaders(state),
    );
  }

  function sendFault(res: ServerResponse, state: KeyState, fault: Fault): void {
    if (fault.status === 429) {
      state.stats.rateLimited++;
      const headers: Record<string, string> = fault.retryAfterS === undefined ? {} : { "retry-after": String(fault.retryAfterS) };
      send(res, 429, errorBody("Rate limit reached (scripted).", "requests", "rate_limit_exceeded"), headers);
      return;
    }
    state.stats.failed++;
    const overloaded = fault.status === 529 || fault.status === 503;
    const message = overloaded ? "The server is overloaded (scripted)." : "The server had an error while processing your request (scripted).";
    send(res, fault.status, errorBody(message, overloaded ? "overloaded_error" : "server_error", null));
  }

  async function scriptFault(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const parsed = await readJsonObject(req);
    const state = typeof parsed?.key === "string" ? keys.get(parsed.key) : undefined;
    const { status, count, retryAfterS } = parsed ?? {};
    if (!state || typeof status !== "number" || status < 400 || status > 599 || typeof count !== "number" || !(count > 0)) {
      send(res, 400, errorBody('expected {"key": "<known key>", "status": 4xx|5xx, "count": n, "retryAfterS"?: n}', "invalid_request_error", null));
      return;
    }
    state.faults.push({ status, count, retryAfterS: typeof retryAfterS === "number" ? retryAfterS : undefined });
    send(res, 201, "{}");
  }

  function stats(): ProviderStats {
    const out: Record<string, KeyStats> = {};
    for (const [key, state] of keys) out[key] = { ...state.stats, rateLimitedBy: { ...state.stats.rateLimitedBy } };
    return { keys: out, unknownKey };
  }

  async function registerKey(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const parsed = await readJsonObject(req);
    if (typeof parsed?.key !== "string" || parsed.key.length === 0) {
      send(res, 400, errorBody('expected {"key": "<secret>", "limits"?: {...}}', "invalid_request_error", null));
      return;
    }
    const limits = parseLimits(parsed.limits);
    if (limits === undefined) {
      send(res, 400, errorBody("limits must hold positive numbers", "invalid_request_error", null));
      return;
    }
    addKey(parsed.key, limits);
    send(res, 201, "{}");
  }

  const server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    const route = `${req.method} ${path}`;
    const handle =
      route === "POST /v1/chat/completions"
        ? completions(req, res)
        : route === "GET /_fake/stats"
          ? Promise.resolve(send(res, 200, JSON.stringify(stats())))
          : route === "POST /_fake/keys"
            ? registerKey(req, res)
            : route === "POST /_fake/faults"
              ? scriptFault(req, res)
            : Promise.resolve(
                send(res, 404, errorBody(`Invalid URL (${req.method} ${path})`, "invalid_request_error", null)),
              );
    handle.catch(() => res.destroy());
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    stats,
    addKey,
    revokeKey(key: string) {
      const state = keys.get(key);
      if (state) state.revoked = true;
    },
    failNext(key: string, fault: Fault) {
      const state = keys.get(key);
      if (!state) throw new Error("failNext: unknown key");
      state.faults.push({ ...fault });
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
