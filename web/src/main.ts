// Ferrovisor's web console: log in with a XenAPI session, browse the pool, act on VMs.

import "./style.css";
import { Rec, Session } from "./api";
import { h, bytes, duration, parseXenDate } from "./dom";
import { explainError } from "./errors";
import { refusal } from "./roles";
import { Store } from "./store";
import { TaskPanel } from "./tasks";
import { SerialConsole } from "./console";
import { confirmDialog } from "./dialog";
import { SnapshotsTab, StorageTab, Tab } from "./vmtabs";
import { PerformanceTab } from "./perf";
import { newVmRefusal, newVmWizard } from "./wizard";
import { NetworkingTab } from "./nics";
import { NetworkView, SrView, newNetworkDialog, newNetworkRefusal, newSrDialog, newSrRefusal } from "./views";

const app = document.getElementById("app") as HTMLElement;

// ---------- login ----------

function showLogin(message?: string): void {
  const error = h("p", { class: "error", role: "alert", id: "login-error" }, message ?? "");
  const user = h("input", { id: "user", name: "user", autocomplete: "username", required: true, value: "root" });
  const password = h("input", {
    id: "password",
    name: "password",
    type: "password",
    autocomplete: "current-password",
    required: true,
  });
  const submit = h("button", { type: "submit", class: "primary" }, "Log in");
  const form = h(
    "form",
    { class: "login", "aria-labelledby": "login-title" },
    h("h1", { id: "login-title" }, "Ferrovisor"),
    h("label", { for: "user" }, "User"),
    user,
    h("label", { for: "password" }, "Password"),
    password,
    submit,
    error,
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    submit.disabled = true;
    error.textContent = "";
    Session.login(user.value, password.value)
      .then((s) => {
        sessionStorage.setItem("fv-session", JSON.stringify({ ref: s.ref, user: s.user, role: s.role }));
        showApp(s);
      })
      .catch((e: unknown) => {
        error.textContent = explainError(e).text;
        submit.disabled = false;
        password.select();
      });
  });
  app.replaceChildren(h("main", { class: "login-page" }, form));
  (user.value ? password : user).focus();
}

// ---------- the application ----------

interface Selection {
  cls: string;
  ref: string;
}

class App {
  private store: Store;
  private tasks: TaskPanel;
  private tree = h("nav", { class: "tree", "aria-label": "Resources", id: "tree" });
  private main = h("section", { class: "view", id: "view", "aria-live": "polite" });
  private banner = h("p", { class: "banner", role: "status", hidden: true });
  private search: HTMLInputElement;
  private selected: Selection | null = null;
  private view: VmView | SrView | NetworkView | InfoView | null = null;
  /** An object just made (a VM by the wizard, an SR, a network), to show once event.from has brought it. */
  private pending: Selection | null = null;

  constructor(private readonly session: Session) {
    this.store = new Store(
      session,
      () => this.sessionLost(),
      (text) => {
        this.banner.hidden = text === null;
        this.banner.textContent = text ?? "";
      },
    );
    this.tasks = new TaskPanel(session, this.store);
    this.search = h("input", {
      type: "search",
      id: "search",
      placeholder: "Filter by name or tag",
      "aria-label": "Filter resources by name or tag",
      oninput: () => this.renderTree(),
    });
    const header = h(
      "header",
      { class: "top" },
      h("span", { class: "brand" }, "Ferrovisor"),
      h(
        "span",
        { class: "who", id: "who" },
        h("span", { class: "user" }, session.user),
        " · ",
        h("span", { class: "role", id: "role", title: "Your XenAPI role" }, session.role),
      ),
      h("button", { id: "logout", onclick: () => void this.logout() }, "Log out"),
    );
    app.replaceChildren(
      header,
      this.banner,
      h(
        "div",
        { class: "layout" },
        h("aside", { class: "side" }, this.newVmButton(), this.search, this.tree),
        h("main", { class: "content" }, this.main, this.tasks.el),
      ),
    );
    this.main.append(h("p", { class: "muted" }, "Loading…"));
    this.store.listen((changed) => this.changed(changed));
    this.store.start();
  }

