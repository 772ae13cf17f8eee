// Pages for the admin list calls (AIP-158): items in a fixed order, and an opaque token that names the
// last item returned and the request it belongs to, so the next page starts after that item even when
// items were added or removed in between.
import { invalidArgument } from "../domain/errors.js";

export const DEFAULT_PAGE_SIZE = 1000;
export const MAX_PAGE_SIZE = 1000;

export interface PageRequest {
  pageSize: number;
  pageToken: string;
}

/**
 * The page of `items` after the token's position. `position` gives each item's place in the order as a
 * tuple compared element by element; `scope` names what the request filters on, as a token is only
 * valid for the request that produced it.
 */
export function page<T>(items: T[], position: (item: T) => string[], req: PageRequest, scope: string[]): { items: T[]; nextPageToken: string } {
  if (req.pageSize < 0) throw invalidArgument("page_size", "must not be negative");
  const size = req.pageSize === 0 ? DEFAULT_PAGE_SIZE : Math.min(req.pageSize, MAX_PAGE_SIZE);
  const after = req.pageToken === "" ? undefined : readToken(req.pageToken, scope);
  const keyed = items.map((item) => ({ item, at: position(item) }));
  keyed.sort((a, b) => compare(a.at, b.at));
  const start = after === undefined ? 0 : firstAfter(keyed, after);
  const slice = keyed.slice(start, start + size);
  const more = start + size < keyed.length;
  return { items: slice.map((k) => k.item), nextPageToken: more ? writeToken(scope, slice[slice.length - 1]!.at) : "" };
}

function compare(a: string[], b: string[]): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    if (a[i] !== b[i]) return a[i]! < b[i]! ? -1 : 1;
  }
  return a.length - b.length;
}

function firstAfter(keyed: Array<{ at: string[] }>, after: string[]): number {
  let lo = 0;
  let hi = keyed.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compare(keyed[mid]!.at, after) <= 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

export function writeToken(scope: string[], at: string[]): string {
  return Buffer.from(JSON.stringify({ s: scope, a: at })).toString("base64url");
}

export function readToken(token: string, scope: string[]): string[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    throw invalidArgument("page_token", "is not a token this server issued");
  }
  const { s, a } = (parsed ?? {}) as { s?: unknown; a?: unknown };
  const strings = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === "string");
  if (!strings(s) || !strings(a)) throw invalidArgument("page_token", "is not a token this server issued");
  if (compare(s, scope) !== 0) throw invalidArgument("page_token", "belongs to a request with other filters");
  return a;
}

/** A number as a string that sorts like the number (non-negative integers below 10^16). */
export const sortable = (n: number): string => String(n).padStart(16, "0");
