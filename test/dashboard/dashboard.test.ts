// The dashboard in a real headless browser (Debian's chromium, driven by playwright-core) against real
// servers, one with auth off and one with tokens: what the page shows, a screenshot of each under
// .tmp/, that it fetches nothing but its own origin, and disabling a key without and with an admin token.
import { existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chromium, type Browser, type Page } from "playwright-core";
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { KeyState, PoolAdminService } from "../../server/src/gen/keymesh/v1/admin_pb.js";
import { KeyPoolService } from "../../server/src/gen/keymesh/v1/pool_pb.js";
import { CONTENT_SECURITY_POLICY } from "../../server/src/transport/static-site.js";
import { startTestServer, uniqueName, type TestServer } from "../support/server.js";

const CHROMIUM = "/usr/bin/chromium";
/** The flags Chromium needs on a machine with a closed network (and as root). */
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const SHOTS = path.resolve(import.meta.dirname, "../../.tmp/dashboard");
const ADMIN_TOKEN = "dashboard-admin-token-0123";
const BACKEND_TOKEN = "dashboard-backend-token-0123";

let browser: Browser;

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: scripts/test.sh installs Debian's chromium (apt-get install chromium)`);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  mkdirSync(SHOTS, { recursive: true });
});

afterAll(async () => {
  await browser?.close();
});

function clients(ts: TestServer, token?: string) {
  const bearer: Interceptor = (next) => (req) => {
    if (token) req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  const transport = createGrpcTransport({ baseUrl: `http://${ts.grpcAddr}`, interceptors: [bearer] });
  return { admin: createClient(PoolAdminService, transport), pool: createClient(KeyPoolService, transport) };
}

/**
 * A pool whose keys are in different states: k1 lent to worker-1 with a reported latency and budget, k2
 * disabled with a reason, k3 cooling down after a rate limit.
 */
async function seedPool(ts: TestServer, token?: string): Promise<string> {
  const { admin, pool } = clients(ts, token);
  const name = uniqueName("dash");
  await admin.createPool({ pool: { name, description: "browser test pool" } });
  for (const id of ["k1", "k2", "k3"]) {
    await admin.addKey({ pool: name, key: { id, label: `key ${id}`, maxConcurrency: 4 }, secret: `sk-test-${id}-0123456789abcdef` });
  }
  await admin.disableKey({ pool: name, keyId: "k2", reason: "rotated by ops" });
  const first = await pool.acquire({ pool: name, holder: "worker-0", excludeKeyIds: ["k3"] });
  await pool.release({
    leaseId: first.leaseId,
    latency: durationFromMs(250),
    usage: { inputTokens: 1200n, outputTokens: 300n },
    rateLimit: { requestsRemaining: 99n, requestsLimit: 100n, requestsReset: durationFromMs(60_000), headers: {} },
  });
  await pool.acquire({ pool: name, holder: "worker-1", excludeKeyIds: ["k3"], leaseTtl: durationFromMs(120_000) });
  const third = await pool.acquire({ pool: name, holder: "worker-2", excludeKeyIds: ["k1"] });
  await pool.markRateLimited({ leaseId: third.leaseId, retryAfter: durationFromMs(600_000) });
  return name;
}

/** A page that records every request it makes and every console error, CSP violations included. */
async function openPage(ts: TestServer): Promise<{ page: Page; requests: string[]; errors: string[] }> {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const requests: string[] = [];
  const errors: string[] = [];
  page.on("request", (r) => requests.push(r.url()));
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => {
    // A refused call is logged by Chromium as a failed resource load; that is the page working.
    if (m.type() === "error" && !/status of 40[13]/.test(m.text())) errors.push(m.text());
  });
  page.on("dialog", (d) => void d.accept());
  await page.goto(`${ts.httpUrl}/`);
  return { page, requests, errors };
}

const text = (page: Page, selector: string) => () => page.locator(selector).innerText();
const POLL = { timeout: 15_000 };

