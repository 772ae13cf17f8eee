// Runs the fake provider (OpenAI, Anthropic and Gemini routes) until SIGINT/SIGTERM and prints {"url": ...} on one line.
// npx tsx test/fake-provider/main.ts --port 0 --rpm-per-key 60 --key-count 4
import { parseArgs } from "node:util";
import { DEFAULT_LIMITS, startFakeProvider } from "./provider.js";

const usage = `usage: tsx test/fake-provider/main.ts [options]
  --port N                 listen port on 127.0.0.1 (default 0: any free port)
  --rpm-per-key N          requests per minute per key (default ${DEFAULT_LIMITS.requestsPerWindow})
  --window-ms N            refill window in ms, to scale the limit down for tests (default 60000)
  --tpm-per-key N          tokens per window per key (default 0: no token limit)
  --rpd-per-key N          requests per day per key (default 0: no daily limit)
  --no-rate-limit-headers  answer without x-ratelimit-* headers
  --latency-ms N           delay before every answer (default 0)
  --keys a,b,c             accepted keys
  --key-count N            also accept <key-prefix>0 .. <key-prefix>N-1
  --key-prefix P           prefix for --key-count (default "sk-fake-")`;

function positiveNumber(name: string, value: string | undefined, fallback: number, allowZero = false): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0 || (!allowZero && n === 0)) {
    console.error(`--${name} must be a ${allowZero ? "non-negative" : "positive"} number\n${usage}`);
    process.exit(2);
  }
  return n;
}

const { values } = parseArgs({
  options: {
    port: { type: "string" },
    "rpm-per-key": { type: "string" },
    "window-ms": { type: "string" },
    "tpm-per-key": { type: "string" },
    "rpd-per-key": { type: "string" },
    "no-rate-limit-headers": { type: "boolean" },
    "latency-ms": { type: "string" },
    keys: { type: "string" },
    "key-count": { type: "string" },
    "key-prefix": { type: "string" },
    help: { type: "boolean" },
  },
});
if (values.help) {
  console.log(usage);
  process.exit(0);
}

const prefix = values["key-prefix"] ?? "sk-fake-";
const keyCount = positiveNumber("key-count", values["key-count"], 0, true);
const keys = [
  ...(values.keys ? values.keys.split(",").filter((k) => k.length > 0) : []),
  ...Array.from({ length: keyCount }, (_, i) => `${prefix}${i}`),
];

const provider = await startFakeProvider({
  port: positiveNumber("port", values.port, 0, true),
  limits: {
    requestsPerWindow: positiveNumber("rpm-per-key", values["rpm-per-key"], DEFAULT_LIMITS.requestsPerWindow),
    windowMs: positiveNumber("window-ms", values["window-ms"], DEFAULT_LIMITS.windowMs),
    tokensPerWindow: positiveNumber("tpm-per-key", values["tpm-per-key"], 0, true),
    requestsPerDay: positiveNumber("rpd-per-key", values["rpd-per-key"], 0, true),
  },
  rateLimitHeaders: !values["no-rate-limit-headers"],
  latencyMs: positiveNumber("latency-ms", values["latency-ms"], 0, true),
  keys,
});
console.log(JSON.stringify({ url: provider.url, keys: keys.length }));

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    void provider.close().then(() => process.exit(0));
  });
}
