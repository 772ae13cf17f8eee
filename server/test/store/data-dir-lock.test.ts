import { afterEach, describe, expect, it } from "vitest";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { DataDirInUseError, LOCK_FILE, lockDataDir } from "../../src/store/data-dir-lock.js";

const dirs: string[] = [];
const children: ChildProcess[] = [];

async function dataDir(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "keymesh-lock-"));
  dirs.push(dir);
  return dir;
}

/** A live process that is not this one, to stand for another server. */
async function otherProcess(): Promise<ChildProcess> {
  const child = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { stdio: "ignore" });
  children.push(child);
  await new Promise((resolve) => child.once("spawn", resolve));
  return child;
}

afterEach(async () => {
  for (const c of children.splice(0)) c.kill("SIGKILL");
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

describe("lockDataDir", () => {
  it("writes this process's pid with owner-only permissions and removes it on release", async () => {
    const dir = await dataDir();
    const release = await lockDataDir(dir);
    const file = path.join(dir, LOCK_FILE);
    expect((await readFile(file, "utf8")).trim()).toBe(String(process.pid));
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    await release();
    await expect(stat(file)).rejects.toMatchObject({ code: "ENOENT" });
  });

  it("refuses a directory held by another live process, naming its pid", async () => {
    const dir = await dataDir();
    const other = await otherProcess();
    await writeFile(path.join(dir, LOCK_FILE), `${other.pid}\n`);
    const err = await lockDataDir(dir).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DataDirInUseError);
    expect((err as Error).message).toBe(
      `data directory ${dir} is in use by another KeyMesh server (pid ${other.pid}); stop it or choose another KEYMESH_DATA_DIR`,
    );
    expect((await readFile(path.join(dir, LOCK_FILE), "utf8")).trim()).toBe(String(other.pid));
  });

  it("takes over the file of a process that died without releasing it", async () => {
    const dir = await dataDir();
    const other = await otherProcess();
    await writeFile(path.join(dir, LOCK_FILE), `${other.pid}\n`);
    other.kill("SIGKILL");
    await new Promise((resolve) => other.once("exit", resolve));
    const release = await lockDataDir(dir);
    expect((await readFile(path.join(dir, LOCK_FILE), "utf8")).trim()).toBe(String(process.pid));
    await release();
  });

  it("replaces an empty file (a crash between creating and writing it)", async () => {
    const dir = await dataDir();
    await writeFile(path.join(dir, LOCK_FILE), "");
    const release = await lockDataDir(dir);
    expect((await readFile(path.join(dir, LOCK_FILE), "utf8")).trim()).toBe(String(process.pid));
    await release();
  });

  it("release leaves a file that another server holds by then", async () => {
    const dir = await dataDir();
    const release = await lockDataDir(dir);
    const other = await otherProcess();
    await writeFile(path.join(dir, LOCK_FILE), `${other.pid}\n`);
    await release();
    expect((await readFile(path.join(dir, LOCK_FILE), "utf8")).trim()).toBe(String(other.pid));
  });
});