  private newVmButton(): HTMLElement {
    const why = newVmRefusal(this.session.role);
    return h(
      "div",
      { class: "new-vm" },
      h(
        "button",
        {
          class: "primary",
          id: "new-vm",
          disabled: !!why,
          title: why ?? "Make a VM from a template",
          onclick: () => void this.newVm(),
        },
        "New VM",
      ),
      why ? h("p", { class: "reason", id: "new-vm-reason" }, why) : null,
    );
  }

  private async newVm(): Promise<void> {
    const template = this.selected?.cls === "vm" && this.store.get("vm", this.selected.ref)?.is_a_template ? this.selected.ref : undefined;
    const vm = await newVmWizard(this.session, this.store, this.tasks, template);
    if (!vm) return;
    this.showWhenLoaded({ cls: "vm", ref: vm });
  }

  private showWhenLoaded(sel: Selection): void {
    if (this.store.get(sel.cls, sel.ref)) this.select(sel);
    else this.pending = sel;
  }

  private async newNetwork(): Promise<void> {
    const net = await newNetworkDialog(this.session, this.tasks);
    if (net) this.showWhenLoaded({ cls: "network", ref: net });
  }

  private async newSr(): Promise<void> {
    const sr = await newSrDialog(this.session, this.store, this.tasks);
    if (sr) this.showWhenLoaded({ cls: "sr", ref: sr });
  }

  private changed(changed: Set<string>): void {
    if (this.pending && this.store.get(this.pending.cls, this.pending.ref)) {
      const sel = this.pending;
      this.pending = null;
      this.select(sel);
      return;
    }
    this.renderTree();
    if (this.selected && !this.store.get(this.selected.cls, this.selected.ref)) {
      this.select(null);
    } else if (this.view) {
      this.view.update(changed);
    } else if (!this.selected) {
      this.renderHome();
    }
  }

  private sessionLost(): void {
    this.store.stop();
    this.view?.dispose();
    sessionStorage.removeItem("fv-session");
    showLogin("Your session has ended. Log in again.");
  }

  private async logout(): Promise<void> {
    this.store.stop();
    this.view?.dispose();
    sessionStorage.removeItem("fv-session");
    await this.session.logout();
    showLogin();
  }

  // ----- the tree -----

  private item(cls: string, ref: string, rec: Rec, extra?: string): HTMLElement {
    const sel = this.selected?.cls === cls && this.selected.ref === ref;
    const label = String(rec.name_label ?? ref) || "(no name)";
    const state = cls === "vm" ? String(rec.power_state ?? "") : "";
    return h(
      "li",
      {},
      h(
        "button",
        {
          class: `node ${sel ? "selected" : ""}`,
          "aria-current": sel ? "true" : false,
          "data-ref": ref,
          "data-name": label,
          onclick: () => this.select({ cls, ref }),
        },
        state ? h("span", { class: `dot ${state.toLowerCase()}`, title: state, "aria-hidden": "true" }) : null,
        h("span", { class: "label" }, label),
        state ? h("span", { class: "sr-only" }, ` (${state})`) : null,
        extra ? h("span", { class: "extra" }, extra) : null,
      ),
    );
  }

  private group(title: string, items: HTMLElement[], id: string, add?: HTMLElement): HTMLElement | null {
    if (items.length === 0 && !add) return null;
    return h(
      "li",
      { class: "group", id },
      h("div", { class: "group-head" }, h("span", { class: "group-title" }, title), add ?? null),
      h("ul", { role: "group" }, items),
    );
  }

  /** A group's "+" button: what it makes, or why this role may not. */
  private addButton(id: string, what: string, why: string | null, onclick: () => void): HTMLElement {
    return h(
      "button",
      {
        class: "small add",
        id,
        disabled: !!why,
        "aria-label": what,
        title: why ?? what,
        onclick,
      },
      "+",
    );
  }

