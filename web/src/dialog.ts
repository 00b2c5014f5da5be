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

export interface FormField {
  id: string;
  label: string;
  control: HTMLElement;
  hint?: string;
}

/**
 * A modal form (laid out as the New VM wizard). `submit` runs on the action button: the
 * dialog closes when it resolves, and shows the error in words and stays open when it
 * throws (the caller reports it to the task panel too). Resolves true once submitted.
 */
export function formDialog(
  id: string,
  title: string,
  fields: FormField[],
  action: string,
  submit: () => Promise<void>,
  explain: (e: unknown) => string,
): Promise<boolean> {
  return new Promise((resolve) => {
    const error = h("p", { class: "error", role: "alert", id: `${id}-error` });
    const yes = h("button", { type: "submit", class: "primary", id: `${id}-ok` }, action);
    const no = h("button", { type: "button", id: `${id}-cancel` }, "Cancel");
    const form = h(
      "form",
      { class: "wizard-form" },
      h("h2", { id: `${id}-title` }, title),
      fields.map((f) =>
        h("div", { class: "field" }, h("label", { for: f.id }, f.label), f.control, f.hint ? h("p", { class: "hint" }, f.hint) : null),
      ),
      error,
      h("div", { class: "buttons" }, no, yes),
    );
    const dialog = h("dialog", { class: "wizard", id, "aria-labelledby": `${id}-title` }, form);
    let done = false;
    let busy = false;
    no.addEventListener("click", () => {
      if (!busy) dialog.close();
    });
    dialog.addEventListener("cancel", (ev) => {
      if (busy) ev.preventDefault();
    });
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(done);
    });
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      busy = true;
      yes.disabled = true;
      error.textContent = "";
      submit()
        .then(() => {
          done = true;
          dialog.close();
        })
        .catch((e: unknown) => {
          error.textContent = explain(e);
        })
        .finally(() => {
          busy = false;
          yes.disabled = false;
        });
    });
    document.body.append(dialog);
    dialog.showModal();
    const first = fields[0]?.control;
    if (first instanceof HTMLInputElement || first instanceof HTMLSelectElement) first.focus();
  });
}
