// The New VM wizard: a VM from a template, as `fv vm-install` makes one (VM.clone, or
// VM.copy into another SR; VM.provision; is_a_template false), then the choices of the
// form applied with the ordinary calls: vCPUs, memory, the first disk's size (or a new
// disk when the template has none) and the network of its NIC.

import { Rec, Session } from "./api";
import { bytes, h } from "./dom";
import { explainError } from "./errors";
import { refusal } from "./roles";
import { Store } from "./store";
import { TaskPanel } from "./tasks";
import { diskVbd } from "./vmtabs";

const NULL_REF = "OpaqueRef:NULL";
const MIB = 2 ** 20;
const GIB = 2 ** 30;

function refs(v: unknown): string[] {
  return Array.isArray(v) ? v.map(String).filter((r) => r && r !== NULL_REF) : [];
}

/** Why this role cannot make VMs, or null. */
export function newVmRefusal(role: string): string | null {
  return refusal(role, "VM.clone") ?? refusal(role, "VM.provision") ?? refusal(role, "VDI.create");
}

/** The template's disks (not CDs): VBD and VDI records, first position first. */
function disks(store: Store, vm: Rec): Array<{ vbd: Rec; vdiRef: string; vdi: Rec }> {
  return refs(vm.VBDs)
    .map((r) => store.get("vbd", r))
    .filter((vbd): vbd is Rec => !!vbd && vbd.type !== "CD" && !vbd.empty)
    .map((vbd) => ({ vbd, vdiRef: String(vbd.VDI), vdi: store.get("vdi", String(vbd.VDI)) }))
    .filter((d): d is { vbd: Rec; vdiRef: string; vdi: Rec } => !!d.vdi)
    .sort((a, b) => String(a.vbd.userdevice).localeCompare(String(b.vbd.userdevice), undefined, { numeric: true }));
}

function field(label: string, id: string, control: HTMLElement, note?: HTMLElement): HTMLElement {
  return h("div", { class: "field" }, h("label", { for: id }, label), control, note ?? null);
}

/**
 * Opens the wizard; resolves the new VM's reference once it is made, or null if the user
 * cancelled. Failures are shown in the dialog and in the task panel.
 */
