// Outcome classification of a provider call, by the rules of test/vectors/README.md. SDK errors
// are recognised by shape, with no SDK dependency: openai-node's APIError (status, headers, code,
// type, error), @anthropic-ai/sdk's APIError (status, headers, error.error.type; without a status
// when a streamed answer carries an error event), @google/genai's ApiError (status, JSON message),
// fetch's TypeError and AbortSignal.timeout's TimeoutError.
import { FailureReason } from "./gen/keymesh/v1/pool_pb.js";
import { type HeadersLike, normalizeHeaders, type ParsedRateLimit, parseGoDurationMs, parseRateLimitHeaders } from "./ratelimit.js";

/** The outcome names every KeyMesh client shares (test/vectors/vocabulary.json). */
export const OUTCOME_KINDS = ["success", "rate_limited", "auth", "quota_exhausted", "transient", "overloaded", "client_error"] as const;
export type OutcomeKind = (typeof OUTCOME_KINDS)[number];

export interface Outcome {
  kind: OutcomeKind;
  /** The provider's HTTP status, 0 when no response arrived. */
  httpStatus: number;
  /** The provider's budget from the response headers. */
  rateLimit: ParsedRateLimit;
  /** How long to leave the key alone, when known. */
  retryAfterMs: number | null;
  /** A short description for operators. */
  message: string;
}

export interface ClassifyInput {
  status?: number | null;
  headers?: HeadersLike | null;
  error?: unknown;
}

const QUOTA_CODES = new Set(["insufficient_quota", "billing_hard_limit_reached", "billing_not_active", "billing_error"]);
/** Gemini's google.rpc.ErrorInfo reasons for a key it rejects with a 400. */
const KEY_REJECTED_REASONS = new Set(["API_KEY_INVALID", "API_KEY_EXPIRED"]);

/** Whether the same request may succeed on a retry, perhaps with another key. */
export function isRetryable(kind: OutcomeKind): boolean {
  return kind === "rate_limited" || kind === "transient" || kind === "overloaded" || kind === "auth" || kind === "quota_exhausted";
}

/** Classifies a provider call from its status and headers, its SDK error, or both. */
export function classify(input: ClassifyInput, now: Date = new Date()): Outcome {
  const sig = inspect(input.error);
  const status = sig.status ?? input.status ?? 0;
  const headers = normalizeHeaders(input.headers);
  for (const [name, value] of normalizeHeaders(sig.headers)) headers.set(name, value);
  const rateLimit = parseRateLimitHeaders(headers, now);
  const kind = kindOf(status, sig);
  let retryAfterMs = rateLimit.retryAfterMs ?? sig.retryDelayMs;
  if (retryAfterMs === null && kind === "rate_limited") retryAfterMs = exhaustedResetMs(rateLimit);
  return { kind, httpStatus: status, rateLimit, retryAfterMs, message: sig.message ?? (input.error instanceof Error ? input.error.message : "") };
}

function kindOf(status: number, sig: Signals): OutcomeKind {
  if (sig.noResponse) return sig.cancelled ? "client_error" : "transient";
  if (sig.codes.some((c) => QUOTA_CODES.has(c))) return "quota_exhausted";
  if (sig.codes.includes("overloaded_error")) return "overloaded";
  if (status >= 200 && status < 300) return "success";
  if (status === 401 || status === 403 || sig.reasons.some((r) => KEY_REJECTED_REASONS.has(r))) return "auth";
  if (status === 402) return "quota_exhausted";
  if (status === 429) return "rate_limited";
  if (status === 529) return "overloaded";
  if (status === 503 && (sig.message ?? "").toLowerCase().includes("overloaded")) return "overloaded";
  if (status === 0 || status >= 500 || status === 408) return "transient";
  return "client_error";
}

function exhaustedResetMs(rl: ParsedRateLimit): number | null {
  const candidates = [
    rl.requestsRemaining === 0 ? rl.requestsResetMs : null,
    rl.tokensRemaining === 0 ? rl.tokensResetMs : null,
  ].filter((v): v is number => v !== null);
  return candidates.length > 0 ? Math.max(...candidates) : null;
}

