import { createHmac, randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { HmacSha256 } from "../../src/domain/hmac-sha256.js";

describe("HmacSha256", () => {
  it("matches RFC 4231's test vectors, including a key longer than a block", () => {
    const cases: Array<[Buffer, string, string]> = [
      [Buffer.alloc(20, 0x0b), "Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"],
      [Buffer.from("Jefe"), "what do ya want for nothing?", "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"],
      [
        Buffer.alloc(131, 0xaa),
        "Test Using Larger Than Block-Size Key - Hash Key First",
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
      ],
    ];
    for (const [key, message, mac] of cases) expect(new HmacSha256(key).digest(message).toString("hex")).toBe(mac);
  });

  it("agrees with node:crypto for every message length across the padding boundaries, and for UTF-8 text", () => {
    for (const keyLength of [0, 1, 32, 64, 65, 200]) {
      const key = randomBytes(keyLength);
      const hmac = new HmacSha256(key);
      for (let n = 0; n <= 300; n++) {
        const message = randomBytes(n).toString("latin1");
        expect(hmac.digest(message).equals(createHmac("sha256", key).update(message).digest()), `key ${keyLength} B, message ${n} chars`).toBe(true);
      }
      const text = "pool-é-ключ-🔑".repeat(9);
      expect(hmac.digest(text).equals(createHmac("sha256", key).update(text).digest())).toBe(true);
    }
  });

  it("gives each call its own result, so an earlier MAC is not overwritten by the next", () => {
    const hmac = new HmacSha256(randomBytes(32));
    const first = hmac.digest("a");
    const copy = Buffer.from(first);
    hmac.digest("b");
    expect(first.equals(copy)).toBe(true);
  });
});