export function newVmWizard(session: Session, store: Store, tasks: TaskPanel, template?: string): Promise<string | null> {
  return new Promise((resolve) => {
    const templates = store
      .all("vm")
      .filter(([, r]) => r.is_a_template && !r.is_a_snapshot)
      .sort((a, b) => String(a[1].name_label).localeCompare(String(b[1].name_label)));
    const srs = store.all("sr").filter(([, sr]) => sr.content_type !== "iso" && sr.type !== "iso");
    const networks = store.all("network").sort((a, b) => String(a[1].name_label).localeCompare(String(b[1].name_label)));
    const memoryWhy = refusal(session.role, "VM.set_memory_limits");

    const templateSel = h("select", { id: "wiz-template", required: true }, templates.map(([r, t]) => h("option", { value: r }, String(t.name_label))));
    const name = h("input", { id: "wiz-name", required: true, autocomplete: "off" });
    const vcpus = h("input", { id: "wiz-vcpus", type: "number", min: "1", max: "64", step: "1", required: true });
    const memory = h("input", { id: "wiz-memory", type: "number", min: "16", step: "16", required: true, disabled: !!memoryWhy, title: memoryWhy ?? false });
    const diskSize = h("input", { id: "wiz-disk", type: "number", min: "0.25", step: "0.25", required: true });
    const srSel = h("select", { id: "wiz-sr" }, srs.map(([r, sr]) => h("option", { value: r }, `${String(sr.name_label)} (${bytes(Number(sr.physical_size ?? 0) - Number(sr.physical_utilisation ?? 0))} free)`)));
    const netSel = h(
      "select",
      { id: "wiz-network" },
      networks.map(([r, n]) => h("option", { value: r }, String(n.name_label))),
      h("option", { value: "" }, "No network"),
    );
    const diskNote = h("p", { class: "hint", id: "wiz-disk-note" });
    const progress = h("ol", { class: "steps", id: "wiz-steps", "aria-live": "polite" });
    const error = h("p", { class: "error", role: "alert", id: "wiz-error" });
    const create = h("button", { type: "submit", class: "primary", id: "wiz-create" }, "Create VM");
    const cancel = h("button", { type: "button", id: "wiz-cancel" }, "Cancel");
    let result: string | null = null;

    const fill = () => {
      const t = store.get("vm", templateSel.value) ?? {};
      const existing = new Set(store.all("vm").map(([, r]) => String(r.name_label)));
      let n = 1;
      const base = String(t.name_label ?? "VM").replace(/ template$/i, "");
      while (existing.has(`${base} ${n}`)) n++;
      name.value = `${base} ${n}`;
      vcpus.value = String(t.VCPUs_at_startup ?? 1);
      memory.value = String(Math.round(Number(t.memory_static_max ?? 256 * MIB) / MIB));
      const d = disks(store, t)[0];
      diskSize.value = d ? String(Math.max(0.25, Math.ceil((Number(d.vdi.virtual_size) / GIB) * 4) / 4)) : "1";
      diskSize.min = d ? diskSize.value : "0.25";
      const defaultSr = String(store.all("pool")[0]?.[1].default_SR ?? "");
      srSel.value = d ? String(d.vdi.SR) : defaultSr || srSel.value;
      diskNote.textContent = d
        ? `The template's disk ${String(d.vdi.name_label)} (${bytes(d.vdi.virtual_size)}) is copied; it can only grow.`
        : "The template has no disk: a new empty one is made.";
      const vif = refs(t.VIFs).map((r) => store.get("vif", r)).find((v) => !!v);
      netSel.value = vif ? String(vif.network) : (networks[0]?.[0] ?? "");
    };
    templateSel.addEventListener("change", fill);
    if (template) templateSel.value = template;
    fill();

    const form = h(
      "form",
      { class: "wizard-form" },
      h("h2", { id: "wiz-title" }, "New VM"),
      field("Template", "wiz-template", templateSel),
      field("Name", "wiz-name", name),
      h("div", { class: "row" }, field("vCPUs", "wiz-vcpus", vcpus), field("Memory (MiB)", "wiz-memory", memory, memoryWhy ? h("p", { class: "reason" }, memoryWhy) : undefined)),
      h("div", { class: "row" }, field("Disk size (GiB)", "wiz-disk", diskSize), field("Storage", "wiz-sr", srSel)),
      diskNote,
      field("Network", "wiz-network", netSel),
      progress,
      error,
      h("div", { class: "buttons" }, cancel, create),
    );
    const dialog = h("dialog", { class: "wizard", "aria-labelledby": "wiz-title" }, form);
    let busy = false;
    cancel.addEventListener("click", () => {
      if (!busy) dialog.close();
    });
    // Escape while the VM is being made would lose sight of it: the steps go on.
    dialog.addEventListener("cancel", (ev) => {
      if (busy) ev.preventDefault();
    });
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(result);
    });

    const step = (text: string): HTMLElement => {
      const li = h("li", { class: "running" }, text);
      progress.append(li);
      return li;
    };

    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      void (async () => {
        create.disabled = true;
        cancel.disabled = true;
        busy = true;
        error.textContent = "";
        progress.replaceChildren();
        const label = `New VM ${name.value}`;
        let current: HTMLElement | null = null;
        const run = async <T>(text: string, f: () => Promise<T>): Promise<T> => {
          current = step(text);
          const v = await f();
          current.className = "done";
          return v;
        };
        try {
          const made = await createVm(session, store, run, {
            template: templateSel.value,
            name: name.value.trim(),
            vcpus: Number(vcpus.value),
            memory: memoryWhy ? null : Math.round(Number(memory.value) * MIB),
            disk: Math.round(Number(diskSize.value) * GIB),
            sr: srSel.value,
            network: netSel.value,
          });
          result = made;
          dialog.close();
        } catch (e) {
          (current as HTMLElement | null)?.classList.replace("running", "failed");
          error.textContent = explainError(e).text;
          tasks.fail(label, e);
          create.disabled = false;
        } finally {
          busy = false;
          cancel.disabled = false;
        }
      })();
    });
    document.body.append(dialog);
    dialog.showModal();
    name.focus();
    name.select();
  });
}

