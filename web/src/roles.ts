// Which role each action of the console needs, as docs/xenapi.md lists them (the model's
// `roles`): the console disables what the session's role cannot do and says why.

import { roleRank } from "./api";

export const NEEDS: Record<string, string> = {
  "VM.start": "vm-operator",
  "VM.clean_shutdown": "vm-operator",
  "VM.hard_shutdown": "vm-operator",
  "VM.clean_reboot": "vm-operator",
  "VM.hard_reboot": "vm-operator",
  "VM.pause": "vm-operator",
  "VM.unpause": "vm-operator",
  "VM.clone": "vm-admin",
  "VM.destroy": "vm-admin",
  "VM.set_name_label": "vm-admin",
  "VM.set_name_description": "vm-admin",
  "VM.copy": "vm-admin",
  "VM.provision": "vm-admin",
  "VM.set_memory_limits": "vm-power-admin",
  "VIF.create": "vm-admin",
  "VIF.destroy": "vm-admin",
  "VIF.plug": "vm-admin",
  "VIF.unplug": "vm-admin",
  "VIF.set_locking_mode": "pool-operator",
  "VIF.set_ipv4_allowed": "pool-operator",
  "network.create": "pool-operator",
  "network.destroy": "pool-operator",
  "SR.create": "pool-operator",
  "SR.destroy": "pool-operator",
  "VM.snapshot": "vm-power-admin",
  "VM.revert": "vm-power-admin",
  "VDI.create": "vm-admin",
  "VDI.destroy": "vm-admin",
  "VDI.resize": "vm-admin",
  "VBD.create": "vm-admin",
  "VBD.destroy": "vm-admin",
  "console.type": "vm-operator",
};

/** Why `role` may not call `method`, or null if it may. */
export function refusal(role: string, method: string): string | null {
  const need = NEEDS[method];
  if (need === undefined || roleRank(role) >= roleRank(need)) return null;
  return `Your role (${role}) cannot do this: it needs ${need} or higher.`;
}
