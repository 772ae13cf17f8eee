// Secrets at rest: AES-256-GCM under a 32-byte master key from KEYMESH_MASTER_KEY, KEYMESH_MASTER_KEY_FILE,
// or (embedded database only) a key file the server creates once in its data directory.
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from "node:crypto";
import { chmod, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import type { StoreLog } from "./log.js";

const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const KEY_BYTES = 32;

export interface Sealed {
  /** Ciphertext followed by the GCM tag. */
  ciphertext: Buffer;
  nonce: Buffer;
}

export class SecretBox {
  readonly #key: Buffer;

  constructor(masterKey: Buffer) {
    if (masterKey.length !== KEY_BYTES) throw new Error(`master key must be ${KEY_BYTES} bytes, got ${masterKey.length}`);
    this.#key = Buffer.from(masterKey);
  }

  /** Encrypts `plaintext`, binding it to `context` (e.g. the key's pool and id) so sealed values cannot be swapped. */
  seal(plaintext: string, context: string): Sealed {
    const nonce = randomBytes(NONCE_BYTES);
    const cipher = createCipheriv("aes-256-gcm", this.#key, nonce);
    cipher.setAAD(Buffer.from(context, "utf8"));
    const ciphertext = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final(), cipher.getAuthTag()]);
    return { ciphertext, nonce };
  }

  /** A 32-byte key for another purpose (e.g. signing lease ids), derived from the master key with HKDF-SHA256. */
  deriveKey(purpose: string): Buffer {
    return Buffer.from(hkdfSync("sha256", this.#key, Buffer.alloc(0), purpose, KEY_BYTES));
  }

  /** Decrypts a sealed value; throws when the key, the context or the bytes differ from sealing. */
  open(sealed: Sealed, context: string): string {
    const body = sealed.ciphertext.subarray(0, sealed.ciphertext.length - TAG_BYTES);
    const tag = sealed.ciphertext.subarray(sealed.ciphertext.length - TAG_BYTES);
    const decipher = createDecipheriv("aes-256-gcm", this.#key, sealed.nonce);
    decipher.setAAD(Buffer.from(context, "utf8"));
    decipher.setAuthTag(tag);
    return Buffer.concat([decipher.update(body), decipher.final()]).toString("utf8");
  }
}

/** A 32-byte key written as 64 hex digits or base64 (standard or url-safe); never echoed in errors. */
export function parseMasterKey(text: string, source: string): Buffer {
  const trimmed = text.trim();
  const bytes = /^[0-9a-fA-F]{64}$/.test(trimmed)
    ? Buffer.from(trimmed, "hex")
    : /^[A-Za-z0-9+/_-]+={0,2}$/.test(trimmed)
      ? Buffer.from(trimmed, "base64")
      : Buffer.alloc(0);
  if (bytes.length !== KEY_BYTES) {
    throw new Error(`${source}: master key must be 32 bytes written as 64 hex digits or base64 (openssl rand -base64 32)`);
  }
  return bytes;
}

export interface LoadSecretBoxOptions {
  env: Record<string, string | undefined>;
  dataDir: string;
  /** Whether the database is the embedded one: only then may a key file be created on first start. */
  embedded: boolean;
  log: StoreLog;
}

const MASTER_KEY_FILE_NAME = "master.key";

/** The master key from the environment, or from (created once) dataDir/master.key for the embedded database. */
export async function loadSecretBox(options: LoadSecretBoxOptions): Promise<SecretBox> {
  const { env, dataDir, embedded, log } = options;
  const inline = env.KEYMESH_MASTER_KEY;
  const file = env.KEYMESH_MASTER_KEY_FILE;
  if (inline && file) throw new Error("set only one of KEYMESH_MASTER_KEY and KEYMESH_MASTER_KEY_FILE");
  if (inline) return new SecretBox(parseMasterKey(inline, "KEYMESH_MASTER_KEY"));
  if (file) {
    const text = await readKeyFile(file);
    if (text === undefined) throw new Error(`KEYMESH_MASTER_KEY_FILE: ${file} does not exist`);
    return new SecretBox(parseMasterKey(text, `KEYMESH_MASTER_KEY_FILE (${file})`));
  }
  if (!embedded) {
    throw new Error(
      "KEYMESH_MASTER_KEY or KEYMESH_MASTER_KEY_FILE is required with DATABASE_URL: " +
        "key secrets are encrypted at rest under it (create one with: openssl rand -base64 32)",
    );
  }
  const keyFile = path.join(dataDir, MASTER_KEY_FILE_NAME);
  const existing = await readKeyFile(keyFile);
  if (existing !== undefined) return new SecretBox(parseMasterKey(existing, keyFile));
  const key = randomBytes(KEY_BYTES);
  // "wx": never overwrite a key file another process created meanwhile; secrets sealed under it would be lost.
  await writeFile(keyFile, `${key.toString("base64")}\n`, { mode: 0o600, flag: "wx" }).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== "EEXIST") throw err;
  });
  await chmod(keyFile, 0o600);
  const stored = parseMasterKey((await readKeyFile(keyFile)) ?? "", keyFile);
  if (stored.equals(key)) {
    log.info({ path: keyFile }, "created master key file (mode 0600); back it up: the stored key secrets cannot be read without it");
  }
  return new SecretBox(stored);
}

/** The file's text, or undefined when it does not exist. */
async function readKeyFile(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new Error(`cannot read master key file ${file}: ${(err as NodeJS.ErrnoException).code ?? "error"}`);
  }
}
