// What a request may carry, checked on both listeners and in every protocol after decoding and before
// a handler runs: strings of valid Unicode without NUL (Postgres text and jsonb cannot hold U+0000) and
// of bounded length, bounded lists, maps and numbers, and durations and timestamps as protobuf defines
// them. Nothing out of range reaches the engine, the journal or a snapshot, so what is stored reads
// back encodable in every protocol. README "Request limits" lists these bounds.
import { ScalarType, type DescField, type DescMessage } from "@bufbuild/protobuf";
import type { Duration, Timestamp } from "@bufbuild/protobuf/wkt";
import { MAX_AFFINITY, MAX_DESCRIPTION, MAX_LABEL, MAX_QUOTA_GROUP, MAX_QUOTA_GROUPS, NAME_MAX } from "../domain/config.js";
import { invalidArgument } from "../domain/errors.js";

/**
 * Longest value of each string field, by proto field name, in characters (UTF-16 code units); names,
 * ids, labels, descriptions and quota groups by the domain's own rules (domain/config.ts).
 */
const STRING_MAX: Readonly<Record<string, number>> = {
  pool: NAME_MAX,
  name: NAME_MAX,
  key_id: NAME_MAX,
  id: NAME_MAX,
  exclude_key_ids: NAME_MAX,
  lease_id: 512,
  holder: 256,
  message: 1024,
  reason: 1024,
  label: MAX_LABEL,
  description: MAX_DESCRIPTION,
  quota_group: MAX_QUOTA_GROUP,
  affinity: MAX_AFFINITY,
  secret: 4096,
  secret_hint: 256,
  state_reason: 1024,
  page_token: 1024,
  paths: 128,
};

/** Most entries of each repeated field. */
const LIST_MAX: Readonly<Record<string, number>> = {
  exclude_key_ids: 1024,
  paths: 32,
};

/** Most entries of each map field with string keys, the longest key and (for string values) the longest value. */
const MAP_MAX: Readonly<Record<string, { entries: number; key: number; value: number }>> = {
  metadata: { entries: 64, key: 128, value: 1024 },
  headers: { entries: 128, key: 256, value: 4096 },
  quota_groups: { entries: MAX_QUOTA_GROUPS, key: MAX_QUOTA_GROUP, value: 0 },
};

/** uint32 fields are stored in Postgres integer columns. */
const UINT32_MAX = 2_147_483_647;

/** int64 fields are counts (tokens, rate-limit figures): from 0 to 10^12, so their sums stay within int64. */
const COUNT_MAX = 1_000_000_000_000n;

/** protobuf's range for google.protobuf.Duration. */
const DURATION_SPEC_SECONDS = 315_576_000_000n;
const NANOS_MAX = 999_999_999;

/** Longest duration any field may hold: 100 years, so every instant computed from one (an expiry, a cooldown's end) is a valid Timestamp. */
const DURATION_MAX_SECONDS = 3_155_760_000n;

/** Durations that must be positive when set: a TTL of zero cannot be granted (unset means the default). */
const POSITIVE_DURATIONS: ReadonlySet<string> = new Set(["lease_ttl", "ttl", "min_ttl", "max_ttl", "default_ttl"]);

/** protobuf's range for google.protobuf.Timestamp: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z. */
const TIMESTAMP_MIN_SECONDS = -62_135_596_800n;
const TIMESTAMP_MAX_SECONDS = 253_402_300_799n;

/** Longest message an error carries: it may quote an input, and a status travels in a header. */
export const ERROR_MESSAGE_MAX = 512;

type Fields = Record<string, unknown>;

/** Where a nested message sits in the request, so an error can name the field; only spelled out on an error. */
interface Path {
  readonly parent: Path | undefined;
  readonly field: DescField;
}
type Check = (msg: Fields, at: Path | undefined) => void;
/** Checks one value of `field`; `subject` says what it is when not the field's value itself ("keys ", "entries "). */
type Rule = (v: unknown, at: Path | undefined, field: DescField) => void;

function pathOf(at: Path | undefined, field: DescField): string {
  let path = field.name;
  for (let p = at; p; p = p.parent) path = `${p.field.name}.${path}`;
  return path;
}

