// classification.json with the real SDKs' errors: each case of an SDK's shape is answered, as that
// provider would send it, by a loopback server; the real SDK turns the answer into its own error and
// classify() must give the case's outcome and retry-after (vectors.test.ts runs every case with
// stand-ins shaped like these errors).
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import Anthropic from "@anthropic-ai/sdk";
import { GoogleGenAI } from "@google/genai";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { classify } from "../src/classify.js";

/** input.error, as test/vectors/README.md describes each shape. */
interface ErrorShape {
  shape: string;
  status?: number | string;
  code?: string | number | null;
  type?: string | null;
  message?: string;
  headers?: Record<string, string>;
  error?: { type: string; message: string };
  details?: unknown[];
}

interface Case {
  name: string;
  input: { status: number | null; headers: Record<string, string> | null; error: ErrorShape | null };
  expect: { outcome: string; retry_after_ms: number | null };
}

const vectors: { now: string; cases: Case[] } = JSON.parse(readFileSync(new URL("../../../test/vectors/classification.json", import.meta.url), "utf8"));
const now = new Date(vectors.now);
const ofShape = (shape: string) => vectors.cases.filter((c) => c.input.error?.shape === shape).map((c) => [c.name, c] as const);

type Handler = (req: IncomingMessage, res: ServerResponse) => void;
let answer: Handler = () => {};
const server = createServer((req, res) => {
  req.resume();
  answer(req, res);
});
let url = "";
beforeAll(async () => {
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => {
  server.closeAllConnections();
  server.close();
});

const json = (status: number, body: unknown, headers: Record<string, string> = {}): Handler => (_req, res) => {
  res.writeHead(status, { ...headers, "content-type": "application/json" });
  res.end(JSON.stringify(body));
};

const sdks = {
  openai: () => new OpenAI({ apiKey: "k", baseURL: `${url}/v1`, maxRetries: 0, timeout: 200 }).chat.completions.create({ model: "m", messages: [{ role: "user", content: "x" }] }),
  anthropic: () => new Anthropic({ apiKey: "k", baseURL: url, maxRetries: 0, timeout: 200 }).messages.create({ model: "m", max_tokens: 8, messages: [{ role: "user", content: "x" }] }),
  gemini: () => new GoogleGenAI({ apiKey: "k", httpOptions: { baseUrl: url, timeout: 200 } }).models.generateContent({ model: "m", contents: "x" }),
};

/** The call's rejection; a call that succeeds fails the test. */
async function failure(call: () => Promise<unknown>): Promise<unknown> {
  const result = await call().then(
    () => ({ resolved: true }),
    (error: unknown) => ({ error }),
  );
  if (!("error" in result)) throw new Error("the SDK call succeeded");
  return result.error;
}

function expectCase(c: Case, error: unknown) {
  const o = classify({ status: c.input.status, headers: c.input.headers, error }, now);
  expect({ outcome: o.kind, retry_after_ms: o.retryAfterMs }).toEqual(c.expect);
}

describe("classification.json with openai's errors", () => {
  it.each(ofShape("openai"))("%s", async (_name, c) => {
    const e = c.input.error!;
    answer = json(e.status as number, { error: { message: e.message ?? "", type: e.type ?? null, param: null, code: e.code ?? null } }, e.headers);
    const error = await failure(sdks.openai);
    expect(error).toBeInstanceOf(OpenAI.APIError);
    expectCase(c, error);
  });
});

describe("classification.json with @anthropic-ai/sdk's errors", () => {
  it.each(ofShape("anthropic"))("%s", async (_name, c) => {
    const e = c.input.error!;
    const status = e.status as number;
    const body = { type: "error", error: e.error };
    let call: () => Promise<unknown> = sdks.anthropic;
    if (status < 300) {
      // An error event inside a streamed answer, after a 200.
      answer = (_req, res) => {
        res.writeHead(status, { ...e.headers, "content-type": "text/event-stream" });
        res.end(`event: error\ndata: ${JSON.stringify(body)}\n\n`);
      };
      call = async () => {
        const stream = await new Anthropic({ apiKey: "k", baseURL: url, maxRetries: 0 }).messages.create({ model: "m", max_tokens: 8, messages: [{ role: "user", content: "x" }], stream: true });
        for await (const _event of stream);
      };
    } else {
      answer = json(status, body, e.headers);
    }
    const error = await failure(call);
    expect(error).toBeInstanceOf(Anthropic.APIError);
    expectCase(c, error);
  });
});

describe("classification.json with @google/genai's errors", () => {
  // The SDK keeps no response headers on its ApiError: a case's headers reach classify() only as its
  // input.headers, as the wrap's caller would pass them.
  it.each(ofShape("gemini"))("%s", async (_name, c) => {
    const e = c.input.error!;
    answer = json(e.code as number, { error: { code: e.code, message: e.message ?? "", status: e.status, ...(e.details ? { details: e.details } : {}) } });
    expectCase(c, await failure(sdks.gemini));
  });
});

describe("classification.json's connection and timeout cases with each SDK", () => {
  const [connection] = ofShape("connection").map(([, c]) => c);
  const [timeout] = ofShape("timeout").map(([, c]) => c);

  it.each(Object.entries(sdks))("%s: no connection", async (_sdk, call) => {
    answer = (req) => req.socket.destroy();
    expectCase(connection!, await failure(call));
  });

  it.each([
    ["openai", sdks.openai],
    ["anthropic", sdks.anthropic],
  ] as const)("%s: no answer within the SDK's timeout", async (_sdk, call) => {
    answer = () => {};
    expectCase(timeout!, await failure(call));
  });

  it("gemini: its own timeout is a bare AbortError, as a caller's abort is: classified client_error (no verdict, no retry)", async () => {
    answer = () => {};
    const error = await failure(sdks.gemini);
    expect(error).toMatchObject({ name: "AbortError" });
    expect(classify({ error }).kind).toBe("client_error");
  });
});