  private renderTree(): void {
    if (!this.store.loaded) return;
    const q = this.search.value.trim().toLowerCase();
    const match = (r: Rec) =>
      !q ||
      String(r.name_label ?? "").toLowerCase().includes(q) ||
      (Array.isArray(r.tags) && r.tags.some((t) => String(t).toLowerCase().includes(q)));
    const byName = (a: [string, Rec], b: [string, Rec]) =>
      String(a[1].name_label).localeCompare(String(b[1].name_label));
    const vms = this.store.all("vm").filter(([, r]) => !r.is_control_domain).sort(byName);
    const real = vms.filter(([, r]) => !r.is_a_template && !r.is_a_snapshot && match(r));
    const templates = vms.filter(([, r]) => r.is_a_template && !r.is_a_snapshot && match(r));
    const srs = this.store.all("sr").filter(([, r]) => match(r)).sort(byName);
    const nets = this.store.all("network").filter(([, r]) => match(r)).sort(byName);
    const hosts = this.store.all("host").sort(byName);
    const pools = this.store.all("pool");
    const focused = (document.activeElement as HTMLElement | null)?.dataset?.ref;

    const hostItems = hosts.map(([ref, host]) => {
      const mine = real.filter(([, vm]) => vm.resident_on === ref || vm.power_state === "Halted" || !vm.resident_on);
      const li = this.item("host", ref, host, "host");
      const sub = h("ul", { role: "group" }, mine.map(([r, vm]) => this.item("vm", r, vm)));
      if (mine.length === 0 && q) sub.append(h("li", { class: "muted" }, "No VMs match"));
      li.append(sub);
      return li;
    });
    const rest = [
      this.group("Templates", templates.map(([r, t]) => this.item("vm", r, t)), "tree-templates"),
      this.group(
        "Storage",
        srs.map(([r, sr]) => this.item("sr", r, sr)),
        "tree-srs",
        this.addButton("new-sr", "New storage repository", newSrRefusal(this.session.role), () => void this.newSr()),
      ),
      this.group(
        "Networks",
        nets.map(([r, n]) => this.item("network", r, n)),
        "tree-networks",
        this.addButton("new-network", "New network", newNetworkRefusal(this.session.role), () => void this.newNetwork()),
      ),
    ];
    const top = pools.length
      ? pools.map(([ref, pool]) => {
          const li = this.item("pool", ref, { ...pool, name_label: pool.name_label || "Pool" });
          li.append(h("ul", { role: "group" }, hostItems, rest));
          return li;
        })
      : [...hostItems, ...rest];
    this.tree.replaceChildren(h("ul", { class: "root" }, top));
    if (focused) {
      (this.tree.querySelector(`[data-ref="${CSS.escape(focused)}"]`) as HTMLElement | null)?.focus();
    }
  }

  // ----- views -----

  private renderHome(): void {
    const vms = this.store.all("vm").filter(([, r]) => !r.is_a_template && !r.is_a_snapshot && !r.is_control_domain);
    const running = vms.filter(([, r]) => r.power_state === "Running").length;
    this.main.replaceChildren(
      h("h1", {}, "Overview"),
      h("p", {}, `${vms.length} VMs, ${running} running. Pick a VM, host, storage repository or network on the left.`),
    );
  }

  select(sel: Selection | null): void {
    this.view?.dispose();
    this.view = null;
    this.selected = sel;
    this.renderTree();
    if (!sel) {
      this.renderHome();
      return;
    }
    const context = {
      session: this.session,
      store: this.store,
      tasks: this.tasks,
      ref: sel.ref,
      open: (cls: string, ref: string) => this.select({ cls, ref }),
    };
    if (sel.cls === "vm") this.view = new VmView(this.session, this.store, this.tasks, sel.ref);
    else if (sel.cls === "sr") this.view = new SrView(context);
    else if (sel.cls === "network") this.view = new NetworkView(context);
    else this.view = new InfoView(this.store, sel.cls, sel.ref);
    this.main.replaceChildren(this.view.el);
    (this.main.querySelector("h1") as HTMLElement | null)?.focus();
  }
}

// ---------- a VM ----------

