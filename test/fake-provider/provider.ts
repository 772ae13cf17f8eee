// A local stand-in for the OpenAI, Anthropic and Gemini APIs (dialects.ts): per-key request, token and
// per-day limits with realistic 429s (saying which limit bound) and rate-limit headers (or none), so
// tests and the bench can drive the whole lease loop, with the real SDKs, without a network.
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { type Answer, anthropic, type Budget, type Dialect, gemini, type LimitKind, openai, type Refusal } from "./dialects.js";

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

export interface FakeProviderOptions {
  /** 0 picks a free port. The server only ever listens on 127.0.0.1. */
  port?: number;
  /** Default per-key limits. */
  limits?: Partial<RateLimits>;
  /** Keys accepted from the start (more can be added with addKey or POST /_fake/keys). */
  keys?: string[];
  /** Delay before every answer, in ms. */
  latencyMs?: number;
  /** False: answers carry no rate-limit headers (429s still carry their retry-after), as some providers do. Default true. */
  rateLimitHeaders?: boolean;
  /** Current time in ms; inject a fake clock in tests. */
  now?: () => number;
}

interface KeyStats {
  ok: number;
  rateLimited: number;
  /** The 429s of the key's own limits, by the limit that bound (scripted ones are not among them). */
  rateLimitedBy: Record<LimitKind, number>;
  /** Tokens the key's successful requests used. */
  tokens: number;
  /** Scripted answers other than 429. */
  failed: number;
  unauthorized: number;
  inFlight: number;
  maxInFlight: number;
  /** The key's requests by what carried the key: "authorization", "x-api-key", "x-goog-api-key" or "?key". */
  via: Record<string, number>;
}

interface ProviderStats {
  /** Per registered key (fake keys are test data, not secrets). */
  keys: Record<string, KeyStats>;
  /** Requests with no key or a key the provider does not know. */
  unknownKey: number;
}

export interface FakeProvider {
  /** Base URL, e.g. http://127.0.0.1:41234 (append /v1/chat/completions, /v1/messages or /v1beta/models/<model>:generateContent). */
  url: string;
  stats(): ProviderStats;
  /** Accepts a key from now on, with its own limits if given. */
  addKey(key: string, limits?: Partial<RateLimits>): void;
  /** Refuses a key from now on, as when it is revoked upstream (401; Gemini: 403 PERMISSION_DENIED). */
  revokeKey(key: string): void;
  /** Answers the key's next `count` requests with `status` (a 429 carries its retryAfterS: a header, for Gemini RetryInfo). */
  failNext(key: string, fault: Fault): void;
  close(): Promise<void>;
}

/** A scripted failure: a 4xx, 5xx or 529, or a 429 with a retry-after, for the next `count` requests of a key. */
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
 * sized requests), else the echo's own (its prompt's, a quarter of its characters, and one more for the
 * answer); the estimate is what must be left (OpenAI checks prompt + max_tokens), the actual is charged.
 */
function tokenCost(body: Record<string, unknown>, promptTokens: number): { estimate: number; input: number; output: number } {
  const given = body.fake_tokens as { estimate?: unknown; actual?: unknown } | undefined;
  const n = (v: unknown) => (typeof v === "number" && Number.isSafeInteger(v) && v > 0 ? v : undefined);
  const actual = n(given?.actual);
  if (actual === undefined) return { estimate: 2 * promptTokens + 1, input: promptTokens, output: promptTokens + 1 };
  const input = Math.ceil(actual / 2);
  return { estimate: Math.max(actual, n(given?.estimate) ?? actual), input, output: actual - input };
}

const errorBody = (message: string) => JSON.stringify({ error: { message, type: "invalid_request_error", param: null, code: null } });

