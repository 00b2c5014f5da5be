// The VM view's Networking tab: the VM's VIFs from the store, adding one (VIF.create, and
// VIF.plug when the VM runs: fvd hot-plugs NICs), removing one (VIF.unplug first when it
// is attached, then VIF.destroy) and its locking mode (VIF.set_locking_mode, and
// VIF.set_ipv4_allowed when locked).

import { Rec } from "./api";
import { confirmDialog, formDialog } from "./dialog";
import { h } from "./dom";
import { explainError } from "./errors";
import { refusal } from "./roles";
import { Tab, VmContext, actionButton, firstFreeDevice, refsOf } from "./vmtabs";

/** fvd gives a VM at most this many NICs (devices 0 to 6). */
const MAX_VIFS = 7;

const LOCKING: Record<string, string> = {
  network_default: "network default",
  locked: "locked",
  unlocked: "unlocked",
  disabled: "disabled",
};

/** The VIF's locking mode in words: the network's default spelt out, the addresses of a lock. */
export function lockingText(vif: Rec, network: Rec | undefined): string {
  const mode = String(vif.locking_mode ?? "network_default");
  if (mode === "network_default") return `network default (${String(network?.default_locking_mode ?? "unlocked")})`;
  if (mode === "locked") {
    const ips = Array.isArray(vif.ipv4_allowed) ? vif.ipv4_allowed.map(String) : [];
    return ips.length ? `locked to ${ips.join(", ")}` : "locked (no IPv4 address may pass)";
  }
  return LOCKING[mode] ?? mode;
}

export function byDevice(a: [string, Rec], b: [string, Rec]): number {
  return String(a[1].device).localeCompare(String(b[1].device), undefined, { numeric: true });
}

export class NetworkingTab implements Tab {
  readonly el: HTMLElement;
  private list = h("div", { id: "vif-list" });
  private netSelect: HTMLSelectElement;
  private addButton: HTMLButtonElement;
  private addReason = h("p", { class: "reason", id: "nic-reason" });
  private busy = new Map<string, string>();

