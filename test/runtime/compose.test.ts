// What the image and docker-compose.yml promise, read as code (no Docker engine runs here): the server
// is node itself, so the stop signal reaches it; the stop fits in the grace before SIGKILL; secrets are
// files, not environment variables; the inline config is a valid KeyMesh config naming those files.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { parseConfig } from "../../server/src/ops/config.js";
import { parseDuration } from "../../server/src/ops/duration.js";
import { STOP_BOUNDS } from "../../server/src/ops/stop.js";

const root = new URL("../../", import.meta.url);
const dockerfile = readFileSync(new URL("Dockerfile", root), "utf8");
const compose = parse(readFileSync(new URL("docker-compose.yml", root), "utf8"));
const keymesh = compose.services.keymesh;

describe("the image and the compose file", () => {
  it("run the compiled server as node itself, in exec form, with no npm or shell in between", () => {
    expect(dockerfile).toMatch(/^CMD \["node", "server\/dist\/main\.js"\]$/m);
    expect(dockerfile).not.toMatch(/^ENTRYPOINT/m);
    expect(keymesh.command).toBeUndefined();
    expect(keymesh.entrypoint).toBeUndefined();
    expect(keymesh.init).toBe(true);
  });

  it("give the stop more time than its bound before SIGKILL", () => {
    expect(dockerfile).not.toMatch(/^STOPSIGNAL (?!SIGTERM)/m);
    expect(parseDuration(keymesh.stop_grace_period)).toBeGreaterThan(STOP_BOUNDS.totalMs);
  });

  it("keep secrets in files: no token or provider key in the environment", () => {
    const env = Object.keys(keymesh.environment);
    expect(env.filter((name) => /TOKEN|API_KEY|SECRET/.test(name))).toEqual([]);
    expect(keymesh.environment.KEYMESH_MASTER_KEY_FILE).toBe("/run/secrets/keymesh_master_key");
  });

  it("run two replicas on the one database: same master key, tokens and config, each its own advertised address and ports", () => {
    const second = compose.services["keymesh-2"];
    const { KEYMESH_ADVERTISE_ADDR: a, ...shared } = keymesh.environment;
    const { KEYMESH_ADVERTISE_ADDR: b, ...sharedToo } = second.environment;
    expect(sharedToo).toEqual(shared);
    expect([a, b]).toEqual(["keymesh:50051", "keymesh-2:50051"]);
    expect(second.secrets).toEqual(keymesh.secrets);
    expect(second.configs).toEqual(keymesh.configs);
    expect(second.init).toBe(true);
    expect(second.stop_grace_period).toBe(keymesh.stop_grace_period);
    const hostPorts = [...keymesh.ports, ...second.ports].map((p: string) => p.split(":").at(-2));
    expect(new Set(hostPorts).size).toBe(4);
  });

  it("carry a valid config whose secret files are the service's secrets", () => {
    const config = parseConfig(compose.configs.keymesh_config.content, "docker-compose.yml", {}, { resolveSecrets: false });
    expect(config.pools.map((p) => p.name)).toEqual(["openai"]);
    expect(config.tokens.map((t) => t.scopes)).toEqual([["admin"], ["use:openai"]]);
    const files = [...compose.configs.keymesh_config.content.matchAll(/(?:secret|token)_file: (\S+)/g)].map((m) => m[1]);
    expect(files.length).toBe(3);
    for (const file of files) {
      const name = file.replace("/run/secrets/", "");
      expect(keymesh.secrets).toContain(name);
      expect(compose.secrets[name].file).toMatch(/^\.\//);
    }
  });
});