/** The dialect and model of a provider route, or undefined for another path. */
function routeOf(method: string | undefined, path: string): { dialect: Dialect; model?: string } | undefined {
  if (method !== "POST") return undefined;
  if (path === "/v1/chat/completions") return { dialect: openai };
  if (path === "/v1/messages") return { dialect: anthropic };
  const gen = /^\/v1(?:beta|alpha)?\/models\/([^/:]+):generateContent$/.exec(path);
  return gen ? { dialect: gemini, model: decodeURIComponent(gen[1]!) } : undefined;
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
      stats: { ok: 0, rateLimited: 0, rateLimitedBy: { requests: 0, tokens: 0, requests_per_day: 0 }, tokens: 0, failed: 0, unauthorized: 0, inFlight: 0, maxInFlight: 0, via: {} },
    });
  }
  for (const key of options.keys ?? []) addKey(key);

  // Buckets: each of capacity L refilled continuously over its window (L/window), as providers meter.
  function refill(state: KeyState): void {
    const t = now();
    const { requestsPerWindow, windowMs, tokensPerWindow, requestsPerDay, dayMs } = state.limits;
    const elapsed = t - state.refilledAt;
    state.requests = Math.min(requestsPerWindow, state.requests + (elapsed * requestsPerWindow) / windowMs);
    if (tokensPerWindow > 0) state.tokens = Math.min(tokensPerWindow, state.tokens + (elapsed * tokensPerWindow) / windowMs);
    if (requestsPerDay > 0) state.today = Math.min(requestsPerDay, state.today + (elapsed * requestsPerDay) / dayMs);
    state.refilledAt = t;
  }

  function budget(state: KeyState): Budget {
    const { requestsPerWindow, windowMs, tokensPerWindow } = state.limits;
    const resetMs = ((requestsPerWindow - state.requests) * windowMs) / requestsPerWindow;
    const tokens =
      tokensPerWindow > 0
        ? { limit: tokensPerWindow, remaining: Math.max(0, Math.floor(state.tokens)), resetMs: ((tokensPerWindow - state.tokens) * windowMs) / tokensPerWindow }
        : undefined;
    return { limit: requestsPerWindow, remaining: Math.floor(state.requests), resetMs, now: now(), tokens };
  }

  /** The limit that refuses a request needing `tokens`, with the wait until it would not, if any. */
  function refusal(state: KeyState, tokens: number): (Refusal & { waitMs: number }) | undefined {
    const { requestsPerWindow, windowMs, tokensPerWindow, requestsPerDay, dayMs } = state.limits;
    if (state.requests < 1) return { kind: "requests", limit: requestsPerWindow, requested: 1, waitMs: Math.ceil(((1 - state.requests) * windowMs) / requestsPerWindow) };
    if (requestsPerDay > 0 && state.today < 1) return { kind: "requests_per_day", limit: requestsPerDay, requested: 1, waitMs: Math.ceil(((1 - state.today) * dayMs) / requestsPerDay) };
    if (tokensPerWindow > 0 && state.tokens < tokens) {
      return { kind: "tokens", limit: tokensPerWindow, requested: tokens, waitMs: Math.ceil(((tokens - state.tokens) * windowMs) / tokensPerWindow) };
    }
    return undefined;
  }

  /** Rate-limit headers go unsent when the provider sends none; a 429 keeps its retry-after. */
  const budgetHeaders = (headers: Record<string, string> | undefined, keep: (name: string) => boolean) =>
    options.rateLimitHeaders === false && headers ? Object.fromEntries(Object.entries(headers).filter(([name]) => keep(name))) : headers;

  function send(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
    const finish = () => {
      if (res.destroyed) return;
      res.writeHead(status, { "content-type": "application/json", ...headers });
      res.end(body);
    };
    if (latencyMs > 0) setTimeout(finish, latencyMs);
    else finish();
  }

  const answer = (res: ServerResponse, a: Answer) => send(res, a.status, JSON.stringify(a.body), a.headers);

  async function call(req: IncomingMessage, res: ServerResponse, dialect: Dialect, url: URL, model: string | undefined): Promise<void> {
    const carried = dialect.key(req, url);
    const state = carried && keys.get(carried.key);
    if (!carried || !state) {
      unknownKey++;
      answer(res, dialect.refused(carried?.key, false));
      return;
    }
    const { key, via } = carried;
    state.stats.via[via] = (state.stats.via[via] ?? 0) + 1;
    if (state.revoked) {
      state.stats.unauthorized++;
      answer(res, dialect.refused(key, true));
      return;
    }
    const fault = state.faults[0];
    if (fault) {
      if (--fault.count <= 0) state.faults.shift();
      if (fault.status === 429) state.stats.rateLimited++;
      else state.stats.failed++;
      answer(res, dialect.fault(fault.status, fault.retryAfterS));
      return;
    }
    const body = await readJsonObject(req);
    if (body === undefined) {
      answer(res, dialect.badBody());
      return;
    }
    const prompt = dialect.prompt(body);
    const cost = tokenCost(body, Math.max(1, Math.ceil(prompt.length / 4)));
    refill(state);
    const refused = refusal(state, cost.estimate);
    if (refused) {
      state.stats.rateLimited++;
      state.stats.rateLimitedBy[refused.kind]++;
      const a = dialect.rateLimited(budget(state), refused.waitMs, refused);
      answer(res, { ...a, headers: budgetHeaders(a.headers, (name) => name.startsWith("retry-after")) });
      return;
    }
    state.requests -= 1;
    if (state.limits.requestsPerDay > 0) state.today -= 1;
    if (state.limits.tokensPerWindow > 0) state.tokens -= cost.input + cost.output;
    state.stats.ok++;
    state.stats.tokens += cost.input + cost.output;
    state.stats.inFlight++;
    state.stats.maxInFlight = Math.max(state.stats.maxInFlight, state.stats.inFlight);
    res.on("close", () => state.stats.inFlight--);
    const ok = dialect.success({
      model: model ?? (typeof body.model === "string" ? body.model : "fake-model"),
      prompt,
      inputTokens: cost.input,
      outputTokens: cost.output,
      n: state.stats.ok,
      now: now(),
    });
    answer(res, { ...ok, headers: budgetHeaders(dialect.budgetHeaders(budget(state)), () => false) });
  }

  async function scriptFault(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const parsed = await readJsonObject(req);
    const state = typeof parsed?.key === "string" ? keys.get(parsed.key) : undefined;
    const { status, count, retryAfterS } = parsed ?? {};
    if (!state || typeof status !== "number" || status < 400 || status > 599 || typeof count !== "number" || !(count > 0)) {
      send(res, 400, errorBody('expected {"key": "<known key>", "status": 4xx|5xx, "count": n, "retryAfterS"?: n}'));
      return;
    }
    state.faults.push({ status, count, retryAfterS: typeof retryAfterS === "number" ? retryAfterS : undefined });
    send(res, 201, "{}");
  }

  function stats(): ProviderStats {
    const out: Record<string, KeyStats> = {};
    for (const [key, state] of keys) out[key] = { ...state.stats, rateLimitedBy: { ...state.stats.rateLimitedBy }, via: { ...state.stats.via } };
    return { keys: out, unknownKey };
  }

  async function registerKey(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const parsed = await readJsonObject(req);
    if (typeof parsed?.key !== "string" || parsed.key.length === 0) {
      send(res, 400, errorBody('expected {"key": "<secret>", "limits"?: {...}}'));
      return;
    }
    const limits = parseLimits(parsed.limits);
    if (limits === undefined) {
      send(res, 400, errorBody("limits must hold positive numbers"));
      return;
    }
    addKey(parsed.key, limits);
    send(res, 201, "{}");
  }

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    const provider = routeOf(req.method, url.pathname);
    const route = `${req.method} ${url.pathname}`;
    const handle = provider
      ? call(req, res, provider.dialect, url, provider.model)
      : route === "GET /_fake/stats"
        ? Promise.resolve(send(res, 200, JSON.stringify(stats())))
        : route === "POST /_fake/keys"
          ? registerKey(req, res)
          : route === "POST /_fake/faults"
            ? scriptFault(req, res)
            : Promise.resolve(send(res, 404, errorBody(`Invalid URL (${route})`)));
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
