import { defineConfig } from "vite";

// Everything is bundled into dist/ (index.html and hashed files under assets/), which
// fvd's build.rs embeds into the binary. No request leaves fvd at run time.
export default defineConfig({
  base: "/",
  build: {
    outDir: "dist",
    assetsDir: "assets",
    emptyOutDir: true,
    sourcemap: false,
    chunkSizeWarningLimit: 1000,
  },
  server: {
    // `npm run dev` against an fvd on FVD_URL (default http://127.0.0.1:8080).
    proxy: {
      "/jsonrpc": process.env.FVD_URL ?? "http://127.0.0.1:8080",
      "/console": { target: process.env.FVD_URL ?? "http://127.0.0.1:8080", ws: true },
    },
  },
});
