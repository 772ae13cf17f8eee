// How each provider API the fake speaks carries its key and shapes its answers and errors: OpenAI's
// chat completions, Anthropic's Messages and Gemini's generateContent, as their SDKs expect them.
import type { IncomingMessage } from "node:http";

/** One answer: the status, the JSON body and any headers beyond content-type. */
export interface Answer {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
}

/** A key's request budget when the answer is written, for the rate-limit headers; `tokens` when it has a token limit. */
export interface Budget {
  limit: number;
  remaining: number;
  /** Until the bucket is full again. */
  resetMs: number;
  now: number;
  tokens?: { limit: number; remaining: number; resetMs: number };
}

/** Which limit refused a request, as OpenAI's error `type` names it ("requests", "tokens"). */
export type LimitKind = "requests" | "tokens" | "requests_per_day";

/** The limit that refused a request: its kind, its limit and what the request asked for. */
export interface Refusal {
  kind: LimitKind;
  limit: number;
  requested: number;
}

const LIMIT_WORDS: Record<LimitKind, string> = { requests: "requests per min (RPM)", tokens: "tokens per min (TPM)", requests_per_day: "requests per day (RPD)" };

/** What a successful call echoes. */
interface Echo {
  model: string;
  prompt: string;
  /** The tokens the call used. */
  inputTokens: number;
  outputTokens: number;
  /** The key's successful calls so far, for the answer's id. */
  n: number;
  now: number;
}

/** A request's key and what carried it: a header's name, or "?key" for the query parameter. */
interface Carried {
  key: string;
  via: string;
}

export interface Dialect {
  /** The key the request carries. */
  key(req: IncomingMessage, url: URL): Carried | undefined;
  /** No key, a key the provider does not know, or one revoked upstream. */
  refused(key: string | undefined, revoked: boolean): Answer;
  /** A limit of the key refuses the request: wait waitMs. */
  rateLimited(budget: Budget, waitMs: number, refusal: Refusal): Answer;
  /** A scripted fault: 429 (retry-after when given), 529, another 5xx or 4xx. */
  fault(status: number, retryAfterS: number | undefined): Answer;
  /** The body is not a JSON object. */
  badBody(): Answer;
  /** The prompt of a request body: its last message's text. */
  prompt(body: Record<string, unknown>): string;
  success(echo: Echo): Answer;
  /** The rate-limit headers every answer to a known key carries. */
  budgetHeaders(budget: Budget): Record<string, string>;
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

const header = (req: IncomingMessage, name: string): Carried | undefined => {
  const value = req.headers[name];
  return typeof value === "string" && value !== "" ? { key: value, via: name } : undefined;
};

const overloaded = (status: number) => status === 529 || status === 503;

function lastText(messages: unknown, text: (message: Record<string, unknown>) => unknown): string {
  if (!Array.isArray(messages)) return "";
  const last: unknown = messages.at(-1);
  if (typeof last !== "object" || last === null) return "";
  const value = text(last as Record<string, unknown>);
  return typeof value === "string" ? value : "";
}

/** Text blocks' text, as Anthropic's content and Gemini's parts carry it. */
function joinedText(blocks: unknown): string | undefined {
  if (typeof blocks === "string") return blocks;
  if (!Array.isArray(blocks)) return undefined;
  return blocks.map((b: { text?: unknown }) => (typeof b?.text === "string" ? b.text : "")).join("");
}

const openaiError = (status: number, message: string, type: string, code: string | null, headers?: Record<string, string>): Answer => ({
  status,
  body: { error: { message, type, param: null, code } },
  headers,
});

const bearer = (req: IncomingMessage): Carried | undefined => {
  const key = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? "")?.[1];
  return key === undefined ? undefined : { key, via: "authorization" };
};

