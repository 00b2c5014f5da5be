import { defineConfig } from "@playwright/test";

// Run by crates/fvd/tests/web.rs, which starts a real fvd with real VMs and passes:
// FV_URL, FV_ROOT_PASSWORD, FV_READONLY_USER, FV_READONLY_PASSWORD, FV_ARTIFACTS.
// Debian's Chromium drives the pages; Playwright's own browsers are never downloaded.
export default defineConfig({
  testDir: "tests",
  workers: 1,
  retries: 0,
  timeout: 90_000,
  expect: { timeout: 30_000 },
  reporter: [["list"]],
  outputDir: process.env.FV_ARTIFACTS ? `${process.env.FV_ARTIFACTS}/results` : "test-results",
  use: {
    baseURL: process.env.FV_URL,
    browserName: "chromium",
    launchOptions: {
      executablePath: process.env.FV_CHROMIUM ?? "/usr/bin/chromium",
      // Root in a container: Chromium's sandbox needs user namespaces it may not get.
      args: ["--no-sandbox", "--disable-dev-shm-usage"],
    },
    viewport: { width: 1280, height: 800 },
    trace: "off",
    screenshot: "only-on-failure",
  },
});
