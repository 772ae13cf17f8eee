// Provider rate-limit headers (OpenAI x-ratelimit-*, Anthropic anthropic-ratelimit-*, retry-after)
// parsed by the rules of test/vectors/README.md, shared with every other KeyMesh client.
import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "./duration.js";
import { type RateLimit, RateLimitSchema } from "./gen/keymesh/v1/common_pb.js";

/** A provider's view of a key's budget; `null` is unknown. Durations are in milliseconds. */
export interface ParsedRateLimit {
  requestsRemaining: number | null;
  requestsLimit: number | null;
  requestsResetMs: number | null;
  tokensRemaining: number | null;
  tokensLimit: number | null;
  tokensResetMs: number | null;
  retryAfterMs: number | null;
}

/** Response headers as fetch `Headers`, a plain object, or `[name, value]` pairs. */
export type HeadersLike =
  | Headers
  | Record<string, string | readonly string[] | number | undefined | null>
  | Iterable<readonly [string, string]>;

/** Lower-cased header name → trimmed first value. */
export function normalizeHeaders(headers: HeadersLike | null | undefined): Map<string, string> {
  const out = new Map<string, string>();
  if (!headers) return out;
  const add = (name: string, value: unknown) => {
    const first = Array.isArray(value) ? value[0] : value;
    if (first === undefined || first === null) return;
    out.set(name.toLowerCase(), String(first).replace(/^[ \t\r\n\v\f]+|[ \t\r\n\v\f]+$/g, ""));
  };
  if (typeof (headers as Headers).forEach === "function" && typeof (headers as Headers).get === "function") {
    (headers as Headers).forEach((value, name) => add(name, value));
  } else if (Symbol.iterator in headers) {
    for (const [name, value] of headers as Iterable<readonly [string, string]>) add(name, value);
  } else {
    for (const [name, value] of Object.entries(headers)) add(name, value);
  }
  return out;
}

const COUNT = /^[0-9]+$/;
const DECIMAL = /^([0-9]+)(?:\.([0-9]+))?$/;
const GO_DURATION = /^(?:[0-9]+(?:\.[0-9]+)?(?:h|m|s|ms|us|µs|ns))+$/;
const GO_DURATION_PART = /([0-9]+)(?:\.([0-9]+))?(h|ms|m|s|us|µs|ns)/g;
const UNIT_NS: Record<string, bigint> = { h: 3_600_000_000_000n, m: 60_000_000_000n, s: 1_000_000_000n, ms: 1_000_000n, us: 1_000n, µs: 1_000n, ns: 1n };
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/;
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const IMF_FIXDATE = /^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d{2}) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT$/;

/** Parses the rate-limit headers of a provider response; `now` anchors instants and HTTP dates. */
export function parseRateLimitHeaders(headers: HeadersLike | null | undefined, now: Date = new Date()): ParsedRateLimit {
  const h = normalizeHeaders(headers);
  const nowMs = now.getTime();
  return {
    requestsRemaining: firstCount(h, "x-ratelimit-remaining-requests", "anthropic-ratelimit-requests-remaining"),
    requestsLimit: firstCount(h, "x-ratelimit-limit-requests", "anthropic-ratelimit-requests-limit"),
    requestsResetMs: firstReset(h, nowMs, "x-ratelimit-reset-requests", "anthropic-ratelimit-requests-reset"),
    tokensRemaining: firstCount(h, "x-ratelimit-remaining-tokens", "anthropic-ratelimit-tokens-remaining", "anthropic-ratelimit-input-tokens-remaining"),
    tokensLimit: firstCount(h, "x-ratelimit-limit-tokens", "anthropic-ratelimit-tokens-limit", "anthropic-ratelimit-input-tokens-limit"),
    tokensResetMs: firstReset(h, nowMs, "x-ratelimit-reset-tokens", "anthropic-ratelimit-tokens-reset", "anthropic-ratelimit-input-tokens-reset"),
    retryAfterMs: parseRetryAfter(h, nowMs),
  };
}

/** The wire form for Release and MarkRateLimited; undefined when nothing is known. */
export function rateLimitToProto(rl: ParsedRateLimit): RateLimit | undefined {
  const { requestsRemaining, requestsLimit, requestsResetMs, tokensRemaining, tokensLimit, tokensResetMs } = rl;
  if ([requestsRemaining, requestsLimit, requestsResetMs, tokensRemaining, tokensLimit, tokensResetMs].every((v) => v === null)) {
    return undefined;
  }
  const big = (n: number | null) => (n === null ? undefined : BigInt(n));
  const dur = (n: number | null) => (n === null ? undefined : durationFromMs(n));
  return create(RateLimitSchema, {
    requestsRemaining: big(requestsRemaining),
    requestsLimit: big(requestsLimit),
    requestsReset: dur(requestsResetMs),
    tokensRemaining: big(tokensRemaining),
    tokensLimit: big(tokensLimit),
    tokensReset: dur(tokensResetMs),
  });
}

