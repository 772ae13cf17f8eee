// The real clock, for the server to inject. Its timers never keep the process alive on their own: the
// listeners do, and a stopped server must be able to exit with a timer still pending.
import type { Clock } from "./types.js";

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};
