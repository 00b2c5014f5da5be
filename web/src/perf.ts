// The VM view's Performance tab: graphs of CPU, memory, disk and network drawn in plain
// SVG from fvd's round-robin archives (`/rrd_updates`, XAPI's XML export), fetched again
// every 5 s while the tab is open. That endpoint is the metrics API, so polling it is how
// every XenAPI client reads metrics; nothing else in the console polls.

import { Rec } from "./api";
import { bytes, h } from "./dom";
import { Tab, VmContext } from "./vmtabs";

const SVG = "http://www.w3.org/2000/svg";

/** The archives fvd keeps: the range shown and the step of the archive that covers it. */
const RANGES: Array<{ id: string; label: string; span: number; interval: number }> = [
  { id: "10m", label: "10 minutes", span: 600, interval: 5 },
  { id: "2h", label: "2 hours", span: 7200, interval: 60 },
  { id: "1w", label: "1 week", span: 7 * 86400, interval: 3600 },
  { id: "1y", label: "1 year", span: 366 * 86400, interval: 86400 },
];

const REFRESH_MS = 5000;

interface Series {
  label: string;
  points: Array<[number, number]>;
}

interface ChartSpec {
  id: string;
  title: string;
  /** The data sources drawn, by name (`cpu_usage`), or a test on the name. */
  sources: Array<{ ds: string | RegExp; label: (ds: string) => string; scale?: number }>;
  unit: (v: number) => string;
  /** The top of the scale when fixed (CPU: 100 %). */
  max?: number;
  /** The least top of the scale (so that an idle disk is not drawn at full height). */
  minTop?: number;
}

const CHARTS: ChartSpec[] = [
  { id: "cpu", title: "CPU", sources: [{ ds: "cpu_usage", label: () => "vCPUs (mean)", scale: 100 }], unit: (v) => `${Math.round(v)} %`, max: 100 },
  {
    id: "memory",
    title: "Memory",
    sources: [
      { ds: "memory", label: () => "VM memory" },
      { ds: "vmm_rss", label: () => "resident (fv-vmm)" },
    ],
    unit: (v) => bytes(v),
    minTop: 16 * 2 ** 20,
  },
  {
    id: "disk",
    title: "Disk I/O",
    sources: [
      { ds: "vmm_io_read", label: () => "read" },
      { ds: "vmm_io_write", label: () => "write" },
    ],
    unit: (v) => `${bytes(v)}/s`,
    minTop: 1024,
  },
  {
    id: "network",
    title: "Network",
    sources: [{ ds: /^vif_\d+_(rx|tx)$/, label: (ds) => ds.replace(/^vif_(\d+)_(rx|tx)$/, (_, n: string, d: string) => `VIF ${n} ${d === "rx" ? "received" : "sent"}`) }],
    unit: (v) => `${bytes(v)}/s`,
    minTop: 1024,
  },
];

export interface Updates {
  /** Column names: the data source part of `AVERAGE:vm:UUID:ds`. */
  legend: string[];
  /** Rows, oldest first: time (seconds) and one value per column (NaN when unknown). */
  rows: Array<{ t: number; values: number[] }>;
}

/** XAPI's `rrd_updates` XML: `<xport><meta>…<legend><entry>…</entry></legend></meta><data><row><t/><v/>…</row></data></xport>`. */
export function parseUpdates(xml: string): Updates {
  const doc = new DOMParser().parseFromString(xml, "text/xml");
  if (doc.querySelector("parsererror")) throw new Error("fvd's metrics could not be read (not XML)");
  const legend = [...doc.querySelectorAll("meta > legend > entry")].map((e) => (e.textContent ?? "").split(":").slice(3).join(":"));
  const rows = [...doc.querySelectorAll("data > row")].map((r) => ({
    t: Number(r.querySelector("t")?.textContent ?? NaN),
    values: [...r.querySelectorAll("v")].map((v) => Number(v.textContent ?? NaN)),
  }));
  rows.sort((a, b) => a.t - b.t);
  return { legend, rows };
}

