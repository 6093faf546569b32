import type { PresenceState } from '#libs/protocol';
import type { PresenceApi } from './presence.service.js';

/**
 * Reads under way, by key: a read asked for while one of the same key is under way gets its answer instead of
 * starting another. `forget` ends the sharing of a key (say, its value is changing): the next read starts afresh.
 */
export class SharedReads<T> {
  private readonly underWay = new Map<string, Promise<T>>();

  read(key: string, start: () => Promise<T>): Promise<T> {
    const shared = this.underWay.get(key);
    if (shared) return shared;
    const read = start();
    this.underWay.set(key, read);
    const done = () => {
      if (this.underWay.get(key) === read) this.underWay.delete(key);
    };
    read.then(done, done);
    return read;
  }

  forget(key: string): void {
    this.underWay.delete(key);
  }

  forgetAll(): void {
    this.underWay.clear();
  }
}

/**
 * A presence API whose reads of one user's state under way at once are one call: for a gateway whose presence
 * service runs in another process, a burst of messages to one user costs one call, not one each. A change this
 * gateway reports (a connection of that user up or down, a gateway gone or
 * brought in line) ends the sharing first, so a read asked
 * for after it is a call of its own, made after it. A change made elsewhere (on another gateway) does not: a read may
 * then join a call begun just before it and answer with the state before it, as a read racing that change could
 * anyway; the call's duration is as long as that lasts.
 */
export function sharingReads(api: PresenceApi): PresenceApi {
  const reads = new SharedReads<PresenceState>();
  return {
    connected: (conn, at) => {
      reads.forget(conn.user);
      return api.connected(conn, at);
    },
    disconnected: (conn, at) => {
      reads.forget(conn.user);
      return api.disconnected(conn, at);
    },
    gatewayGone: (gatewayId, lastAlive) => {
      reads.forgetAll();
      return api.gatewayGone(gatewayId, lastAlive);
    },
    gatewayHolds: (gatewayId, held, endedBy) => {
      reads.forgetAll();
      return api.gatewayHolds(gatewayId, held, endedBy);
    },
    who: (user) => api.who(user),
    stateOf: (user) => reads.read(user, () => api.stateOf(user)),
  };
}
