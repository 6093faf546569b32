/** Redis keys of the RPC transport, all under the deployment's prefix. */
export const rpcKeys = {
  /** The stream of calls to one service (`presence`, `receipts`, `group`). */
  stream: (prefix: string, service: string): string => `${prefix}rpc:${service}`,
  /** A sorted set of a service's live consumers, scored by their last heartbeat (epoch ms). */
  alive: (prefix: string, service: string): string => `${prefix}rpc:alive:${service}`,
  /** The pub/sub channel one client process receives its replies on. */
  replies: (prefix: string, clientId: string): string => `${prefix}rpc:reply:${clientId}`,
};

/** How often a service process says it is alive, and after how long without that it counts as gone. */
export const HEARTBEAT_MS = 1000;
export const ALIVE_WITHIN_MS = 5000;

/** The service a pattern belongs to: its first dot-separated segment (`presence.who` → `presence`). */
export function serviceOf(pattern: string): string {
  const dot = pattern.indexOf('.');
  return dot < 0 ? pattern : pattern.slice(0, dot);
}

/** The method a pattern calls (`presence.who` → `who`). */
export function methodOf(pattern: string): string {
  const dot = pattern.indexOf('.');
  return dot < 0 ? '' : pattern.slice(dot + 1);
}

/** How an error crosses the wire: the DomainError code and message survive unchanged. */
export interface RpcError {
  code: string;
  message: string;
}

/** A flat Redis reply `[field, value, field, value, …]` as an object. */
export function fieldsOf<T>(list: readonly T[]): Record<string, T | undefined> {
  const out: Record<string, T> = {};
  for (let i = 0; i + 1 < list.length; i += 2) out[String(list[i])] = list[i + 1]!;
  return out;
}
