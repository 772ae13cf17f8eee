// Runs the Go load generator (bench/loadgen, built by scripts/bench.sh) as a separate OS process and
// returns the JSON object it prints.
import { spawn } from "node:child_process";

interface Latency {
  count: number;
  p50_ms: number;
  p90_ms: number;
  p99_ms: number;
  p999_ms: number;
  max_ms: number;
  mean_ms: number;
}

export interface UnaryResult {
  /** etcd: etcd's LeaseGrant and LeaseRevoke (`acquire` and `release` hold their latencies). */
  mode: "echo" | "cycle" | "floor" | "etcd";
  concurrency: number;
  seconds: number;
  ops: number;
  ops_per_sec: number;
  rps: number;
  errors: number;
  first_error?: string;
  ops_all: number;
  client_cpu_us_per_rpc: number;
  /** Filled in by the harness: the server process's CPU over the whole run per RPC answered. */
  server_cpu_us_per_rpc?: number;
  latency: Latency;
  acquire?: Latency;
  release?: Latency;
  /** With `keepalive`: one renewal per cycle, sent and answered over the caller's KeepAlive stream. */
  with_keepalive: boolean;
  keepalive?: Latency;
}

export interface RenewResult {
  streams: number;
  leases_per_stream: number;
  window_per_stream: number;
  seconds: number;
  renewals: number;
  renewals_per_sec: number;
  gone: number;
  latency: Latency;
}

export interface WakeResult {
  samples: number;
  wake: Latency;
  release_rtt: Latency;
  /** A Release round trip with nobody waiting, of the same key just before each wake-up. */
  release_before_rtt: Latency;
  /** A bare echo round trip just before each Release: the transport's floor in the same state. */
  echo_rtt: Latency;
}

export interface GoodputResult {
  scenario: "one" | "rr" | "keymesh";
  offered_rps: number;
  seconds: number;
  measured_seconds: number;
  requests: number;
  succeeded: number;
  failed: number;
  failed_by: Record<string, number>;
  provider_calls: number;
  rate_limited_answers: number;
  success_per_sec: number;
  latency: Latency;
}

function loadgenPath(): string {
  const bin = process.env.KEYMESH_BENCH_LOADGEN;
  if (!bin) throw new Error("KEYMESH_BENCH_LOADGEN is not set: run the bench with `npm run bench` (scripts/bench.sh builds it)");
  return bin;
}

/** Unary RPCs in one op of a loadgen mode: a cycle (its floor, etcd's) is a grant and a release. */
export function rpcsPerOp(mode: string): number {
  return mode === "cycle" || mode === "floor" || mode === "etcd" ? 2 : 1;
}

/** Runs one loadgen mode; `limitMs` bounds the process (it is killed past it). */
export function runLoadgen<T>(args: Record<string, string | number>, limitMs: number): Promise<T> {
  const argv = Object.entries(args).map(([k, v]) => `-${k}=${v}`);
  return runJsonProcess<T>(`loadgen ${argv.join(" ")}`, loadgenPath(), argv, limitMs);
}

/**
 * Runs `cmd` with `argv` and resolves to the JSON it prints on stdout; killed past `limitMs`. A non-zero
 * exit rejects with `label` and the end of its stderr.
 */
export function runJsonProcess<T>(label: string, cmd: string, argv: string[], limitMs: number, cwd?: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const child = spawn(cmd, argv, { cwd, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), limitMs);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`${label} exited with ${signal ?? code}: ${err.trim().slice(-2000)}`));
      try {
        resolve(JSON.parse(out) as T);
      } catch {
        reject(new Error(`${label} printed no JSON: ${out.slice(0, 200)} ${err.slice(0, 200)}`));
      }
    });
  });
}
