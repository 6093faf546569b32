/** Redis keys of the RPC transport, all under the deployment's prefix. */
export const rpcKeys = {
  /** The stream of calls to one service (`presence`, `receipts`, `group`). */
  stream: (prefix: string, service: string): string => `${prefix}rpc:${service}`,
  /** The pub/sub channel one client process receives its replies on. */
  replies: (prefix: string, clientId: string): string => `${prefix}rpc:reply:${clientId}`,
};

/** The service a pattern belongs to: its first dot-separated segment (`presence.who` → `presence`). */
export function serviceOf(pattern: string): string {
  const dot = pattern.indexOf('.');
  return dot < 0 ? pattern : pattern.slice(0, dot);
}

/** How an error crosses the wire: the DomainError code and message survive unchanged. */
export interface RpcError {
  code: string;
  message: string;
}
