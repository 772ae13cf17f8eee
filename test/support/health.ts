// grpc.health.v1 Check against a server, through a plain @grpc/grpc-js client.
import * as grpc from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { protoPath } from "grpc-health-check";

const pkg = grpc.loadPackageDefinition(loadSync(protoPath, { enums: String })) as unknown as {
  grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } };
};

/** The status `address` reports for each of `services` ("" is the server as a whole). */
export async function healthStatus(address: string, ...services: string[]): Promise<string[]> {
  const client = new pkg.grpc.health.v1.Health(address, grpc.credentials.createInsecure());
  const check = client as unknown as { check: (r: object, cb: (e: Error | null, r: { status: string }) => void) => void };
  try {
    return await Promise.all(services.map((service) => new Promise<string>((resolve, reject) => check.check({ service }, (e, r) => (e ? reject(e) : resolve(r.status))))));
  } finally {
    client.close();
  }
}