describe("dashboard files", () => {
  let ts: TestServer;
  beforeAll(async () => {
    ts = await startTestServer();
  });
  afterAll(async () => {
    await ts?.stop();
  });

  it("serves the page and its assets with their content types and the CSP; HEAD, 304 and unknown paths", async () => {
    const page = await fetch(`${ts.httpUrl}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toBe("text/html; charset=utf-8");
    expect(page.headers.get("content-security-policy")).toBe(CONTENT_SECURITY_POLICY);
    expect(page.headers.get("x-content-type-options")).toBe("nosniff");
    const html = await page.text();
    expect(html).toContain('<script type="module" src="/app.js">');
    const js = await fetch(`${ts.httpUrl}/app.js`);
    expect(js.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
    expect((await js.text()).length).toBeGreaterThan(1000);
    expect((await fetch(`${ts.httpUrl}/style.css`)).headers.get("content-type")).toBe("text/css; charset=utf-8");
    expect((await fetch(`${ts.httpUrl}/favicon.svg`)).headers.get("content-type")).toBe("image/svg+xml");

    const head = await fetch(`${ts.httpUrl}/app.js`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe("");
    const again = await fetch(`${ts.httpUrl}/app.js`, { headers: { "if-none-match": js.headers.get("etag")! } });
    expect(again.status).toBe(304);

    expect((await fetch(`${ts.httpUrl}/app.js.map`)).status).toBe(404);
    expect((await fetch(`${ts.httpUrl}/../package.json`)).status).toBe(404);
    expect((await fetch(`${ts.httpUrl}/`, { method: "POST" })).status).toBe(404);
    expect((await fetch(`${ts.httpUrl}/healthz`)).status).toBe(200);
  });
});

describe("dashboard with auth off (loopback)", () => {
  let ts: TestServer;
  let name: string;
  beforeAll(async () => {
    ts = await startTestServer();
    name = await seedPool(ts);
  });
  afterAll(async () => {
    await ts?.stop();
  });

  it("shows the pool, each key's state, cooldown, usage and live leases; read-only until unlocked, then revokes, enables and disables", async () => {
    const { page, requests, errors } = await openPage(ts);
    try {
      const k1 = `tr[data-key="k1"]`;
      await expect.poll(text(page, `tr[data-pool="${name}"]`), POLL).toContain("1 / 3");
      await expect.poll(text(page, k1), POLL).toContain("enabled");
      expect(await page.locator(k1).innerText()).toMatch(/1 \/ 4/);
      expect(await page.locator(k1).innerText()).toContain("250ms");
      expect(await page.locator(k1).innerText()).toMatch(/req 9\d \/ 100/);
      expect(await page.locator(k1).innerText()).toContain("1,200 in / 300 out tokens");
      const k2 = await page.locator(`tr[data-key="k2"]`).innerText();
      expect(k2).toContain("disabled");
      expect(k2).toContain("rotated by ops");
      expect(await page.locator(`tr[data-key="k3"]`).innerText()).toMatch(/\b(9m5\ds|10m)\b/);
      expect(await page.locator(`tr.ineligible[data-key="k3"]`).count()).toBe(1);
      expect(await page.locator(`tr[data-lease]`).innerText()).toContain("worker-1");
      await expect.poll(text(page, "#auth"), POLL).toContain("Auth is off");
      expect(await page.locator("#pool").innerText()).toContain("Read-only");
      expect(await page.getByRole("button", { name: "Disable" }).count()).toBe(0);
      await page.screenshot({ path: path.join(SHOTS, "auth-off.png"), fullPage: true });

      await page.click("#unlock");
      await page.locator("tr[data-lease]").filter({ hasText: "worker-1" }).getByRole("button", { name: "Revoke" }).click();
      await expect.poll(() => page.locator("tr[data-lease]").count(), POLL).toBe(0);
      await expect.poll(text(page, "#feed"), POLL).toMatch(/lease_revoked .*k1/);
      await page.locator(`tr[data-key="k2"]`).getByRole("button", { name: "Enable" }).click();
      await expect.poll(text(page, `tr[data-key="k2"]`), POLL).toContain("enabled");
      await page.locator(k1).getByRole("button", { name: "Disable" }).click();
      await expect.poll(text(page, k1), POLL).toContain("disabled");
      await expect.poll(text(page, "#feed"), POLL).toMatch(/key_disabled .*k1/);
      const { key } = await ts.admin.getKey({ pool: name, keyId: "k1" });
      expect(key!.state).toBe(KeyState.DISABLED);
      expect(key!.stateReason).toBe("disabled from the dashboard");
      expect((await ts.admin.getKey({ pool: name, keyId: "k2" })).key!.state).toBe(KeyState.ENABLED);

      const origin = new URL(ts.httpUrl).origin;
      expect(requests.filter((url) => new URL(url).origin !== origin)).toEqual([]);
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });
});

describe("dashboard with auth on", () => {
  let ts: TestServer;
  let name: string;
  beforeAll(async () => {
    ts = await startTestServer({ KEYMESH_AUTH_TOKENS: `${ADMIN_TOKEN}=admin,use:*;${BACKEND_TOKEN}=use:*` });
    name = await seedPool(ts, ADMIN_TOKEN);
  });
  afterAll(async () => {
    await ts?.stop();
  });

  it("shows nothing without a token, refuses a backend token, and with the admin token disables a key", async () => {
    const { page, errors } = await openPage(ts);
    try {
      await expect.poll(text(page, "#notice"), POLL).toContain("needs an admin token");
      expect(await page.locator("#notice").innerText()).toContain("UNAUTHENTICATED");
      expect(await page.locator("tr[data-pool]").count()).toBe(0);
      await expect.poll(text(page, "#feed-status"), POLL).toBe("needs an admin token");

      await page.fill("#token", BACKEND_TOKEN);
      await page.click("#unlock");
      await expect.poll(text(page, "#notice"), POLL).toContain("PERMISSION_DENIED");
      expect(await page.locator("#notice").innerText()).toContain("needs scope admin");
      expect(await page.locator("tr[data-pool]").count()).toBe(0);

      await page.click("#lock");
      await page.fill("#token", ADMIN_TOKEN);
      await page.click("#unlock");
      expect(await page.locator("#token").inputValue()).toBe("");
      const k1 = `tr[data-key="k1"]`;
      await expect.poll(text(page, k1), POLL).toContain("enabled");
      expect(await page.locator("#notice").isHidden()).toBe(true);
      await page.locator(k1).getByRole("button", { name: "Disable" }).click();
      await expect.poll(text(page, k1), POLL).toContain("disabled");
      await expect.poll(text(page, "#feed"), POLL).toMatch(/key_disabled .*k1/);
      await page.screenshot({ path: path.join(SHOTS, "auth-on.png"), fullPage: true });
      const { key } = await clients(ts, ADMIN_TOKEN).admin.getKey({ pool: name, keyId: "k1" });
      expect(key!.state).toBe(KeyState.DISABLED);

      const lease = page.locator("tr[data-lease]").filter({ hasText: "worker-1" });
      await expect.poll(() => lease.count(), POLL).toBe(0);
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });
});
