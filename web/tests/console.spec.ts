import { test, expect, Page } from "@playwright/test";
import { root, roUser, roPassword, shots, login, vmNode } from "./helpers";

/** The terminal's screen (xterm.js renders rows of text into the DOM). */
function screen(page: Page) {
  return page.locator(".terminal .xterm-rows");
}

test("a wrong password is refused in words", async ({ page }) => {
  await page.goto("/");
  await page.getByLabel("User").fill("root");
  await page.getByLabel("Password").fill("not the password");
  await page.getByRole("button", { name: "Log in" }).click();
  await expect(page.locator("#login-error")).toHaveText("The user name or password is wrong.");
  await page.screenshot({ path: `${shots}/login-error.png` });
});

test("root starts a VM, types on its console and shuts it down", async ({ page }) => {
  await login(page, "root", root);
  await expect(page.locator("#role")).toHaveText("pool-admin");
  // The tree: pool, host, VMs, templates, storage, networks.
  await expect(vmNode(page, "echo-vm")).toBeVisible();
  await expect(page.locator("#tree-srs")).toContainText("Local storage");
  await expect(page.locator("#tree-networks")).toContainText("Host internal network");
  await expect(page.locator("#tree-templates")).toContainText("echo-template");
  await page.screenshot({ path: `${shots}/tree.png` });

  // Search filters by name.
  await page.getByLabel("Filter resources by name or tag").fill("echo");
  await expect(vmNode(page, "echo-vm")).toBeVisible();
  await expect(vmNode(page, "broken-vm")).toHaveCount(0);
  await page.getByLabel("Filter resources by name or tag").fill("");

  // A storage repository: its size and use.
  await page.locator("#tree-srs button.node", { hasText: "Local storage" }).click();
  await expect(page.locator("h1")).toHaveText("Local storage");
  await expect(page.getByRole("meter", { name: "Space used" })).toBeVisible();
  await page.screenshot({ path: `${shots}/sr.png` });

  await vmNode(page, "echo-vm").click();
  await expect(page.locator("#power-state")).toHaveText("Halted");
  await expect(page.locator("#fact-memory")).toHaveText("64 MiB");
  await expect(page.locator("#fact-vcpus")).toHaveText("1");
  await expect(page.locator('[data-op="clean_shutdown"]')).toBeDisabled();

  // Start: the state changes on the page through event.from, with no reload.
  await page.locator('[data-op="start"]').click();
  await expect(page.locator("#power-state")).toHaveText("Running");
  await expect(page.locator("#fact-uptime")).toHaveText(/^\d\d:\d\d:\d\d$/);
  await expect(page.locator('[data-op="start"]')).toBeDisabled();
  await expect(vmNode(page, "echo-vm").locator(".dot.running")).toHaveCount(1);
  await page.screenshot({ path: `${shots}/vm-general.png` });

  // The console: the echo guest answers what is typed, upper-cased.
  await page.getByRole("tab", { name: "Console" }).click();
  await expect(page.locator(".console-status")).toContainText("Connected: type");
  const terminal = page.getByTestId("terminal");
  await terminal.click();
  await page.keyboard.type("hello ferrovisor");
  await expect(screen(page)).toContainText("HELLO FERROVISOR");
  // Paste goes through as well.
  await page.evaluate(() => {
    const data = new DataTransfer();
    data.setData("text/plain", "pasted");
    const target = document.querySelector(".terminal textarea") as HTMLTextAreaElement;
    target.dispatchEvent(new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true }));
  });
  await expect(screen(page)).toContainText("PASTED");
  await page.screenshot({ path: `${shots}/vm-console.png` });

  // Edit the description on the General tab.
  await page.getByRole("tab", { name: "General" }).click();
  await page.locator("#vm-description").fill("answers in capitals");
  await page.getByRole("button", { name: "Save" }).click();
  await expect(page.locator("#vm-description")).toHaveValue("answers in capitals");

  // Pause and resume.
  await page.locator('[data-op="pause"]').click();
  await expect(page.locator("#power-state")).toHaveText("Paused");
  await page.locator('[data-op="unpause"]').click();
  await expect(page.locator("#power-state")).toHaveText("Running");

  // Force shut down asks first; Cancel changes nothing.
  await page.locator('[data-op="hard_shutdown"]').click();
  await expect(page.getByRole("dialog")).toContainText("pulling its power cord");
  await page.screenshot({ path: `${shots}/confirm.png` });
  await page.locator("#confirm-no").click();
  await expect(page.locator("#power-state")).toHaveText("Running");
  await page.locator('[data-op="hard_shutdown"]').click();
  await page.locator("#confirm-yes").click();
  await expect(page.locator("#power-state")).toHaveText("Halted");
  await expect(page.locator('[data-op="start"]')).toBeEnabled();
});

