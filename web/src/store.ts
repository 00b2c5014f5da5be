// The console's copy of the objects it shows, kept up to date by event.from long-polling:
// the first call (empty token) answers every object of the subscribed classes, each later
// call blocks until something changed and answers just that. No polling loops.

import { Rec, Session, XenApiError } from "./api";

export const CLASSES = ["pool", "host", "VM", "VM_metrics", "VBD", "VDI", "VIF", "SR", "network", "task"];

/** How long one event.from call waits for a change, in seconds. */
const EVENT_TIMEOUT = 30;

export class Store {
  /** Records by lower-case class name, then by reference. */
  readonly objects = new Map<string, Map<string, Rec>>();
  private listeners: Array<(changed: Set<string>) => void> = [];
  private abort = new AbortController();
  private running = false;
  /** Set when the first batch has arrived. */
  loaded = false;

  constructor(
    private readonly session: Session,
    private readonly onSessionLost: () => void,
    private readonly onStatus: (text: string | null) => void,
  ) {
    for (const c of CLASSES) this.objects.set(c.toLowerCase(), new Map());
  }

  all(cls: string): Array<[string, Rec]> {
    return [...(this.objects.get(cls.toLowerCase())?.entries() ?? [])];
  }

  get(cls: string, ref: string): Rec | undefined {
    return this.objects.get(cls.toLowerCase())?.get(ref);
  }

  listen(f: (changed: Set<string>) => void): void {
    this.listeners.push(f);
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    void this.loop();
  }

  stop(): void {
    this.running = false;
    this.abort.abort();
  }

  private async loop(): Promise<void> {
    let token = "";
    let failures = 0;
    while (this.running) {
      let batch: { events?: Rec[]; token?: string };
      try {
        batch = (await this.session.callWithSignal(
          this.abort.signal,
          "event.from",
          CLASSES,
          token,
          EVENT_TIMEOUT,
        )) as typeof batch;
      } catch (e) {
        if (!this.running) return;
        if (e instanceof XenApiError && e.code === "SESSION_INVALID") {
          this.running = false;
          this.onSessionLost();
          return;
        }
        if (e instanceof XenApiError && e.code === "EVENTS_LOST") {
          token = "";
          continue;
        }
        // fvd restarting or the network down: wait (longer each time), then register again.
        failures++;
        this.onStatus(`Lost contact with fvd; retrying (${failures})…`);
        await new Promise((r) => setTimeout(r, Math.min(10000, 500 * 2 ** failures)));
        continue;
      }
      if (failures > 0) this.onStatus(null);
      failures = 0;
      const changed = new Set<string>();
      if (token === "") {
        // A full answer: anything not in it is gone.
        for (const m of this.objects.values()) m.clear();
      }
      for (const ev of batch.events ?? []) {
        const cls = String(ev.class).toLowerCase();
        const map = this.objects.get(cls);
        if (!map) continue;
        const ref = String(ev.ref);
        if (ev.operation === "del") map.delete(ref);
        else if (ev.snapshot && typeof ev.snapshot === "object") map.set(ref, ev.snapshot as Rec);
        changed.add(cls);
      }
      token = String(batch.token ?? token);
      this.loaded = true;
      for (const f of this.listeners) f(changed);
    }
  }
}
