// The storage repository and network views (when one is selected in the tree), and the
// dialogs that make new ones. What they show comes from the store (event.from keeps it
// live); what they do goes through the session, async calls as tasks.

import { Rec, Session } from "./api";
import { confirmDialog, formDialog } from "./dialog";
import { bytes, h } from "./dom";
import { explainError } from "./errors";
import { refusal } from "./roles";
import { Store } from "./store";
import { TaskPanel } from "./tasks";
import { byDevice, lockingText } from "./nics";
import { actionButton, refsOf } from "./vmtabs";

export interface ViewContext {
  session: Session;
  store: Store;
  tasks: TaskPanel;
  ref: string;
  /** Shows another object's view (a VM named in a table). */
  open: (cls: string, ref: string) => void;
}

/** The name of the VM a VBD or VIF belongs to, saying when it is a snapshot or template. */
function vmName(store: Store, ref: unknown): string {
  const vm = store.get("vm", String(ref));
  if (!vm) return "?";
  const name = String(vm.name_label ?? "");
  return vm.is_a_snapshot ? `${name} (snapshot)` : vm.is_a_template ? `${name} (template)` : name;
}

/** A VM's name that opens its view. */
function vmLink(c: ViewContext, ref: unknown): HTMLElement {
  const r = String(ref);
  if (!c.store.get("vm", r)) return h("span", {}, "?");
  return h("button", { class: "link", type: "button", "data-vm-ref": r, onclick: () => c.open("vm", r) }, vmName(c.store, r));
}

function table(id: string, heads: string[], rows: HTMLElement[], actions: boolean): HTMLElement {
  return h(
    "table",
    { class: "list", id },
    h("thead", {}, h("tr", {}, heads.map((t) => h("th", {}, t)), actions ? h("th", {}, h("span", { class: "sr-only" }, "Actions")) : null)),
    h("tbody", {}, rows),
  );
}

function facts(rows: Array<[string, string, string?]>): HTMLElement {
  return h(
    "dl",
    { class: "facts" },
    rows.flatMap(([k, v, id]) => [h("dt", {}, k), h("dd", { id: id ?? false }, v)]),
  );
}

// ---------- a storage repository ----------

export class SrView {
  readonly el = h("article", { class: "info sr-view" });
  private title = h("h1", { tabindex: "-1" });
  private toolbar = h("div", { class: "actions", role: "toolbar", "aria-label": "Storage repository actions" });
  private capacity = h("div", { class: "capacity" });
  private facts = h("div");
  private vdis = h("div", { id: "sr-vdis" });
  private nameInput: HTMLInputElement;
  private sizeInput: HTMLInputElement;
  private createButton: HTMLButtonElement;
  private createReason = h("p", { class: "reason", id: "vdi-reason" });
  private busy = new Set<string>();