interface Choices {
  template: string;
  name: string;
  vcpus: number;
  /** Bytes, or null to keep the template's. */
  memory: number | null;
  disk: number;
  sr: string;
  /** A network reference, or "" for none. */
  network: string;
}

type Runner = <T>(text: string, f: () => Promise<T>) => Promise<T>;

async function createVm(session: Session, store: Store, run: Runner, c: Choices): Promise<string> {
  const call = (method: string, ...args: unknown[]) => session.call(method, ...args);
  const t = store.get("vm", c.template) ?? {};
  const tDisks = disks(store, t);
  // The template's disks are cloned where they are (copy-on-write); another SR needs a copy.
  const sameSr = tDisks.every((d) => String(d.vdi.SR) === c.sr);
  const vm = String(
    sameSr
      ? await run("Clone the template", () => call("VM.clone", c.template, c.name))
      : await run("Copy the template into the storage repository", () => call("VM.copy", c.template, c.name, c.sr)),
  );
  await run("Provision its disks", () => call("VM.provision", vm));
  await run("Make it a VM", () => call("VM.set_is_a_template", vm, false));
  await run(`Give it ${c.vcpus} vCPU${c.vcpus === 1 ? "" : "s"}`, async () => {
    const now = Number(t.VCPUs_max ?? 1);
    if (c.vcpus > now) await call("VM.set_VCPUs_max", vm, c.vcpus);
    await call("VM.set_VCPUs_at_startup", vm, c.vcpus);
    if (c.vcpus < now) await call("VM.set_VCPUs_max", vm, c.vcpus);
  });
  const memory = c.memory;
  if (memory !== null && memory !== Number(t.memory_static_max)) {
    await run(`Give it ${bytes(memory)} of memory`, () =>
      call("VM.set_memory_limits", vm, Math.min(memory, Number(t.memory_static_min ?? memory)), memory, memory, memory),
    );
  }
  const rec = (await call("VM.get_record", vm)) as Rec;
  const vbds = await Promise.all(refs(rec.VBDs).map(async (r) => (await call("VBD.get_record", r)) as Rec));
  const first = vbds
    .filter((v) => v.type !== "CD" && !v.empty && String(v.VDI) !== NULL_REF)
    .sort((a, b) => String(a.userdevice).localeCompare(String(b.userdevice), undefined, { numeric: true }))[0];
  if (first) {
    const size = Number(await call("VDI.get_virtual_size", first.VDI));
    if (c.disk > size) await run(`Grow its disk to ${bytes(c.disk)}`, () => call("VDI.resize", first.VDI, c.disk));
  } else {
    await run(`Make a ${bytes(c.disk)} disk`, async () => {
      const vdi = await call("VDI.create", {
        name_label: `${c.name} disk`,
        name_description: "Made by the New VM wizard",
        SR: c.sr,
        virtual_size: c.disk,
        type: "system",
        sharable: false,
        read_only: false,
        other_config: {},
      });
      await call("VBD.create", diskVbd(vm, String(vdi), "0", true));
    });
  }
  const vifs = await Promise.all(refs(rec.VIFs).map(async (r) => [r, String(await call("VIF.get_network", r))] as const));
  const keep = c.network !== "" && vifs.length === 1 && vifs[0][1] === c.network;
  if (!keep) {
    await run(c.network ? "Connect it to the network" : "Remove its network interfaces", async () => {
      for (const [r] of vifs) await call("VIF.destroy", r);
      if (c.network) {
        await call("VIF.create", { VM: vm, network: c.network, device: "0", MAC: "", MTU: 1500, other_config: {}, qos_algorithm_type: "", qos_algorithm_params: {} });
      }
    });
  }
  return vm;
}
