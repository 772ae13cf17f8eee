import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { mask } from "../../src/domain/mask.js";
import { loadSecretBox, parseMasterKey, SecretBox } from "../../src/store/secrets.js";
import { captureLog } from "./helpers.js";

const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "keymesh-secrets-"));
  dirs.push(dir);
  return dir;
}
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

describe("SecretBox", () => {
  const box = new SecretBox(randomBytes(32));

  it("opens what it sealed, with a fresh nonce each time", () => {
    const a = box.seal("sk-abc-123", "key:p\u0000k");
    const b = box.seal("sk-abc-123", "key:p\u0000k");
    expect(a.nonce.equals(b.nonce)).toBe(false);
    expect(a.ciphertext.includes(Buffer.from("sk-abc-123"))).toBe(false);
    expect(box.open(a, "key:p\u0000k")).toBe("sk-abc-123");
  });

  it("refuses another context, another key, or altered bytes", () => {
    const sealed = box.seal("sk-abc-123", "key:p\u0000k1");
    expect(() => box.open(sealed, "key:p\u0000k2")).toThrow();
    expect(() => new SecretBox(randomBytes(32)).open(sealed, "key:p\u0000k1")).toThrow();
    const flipped = Buffer.from(sealed.ciphertext);
    flipped[0] ^= 1;
    expect(() => box.open({ ...sealed, ciphertext: flipped }, "key:p\u0000k1")).toThrow();
  });

  it("derives stable, purpose-specific keys", () => {
    const master = randomBytes(32);
    const one = new SecretBox(master).deriveKey("lease tokens");
    expect(one).toHaveLength(32);
    expect(new SecretBox(master).deriveKey("lease tokens").equals(one)).toBe(true);
    expect(new SecretBox(master).deriveKey("other").equals(one)).toBe(false);
    expect(one.equals(master)).toBe(false);
  });
});

describe("parseMasterKey", () => {
  const key = randomBytes(32);

  it("accepts 64 hex digits and base64 (standard or url-safe) of 32 bytes", () => {
    expect(parseMasterKey(key.toString("hex"), "test").equals(key)).toBe(true);
    expect(parseMasterKey(`${key.toString("base64")}\n`, "test").equals(key)).toBe(true);
    expect(parseMasterKey(key.toString("base64url"), "test").equals(key)).toBe(true);
  });

  it("rejects other lengths without echoing the value", () => {
    const short = randomBytes(16).toString("base64");
    expect(() => parseMasterKey(short, "KEYMESH_MASTER_KEY")).toThrow(/KEYMESH_MASTER_KEY: master key must be 32 bytes/);
    try {
      parseMasterKey(short, "KEYMESH_MASTER_KEY");
    } catch (err) {
      expect((err as Error).message).not.toContain(short);
    }
  });
});

describe("loadSecretBox", () => {
  const key = randomBytes(32);
  const probe = (box: SecretBox) => new SecretBox(key).open(box.seal("x", "c"), "c");

  it("uses KEYMESH_MASTER_KEY", async () => {
    const box = await loadSecretBox({ env: { KEYMESH_MASTER_KEY: key.toString("base64") }, dataDir: await tempDir(), embedded: false, log: captureLog().log });
    expect(probe(box)).toBe("x");
  });

  it("uses KEYMESH_MASTER_KEY_FILE", async () => {
    const file = path.join(await tempDir(), "mk");
    await writeFile(file, key.toString("hex"));
    const box = await loadSecretBox({ env: { KEYMESH_MASTER_KEY_FILE: file }, dataDir: await tempDir(), embedded: false, log: captureLog().log });
    expect(probe(box)).toBe("x");
  });

  it("requires a master key with an external database", async () => {
    await expect(loadSecretBox({ env: {}, dataDir: await tempDir(), embedded: false, log: captureLog().log })).rejects.toThrow(
      /KEYMESH_MASTER_KEY or KEYMESH_MASTER_KEY_FILE is required with DATABASE_URL/,
    );
  });

  it("refuses both settings at once", async () => {
    await expect(
      loadSecretBox({ env: { KEYMESH_MASTER_KEY: key.toString("hex"), KEYMESH_MASTER_KEY_FILE: "/nonexistent" }, dataDir: await tempDir(), embedded: true, log: captureLog().log }),
    ).rejects.toThrow(/only one of/);
  });

  it("creates the embedded key file once, mode 0600, and says so once", async () => {
    const dataDir = await tempDir();
    const { log, lines } = captureLog();
    const first = await loadSecretBox({ env: {}, dataDir, embedded: true, log });
    const file = path.join(dataDir, "master.key");
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect(lines.filter((l) => /created master key file/.test(l.msg ?? ""))).toHaveLength(1);
    const contents = await readFile(file, "utf8");

    const second = await loadSecretBox({ env: {}, dataDir, embedded: true, log });
    expect(lines.filter((l) => /created master key file/.test(l.msg ?? ""))).toHaveLength(1);
    expect(await readFile(file, "utf8")).toBe(contents);
    expect(second.open(first.seal("sk-x", "c"), "c")).toBe("sk-x");
    expect(JSON.stringify(lines)).not.toContain(contents.trim());
  });
});

describe("mask", () => {
  it("keeps a short prefix up to its dash and the last four characters", () => {
    expect(mask("sk-proj-abcdefghijklmnop1234")).toBe("sk-…1234");
    expect(mask("sk-ant-api03-zzzzzzzzzzzzwxyz")).toBe("sk-…wxyz");
    expect(mask("AIzaSyD-abcdefghijklmnopqrs9876")).toBe("AIz…9876");
  });

  it("hides short secrets entirely", () => {
    expect(mask("sk-12345678")).toBe("…");
    expect(mask("")).toBe("…");
  });
});
