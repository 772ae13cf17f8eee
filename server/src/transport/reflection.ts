// gRPC server reflection (v1 and v1alpha), answered from the descriptors compiled into the protobuf-es
// generated code: the exact FileDescriptorProtos, dependencies included, so grpcurl needs no .proto files.
// (@grpc/reflection serves protobufjs round-trips of the descriptors, which lose well-known-type
// imports and map entries; grpcurl's describe fails on those.)
import { createRegistry, toBinary, type DescFile, type DescService } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import * as v1 from "../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../gen/grpc/reflection/v1alpha/reflection_pb.js";

type Request = v1.ServerReflectionRequest | v1alpha.ServerReflectionRequest;

/** gRPC status code NOT_FOUND, as reflection's ErrorResponse carries it. */
const NOT_FOUND = 5;

class DescriptorIndex {
  private readonly registry;
  private readonly byName = new Map<string, DescFile>();
  private readonly encoded = new Map<string, Uint8Array>();

  constructor(
    files: DescFile[],
    readonly serviceNames: string[],
  ) {
    const all = new Map<string, DescFile>();
    const visit = (f: DescFile) => {
      if (all.has(f.name)) return;
      all.set(f.name, f);
      f.dependencies.forEach(visit);
    };
    files.forEach(visit);
    this.registry = createRegistry(...all.values());
    for (const f of all.values()) this.byName.set(f.name, f);
  }

  /** The file and everything it imports, each serialized once. */
  closure(file: DescFile): Uint8Array[] {
    const out: Uint8Array[] = [];
    const seen = new Set<string>();
    const visit = (f: DescFile) => {
      if (seen.has(f.name)) return;
      seen.add(f.name);
      let bytes = this.encoded.get(f.name);
      if (!bytes) {
        bytes = toBinary(FileDescriptorProtoSchema, f.proto);
        this.encoded.set(f.name, bytes);
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
  const index = new DescriptorIndex(
    [...files, v1.file_grpc_reflection_v1_reflection, v1alpha.file_grpc_reflection_v1alpha_reflection],
    [...services, ...reflection].map((s) => s.typeName),
  );
  const impl = new ReflectionImpl(index) as unknown as ServiceImpl<DescService>;
  return reflection.map((service) => ({ service, impl }));
}