const ACTIONS: Array<{
  op: string;
  method: string;
  label: string;
  confirm?: string;
  args?: (name: string) => unknown[];
}> = [
  { op: "start", method: "VM.start", label: "Start", args: () => [false, false] },
  { op: "clean_shutdown", method: "VM.clean_shutdown", label: "Shut down" },
  {
    op: "hard_shutdown",
    method: "VM.hard_shutdown",
    label: "Force shut down",
    confirm: "Force shut down stops the VM at once, like pulling its power cord. Unsaved data in the guest is lost.",
  },
  { op: "clean_reboot", method: "VM.clean_reboot", label: "Reboot" },
  { op: "pause", method: "VM.pause", label: "Pause" },
  { op: "unpause", method: "VM.unpause", label: "Resume" },
  { op: "clone", method: "VM.clone", label: "Clone", args: (name) => [`${name} (clone)`] },
  {
    op: "destroy",
    method: "VM.destroy",
    label: "Delete",
    confirm: "Delete removes the VM and its devices for good (its disks stay in their storage repository).",
  },
];

/** The power states an operation needs, for when allowed_operations does not say. */
const NEEDS_STATE: Record<string, string[]> = {
  start: ["Halted"],
  clean_shutdown: ["Running"],
  hard_shutdown: ["Running", "Paused"],
  clean_reboot: ["Running"],
  pause: ["Running"],
  unpause: ["Paused"],
  clone: ["Halted"],
  destroy: ["Halted"],
};

class VmView {
  readonly el: HTMLElement;
  private title = h("h1", { tabindex: "-1" });
  private state = h("span", { class: "state", id: "power-state" });
  private buttons = h("div", { class: "actions", role: "toolbar", "aria-label": "VM actions" });
  private general: HTMLElement;
  private consoleTab: HTMLElement;
  private tabButtons: HTMLButtonElement[] = [];
  private console: SerialConsole | null = null;
  /** The tabs after General and Console, by id. */
  private extra: Record<string, Tab>;
  private facts = h("dl", { class: "facts" });
  private nameInput: HTMLInputElement;
  private descInput: HTMLTextAreaElement;
  private saveButton: HTMLButtonElement;
  private ticker: number;

