// Sends chat completions to an OpenAI-style endpoint with KeyMesh-leased keys: the key goes in a
// per-request Authorization header, the response status and headers are reported on the lease,
// and callWithRetry moves a 429 to another key.
//   npx tsx clients/ts/examples/openai-style.ts --pool openai --base-url http://127.0.0.1:8787/v1 --requests 20
import { parseArgs } from "node:util";
import { createKeyMeshClient, type Lease, keymeshErrorReason } from "@keymesh/client";

const { values } = parseArgs({
  options: {
    addr: { type: "string", default: process.env.KEYMESH_ADDR || "127.0.0.1:50051" },
    pool: { type: "string", default: "openai" },
    "base-url": { type: "string", default: process.env.OPENAI_BASE_URL },
    requests: { type: "string", default: "1" },
  },
});

const client = createKeyMeshClient({ baseUrl: `http://${values.addr}`, token: process.env.KEYMESH_TOKEN || undefined });

/** One chat completion with the leased key; the outcome is reported on the lease. */
async function complete(lease: Lease, prompt: string): Promise<string> {
  const baseUrl = values["base-url"] || lease.metadata.base_url;
  const res = await fetch(`${baseUrl?.replace(/\/$/, "")}/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${lease.key}`, "content-type": "application/json" },
    body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: prompt }] }),
    signal: lease.signal, // stop using a key the server revoked
  });
  lease.report(res.status, res.headers); // status and x-ratelimit-* decide Release or MarkRateLimited/MarkFailed
  if (!res.ok) throw new Error(`provider answered ${res.status}`);
  const body = (await res.json()) as { choices: { message: { content: string } }[]; usage?: { prompt_tokens: number; completion_tokens: number } };
  if (body.usage) lease.setUsage(body.usage.prompt_tokens, body.usage.completion_tokens);
  return body.choices[0]?.message.content ?? "";
}

const keysUsed: Record<string, number> = {};
const total = Number(values.requests);
try {
  for (let i = 0; i < total; i++) {
    const answer = await client.callWithRetry(
      values.pool,
      async (lease) => {
        const text = await complete(lease, `hello ${i}`);
        keysUsed[lease.keyLabel] = (keysUsed[lease.keyLabel] ?? 0) + 1;
        return `${lease.keyLabel} → ${text}`;
      },
      { budgetMs: 20_000 },
    );
    console.log(answer);
  }
} catch (err) {
  console.error(`openai-style: ${String(err)} (reason ${keymeshErrorReason(err)})`);
  process.exit(1);
}
console.log(`completed ${total} requests with keys ${JSON.stringify(keysUsed)}`);
