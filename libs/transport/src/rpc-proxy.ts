import type { ClientProxy, Server } from '@nestjs/microservices';
import { firstValueFrom, timeout, TimeoutError } from 'rxjs';
import { DomainError, ERROR_CODES, type ErrorCode } from '#libs/protocol';
import type { RpcError } from './rpc-keys.js';
import type { RpcObserver } from './rpc-metrics.js';

type AsyncMethods<T> = { [K in keyof T]: T[K] extends (...args: infer A) => Promise<infer R> ? (...args: A) => Promise<R> : never };

/**
 * An object with the same async methods as a domain API, each one a call
 * `service.method` over the transport. A call that gets no answer within
 * `timeoutMs` ends in `unavailable`; an error from the service comes back as
 * the same DomainError. Arguments and results are JSON. `observe` is told
 * of every call's outcome and duration.
 */
export function rpcProxy<T>(
  client: ClientProxy,
  service: string,
  methods: readonly (keyof T & string)[],
  timeoutMs: number,
  observe?: RpcObserver,
): AsyncMethods<T> {
  const proxy: Record<string, unknown> = {};
  for (const method of methods) {
    proxy[method] = async (...args: unknown[]) => {
      const started = process.hrtime.bigint();
      const seconds = () => Number(process.hrtime.bigint() - started) / 1e9;
      try {
        // A callback argument cannot cross processes: it travels as null, so the service sees it as not given.
        const wire = args.map((a) => (typeof a === 'function' ? null : a));
        const result = await firstValueFrom(client.send<unknown>(`${service}.${method}`, wire).pipe(timeout(timeoutMs)));
        observe?.(service, method, 'ok', seconds());
        return result;
      } catch (e) {
        const error = toDomainError(e, service);
        observe?.(service, method, error.code, seconds());
        throw error;
      }
    };
  }
  return proxy as AsyncMethods<T>;
}

/**
 * Serves a domain API's methods as `service.method` handlers. JSON has no
 * `undefined`: an argument that left as undefined arrives as null and is
 * turned back (no exposed method takes null as a meaningful argument).
 */
export function exposeService<T extends object>(server: Server, service: string, implementation: T, methods: readonly (keyof T & string)[]): void {
  for (const method of methods) {
    const fn = implementation[method] as unknown as (...args: unknown[]) => Promise<unknown>;
    server.addHandler(`${service}.${method}`, async (args: unknown) => {
      const list = Array.isArray(args) ? args.map((a: unknown) => (a === null ? undefined : a)) : [];
      return fn.apply(implementation, list);
    });
  }
}

function toDomainError(e: unknown, service: string): DomainError {
  if (e instanceof DomainError) return e;
  if (e instanceof TimeoutError) return new DomainError('unavailable', `the ${service} service did not answer in time; try again`);
  const err = e as Partial<RpcError> | undefined;
  if (err && typeof err.code === 'string' && (ERROR_CODES as readonly string[]).includes(err.code))
    return new DomainError(err.code as ErrorCode, err.message ?? err.code);
  return new DomainError('unavailable', `the ${service} service failed: ${err?.message ?? String(e)}`);
}
