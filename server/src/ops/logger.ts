// Structured JSON logs with secrets removed twice: by field name (pino redact) and by shape (a scrub
// of every output line), so a key that slips into a message, an error or a binding is still masked.
import { pino, type DestinationStream, type Logger } from "pino";
import { mask } from "../domain/mask.js";

export type { Logger } from "pino";

/** Field names whose values are secrets wherever they appear (top level or one level down). */
const SECRET_FIELDS = ["secret", "key", "token", "authorization", "apiKey", "api_key", "password", "masterKey"];

const REDACT_PATHS = [
  ...SECRET_FIELDS,
  ...SECRET_FIELDS.map((field) => `*.${field}`),
  "headers.authorization",
  "*.headers.authorization",
  'headers["x-api-key"]',
  '*.headers["x-api-key"]',
];

/**
 * Shapes of provider credentials: OpenAI (sk-, sk-proj-), Anthropic (sk-ant-), Google (AIza),
 * Groq (gsk_), xAI (xai-), Hugging Face (hf_), and bearer tokens of any kind. A shape may start
 * right after a JSON escape ("\\nsk-…"), since the scrub runs on serialised lines.
 */
const START = String.raw`(?:(?<=\\[nrtbf])|(?<![A-Za-z0-9]))`;
const SECRET_SHAPES: RegExp[] = [
  new RegExp(String.raw`${START}(?:sk|gsk|xai|hf)[-_][A-Za-z0-9_-]{16,}`, "g"),
  new RegExp(String.raw`${START}AIza[A-Za-z0-9_-]{30,}`, "g"),
  new RegExp(String.raw`${START}(Bearer\s+)[A-Za-z0-9._~+/=-]{12,}`, "gi"),
];

/** Replaces everything in `text` that looks like an API key or bearer token by its listing mask ("sk-…abcd"). */
export function scrubSecrets(text: string): string {
  let out = text;
  for (const shape of SECRET_SHAPES) {
    out = out.replace(shape, (match: string, bearer?: string) =>
      typeof bearer === "string" ? `${bearer}${mask(match.slice(bearer.length))}` : mask(match),
    );
  }
  return out;
}

/** A destination that scrubs each serialised line before it reaches `target`. */
function scrubbingDestination(target: DestinationStream): DestinationStream {
  return { write: (line: string) => target.write(scrubSecrets(line)) };
}

/**
 * The service logger: JSON lines on stdout (or `destination`), level from KEYMESH_LOG_LEVEL.
 * Unknown levels are a start-up error rather than a silent fallback.
 */
export function createLogger(
  level: string = process.env.KEYMESH_LOG_LEVEL ?? "info",
  destination: DestinationStream = pino.destination({ dest: 1, sync: true }),
): Logger {
  const normalized = level.trim().toLowerCase();
  if (!Object.hasOwn(pino.levels.values, normalized) && normalized !== "silent") {
    throw new Error(
      `KEYMESH_LOG_LEVEL: "${level}" is not a level (use ${Object.keys(pino.levels.values).join(", ")} or silent)`,
    );
  }
  return pino(
    {
      level: normalized,
      base: { service: "keymesh" },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: REDACT_PATHS, censor: "[redacted]" },
    },
    scrubbingDestination(destination),
  );
}
