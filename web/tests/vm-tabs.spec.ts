import { test, expect, Page } from "@playwright/test";
import { root, roUser, roPassword, shots, login, vmNode, forceShutDown } from "./helpers";

// The VM view's Snapshots, Performance and Storage tabs, against the fvd that
// crates/fvd/tests/web.rs starts: `snap-vm` has one 1 GiB disk, `disk-vm` none, `perf-vm`
// a NIC on the host internal network.

/** A XenAPI call made as another client would, with the page's session. */
async function apiCall(page: Page, method: string, ...params: unknown[]): Promise<unknown> {
  return page.evaluate(
    async ([method, params]) => {
      const s = JSON.parse(sessionStorage.getItem("fv-session") ?? "{}") as { ref: string };
      const r = await fetch("/jsonrpc", {
        method: "POST",
        body: JSON.stringify({ jsonrpc: "2.0", method, params: [s.ref, ...(params as unknown[])], id: 1 }),
      });
      return ((await r.json()) as { result: unknown }).result;
    },
    [method, params] as const,
  );
}

async function vmRef(page: Page, name: string): Promise<string> {
  return ((await apiCall(page, "VM.get_by_name_label", name)) as string[])[0];
}

test("take a snapshot of a running VM, revert to it once halted, delete it", async ({ page }) => {
  await login(page, "root", root);
  await vmNode(page, "snap-vm").click();
  await expect(page.locator("#fact-args")).toHaveText("(default)");
  await page.locator('[data-op="start"]').click();
  await expect(page.locator("#power-state")).toHaveText("Running");

  await page.getByRole("tab", { name: "Snapshots" }).click();
  await expect(page.locator("#no-snapshots")).toBeVisible();
  await page.getByLabel("Snapshot name").fill("before upgrade");
  await page.getByRole("button", { name: "Take snapshot" }).click();
  // It appears through event.from, with its disk.
  const row = page.locator('#snapshot-list tr[data-name="before upgrade"]');
  await expect(row).toBeVisible();
  await expect(row).toContainText("1 disk");
  // A running VM cannot be reverted: the button says why.
  await expect(row.locator('[data-action="revert"]')).toBeDisabled();
  await expect(row.locator('[data-action="revert"]')).toHaveAttribute("title", /halted.*running/);
  await expect(page.locator(".snapshot-note")).toContainText("Shut the VM down first");
  await page.screenshot({ path: `${shots}/vm-snapshots.png` });

  // Change a setting the snapshot keeps, then revert: it comes back.
  await apiCall(page, "VM.set_PV_args", await vmRef(page, "snap-vm"), "console=ttyS0 changed");
  await expect(page.locator("#fact-args")).toHaveText("console=ttyS0 changed");
  await forceShutDown(page);
  await page.getByRole("tab", { name: "Snapshots" }).click();
  await expect(row.locator('[data-action="revert"]')).toBeEnabled();
  await row.locator('[data-action="revert"]').click();
  await expect(page.getByRole("dialog")).toContainText("What changed since is lost");
  await page.locator("#confirm-yes").click();
  await page.getByRole("tab", { name: "General" }).click();
  await expect(page.locator("#fact-args")).toHaveText("(default)");
  const vdisBefore = ((await apiCall(page, "VDI.get_all")) as string[]).length;

  // Delete: the snapshot and its disk snapshot go; the VM keeps its disk.
  await page.getByRole("tab", { name: "Snapshots" }).click();
  await row.locator('[data-action="delete"]').click();
  await expect(page.getByRole("dialog")).toContainText("removed for good");
  await page.locator("#confirm-yes").click();
  await expect(row).toHaveCount(0);
  await expect(page.locator("#no-snapshots")).toBeVisible();
  expect(((await apiCall(page, "VDI.get_all")) as string[]).length).toBeLessThan(vdisBefore);
  await expect(page.locator("#tasks .task.failed")).toHaveCount(0);
  await page.getByRole("tab", { name: "Storage" }).click();
  await expect(page.locator("#vbd-list tbody tr")).toHaveCount(1);
});

test("the performance tab draws a running VM's CPU, memory and network", async ({ page }) => {
  await login(page, "root", root);
  await vmNode(page, "perf-vm").click();
  await expect(page.locator("#fact-networks")).toHaveText("Host internal network");
  await page.locator('[data-op="start"]').click();
  await expect(page.locator("#power-state")).toHaveText("Running");
  await page.getByRole("tab", { name: "Performance" }).click();
  // fvd samples every 5 s; the tab refetches every 5 s: two samples make a line.
  const cpu = page.locator("#chart-cpu path.line").first();
  await expect(cpu).toHaveAttribute("data-points", /^([2-9]|\d\d+)$/, { timeout: 45_000 });
  await expect(cpu).toHaveAttribute("d", /^M[\d.]+,[\d.]+L[\d.]+,[\d.]+/);
  await expect(page.locator("#chart-memory path.line").first()).toHaveAttribute("data-points", /^([2-9]|\d\d+)$/);
  // The memory graph's scale reaches the VM's 64 MiB.
  await expect(page.locator("#chart-memory")).toHaveAttribute("aria-label", /VM memory: 64 MiB/);
  // Its NIC's traffic, both ways (the guest sends nothing: a flat line is still a line).
  const net = page.locator("#chart-network path.line");
  await expect(net).toHaveCount(2);
  await expect(page.locator("#chart-network")).toHaveAttribute("aria-label", /VIF 0 received: .*; VIF 0 sent: /);
  await expect(page.locator("#perf-status")).toContainText("every 5 s");
  await page.screenshot({ path: `${shots}/vm-performance.png`, fullPage: true });
  // Another range asks the 1-minute archive.
  await page.locator('[data-range="2h"]').click();
  await expect(page.locator('[data-range="2h"]')).toHaveAttribute("aria-pressed", "true");
  await expect(page.locator("#perf-status")).toContainText(/every 60 s|No samples/);
  await forceShutDown(page);
});