/** The wire form of a failed outcome's kind, for MarkFailed. */
export function failureReasonOf(kind: OutcomeKind): FailureReason {
  switch (kind) {
    case "auth":
      return FailureReason.AUTH;
    case "quota_exhausted":
      return FailureReason.QUOTA_EXHAUSTED;
    case "transient":
      return FailureReason.TRANSIENT;
    case "overloaded":
      return FailureReason.OVERLOADED;
    case "client_error":
      return FailureReason.CLIENT_ERROR;
    default:
      return FailureReason.UNSPECIFIED;
  }
}

interface Signals {
  status: number | null;
  codes: string[];
  message: string | null;
  headers: HeadersLike | null;
  retryDelayMs: number | null;
  /** The reasons of a Gemini error's google.rpc.ErrorInfo details. */
  reasons: string[];
  noResponse: boolean;
  cancelled: boolean;
}

type Loose = Record<string, unknown>;

const isObject = (v: unknown): v is Loose => typeof v === "object" && v !== null;
const str = (v: unknown): string | null => (typeof v === "string" && v !== "" ? v : null);

/** Reads what an SDK-shaped error says, following `cause` chains. */
function inspect(error: unknown): Signals {
  const sig: Signals = { status: null, codes: [], message: null, headers: null, retryDelayMs: null, reasons: [], noResponse: false, cancelled: false };
  for (let e: unknown = error, depth = 0; isObject(e) && depth < 8; e = e.cause, depth++) {
    const name = str(e.name) ?? "";
    if (name === "AbortError" || name === "APIUserAbortError") {
      // The caller gave up: no verdict on the key (an addition to the shared rules).
      return { ...sig, noResponse: true, cancelled: true };
    }
    if (name === "TimeoutError" || name === "APIConnectionTimeoutError" || name === "APIConnectionError" || name === "ConnectTimeoutError") {
      return { ...sig, noResponse: true };
    }
    if (typeof e.status === "number" && e.status >= 100 && e.status <= 599) {
      sig.status = e.status;
      readApiError(e, sig);
      return sig;
    }
    if (e.status === undefined && isObject(e.error)) {
      // An error event inside a streamed answer: the SDK's APIError with the body and no status.
      readApiError(e, sig);
      return sig;
    }
  }
  return sig;
}

function readApiError(e: Loose, sig: Signals): void {
  const body = isObject(e.error) ? e.error : null;
  const nested = body && isObject(body.error) ? body.error : null;
  for (const c of [e.code, e.type, body?.code, body?.type, nested?.type]) {
    const s = str(c);
    if (s !== null) sig.codes.push(s);
  }
  sig.message = str(nested?.message) ?? str(body?.message) ?? null;
  const headers = e.headers ?? (isObject(e.response) ? e.response.headers : undefined);
  if (isObject(headers)) sig.headers = headers as HeadersLike;
  const gemini = geminiBody(e.message);
  if (gemini) {
    sig.message = str(gemini.message) ?? sig.message;
    sig.retryDelayMs = retryDelayOf(gemini.details);
    sig.reasons = errorInfoReasons(gemini.details);
  }
  sig.message ??= str(e.message);
}

/** @google/genai puts the JSON error body in the message: {"error":{"code","status","message","details"}}. */
function geminiBody(message: unknown): Loose | null {
  if (typeof message !== "string" || !message.trimStart().startsWith("{")) return null;
  try {
    const parsed: unknown = JSON.parse(message);
    return isObject(parsed) && isObject(parsed.error) ? parsed.error : null;
  } catch {
    return null;
  }
}

/** The google.rpc detail objects of a Gemini error whose `@type` ends in `google.rpc.<type>`. */
function detailsOf(details: unknown, type: string): Loose[] {
  if (!Array.isArray(details)) return [];
  return details.filter((d): d is Loose => isObject(d) && typeof d["@type"] === "string" && d["@type"].endsWith(`google.rpc.${type}`));
}

function retryDelayOf(details: unknown): number | null {
  const delay = detailsOf(details, "RetryInfo").find((d) => typeof d.retryDelay === "string")?.retryDelay;
  return typeof delay === "string" ? parseGoDurationMs(delay) : null;
}

function errorInfoReasons(details: unknown): string[] {
  return detailsOf(details, "ErrorInfo").flatMap((d) => str(d.reason) ?? []);
}
