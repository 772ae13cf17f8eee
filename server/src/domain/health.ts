// What reported outcomes do to a key (DESIGN rules 8-11): its health (EMA latency, the success window,
// consecutive failures), the circuit breaker, cooldowns shared by a quota group, auto-disable, and the
// budget learned from the provider's headers; with the key timers that end a cooldown, half-open a
// circuit, and wake waiters when a budget allows the next request.
import { optionalCount } from "./budget.js";
import type { EventSink } from "./events.js";
import type { KeyEntry } from "./key.js";
import { parseRateLimitHeaders } from "./rate-limit-headers.js";
import type { Scheduler } from "./scheduler.js";
import type { TimerItem } from "./state.js";
import type { FailureClass, FailureReport, RateLimitedReport, RateLimitReport, SuccessReport } from "./types.js";

const EMA_ALPHA = 0.2;

/**
 * Rule 10 for a MarkFailed without a reason: the provider's HTTP status, and for a 503 its message.
 * The error body's details never arrive, so Gemini's 400 API_KEY_INVALID or API_KEY_EXPIRED is a client error here.
 */
export function classifyStatus(status: number, message: string): FailureClass | "rate_limited" {
  if (status === 401 || status === 403) return "auth";
  if (status === 402) return "quota_exhausted";
  if (status === 429) return "rate_limited";
  // A 503 is provider-wide only when it says so; otherwise it is a transient failure of this key.
  if (status === 529 || (status === 503 && message.toLowerCase().includes("overloaded"))) return "overloaded";
  if (status === 0 || status === 408 || (status >= 500 && status <= 599)) return "transient";
  return "client_error";
}

export class Health {
  constructor(
    private readonly timers: Scheduler<TimerItem>,
    private readonly events: EventSink,
  ) {}

  success(k: KeyEntry, report: SuccessReport, now: number): void {
    this.recordLatency(k, report.latencyMs);
    k.recordSuccess(now, optionalCount(report.inputTokens) ?? 0, optionalCount(report.outputTokens) ?? 0);
    this.applyBudget(k, report.rateLimit, now);
    if (k.circuitState === "half_open") this.closeCircuit(k, now);
  }

  failure(k: KeyEntry, outcome: FailureClass | "rate_limited", report: FailureReport, now: number): void {
    this.recordLatency(k, report.latencyMs);
    switch (outcome) {
      case "rate_limited":
        this.rateLimited(k, {}, now);
        return;
      case "auth":
      case "quota_exhausted":
        k.recordFailure(now, false);
        this.autoDisable(k, outcome === "auth" ? "auth" : "quota", report.message || `provider answered ${report.httpStatus}`, now);
        return;
      case "transient": {
        const streak = k.recordFailure(now, true);
        if (k.circuitState === "half_open") this.openCircuit(k, now);
        else if (k.circuitState === "closed" && streak >= k.pool.cfg.failureThreshold) this.openCircuit(k, now);
        return;
      }
      case "overloaded":
      case "client_error":
        // Provider-wide overload and the caller's own bad request say nothing about this key.
        return;
    }
  }

  /** Applies a 429 to the key and its quota group; returns the key's cooldown end. */
  rateLimited(k: KeyEntry, report: RateLimitedReport, now: number): number {
    const cfg = k.pool.cfg;
    const fromHeaders = this.applyBudget(k, report.rateLimit, now);
    // The doubling window is max_cooldown long and restarts at every 429, so a steady stream of 429s reaches the cap.
    const continues = k.rateLimitStreakStart !== undefined && now - k.rateLimitStreakStart <= cfg.maxCooldownMs;
    k.setRateLimitStreak(continues ? k.rateLimitStreak + 1 : 1, now);
    const retryAfter = report.retryAfterMs !== undefined && report.retryAfterMs >= 0 ? report.retryAfterMs : fromHeaders;
    const wait = retryAfter ?? Math.min(cfg.defaultCooldownMs * 2 ** Math.min(k.rateLimitStreak - 1, 30), cfg.maxCooldownMs);
    const until = now + Math.floor(wait);
    this.coolDown(k, until, now);
    if (k.cfg.quotaGroup !== "") {
      for (const other of k.pool.keyList) if (other !== k && other.cfg.quotaGroup === k.cfg.quotaGroup) this.coolDown(other, until, now);
    }
    return k.cooldownUntil ?? until;
  }

  /** A grant spends one request of a known budget; running it out arms the wake for the next one. */
  lent(k: KeyEntry, now: number): void {
    if (k.budget.requestsRemaining === undefined) return;
    k.debitRequest(now, now + k.pool.cfg.defaultCooldownMs);
    if (k.requestsBlockedUntil > now) this.scheduleBudgetWake(k, now);
  }

  // ---- key timers ---------------------------------------------------------------------------