  constructor(
    private readonly session: Session,
    private readonly store: Store,
    private readonly tasks: TaskPanel,
    private readonly ref: string,
  ) {
    const cantEdit = refusal(session.role, "VM.set_name_label");
    this.nameInput = h("input", { id: "vm-name", disabled: !!cantEdit, title: cantEdit ?? false });
    this.descInput = h("textarea", { id: "vm-description", rows: "2", disabled: !!cantEdit, title: cantEdit ?? false });
    this.saveButton = h(
      "button",
      { type: "submit", disabled: !!cantEdit, title: cantEdit ?? false },
      "Save",
    );
    const form = h(
      "form",
      { class: "edit" },
      h("label", { for: "vm-name" }, "Name"),
      this.nameInput,
      h("label", { for: "vm-description" }, "Description"),
      this.descInput,
      h("div", { class: "save" }, this.saveButton, cantEdit ? h("span", { class: "reason" }, cantEdit) : null),
    );
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      void this.save();
    });
    this.general = h("div", { role: "tabpanel", id: "panel-general", "aria-labelledby": "tab-general" }, this.facts, form);
    this.consoleTab = h("div", { role: "tabpanel", id: "panel-console", "aria-labelledby": "tab-console", hidden: true });
    const tab = (id: string, label: string) => {
      const b = h(
        "button",
        {
          role: "tab",
          id: `tab-${id}`,
          "aria-controls": `panel-${id}`,
          "aria-selected": id === "general" ? "true" : "false",
          onclick: () => this.showTab(id),
        },
        label,
      );
      this.tabButtons.push(b);
      return b;
    };
    const context = { session, store, tasks, ref };
    this.extra = {
      storage: new StorageTab(context),
      networking: new NetworkingTab(context),
      snapshots: new SnapshotsTab(context),
      performance: new PerformanceTab(context),
    };
    const tabs = h(
      "div",
      { role: "tablist", class: "tabs", "aria-label": "VM views" },
      tab("general", "General"),
      tab("console", "Console"),
      tab("storage", "Storage"),
      tab("networking", "Networking"),
      tab("snapshots", "Snapshots"),
      tab("performance", "Performance"),
    );
    tabs.addEventListener("keydown", (ev) => {
      const i = this.tabButtons.indexOf(document.activeElement as HTMLButtonElement);
      if (i < 0 || (ev.key !== "ArrowRight" && ev.key !== "ArrowLeft")) return;
      const next = this.tabButtons[(i + (ev.key === "ArrowRight" ? 1 : this.tabButtons.length - 1)) % this.tabButtons.length];
      next.focus();
      next.click();
    });
    this.el = h("article", { class: "vm" }, h("div", { class: "heading" }, this.title, this.state), this.buttons, tabs, this.general, this.consoleTab, ...Object.values(this.extra).map((t) => t.el));
    this.ticker = window.setInterval(() => this.renderFacts(), 1000);
    this.update(new Set(["vm"]));
    this.nameInput.value = String(this.rec().name_label ?? "");
    this.descInput.value = String(this.rec().name_description ?? "");
  }

  private rec(): Rec {
    return this.store.get("vm", this.ref) ?? {};
  }

  private showTab(id: string): void {
    for (const b of this.tabButtons) b.setAttribute("aria-selected", String(b.id === `tab-${id}`));
    this.general.hidden = id !== "general";
    this.consoleTab.hidden = id !== "console";
    for (const [name, t] of Object.entries(this.extra)) {
      t.el.hidden = name !== id;
      if (name === id) t.show();
      else t.hide();
    }
    if (id === "console") {
      if (!this.console) {
        this.console = new SerialConsole(this.session, String(this.rec().uuid));
        this.consoleTab.append(this.console.el);
        this.console.setVm(String(this.rec().power_state), String(this.rec().domid));
      }
      this.console.focus();
    }
  }

  private async save(): Promise<void> {
    const name = this.nameInput.value;
    const desc = this.descInput.value;
    this.saveButton.disabled = true;
    try {
      if (name !== this.rec().name_label) await this.session.call("VM.set_name_label", this.ref, name);
      if (desc !== this.rec().name_description) await this.session.call("VM.set_name_description", this.ref, desc);
    } catch (e) {
      this.tasks.fail(`Rename ${String(this.rec().name_label)}`, e);
    } finally {
      this.saveButton.disabled = false;
    }
  }

  update(changed: Set<string>): void {
    for (const t of Object.values(this.extra)) t.update(changed);
    if (!changed.has("vm") && !changed.has("vm_metrics") && !changed.has("vif")) return;
    const vm = this.rec();
    const name = String(vm.name_label ?? "");
    const state = String(vm.power_state ?? "");
    this.title.textContent = name;
    this.state.textContent = state;
    this.state.className = `state ${state.toLowerCase()}`;
    if (document.activeElement !== this.nameInput && this.nameInput.value !== name && !this.nameInput.matches(":focus")) {
      this.nameInput.value = name;
    }
    if (document.activeElement !== this.descInput) this.descInput.value = String(vm.name_description ?? "");
    this.renderButtons(vm);
    this.renderFacts();
    this.console?.setVm(state, String(vm.domid));
  }

  private renderFacts(): void {
    const vm = this.rec();
    const metrics = this.store.get("vm_metrics", String(vm.metrics ?? ""));
    const state = String(vm.power_state ?? "");
    const started = parseXenDate(metrics?.start_time);
    const uptime =
      (state === "Running" || state === "Paused") && started ? duration((Date.now() - started.getTime()) / 1000) : "—";
    const vcpus = state === "Running" && metrics?.VCPUs_number ? metrics.VCPUs_number : vm.VCPUs_at_startup;
    const rows: Array<[string, string, string]> = [
      ["Power state", state, "fact-state"],
      ["vCPUs", String(vcpus ?? "—"), "fact-vcpus"],
      ["Memory", bytes(vm.memory_static_max), "fact-memory"],
      ["Networks", this.networks(vm), "fact-networks"],
      ["Uptime", uptime, "fact-uptime"],
      ["Boot kernel", String(vm.PV_kernel || "—"), "fact-kernel"],
      ["Kernel arguments", String(vm.PV_args || "(default)"), "fact-args"],
      ["UUID", String(vm.uuid ?? ""), "fact-uuid"],
    ];
    if (vm.is_a_template) rows.push(["Template", "yes", "fact-template"]);
    this.facts.replaceChildren(...rows.flatMap(([k, v, id]) => [h("dt", {}, k), h("dd", { id }, v)]));
  }

  private networks(vm: Rec): string {
    const names = (Array.isArray(vm.VIFs) ? vm.VIFs : [])
      .map((r) => this.store.get("vif", String(r)))
      .filter((vif): vif is Rec => !!vif)
      .sort((a, b) => String(a.device).localeCompare(String(b.device), undefined, { numeric: true }))
      .map((vif) => String(this.store.get("network", String(vif.network))?.name_label ?? "?"));
    return names.length ? names.join(", ") : "none";
  }

  private renderButtons(vm: Rec): void {
    const state = String(vm.power_state ?? "");
    const allowed = Array.isArray(vm.allowed_operations) ? vm.allowed_operations.map(String) : null;
    const busy = vm.current_operations && Object.keys(vm.current_operations as object).length > 0;
    const name = String(vm.name_label ?? "");
    const buttons = ACTIONS.filter((a) => !vm.is_a_template || a.op === "clone" || a.op === "destroy").map((a) => {
      const byRole = refusal(this.session.role, a.method);
      let why = byRole;
      if (!why && !(NEEDS_STATE[a.op] ?? []).includes(state)) {
        why = `Not possible while the VM is ${state.toLowerCase()}.`;
      } else if (!why && allowed && allowed.length > 0 && !allowed.includes(a.op)) {
        why = busy ? "Another operation is in progress on this VM." : `Not allowed in this state.`;
      }
      const b = h(
        "button",
        {
          class: a.confirm ? "danger" : "",
          "data-op": a.op,
          disabled: !!why,
          "aria-disabled": why ? "true" : false,
          title: why ?? a.label,
          onclick: async () => {
            if (a.confirm && !(await confirmDialog(`${a.label} ${name}?`, a.confirm, a.label))) return;
            await this.tasks.run(`${a.label} ${name}`, a.method, this.ref, ...(a.args?.(name) ?? []));
          },
        },
        a.label,
      );
      return b;
    });
    const roleWhy = refusal(this.session.role, "VM.start");
    this.buttons.replaceChildren(...buttons, roleWhy ? h("p", { class: "reason", id: "role-reason" }, roleWhy) : "");
  }

  dispose(): void {
    window.clearInterval(this.ticker);
    this.console?.dispose();
    for (const t of Object.values(this.extra)) t.dispose();
  }
}

