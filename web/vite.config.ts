import { defineConfig } from "vite";

// `npm run dev` proxies the API to a running `bulkhead demo` (BULKHEAD_URL, default :8080).
const backend = process.env.BULKHEAD_URL ?? "http://127.0.0.1:8080";

export default defineConfig({
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  build: { outDir: "dist", sourcemap: false, chunkSizeWarningLimit: 1500, reportCompressedSize: false },
  server: { proxy: { "/api": backend, "/metrics": backend, "/readyz": backend, "/healthz": backend } },
});
