// Every relative link in the README, the bench README and docs/ leads to a file of this repository, and a
// link into a Markdown page to one of its headings: the docs cannot point outside the repository or at
// nothing. Links with a scheme (https:, mailto:) are not followed. Paths written as code (`bench/run.ts`)
// are held to the same rule, so a moved file cannot leave a page naming its old place.
import { describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";

const ROOT = path.resolve(import.meta.dirname, "../..");


function markdownUnder(dir: string): string[] {
  return readdirSync(path.join(ROOT, dir), { withFileTypes: true }).flatMap((e) => {
    const rel = path.posix.join(dir, e.name);
    if (e.isDirectory()) return markdownUnder(rel);
    return e.name.endsWith(".md") ? [rel] : [];
  });
}

const PAGES = ["README.md", "bench/README.md", ...markdownUnder("docs")];

const FENCED = /^(```|~~~)[^\n]*\n[^]*?^\1[^\n]*$/gm;
const CODE_SPAN = /(`+)([^]*?)\1/g;

/** The page without fenced code blocks and inline code, where brackets and parentheses are not links. */
function prose(text: string): string {
  return text.replace(FENCED, "").replace(CODE_SPAN, "");
}

/** The repository's top-level entries: a code span starting with one of them (and a "/") names a path. */
const TOP_LEVEL = new Set(readdirSync(ROOT).filter((name) => ![".git", ".tmp", "node_modules"].includes(name)));

/**
 * Paths named in inline code outside code blocks: those starting with a top-level entry of the repository
 * (`server/src/main.ts`), and those climbing out of it (`../shared/DESIGN.md`). Patterns and placeholders
 * (`docs/migration-*.md`, `server/test/…`) are not paths.
 */
function codePaths(text: string): string[] {
  const out: string[] = [];
  for (const m of text.replace(FENCED, "").matchAll(CODE_SPAN)) {
    const span = m[2]!.trim();
    if (!span.includes("/") || /[\s*<>…{}$]/.test(span)) continue;
    if (span.startsWith("../") || TOP_LEVEL.has(span.split("/")[0]!)) out.push(span);
  }
  return out;
}

const ignored = (rel: string): boolean => {
  try {
    execFileSync("git", ["check-ignore", "-q", rel], { cwd: ROOT });
    return true;
  } catch {
    return false;
  }
};

/** Link targets: inline links and images, reference definitions, and HTML href/src attributes. */
function links(text: string): string[] {
  const body = prose(text);
  const out: string[] = [];
  for (const m of body.matchAll(/!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) out.push(m[1]!);
  for (const m of body.matchAll(/^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)/gm)) out.push(m[1]!);
  for (const m of body.matchAll(/\b(?:href|src)="([^"]+)"/g)) out.push(m[1]!);
  return out;
}

/** Anchors of a page's headings as GitHub makes them (github-slugger), plus explicit id/name attributes. */
function anchors(text: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const m of text.replace(FENCED, "").matchAll(/^ {0,3}#{1,6}[ \t]+(.*?)[ \t#]*$/gm)) {
    const rendered = m[1]!.replace(/`([^`]*)`/g, "$1").replace(/!?\[([^\]]*)\]\([^)]*\)/g, "$1");
    const base = rendered.toLowerCase().replace(/[^\p{L}\p{M}\p{N}\p{Pc}\- ]/gu, "").replace(/ /g, "-");
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  for (const m of text.matchAll(/<a\s+(?:id|name)="([^"]+)"/g)) out.add(m[1]!);
  return out;
}

interface Problem {
  page: string;
  link: string;
  problem: string;
}

/** The broken links of `text`, read as the page at `page` (a path from the repository's root). */
function check(page: string, text: string): Problem[] {
  const problems: Problem[] = [];
  for (const link of links(text)) {
    if (/^[a-z][a-z0-9+.-]*:/i.test(link)) continue;
    const hash = link.indexOf("#");
    const target = decodeURI(hash < 0 ? link : link.slice(0, hash));
    const fragment = hash < 0 ? undefined : decodeURIComponent(link.slice(hash + 1));
    const fail = (problem: string) => problems.push({ page, link, problem });
    if (target.startsWith("/")) {
      fail("absolute path: write it relative to the page");
      continue;
    }
    if (target === "") {
      if (fragment !== undefined && !anchors(text).has(fragment)) fail(`no heading #${fragment} on this page`);
      continue;
    }
    const resolved = path.posix.normalize(path.posix.join(path.posix.dirname(page), target));
    if (resolved === ".." || resolved.startsWith("../")) {
      fail("points outside the repository");
      continue;
    }
    if (!existsSync(path.join(ROOT, resolved))) {
      fail(`${resolved} does not exist`);
      continue;
    }
    if (fragment === undefined || !resolved.endsWith(".md") || statSync(path.join(ROOT, resolved)).isDirectory()) continue;
    if (!anchors(readFileSync(path.join(ROOT, resolved), "utf8")).has(fragment)) fail(`${resolved} has no heading #${fragment}`);
  }
  for (const name of codePaths(text)) {
    // Repository paths in code are written from the root; only "../" climbs, from the page.
    const resolved = name.startsWith("../") ? path.posix.normalize(path.posix.join(path.posix.dirname(page), name)) : path.posix.normalize(name);
    if (resolved === ".." || resolved.startsWith("../")) problems.push({ page, link: `\`${name}\``, problem: "points outside the repository" });
    else if (!existsSync(path.join(ROOT, resolved)) && !ignored(resolved)) {
      problems.push({ page, link: `\`${name}\``, problem: `${resolved} does not exist` });
    }
  }
  return problems;
}

