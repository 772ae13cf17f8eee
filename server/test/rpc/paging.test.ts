import { describe, expect, it } from "vitest";
import { DomainError } from "../../src/domain/errors.js";
import { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, page, sortable } from "../../src/rpc/paging.js";

const ids = (n: number) => Array.from({ length: n }, (_, i) => `k${String(i).padStart(5, "0")}`);
const at = (id: string) => [id];

function all(items: string[], pageSize: number, scope: string[] = ["p"]): string[][] {
  const pages: string[][] = [];
  let pageToken = "";
  do {
    const res = page(items, at, { pageSize, pageToken }, scope);
    pages.push(res.items);
    pageToken = res.nextPageToken;
  } while (pageToken !== "");
  return pages;
}

function domainError(fn: () => unknown): DomainError {
  try {
    fn();
  } catch (e) {
    if (e instanceof DomainError) return e;
    throw e;
  }
  throw new Error("did not throw");
}

describe("page", () => {
  it("returns every item once, in order, in pages of the asked size; the last page has no token", () => {
    const items = ids(25).reverse();
    const pages = all(items, 10);
    expect(pages.map((p) => p.length)).toEqual([10, 10, 5]);
    expect(pages.flat()).toEqual(ids(25));
  });

  it("reads 0 as the default size and caps larger sizes", () => {
    const items = ids(MAX_PAGE_SIZE + 5);
    expect(page(items, at, { pageSize: 0, pageToken: "" }, ["p"]).items).toHaveLength(DEFAULT_PAGE_SIZE);
    expect(page(items, at, { pageSize: 1_000_000, pageToken: "" }, ["p"]).items).toHaveLength(MAX_PAGE_SIZE);
    expect(page(ids(3), at, { pageSize: 0, pageToken: "" }, ["p"])).toEqual({ items: ids(3), nextPageToken: "" });
  });

  it("continues after the last item returned when items come and go between pages", () => {
    const items = ids(10);
    const first = page(items, at, { pageSize: 4, pageToken: "" }, ["p"]);
    expect(first.items).toEqual(ids(4));
    // k00003 (the last one returned) and k00005 are gone; k00001a sorts before the cursor and is not seen.
    const changed = items.filter((id) => id !== "k00003" && id !== "k00005").concat(["k00001a", "k00009z"]);
    const second = page(changed, at, { pageSize: 4, pageToken: first.nextPageToken }, ["p"]);
    expect(second.items).toEqual(["k00004", "k00006", "k00007", "k00008"]);
    expect(page(changed, at, { pageSize: 4, pageToken: second.nextPageToken }, ["p"]).items).toEqual(["k00009", "k00009z"]);
  });

  it("orders by every element of the position in turn", () => {
    const leases = [
      { id: "b", at: 20 },
      { id: "a", at: 20 },
      { id: "z", at: 3 },
      { id: "c", at: 100 },
    ];
    const res = page(leases, (l) => [sortable(l.at), l.id], { pageSize: 10, pageToken: "" }, ["p"]);
    expect(res.items.map((l) => l.id)).toEqual(["z", "a", "b", "c"]);
  });

  it("refuses a negative size, a token it did not issue, and a token from a request with other filters", () => {
    const token = page(ids(5), at, { pageSize: 2, pageToken: "" }, ["p", ""]).nextPageToken;
    const negative = domainError(() => page(ids(5), at, { pageSize: -1, pageToken: "" }, ["p", ""]));
    expect([negative.code, negative.details.field]).toEqual(["invalid_argument", "page_size"]);
    for (const bad of ["not-a-token", Buffer.from('{"s":1}').toString("base64url"), token.slice(0, -3)]) {
      const e = domainError(() => page(ids(5), at, { pageSize: 2, pageToken: bad }, ["p", ""]));
      expect([e.code, e.details.field, e.message]).toEqual(["invalid_argument", "page_token", "page_token: is not a token this server issued"]);
    }
    const other = domainError(() => page(ids(5), at, { pageSize: 2, pageToken: token }, ["p", "k1"]));
    expect(other.message).toBe("page_token: belongs to a request with other filters");
  });
});
