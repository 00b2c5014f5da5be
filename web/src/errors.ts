// XenAPI errors in words, for people; the code and parameters stay visible beside them.

import { XenApiError } from "./api";

const EXPLAIN: Record<string, (p: string[]) => string> = {
  SESSION_AUTHENTICATION_FAILED: () => "The user name or password is wrong.",
  SESSION_INVALID: () => "Your session has ended (logged out, or fvd restarted). Log in again.",
  HANDLE_INVALID: (p) => `The ${p[0] ?? "object"} no longer exists.`,
  UUID_INVALID: (p) => `There is no ${p[0] ?? "object"} with uuid ${p[1] ?? "?"}.`,
  RBAC_PERMISSION_DENIED: (p) =>
    `You are not allowed to do this (${p[0] ?? "?"}): ${p[1] ?? "your role is too weak"}.`,
  VM_BAD_POWER_STATE: (p) =>
    `The VM must be ${(p[1] ?? "?").toLowerCase()} for this, but it is ${(p[2] ?? "?").toLowerCase()}.`,
  VM_IS_TEMPLATE: () => "This is a template: templates cannot be started. Clone it into a VM first.",
  OTHER_OPERATION_IN_PROGRESS: (p) =>
    `Another operation (${p[2] ?? "?"}) is already running on this ${p[0] ?? "object"}; wait for it to finish.`,
  OPERATION_NOT_ALLOWED: (p) => `This is not allowed here: ${p[0] ?? "no reason given"}.`,
  NO_HOSTS_AVAILABLE: () => "No host can run this VM now (not enough memory or CPUs).",
  MEMORY_CONSTRAINT_VIOLATION: (p) => `The memory settings are inconsistent: ${p[0] ?? ""}.`,
  VM_SHUTDOWN_TIMEOUT: (p) =>
    `The guest did not shut down within ${p[1] ?? "the"} seconds; try Force shut down.`,
  SR_FULL: (p) => `The storage repository is full: ${p[0] ?? "?"} bytes were asked for, ${p[1] ?? "?"} are free.`,
  VDI_IN_USE: (p) => `The disk is in use by a running VM (${p[1] ?? "operation"}).`,
  INVALID_VALUE: (p) => `The value ${JSON.stringify(p[1] ?? "")} is not valid for ${p[0] ?? "this field"}.`,
  FIELD_TYPE_ERROR: (p) => `The field ${p[0] ?? "?"} has the wrong type.`,
  TASK_CANCELLED: () => "The task was cancelled.",
  NOT_IMPLEMENTED: (p) => `Ferrovisor does not implement ${p[0] ?? "this"} yet.`,
  INTERNAL_ERROR: (p) => `fvd could not do it: ${p[0] ?? "no details were given"}.`,
  NETWORK_ERROR: () => "fvd cannot be reached: the network or fvd is down.",
  HTTP_ERROR: (p) => `fvd answered with an HTTP error (${p[0] ?? "?"}).`,
  DEVICE_ALREADY_ATTACHED: (p) => `The device ${p[0] ?? ""} is already attached.`,
  DEVICE_ALREADY_DETACHED: (p) => `The device ${p[0] ?? ""} is already detached.`,
  DEVICE_DETACH_REJECTED: (p) =>
    `The ${p[0] ?? "device"} stays attached: ${p[2] ?? "the guest did not let go of it"}. Shut the VM down to remove it.`,
  NETWORK_CONTAINS_VIF: (p) => {
    const n = (p[0] ?? "").split(",").filter((v) => v).length;
    return `The network is still used by ${n === 1 ? "1 network interface" : `${n} network interfaces`}; remove them from their VMs first.`;
  },
  SR_OPERATION_NOT_SUPPORTED: (p) => `This storage repository cannot do that: ${p[0] ?? "?"}.`,
  SR_BACKEND_FAILURE: (p) => `The storage failed: ${[p[1], p[2]].filter((x) => x).join(" ") || (p[0] ?? "no details")}.`,
  DB_UNIQUENESS_CONSTRAINT_VIOLATION: (p) => `There is already a ${p[0] ?? "object"} with ${p[1] ?? "that"} ${JSON.stringify(p[2] ?? "")}.`,
  EVENTS_LOST: () => "Too many changes happened at once; the view is being reloaded.",
};

/** A sentence for a XenAPI error code and its parameters. */
export function explain(code: string, params: string[]): string {
  const f = EXPLAIN[code];
  if (f) return f(params);
  return `The operation failed (${code}${params.length ? ": " + params.join(", ") : ""}).`;
}

export function explainError(e: unknown): { code: string; params: string[]; text: string } {
  if (e instanceof XenApiError) {
    return { code: e.code, params: e.params, text: explain(e.code, e.params) };
  }
  const message = e instanceof Error ? e.message : String(e);
  return { code: "CLIENT_ERROR", params: [message], text: message };
}
