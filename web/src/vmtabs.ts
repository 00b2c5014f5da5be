// The VM view's Snapshots and Storage tabs. Each tab is told when the store changes and
// when it is shown; what it shows comes from the store (kept live by event.from).

import { Rec, Session } from "./api";
import { askSize, confirmDialog } from "./dialog";
import { bytes, h, parseXenDate } from "./dom";
import { refusal } from "./roles";
import { Store } from "./store";
import { TaskPanel } from "./tasks";

export interface Tab {
  readonly el: HTMLElement;
  update(changed: Set<string>): void;
  show(): void;
  hide(): void;
  dispose(): void;
}

export interface VmContext {
  session: Session;
  store: Store;
  tasks: TaskPanel;
  ref: string;
}

export const NULL_REF = "OpaqueRef:NULL";

/** The first device number ("0", "1", ...) not among `used`: where a new VBD or VIF goes. */
export function firstFreeDevice(used: Iterable<string>): string {
  const taken = new Set(used);
  let n = 0;
  while (taken.has(String(n))) n++;
  return String(n);
}

/** VBD.create's record: VDI `vdi` as VM `vm`'s read/write disk at `userdevice`. */
export function diskVbd(vm: string, vdi: string, userdevice: string, bootable: boolean): Record<string, unknown> {
  return {
    VM: vm,
    VDI: vdi,
    userdevice,
    bootable,
    mode: "RW",
    type: "Disk",
    empty: false,
    other_config: {},
    qos_algorithm_type: "",
    qos_algorithm_params: {},
  };
}

export function refsOf(v: unknown): string[] {
  return Array.isArray(v) ? v.map(String).filter((r) => r && r !== NULL_REF) : [];
}

/** A button disabled with its reason (as title and aria-description) when `why` is set. */
export function actionButton(label: string, why: string | null, attrs: Record<string, unknown>, onclick: () => void): HTMLButtonElement {
  return h(
    "button",
    { ...attrs, disabled: !!why, "aria-disabled": why ? "true" : false, title: why ?? label, onclick },
    label,
  );
}

/** The VDIs behind a VM's disk (not CD) VBDs. */
function diskVdis(store: Store, vm: Rec): string[] {
  return refsOf(vm.VBDs)
    .map((r) => store.get("vbd", r))
    .filter((vbd): vbd is Rec => !!vbd && vbd.type !== "CD" && !vbd.empty)
    .map((vbd) => String(vbd.VDI))
    .filter((r) => r && r !== NULL_REF);
}

// ---------- snapshots ----------

export class SnapshotsTab implements Tab {
  readonly el: HTMLElement;
  private list = h("div", { id: "snapshot-list" });
  private nameInput: HTMLInputElement;
  private takeButton: HTMLButtonElement;
  private takeReason = h("p", { class: "reason", id: "snapshot-reason" });
  private busy = new Set<string>();

