// The admin API client the CLI talks through: native gRPC over HTTP/2, bearer token when given.
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { PoolAdminService } from "../gen/keymesh/v1/admin_pb.js";

export type AdminClient = Client<typeof PoolAdminService>;

export interface ConnectOptions {
  /** "host:port", or a URL ("http://host:port", "https://host:port" for TLS). */
  addr: string;
  token?: string;
}

/** "127.0.0.1:50051" → "http://127.0.0.1:50051"; URLs pass through. */
function baseUrlFor(addr: string): string {
  return /^https?:\/\//.test(addr) ? addr : `http://${addr}`;
}

export function createAdminClient(options: ConnectOptions): AdminClient {
  const interceptors: Interceptor[] = [];
  const token = options.token;
  if (token) {
    interceptors.push((next) => (req) => {
      req.header.set("authorization", `Bearer ${token}`);
      return next(req);
    });
  }
  return createClient(PoolAdminService, createGrpcTransport({ baseUrl: baseUrlFor(options.addr), interceptors }));
}
