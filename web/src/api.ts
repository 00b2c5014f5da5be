// A XenAPI client over JSON-RPC 2.0 at /jsonrpc: the same calls every other client makes.

export type Rec = Record<string, unknown>;

/** A XenAPI failure: its code (e.g. VM_BAD_POWER_STATE) and parameters. */
export class XenApiError extends Error {
  constructor(
    public readonly code: string,
    public readonly params: string[],
  ) {
    super([code, ...params].join(" "));
    this.name = "XenApiError";
  }
}

let nextId = 1;

/** One call; `session` is put first unless null (login). */
export async function call(
  method: string,
  params: unknown[],
  signal?: AbortSignal,
): Promise<unknown> {
  const id = nextId++;
  let response: Response;
  try {
    response = await fetch("/jsonrpc", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", method, params, id }),
      signal,
    });
  } catch (e) {
    if (signal?.aborted) throw e;
    throw new XenApiError("NETWORK_ERROR", [String(e)]);
  }
  if (!response.ok) {
    throw new XenApiError("HTTP_ERROR", [`${response.status} ${response.statusText}`]);
  }
  const body = (await response.json()) as {
    result?: unknown;
    error?: { message?: string; data?: unknown[] } | null;
  };
  if (body.error) {
    const data = Array.isArray(body.error.data) ? body.error.data.map(String) : [];
    throw new XenApiError(body.error.message ?? "INTERNAL_ERROR", data);
  }
  return body.result;
}

/** A logged-in session. */
export class Session {
  constructor(
    public readonly ref: string,
    public readonly user: string,
    public readonly role: string,
  ) {}

  static async login(user: string, password: string): Promise<Session> {
    const ref = String(
      await call("session.login_with_password", [user, password, "1.0", "ferrovisor-web"]),
    );
    const rec = (await call("session.get_record", [ref, ref])) as Rec;
    const perms = Array.isArray(rec.rbac_permissions) ? rec.rbac_permissions.map(String) : [];
    return new Session(ref, user, strongestRole(perms));
  }

  call(method: string, ...params: unknown[]): Promise<unknown> {
    return call(method, [this.ref, ...params]);
  }

  callWithSignal(signal: AbortSignal, method: string, ...params: unknown[]): Promise<unknown> {
    return call(method, [this.ref, ...params], signal);
  }

  async logout(): Promise<void> {
    try {
      await call("session.logout", [this.ref]);
    } catch {
      // The session may already be gone (fvd restarted): nothing to undo.
    }
  }
}

/** XenAPI's roles, weakest first: each may do what the roles before it may. */
export const ROLES = [
  "read-only",
  "vm-operator",
  "vm-admin",
  "vm-power-admin",
  "pool-operator",
  "pool-admin",
] as const;
export type Role = (typeof ROLES)[number];

export function roleRank(role: string): number {
  return ROLES.indexOf(role as Role);
}

/** The strongest of the roles a session holds (its `rbac_permissions`). */
export function strongestRole(perms: string[]): string {
  let best = -1;
  for (const p of perms) best = Math.max(best, roleRank(p.toLowerCase()));
  return best >= 0 ? ROLES[best] : "read-only";
}
