import { defineConfig } from "vitest/config";

// The TypeScript client's suites; the end-to-end ones need KEYMESH_ADDR (scripts/test.sh sets it).
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 30_000,
  },
});
