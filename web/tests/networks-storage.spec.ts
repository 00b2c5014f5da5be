import { test, expect, Page } from "@playwright/test";
import { root, roUser, roPassword, shots, login, vmNode, forceShutDown } from "./helpers";

// The Networking tab, the storage repository view and the network view, against the fvd
// that crates/fvd/tests/web.rs starts: `nic-vm` has no NIC, `lan-vm` one on `busy-net`,
// `perf-vm` one on the host internal network, `snap-vm` a disk on Local storage.

function treeNode(page: Page, group: string, name: string) {
  return page.locator(`#${group} button.node[data-name="${name}"]`);
}

test("add a NIC to a running VM, lock it to an address, remove it once halted", async ({ page }) => {
  await login(page, "root", root);
  await vmNode(page, "nic-vm").click();
  await page.locator('[data-op="start"]').click();
  await expect(page.locator("#power-state")).toHaveText("Running");
  await page.getByRole("tab", { name: "Networking" }).click();
  await expect(page.locator("#no-vifs")).toBeVisible();

  // Added on the chosen network and hot-plugged: listed, with a MAC, attached.
  await page.getByLabel("Network", { exact: true }).selectOption({ label: "Host internal network" });
  await page.getByRole("button", { name: "Add NIC" }).click();
  const row = page.locator('#vif-list tr[data-device="0"]');
  await expect(row).toBeVisible();
  await expect(row.locator(".network")).toHaveText("Host internal network");
  await expect(row.locator(".mac")).toHaveText(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
  await expect(row.locator(".attached")).toHaveText("yes");
  await expect(row.locator(".locking")).toHaveText("network default (unlocked)");
  await expect(page.locator("#fact-networks")).toHaveText("Host internal network");

  // Locked to one address; a wrong address is refused in words and changes nothing.
  await row.locator('[data-action="locking"]').click();
  const dialog = page.getByRole("dialog");
  await expect(dialog.getByLabel("Allowed IPv4 addresses (when locked)")).toBeDisabled();
  await dialog.getByLabel("Locking mode").selectOption("locked");
  await dialog.getByLabel("Allowed IPv4 addresses (when locked)").fill("10.0.0.300");
  await dialog.getByRole("button", { name: "Apply" }).click();
  await expect(page.locator("#lock-dialog-error")).toContainText("is not valid");
  await expect(row.locator(".locking")).toHaveText("network default (unlocked)");
  await dialog.getByLabel("Allowed IPv4 addresses (when locked)").fill("10.0.0.5, 10.0.0.6");
  await page.screenshot({ path: `${shots}/vif-locking.png` });
  await dialog.getByRole("button", { name: "Apply" }).click();
  await expect(page.getByRole("dialog")).toHaveCount(0);
  await expect(row.locator(".locking")).toHaveText("locked to 10.0.0.5, 10.0.0.6");
  await page.screenshot({ path: `${shots}/vm-networking.png` });
  // And disabled: all its traffic dropped.
  await row.locator('[data-action="locking"]').click();
  await page.getByRole("dialog").getByLabel("Locking mode").selectOption("disabled");
  await page.getByRole("dialog").getByRole("button", { name: "Apply" }).click();
  await expect(row.locator(".locking")).toHaveText("disabled");

  // Running: removing asks the guest to let go first. The tiny guest has no ACPI
  // hot-plug driver and never does: after fvd's wait the NIC stays, and the error says so.
  await row.locator('[data-action="remove"]').click();
  await expect(page.getByRole("dialog")).toContainText("asked to let go of the NIC first");
  await page.locator("#confirm-yes").click();
  await expect(row.locator(".attached")).toHaveText("unplugging…");
  await expect(row.locator('[data-action="remove"]')).toBeDisabled();
  const refused = page.locator("#tasks .task.failed", { hasText: "Remove NIC 0" });
  await expect(refused).toContainText("The VIF stays attached", { timeout: 60_000 });
  await expect(refused).toContainText("DEVICE_DETACH_REJECTED");
  await expect(row.locator(".attached")).toHaveText("yes");

  // Halted: not attached; removed after confirming.
  await forceShutDown(page);
  await page.getByRole("tab", { name: "Networking" }).click();
  await expect(row.locator(".attached")).toHaveText("no (VM not running)");
  await row.locator('[data-action="remove"]').click();
  await expect(page.getByRole("dialog")).toContainText("removed for good");
  await page.locator("#confirm-yes").click();
  await expect(row).toHaveCount(0);
  await expect(page.locator("#no-vifs")).toBeVisible();
  await expect(page.locator("#tasks .task.failed")).toHaveCount(2);
  await expect(page.locator("#tasks .task.failed").last()).toContainText("Change the locking");
});

test("a storage repository shows its capacity and disks; a disk is made and destroyed there", async ({ page }) => {
  await login(page, "root", root);
  await treeNode(page, "tree-srs", "Local storage").click();
  await expect(page.locator("h1")).toHaveText("Local storage");
  const bar = page.getByRole("meter", { name: "Space used" });
  await expect(bar).toBeVisible();
  // The bar is as full as the SR says: physical_utilisation / physical_size.
  const now = Number(await bar.getAttribute("aria-valuenow"));
  const max = Number(await bar.getAttribute("aria-valuemax"));
  expect(max).toBeGreaterThan(0);
  expect(now).toBeGreaterThan(0);
  const width = await bar.locator(".fill").evaluate((el) => el.getBoundingClientRect().width);
  const full = await bar.evaluate((el) => el.clientWidth);
  expect(Math.abs(width / full - now / max)).toBeLessThan(0.02);
  await expect(page.locator("#sr-capacity-text")).toContainText(/used of .* free/);
  // Its disks, with the VMs using them.
  const root_ = page.locator('#sr-vdis tr[data-name="snap-vm root"]');
  await expect(root_.locator(".size")).toHaveText("1 GiB");
  await expect(root_.locator(".users")).toHaveText("snap-vm");
  await expect(root_.locator('[data-action="destroy"]')).toBeDisabled();
  await expect(root_.locator('[data-action="destroy"]')).toHaveAttribute("title", /Attached to snap-vm: detach it first/);
  // Destroying the SR is refused while its disks are in use, and says why.
  await expect(page.locator("#sr-destroy")).toBeDisabled();
  await expect(page.locator("#sr-destroy-reason")).toContainText("detach them first");

  await page.getByLabel("Name", { exact: true }).fill("scratch");
  await page.getByLabel("Size (GiB)").fill("2");
  await page.getByRole("button", { name: "Make disk" }).click();
  const scratch = page.locator('#sr-vdis tr[data-name="scratch"]');
  await expect(scratch.locator(".size")).toHaveText("2 GiB");
  await expect(scratch.locator(".users")).toHaveText("—");
  await page.screenshot({ path: `${shots}/sr-view.png`, fullPage: true });
  await scratch.locator('[data-action="destroy"]').click();
  await expect(page.getByRole("dialog")).toContainText("removed for good");
  await page.locator("#confirm-yes").click();
  await expect(scratch).toHaveCount(0);
  await expect(page.locator("#tasks .task.failed")).toHaveCount(0);
});

test("make a local storage repository, put a disk in it, destroy it", async ({ page }) => {
  await login(page, "root", root);
  await page.getByRole("button", { name: "New storage repository" }).click();
  const dialog = page.getByRole("dialog");
  await dialog.getByLabel("Name").fill("scratch-sr");
  // A relative directory is refused in words before anything is made.
  await dialog.getByLabel("Directory on the host (optional)").fill("relative/dir");
  await dialog.getByRole("button", { name: "Create storage repository" }).click();
  await expect(page.locator("#new-sr-error")).toContainText("must be a full path");
  await page.screenshot({ path: `${shots}/new-sr.png` });
  await dialog.getByLabel("Directory on the host (optional)").fill("");
  await dialog.getByRole("button", { name: "Create storage repository" }).click();
  // It is shown once made, and is in the tree.
  await expect(page.locator("h1")).toHaveText("scratch-sr");
  await expect(treeNode(page, "tree-srs", "scratch-sr")).toBeVisible();
  await expect(page.locator("#sr-type")).toHaveText("ext (user)");
  await expect(page.getByRole("meter", { name: "Space used" })).toBeVisible();
  await expect(page.locator("#no-vdis")).toBeVisible();
  await page.getByLabel("Name", { exact: true }).fill("temp");
  await page.getByRole("button", { name: "Make disk" }).click();
  await expect(page.locator('#sr-vdis tr[data-name="temp"]')).toBeVisible();
  // Its disks are not in use: it may go, with them.
  await page.locator("#sr-destroy").click();
  await expect(page.getByRole("dialog")).toContainText("its 1 disk are removed for good");
  await page.locator("#confirm-yes").click();
  await expect(treeNode(page, "tree-srs", "scratch-sr")).toHaveCount(0);
  await expect(page.locator("h1")).toHaveText("Overview");
  await expect(page.locator("#tasks .task.failed")).toHaveCount(0);
});

test("make a network, see it in the tree, destroy it; a network in use is kept", async ({ page }) => {
  await login(page, "root", root);
  await page.getByRole("button", { name: "New network" }).click();
  const dialog = page.getByRole("dialog");
  await dialog.getByLabel("Name").fill("lab-net");
  await dialog.getByLabel("Description").fill("for the lab");
  await dialog.getByLabel("MTU (bytes)").fill("9000");
  await dialog.getByRole("button", { name: "Create network" }).click();
  await expect(page.locator("h1")).toHaveText("lab-net");
  await expect(treeNode(page, "tree-networks", "lab-net")).toBeVisible();
  await expect(page.locator("#network-mtu")).toHaveText("9000");
  await expect(page.locator("#network-bridge")).toHaveText(/^fvbr\d+$/);
  await expect(page.locator("#no-network-vifs")).toBeVisible();
  await page.locator("#network-destroy").click();
  await page.locator("#confirm-yes").click();
  await expect(treeNode(page, "tree-networks", "lab-net")).toHaveCount(0);
  await expect(page.locator("h1")).toHaveText("Overview");

  // A network with a VM's NIC on it: listed; fvd refuses to destroy it, in words.
  await treeNode(page, "tree-networks", "busy-net").click();
  const vif = page.locator('#network-vif-table tr[data-vm="lan-vm"]');
  await expect(vif).toContainText("0");
  await expect(vif.locator(".mac")).toHaveText(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
  await expect(vif).toContainText("network default (unlocked)");
  await page.screenshot({ path: `${shots}/network-view.png`, fullPage: true });
  await page.locator("#network-destroy").click();
  await page.locator("#confirm-yes").click();
  await expect(page.locator("#network-error")).toHaveText(
    "The network is still used by 1 network interface; remove them from their VMs first.",
  );
  await expect(page.locator("#tasks .task.failed").first()).toContainText("NETWORK_CONTAINS_VIF");
  await expect(treeNode(page, "tree-networks", "busy-net")).toBeVisible();
  // The VM's name opens its view.
  await vif.getByRole("button", { name: "lan-vm" }).click();
  await expect(page.locator("h1")).toHaveText("lan-vm");
  await expect(page.locator("#fact-networks")).toHaveText("busy-net");
});

test("a read-only user cannot change NICs, disks, SRs or networks, and is told why", async ({ page }) => {
  await login(page, roUser, roPassword);
  await expect(page.getByRole("button", { name: "New network" })).toBeDisabled();
  await expect(page.getByRole("button", { name: "New network" })).toHaveAttribute("title", /pool-operator/);
  await expect(page.getByRole("button", { name: "New storage repository" })).toBeDisabled();
  await vmNode(page, "perf-vm").click();
  await page.getByRole("tab", { name: "Networking" }).click();
  await expect(page.getByRole("button", { name: "Add NIC" })).toBeDisabled();
  await expect(page.locator("#nic-reason")).toContainText("vm-admin");
  const row = page.locator('#vif-list tr[data-device="0"]');
  await expect(row.locator('[data-action="remove"]')).toBeDisabled();
  await expect(row.locator('[data-action="locking"]')).toBeDisabled();
  await expect(row.locator('[data-action="locking"]')).toHaveAttribute("title", /pool-operator/);
  await expect(page.locator(".nic-note")).toContainText("pool-operator");
  await page.screenshot({ path: `${shots}/read-only-networking.png` });

  await treeNode(page, "tree-srs", "Local storage").click();
  await expect(page.getByRole("button", { name: "Make disk" })).toBeDisabled();
  await expect(page.locator("#vdi-reason")).toContainText("vm-admin");
  await expect(page.locator("#sr-destroy")).toBeDisabled();
  await expect(page.locator("#sr-destroy-reason")).toContainText("pool-operator");

  await treeNode(page, "tree-networks", "busy-net").click();
  await expect(page.locator("#network-destroy")).toBeDisabled();
  await expect(page.locator("#network-destroy-reason")).toContainText("pool-operator");
});

test("the networking tab and the SR and network views fit a phone", async ({ page }) => {
  await page.setViewportSize({ width: 390, height: 844 });
  await login(page, "root", root);
  const sideways = () => page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
  await vmNode(page, "perf-vm").click();
  await page.getByRole("tab", { name: "Networking" }).click();
  await expect(page.locator('#vif-list tr[data-device="0"]')).toBeVisible();
  expect(await sideways(), "the Networking tab scrolls sideways").toBe(false);
  await page.screenshot({ path: `${shots}/phone-networking.png`, fullPage: true });
  await treeNode(page, "tree-srs", "Local storage").click();
  await expect(page.getByRole("meter", { name: "Space used" })).toBeVisible();
  expect(await sideways(), "the SR view scrolls sideways").toBe(false);
  await page.screenshot({ path: `${shots}/phone-sr.png`, fullPage: true });
  await treeNode(page, "tree-networks", "busy-net").click();
  await expect(page.locator('#network-vif-table tr[data-vm="lan-vm"]')).toBeVisible();
  expect(await sideways(), "the network view scrolls sideways").toBe(false);
  await page.screenshot({ path: `${shots}/phone-network.png`, fullPage: true });
  await page.getByRole("button", { name: "New network" }).click();
  const box = await page.getByRole("dialog").boundingBox();
  expect(box && box.x >= 0 && box.x + box.width <= 390).toBe(true);
  await page.screenshot({ path: `${shots}/phone-new-network.png` });
  await page.getByRole("button", { name: "Cancel" }).click();
  await expect(page.getByRole("dialog")).toHaveCount(0);
});
