// The Console tab: the VM's serial console in xterm.js, over fvd's WebSocket
// (GET /console/<vm uuid>?session_id=...). It reconnects when the VM runs again.

import { Terminal } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import "@xterm/xterm/css/xterm.css";

import { Session } from "./api";
import { h } from "./dom";
import { refusal } from "./roles";

export class SerialConsole {
  readonly el: HTMLElement;
  private status: HTMLElement;
  private term: Terminal;
  private fit = new FitAddon();
  private ws: WebSocket | null = null;
  private closed = false;
  private retry: number | undefined;
  private resize = () => this.fit.fit();
  private powerState = "";
  /** The VM's domid when we last connected: a new one means a new monitor to connect to. */
  private domid: string | null = null;
  private failures = 0;
  private reconnect: HTMLButtonElement;

  constructor(
    private readonly session: Session,
    private readonly uuid: string,
  ) {
    this.status = h("p", { class: "console-status", role: "status" }, "Connecting…");
    const host = h("div", { class: "terminal", "data-testid": "terminal" });
    this.reconnect = h(
      "button",
      { class: "small", hidden: true, onclick: () => this.connect() },
      "Reconnect",
    );
    this.el = h("div", { class: "console" }, h("div", { class: "console-bar" }, this.status, this.reconnect), host);
    this.term = new Terminal({
      convertEol: true,
      cursorBlink: true,
      fontSize: 14,
      scrollback: 5000,
      theme: { background: "#101418" },
    });
    this.term.loadAddon(this.fit);
    this.term.open(host);
    const why = refusal(session.role, "console.type");
    if (why) this.term.options.disableStdin = true;
    this.term.onData((data) => {
      if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(new TextEncoder().encode(data));
    });
    window.addEventListener("resize", this.resize);
    requestAnimationFrame(() => this.fit.fit());
  }

  focus(): void {
    this.term.focus();
    this.fit.fit();
  }

  /** Told the VM's power state and domid (its fv-vmm) as they change: a console that
   * ended comes back once the VM runs a new monitor (started again, rebooted). */
  setVm(state: string, domid: string): void {
    this.powerState = state;
    const live = state === "Running" || state === "Paused";
    if (!live) {
      this.reconnect.hidden = true;
      if (this.ws === null) this.setStatus(`The VM is ${state.toLowerCase()}: its console comes back when it runs.`);
      return;
    }
    if (this.ws === null && domid !== this.domid) {
      this.domid = domid;
      this.failures = 0;
      this.connect();
    }
  }

  private setStatus(text: string): void {
    this.status.textContent = text;
  }

  connect(): void {
    if (this.closed || this.ws !== null) return;
    window.clearTimeout(this.retry);
    this.reconnect.hidden = true;
    this.setStatus("Connecting…");
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}/console/${this.uuid}?session_id=${encodeURIComponent(this.session.ref)}`;
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.failures = 0;
    };
    ws.onmessage = (ev: MessageEvent) => {
      if (typeof ev.data === "string") {
        try {
          const hello = JSON.parse(ev.data) as { type?: string; writable?: boolean };
          if (hello.type === "hello") {
            this.setStatus(
              hello.writable
                ? "Connected: type into the console (paste works too)."
                : `Connected, read only: ${refusal(this.session.role, "console.type") ?? "typing is not allowed"}`,
            );
            this.el.dataset.connected = "true";
          }
        } catch {
          // Not a control message: ignore it.
        }
        return;
      }
      this.term.write(new Uint8Array(ev.data as ArrayBuffer));
    };
    ws.onclose = (ev: CloseEvent) => {
      this.ws = null;
      delete this.el.dataset.connected;
      if (this.closed) return;
      const live = this.powerState === "Running" || this.powerState === "Paused";
      if (!live) {
        this.setStatus(`The VM is ${this.powerState.toLowerCase() || "not running"}: its console comes back when it runs.`);
        return;
      }
      if (!opened && this.failures < 5) {
        // Refused (a VM just started whose monitor is not listening yet): try again soon.
        this.failures++;
        this.retry = window.setTimeout(() => this.connect(), 400 * this.failures);
        return;
      }
      // Ended while the VM runs: it is rebooting (a new domid comes, and with it a new
      // connection), or another console client took over (fv-vmm serves one): then the
      // user decides, rather than two windows taking the console from each other forever.
      this.setStatus(`Console closed${ev.reason ? `: ${ev.reason}` : ""}.`);
      this.reconnect.hidden = false;
    };
  }

  dispose(): void {
    this.closed = true;
    window.clearTimeout(this.retry);
    window.removeEventListener("resize", this.resize);
    this.ws?.close();
    this.term.dispose();
  }
}
