// The KeyMesh dashboard: pools, the live state and leases of a pool's keys, and the event feed, read
// over the Connect JSON API of the server that serves this page. Actions (disable, enable, revoke)
// appear only once an admin token is entered (on a server with auth off, once unlocked without one);
// the token stays in this tab's sessionStorage and goes out as `Authorization: Bearer`, the same auth
// every API client uses.
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { PoolAdminService, type Event, type Key, type Lease, type Pool, type PoolStats } from "../../server/src/gen/keymesh/v1/admin_pb.js";
import { eventItem, h, poolSection, poolsSection, type PoolActions } from "./render.js";

const REFRESH_MS = 2000;
const FEED_RETRY_MS = 3000;
const FEED_LENGTH = 200;
const KEYS_SHOWN = 1000;
const LEASES_SHOWN = 100;
const TOKEN_STORAGE = "keymesh.adminToken";

/** null: actions locked. "": unlocked on a server without auth (no header is sent). */
function heldToken(): string | null {
  return sessionStorage.getItem(TOKEN_STORAGE);
}

const bearer: Interceptor = (next) => (req) => {
  const token = heldToken();
  if (token) req.header.set("authorization", `Bearer ${token}`);
  return next(req);
};

const admin = createClient(
  PoolAdminService,
  createConnectTransport({ baseUrl: location.origin, useBinaryFormat: false, interceptors: [bearer] }),
);

const byId = (id: string) => document.getElementById(id)!;
const tokenInput = byId("token") as HTMLInputElement;

/** Whether the server runs without auth: learnt from a read that succeeded (or not) with no token. */
let authOff: boolean | undefined;
let events: Event[] = [];

function codeName(code: Code): string {
  return Code[code].replace(/(?<=.)([A-Z])/g, "_$1").toUpperCase();
}

/** What the page says about a refused or failed call. */
function explain(doing: string, e: unknown): string {
  const err = ConnectError.from(e);
  const server = `(${codeName(err.code)}: ${err.rawMessage})`;
  if (err.code === Code.Unauthenticated) return `${doing} needs an admin token: enter it above ${server}.`;
  if (err.code === Code.PermissionDenied) return `${doing} needs an admin token; this token is not one ${server}.`;
  return `${doing} failed ${server}.`;
}

/** What the notice is about: a failed read clears when a read succeeds, an action's when the next one does. */
let noticeFrom: "read" | "action" | undefined;

function setNotice(text: string, from?: "read" | "action"): void {
  const notice = byId("notice");
  notice.textContent = text;
  notice.hidden = text === "";
  noticeFrom = from;
}

function renderAuth(): void {
  const token = heldToken();
  byId("lock").hidden = token === null;
  byId("unlock").hidden = token !== null;
  tokenInput.disabled = token !== null;
  tokenInput.placeholder = token !== null ? "held in this tab" : authOff ? "auth is off: none needed" : "";
  byId("auth").textContent = authOff
    ? "Auth is off on this server (loopback only): anyone who can reach it may act."
    : token
      ? "Using the token entered here."
      : "";
}

const selectedPool = () => new URLSearchParams(location.hash.slice(1)).get("pool") ?? undefined;

let refreshTimer: ReturnType<typeof setTimeout> | undefined;
let loading = false;
let again = false;

/** Reads everything shown and redraws: one read at a time, again at once if asked meanwhile, else after REFRESH_MS. */
function refresh(): void {
  clearTimeout(refreshTimer);
  if (loading) {
    again = true;
    return;
  }
  loading = true;
  load()
    .catch((e: unknown) => setNotice(explain("Viewing", e), "read"))
    .finally(() => {
      loading = false;
      if (again) {
        again = false;
        refresh();
      } else {
        refreshTimer = setTimeout(refresh, REFRESH_MS);
      }
    });
}

