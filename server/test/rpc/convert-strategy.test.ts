import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { validatePool } from "../../src/domain/config.js";
import { STRATEGIES } from "../../src/domain/types.js";
import { PoolSchema, Strategy } from "../../src/gen/keymesh/v1/admin_pb.js";
import { poolFieldsFromProto, poolToProto } from "../../src/rpc/convert.js";

describe("strategies on the wire", () => {
  it("maps every domain strategy to its proto value and back, and nothing else", () => {
    const wire = STRATEGIES.map((strategy) => poolToProto({ ...validatePool({ name: "p", strategy }, undefined, 0), keyCount: 0 }).strategy);
    expect(wire).toEqual([Strategy.ROUND_ROBIN, Strategy.LEAST_BUSY, Strategy.WEIGHTED, Strategy.LEAST_USED, Strategy.LATENCY]);
    const back = wire.map((strategy) => poolFieldsFromProto(create(PoolSchema, { name: "p", strategy })).strategy);
    expect(back).toEqual([...STRATEGIES]);
    expect(poolFieldsFromProto(create(PoolSchema, { name: "p" })).strategy).toBeUndefined();
    expect(() => poolFieldsFromProto(create(PoolSchema, { name: "p", strategy: 99 as Strategy }))).toThrow(
      expect.objectContaining({ code: "invalid_argument", details: { field: "strategy" } }),
    );
  });
});
