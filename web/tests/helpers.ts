import { expect, Page } from "@playwright/test";

// What every spec shares: the accounts crates/fvd/tests/web.rs makes, where screenshots
// go, logging in, finding a VM in the tree, and forcing a VM off.

export const root = process.env.FV_ROOT_PASSWORD ?? "";
export const roUser = process.env.FV_READONLY_USER ?? "";
export const roPassword = process.env.FV_READONLY_PASSWORD ?? "";
export const shots = process.env.FV_ARTIFACTS ?? "test-artifacts";

export async function login(page: Page, user: string, password: string): Promise<void> {
  await page.goto("/");
  await page.getByLabel("User").fill(user);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Log in" }).click();
  await expect(page.locator("#who")).toContainText(user);
}

export function vmNode(page: Page, name: string) {
  return page.locator("#tree button.node", { hasText: name }).first();
}

/** Force shut down from the General tab, confirming, until the VM shows Halted. */
export async function forceShutDown(page: Page): Promise<void> {
  await page.getByRole("tab", { name: "General" }).click();
  await page.locator('[data-op="hard_shutdown"]').click();
  await page.locator("#confirm-yes").click();
  await expect(page.locator("#power-state")).toHaveText("Halted");
}
