// Leases a key of a pool and prints its label.
//   KEYMESH_ADDR=127.0.0.1:50051 npx tsx clients/ts/examples/quickstart.ts demo
import { createKeyMeshClient, keymeshErrorReason } from "@keymesh/client";

const addr = process.env.KEYMESH_ADDR || "127.0.0.1:50051";
const pool = process.argv[2] || "demo";
const client = createKeyMeshClient({ baseUrl: `http://${addr}`, token: process.env.KEYMESH_TOKEN || undefined });

try {
  await client.withKey(
    pool,
    async (lease) => {
      // Call the provider with lease.key here; returning releases the lease as a success.
      console.log(`leased ${lease.keyLabel}`);
    },
    { waitMs: 5_000 },
  );
} catch (err) {
  console.error(`quickstart: lease from pool "${pool}": ${String(err)} (reason ${keymeshErrorReason(err)})`);
  process.exit(1);
}