  constructor(private readonly c: ViewContext) {
    this.nameInput = h("input", { id: "vdi-name", placeholder: "Disk name", autocomplete: "off" });
    this.sizeInput = h("input", { id: "vdi-size", type: "number", min: "0.25", step: "0.25", value: "1", required: true });
    this.createButton = h("button", { type: "submit", class: "primary", id: "vdi-create" }, "Make disk");
    const form = h(
      "form",
      { class: "inline-form", "aria-label": "New disk" },
      h("label", { for: "vdi-name" }, "Name"),
      this.nameInput,
      h("label", { for: "vdi-size" }, "Size (GiB)"),
      this.sizeInput,
      this.createButton,
      this.createReason,
    );
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      void this.createVdi();
    });
    this.el.append(
      h("div", { class: "heading" }, this.title, h("span", { class: "state" }, "Storage repository")),
      this.toolbar,
      this.capacity,
      this.facts,
      h("h2", {}, "Disks"),
      this.vdis,
      h("h2", {}, "Make a disk"),
      form,
    );
    this.update(new Set(["sr"]));
  }

  private sr(): Rec {
    return this.c.store.get("sr", this.c.ref) ?? {};
  }

  private isIso(sr: Rec): boolean {
    return sr.type === "iso" || sr.content_type === "iso";
  }

  /** The SR's VDIs that are disks to show (not base copies fvd keeps for clones). */
  private vdiList(): Array<[string, Rec]> {
    return refsOf(this.sr().VDIs)
      .map((r): [string, Rec | undefined] => [r, this.c.store.get("vdi", r)])
      .filter((e): e is [string, Rec] => !!e[1] && e[1].managed !== false)
      .sort((a, b) => String(a[1].name_label).localeCompare(String(b[1].name_label)));
  }

  /** The VMs whose VBDs hold the VDI. */
  private userRefs(vdi: Rec): string[] {
    return refsOf(vdi.VBDs)
      .map((r) => this.c.store.get("vbd", r))
      .filter((vbd): vbd is Rec => !!vbd)
      .map((vbd) => String(vbd.VM));
  }

  private users(vdi: Rec): string[] {
    return this.userRefs(vdi).map((r) => vmName(this.c.store, r));
  }

  update(changed: Set<string>): void {
    if (!["sr", "vdi", "vbd", "vm"].some((c) => changed.has(c))) return;
    const sr = this.sr();
    const role = this.c.session.role;
    const name = String(sr.name_label ?? "");
    this.title.textContent = name;
    const vdis = this.vdiList();

    // Destroying an SR takes every disk on it: not while a VM uses one.
    const inUse = vdis.filter(([, v]) => this.users(v).length > 0);
    const destroyWhy =
      refusal(role, "SR.destroy") ??
      (this.isIso(sr) ? "An ISO library is not destroyed here: that would delete its ISO files." : null) ??
      (inUse.length
        ? `Disks of this storage repository are attached to VMs (${[...new Set(inUse.flatMap(([, v]) => this.users(v)))].join(", ")}): detach them first.`
        : null);
    this.toolbar.replaceChildren(
      actionButton("Destroy storage repository", destroyWhy, { class: "danger", id: "sr-destroy" }, () => void this.destroy()),
      destroyWhy ? h("p", { class: "reason", id: "sr-destroy-reason" }, destroyWhy) : "",
    );

    // The capacity bar: what the SR's filesystem (or volume group) holds of its size.
    const size = Number(sr.physical_size ?? 0);
    const used = Number(sr.physical_utilisation ?? 0);
    const share = size > 0 ? Math.min(1, used / size) : 0;
    const pct = Math.round(share * 100);
    // Set through the CSSOM: the console's Content-Security-Policy forbids inline styles.
    const fill = h("div", { class: `fill ${share >= 0.95 ? "full" : share >= 0.8 ? "high" : ""}` });
    fill.style.width = `${(share * 100).toFixed(1)}%`;
    const text = size > 0 ? `${bytes(used)} used of ${bytes(size)} (${pct} %), ${bytes(Math.max(0, size - used))} free` : "Size not known";
    this.capacity.replaceChildren(
      h(
        "div",
        {
          class: "bar",
          role: "meter",
          id: "sr-capacity",
          "aria-label": "Space used",
          "aria-valuemin": "0",
          "aria-valuemax": String(size),
          "aria-valuenow": String(used),
          "aria-valuetext": text,
        },
        fill,
      ),
      h("p", { class: "legend", id: "sr-capacity-text" }, text),
    );
    this.facts.replaceChildren(
      facts([
        ["Type", String(sr.type ?? "") + (sr.content_type ? ` (${String(sr.content_type)})` : ""), "sr-type"],
        ["Description", String(sr.name_description || "—")],
        ["Disks", `${vdis.length}, ${bytes(sr.virtual_allocation)} allocated`, "sr-allocated"],
        ["Shared", sr.shared ? "yes" : "no"],
        ["UUID", String(sr.uuid ?? "")],
      ]),
    );

    const createWhy =
      refusal(role, "VDI.create") ?? (this.isIso(sr) ? "An ISO library holds ISO files: disks cannot be made in it." : null);
    for (const el of [this.createButton, this.nameInput, this.sizeInput]) el.disabled = !!createWhy;
    this.createButton.title = createWhy ?? "Make an empty disk in this storage repository";
    this.createReason.textContent = createWhy ?? "";
    this.createReason.hidden = !createWhy;

    if (vdis.length === 0) {
      this.vdis.replaceChildren(h("p", { class: "muted", id: "no-vdis" }, "This storage repository holds no disks."));
      return;
    }
    const roleWhy = refusal(role, "VDI.destroy");
    const rows = vdis.map(([ref, vdi]) => {
      const vname = String(vdi.name_label ?? "") || "(no name)";
      const users = this.users(vdi);
      const why =
        roleWhy ?? (this.busy.has(ref) ? "Busy." : users.length ? `Attached to ${users.join(", ")}: detach it first.` : null);
      return h(
        "tr",
        { "data-name": vname },
        h("td", { class: "name" }, vname, vdi.is_a_snapshot ? h("span", { class: "muted" }, " (snapshot)") : null),
        h("td", { class: "size", "data-label": "Size" }, bytes(vdi.virtual_size)),
        h("td", { class: "physical", "data-label": "On disk" }, bytes(vdi.physical_utilisation)),
        h(
          "td",
          { class: "users", "data-label": "Used by" },
          users.length ? this.userRefs(vdi).flatMap((r, i) => [i ? ", " : "", vmLink(this.c, r)]) : "—",
        ),
        h(
          "td",
          { class: "row-actions" },
          h("div", {}, actionButton("Destroy", why, { class: "small danger", "data-action": "destroy" }, () => void this.destroyVdi(ref, vname))),
        ),
      );
    });
    this.vdis.replaceChildren(
      table("vdi-table", ["Disk", "Size", "On disk", "Used by"], rows, true),
      roleWhy && roleWhy !== createWhy ? h("p", { class: "reason" }, roleWhy) : "",
    );
  }

  private async createVdi(): Promise<void> {
    const sr = this.sr();
    const gib = Number(this.sizeInput.value);
    const name = this.nameInput.value.trim() || "New disk";
    if (!(gib > 0)) {
      this.c.tasks.fail(`Make disk ${name}`, new Error("The size must be a number of GiB above 0."));
      return;
    }
    this.createButton.disabled = true;
    try {
      await this.c.session.call("VDI.create", {
        name_label: name,
        name_description: `Made in ${String(sr.name_label)} in the web console`,
        SR: this.c.ref,
        virtual_size: Math.round(gib * 2 ** 30),
        type: "user",
        sharable: false,
        read_only: false,
        other_config: {},
      });
      this.nameInput.value = "";
    } catch (e) {
      this.c.tasks.fail(`Make disk ${name}`, e);
    } finally {
      this.update(new Set(["sr"]));
    }
  }

  private async destroyVdi(ref: string, name: string): Promise<void> {
    if (!(await confirmDialog(`Destroy disk ${name}?`, "The disk and everything on it are removed for good.", "Destroy"))) return;
    this.busy.add(ref);
    this.update(new Set(["sr"]));
    try {
      await this.c.session.call("VDI.destroy", ref);
    } catch (e) {
      this.c.tasks.fail(`Destroy disk ${name}`, e);
    } finally {
      this.busy.delete(ref);
      this.update(new Set(["sr"]));
    }
  }

  private async destroy(): Promise<void> {
    const sr = this.sr();
    const name = String(sr.name_label);
    const n = this.vdiList().length;
    const ok = await confirmDialog(
      `Destroy ${name}?`,
      `The storage repository and ${n === 1 ? "its 1 disk" : `its ${n} disks`} are removed for good.`,
      "Destroy",
    );
    if (ok) await this.c.tasks.run(`Destroy ${name}`, "SR.destroy", this.c.ref);
  }

  dispose(): void {}
}