  constructor(private readonly c: VmContext) {
    this.nameInput = h("input", { id: "snapshot-name", "aria-label": "Snapshot name", placeholder: "Snapshot name" });
    this.takeButton = h("button", { type: "submit", class: "primary", id: "snapshot-take" }, "Take snapshot");
    const form = h("form", { class: "inline-form" }, this.nameInput, this.takeButton, this.takeReason);
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const name = this.nameInput.value.trim() || this.defaultName();
      this.nameInput.value = "";
      void this.c.tasks.run(`Snapshot ${this.vm().name_label} as ${name}`, "VM.snapshot", this.c.ref, name);
    });
    this.el = h(
      "div",
      { role: "tabpanel", id: "panel-snapshots", "aria-labelledby": "tab-snapshots", hidden: true },
      h("p", { class: "muted" }, "A snapshot keeps the VM's disks and settings as they are now; reverting brings them back."),
      form,
      this.list,
    );
    this.update(new Set(["vm"]));
  }

  private vm(): Rec {
    return this.c.store.get("vm", this.c.ref) ?? {};
  }

  private defaultName(): string {
    const d = new Date();
    const two = (n: number) => String(n).padStart(2, "0");
    return `${String(this.vm().name_label)} ${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
  }

  update(changed: Set<string>): void {
    if (!changed.has("vm") && !changed.has("vbd") && !changed.has("vdi")) return;
    const vm = this.vm();
    const state = String(vm.power_state ?? "");
    const role = this.c.session.role;
    const takeWhy =
      refusal(role, "VM.snapshot") ??
      (["Halted", "Running", "Paused"].includes(state) ? null : `A ${state.toLowerCase()} VM cannot be snapshotted.`);
    this.takeButton.disabled = !!takeWhy;
    this.takeButton.title = takeWhy ?? "Take a snapshot of the VM now";
    this.nameInput.disabled = !!takeWhy;
    this.takeReason.textContent = takeWhy ?? "";
    this.takeReason.hidden = !takeWhy;

    const snaps = refsOf(vm.snapshots)
      .map((r): [string, Rec | undefined] => [r, this.c.store.get("vm", r)])
      .filter((e): e is [string, Rec] => !!e[1])
      .sort((a, b) => String(b[1].snapshot_time).localeCompare(String(a[1].snapshot_time)));
    if (snaps.length === 0) {
      this.list.replaceChildren(h("p", { class: "muted", id: "no-snapshots" }, "This VM has no snapshots."));
      return;
    }
    const revertWhy =
      refusal(role, "VM.revert") ??
      (state === "Halted" ? null : `Shut the VM down first: a revert needs it halted, and it is ${state.toLowerCase()}.`);
    const deleteWhy = refusal(role, "VM.destroy") ?? refusal(role, "VDI.destroy");
    const rows = snaps.map(([ref, snap]) => {
      const name = String(snap.name_label ?? "");
      const taken = parseXenDate(snap.snapshot_time);
      const disks = diskVdis(this.c.store, snap);
      const busy = this.busy.has(ref);
      return h(
        "tr",
        { "data-name": name },
        h("td", { class: "name" }, name),
        h("td", { "data-label": "Taken" }, taken ? taken.toLocaleString() : "—"),
        h("td", { "data-label": "Disks" }, disks.length === 1 ? "1 disk" : `${disks.length} disks`),
        h(
          "td",
          { class: "row-actions" },
          h(
            "div",
            {},
            actionButton("Revert", busy ? "Busy." : revertWhy, { class: "small", "data-action": "revert" }, () => void this.revert(ref, name)),
          actionButton("Delete", busy ? "Busy." : deleteWhy, { class: "small danger", "data-action": "delete" }, () => void this.remove(ref, name)),
          ),
        ),
      );
    });
    const table = h(
      "table",
      { class: "list" },
      h("thead", {}, h("tr", {}, h("th", {}, "Snapshot"), h("th", {}, "Taken"), h("th", {}, "Disks"), h("th", {}, h("span", { class: "sr-only" }, "Actions")))),
      h("tbody", {}, rows),
    );
    const notes = [revertWhy, revertWhy === deleteWhy ? null : deleteWhy].filter((w): w is string => !!w);
    this.list.replaceChildren(table, ...notes.map((w) => h("p", { class: "reason snapshot-note" }, w)));
  }

  private async revert(snap: string, name: string): Promise<void> {
    const vmName = String(this.vm().name_label);
    const ok = await confirmDialog(
      `Revert ${vmName} to ${name}?`,
      "The VM's disks and settings go back to how they were when the snapshot was taken. What changed since is lost.",
      "Revert",
    );
    if (ok) await this.c.tasks.run(`Revert ${vmName} to ${name}`, "VM.revert", snap);
  }

  /** As XAPI's clients do: the snapshot VM goes, then the disk snapshots it held. */
  private async remove(snap: string, name: string): Promise<void> {
    const ok = await confirmDialog(
      `Delete snapshot ${name}?`,
      "The snapshot and its disk snapshots are removed for good. The VM itself is not changed.",
      "Delete",
    );
    if (!ok) return;
    const rec = this.c.store.get("vm", snap);
    const vdis = rec ? diskVdis(this.c.store, rec) : [];
    this.busy.add(snap);
    this.update(new Set(["vm"]));
    try {
      await this.c.session.call("VM.destroy", snap);
      for (const vdi of vdis) await this.c.session.call("VDI.destroy", vdi);
    } catch (e) {
      this.c.tasks.fail(`Delete snapshot ${name}`, e);
    } finally {
      this.busy.delete(snap);
      this.update(new Set(["vm"]));
    }
  }

  show(): void {}
  hide(): void {}
  dispose(): void {}
}

// ---------- storage ----------

export class StorageTab implements Tab {
  readonly el: HTMLElement;
  private list = h("div", { id: "vbd-list" });
  private nameInput: HTMLInputElement;
  private sizeInput: HTMLInputElement;
  private srSelect: HTMLSelectElement;
  private addButton: HTMLButtonElement;
  private addReason = h("p", { class: "reason", id: "disk-reason" });
  private attachSelect: HTMLSelectElement = h("select", { id: "attach-vdi" });
  private attachButton: HTMLButtonElement = h("button", { type: "submit", id: "disk-attach" }, "Attach");
  private attachReason = h("p", { class: "reason", id: "attach-reason" });

  constructor(private readonly c: VmContext) {
    this.nameInput = h("input", { id: "disk-name", placeholder: "Disk name" });
    this.sizeInput = h("input", { id: "disk-size", type: "number", min: "0.25", step: "0.25", value: "1", required: true });
    this.srSelect = h("select", { id: "disk-sr" });
    this.addButton = h("button", { type: "submit", class: "primary", id: "disk-add" }, "Add disk");
    const form = h(
      "form",
      { class: "inline-form", "aria-label": "New disk" },
      h("label", { for: "disk-name" }, "Name"),
      this.nameInput,
      h("label", { for: "disk-size" }, "Size (GiB)"),
      this.sizeInput,
      h("label", { for: "disk-sr" }, "Storage"),
      this.srSelect,
      this.addButton,
      this.addReason,
    );
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      void this.add();
    });
    const attachForm = h(
      "form",
      { class: "inline-form", "aria-label": "Attach a disk" },
      h("label", { for: "attach-vdi" }, "Disk"),
      this.attachSelect,
      this.attachButton,
      this.attachReason,
    );
    attachForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      void this.attach();
    });
    this.el = h(
      "div",
      { role: "tabpanel", id: "panel-storage", "aria-labelledby": "tab-storage", hidden: true },
      this.list,
      h("h2", {}, "Add a disk"),
      form,
      h("h2", {}, "Attach an existing disk"),
      attachForm,
    );
    this.update(new Set(["vm", "sr"]));
  }

  private vm(): Rec {
    return this.c.store.get("vm", this.c.ref) ?? {};
  }

  update(changed: Set<string>): void {
    if (!["vm", "vbd", "vdi", "sr", "pool"].some((c) => changed.has(c))) return;
    const vm = this.vm();
    const state = String(vm.power_state ?? "");
    const role = this.c.session.role;

    // The SRs a disk can go on: not ISO libraries. The pool's default first.
    const defaultSr = String(this.c.store.all("pool")[0]?.[1].default_SR ?? "");
    const srs = this.c.store
      .all("sr")
      .filter(([, sr]) => sr.content_type !== "iso" && sr.type !== "iso")
      .sort((a, b) => Number(b[0] === defaultSr) - Number(a[0] === defaultSr));
    const chosen = this.srSelect.value;
    this.srSelect.replaceChildren(
      ...srs.map(([r, sr]) => {
        const free = Number(sr.physical_size ?? 0) - Number(sr.physical_utilisation ?? 0);
        return h("option", { value: r }, `${String(sr.name_label)} (${bytes(free)} free)`);
      }),
    );
    if (chosen && srs.some(([r]) => r === chosen)) this.srSelect.value = chosen;
    const addWhy =
      refusal(role, "VDI.create") ?? refusal(role, "VBD.create") ?? (srs.length ? null : "There is no storage repository for disks.");
    for (const el of [this.addButton, this.nameInput, this.sizeInput, this.srSelect]) el.disabled = !!addWhy;
    this.addButton.title = addWhy ?? "Create a disk and attach it to this VM";
    this.addReason.textContent = addWhy ?? "";
    this.addReason.hidden = !addWhy;
    this.updateAttach(role);

    const vbds = refsOf(vm.VBDs)
      .map((r): [string, Rec | undefined] => [r, this.c.store.get("vbd", r)])
      .filter((e): e is [string, Rec] => !!e[1])
      .sort((a, b) => String(a[1].userdevice).localeCompare(String(b[1].userdevice), undefined, { numeric: true }));
    if (vbds.length === 0) {
      this.list.replaceChildren(h("p", { class: "muted", id: "no-disks" }, "This VM has no disks."));
      return;
    }
    const detachWhy =
      refusal(role, "VBD.destroy") ??
      (state === "Halted" ? null : `Shut the VM down first: disks are detached from a halted VM, and it is ${state.toLowerCase()}.`);
    const resizeWhy = refusal(role, "VDI.resize");
    const rows = vbds.map(([ref, vbd]) => {
      const vdiRef = String(vbd.VDI ?? "");
      const vdi = vbd.empty ? undefined : this.c.store.get("vdi", vdiRef);
      const sr = vdi ? this.c.store.get("sr", String(vdi.SR)) : undefined;
      const name = vdi ? String(vdi.name_label ?? "") || "(no name)" : vbd.type === "CD" ? "(empty drive)" : "(no disk)";
      const device = String(vbd.userdevice ?? "") + (vbd.device ? ` (${String(vbd.device)})` : "");
      const cantResize = resizeWhy ?? (vdi ? null : "There is no disk in this drive.");
      return h(
        "tr",
        { "data-name": name },
        h("td", { "data-label": "Position" }, device, vbd.type === "CD" ? " (CD)" : ""),
        h("td", { class: "name" }, name),
        h("td", { class: "size", "data-label": "Size" }, vdi ? bytes(vdi.virtual_size) : "—"),
        h("td", { "data-label": "Mode" }, vbd.mode === "RO" ? "read-only" : "read/write"),
        h("td", { "data-label": "Storage" }, sr ? String(sr.name_label) : "—"),
        h(
          "td",
          { class: "row-actions" },
          h(
            "div",
            {},
            actionButton("Resize", cantResize, { class: "small", "data-action": "resize" }, () => void this.resize(vdiRef, name, vdi)),
          actionButton("Detach", detachWhy, { class: "small", "data-action": "detach" }, () => void this.detach(ref, name)),
          ),
        ),
      );
    });
    const table = h(
      "table",
      { class: "list" },
      h(
        "thead",
        {},
        h("tr", {}, ["Position", "Disk", "Size", "Mode", "Storage"].map((t) => h("th", {}, t)), h("th", {}, h("span", { class: "sr-only" }, "Actions"))),
      ),
      h("tbody", {}, rows),
    );
    // A reason the add form below already gives is not repeated here.
    const notes = [detachWhy, resizeWhy].filter((w): w is string => !!w && w !== addWhy);
    this.list.replaceChildren(table, ...[...new Set(notes)].map((w) => h("p", { class: "reason disk-note" }, w)));
  }

  /** The disks no VM uses (no VBD), not snapshots and not ISO images: what may be attached. */
  private freeDisks(): Array<[string, Rec]> {
    return this.c.store
      .all("vdi")
      .filter(([, vdi]) => !vdi.is_a_snapshot && refsOf(vdi.VBDs).length === 0)
      .filter(([, vdi]) => {
        const sr = this.c.store.get("sr", String(vdi.SR));
        return !!sr && sr.content_type !== "iso" && sr.type !== "iso";
      })
      .sort((a, b) => String(a[1].name_label).localeCompare(String(b[1].name_label)));
  }

  private updateAttach(role: string): void {
    const free = this.freeDisks();
    const chosen = this.attachSelect.value;
    this.attachSelect.replaceChildren(
      ...free.map(([r, vdi]) => {
        const sr = this.c.store.get("sr", String(vdi.SR));
        return h("option", { value: r }, `${String(vdi.name_label) || "(no name)"} (${bytes(vdi.virtual_size)}, ${String(sr?.name_label ?? "")})`);
      }),
    );
    if (chosen && free.some(([r]) => r === chosen)) this.attachSelect.value = chosen;
    const why = refusal(role, "VBD.create") ?? (free.length ? null : "Every disk is in use by a VM: there is none to attach.");
    this.attachSelect.disabled = !!why;
    this.attachButton.disabled = !!why;
    this.attachButton.title = why ?? "Attach this disk to the VM";
    this.attachReason.textContent = why ?? "";
    this.attachReason.hidden = !why;
  }

  /** The first device number no VBD of this VM uses. */
  private freeUserdevice(): string {
    return firstFreeDevice(refsOf(this.vm().VBDs).map((r) => String(this.c.store.get("vbd", r)?.userdevice ?? "")));
  }

  /** VBD.create of the chosen free disk at the first free device number. */
  private async attach(): Promise<void> {
    const vdi = this.attachSelect.value;
    if (!vdi) return;
    const name = String(this.c.store.get("vdi", vdi)?.name_label ?? vdi);
    this.attachButton.disabled = true;
    try {
      await this.c.session.call("VBD.create", diskVbd(this.c.ref, vdi, this.freeUserdevice(), false));
    } catch (e) {
      this.c.tasks.fail(`Attach ${name} to ${String(this.vm().name_label)}`, e);
    } finally {
      this.update(new Set(["vm"]));
    }
  }

  /** VDI.create on the chosen SR, then VBD.create at the first free device number. */
  private async add(): Promise<void> {
    const vm = this.vm();
    const size = Math.round(Number(this.sizeInput.value) * 2 ** 30);
    const name = this.nameInput.value.trim() || `${String(vm.name_label)} disk`;
    const userdevice = this.freeUserdevice();
    this.addButton.disabled = true;
    try {
      const vdi = await this.c.session.call("VDI.create", {
        name_label: name,
        name_description: `Created for ${String(vm.name_label)} in the web console`,
        SR: this.srSelect.value,
        virtual_size: size,
        type: "user",
        sharable: false,
        read_only: false,
        other_config: {},
      });
      await this.c.session.call("VBD.create", diskVbd(this.c.ref, String(vdi), userdevice, false));
      this.nameInput.value = "";
    } catch (e) {
      this.c.tasks.fail(`Add disk ${name} to ${String(vm.name_label)}`, e);
    } finally {
      this.update(new Set(["vm"]));
    }
  }

  private async detach(vbd: string, name: string): Promise<void> {
    try {
      await this.c.session.call("VBD.destroy", vbd);
    } catch (e) {
      this.c.tasks.fail(`Detach ${name}`, e);
    }
  }

  private async resize(vdi: string, name: string, rec: Rec | undefined): Promise<void> {
    const now = Number(rec?.virtual_size ?? 0) / 2 ** 30;
    const size = await askSize(`Resize ${name}`, `It is ${bytes(rec?.virtual_size)} now; disks can only grow.`, now, Math.floor(now) + 1);
    if (size === null || size <= Number(rec?.virtual_size ?? 0)) return;
    await this.c.tasks.run(`Resize ${name} to ${bytes(size)}`, "VDI.resize", vdi, size);
  }

  show(): void {}
  hide(): void {}
  dispose(): void {}
}
