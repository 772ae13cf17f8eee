// How a secret is shown where it must not be: listings, the stored hint, and logs scrubbed of credentials.

/** The listing form of a secret: "sk-…abcd" (a short prefix up to its first '-', "…", the last four characters). */
export function mask(secret: string): string {
  if (secret.length < 12) return "…";
  const dash = secret.indexOf("-");
  const prefix = secret.slice(0, dash >= 0 && dash < 3 ? dash + 1 : 3);
  return `${prefix}…${secret.slice(-4)}`;
}