test("add a disk, resize it while running, detach it when halted", async ({ page }) => {
  await login(page, "root", root);
  await vmNode(page, "disk-vm").click();
  await page.getByRole("tab", { name: "Storage" }).click();
  await expect(page.locator("#no-disks")).toBeVisible();
  await page.locator("#disk-name").fill("data");
  await page.getByLabel("Size (GiB)").fill("1");
  await expect(page.locator("#disk-sr")).toContainText("Local storage");
  await page.getByRole("button", { name: "Add disk" }).click();
  const row = page.locator('#vbd-list tr[data-name="data"]');
  await expect(row).toBeVisible();
  await expect(row.locator(".size")).toHaveText("1 GiB");
  await expect(row).toContainText("Local storage");
  await expect(row).toContainText("read/write");

  // Running: the disk stays attached (detach is disabled, with why); it can grow.
  await page.getByRole("tab", { name: "General" }).click();
  await page.locator('[data-op="start"]').click();
  await expect(page.locator("#power-state")).toHaveText("Running");
  await page.getByRole("tab", { name: "Storage" }).click();
  await expect(row.locator('[data-action="detach"]')).toBeDisabled();
  await expect(page.locator(".disk-note")).toContainText("Shut the VM down first");
  await row.locator('[data-action="resize"]').click();
  await expect(page.getByRole("dialog")).toContainText("It is 1 GiB now");
  await page.getByLabel("New size in GiB").fill("2");
  await page.locator("#size-yes").click();
  await expect(row.locator(".size")).toHaveText("2 GiB");
  await page.screenshot({ path: `${shots}/vm-storage.png` });
  await expect(page.locator("#tasks .task.failed")).toHaveCount(0);

  await forceShutDown(page);
  await page.getByRole("tab", { name: "Storage" }).click();
  await row.locator('[data-action="detach"]').click();
  await expect(row).toHaveCount(0);
  await expect(page.locator("#no-disks")).toBeVisible();

  // Detached, the disk is free: attached again, it comes back with its data's size.
  const free = page.locator("#attach-vdi option", { hasText: "data (2 GiB" });
  await expect(free).toHaveCount(1);
  await page.locator("#attach-vdi").selectOption((await free.getAttribute("value")) ?? "");
  await page.getByRole("button", { name: "Attach", exact: true }).click();
  await expect(row).toBeVisible();
  await expect(row.locator(".size")).toHaveText("2 GiB");
  await expect(page.locator("#attach-vdi option", { hasText: "data (2 GiB" })).toHaveCount(0);
  await expect(page.locator("#tasks .task.failed")).toHaveCount(0);
});

test("a read-only user cannot snapshot, revert or change disks, and is told why", async ({ page }) => {
  await login(page, roUser, roPassword);
  await vmNode(page, "snap-vm").click();
  await page.getByRole("tab", { name: "Snapshots" }).click();
  await expect(page.getByRole("button", { name: "Take snapshot" })).toBeDisabled();
  await expect(page.locator("#snapshot-reason")).toContainText("vm-power-admin");
  await page.getByRole("tab", { name: "Storage" }).click();
  await expect(page.getByRole("button", { name: "Add disk" })).toBeDisabled();
  await expect(page.locator("#disk-reason")).toContainText("vm-admin");
  const row = page.locator("#vbd-list tbody tr").first();
  await expect(row.locator('[data-action="resize"]')).toBeDisabled();
  await expect(row.locator('[data-action="detach"]')).toBeDisabled();
  await expect(page.getByRole("button", { name: "Attach", exact: true })).toBeDisabled();
  await expect(page.locator("#attach-reason")).toContainText("vm-admin");
  await page.screenshot({ path: `${shots}/read-only-storage.png` });
});