// ---------- a network ----------

export class NetworkView {
  readonly el = h("article", { class: "info network-view" });
  private title = h("h1", { tabindex: "-1" });
  private toolbar = h("div", { class: "actions", role: "toolbar", "aria-label": "Network actions" });
  private error = h("p", { class: "error", role: "alert", id: "network-error" });
  private facts = h("div");
  private vifs = h("div", { id: "network-vifs" });

  constructor(private readonly c: ViewContext) {
    this.el.append(
      h("div", { class: "heading" }, this.title, h("span", { class: "state" }, "Network")),
      this.toolbar,
      this.error,
      this.facts,
      h("h2", {}, "Network interfaces on it"),
      this.vifs,
    );
    this.update(new Set(["network"]));
  }

  private net(): Rec {
    return this.c.store.get("network", this.c.ref) ?? {};
  }

  update(changed: Set<string>): void {
    if (!["network", "vif", "vm"].some((c) => changed.has(c))) return;
    const net = this.net();
    const role = this.c.session.role;
    this.title.textContent = String(net.name_label ?? "");
    // fvd refuses while VIFs use the network (NETWORK_CONTAINS_VIF): its answer is shown.
    const why = refusal(role, "network.destroy");
    this.toolbar.replaceChildren(
      actionButton("Destroy network", why, { class: "danger", id: "network-destroy" }, () => void this.destroy()),
      why ? h("p", { class: "reason", id: "network-destroy-reason" }, why) : "",
    );
    const other = net.other_config && typeof net.other_config === "object" ? Object.entries(net.other_config as Rec) : [];
    this.facts.replaceChildren(
      facts([
        ["Description", String(net.name_description || "—")],
        ["Bridge", String(net.bridge || "—"), "network-bridge"],
        ["MTU", String(net.MTU ?? ""), "network-mtu"],
        ["Default locking", String(net.default_locking_mode ?? "unlocked")],
        ["Other config", other.length ? other.map(([k, v]) => `${k}=${String(v)}`).join(", ") : "none", "network-other-config"],
        ["UUID", String(net.uuid ?? "")],
      ]),
    );
    const vifs = refsOf(net.VIFs)
      .map((r): [string, Rec | undefined] => [r, this.c.store.get("vif", r)])
      .filter((e): e is [string, Rec] => !!e[1])
      .sort((a, b) => vmName(this.c.store, a[1].VM).localeCompare(vmName(this.c.store, b[1].VM)) || byDevice(a, b));
    if (vifs.length === 0) {
      this.vifs.replaceChildren(h("p", { class: "muted", id: "no-network-vifs" }, "No VM has a network interface on this network."));
      return;
    }
    const rows = vifs.map(([, vif]) => {
      const vm = vmName(this.c.store, vif.VM);
      return h(
        "tr",
        { "data-vm": vm },
        h("td", { class: "name" }, vmLink(this.c, vif.VM)),
        h("td", { "data-label": "Device" }, String(vif.device ?? "")),
        h("td", { "data-label": "MAC", class: "mac" }, h("span", { class: "mono" }, String(vif.MAC ?? ""))),
        h("td", { "data-label": "Locking" }, lockingText(vif, net)),
        h("td", { "data-label": "Attached" }, vif.currently_attached ? "yes" : "no"),
      );
    });
    this.vifs.replaceChildren(table("network-vif-table", ["VM", "Device", "MAC", "Locking", "Attached"], rows, false));
  }

