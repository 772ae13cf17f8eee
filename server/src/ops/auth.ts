// Bearer-token authorization with scopes (`admin`, `use:<pool>`, `use:*`), the loopback-only rule
// for running without auth, and the TLS files for both listeners.
import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import { isPoolName } from "../domain/config.js";

export const KEY_POOL_SERVICE = "keymesh.v1.KeyPoolService";
export const POOL_ADMIN_SERVICE = "keymesh.v1.PoolAdminService";
/** Health and reflection stay reachable without a token so probes and grpcurl work. */
const OPEN_SERVICES: ReadonlySet<string> = new Set([
  "grpc.health.v1.Health",
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
]);

export type Scope = "admin" | "use:*" | `use:${string}`;

/** One configured token and what it may do. */
export interface TokenGrant {
  token: string;
  /** What the audit trail calls whoever presents it; never the token. */
  name: string;
  scopes: Scope[];
  /** Where it was configured (for error messages; never the token itself). */
  origin: string;
}

interface MethodRef {
  service: string;
  name: string;
}

type AuthDecision =
  | { ok: true; /** The token's name; undefined when auth is off or the service is open. */ name?: string }
  | { ok: false; code: "unauthenticated" | "permission_denied"; message: string };

export interface Authorizer {
  /** False when no token is configured: every call is allowed (loopback only, see checkAuthBinding). */
  readonly enabled: boolean;
  /**
   * Decides one call. `requestPool` is the pool the call acts on: the request's pool for Acquire,
   * the pool decoded from the lease id for lease calls, undefined when it cannot be known.
   */
  authorize(method: MethodRef, authorizationHeader: string | undefined, requestPool: string | undefined): AuthDecision;
}

/** What a token's name may be: it is shown in logs and the audit trail. */
export const TOKEN_NAME = /^[A-Za-z0-9][A-Za-z0-9 ._:@-]{0,62}$/;
export const TOKEN_NAME_RULE = "must be 1-63 characters of letters, digits, space and ._:@-, starting with a letter or digit";

/** Shorter tokens can be guessed; a start-up error is kinder than a weak deployment. */
export const MIN_TOKEN_LENGTH = 16;
/** `authorization: Bearer <token>` carries no whitespace, so such a token could never be presented. */
export const TOKEN_WHITESPACE_RULE = "token must not contain whitespace (a bearer header cannot carry it)";

const ALLOW: AuthDecision = { ok: true };

function digest(token: string): Buffer {
  return createHash("sha256").update(token, "utf8").digest();
}

/** Validates one scope string; throws naming `origin` (never the token). */
export function parseScope(text: string, origin: string): Scope {
  const scope = text.trim();
  if (scope === "admin" || scope === "use:*") return scope;
  if (scope.startsWith("use:") && isPoolName(scope.slice(4))) return scope as Scope;
  throw new Error(`${origin}: scope "${scope}" is not one of admin, use:*, use:<pool>`);
}

/** Checks a grant: long enough, at least one scope. Throws naming its origin. */
function validateGrant(grant: TokenGrant): TokenGrant {
  if (grant.token.length < MIN_TOKEN_LENGTH) {
    throw new Error(`${grant.origin}: token must be at least ${MIN_TOKEN_LENGTH} characters`);
  }
  if (/\s/.test(grant.token)) throw new Error(`${grant.origin}: ${TOKEN_WHITESPACE_RULE}`);
  if (grant.scopes.length === 0) throw new Error(`${grant.origin}: token has no scopes`);
  return grant;
}

const NAME_ITEM = "name:";

/**
 * Parses KEYMESH_AUTH_TOKENS: `token=scope,scope;token=scope`, each entry optionally naming its token
 * with a `name:<name>` item after the `=`, e.g.
 * `t0ken-for-ops-1234=admin,use:*,name:ops;t0ken-for-api-5678=use:openai`. Empty or unset: no
 * tokens. An entry without a name is named by its position (`KEYMESH_AUTH_TOKENS[2]`).
 */
export function parseAuthTokensEnv(value: string | undefined): TokenGrant[] {
  if (!value || value.trim() === "") return [];
  return value
    .split(";")
    .map((entry) => entry.trim())
    .filter((entry) => entry !== "")
    .map((entry, index) => {
      const origin = `KEYMESH_AUTH_TOKENS entry ${index + 1}`;
      const eq = entry.lastIndexOf("=");
      if (eq <= 0) throw new Error(`${origin}: expected token=scope[,scope...][,name:<name>]`);
      const items = entry
        .slice(eq + 1)
        .split(",")
        .map((s) => s.trim())
        .filter((s) => s !== "");
      const names = items.filter((s) => s.startsWith(NAME_ITEM)).map((s) => s.slice(NAME_ITEM.length).trim());
      if (names.length > 1) throw new Error(`${origin}: more than one name:<name>`);
      const name = names[0] ?? `KEYMESH_AUTH_TOKENS[${index + 1}]`;
      if (names[0] !== undefined && !TOKEN_NAME.test(name)) throw new Error(`${origin}: name "${name}" ${TOKEN_NAME_RULE}`);
      const scopes = items.filter((s) => !s.startsWith(NAME_ITEM)).map((s) => parseScope(s, origin));
      return validateGrant({ token: entry.slice(0, eq).trim(), name, scopes, origin });
    });
}