test("the New VM wizard makes a VM from a template with the chosen settings", async ({ page }) => {
  await login(page, "root", root);
  await page.getByRole("button", { name: "New VM" }).click();
  const dialog = page.getByRole("dialog");
  await expect(dialog).toContainText("New VM");
  await dialog.getByLabel("Template").selectOption({ label: "echo-template" });
  await expect(page.locator("#wiz-disk-note")).toContainText("no disk");
  await dialog.getByLabel("Name").fill("wizard-vm");
  await dialog.getByLabel("vCPUs").fill("2");
  await dialog.getByLabel("Memory (MiB)").fill("96");
  await dialog.getByLabel("Disk size (GiB)").fill("1.5");
  const local = await dialog.locator("#wiz-sr option", { hasText: "Local storage" }).getAttribute("value");
  await dialog.getByLabel("Storage").selectOption(local ?? "");
  await dialog.getByLabel("Network").selectOption({ label: "Host internal network" });
  await page.screenshot({ path: `${shots}/new-vm-wizard.png` });
  await dialog.getByRole("button", { name: "Create VM" }).click();

  // The new VM is shown, with what was asked for.
  await expect(page.locator("h1")).toHaveText("wizard-vm");
  await expect(vmNode(page, "wizard-vm")).toBeVisible();
  await expect(page.locator("#power-state")).toHaveText("Halted");
  await expect(page.locator("#fact-vcpus")).toHaveText("2");
  await expect(page.locator("#fact-memory")).toHaveText("96 MiB");
  await expect(page.locator("#fact-networks")).toHaveText("Host internal network");
  await expect(page.locator("#fact-template")).toHaveCount(0);
  await page.getByRole("tab", { name: "Storage" }).click();
  const disk = page.locator("#vbd-list tbody tr");
  await expect(disk).toHaveCount(1);
  await expect(disk.locator(".size")).toHaveText("1.5 GiB");
  await expect(disk).toContainText("Local storage");
  // It runs.
  await page.getByRole("tab", { name: "General" }).click();
  await page.locator('[data-op="start"]').click();
  await expect(page.locator("#power-state")).toHaveText("Running");
  await expect(page.locator("#fact-vcpus")).toHaveText("2");
  await expect(page.locator("#tasks .task.failed")).toHaveCount(0);
  await forceShutDown(page);
});

test("the wizard copies a template's disk, grows it, and can leave the VM off the network", async ({ page }) => {
  await login(page, "root", root);
  // Started from the template's own view, the wizard picks that template.
  await page.locator("#tree-templates button.node", { hasText: "disk-template" }).click();
  await page.getByRole("button", { name: "New VM" }).click();
  const dialog = page.getByRole("dialog");
  await expect(dialog.getByLabel("Template")).toHaveValue(await vmRef(page, "disk-template"));
  await expect(page.locator("#wiz-disk-note")).toContainText("disk-template root (1 GiB) is copied");
  await expect(dialog.getByLabel("Disk size (GiB)")).toHaveValue("1");
  await dialog.getByLabel("Name").fill("grown-vm");
  await dialog.getByLabel("Disk size (GiB)").fill("2");
  await dialog.getByLabel("Network").selectOption({ label: "No network" });
  await dialog.getByRole("button", { name: "Create VM" }).click();

  await expect(page.locator("h1")).toHaveText("grown-vm");
  await expect(page.locator("#fact-networks")).toHaveText("none");
  await page.getByRole("tab", { name: "Storage" }).click();
  await expect(page.locator("#vbd-list tbody tr")).toHaveCount(1);
  await expect(page.locator("#vbd-list tbody tr .size")).toHaveText("2 GiB");
  // The template keeps its own 1 GiB disk.
  await page.locator("#tree-templates button.node", { hasText: "disk-template" }).click();
  await page.getByRole("tab", { name: "Storage" }).click();
  await expect(page.locator('#vbd-list tr[data-name="disk-template root"] .size')).toHaveText("1 GiB");
  await expect(page.locator("#tasks .task.failed")).toHaveCount(0);
});

test("a read-only user cannot open the New VM wizard, and is told why", async ({ page }) => {
  await login(page, roUser, roPassword);
  await expect(page.getByRole("button", { name: "New VM" })).toBeDisabled();
  await expect(page.locator("#new-vm-reason")).toContainText("vm-admin");
});

test("the new tabs and the wizard fit a phone", async ({ page }) => {
  await page.setViewportSize({ width: 390, height: 844 });
  await login(page, "root", root);
  await vmNode(page, "snap-vm").click();
  await expect(page.locator("#power-state")).toBeVisible();
  const sideways = () => page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
  for (const tab of ["Storage", "Snapshots", "Performance"]) {
    await page.getByRole("tab", { name: tab }).click();
    await expect(page.locator(`#panel-${tab.toLowerCase()}`)).toBeVisible();
    expect(await sideways(), `the ${tab} tab scrolls sideways`).toBe(false);
    await page.screenshot({ path: `${shots}/phone-${tab.toLowerCase()}.png`, fullPage: true });
  }
  await page.getByRole("button", { name: "New VM" }).click();
  await expect(page.getByRole("dialog")).toContainText("New VM");
  const box = await page.getByRole("dialog").boundingBox();
  expect(box && box.x >= 0 && box.x + box.width <= 390).toBe(true);
  await page.screenshot({ path: `${shots}/phone-new-vm.png` });
  await page.getByRole("button", { name: "Cancel" }).click();
  await expect(page.getByRole("dialog")).toHaveCount(0);
});