async function load(): Promise<void> {
  const sentToken = Boolean(heldToken());
  let pools: Pool[];
  try {
    pools = (await admin.listPools({})).pools;
  } catch (e) {
    const err = ConnectError.from(e);
    if (!sentToken && err.code === Code.Unauthenticated) authOff = false;
    renderAuth();
    setNotice(explain("Viewing", err), "read");
    if (err.code === Code.Unauthenticated || err.code === Code.PermissionDenied) {
      byId("pools").replaceChildren(h("h2", {}, "Pools"));
      byId("pool").replaceChildren();
    }
    return;
  }
  if (!sentToken) authOff = true;
  renderAuth();
  const stats = new Map<string, PoolStats>();
  await Promise.all(
    pools.map(async (p) => {
      // A pool deleted since the listing just has no stats.
      const s = await admin.getPoolStats({ pool: p.name }).then((r) => r.stats, () => undefined);
      if (s) stats.set(p.name, s);
    }),
  );
  const name = selectedPool() ?? pools[0]?.name;
  const pool = pools.find((p) => p.name === name);
  const keys = new Map<string, Key>();
  let leases: Lease[] = [];
  if (pool) {
    const [listed, leased] = await Promise.all([
      admin.listKeys({ pool: pool.name, pageSize: KEYS_SHOWN }).then((r) => r.keys, () => []),
      admin.listLeases({ pool: pool.name, pageSize: LEASES_SHOWN }).then((r) => r.leases, () => []),
    ]);
    for (const k of listed) keys.set(k.id, k);
    leases = leased;
  }
  if (noticeFrom === "read") setNotice("");
  byId("pools").replaceChildren(h("h2", {}, "Pools"), ...poolsSection(pools, stats, name));
  byId("pool").replaceChildren(
    ...(pool ? poolSection({ pool, stats: stats.get(pool.name), keys, leases, keysShown: KEYS_SHOWN }, Date.now(), actions(pool.name)) : []),
  );
}

/** The actions, when the page holds a token (or was unlocked on a server without auth). */
function actions(pool: string): PoolActions | undefined {
  if (heldToken() === null) return undefined;
  return {
    disable: (k) => {
      const note = k.activeLeases > 0 ? ` Its ${k.activeLeases} live leases are revoked.` : "";
      if (confirm(`Disable key ${k.keyId}?${note}`)) {
        act(`Disabling ${k.keyId}`, () => admin.disableKey({ pool, keyId: k.keyId, reason: "disabled from the dashboard" }));
      }
    },
    enable: (k) => act(`Enabling ${k.keyId}`, () => admin.enableKey({ pool, keyId: k.keyId })),
    revoke: (l) => {
      if (confirm(`Revoke the lease of ${l.holder || "an unnamed holder"} on key ${l.keyId}?`)) {
        act("Revoking the lease", () => admin.revokeLease({ leaseId: l.leaseId, reason: "revoked from the dashboard" }));
      }
    },
  };
}

function act(doing: string, call: () => Promise<unknown>): void {
  call()
    .then(
      () => noticeFrom === "action" && setNotice(""),
      (e: unknown) => setNotice(explain(doing, e), "action"),
    )
    .finally(refresh);
}

function addEvent(e: Event): void {
  events = [e, ...events].slice(0, FEED_LENGTH);
  byId("feed").replaceChildren(...events.map(eventItem));
}

let feed: AbortController | undefined;

/** Follows WatchEvents for every pool; reconnects after a failure, stops when the server refuses the token. */
async function watch(): Promise<void> {
  feed?.abort();
  const controller = new AbortController();
  feed = controller;
  const status = byId("feed-status");
  while (!controller.signal.aborted) {
    status.textContent = "waiting for events…";
    try {
      const stream = admin.watchEvents({ pool: "" }, { signal: controller.signal, onHeader: () => (status.textContent = "live") });
      for await (const { event } of stream) {
        if (!event) continue;
        addEvent(event);
        refresh();
      }
    } catch (e) {
      if (controller.signal.aborted) return;
      const err = ConnectError.from(e);
      if (err.code === Code.Unauthenticated || err.code === Code.PermissionDenied) {
        status.textContent = "needs an admin token";
        return;
      }
    }
    status.textContent = "disconnected, reconnecting…";
    await new Promise((resolve) => setTimeout(resolve, FEED_RETRY_MS));
  }
}

byId("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const token = tokenInput.value.trim();
  if (token === "" && !authOff) {
    setNotice("Enter the admin token (this server has auth on, or has not answered yet).");
    return;
  }
  sessionStorage.setItem(TOKEN_STORAGE, token);
  tokenInput.value = "";
  setNotice("");
  renderAuth();
  refresh();
  void watch();
});

byId("lock").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_STORAGE);
  renderAuth();
  refresh();
  void watch();
});

addEventListener("hashchange", refresh);
renderAuth();
refresh();
void watch();
