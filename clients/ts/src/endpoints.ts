// Which endpoint (replica) a call goes to, and the unary failover loop: plain bookkeeping with no I/O
// and no clock of its own, pinned by test/vectors/failover.json.
import { fullJitterMs } from "./retry.js";

/** The response header in which a replica names the owner of the pool a call was about. */
export const OWNER_HEADER = "keymesh-owner";

/**
 * A client's endpoints ("host:port"): the current one, where calls and the KeepAlive stream go, and the
 * owner of each pool a replica named, where that pool's calls go.
 */
export class Endpoints {
  #list: readonly string[];
  readonly #owners = new Map<string, string>();
  #current = 0;

  constructor(list: readonly string[]) {
    if (list.length === 0) throw new Error("keymesh: no endpoint");
    this.#list = list;
  }

  get current(): string {
    return this.#list[this.#current]!;
  }

  /** Where a call about pool (undefined: no pool) goes first. */
  target(pool: string | undefined): string {
    return (pool !== undefined && this.#owners.get(pool)) || this.current;
  }

  /** endpoint answered a call about pool with a status other than UNAVAILABLE; owner: its keymesh-owner header. */
  answered(endpoint: string, pool: string | undefined, owner: string | null): void {
    const i = this.#list.indexOf(endpoint);
    if (i >= 0) this.#current = i;
    if (pool !== undefined && owner) this.#owners.set(pool, owner);
  }

  /** endpoint answered UNAVAILABLE; returns where the call goes next at once, or undefined when the round is over. */
  unavailable(endpoint: string, pool: string | undefined, tried: Set<string>): string | undefined {
    if (pool !== undefined && this.#owners.get(pool) === endpoint) this.#owners.delete(pool);
    const i = this.#list.indexOf(endpoint);
    if (i >= 0) tried.add(endpoint);
    const start = i >= 0 ? i + 1 : this.#current;
    for (let k = 0; k < this.#list.length; k++) {
      const candidate = this.#list[(start + k) % this.#list.length]!;
      if (!tried.has(candidate)) return candidate;
    }
    return undefined;
  }

  /** The first endpoint of a new round after endpoint. */
  after(endpoint: string): string {
    const i = this.#list.indexOf(endpoint);
    return i >= 0 ? this.#list[(i + 1) % this.#list.length]! : this.current;
  }

  /** A host name resolved anew: the current endpoint stays current if it is still in the list. */
  replace(list: readonly string[]): void {
    if (list.length === 0) return;
    const current = this.current;
    this.#list = list;
    this.#current = Math.max(list.indexOf(current), 0);
  }

  /** The KeepAlive stream on endpoint ended without the client asking. */
  streamEnded(endpoint: string): void {
    if (this.current === endpoint) this.#current = (this.#current + 1) % this.#list.length;
  }
}

/** One attempt's answer, as the failover loop sees it. */
export interface Answer {
  unavailable: boolean;
  owner: string | null;
}

/** What the failover loop does to the world. Tests give fakes. */
export interface FailoverSteps<T> {
  /** One attempt on endpoint; remainingMs: the time left before the call's deadline. */
  attempt(endpoint: string, remainingMs: number): Promise<T>;
  /** How a result (ok) or a thrown error (not ok) answered. */
  answer(outcome: { ok: true; value: T } | { ok: false; error: unknown }): Answer;
  now(): number;
  sleep(ms: number): Promise<void>;
  random(): number;
  /** After the pause that follows a round of UNAVAILABLE: resolve the host names again (their addresses may have moved). */
  refresh?(): Promise<void>;
}

export interface FailoverPolicy {
  backoffBaseMs: number;
  backoffCapMs: number;
}

/**
 * One unary call with failover (test/vectors/failover.json): UNAVAILABLE moves at once to the next
 * endpoint not yet tried in this round; once every endpoint said UNAVAILABLE, a full-jitter pause that
 * grows per round (and the host names resolved again); any other answer ends the call. Gives up with
 * the last UNAVAILABLE when the next pause would end past the deadline.
 */
export async function withFailover<T>(endpoints: Endpoints, pool: string | undefined, deadlineMs: number, steps: FailoverSteps<T>, policy: FailoverPolicy): Promise<T> {
  let tried: Set<string> | undefined;
  let pauses = 0;
  let target = endpoints.target(pool);
  for (;;) {
    let error: unknown;
    try {
      const value = await steps.attempt(target, deadlineMs - steps.now());
      endpoints.answered(target, pool, steps.answer({ ok: true, value }).owner);
      return value;
    } catch (e) {
      error = e;
    }
    const answer = steps.answer({ ok: false, error });
    if (!answer.unavailable) {
      endpoints.answered(target, pool, answer.owner);
      throw error;
    }
    tried ??= new Set();
    const next = endpoints.unavailable(target, pool, tried);
    if (next !== undefined) {
      target = next;
      continue;
    }
    const pause = fullJitterMs(policy.backoffBaseMs, policy.backoffCapMs, pauses, steps.random);
    if (steps.now() + pause > deadlineMs) throw error;
    await steps.sleep(pause);
    pauses++;
    await steps.refresh?.();
    tried.clear();
    target = endpoints.after(target);
  }
}