/** POST /v1/chat/completions, `Authorization: Bearer <key>`. */
export const openai: Dialect = {
  key: bearer,
  refused(key, revoked) {
    if (key === undefined) {
      return openaiError(
        401,
        "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        "invalid_request_error",
        null,
      );
    }
    const message = revoked
      ? `Incorrect API key provided: ${maskKey(key)}.`
      : `Incorrect API key provided: ${maskKey(key)}. You can find your API key at https://platform.openai.com/account/api-keys.`;
    return openaiError(401, message, "invalid_request_error", "invalid_api_key");
  },
  rateLimited(budget, waitMs, refusal) {
    const message =
      `Rate limit reached for fake-model in organization org-fake on ${LIMIT_WORDS[refusal.kind]}: ` +
      `Limit ${refusal.limit}, Requested ${refusal.requested}. Please try again in ${formatDuration(waitMs)}.`;
    return openaiError(429, message, refusal.kind, "rate_limit_exceeded", {
      ...this.budgetHeaders(budget),
      "retry-after": String(Math.ceil(waitMs / 1000)),
      "retry-after-ms": String(waitMs),
    });
  },
  fault(status, retryAfterS) {
    if (status === 429) {
      return openaiError(429, "Rate limit reached (scripted).", "requests", "rate_limit_exceeded", retryAfterS === undefined ? {} : { "retry-after": String(retryAfterS) });
    }
    return overloaded(status)
      ? openaiError(status, "The server is overloaded (scripted).", "overloaded_error", null)
      : openaiError(status, "The server had an error while processing your request (scripted).", "server_error", null);
  },
  badBody: () => openaiError(400, "We could not parse the JSON body of your request.", "invalid_request_error", null),
  prompt: (body) => lastText(body.messages, (m) => m.content),
  success: (e) => ({
    status: 200,
    body: {
      id: `chatcmpl-fake-${e.n}`,
      object: "chat.completion",
      created: Math.floor(e.now / 1000),
      model: e.model,
      choices: [{ index: 0, message: { role: "assistant", content: `echo: ${e.prompt}` }, finish_reason: "stop" }],
      usage: { prompt_tokens: e.inputTokens, completion_tokens: e.outputTokens, total_tokens: e.inputTokens + e.outputTokens },
    },
  }),
  budgetHeaders: (b) => ({
    "x-ratelimit-limit-requests": String(b.limit),
    "x-ratelimit-remaining-requests": String(b.remaining),
    "x-ratelimit-reset-requests": formatDuration(b.resetMs),
    ...(b.tokens && {
      "x-ratelimit-limit-tokens": String(b.tokens.limit),
      "x-ratelimit-remaining-tokens": String(b.tokens.remaining),
      "x-ratelimit-reset-tokens": formatDuration(b.tokens.resetMs),
    }),
  }),
};

const anthropicError = (status: number, type: string, message: string, headers?: Record<string, string>): Answer => ({
  status,
  body: { type: "error", error: { type, message } },
  headers,
});

const ANTHROPIC_FAULT_TYPES: Record<number, string> = {
  400: "invalid_request_error",
  401: "authentication_error",
  402: "billing_error",
  403: "permission_error",
  404: "not_found_error",
  413: "request_too_large",
};

/** POST /v1/messages, `x-api-key: <key>` or (as @anthropic-ai/sdk 1.x sends an apiKey) `Authorization: Bearer <key>`. */
export const anthropic: Dialect = {
  key: (req) => header(req, "x-api-key") ?? bearer(req),
  refused: (key) => anthropicError(401, "authentication_error", key === undefined ? "x-api-key header is required" : "invalid x-api-key"),
  rateLimited(budget, waitMs, refusal) {
    return anthropicError(429, "rate_limit_error", `This request would exceed your ${LIMIT_WORDS[refusal.kind]} rate limit of ${refusal.limit} (fake bucket).`, {
      ...this.budgetHeaders(budget),
      "retry-after": String(Math.ceil(waitMs / 1000)),
    });
  },
  fault(status, retryAfterS) {
    if (status === 429) {
      return anthropicError(429, "rate_limit_error", "This request would exceed your organization's rate limit (scripted).", retryAfterS === undefined ? {} : { "retry-after": String(retryAfterS) });
    }
    if (overloaded(status)) return anthropicError(status, "overloaded_error", "Overloaded (scripted)");
    const type = ANTHROPIC_FAULT_TYPES[status] ?? (status >= 500 ? "api_error" : "invalid_request_error");
    return anthropicError(status, type, `Scripted ${status}.`);
  },
  badBody: () => anthropicError(400, "invalid_request_error", "There was an issue with the format of your request."),
  prompt: (body) => lastText(body.messages, (m) => joinedText(m.content)),
  success: (e) => ({
    status: 200,
    body: {
      id: `msg_fake_${e.n}`,
      type: "message",
      role: "assistant",
      model: e.model,
      content: [{ type: "text", text: `echo: ${e.prompt}` }],
      stop_reason: "end_turn",
      stop_sequence: null,
      usage: { input_tokens: e.inputTokens, output_tokens: e.outputTokens },
    },
  }),
  budgetHeaders: (b) => ({
    "anthropic-ratelimit-requests-limit": String(b.limit),
    "anthropic-ratelimit-requests-remaining": String(b.remaining),
    "anthropic-ratelimit-requests-reset": anthropicInstant(b.now, b.resetMs),
    ...(b.tokens && {
      "anthropic-ratelimit-tokens-limit": String(b.tokens.limit),
      "anthropic-ratelimit-tokens-remaining": String(b.tokens.remaining),
      "anthropic-ratelimit-tokens-reset": anthropicInstant(b.now, b.tokens.resetMs),
    }),
  }),
};