describe("documentation links", () => {
  it("finds the pages and their links", () => {
    expect(PAGES).toEqual(expect.arrayContaining(["README.md", "docs/README.md", "docs/api.md", "docs/operations.md"]));
    expect(links(readFileSync(path.join(ROOT, "README.md"), "utf8"))).toContain("docs/operations.md");
  });

  it.each(PAGES)("%s: every relative link resolves inside the repository", (page) => {
    expect(check(page, readFileSync(path.join(ROOT, page), "utf8"))).toEqual([]);
  });
});

describe("the link checker", () => {
  it("reports a link outside the repository, a missing file and a missing heading, and skips code and URLs", () => {
    const sample = [
      "[design](../../shared/DESIGN.md) [gone](nope.md) [heading](operations.md#no-such-heading) [root](/README.md)",
      "# Sample",
      "`../../shared/DESIGN.md` `server/src/nope.ts` `server/src/main.ts` `docs/migration-*.md` `bench/results/x.json.tmp`",
      "[ok](operations.md#the-config-file) [here](#sample) [nowhere](#nothing) [web](https://example.com/x.md) `[code](nope.md)`",
      "```",
      "[fenced](nope.md)",
      "```",
    ].join("\n");
    expect(check("docs/sample.md", sample).map(({ link, problem }) => `${link}: ${problem}`)).toEqual([
      "../../shared/DESIGN.md: points outside the repository",
      "nope.md: docs/nope.md does not exist",
      "operations.md#no-such-heading: docs/operations.md has no heading #no-such-heading",
      "/README.md: absolute path: write it relative to the page",
      "#nothing: no heading #nothing on this page",
      "`../../shared/DESIGN.md`: points outside the repository",
      "`server/src/nope.ts`: server/src/nope.ts does not exist",
    ]);
  });

  it("derives anchors as GitHub does", () => {
    expect([...anchors("# API reference\n## Types in pool.proto\n### `KeepAlive`\n## Types in pool.proto\n")]).toEqual([
      "api-reference",
      "types-in-poolproto",
      "keepalive",
      "types-in-poolproto-1",
    ]);
  });
});
