import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  KEY_POOL_SERVICE,
  POOL_ADMIN_SERVICE,
  checkAuthBinding,
  createAuthorizer,
  isLoopbackHost,
  loadTlsFiles,
  parseAuthTokensEnv,
} from "../../src/ops/auth.js";

const ADMIN = "admin-token-0123456789";
const OPENAI_USER = "openai-user-token-0123";
const ANY_USER = "any-pool-user-token-01";

const authorizer = createAuthorizer(
  parseAuthTokensEnv(`${ADMIN}=admin;${OPENAI_USER}=use:openai;${ANY_USER}=use:*`),
);
const acquire = { service: KEY_POOL_SERVICE, name: "Acquire" };
const release = { service: KEY_POOL_SERVICE, name: "Release" };
const listPools = { service: POOL_ADMIN_SERVICE, name: "ListPools" };
const bearer = (token: string) => `Bearer ${token}`;

describe("authorizer", () => {
  it.each([
    ["no header", acquire, undefined, "openai", "unauthenticated"],
    ["not a bearer header", acquire, `Basic ${OPENAI_USER}`, "openai", "unauthenticated"],
    ["unknown token", acquire, bearer("not-a-configured-token-000"), "openai", "unauthenticated"],
    ["use:openai on another pool", acquire, bearer(OPENAI_USER), "anthropic", "permission_denied"],
    ["use:openai on the admin service", listPools, bearer(OPENAI_USER), undefined, "permission_denied"],
    ["admin on the pool service", acquire, bearer(ADMIN), "openai", "permission_denied"],
    ["no header on the admin service", listPools, undefined, undefined, "unauthenticated"],
  ] as const)("%s → %s", (_name, method, header, pool, code) => {
    const decision = authorizer.authorize(method, header, pool);
    expect(decision).toMatchObject({ ok: false, code });
  });

  it.each([
    ["use:openai on its pool", acquire, bearer(OPENAI_USER), "openai", 2],
    ["use:openai on a lease of its pool", release, bearer(OPENAI_USER), "openai", 2],
    ["use:* on any pool", acquire, bearer(ANY_USER), "anthropic", 3],
    ["admin on the admin service", listPools, bearer(ADMIN), undefined, 1],
    ["lower-case bearer scheme", acquire, `bearer ${OPENAI_USER}`, "openai", 2],
    ["a use scope when the lease id names no pool", release, bearer(OPENAI_USER), undefined, 2],
  ] as const)("%s → ok, named by its entry", (_name, method, header, pool, entry) => {
    expect(authorizer.authorize(method, header, pool)).toEqual({ ok: true, name: `KEYMESH_AUTH_TOKENS[${entry}]` });
  });

  it("refuses two tokens of the same name, naming where both are configured", () => {
    const grant = (token: string, origin: string) => ({ token, name: "ops", scopes: ["admin" as const], origin });
    expect(() => createAuthorizer([grant(ADMIN, "file: auth.tokens[0]"), grant(OPENAI_USER, "file: auth.tokens[1]")])).toThrow(
      'file: auth.tokens[1]: the name "ops" is also given to file: auth.tokens[0]',
    );
  });

  it("keeps health and reflection open without a token", () => {
    expect(authorizer.authorize({ service: "grpc.health.v1.Health", name: "Check" }, undefined, undefined).ok).toBe(true);
    expect(
      authorizer.authorize({ service: "grpc.reflection.v1alpha.ServerReflection", name: "ServerReflectionInfo" }, undefined, undefined).ok,
    ).toBe(true);
  });

  it("requires admin for services it does not know", () => {
    expect(authorizer.authorize({ service: "keymesh.v2.Other", name: "X" }, bearer(ANY_USER), "openai")).toMatchObject({
      ok: false,
      code: "permission_denied",
    });
  });

  it("allows everything when no token is configured", () => {
    const open = createAuthorizer([]);
    expect(open.enabled).toBe(false);
    expect(open.authorize(listPools, undefined, undefined)).toEqual({ ok: true });
  });

  it("never puts the presented token in a message", () => {
    const decision = authorizer.authorize(acquire, bearer(OPENAI_USER), "anthropic");
    expect(JSON.stringify(decision)).not.toContain(OPENAI_USER);
    expect(decision).toMatchObject({ message: "keymesh.v1.KeyPoolService/Acquire needs scope use:anthropic" });
  });
});

