// The task panel: running tasks with their progress and a cancel button, and recent
// failures (failed tasks, and calls refused outright) with the XenAPI error in words.

import { Rec, Session } from "./api";
import { h } from "./dom";
import { explain, explainError } from "./errors";
import { Store } from "./store";

interface Failure {
  label: string;
  code: string;
  params: string[];
  text: string;
  at: Date;
}

export class TaskPanel {
  readonly el: HTMLElement;
  private list: HTMLElement;
  private failures: Failure[] = [];
  /** Tasks that existed before we logged in: shown only while they run. */
  private old: Set<string> | null = null;
  /** Failed tasks already moved to `failures`. */
  private reported = new Set<string>();

  constructor(
    private readonly session: Session,
    private readonly store: Store,
  ) {
    this.list = h("div", { class: "task-list", "aria-live": "polite" });
    this.el = h(
      "section",
      { class: "tasks", "aria-label": "Tasks", id: "tasks" },
      h("h2", {}, "Tasks"),
      this.list,
    );
    store.listen(() => this.render());
    this.render();
  }

  /** A call that failed before any task existed. */
  fail(label: string, e: unknown): void {
    const { code, params, text } = explainError(e);
    this.failures.unshift({ label, code, params, text, at: new Date() });
    this.failures.length = Math.min(this.failures.length, 8);
    this.render();
  }

  /** Runs `Async.<method>` and lets the panel follow its task; failures land here. */
  async run(label: string, method: string, ...params: unknown[]): Promise<void> {
    try {
      const task = String(await this.session.call(`Async.${method}`, ...params));
      this.labels.set(task, label);
      this.render();
    } catch (e) {
      this.fail(label, e);
    }
  }

  private labels = new Map<string, string>();

  private render(): void {
    if (!this.store.loaded) return;
    const tasks = this.store.all("task");
    if (this.old === null) {
      this.old = new Set(tasks.filter(([, t]) => t.status !== "pending").map(([r]) => r));
    }
    for (const [ref, t] of tasks) {
      if (this.old.has(ref) || this.reported.has(ref)) continue;
      if (t.status === "failure" || t.status === "cancelled") {
        this.reported.add(ref);
        const info = Array.isArray(t.error_info) ? t.error_info.map(String) : [];
        const code = info[0] ?? "UNKNOWN_ERROR";
        const params = info.slice(1);
        this.failures.unshift({
          label: this.labels.get(ref) ?? String(t.name_label),
          code,
          params,
          text: t.status === "cancelled" ? "The task was cancelled." : explain(code, params),
          at: new Date(),
        });
        this.failures.length = Math.min(this.failures.length, 8);
      }
    }
    const running = tasks.filter(([, t]) => t.status === "pending");
    const items: HTMLElement[] = [];
    for (const [ref, t] of running) items.push(this.runningItem(ref, t));
    for (const f of this.failures) {
      items.push(
        h(
          "div",
          { class: "task failed", role: "alert" },
          h("div", { class: "task-name" }, `✗ ${f.label}`),
          h("div", { class: "task-error" }, f.text),
          h("code", { class: "task-code" }, [f.code, ...f.params].join(" ")),
        ),
      );
    }
    if (items.length === 0) items.push(h("p", { class: "muted" }, "No running tasks or recent failures."));
    this.list.replaceChildren(...items);
  }

  private runningItem(ref: string, t: Rec): HTMLElement {
    const progress = Math.max(0, Math.min(1, Number(t.progress ?? 0)));
    const label = this.labels.get(ref) ?? String(t.name_label);
    const allowed = Array.isArray(t.allowed_operations) ? t.allowed_operations : [];
    return h(
      "div",
      { class: "task running" },
      h("div", { class: "task-name" }, label),
      h("progress", { max: "1", value: String(progress), "aria-label": `${label} progress` }),
      h("span", { class: "task-pct" }, `${Math.round(progress * 100)} %`),
      h(
        "button",
        {
          class: "small",
          disabled: !allowed.includes("cancel"),
          title: allowed.includes("cancel") ? "Cancel this task" : "This task cannot be cancelled",
          onclick: () => {
            this.session.call("task.cancel", ref).catch((e: unknown) => this.fail(`Cancel ${label}`, e));
          },
        },
        "Cancel",
      ),
    );
  }
}
