// One server per embedded data directory. PGlite opens a directory another process is using without a
// word, and two servers writing the same files corrupt them, so the directory is claimed with a pid file
// created exclusively. A file whose process is gone (kill -9, power loss) is stale and is replaced, as
// Postgres does with postmaster.pid.
import { open, readFile, unlink } from "node:fs/promises";
import path from "node:path";

export class DataDirInUseError extends Error {
  constructor(
    readonly dataDir: string,
    readonly pid: number,
  ) {
    super(`data directory ${dataDir} is in use by another KeyMesh server (pid ${pid}); stop it or choose another KEYMESH_DATA_DIR`);
    this.name = "DataDirInUseError";
  }
}

export const LOCK_FILE = "keymesh.pid";

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: the process exists but belongs to another user.
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

async function holder(file: string): Promise<number | undefined> {
  const text = await readFile(file, "utf8").catch(() => "");
  const pid = Number(text.trim());
  return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
}

async function create(file: string): Promise<boolean> {
  let handle;
  try {
    handle = await open(file, "wx", 0o600);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw e;
  }
  try {
    await handle.writeFile(`${process.pid}\n`);
  } finally {
    await handle.close();
  }
  return true;
}

/** Claims `dataDir` for this process; the returned function gives it back. Throws DataDirInUseError while another live process holds it. */
export async function lockDataDir(dataDir: string): Promise<() => Promise<void>> {
  const file = path.join(dataDir, LOCK_FILE);
  const release = async () => {
    if ((await holder(file)) === process.pid) await unlink(file).catch(() => undefined);
  };
  for (let attempt = 0; attempt < 3; attempt++) {
    if (await create(file)) return release;
    const pid = await holder(file);
    // Our own pid in the file is an earlier life of this process id (a container restarted as pid 1).
    if (pid !== undefined && pid !== process.pid && alive(pid)) throw new DataDirInUseError(dataDir, pid);
    if (pid === undefined && attempt === 0) {
      // A server that is starting may not have written its pid yet.
      await new Promise((resolve) => setTimeout(resolve, 50));
      continue;
    }
    await unlink(file).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== "ENOENT") throw e;
    });
  }
  throw new Error(`cannot claim data directory ${dataDir}: ${LOCK_FILE} keeps reappearing`);
}