/** Anthropic's resets are RFC 3339 instants, to the second. */
const anthropicInstant = (now: number, ms: number) => new Date(now + Math.ceil(ms / 1000) * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");

const GOOGLE_STATUS: Record<number, string> = {
  400: "INVALID_ARGUMENT",
  401: "UNAUTHENTICATED",
  403: "PERMISSION_DENIED",
  404: "NOT_FOUND",
  429: "RESOURCE_EXHAUSTED",
  500: "INTERNAL",
  503: "UNAVAILABLE",
  504: "DEADLINE_EXCEEDED",
};

const googleError = (code: number, message: string, details?: unknown[]): Answer => ({
  status: code,
  body: { error: { code, message, status: GOOGLE_STATUS[code] ?? (code >= 500 ? "INTERNAL" : "FAILED_PRECONDITION"), ...(details ? { details } : {}) } },
});

const retryInfo = (seconds: number) => ({ "@type": "type.googleapis.com/google.rpc.RetryInfo", retryDelay: `${seconds}s` });

/**
 * POST /v1beta/models/<model>:generateContent, `x-goog-api-key: <key>` or `?key=<key>`. As the real
 * API does, an unknown key is a 400 INVALID_ARGUMENT (API_KEY_INVALID), a revoked one a 403
 * PERMISSION_DENIED, and a rate limit carries its wait as google.rpc.RetryInfo, not as a header.
 */
export const gemini: Dialect = {
  key: (req, url) => {
    const query = url.searchParams.get("key");
    return header(req, "x-goog-api-key") ?? (query ? { key: query, via: "?key" } : undefined);
  },
  refused(key, revoked) {
    if (key === undefined) return googleError(403, "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.");
    if (revoked) return googleError(403, "Your API key was reported as leaked. Please use another API key.");
    return googleError(400, "API key not valid. Please pass a valid API key.", [
      { "@type": "type.googleapis.com/google.rpc.ErrorInfo", reason: "API_KEY_INVALID", domain: "googleapis.com" },
    ]);
  },
  rateLimited: (_budget, waitMs, refusal) =>
    googleError(429, "You exceeded your current quota, please check your plan and billing details.", [
      {
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        violations: [{ quotaMetric: `generativelanguage.googleapis.com/${refusal.kind === "tokens" ? "generate_content_input_token_count" : "generate_content_requests"}`, quotaId: refusal.kind }],
      },
      retryInfo(Math.ceil(waitMs / 1000)),
    ]),
  fault(status, retryAfterS) {
    if (status === 429) return googleError(429, "Resource has been exhausted (e.g. check quota). (scripted)", retryAfterS === undefined ? undefined : [retryInfo(retryAfterS)]);
    if (overloaded(status)) return googleError(status, "The model is overloaded. Please try again later. (scripted)");
    return googleError(status, `Scripted ${status}.`);
  },
  badBody: () => googleError(400, "Invalid JSON payload received."),
  prompt: (body) => lastText(body.contents, (c) => joinedText(c.parts)),
  success: (e) => ({
    status: 200,
    body: {
      candidates: [{ content: { role: "model", parts: [{ text: `echo: ${e.prompt}` }] }, finishReason: "STOP", index: 0 }],
      usageMetadata: { promptTokenCount: e.inputTokens, candidatesTokenCount: e.outputTokens, totalTokenCount: e.inputTokens + e.outputTokens },
      modelVersion: e.model,
      responseId: `fake-${e.n}`,
    },
  }),
  budgetHeaders: () => ({}),
};