const wellFormed = (s: string) => (s as string & { isWellFormed(): boolean }).isWellFormed();

function checkString(s: string, max: number, at: Path | undefined, field: DescField, subject: string): void {
  if (s.length > max) throw invalidArgument(pathOf(at, field), `${subject}must be at most ${max} characters`);
  if (s.includes("\0")) throw invalidArgument(pathOf(at, field), `${subject}must not contain NUL (U+0000)`);
  if (!wellFormed(s)) throw invalidArgument(pathOf(at, field), `${subject}must be valid Unicode (no unpaired surrogate)`);
}

function checkDuration(d: Duration, at: Path | undefined, field: DescField, positive: boolean): void {
  const { seconds, nanos } = d;
  // The common case in four comparisons: within bounds, not negative, nanos of a whole second or less.
  if (seconds > 0n && seconds < DURATION_MAX_SECONDS && nanos >= 0 && nanos <= NANOS_MAX) return;
  const sameSign = seconds === 0n || nanos === 0 || (seconds > 0n) === (nanos > 0);
  if (seconds < -DURATION_SPEC_SECONDS || seconds > DURATION_SPEC_SECONDS || nanos < -NANOS_MAX || nanos > NANOS_MAX || !sameSign) {
    throw invalidArgument(pathOf(at, field), "is not a valid Duration (seconds within ±315576000000, nanos within ±999999999 and of the same sign)");
  }
  if (seconds < 0n || nanos < 0) throw invalidArgument(pathOf(at, field), "must not be negative");
  if (positive && seconds === 0n && nanos === 0) throw invalidArgument(pathOf(at, field), "must be positive (leave it unset for the default)");
  if (seconds > DURATION_MAX_SECONDS || (seconds === DURATION_MAX_SECONDS && nanos > 0)) throw invalidArgument(pathOf(at, field), "must be at most 100 years");
}

function checkTimestamp(t: Timestamp, at: Path | undefined, field: DescField): void {
  if (t.seconds < TIMESTAMP_MIN_SECONDS || t.seconds > TIMESTAMP_MAX_SECONDS || t.nanos < 0 || t.nanos > NANOS_MAX) {
    throw invalidArgument(pathOf(at, field), "is not a valid Timestamp (0001-01-01 to 9999-12-31, nanos within 0-999999999)");
  }
}

function bound<T>(table: Readonly<Record<string, T>>, field: DescField, what: string): T {
  const b = table[field.name];
  if (b === undefined) throw new Error(`limits.ts has no ${what} for ${field.parent.typeName}.${field.name}`);
  return b;
}

const INT64_TYPES: ReadonlySet<ScalarType> = new Set([ScalarType.INT64, ScalarType.UINT64, ScalarType.SINT64, ScalarType.FIXED64, ScalarType.SFIXED64]);

/** The rule for one scalar value, or undefined when any value of its type is acceptable (bool, int32, enum numbers, floats). */
function scalarRule(field: DescField, scalar: ScalarType, subject = ""): Rule | undefined {
  if (scalar === ScalarType.STRING) {
    const max = bound(STRING_MAX, field, "string bound");
    return (v, at, f) => checkString(v as string, max, at, f, subject);
  }
  if (INT64_TYPES.has(scalar)) {
    return (v, at, f) => {
      const n = typeof v === "bigint" ? v : BigInt(v as string);
      if (n < 0n) throw invalidArgument(pathOf(at, f), `${subject}must not be negative`);
      if (n > COUNT_MAX) throw invalidArgument(pathOf(at, f), `${subject}must be at most ${COUNT_MAX}`);
    };
  }
  if (scalar === ScalarType.UINT32 || scalar === ScalarType.FIXED32) {
    return (v, at, f) => {
      if ((v as number) > UINT32_MAX) throw invalidArgument(pathOf(at, f), `${subject}must be at most ${UINT32_MAX}`);
    };
  }
  if (scalar === ScalarType.BYTES) throw new Error(`limits.ts has no rule for bytes field ${field.parent.typeName}.${field.name}`);
  return undefined;
}

