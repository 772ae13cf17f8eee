import { describe, expect, it } from "vitest";
import { mask } from "../../src/domain/mask.js";
import { PoolSecrets } from "../../src/domain/redact.js";

describe("PoolSecrets", () => {
  const long = "abcdefghijklmnopqrstuvwx";
  const inner = "hijklmnopqrs";

  it("masks every occurrence of every secret of the pool, a secret containing another as a whole", () => {
    const secrets = new PoolSecrets(() => [inner, long]);
    expect(secrets.redact(`a ${long} b ${long} c ${inner}`)).toBe(`a ${mask(long)} b ${mask(long)} c ${mask(inner)}`);
  });

  it("masks a key's new secret given beside the pool's, and leaves text without secrets as it is", () => {
    const secrets = new PoolSecrets(() => [long]);
    expect(secrets.redact("label of newsecret1234", "newsecret1234")).toBe(`label of ${mask("newsecret1234")}`);
    expect(secrets.redact("worker-1")).toBe("worker-1");
  });

  it("sees a changed key set once told, and never searches for secrets shorter than 8 characters", () => {
    let list = [long];
    const secrets = new PoolSecrets(() => list);
    expect(secrets.redact(`x ${inner} y`)).toBe(`x ${inner} y`);
    list = [inner, "short"];
    secrets.changed();
    expect(secrets.redact(`x ${inner} y short`)).toBe(`x ${mask(inner)} y short`);
  });
});
