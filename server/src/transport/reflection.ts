// Server reflection (v1 and v1alpha) for grpc-js, fed from the protobuf-es descriptors compiled into
// the generated code, so grpcurl needs no .proto files and there is no second copy of the schema.
import type * as grpc from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import { loadFileDescriptorSetFromBuffer, loadSync } from "@grpc/proto-loader";
import { protoPath as healthProtoPath } from "grpc-health-check";
import { create, toBinary, type DescFile } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema, type FileDescriptorProto } from "@bufbuild/protobuf/wkt";

/** Every file of `roots` and their imports, dependencies first. */
function withDependencies(roots: DescFile[]): FileDescriptorProto[] {
  const seen = new Set<string>();
  const out: FileDescriptorProto[] = [];
  const visit = (file: DescFile) => {
    if (seen.has(file.name)) return;
    seen.add(file.name);
    file.dependencies.forEach(visit);
    out.push(file.proto);
  };
  roots.forEach(visit);
  return out;
}

/** Serves reflection for `files` and for grpc.health.v1.Health (which grpc-health-check defines in a .proto). */
export function addReflection(server: grpc.Server, files: DescFile[]): void {
  const set = create(FileDescriptorSetSchema, { file: withDependencies(files) });
  const definition = {
    ...loadFileDescriptorSetFromBuffer(Buffer.from(toBinary(FileDescriptorSetSchema, set))),
    ...loadSync(healthProtoPath),
  };
  new ReflectionService(definition).addToServer(server);
}