function fieldCheck(field: DescField): Check | undefined {
  if (field.oneof) throw new Error(`limits.ts has no rule for oneof field ${field.parent.typeName}.${field.name}`);
  const key = field.localName;
  switch (field.fieldKind) {
    case "scalar": {
      const rule = scalarRule(field, field.scalar);
      if (!rule) return undefined;
      return (msg, at) => {
        const v = msg[key];
        // An unset proto3 `optional` field is undefined.
        if (v !== undefined) rule(v, at, field);
      };
    }
    case "enum":
      return undefined;
    case "message": {
      const typeName = field.message.typeName;
      if (typeName === "google.protobuf.Duration") {
        const positive = POSITIVE_DURATIONS.has(field.name);
        return (msg, at) => {
          const d = msg[key] as Duration | undefined;
          if (d) checkDuration(d, at, field, positive);
        };
      }
      if (typeName === "google.protobuf.Timestamp") {
        return (msg, at) => {
          const t = msg[key] as Timestamp | undefined;
          if (t) checkTimestamp(t, at, field);
        };
      }
      const nested = messageCheck(field.message);
      return (msg, at) => {
        const m = msg[key] as Fields | undefined;
        if (m) nested(m, { parent: at, field });
      };
    }
    case "list": {
      const max = bound(LIST_MAX, field, "list bound");
      let each: Rule | undefined;
      if (field.listKind === "scalar") each = scalarRule(field, field.scalar, "entries ");
      else if (field.listKind === "message") {
        const nested = messageCheck(field.message);
        each = (v, at, f) => nested(v as Fields, { parent: at, field: f });
      }
      return (msg, at) => {
        const list = msg[key] as unknown[];
        if (list.length > max) throw invalidArgument(pathOf(at, field), `must have at most ${max} entries`);
        if (each) for (let i = 0; i < list.length; i++) each(list[i], at, field);
      };
    }
    case "map": {
      const stringValues = field.mapKind === "scalar" && field.scalar === ScalarType.STRING;
      if (field.mapKey !== ScalarType.STRING || !(stringValues || field.mapKind === "message")) {
        throw new Error(`limits.ts has no rule for map field ${field.parent.typeName}.${field.name}`);
      }
      const max = bound(MAP_MAX, field, "map bound");
      const nested = field.mapKind === "message" ? messageCheck(field.message) : undefined;
      return (msg, at) => {
        const map = msg[key] as Record<string, unknown>;
        let entries = 0;
        for (const k in map) {
          if (++entries > max.entries) throw invalidArgument(pathOf(at, field), `must have at most ${max.entries} entries`);
          checkString(k, max.key, at, field, "keys ");
          if (nested) nested(map[k] as Fields, { parent: at, field });
          else checkString(map[k] as string, max.value, at, field, "values ");
        }
      };
    }
  }
}

const compiled = new Map<DescMessage, Check>();

function messageCheck(schema: DescMessage): Check {
  const known = compiled.get(schema);
  if (known) return known;
  const checks: Check[] = [];
  const check: Check = (msg, at) => {
    for (let i = 0; i < checks.length; i++) checks[i]!(msg, at);
  };
  // Registered before its fields are compiled, so a message that contains itself compiles.
  compiled.set(schema, check);
  try {
    for (const field of schema.fields) {
      const c = fieldCheck(field);
      if (c) checks.push(c);
    }
  } catch (e) {
    compiled.delete(schema);
    throw e;
  }
  return check;
}

/**
 * Throws INVALID_ARGUMENT naming the first field of `message` (a decoded `schema`) that is out of
 * bounds. Every field of a request must have a rule here: one without throws a plain Error, at the
 * first request of that type (server/test/rpc/limits.test.ts compiles every request of both services).
 */
export function checkRequest(schema: DescMessage, message: unknown): void {
  messageCheck(schema)(message as Fields, undefined);
}

/** `message` cut to ERROR_MESSAGE_MAX characters at a character boundary, with any unpaired surrogate replaced. */
export function boundedMessage(message: string): string {
  const text = (message as string & { toWellFormed(): string }).toWellFormed();
  if (text.length <= ERROR_MESSAGE_MAX) return text;
  let end = ERROR_MESSAGE_MAX - 1;
  const last = text.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--;
  return `${text.slice(0, end)}…`;
}