  private async destroy(): Promise<void> {
    const name = String(this.net().name_label);
    if (!(await confirmDialog(`Destroy network ${name}?`, "The network and its bridge on the host are removed.", "Destroy"))) return;
    this.error.textContent = "";
    try {
      await this.c.session.call("network.destroy", this.c.ref);
    } catch (e) {
      this.error.textContent = explainError(e).text;
      this.c.tasks.fail(`Destroy network ${name}`, e);
    }
  }

  dispose(): void {}
}

// ---------- making them ----------

/** Why this role cannot make networks, or null. */
export function newNetworkRefusal(role: string): string | null {
  return refusal(role, "network.create");
}

/** Why this role cannot make SRs, or null. */
export function newSrRefusal(role: string): string | null {
  return refusal(role, "SR.create");
}

/** Asks for a new network and makes it (network.create); resolves its reference, or null. */
export async function newNetworkDialog(session: Session, tasks: TaskPanel): Promise<string | null> {
  const name = h("input", { id: "net-name", required: true, autocomplete: "off" });
  const desc = h("input", { id: "net-description", autocomplete: "off" });
  const mtu = h("input", { id: "net-mtu", type: "number", min: "68", max: "65535", step: "1", value: "1500", required: true });
  let made: string | null = null;
  await formDialog(
    "new-network",
    "New network",
    [
      { id: "net-name", label: "Name", control: name },
      { id: "net-description", label: "Description", control: desc },
      { id: "net-mtu", label: "MTU (bytes)", control: mtu, hint: "fvd makes a Linux bridge for it on the host; VMs on it can reach each other." },
    ],
    "Create network",
    async () => {
      const label = `New network ${name.value.trim()}`;
      try {
        made = String(
          await session.call("network.create", {
            name_label: name.value.trim(),
            name_description: desc.value.trim(),
            MTU: Number(mtu.value),
            other_config: {},
            tags: [],
          }),
        );
      } catch (e) {
        tasks.fail(label, e);
        throw e;
      }
    },
    (e) => explainError(e).text,
  );
  return made;
}

/**
 * Asks for a new local storage repository and makes it: SR.create of type `ext` (files in
 * a directory on the host: the one given, made if missing, or one fvd makes in its data
 * directory). Resolves its reference, or null.
 */
export async function newSrDialog(session: Session, store: Store, tasks: TaskPanel): Promise<string | null> {
  const name = h("input", { id: "sr-name", required: true, autocomplete: "off" });
  const desc = h("input", { id: "sr-description", autocomplete: "off" });
  const path = h("input", { id: "sr-path", autocomplete: "off", placeholder: "/srv/vm-disks" });
  let made: string | null = null;
  await formDialog(
    "new-sr",
    "New storage repository",
    [
      { id: "sr-name", label: "Name", control: name },
      { id: "sr-description", label: "Description", control: desc },
      {
        id: "sr-path",
        label: "Directory on the host (optional)",
        control: path,
        hint: "Disks are files in this directory, made if missing. Left empty, fvd makes one in its data directory.",
      },
    ],
    "Create storage repository",
    async () => {
      const label = `New storage repository ${name.value.trim()}`;
      const dir = path.value.trim();
      if (dir && !dir.startsWith("/")) throw new Error(`The directory must be a full path, starting with "/": ${dir}`);
      const host = store.all("host")[0]?.[0];
      try {
        if (!host) throw new Error("There is no host to make it on.");
        made = String(
          await session.call("SR.create", host, dir ? { path: dir } : {}, 0, name.value.trim(), desc.value.trim(), "ext", "user", false, {}),
        );
      } catch (e) {
        tasks.fail(label, e);
        throw e;
      }
    },
    (e) => explainError(e).text,
  );
  return made;
}
