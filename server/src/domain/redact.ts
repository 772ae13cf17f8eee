// The secrets the server holds never reach what it stores, logs, events or lists: every occurrence of a
// pool's secret in a caller's text (a holder, a message, a reason, a label, metadata, a description) becomes
// its masked form (mask.ts). The logger's shape-based scrubbing catches provider-shaped keys besides.
import { mask } from "./mask.js";

/** Shorter secrets are not searched for: masking every match of a few characters would garble ordinary text. */
const MIN_SECRET_LENGTH = 8;

/** The secrets of one pool's keys, for redaction; told when they change, it rebuilds its list on next use. */
export class PoolSecrets {
  #list: string[] | undefined;

  constructor(private readonly source: () => Iterable<string>) {}

  /** A key was added, removed or given a new secret. */
  changed(): void {
    this.#list = undefined;
  }

  /** `text` with every occurrence of a secret of the pool (and of `extra`, a key's new secret) masked. */
  redact(text: string, extra?: string): string {
    if (text.length < MIN_SECRET_LENGTH) return text;
    const list = this.#secrets();
    // The common case on the hot path: a holder shorter than every secret.
    if (extra === undefined && (list.length === 0 || text.length < list[list.length - 1]!.length)) return text;
    let out = text;
    if (extra !== undefined && extra.length >= MIN_SECRET_LENGTH) out = maskAll(out, extra);
    for (const secret of list) if (secret.length <= out.length) out = maskAll(out, secret);
    return out;
  }

  /** Longest first, so a secret that contains another is masked whole. */
  #secrets(): string[] {
    if (this.#list) return this.#list;
    const unique = new Set<string>();
    for (const s of this.source()) if (s.length >= MIN_SECRET_LENGTH) unique.add(s);
    this.#list = [...unique].sort((a, b) => b.length - a.length);
    return this.#list;
  }
}

function maskAll(text: string, secret: string): string {
  return text.includes(secret) ? text.split(secret).join(mask(secret)) : text;
}