test("clone a halted VM, then delete the clone after confirming", async ({ page }) => {
  await login(page, "root", root);
  await vmNode(page, "echo-vm").click();
  await expect(page.locator("#power-state")).toHaveText("Halted");
  await page.locator('[data-op="clone"]').click();
  await expect(vmNode(page, "echo-vm (clone)")).toBeVisible();
  await vmNode(page, "echo-vm (clone)").click();
  await expect(page.locator("h1")).toHaveText("echo-vm (clone)");
  await page.locator('[data-op="destroy"]').click();
  await expect(page.getByRole("dialog")).toContainText("removes the VM");
  await page.locator("#confirm-yes").click();
  await expect(vmNode(page, "echo-vm (clone)")).toHaveCount(0);
});

test("a running task shows its progress and can be cancelled", async ({ page }) => {
  await login(page, "root", root);
  await vmNode(page, "echo-vm").click();
  await page.locator('[data-op="start"]').click();
  await expect(page.locator("#power-state")).toHaveText("Running");
  // The echo guest ignores the power button: the clean shutdown waits for it.
  await page.locator('[data-op="clean_shutdown"]').click();
  const task = page.locator("#tasks .task.running").first();
  await expect(task).toContainText("Shut down echo-vm");
  await expect(task.locator("progress")).toBeVisible();
  await page.screenshot({ path: `${shots}/task-running.png` });
  await task.getByRole("button", { name: "Cancel" }).click();
  await expect(page.locator("#tasks .task.failed").first()).toContainText("The task was cancelled.");
  await expect(page.locator("#tasks .task.running")).toHaveCount(0);
  await expect(page.locator("#power-state")).toHaveText("Running");
  await page.locator('[data-op="hard_shutdown"]').click();
  await page.locator("#confirm-yes").click();
  await expect(page.locator("#power-state")).toHaveText("Halted");
});

test("the console reconnects after the VM restarts", async ({ page }) => {
  await login(page, "root", root);
  await vmNode(page, "echo-vm").click();
  await page.locator('[data-op="start"]').click();
  await expect(page.locator("#power-state")).toHaveText("Running");
  await page.getByRole("tab", { name: "Console" }).click();
  await expect(page.locator(".console-status")).toContainText("Connected: type");
  const terminal = page.getByTestId("terminal");
  await terminal.click();
  await page.keyboard.type("first");
  await expect(screen(page)).toContainText("FIRST");
  // Another client's force shut down and start: the page follows and reconnects.
  await page.evaluate(async () => {
    const s = JSON.parse(sessionStorage.getItem("fv-session") ?? "{}") as { ref: string };
    const call = async (method: string, params: unknown[]) => {
      const r = await fetch("/jsonrpc", {
        method: "POST",
        body: JSON.stringify({ jsonrpc: "2.0", method, params: [s.ref, ...params], id: 1 }),
      });
      return ((await r.json()) as { result: unknown }).result;
    };
    const vm = ((await call("VM.get_by_name_label", ["echo-vm"])) as string[])[0];
    await call("VM.hard_shutdown", [vm]);
    await call("VM.start", [vm, false, false]);
  });
  await expect(page.locator(".console-status")).toContainText("Connected: type");
  await terminal.click();
  await page.keyboard.type("second");
  await expect(screen(page)).toContainText("SECOND");

  // A second window takes the console (fv-vmm serves one client): the first says so and
  // waits for the user instead of taking it back.
  const other = await page.context().newPage();
  await login(other, "root", root);
  await vmNode(other, "echo-vm").click();
  await other.getByRole("tab", { name: "Console" }).click();
  await expect(other.locator(".console-status")).toContainText("Connected: type");
  // It opens on the guest's recent output, not on a blank screen.
  await expect(screen(other)).toContainText("SECOND");
  await expect(page.locator(".console-status")).toContainText("Console closed");
  await other.getByTestId("terminal").click();
  await other.keyboard.type("third");
  await expect(screen(other)).toContainText("THIRD");
  await expect(other.locator(".console-status")).toContainText("Connected: type");
  await other.close();
  await page.getByRole("button", { name: "Reconnect" }).click();
  await expect(page.locator(".console-status")).toContainText("Connected: type");
  await terminal.click();
  await page.keyboard.type("fourth");
  await expect(screen(page)).toContainText("FOURTH");
  await page.getByRole("tab", { name: "General" }).click();
  await page.locator('[data-op="hard_shutdown"]').click();
  await page.locator("#confirm-yes").click();
  await expect(page.locator("#power-state")).toHaveText("Halted");
});

