// gRPC server reflection (v1 and v1alpha), answered from the descriptors compiled into the protobuf-es
// generated code: the exact FileDescriptorProtos, dependencies included, so grpcurl needs no .proto files.
// (@grpc/reflection serves protobufjs round-trips of the descriptors, which lose well-known-type
// imports and map entries; grpcurl's describe fails on those.) KeyMesh's own files are served with their
// source info, so `grpcurl describe` shows the proto comments: protoc-gen-es strips it from what it embeds.
import { createRegistry, fromBinary, toBinary, type DescFile, type DescService } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, FileDescriptorSetSchema, type FileDescriptorProto } from "@bufbuild/protobuf/wkt";
import { base64Decode } from "@bufbuild/protobuf/wire";
import type { ServiceImpl } from "@connectrpc/connect";
import { keymeshDescriptorSet } from "../gen/keymesh/v1/descriptor_set.js";
import * as v1 from "../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../gen/grpc/reflection/v1alpha/reflection_pb.js";

type Request = v1.ServerReflectionRequest | v1alpha.ServerReflectionRequest;

/** gRPC status code NOT_FOUND, as reflection's ErrorResponse carries it. */
const NOT_FOUND = 5;

class DescriptorIndex {
  private readonly registry;
  private readonly byName: ReadonlyMap<string, DescFile>;
  private readonly encoded = new Map<string, Uint8Array>();

  /**
   * `documented` holds descriptors with source info by file name, served in place of the compiled ones
   * (the same proto files, generated together by scripts/generate.sh).
   */
  constructor(
    files: DescFile[],
    readonly serviceNames: string[],
    private readonly documented: ReadonlyMap<string, FileDescriptorProto>,
  ) {
    const all = new Map<string, DescFile>();
    const visit = (f: DescFile) => {
      if (all.has(f.proto.name)) return;
      all.set(f.proto.name, f);
      f.dependencies.forEach(visit);
    };
    files.forEach(visit);
    this.registry = createRegistry(...all.values());
    // By file name as protoc writes it ("keymesh/v1/pool.proto"); DescFile.name drops the ".proto".
    this.byName = all;
  }

  /** The file and everything it imports, each serialized once. */
  closure(file: DescFile): Uint8Array[] {
    const out: Uint8Array[] = [];
    const seen = new Set<string>();
    const visit = (f: DescFile) => {
      const name = f.proto.name;
      if (seen.has(name)) return;
      seen.add(name);
      let bytes = this.encoded.get(name);
      if (!bytes) {
        bytes = toBinary(FileDescriptorProtoSchema, this.documented.get(name) ?? f.proto);
        this.encoded.set(name, bytes);
      }
      out.push(bytes);
      f.dependencies.forEach(visit);
    };
    visit(file);
    return out;
  }

  fileByName(name: string): DescFile | undefined {
    return this.byName.get(name);
  }

  /** A message, enum, service, method or extension by its full name. */
  fileOfSymbol(symbol: string): DescFile | undefined {
    const direct = this.registry.get(symbol);
    if (direct) return direct.file;
    const parent = this.registry.getService(symbol.slice(0, symbol.lastIndexOf(".")));
    return parent?.methods.some((m) => `${parent.typeName}.${m.name}` === symbol) ? parent.file : undefined;
  }

  fileOfExtension(typeName: string, field: number): DescFile | undefined {
    const message = this.registry.getMessage(typeName);
    return message ? this.registry.getExtensionFor(message, field)?.file : undefined;
  }

  extensionNumbers(typeName: string): number[] | undefined {
    if (!this.registry.getMessage(typeName)) return undefined;
    const numbers: number[] = [];
    for (const t of this.registry) if (t.kind === "extension" && t.extendee.typeName === typeName) numbers.push(t.number);
    return numbers;
  }
}

function answer(index: DescriptorIndex, req: Request) {
  const notFound = (what: string) => ({
    case: "errorResponse" as const,
    value: { errorCode: NOT_FOUND, errorMessage: `${what} not found` },
  });
  const files = (file: DescFile | undefined, what: string) =>
    file ? { case: "fileDescriptorResponse" as const, value: { fileDescriptorProto: index.closure(file) } } : notFound(what);
  const m = req.messageRequest;
  switch (m.case) {
    case "listServices":
      return { case: "listServicesResponse" as const, value: { service: index.serviceNames.map((name) => ({ name })) } };
    case "fileByFilename":
      return files(index.fileByName(m.value), `file ${m.value}`);
    case "fileContainingSymbol":
      return files(index.fileOfSymbol(m.value), `symbol ${m.value}`);
    case "fileContainingExtension":
      return files(index.fileOfExtension(m.value.containingType, m.value.extensionNumber), `extension ${m.value.extensionNumber} of ${m.value.containingType}`);
    case "allExtensionNumbersOfType": {
      const numbers = index.extensionNumbers(m.value);
      return numbers
        ? { case: "allExtensionNumbersResponse" as const, value: { baseTypeName: m.value, extensionNumber: numbers } }
        : notFound(`type ${m.value}`);
    }
    default:
      return { case: "errorResponse" as const, value: { errorCode: 3, errorMessage: "empty reflection request" } };
  }
}

class ReflectionImpl {
  constructor(private readonly index: DescriptorIndex) {}

  async *serverReflectionInfo(requests: AsyncIterable<Request>) {
    for await (const req of requests) {
      yield { validHost: req.host, originalRequest: req, messageResponse: answer(this.index, req) };
    }
  }
}

/**
 * The reflection services (v1 and v1alpha) describing `services`; `files` are the proto files to serve
 * (with their imports), which must define every listed service.
 */
export function reflectionServices(services: DescService[], files: DescFile[]): Array<{ service: DescService; impl: ServiceImpl<DescService> }> {
  const reflection = [v1.ServerReflection, v1alpha.ServerReflection];
  const documented = fromBinary(FileDescriptorSetSchema, base64Decode(keymeshDescriptorSet)).file;
  const index = new DescriptorIndex(
    [...files, v1.file_grpc_reflection_v1_reflection, v1alpha.file_grpc_reflection_v1alpha_reflection],
    [...services, ...reflection].map((s) => s.typeName),
    new Map(documented.map((f) => [f.name, f])),
  );
  const impl = new ReflectionImpl(index) as unknown as ServiceImpl<DescService>;
  return reflection.map((service) => ({ service, impl }));
}