describe("KEYMESH_AUTH_TOKENS", () => {
  it("parses tokens with several scopes and keeps '=' inside tokens", () => {
    const grants = parseAuthTokensEnv(" tok-with=padding==0123=admin,use:* ; other-token-0123456=use:openai ");
    expect(grants.map((g) => [g.token, g.scopes])).toEqual([
      ["tok-with=padding==0123", ["admin", "use:*"]],
      ["other-token-0123456", ["use:openai"]],
    ]);
  });

  it("names an entry by its name: item, and an entry without one by its position", () => {
    const grants = parseAuthTokensEnv(`${ADMIN}=admin, name:ops team ;${OPENAI_USER}=use:openai;${ANY_USER}=name:alice@example.com,use:*`);
    expect(grants.map((g) => [g.name, g.scopes])).toEqual([
      ["ops team", ["admin"]],
      ["KEYMESH_AUTH_TOKENS[2]", ["use:openai"]],
      ["alice@example.com", ["use:*"]],
    ]);
    expect(createAuthorizer(grants).authorize(listPools, bearer(ADMIN), undefined)).toEqual({ ok: true, name: "ops team" });
  });

  it("treats unset and empty as no tokens", () => {
    expect(parseAuthTokensEnv(undefined)).toEqual([]);
    expect(parseAuthTokensEnv("  ")).toEqual([]);
  });

  it.each([
    ["no scopes", "long-enough-token-123=", /entry 1: token has no scopes/],
    ["bad scope", "long-enough-token-123=root", /entry 1: scope "root" is not one of/],
    ["bad pool", "long-enough-token-123=use:Bad Pool", /scope "use:Bad Pool"/],
    ["short token", "short=admin", /entry 1: token must be at least 16 characters/],
    ["no equals", "long-enough-token-123", /entry 1: expected token=scope\[,scope...\]\[,name:<name>\]/],
    ["a name and no scopes", "long-enough-token-123=name:ops", /entry 1: token has no scopes/],
    ["an empty name", "long-enough-token-123=admin,name:", /entry 1: name "" must be 1-63 characters/],
    ["a name with a character names may not have", "long-enough-token-123=admin,name:ops/team", /entry 1: name "ops\/team" must be 1-63 characters/],
    ["two names", "long-enough-token-123=admin,name:ops,name:team", /entry 1: more than one name:<name>/],
    ["whitespace inside the token", "ops team long-enough-token-123=admin", /entry 1: token must not contain whitespace/],
  ])("rejects %s without echoing the token", (_name, value, message) => {
    let error: Error | undefined;
    try {
      parseAuthTokensEnv(value);
    } catch (err) {
      error = err as Error;
    }
    expect(error?.message).toMatch(message);
    expect(error?.message).not.toContain("long-enough-token-123");
  });

  it("rejects the same name twice, naming both entries", () => {
    expect(() => createAuthorizer(parseAuthTokensEnv("first-token-0123456789=admin,name:ops;other-token-0123456789=use:*,name:ops"))).toThrow(
      'KEYMESH_AUTH_TOKENS entry 2: the name "ops" is also given to KEYMESH_AUTH_TOKENS entry 1',
    );
  });

  it("rejects the same token twice", () => {
    expect(() => createAuthorizer(parseAuthTokensEnv("same-token-0123456789=admin;same-token-0123456789=use:*"))).toThrow(
      /entry 2: the same token is configured twice/,
    );
  });
});

describe("binding check", () => {
  it.each(["127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]", "::ffff:127.0.0.1"])("%s is loopback", (host) => {
    expect(isLoopbackHost(host)).toBe(true);
    expect(() => checkAuthBinding(host, false)).not.toThrow();
  });

  it.each(["0.0.0.0", "::", "10.0.0.5", "128.0.0.1", "127.0.0.256", "example.com"])("%s is not loopback", (host) => {
    expect(isLoopbackHost(host)).toBe(false);
    expect(() => checkAuthBinding(host, false)).toThrow(/refusing to listen on .* without auth: set KEYMESH_AUTH_TOKENS/);
    expect(() => checkAuthBinding(host, true)).not.toThrow();
  });
});

describe("TLS files", () => {
  const dir = mkdtempSync(join(tmpdir(), "keymesh-tls-"));
  writeFileSync(join(dir, "cert.pem"), "CERT");
  writeFileSync(join(dir, "key.pem"), "KEY");

  it("is plaintext when neither variable is set", () => {
    expect(loadTlsFiles({})).toBeUndefined();
  });

  it("reads both files", () => {
    const tls = loadTlsFiles({ KEYMESH_TLS_CERT: join(dir, "cert.pem"), KEYMESH_TLS_KEY: join(dir, "key.pem") });
    expect(tls?.cert.toString()).toBe("CERT");
    expect(tls?.key.toString()).toBe("KEY");
  });

  it("names the missing half and the missing file", () => {
    expect(() => loadTlsFiles({ KEYMESH_TLS_CERT: join(dir, "cert.pem") })).toThrow(/needs both KEYMESH_TLS_CERT and KEYMESH_TLS_KEY/);
    expect(() =>
      loadTlsFiles({ KEYMESH_TLS_CERT: join(dir, "cert.pem"), KEYMESH_TLS_KEY: join(dir, "absent.pem") }),
    ).toThrow(`KEYMESH_TLS_KEY: cannot read ${join(dir, "absent.pem")}: no such file`);
  });
});
