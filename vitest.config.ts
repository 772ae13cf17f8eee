import { defineConfig } from "vitest/config";

// The server and repository-level suites. clients/ts has its own config: its end-to-end tests run
// against a server that scripts/test.sh starts.
export default defineConfig({
  test: {
    include: ["server/test/**/*.test.ts", "test/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: "forks",
  },
});