function svg<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number>, text?: string): SVGElementTagNameMap[K] {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** A round number of bytes at least `x` for the top of a scale: 1, 1.5, 2, 3, 4, 5, 6 or 8 times a power of ten, of B, KiB, MiB or GiB. */
export function niceTop(x: number): number {
  const base = 1024 ** Math.min(3, Math.max(0, Math.floor(Math.log(x) / Math.log(1024))));
  const v = x / base;
  const p = 10 ** Math.floor(Math.log10(v));
  const m = [1, 1.5, 2, 3, 4, 5, 6, 8, 10].find((m) => m * p >= v * (1 - 1e-9)) ?? 10;
  return m * p * base;
}

const W = 640;
const H = 150;
const PAD = { left: 64, right: 10, top: 10, bottom: 24 };

/** One chart as SVG: a line per series, the scale's top and bottom, the time range. */
function drawChart(spec: ChartSpec, series: Series[], from: number, to: number): SVGSVGElement {
  const el = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", id: `chart-${spec.id}`, class: "chart" });
  const all = series.flatMap((s) => s.points.map((p) => p[1])).filter(Number.isFinite);
  const top = spec.max ?? niceTop(Math.max(spec.minTop ?? 1, Math.max(0, ...all) * 1.05));
  const pw = W - PAD.left - PAD.right;
  const ph = H - PAD.top - PAD.bottom;
  const x = (t: number) => PAD.left + ((t - from) / Math.max(1, to - from)) * pw;
  const y = (v: number) => PAD.top + ph - (Math.min(v, top) / top) * ph;
  const when = (t: number) => (to - from > 86400 ? new Date(t * 1000).toLocaleString() : new Date(t * 1000).toLocaleTimeString());
  el.append(
    svg("rect", { x: PAD.left, y: PAD.top, width: pw, height: ph, class: "plot" }),
    svg("line", { x1: PAD.left, y1: y(top / 2), x2: W - PAD.right, y2: y(top / 2), class: "grid" }),
    svg("text", { x: PAD.left - 6, y: PAD.top + 10, class: "axis", "text-anchor": "end" }, spec.unit(top)),
    svg("text", { x: PAD.left - 6, y: y(top / 2) + 4, class: "axis", "text-anchor": "end" }, spec.unit(top / 2)),
    svg("text", { x: PAD.left - 6, y: PAD.top + ph, class: "axis", "text-anchor": "end" }, spec.unit(0)),
    svg("text", { x: PAD.left, y: H - 6, class: "axis" }, when(from)),
    svg("text", { x: W - PAD.right, y: H - 6, class: "axis", "text-anchor": "end" }, when(to)),
  );
  series.forEach((s, i) => {
    // Unknown values (NaN) break the line rather than drawing it down to zero.
    let d = "";
    let pen = false;
    for (const [t, v] of s.points) {
      if (!Number.isFinite(v)) {
        pen = false;
        continue;
      }
      d += `${pen ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    }
    const known = s.points.filter(([, v]) => Number.isFinite(v)).length;
    el.append(svg("path", { d: d || "M0,0", class: `line series-${i}`, "data-points": known, "data-label": s.label }));
    // A lone sample has no line to draw: show it as a dot.
    if (known === 1) {
      const [t, v] = s.points.find(([, v]) => Number.isFinite(v)) as [number, number];
      el.append(svg("circle", { cx: x(t), cy: y(v), r: 3, class: `dot series-${i}` }));
    }
  });
  const desc = series.map((s) => {
    const last = [...s.points].reverse().find(([, v]) => Number.isFinite(v));
    return `${s.label}: ${last ? spec.unit(last[1]) : "no data"}`;
  });
  el.setAttribute("aria-label", `${spec.title}. ${desc.join("; ")}`);
  return el;
}

export class PerformanceTab implements Tab {
  readonly el: HTMLElement;
  private charts = h("div", { class: "charts", id: "charts" });
  private status = h("p", { class: "muted", id: "perf-status", role: "status" });
  private range = RANGES[0];
  private timer: number | null = null;
  private abort: AbortController | null = null;
  private rangeButtons: HTMLButtonElement[] = [];

  constructor(private readonly c: VmContext) {
    const ranges = h(
      "div",
      { class: "ranges", role: "group", "aria-label": "Time range" },
      RANGES.map((r) => {
        const b = h(
          "button",
          {
            class: "small",
            "data-range": r.id,
            "aria-pressed": r === this.range ? "true" : "false",
            onclick: () => {
              this.range = r;
              for (const x of this.rangeButtons) x.setAttribute("aria-pressed", String(x.dataset.range === r.id));
              void this.refresh();
            },
          },
          r.label,
        );
        this.rangeButtons.push(b);
        return b;
      }),
    );
    this.el = h(
      "div",
      { role: "tabpanel", id: "panel-performance", "aria-labelledby": "tab-performance", hidden: true },
      ranges,
      this.status,
      this.charts,
    );
  }

  private vm(): Rec {
    return this.c.store.get("vm", this.c.ref) ?? {};
  }

  update(_changed: Set<string>): void {}

  show(): void {
    if (this.timer !== null) return;
    void this.refresh();
    this.timer = window.setInterval(() => void this.refresh(), REFRESH_MS);
  }

  hide(): void {
    if (this.timer !== null) window.clearInterval(this.timer);
    this.timer = null;
    this.abort?.abort();
  }

  dispose(): void {
    this.hide();
  }

  private async refresh(): Promise<void> {
    this.abort?.abort();
    const abort = new AbortController();
    this.abort = abort;
    const range = this.range;
    const uuid = String(this.vm().uuid ?? "");
    const now = Math.floor(Date.now() / 1000);
    const q = new URLSearchParams({
      session_id: this.c.session.ref,
      start: String(now - range.span),
      cf: "AVERAGE",
      interval: String(range.interval),
      vm_uuid: uuid,
    });
    let text: string;
    try {
      const r = await fetch(`/rrd_updates?${q.toString()}`, { signal: abort.signal });
      text = await r.text();
      if (r.status === 404) {
        this.show404();
        return;
      }
      if (!r.ok) throw new Error(`fvd answered ${r.status}: ${text.trim()}`);
    } catch (e) {
      if (abort.signal.aborted) return;
      this.status.textContent = `Could not read the metrics: ${e instanceof Error ? e.message : String(e)}`;
      return;
    }
    if (abort.signal.aborted) return;
    let u: Updates;
    try {
      u = parseUpdates(text);
    } catch (e) {
      this.status.textContent = e instanceof Error ? e.message : String(e);
      return;
    }
    this.draw(u, now - range.span, now);
  }

  private show404(): void {
    const state = String(this.vm().power_state ?? "");
    this.status.textContent =
      state === "Running" || state === "Paused"
        ? "No samples yet: fvd samples running VMs every 5 seconds."
        : "No samples: the VM has not run recently. Start it to see its graphs.";
    this.charts.replaceChildren();
  }

  private draw(u: Updates, from: number, to: number): void {
    const known = u.rows.filter((r) => r.values.some(Number.isFinite)).length;
    this.status.textContent = known
      ? `${known} sample${known === 1 ? "" : "s"} every ${this.range.interval} s, averaged; updated ${new Date().toLocaleTimeString()}.`
      : "No samples in this range yet.";
    // From the first known sample: a VM that started a minute ago fills the width.
    const first = u.rows.find((r) => r.values.some(Number.isFinite))?.t;
    const start = first !== undefined ? Math.max(from, Math.min(first, to - this.range.interval)) : from;
    const figures = CHARTS.map((spec) => {
      const series: Series[] = [];
      for (const src of spec.sources) {
        u.legend.forEach((ds, col) => {
          if (typeof src.ds === "string" ? ds !== src.ds : !src.ds.test(ds)) return;
          series.push({
            label: src.label(ds),
            points: u.rows.map((r) => [r.t, (r.values[col] ?? NaN) * (src.scale ?? 1)]),
          });
        });
      }
      if (series.length === 0) return null;
      return h(
        "figure",
        { class: "chart-box" },
        h("figcaption", {}, spec.title, " ", series.map((s, i) => h("span", { class: `key series-${i}` }, s.label))),
        drawChart(spec, series, start, to) as unknown as HTMLElement,
      );
    });
    this.charts.replaceChildren(...figures.filter((f): f is HTMLElement => f !== null));
  }
}