  cooldownEnded(k: KeyEntry, now: number): void {
    k.endCooldown();
    this.events.emit("cooldown_ended", now, k.pool.cfg.name, k.cfg.id);
  }

  /** An open circuit's time is up: it admits probes. False when it was no longer open. */
  halfOpen(k: KeyEntry, now: number): boolean {
    if (k.circuitState !== "open") return false;
    k.halfOpenCircuit();
    this.events.emit("circuit_half_opened", now, k.pool.cfg.name, k.cfg.id);
    return true;
  }

  /** Wakes waiters when the request budget next allows one, or at the next token budget reset. */
  scheduleBudgetWake(k: KeyEntry, now: number): void {
    const at = k.budgetWakeAt(now);
    if (at === Infinity) this.timers.cancel(k.budgetTimer);
    else this.timers.schedule(k.budgetTimer, at, now);
  }

  /** Arms the timers of a key restored from a snapshot; its deadlines are absolute, so nothing resets. */
  restored(k: KeyEntry, now: number): void {
    if (k.cooldownUntil !== undefined) this.timers.schedule(k.cooldownTimer, k.cooldownUntil, now);
    if (k.circuitState === "open") this.timers.schedule(k.circuitTimer, k.circuitOpenUntil ?? now, now);
    this.scheduleBudgetWake(k, now);
  }

  cancelTimers(k: KeyEntry): void {
    this.timers.cancel(k.cooldownTimer);
    this.timers.cancel(k.circuitTimer);
    this.timers.cancel(k.budgetTimer);
  }

  // ---- rules --------------------------------------------------------------------------------

  private recordLatency(k: KeyEntry, latencyMs: number | undefined): void {
    if (latencyMs === undefined || !Number.isFinite(latencyMs) || latencyMs < 0) return;
    k.setEmaLatency(k.emaLatencyMs === undefined ? latencyMs : k.emaLatencyMs + EMA_ALPHA * (latencyMs - k.emaLatencyMs));
  }

  /** The first cause stays until an operator enables the key. */
  private autoDisable(k: KeyEntry, cause: "auth" | "quota", message: string, now: number): void {
    if (k.autoDisabled) return;
    k.autoDisable(cause, message, now);
    this.events.emit("key_auto_disabled", now, k.pool.cfg.name, k.cfg.id, undefined, `${cause}: ${message}`);
  }

  /** Cooldowns only grow: the later of the current end and `until` wins. */
  private coolDown(k: KeyEntry, until: number, now: number): void {
    if (k.cooldownUntil !== undefined && k.cooldownUntil >= until) return;
    k.coolDown(until);
    this.timers.schedule(k.cooldownTimer, until, now);
    this.events.emit("cooldown_started", now, k.pool.cfg.name, k.cfg.id, undefined, undefined, until);
  }

  /** Open for open_duration, doubling on each re-open, capped at max_open_duration. */
  private openCircuit(k: KeyEntry, now: number): void {
    const cfg = k.pool.cfg;
    const opening = k.circuitOpenCount + 1;
    const until = now + Math.min(cfg.openDurationMs * 2 ** Math.min(opening - 1, 30), cfg.maxOpenDurationMs);
    k.openCircuit(until);
    this.timers.schedule(k.circuitTimer, until, now);
    this.events.emit("circuit_opened", now, cfg.name, k.cfg.id, undefined, undefined, until);
  }

  private closeCircuit(k: KeyEntry, now: number): void {
    k.closeCircuit();
    this.timers.cancel(k.circuitTimer);
    this.events.emit("circuit_closed", now, k.pool.cfg.name, k.cfg.id);
  }

  /** Records the provider's view (typed fields win over headers); returns the headers' retry-after. */
  private applyBudget(k: KeyEntry, report: RateLimitReport | undefined, now: number): number | undefined {
    if (!report) return undefined;
    const h = report.headers && Object.keys(report.headers).length > 0 ? parseRateLimitHeaders(report.headers, now) : undefined;
    k.reportBudget(
      {
        remaining: optionalCount(report.requestsRemaining) ?? optionalCount(h?.requestsRemaining),
        limit: optionalCount(report.requestsLimit) ?? optionalCount(h?.requestsLimit),
        resetMs: optionalCount(report.requestsResetMs) ?? optionalCount(h?.requestsResetMs),
      },
      {
        remaining: optionalCount(report.tokensRemaining) ?? optionalCount(h?.tokensRemaining),
        limit: optionalCount(report.tokensLimit) ?? optionalCount(h?.tokensLimit),
        resetMs: optionalCount(report.tokensResetMs) ?? optionalCount(h?.tokensResetMs),
      },
      now,
      now + k.pool.cfg.defaultCooldownMs,
    );
    this.scheduleBudgetWake(k, now);
    return optionalCount(h?.retryAfterMs);
  }
}
