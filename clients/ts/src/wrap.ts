import type { Lease, LeaseContext } from "./lease.js";
import { callWithRetry, type RetryOptions } from "./retry.js";

/** Builds the SDK client one call runs with: the same client, with the lease's key. */
export type Keyed<C> = (client: C, lease: Lease) => C;

export interface WrapOptions<C> extends RetryOptions {
  /**
   * The client for one lease. Default, for openai-node and @anthropic-ai/sdk:
   * `client.withOptions({ apiKey, baseURL, maxRetries: 0 })`; for @google/genai's GoogleGenAI: a new
   * GoogleGenAI with the lease's key and the client's `vertexai`, `apiVersion` and `httpOptions`
   * (without `retryOptions`). `baseURL` / `httpOptions.baseUrl` come from the key's `base_url`
   * metadata when set; the SDK's own retries are off, so a retry moves to another key. For any other
   * client, your own.
   */
  keyed?: Keyed<C>;
}

/**
 * An SDK client whose calls keep their signatures and each run under a lease (callWithRetry): the
 * key injected per call, the outcome classified and reported, a retry on another key with full
 * jitter and Retry-After within `budgetMs`. Every method call returns a plain Promise (an SDK's
 * promise helpers such as openai-node's `.withResponse()` are not kept, and a method that returns
 * synchronously, such as Anthropic's `messages.stream()`, returns a Promise of its result); a
 * streamed answer holds its key only until the call resolves. Reading a property that is not a
 * function or an object returns the wrapped client's own.
 */
export function wrapClient<C extends object>(ctx: LeaseContext, pool: string, client: C, opts: WrapOptions<C> = {}): C {
  const keyed = opts.keyed ?? defaultKeyed(client);
  if (!keyed) {
    throw new TypeError("keymesh: this client has neither withOptions() nor GoogleGenAI's shape; give wrap() a keyed: (client, lease) => client-with-lease.key");
  }
  const call = (path: PropertyKey[], args: unknown[]) =>
    callWithRetry(
      ctx,
      pool,
      async (lease) => {
        let target: unknown = keyed(client, lease);
        for (const name of path.slice(0, -1)) target = (target as Record<PropertyKey, unknown>)[name];
        const method = (target as Record<PropertyKey, (...a: unknown[]) => unknown>)[path[path.length - 1]!]!;
        return await method.apply(target, args);
      },
      opts,
    );
  // A Proxy is the only way to keep an SDK's nested call signatures (openai.chat.completions.create).
  return callsUnder(client, [], call) as C;
}

function callsUnder(target: object, path: PropertyKey[], call: (path: PropertyKey[], args: unknown[]) => Promise<unknown>): object {
  return new Proxy(target, {
    get(t, name, receiver) {
      const value: unknown = Reflect.get(t, name, receiver);
      if (typeof value === "function") return (...args: unknown[]) => call([...path, name], args);
      if (typeof value === "object" && value !== null) return callsUnder(value, [...path, name], call);
      return value;
    },
  });
}

function defaultKeyed<C extends object>(client: C): Keyed<C> | undefined {
  if (typeof (client as { withOptions?: unknown }).withOptions === "function") return withApiKey;
  if (isGoogleGenAI(client)) return newGoogleGenAI;
  return undefined;
}

function withApiKey<C>(client: C, lease: Lease): C {
  const baseURL = lease.metadata.base_url;
  return (client as { withOptions: (o: Record<string, unknown>) => C }).withOptions({ apiKey: lease.key, maxRetries: 0, ...(baseURL ? { baseURL } : {}) });
}

/** What the wrap reads of a @google/genai GoogleGenAI, which has no withOptions. */
interface GoogleGenAILike {
  vertexai: boolean;
  apiVersion?: string;
  httpOptions?: Record<string, unknown>;
  models: { generateContent: unknown };
}

function isGoogleGenAI(client: object): client is GoogleGenAILike {
  const c = client as Partial<GoogleGenAILike>;
  return typeof c.vertexai === "boolean" && typeof c.models === "object" && c.models !== null && typeof c.models.generateContent === "function";
}

function newGoogleGenAI<C extends object>(client: C, lease: Lease): C {
  const { vertexai, apiVersion, httpOptions } = client as C & GoogleGenAILike;
  const { retryOptions: _sdkRetries, ...http } = httpOptions ?? {};
  const baseUrl = lease.metadata.base_url;
  const GoogleGenAI = client.constructor as new (options: object) => C;
  return new GoogleGenAI({ apiKey: lease.key, vertexai, apiVersion, httpOptions: { ...http, ...(baseUrl ? { baseUrl } : {}) } });
}
