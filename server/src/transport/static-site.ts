// The dashboard's static files (dashboard/build, built from dashboard/src by `npm run generate`), read
// once at start and served from memory on the HTTP listener. The Content-Security-Policy lets the page
// load nothing but its own files and talk to nothing but this origin's API.
import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const DASHBOARD_DIR = fileURLToPath(new URL("../../../dashboard/build/", import.meta.url));

const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
};

export const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

export interface StaticFile {
  body: Buffer;
  headers: Record<string, string>;
  etag: string;
}

export interface StaticSite {
  /** The file served at a request path ("/" is index.html); undefined when there is none. */
  get(urlPath: string): StaticFile | undefined;
}

/** Reads every file of `dir` (flat); throws when it has no index.html or a file of unknown type. */
export function loadStaticSite(dir: string = DASHBOARD_DIR): StaticSite {
  const files = new Map<string, StaticFile>();
  for (const name of readdirSync(dir)) {
    const contentType = CONTENT_TYPES[path.extname(name)];
    if (!contentType) throw new Error(`${path.join(dir, name)}: no content type for this kind of file`);
    const body = readFileSync(path.join(dir, name));
    const etag = `"${createHash("sha256").update(body).digest("base64url").slice(0, 22)}"`;
    files.set(`/${name}`, {
      body,
      etag,
      headers: {
        "content-type": contentType,
        "content-security-policy": CONTENT_SECURITY_POLICY,
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "cache-control": "no-cache",
        etag,
      },
    });
  }
  const index = files.get("/index.html");
  if (!index) throw new Error(`${dir}: no index.html (run npm run generate)`);
  files.set("/", index);
  return { get: (urlPath) => files.get(urlPath) };
}
