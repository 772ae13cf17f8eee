// Server reflection answered in memory: KeyMesh's files come with their comments (source info), describe
// exactly the schema the server is compiled with, and can be fetched by file name as well as by symbol.
import { describe, expect, it } from "vitest";
import { clearField, clone, create, fromBinary, type DescFile } from "@bufbuild/protobuf";
import { FieldDescriptorProtoSchema, FileDescriptorProtoSchema, type DescriptorProto, type FileDescriptorProto } from "@bufbuild/protobuf/wkt";
import type { HandlerContext } from "@connectrpc/connect";
import { reflectionServices } from "../../src/transport/reflection.js";
import * as v1 from "../../src/gen/grpc/reflection/v1/reflection_pb.js";
import { file_keymesh_v1_admin, PoolAdminService } from "../../src/gen/keymesh/v1/admin_pb.js";
import { file_keymesh_v1_common } from "../../src/gen/keymesh/v1/common_pb.js";
import { file_keymesh_v1_pool, KeyPoolService } from "../../src/gen/keymesh/v1/pool_pb.js";

type Request = v1.ServerReflectionRequest["messageRequest"];
type Reflect = (reqs: AsyncIterable<v1.ServerReflectionRequest>, ctx: HandlerContext) => AsyncIterable<v1.ServerReflectionResponse>;

async function ask(...requests: Request[]): Promise<v1.ServerReflectionResponse["messageResponse"][]> {
  const [served] = reflectionServices([KeyPoolService, PoolAdminService], [file_keymesh_v1_pool, file_keymesh_v1_admin]);
  const impl = served!.impl as unknown as { serverReflectionInfo: Reflect };
  async function* input() {
    for (const messageRequest of requests) yield create(v1.ServerReflectionRequestSchema, { messageRequest });
  }
  const out: v1.ServerReflectionResponse["messageResponse"][] = [];
  for await (const res of impl.serverReflectionInfo(input(), {} as HandlerContext)) out.push(res.messageResponse);
  return out;
}

function files(res: v1.ServerReflectionResponse["messageResponse"]): FileDescriptorProto[] {
  if (res.case !== "fileDescriptorResponse") throw new Error(`expected files, got ${res.case}`);
  return res.value.fileDescriptorProto.map((bytes) => fromBinary(FileDescriptorProtoSchema, bytes));
}

/** The comment protoc recorded at `path` (see descriptor.proto, SourceCodeInfo.Location.path). */
function leadingComment(file: FileDescriptorProto, path: number[]): string | undefined {
  return file.sourceCodeInfo?.location.find((l) => l.path.join(".") === path.join("."))?.leadingComments;
}

/** What the compiled code knows, without the comments and the JSON names protoc-gen-es leaves out. */
function schemaOnly(file: FileDescriptorProto): FileDescriptorProto {
  const copy = clone(FileDescriptorProtoSchema, file);
  clearField(copy, FileDescriptorProtoSchema.field.sourceCodeInfo);
  const strip = (m: DescriptorProto): void => {
    for (const f of m.field) clearField(f, FieldDescriptorProtoSchema.field.jsonName);
    m.nestedType.forEach(strip);
  };
  copy.messageType.forEach(strip);
  return copy;
}

describe("reflection", () => {
  it("serves KeyMesh's files with their comments", async () => {
    const [res] = await ask({ case: "fileContainingSymbol", value: "keymesh.v1.AcquireRequest" });
    const pool = files(res!).find((f) => f.name === "keymesh/v1/pool.proto")!;
    // service 0 is KeyPoolService (path 6.0), its method 0 Acquire (6.0.2.0); message 0 AcquireRequest (4.0), field 1 wait_timeout (4.0.2.1).
    expect(leadingComment(pool, [6, 0])).toMatch(/^ KeyPoolService is the hot path/);
    expect(leadingComment(pool, [6, 0, 2, 0])).toMatch(/^ Acquire lends one key of the pool under a lease/);
    expect(leadingComment(pool, [4, 0, 2, 1])).toBe(" How long to wait for a key when none is eligible; unset or zero fails at once.\n");
    const common = files(res!).find((f) => f.name === "keymesh/v1/common.proto")!;
    expect(leadingComment(common, [5, 0, 2, 9])).toMatch(/No key became eligible before the wait ended/);
  });

  it("describes exactly the schema the server is compiled with", async () => {
    const compiled: DescFile[] = [file_keymesh_v1_pool, file_keymesh_v1_admin, file_keymesh_v1_common];
    const answers = await ask(...compiled.map((f) => ({ case: "fileByFilename" as const, value: f.proto.name })));
    compiled.forEach((file, i) => {
      const [served] = files(answers[i]!);
      expect(served!.name).toBe(file.proto.name);
      expect(served!.sourceCodeInfo?.location.length).toBeGreaterThan(0);
      expect(schemaOnly(served!)).toEqual(schemaOnly(file.proto));
    });
  });

  it("serves imported well-known files by name and answers NOT_FOUND for unknown ones", async () => {
    const [wkt, unknown] = await ask({ case: "fileByFilename", value: "google/protobuf/duration.proto" }, { case: "fileByFilename", value: "nope.proto" });
    expect(files(wkt!).map((f) => f.name)).toEqual(["google/protobuf/duration.proto"]);
    expect(unknown).toMatchObject({ case: "errorResponse", value: { errorCode: 5 } });
  });
});
