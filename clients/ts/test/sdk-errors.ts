// Errors shaped like the official SDKs' (openai-node, @anthropic-ai/sdk, @google/genai), which the
// classifier reads by duck typing without importing them.

export class OpenAIAPIError extends Error {
  readonly error: { code: string | null; type: string | null; message: string };
  constructor(
    readonly status: number,
    readonly headers: Record<string, string> | Headers | undefined,
    readonly code: string | null,
    readonly type: string | null,
    message: string,
  ) {
    super(`${status} ${message}`);
    this.error = { code, type, message };
  }
}

export class AnthropicAPIError extends Error {
  readonly error: { type: "error"; error: { type: string; message: string } };
  constructor(
    readonly status: number,
    readonly headers: Record<string, string> | Headers | undefined,
    body: { type: string; message: string },
  ) {
    super(`${status} ${JSON.stringify(body)}`);
    this.error = { type: "error", error: body };
  }
}

export class GeminiApiError extends Error {
  constructor(
    readonly status: number,
    statusText: string,
    message: string,
    details?: unknown[],
  ) {
    super(JSON.stringify({ error: { code: status, status: statusText, message, details } }));
  }
}

export class APIConnectionTimeoutError extends Error {
  override name = "APIConnectionTimeoutError";
}

export class APIConnectionError extends Error {
  override name = "APIConnectionError";
}