  constructor(private readonly c: VmContext) {
    this.netSelect = h("select", { id: "nic-network" });
    this.addButton = h("button", { type: "submit", class: "primary", id: "nic-add" }, "Add NIC");
    const form = h(
      "form",
      { class: "inline-form", "aria-label": "New network interface" },
      h("label", { for: "nic-network" }, "Network"),
      this.netSelect,
      this.addButton,
      this.addReason,
    );
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      void this.add();
    });
    this.el = h(
      "div",
      { role: "tabpanel", id: "panel-networking", "aria-labelledby": "tab-networking", hidden: true },
      this.list,
      h("h2", {}, "Add a network interface"),
      form,
    );
    this.update(new Set(["vm", "network"]));
  }

  private vm(): Rec {
    return this.c.store.get("vm", this.c.ref) ?? {};
  }

  private state(): string {
    return String(this.vm().power_state ?? "");
  }

  private vifs(): Array<[string, Rec]> {
    return refsOf(this.vm().VIFs)
      .map((r): [string, Rec | undefined] => [r, this.c.store.get("vif", r)])
      .filter((e): e is [string, Rec] => !!e[1])
      .sort(byDevice);
  }

  /** Why the VM's devices cannot change now, or null. fvd plugs into running or paused VMs. */
  private stateWhy(): string | null {
    const state = this.state();
    return ["Halted", "Running", "Paused"].includes(state) ? null : `Not possible while the VM is ${state.toLowerCase()}.`;
  }

  update(changed: Set<string>): void {
    if (!["vm", "vif", "network"].some((c) => changed.has(c))) return;
    const role = this.c.session.role;
    const state = this.state();
    const live = state === "Running" || state === "Paused";
    const vifs = this.vifs();

    const networks = this.c.store.all("network").sort((a, b) => String(a[1].name_label).localeCompare(String(b[1].name_label)));
    const chosen = this.netSelect.value;
    this.netSelect.replaceChildren(...networks.map(([r, n]) => h("option", { value: r }, String(n.name_label))));
    if (chosen && networks.some(([r]) => r === chosen)) this.netSelect.value = chosen;
    const addWhy =
      refusal(role, "VIF.create") ??
      (live ? refusal(role, "VIF.plug") : null) ??
      this.stateWhy() ??
      (vifs.length >= MAX_VIFS ? `This VM has all the ${MAX_VIFS} network interfaces it can have.` : null) ??
      (networks.length ? null : "There is no network to connect to.");
    this.addButton.disabled = this.netSelect.disabled = !!addWhy;
    this.addButton.title = addWhy ?? (live ? "Create a network interface and plug it into the running VM" : "Create a network interface");
    this.addReason.textContent = addWhy ?? "";
    this.addReason.hidden = !addWhy;

    if (vifs.length === 0) {
      this.list.replaceChildren(h("p", { class: "muted", id: "no-vifs" }, "This VM has no network interfaces."));
      return;
    }
    const removeWhy = refusal(role, "VIF.destroy") ?? (live ? refusal(role, "VIF.unplug") : null) ?? this.stateWhy();
    const lockWhy = refusal(role, "VIF.set_locking_mode");
    const plugWhy = refusal(role, "VIF.plug");
    const rows = vifs.map(([ref, vif]) => {
      const network = this.c.store.get("network", String(vif.network));
      const device = String(vif.device ?? "");
      const attached = vif.currently_attached === true;
      const busy = this.busy.get(ref);
      const attachedText = busy ?? (attached ? "yes" : live ? "no (not plugged)" : "no (VM not running)");
      const canPlug = live && !attached && !busy;
      return h(
        "tr",
        { "data-device": device },
        h("td", { class: "name nowrap" }, `NIC ${device}`),
        h("td", { "data-label": "MAC", class: "mac" }, h("span", { class: "mono" }, String(vif.MAC ?? ""))),
        h("td", { "data-label": "Network", class: "network" }, String(network?.name_label ?? "(no network)")),
        h("td", { "data-label": "MTU" }, String(vif.MTU ?? "")),
        h("td", { "data-label": "Locking", class: "locking" }, lockingText(vif, network)),
        h("td", { "data-label": "Attached", class: "attached" }, attachedText),
        h(
          "td",
          { class: "row-actions" },
          h(
            "div",
            {},
            canPlug
              ? actionButton("Plug", plugWhy, { class: "small", "data-action": "plug" }, () => void this.c.tasks.run(`Plug NIC ${device} into ${String(this.vm().name_label)}`, "VIF.plug", ref))
              : null,
            actionButton("Locking…", busy ? "Busy." : lockWhy, { class: "small", "data-action": "locking" }, () => void this.locking(ref)),
            actionButton("Remove", busy ? "Busy." : removeWhy, { class: "small danger", "data-action": "remove" }, () => void this.remove(ref)),
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
        h("tr", {}, ["Device", "MAC", "Network", "MTU", "Locking", "Attached"].map((t) => h("th", {}, t)), h("th", {}, h("span", { class: "sr-only" }, "Actions"))),
      ),
      h("tbody", {}, rows),
    );
    const notes = [removeWhy, lockWhy].filter((w): w is string => !!w && w !== addWhy);
    this.list.replaceChildren(table, ...[...new Set(notes)].map((w) => h("p", { class: "reason nic-note" }, w)));
  }

  /** VIF.create on the chosen network at the first free device; on a live VM, VIF.plug. */
  private async add(): Promise<void> {
    const vm = this.vm();
    const name = String(vm.name_label);
    const device = firstFreeDevice(this.vifs().map(([, v]) => String(v.device)));
    const network = this.netSelect.value;
    const mtu = Number(this.c.store.get("network", network)?.MTU ?? 1500);
    this.addButton.disabled = true;
    try {
      const vif = await this.c.session.call("VIF.create", {
        VM: this.c.ref,
        network,
        device,
        MAC: "",
        MTU: mtu,
        other_config: {},
        qos_algorithm_type: "",
        qos_algorithm_params: {},
      });
      const state = this.state();
      if (state === "Running" || state === "Paused") {
        await this.c.tasks.run(`Plug NIC ${device} into ${name}`, "VIF.plug", vif);
      }
    } catch (e) {
      this.c.tasks.fail(`Add a NIC to ${name}`, e);
    } finally {
      this.update(new Set(["vm"]));
    }
  }

  /** As XAPI's clients do: unplug an attached NIC (the guest must let go), then destroy it. */
  private async remove(ref: string): Promise<void> {
    const vif = this.c.store.get("vif", ref) ?? {};
    const vmName = String(this.vm().name_label);
    const label = `NIC ${String(vif.device)} (${String(vif.MAC)})`;
    const attached = vif.currently_attached === true && this.state() !== "Halted";
    const ok = await confirmDialog(
      `Remove ${label} from ${vmName}?`,
      attached
        ? "The guest is asked to let go of the NIC first (a guest that does not answer keeps it); then the interface is removed for good."
        : "The network interface is removed for good.",
      "Remove",
    );
    if (!ok) return;
    this.busy.set(ref, attached ? "unplugging…" : "removing…");
    this.update(new Set(["vm"]));
    try {
      if (attached) await this.c.session.call("VIF.unplug", ref);
      await this.c.session.call("VIF.destroy", ref);
    } catch (e) {
      this.c.tasks.fail(`Remove ${label} from ${vmName}`, e);
    } finally {
      this.busy.delete(ref);
      this.update(new Set(["vm"]));
    }
  }

  private async locking(ref: string): Promise<void> {
    const vif = this.c.store.get("vif", ref) ?? {};
    const network = this.c.store.get("network", String(vif.network));
    const mode = h(
      "select",
      { id: "lock-mode" },
      Object.entries(LOCKING).map(([v, text]) =>
        h("option", { value: v }, v === "network_default" ? `${text} (${String(network?.default_locking_mode ?? "unlocked")})` : text),
      ),
    );
    mode.value = String(vif.locking_mode ?? "network_default");
    const ips = h("input", {
      id: "lock-ipv4",
      autocomplete: "off",
      placeholder: "e.g. 10.0.0.5, 10.0.0.6",
      value: (Array.isArray(vif.ipv4_allowed) ? vif.ipv4_allowed.map(String) : []).join(", "),
    });
    const showIps = () => {
      ips.disabled = mode.value !== "locked";
    };
    mode.addEventListener("change", showIps);
    showIps();
    const label = `NIC ${String(vif.device)} of ${String(this.vm().name_label)}`;
    await formDialog(
      "lock-dialog",
      `Locking of ${label}`,
      [
        {
          id: "lock-mode",
          label: "Locking mode",
          control: mode,
          hint: "Locked: only the IPv4 addresses below may send or receive; disabled: no traffic at all; unlocked: all traffic.",
        },
        { id: "lock-ipv4", label: "Allowed IPv4 addresses (when locked)", control: ips },
      ],
      "Apply",
      async () => {
        try {
          if (mode.value === "locked") {
            const list = ips.value
              .split(/[\s,]+/)
              .map((a) => a.trim())
              .filter((a) => a);
            await this.c.session.call("VIF.set_ipv4_allowed", ref, list);
          }
          if (mode.value !== vif.locking_mode) await this.c.session.call("VIF.set_locking_mode", ref, mode.value);
        } catch (e) {
          this.c.tasks.fail(`Change the locking of ${label}`, e);
          throw e;
        }
      },
      (e) => explainError(e).text,
    );
  }

  show(): void {}
  hide(): void {}
  dispose(): void {}
}
