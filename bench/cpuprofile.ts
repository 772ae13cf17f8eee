// Summarizes a V8 .cpuprofile: self time by function and by source (package or file), top first.
// npx tsx bench/cpuprofile.ts <file.cpuprofile> [top]
import { readFileSync } from "node:fs";

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
}

const [file, topArg = "25"] = process.argv.slice(2);
if (!file) throw new Error("usage: tsx bench/cpuprofile.ts <file.cpuprofile> [top]");
const profile = JSON.parse(readFileSync(file, "utf8")) as Profile;
const top = Number(topArg);
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const selfUs = new Map<number, number>();
profile.samples.forEach((id, i) => selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
const total = [...selfUs.values()].reduce((a, b) => a + b, 0);

function source(url: string): string {
  if (!url) return "(native/V8)";
  const nm = url.lastIndexOf("node_modules/");
  if (nm >= 0) {
    const parts = url.slice(nm + "node_modules/".length).split("/");
    return parts[0]!.startsWith("@") ? `${parts[0]}/${parts[1]}` : parts[0]!;
  }
  if (url.startsWith("node:")) return url;
  const i = url.indexOf("/server/src/");
  return i >= 0 ? url.slice(i + 1) : url.replace(/^file:\/\//, "");
}

const byFn = new Map<string, number>();
const byCategory = new Map<string, number>();
const bySource = new Map<string, number>();
for (const [id, us] of selfUs) {
  const n = byId.get(id)!;
  const f = n.callFrame;
  const name = `${f.functionName || "(anonymous)"}  ${source(f.url)}:${f.lineNumber + 1}`;
  byFn.set(name, (byFn.get(name) ?? 0) + us);
  const s = source(f.url);
  bySource.set(s, (bySource.get(s) ?? 0) + us);
  const c = category(f.functionName, s);
  byCategory.set(c, (byCategory.get(c) ?? 0) + us);
}
// Coarse buckets for "where does one RPC's time go": the transport stack vs KeyMesh's own layers.
function category(fn: string, src: string): string {
  if (fn === "(idle)") return "idle";
  if (fn === "(garbage collector)") return "gc";
  if (fn === "(program)" || src === "(native/V8)") return "v8/native (buffers, writes, microtasks)";
  if (src === "tsx" || src.startsWith("node:internal/modules") || src.startsWith("node:internal/deps/cjs")) return "module loading (startup)";
  if (src.startsWith("node:internal/http2") || src === "@grpc/grpc-js" || /^node:internal\/(stream|net|buffer|timers)|^node:(net|buffer|timers|events)$|^node:internal\/process\/task_queues/.test(src)) return "transport (grpc-js, http2, streams, timers)";
  if (src === "@bufbuild/protobuf") return "protobuf-es";
  if (src.startsWith("node:internal/crypto") || src.endsWith("lease-token.ts") || src.endsWith("hmac-sha256.ts")) return "lease tokens (HMAC, base64, JSON)";
  if (src.startsWith("server/src/domain")) return "engine";
  if (src.startsWith("server/src/rpc") || src.startsWith("server/src/transport") || src === "@connectrpc/connect" || src.startsWith("node:internal/abort") || src.startsWith("node:internal/event_target")) return "rpc layer + adapter (contexts, signals, errors)";
  if (src.startsWith("server/src/store") || src === "postgres") return "store + postgres driver (journal)";
  if (src === "prom-client" || src.endsWith("metrics.ts")) return "metrics";
  return "other";
}

const pct = (us: number) => `${((100 * us) / total).toFixed(1).padStart(5)}%`;
console.log(`total sampled ${(total / 1e6).toFixed(2)} s\n\nself time by category:`);
for (const [c, us] of [...byCategory].sort((a, b) => b[1] - a[1])) console.log(`${pct(us)}  ${(us / 1e6).toFixed(2).padStart(6)} s  ${c}`);
console.log("\nself time by source:");
for (const [s, us] of [...bySource].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${pct(us)}  ${s}`);
console.log("\nself time by function:");
for (const [s, us] of [...byFn].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${pct(us)}  ${s}`);