// ---------- hosts and pools (SRs and networks: views.ts) ----------

class InfoView {
  readonly el = h("article", { class: "info" });
  constructor(
    private readonly store: Store,
    private readonly cls: string,
    private readonly ref: string,
  ) {
    this.update();
  }

  update(_changed?: Set<string>): void {
    const r = this.store.get(this.cls, this.ref) ?? {};
    const kind: Record<string, string> = { pool: "Pool", host: "Host" };
    const rows: Array<[string, string]> = [["Kind", kind[this.cls] ?? this.cls], ["Description", String(r.name_description ?? "")]];
    if (this.cls === "host") rows.push(["Address", String(r.address ?? "")], ["Hostname", String(r.hostname ?? "")]);
    rows.push(["UUID", String(r.uuid ?? "")]);
    this.el.replaceChildren(
      h("h1", { tabindex: "-1" }, String(r.name_label || kind[this.cls] || "")),
      h("dl", { class: "facts" }, rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    );
  }

  dispose(): void {}
}

// ---------- start ----------

function showApp(session: Session): void {
  new App(session);
}

const saved = sessionStorage.getItem("fv-session");
if (saved) {
  try {
    const s = JSON.parse(saved) as { ref: string; user: string; role: string };
    showApp(new Session(s.ref, s.user, s.role));
  } catch {
    showLogin();
  }
} else {
  showLogin();
}
