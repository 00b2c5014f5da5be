// A modal confirmation: resolves true when the user confirms, false on Cancel or Escape.

import { h } from "./dom";

export function confirmDialog(title: string, text: string, action: string): Promise<boolean> {
  return new Promise((resolve) => {
    const yes = h("button", { class: "danger", value: "yes", id: "confirm-yes" }, action);
    const no = h("button", { value: "no", id: "confirm-no" }, "Cancel");
    const dialog = h(
      "dialog",
      { class: "confirm", "aria-labelledby": "confirm-title" },
      h("form", { method: "dialog" }, h("h2", { id: "confirm-title" }, title), h("p", {}, text), h("div", { class: "buttons" }, no, yes)),
    );
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "yes");
      dialog.remove();
    });
    document.body.append(dialog);
    dialog.showModal();
    no.focus();
  });
}

/** Asks for a size in GiB (at least `minGiB`); resolves the bytes, or null when cancelled. */
export function askSize(title: string, text: string, minGiB: number, suggestGiB: number): Promise<number | null> {
  return new Promise((resolve) => {
    const input = h("input", {
      id: "size-input",
      type: "number",
      min: String(minGiB),
      step: "0.25",
      value: String(suggestGiB),
      required: true,
      "aria-label": "New size in GiB",
    });
    const yes = h("button", { class: "primary", value: "yes", id: "size-yes" }, "Resize");
    const no = h("button", { value: "no", id: "size-no", formnovalidate: true }, "Cancel");
    const dialog = h(
      "dialog",
      { class: "confirm", "aria-labelledby": "size-title" },
      h(
        "form",
        { method: "dialog" },
        h("h2", { id: "size-title" }, title),
        h("p", {}, text),
        h("label", { class: "inline" }, input, " GiB"),
        h("div", { class: "buttons" }, no, yes),
      ),
    );
    dialog.addEventListener("close", () => {
      const gib = Number(input.value);
      resolve(dialog.returnValue === "yes" && gib >= minGiB ? Math.round(gib * 2 ** 30) : null);
      dialog.remove();
    });
    document.body.append(dialog);
    dialog.showModal();
    input.select();
  });
}