function scopeAllowsPool(scopes: readonly Scope[], pool: string | undefined): boolean {
  if (scopes.includes("use:*")) return true;
  // Without a known pool the call cannot touch any pool's state; any use scope may make it.
  if (pool === undefined) return scopes.some((s) => s.startsWith("use:"));
  return scopes.includes(`use:${pool}`);
}

function bearerToken(header: string | undefined): string | undefined {
  const match = header ? /^\s*Bearer\s+(\S+)\s*$/i.exec(header) : null;
  return match?.[1];
}

export function createAuthorizer(grants: readonly TokenGrant[]): Authorizer {
  const seen = new Set<string>();
  const names = new Map<string, string>();
  const entries = grants.map((grant) => {
    const hex = digest(grant.token).toString("hex");
    if (seen.has(hex)) throw new Error(`${grant.origin}: the same token is configured twice`);
    seen.add(hex);
    const other = names.get(grant.name);
    if (other !== undefined) throw new Error(`${grant.origin}: the name "${grant.name}" is also given to ${other}`);
    names.set(grant.name, grant.origin);
    return { digest: digest(grant.token), name: grant.name, scopes: [...grant.scopes] };
  });
  const enabled = entries.length > 0;

  // Every configured digest is compared, so timing does not reveal which entry (if any) matched.
  const lookup = (token: string): { name: string; scopes: Scope[] } | undefined => {
    const presented = digest(token);
    let found: { name: string; scopes: Scope[] } | undefined;
    for (const entry of entries) {
      if (timingSafeEqual(entry.digest, presented)) found = entry;
    }
    return found;
  };

  return {
    enabled,
    authorize(method, authorizationHeader, requestPool) {
      if (!enabled || OPEN_SERVICES.has(method.service)) return ALLOW;
      const token = bearerToken(authorizationHeader);
      if (token === undefined) {
        return { ok: false, code: "unauthenticated", message: "missing bearer token (authorization: Bearer <token>)" };
      }
      const found = lookup(token);
      if (!found) return { ok: false, code: "unauthenticated", message: "unknown bearer token" };
      const { name, scopes } = found;
      const called = `${method.service}/${method.name}`;
      if (method.service === KEY_POOL_SERVICE) {
        if (scopeAllowsPool(scopes, requestPool)) return { ok: true, name };
        const needed = requestPool === undefined ? "use:<pool>" : `use:${requestPool}`;
        return { ok: false, code: "permission_denied", message: `${called} needs scope ${needed}` };
      }
      // The admin service, and any service added later, needs admin until it says otherwise.
      if (scopes.includes("admin")) return { ok: true, name };
      return { ok: false, code: "permission_denied", message: `${called} needs scope admin` };
    },
  };
}

/** True for 127.0.0.0/8, ::1 and localhost. */
export function isLoopbackHost(host: string): boolean {
  const h = host.trim().toLowerCase().replace(/^\[(.*)\]$/, "$1");
  if (h === "localhost" || h === "::1" || h === "0:0:0:0:0:0:0:1") return true;
  const v4 = h.startsWith("::ffff:") ? h.slice(7) : h;
  const octets = v4.split(".");
  return (
    octets.length === 4 &&
    octets[0] === "127" &&
    octets.every((o) => /^\d{1,3}$/.test(o) && Number(o) <= 255)
  );
}

/** Refuses to serve without auth on anything but loopback. */
export function checkAuthBinding(host: string, authEnabled: boolean): void {
  if (authEnabled || isLoopbackHost(host)) return;
  throw new Error(
    `refusing to listen on ${host} without auth: set KEYMESH_AUTH_TOKENS (or auth.tokens in KEYMESH_CONFIG), ` +
      `or bind KEYMESH_HOST to 127.0.0.1`,
  );
}

export interface TlsFiles {
  cert: Buffer;
  key: Buffer;
}

/** Reads KEYMESH_TLS_CERT / KEYMESH_TLS_KEY; undefined when neither is set (plaintext). */
export function loadTlsFiles(env: NodeJS.ProcessEnv = process.env): TlsFiles | undefined {
  const certPath = env.KEYMESH_TLS_CERT?.trim() || undefined;
  const keyPath = env.KEYMESH_TLS_KEY?.trim() || undefined;
  if (!certPath && !keyPath) return undefined;
  if (!certPath || !keyPath) {
    throw new Error("TLS needs both KEYMESH_TLS_CERT and KEYMESH_TLS_KEY (only one is set)");
  }
  const read = (variable: string, path: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (err) {
      const reason = (err as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (err as Error).message;
      throw new Error(`${variable}: cannot read ${path}: ${reason}`);
    }
  };
  return { cert: read("KEYMESH_TLS_CERT", certPath), key: read("KEYMESH_TLS_KEY", keyPath) };
}
