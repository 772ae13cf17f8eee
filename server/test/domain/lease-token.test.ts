import { createHmac, randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { LeaseTokens, type LeaseClaims } from "../../src/domain/lease-token.js";

const claims: LeaseClaims = { pool: "openai-prod", keyId: "Key_7.b", epoch: 3, seq: 123_456, issuedAt: 1_763_900_123_456, ttlMs: 60_000 };

describe("LeaseTokens", () => {
  it("issues lk1 ids: base64url JSON of the claims and a 16-byte HMAC-SHA256 of that text, as earlier versions did", () => {
    const secret = randomBytes(32);
    for (const c of [claims, { ...claims, pool: 'p"\\ü', keyId: "", epoch: 0, seq: 0, issuedAt: 0, ttlMs: 0 }]) {
      const id = new LeaseTokens(secret).issue(c);
      const [prefix, payload, mac] = id.split(".");
      expect(prefix).toBe("lk1");
      expect(Buffer.from(payload!, "base64url").toString()).toBe(JSON.stringify([c.epoch, c.seq, c.issuedAt, c.ttlMs, c.pool, c.keyId]));
      expect(mac).toBe(createHmac("sha256", secret).update(payload!).digest().subarray(0, 16).toString("base64url"));
      expect(new LeaseTokens(secret).verify(id)).toEqual(c);
    }
  });

  it("rejects an id signed with another secret, and one whose MAC is altered", () => {
    const id = new LeaseTokens(randomBytes(32)).issue(claims);
    expect(new LeaseTokens(randomBytes(32)).verify(id)).toBeUndefined();
    const tokens = new LeaseTokens(randomBytes(32));
    const own = tokens.issue(claims);
    const flipped = own.slice(0, -2) + (own.at(-2) === "A" ? "B" : "A") + own.at(-1);
    expect(tokens.verify(flipped)).toBeUndefined();
  });
});