test("a failing action shows its error in words in the task panel", async ({ page }) => {
  await login(page, "root", root);
  await vmNode(page, "broken-vm").click();
  await page.locator('[data-op="start"]').click();
  const failure = page.locator("#tasks .task.failed").first();
  await expect(failure).toContainText("Start broken-vm");
  await expect(failure.locator(".task-error")).not.toBeEmpty();
  await expect(page.locator("#power-state")).toHaveText("Halted");
  await page.screenshot({ path: `${shots}/task-failure.png` });
});

test("a read-only user sees the lifecycle buttons disabled, with the reason", async ({ page }) => {
  await login(page, roUser, roPassword);
  await expect(page.locator("#role")).toHaveText("read-only");
  await vmNode(page, "echo-vm").click();
  for (const op of ["start", "clean_shutdown", "hard_shutdown", "clean_reboot", "pause", "unpause", "clone", "destroy"]) {
    await expect(page.locator(`[data-op="${op}"]`)).toBeDisabled();
  }
  await expect(page.locator("#role-reason")).toContainText("read-only");
  await expect(page.locator("#role-reason")).toContainText("vm-operator");
  await expect(page.locator("#vm-name")).toBeDisabled();
  await page.screenshot({ path: `${shots}/read-only.png` });
  await page.locator("#logout").click();
  await expect(page.getByRole("button", { name: "Log in" })).toBeVisible();
});

test("everything is in reach of the keyboard", async ({ page }) => {
  await page.goto("/");
  // The user name is filled in: the password field has the focus.
  await page.keyboard.type(root);
  await page.keyboard.press("Enter");
  await expect(page.locator("#who")).toContainText("root");
  const focusedIs = (test: string) =>
    page.evaluate((t) => {
      const el = document.activeElement as HTMLElement | null;
      return el?.dataset.name === t || el?.getAttribute("role") === t;
    }, test);
  let found = false;
  for (let i = 0; i < 30 && !found; i++) {
    await page.keyboard.press("Tab");
    found = await focusedIs("echo-vm");
  }
  expect(found).toBe(true);
  await page.keyboard.press("Enter");
  await expect(page.locator("h1")).toHaveText("echo-vm");
  found = false;
  for (let i = 0; i < 30 && !found; i++) {
    await page.keyboard.press("Tab");
    found = await focusedIs("tab");
  }
  expect(found).toBe(true);
  await page.keyboard.press("ArrowRight");
  await expect(page.getByRole("tab", { name: "Console" })).toHaveAttribute("aria-selected", "true");
});

test("the console fits a phone", async ({ page }) => {
  await page.setViewportSize({ width: 390, height: 844 });
  await login(page, "root", root);
  await vmNode(page, "echo-vm").click();
  await expect(page.locator("#power-state")).toBeVisible();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
  expect(overflow).toBe(false);
  await page.screenshot({ path: `${shots}/phone.png`, fullPage: true });
});