function firstCount(h: Map<string, string>, ...names: string[]): number | null {
  for (const name of names) {
    const v = h.get(name);
    if (v === undefined || !COUNT.test(v)) continue;
    const n = Number(v);
    if (Number.isSafeInteger(n)) return n;
  }
  return null;
}

function firstReset(h: Map<string, string>, nowMs: number, ...names: string[]): number | null {
  for (const name of names) {
    const v = h.get(name);
    if (v === undefined) continue;
    const ms = name.startsWith("x-ratelimit-") ? parseGoDurationMs(v) : parseInstantMs(v, nowMs);
    if (ms !== null) return ms;
  }
  return null;
}

/** intPart.fracPart × unit nanoseconds, scaled by 10^fracPart.length, as an exact integer. */
function scaled(intPart: string, fracPart: string | undefined, unitNs: bigint): { value: bigint; scale: bigint } {
  const frac = fracPart ?? "";
  return { value: BigInt(intPart + frac) * unitNs, scale: 10n ** BigInt(frac.length) };
}

/** The longest duration every client can hold: 2^63-1 ns (Go's time.Duration), in whole ms. */
const MAX_DURATION_MS = 9_223_372_036_854n;

function truncatedMs(value: bigint, scale: bigint): number | null {
  const ms = value / (scale * 1_000_000n);
  return ms <= MAX_DURATION_MS ? Number(ms) : null;
}

/** Sums "1h2m3.5s"-style components exactly and truncates to milliseconds. */
export function parseGoDurationMs(v: string): number | null {
  if (v === "0") return 0;
  if (!GO_DURATION.test(v)) return null;
  // Common denominator: 10^(longest fraction) keeps the sum exact.
  const parts = [...v.matchAll(GO_DURATION_PART)].map((m) => scaled(m[1]!, m[2], UNIT_NS[m[3]!]!));
  const scale = parts.reduce((s, p) => (p.scale > s ? p.scale : s), 1n);
  const total = parts.reduce((sum, p) => sum + p.value * (scale / p.scale), 0n);
  return truncatedMs(total, scale);
}

function parseInstantMs(v: string, nowMs: number): number | null {
  const m = RFC3339.exec(v);
  if (!m) return null;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  const utc = Date.UTC(year, month - 1, day, hour, minute, second);
  if (!isCalendarTime(utc, month, day, hour, minute, second)) return null;
  if (m[9] && (Number(m[10]) > 23 || Number(m[11]) > 59)) return null;
  const fractionMs = m[7] ? Number(m[7].slice(0, 3).padEnd(3, "0")) : 0;
  const offsetMin = m[9] ? (m[9] === "-" ? -1 : 1) * (Number(m[10]) * 60 + Number(m[11])) : 0;
  const instant = utc + fractionMs - offsetMin * 60_000;
  return Math.max(instant - nowMs, 0);
}

function parseRetryAfter(h: Map<string, string>, nowMs: number): number | null {
  const msHeader = h.get("retry-after-ms");
  if (msHeader !== undefined) {
    const m = DECIMAL.exec(msHeader);
    if (m) {
      const { value, scale } = scaled(m[1]!, m[2], 1_000_000n);
      return truncatedMs(value, scale);
    }
  }
  const v = h.get("retry-after");
  if (v === undefined) return null;
  const m = DECIMAL.exec(v);
  if (m) {
    const { value, scale } = scaled(m[1]!, m[2], 1_000_000_000n);
    return truncatedMs(value, scale);
  }
  const d = IMF_FIXDATE.exec(v);
  if (!d) return null;
  const [day, month, year, hour, minute, second] = [Number(d[1]), MONTHS.indexOf(d[2]!) + 1, Number(d[3]), Number(d[4]), Number(d[5]), Number(d[6])];
  const at = Date.UTC(year, month - 1, day, hour, minute, second);
  return isCalendarTime(at, month, day, hour, minute, second) ? Math.max(at - nowMs, 0) : null;
}

/** Whether the fields named a real instant (Date.UTC rolls 32 Jan over to 1 Feb; no leap seconds). */
function isCalendarTime(utcMs: number, month: number, day: number, hour: number, minute: number, second: number): boolean {
  const check = new Date(utcMs);
  return check.getUTCMonth() === month - 1 && check.getUTCDate() === day && hour <= 23 && minute <= 59 && second <= 59;
}
