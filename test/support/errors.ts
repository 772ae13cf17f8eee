// Assertions on failed calls: the ConnectError a call rejects with, and its KeyMesh reason.
import { ConnectError } from "@connectrpc/connect";
import { ErrorDetailSchema, type ErrorReason } from "../../server/src/gen/keymesh/v1/common_pb.js";

export async function rejection(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (e) {
    return ConnectError.from(e);
  }
  throw new Error("expected the call to fail");
}

export function reasonOf(err: unknown): ErrorReason | undefined {
  return ConnectError.from(err).findDetails(ErrorDetailSchema)[0]?.reason;
}
