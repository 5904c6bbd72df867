// The REST API under /api/v1, with the session's bearer token.

export interface ErrorDetail {
  field: string;
  message: string;
  line?: number;
  column?: number;
}

export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
    public field?: string,
    public details: ErrorDetail[] = [],
  ) {
    super(message);
  }
}

const KEY = "bulkhead.token";
let token: string | null = sessionStorage.getItem(KEY);
let onUnauthenticated: () => void = () => {};

export function setToken(t: string | null) {
  token = t;
  if (t) sessionStorage.setItem(KEY, t);
  else sessionStorage.removeItem(KEY);
}
export const getToken = () => token;
export function whenUnauthenticated(f: () => void) {
  onUnauthenticated = f;
}

export async function request<T>(method: string, path: string, body?: unknown, auth = token): Promise<T> {
  const headers: Record<string, string> = { accept: "application/json" };
  if (auth) headers.authorization = `Bearer ${auth}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  let res: Response;
  try {
    res = await fetch(path.startsWith("/") && !path.startsWith("/api/") ? `/api/v1${path}` : path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, "network", `The server did not answer (${(e as Error).message}).`);
  }
  if (!res.ok) {
    let err = new ApiError(res.status, "http", `${res.status} ${res.statusText}`);
    try {
      const b = await res.json();
      if (b?.error) err = new ApiError(res.status, b.error.code, b.error.message, b.error.field, b.error.details ?? []);
    } catch {
      /* not JSON */
    }
    if (res.status === 401 && auth === token) onUnauthenticated();
    throw err;
  }
  return (await res.json()) as T;
}

export const get = <T>(path: string) => request<T>("GET", path);
export const post = <T>(path: string, body?: unknown) => request<T>("POST", path, body ?? {});
export const put = <T>(path: string, body: unknown) => request<T>("PUT", path, body);
export const del = <T>(path: string) => request<T>("DELETE", path);

/** Plain-text endpoints outside /api/v1 (/metrics needs the token, /readyz does not). */
export async function text(path: string): Promise<{ ok: boolean; body: string }> {
  try {
    const r = await fetch(path, { headers: token ? { authorization: `Bearer ${token}` } : {} });
    return { ok: r.ok, body: await r.text() };
  } catch (e) {
    return { ok: false, body: String(e) };
  }
}

export const enc = encodeURIComponent;

export function query(params: Record<string, string | number | undefined | null>): string {
  const q = Object.entries(params)
    .filter(([, v]) => v !== undefined && v !== null && v !== "")
    .map(([k, v]) => `${enc(k)}=${enc(String(v))}`)
    .join("&");
  return q ? `?${q}` : "";
}
