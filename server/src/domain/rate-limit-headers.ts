// Parses provider rate-limit headers (OpenAI x-ratelimit-*, Anthropic anthropic-ratelimit-*,
// retry-after) into relative figures; the rules are pinned by test/vectors/headers.json.

/** The provider's budget as read from headers: counts, and resets in ms from `now`; null when absent or unparseable. */
export interface ParsedRateLimit {
  requestsRemaining: number | null;
  requestsLimit: number | null;
  requestsResetMs: number | null;
  tokensRemaining: number | null;
  tokensLimit: number | null;
  tokensResetMs: number | null;
  retryAfterMs: number | null;
}

const COUNT = /^[0-9]+$/;
const DECIMAL = /^([0-9]+)(?:\.([0-9]+))?$/;
const DURATION = /^(?:[0-9]+(?:\.[0-9]+)?(?:h|ms|m|s|us|µs|ns))+$/;
const DURATION_PART = /([0-9]+)(?:\.([0-9]+))?(h|ms|m|s|us|µs|ns)/g;
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:[Zz]|([+-])(\d{2}):(\d{2}))$/;
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const IMF_FIXDATE = /^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d{2}) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT$/;
/** Surrounding whitespace a value is trimmed of: ASCII only, as every client does. */
const ASCII_SPACE = /^[ \t\r\n\v\f]+|[ \t\r\n\v\f]+$/g;

/** Nanoseconds per unit, so fractional components convert exactly in integer arithmetic. */
const UNIT_NS: Record<string, bigint> = {
  h: 3_600_000_000_000n,
  m: 60_000_000_000n,
  s: 1_000_000_000n,
  ms: 1_000_000n,
  us: 1_000n,
  µs: 1_000n,
  ns: 1n,
};
const NS_PER_MS = 1_000_000n;
/** The longest duration every client can hold: 2^63-1 ns (Go's time.Duration), in whole ms. */
const MAX_DURATION_MS = 9_223_372_036_854n;

function durationMs(ms: bigint): number | null {
  return ms <= MAX_DURATION_MS ? Number(ms) : null;
}

/** Exact value of "int.frac" times `scale`, truncated toward zero (no binary floating point). */
function scaleDecimal(intPart: string, frac: string | undefined, scale: bigint): bigint {
  const digits = frac ?? "";
  const denominator = 10n ** BigInt(digits.length);
  return (BigInt(intPart + digits) * scale) / denominator;
}

function parseCount(v: string | undefined): number | null {
  if (v === undefined || !COUNT.test(v)) return null;
  const n = Number(v);
  return Number.isSafeInteger(n) ? n : null;
}

/** Go-style duration ("1s", "6m0s", "1h2m3.5s") or exactly "0", in whole milliseconds. */
export function parseGoDuration(v: string | undefined): number | null {
  if (v === undefined) return null;
  if (v === "0") return 0;
  if (!DURATION.test(v)) return null;
  let ns = 0n;
  for (const m of v.matchAll(DURATION_PART)) ns += scaleDecimal(m[1]!, m[2], UNIT_NS[m[3]!]!);
  return durationMs(ns / NS_PER_MS);
}

/** RFC 3339 instant in epoch ms, or null when malformed or naming an impossible date (2026-02-31, second 60, offset +24:00). */
export function parseRfc3339(v: string): number | null {
  const m = RFC3339.exec(v);
  if (!m) return null;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  if (m[8] && (Number(m[9]) > 23 || Number(m[10]) > 59)) return null;
  const ms = m[7] ? Number(m[7].slice(0, 3).padEnd(3, "0")) : 0;
  const offsetMin = m[8] ? (m[8] === "-" ? -1 : 1) * (Number(m[9]) * 60 + Number(m[10])) : 0;
  const at = utcInstant(year, month, day, hour, minute, second);
  return at === null ? null : at + ms - offsetMin * 60_000;
}

/** Epoch ms of a UTC calendar time, or null when the fields name no real instant (no leap seconds). */
function utcInstant(year: number, month: number, day: number, hour: number, minute: number, second: number): number | null {
  const daysInMonth = new Date(Date.UTC(year, month, 0)).getUTCDate();
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth || hour > 23 || minute > 59 || second > 59) return null;
  return Date.UTC(year, month - 1, day, hour, minute, second);
}

function parseInstantMs(v: string | undefined, now: number): number | null {
  const t = v === undefined ? null : parseRfc3339(v);
  return t === null ? null : Math.max(0, t - now);
}

function parseRetryAfterMs(v: string | undefined): number | null {
  if (v === undefined) return null;
  const m = DECIMAL.exec(v);
  return m ? durationMs(scaleDecimal(m[1]!, m[2], 1n)) : null;
}

/** Decimal seconds, or an HTTP date (IMF-fixdate; its weekday is not checked against the date). */
function parseRetryAfter(v: string | undefined, now: number): number | null {
  if (v === undefined) return null;
  const m = DECIMAL.exec(v);
  if (m) return durationMs(scaleDecimal(m[1]!, m[2], 1000n));
  const d = IMF_FIXDATE.exec(v);
  if (!d) return null;
  const at = utcInstant(Number(d[3]), MONTHS.indexOf(d[2]!) + 1, Number(d[1]), Number(d[4]), Number(d[5]), Number(d[6]));
  return at === null ? null : Math.max(0, at - now);
}

function first<T>(...values: Array<T | null>): T | null {
  for (const v of values) if (v !== null) return v;
  return null;
}

/** Reads a raw header map (names case-insensitive, values trimmed) relative to `now` (epoch ms). */
export function parseRateLimitHeaders(headers: Record<string, string>, now: number): ParsedRateLimit {
  const h = new Map<string, string>();
  for (const [name, value] of Object.entries(headers)) h.set(name.toLowerCase(), value.replace(ASCII_SPACE, ""));
  const a = (field: string) => h.get(`anthropic-ratelimit-${field}`);
  return {
    requestsRemaining: first(parseCount(h.get("x-ratelimit-remaining-requests")), parseCount(a("requests-remaining"))),
    requestsLimit: first(parseCount(h.get("x-ratelimit-limit-requests")), parseCount(a("requests-limit"))),
    requestsResetMs: first(parseGoDuration(h.get("x-ratelimit-reset-requests")), parseInstantMs(a("requests-reset"), now)),
    tokensRemaining: first(
      parseCount(h.get("x-ratelimit-remaining-tokens")),
      parseCount(a("tokens-remaining")),
      parseCount(a("input-tokens-remaining")),
    ),
    tokensLimit: first(parseCount(h.get("x-ratelimit-limit-tokens")), parseCount(a("tokens-limit")), parseCount(a("input-tokens-limit"))),
    tokensResetMs: first(
      parseGoDuration(h.get("x-ratelimit-reset-tokens")),
      parseInstantMs(a("tokens-reset"), now),
      parseInstantMs(a("input-tokens-reset"), now),
    ),
    retryAfterMs: first(parseRetryAfterMs(h.get("retry-after-ms")), parseRetryAfter(h.get("retry-after"), now)),
  };
}
