import { isUtf8 } from 'node:buffer';
import { Logger } from '@nestjs/common';
import type { AuthenticateError, Client, ConnectPacket, PublishPacket, Subscription } from 'aedes';
import type { AccountsService } from '#libs/accounts';
import type { Metrics } from '#libs/health';
import { LogThrottle } from '#libs/runtime';
import { guardOf } from './connection-guard.js';
import { addressKey, type LoginThrottle } from './login-throttle.js';
import { KeyedBuckets } from './request-limiter.js';
import { DELIVERY_QOS, inboxTopicOf, principalFor, requestTopicOf, TOPIC_ROOT, topics, USERNAME_PATTERN, type Principal } from '#libs/protocol';

const PRESENCE_PREFIX = `${TOPIC_ROOT}/presence/`;

/** CONNACK return codes of MQTT 3.1.1 (section 3.2.2.3) that a login can end with. */
const CONNACK = { IDENTIFIER_REJECTED: 2, SERVER_UNAVAILABLE: 3, BAD_USERNAME_OR_PASSWORD: 4, NOT_AUTHORIZED: 5 } as const;

function refusal(returnCode: (typeof CONNACK)[keyof typeof CONNACK], message: string): AuthenticateError {
  return Object.assign(new Error(message), { returnCode });
}

/** What limits the logins a gateway accepts, and what each connection may hold; a limit left out is none. */
export interface LoginLimits {
  throttle: LoginThrottle;
  maxConnectionsPerUser: number;
  /**
   * Logins one user may make per minute, on average and in a burst (successful ones: a failed one is the throttle's);
   * beyond, CONNACK 3, "try again". None when absent.
   */
  loginsPerMinute?: number;
  /** Anonymous connections one address (IPv6: its /64) may hold at once; more are refused (CONNACK 5). */
  maxAnonymousPerAddress?: number;
  /** How long an anonymous connection may stay: it is closed then, registered or not. */
  anonymousTimeoutMs?: number;
  /** Filters one connection (or persistent session) may hold besides its inbox; more are refused (SUBACK 0x80). `presence/+` covers everyone. */
  maxSubscriptions?: number;
}

/**
 * Who may connect, and what each connection may read and write. The rules:
 * a user logs in with its password and a client id of its own (`user` or
 * `user/<device>`); it publishes only to its own requests topic and reads only
 * its own inbox and replies topics and anyone's presence. An anonymous
 * connection (no user name) may only register, and reads only its inbox.
 */
export class AccessPolicy {
  private readonly logger = new Logger('AccessPolicy');
  /** While the account store is away every client trying to log in fails alike, again and again: one line per 10 s says so. */
  private readonly failureLog = new LogThrottle();
  private readonly principals = new WeakMap<Client, Principal>();
  /** Open logged-in connections per user on this gateway. */
  private readonly open = new OpenCounts();
  /** The connections counted in `open`, until they end. */
  private readonly counted = new WeakMap<Client, string>();
  /** Open anonymous connections per address (`addressKey`) on this gateway. */
  private readonly anonymous = new OpenCounts();
  /** The anonymous connections counted in `anonymous`, with their address and the timer that closes them. */
  private readonly anonymousCounted = new WeakMap<Client, { address: string; timer: NodeJS.Timeout | undefined }>();
  /** The own topics (inbox, replies) each connection has subscribed to at least once. */
  private readonly subscribedOnce = new WeakMap<Client, Set<string>>();
  /** The filters each connection was granted, for the subscription cap. */
  private readonly granted = new WeakMap<Client, Set<string>>();
  /**
   * Each user's logins (`loginsPerMinute`). A login costs others more than its own connection: a device coming online
   * tells everyone watching its user's presence, and its inbox catch-up sends the backlog again. A client logging in
   * and out in a loop (about 250 times a second, measured) flooded every watcher with presence changes and replayed
   * its backlog at tens of thousands of events a second.
   */
  private readonly logins: KeyedBuckets | undefined;

  constructor(
    private readonly accounts: AccountsService,
    private readonly metrics: Metrics,
    private readonly limits?: LoginLimits,
    now: () => number = Date.now,
  ) {
    const perMinute = limits?.loginsPerMinute;
    this.logins = perMinute === undefined ? undefined : new KeyedBuckets({ perSecond: perMinute / 60, burst: perMinute }, now);
  }

  /** Passwords taken out of CONNECT packets (`holdPassword`) until their login reads them. */
  private readonly passwords = new WeakMap<Client, Buffer>();

  /**
   * Takes the password out of a connection's CONNECT packet before the broker logs it in (Aedes's `preConnect`), for
   * `heldPassword` to hand to `authenticate`. The broker keeps the packet as long as the connection lasts (its parser
   * holds on to it), and the password in it is a view of the bytes the client sent: kept there, it kept those bytes
   * too, about 250 bytes per connection.
   */
  holdPassword(client: Client, packet: ConnectPacket): void {
    if (packet.password === undefined) return;
    this.passwords.set(client, packet.password);
    packet.password = undefined;
  }

  /** The password `holdPassword` took for this connection's login, once: it is let go. */
  heldPassword(client: Client): Buffer | undefined {
    const password = this.passwords.get(client);
    this.passwords.delete(client);
    return password;
  }

  /** The principal a connection logged in as; undefined before login. */
  principalOf(client: Client): Principal | undefined {
    return this.principals.get(client);
  }

  authenticate(
    client: Client,
    username: string | undefined,
    password: Buffer | undefined,
    done: (error: AuthenticateError | null, success: boolean | null) => void,
  ): void {
    // Read once, and the plaintext goes at once, whatever becomes of the login: a buffer a caller still holds (a
    // CONNECT packet the broker keeps) no longer shows it.
    const secret = password?.toString('utf8');
    // Read as text, a byte that starts no character would become U+FFFD, and passwords differing only in such bytes
    // would be one password: one that is not well-formed UTF-8 is refused instead.
    const wellFormed = password === undefined || isUtf8(password);
    password?.fill(0);
    if (username !== undefined && username !== '' && !USERNAME_PATTERN.test(username)) {
      this.metrics.loginsFailed.inc({ reason: 'password' });
      return done(refusal(CONNACK.BAD_USERNAME_OR_PASSWORD, 'bad user name or password'), null);
    }
    const principal = principalFor(client.id, username);
    if (principal === null) {
      this.metrics.loginsFailed.inc({ reason: 'client_id' });
      // A client id that is someone else's, or malformed, is refused outright, so no one can take over another user's session.
      return done(refusal(CONNACK.IDENTIFIER_REJECTED, 'client id must be your user name or user/<device>'), null);
    }
    if (principal.kind === 'anonymous') {
      if (secret !== undefined) {
        this.metrics.loginsFailed.inc({ reason: 'password' });
        return done(refusal(CONNACK.BAD_USERNAME_OR_PASSWORD, 'a password needs a user name'), null);
      }
      const address = addressKey(guardOf(client.conn)?.remoteAddress ?? 'unknown');
      const max = this.limits?.maxAnonymousPerAddress;
      if (max !== undefined && this.anonymous.of(address) >= max) {
        this.metrics.loginsFailed.inc({ reason: 'connections' });
        return done(refusal(CONNACK.NOT_AUTHORIZED, `at most ${max} anonymous connections per address; register, then log in`), null);
      }
      this.principals.set(client, principal);
      this.countAnonymous(client, address);
      return done(null, true);
    }
    if (secret === undefined) {
      this.metrics.loginsFailed.inc({ reason: 'password' });
      return done(refusal(CONNACK.BAD_USERNAME_OR_PASSWORD, 'password required'), null);
    }
    if (!wellFormed) {
      this.metrics.loginsFailed.inc({ reason: 'password' });
      return done(refusal(CONNACK.BAD_USERNAME_OR_PASSWORD, 'password is not valid UTF-8'), null);
    }
    const address = guardOf(client.conn)?.remoteAddress ?? 'unknown';
    this.logIn(client, principal, secret, address).then(
      (refused) => (refused ? done(refused, null) : done(null, true)),
      (e: unknown) => {
        const error = String(e);
        const fields = this.failureLog.logFields(error);
        if (fields) this.logger.error({ event: 'login_failed', error, ...fields });
        this.metrics.loginsFailed.inc({ reason: 'unavailable' });
        done(refusal(CONNACK.SERVER_UNAVAILABLE, 'account store unavailable'), null);
      },
    );
  }

  /** Logs a user's connection in, or resolves with why not. Rejects when a store cannot be asked. */
  private logIn(client: Client, principal: Principal & { kind: 'user' }, password: string, address: string): Promise<AuthenticateError | null> {
    const throttle = this.limits?.throttle;
    if (!throttle) return this.checkLogin(client, principal, password, address);
    return throttle.attempt(principal.user, address, () =>
      // A connection that ended while its attempt waited (the connect timeout) costs no KDF run.
      isOver(client) ? Promise.resolve(refusal(CONNACK.NOT_AUTHORIZED, 'connection closed')) : this.checkLogin(client, principal, password, address),
    );
  }

  private async checkLogin(client: Client, principal: Principal & { kind: 'user' }, password: string, address: string): Promise<AuthenticateError | null> {
    // Asked before the password is hashed: a brute force costs a lookup, not a KDF run.
    const lockedUntil = (await this.limits?.throttle.lockedUntil(principal.user, address)) ?? 0;
    if (lockedUntil > 0) {
      this.metrics.loginsFailed.inc({ reason: 'throttled' });
      return refusal(CONNACK.NOT_AUTHORIZED, `too many failed logins; try again after ${new Date(lockedUntil).toISOString()}`);
    }
    if (!this.mayOpenAnother(client, principal.user)) {
      this.metrics.loginsFailed.inc({ reason: 'connections' });
      return refusal(CONNACK.NOT_AUTHORIZED, `at most ${this.limits?.maxConnectionsPerUser} connections per user`);
    }
    // Taken before the password is checked, so that logins under way at once cannot all pass on one token; given back
    // when the login fails after all.
    if (this.logins && !this.logins.take(principal.user)) {
      this.metrics.loginsFailed.inc({ reason: 'login_rate' });
      const seconds = Math.ceil(this.logins.waitMs(principal.user) / 1000);
      return refusal(CONNACK.SERVER_UNAVAILABLE, `at most ${this.limits?.loginsPerMinute} logins a minute per user; try again in ${seconds} s`);
    }
    let loggedIn = false;
    try {
      if (!(await this.accounts.authenticate(principal.user, password))) {
        // The login is refused either way; a failure that could not be counted is only logged.
        await this.limits?.throttle
          .failed(principal.user, address)
          .catch((e: unknown) => this.logger.warn({ event: 'login_failure_not_counted', user: principal.user, error: String(e) }));
        this.metrics.loginsFailed.inc({ reason: 'password' });
        return refusal(CONNACK.BAD_USERNAME_OR_PASSWORD, 'bad user name or password');
      }
      if (!this.mayOpenAnother(client, principal.user)) {
        this.metrics.loginsFailed.inc({ reason: 'connections' });
        return refusal(CONNACK.NOT_AUTHORIZED, `at most ${this.limits?.maxConnectionsPerUser} connections per user`);
      }
      this.principals.set(client, principal);
      this.countOpen(client, principal.user);
      loggedIn = true;
      return null;
    } finally {
      // A login that did not happen (refused, or the store could not be asked) gives its token back.
      if (!loggedIn) this.logins?.give(principal.user);
    }
  }

  /** A user under its connection limit may open another; taking over one of its own client ids replaces a connection rather than adding one. */
  private mayOpenAnother(client: Client, user: string): boolean {
    if (!this.limits) return true;
    const takesOver = (client as Client & { broker?: { clients?: Record<string, unknown> } }).broker?.clients?.[client.id] !== undefined;
    return takesOver || this.open.of(user) < this.limits.maxConnectionsPerUser;
  }

  /** Counts a logged-in connection until it ends (`connectionClosed`). */
  private countOpen(client: Client, user: string): void {
    if (this.counted.has(client) || isOver(client)) return;
    this.counted.set(client, user);
    this.open.add(user);
  }

  /**
   * Counts an anonymous connection until it ends, and closes it after `anonymousTimeoutMs`: one that may only register
   * has no reason to stay, and free sockets held open are how a stranger would run a server out of them.
   */
  private countAnonymous(client: Client, address: string): void {
    if (isOver(client)) return;
    const ttl = this.limits?.anonymousTimeoutMs;
    const timer = ttl === undefined ? undefined : setTimeout(() => client.close(), ttl).unref();
    this.anonymousCounted.set(client, { address, timer });
    this.anonymous.add(address);
  }

  /** A connection ended, however (the broker calls this for each one it was handed): it counts no longer. */
  connectionClosed(client: Client): void {
    const anonymous = this.anonymousCounted.get(client);
    if (anonymous) {
      this.anonymousCounted.delete(client);
      clearTimeout(anonymous.timer);
      this.anonymous.remove(anonymous.address);
      return;
    }
    const user = this.counted.get(client);
    if (user === undefined) return;
    this.counted.delete(client);
    this.open.remove(user);
  }

  /**
   * True when the connection may publish this packet. Only a connection's own
   * requests topic is writable; anything else closes the connection, which is
   * one of the two answers MQTT 3.1.1 allows for an unauthorized PUBLISH
   * [MQTT-3.3.5-2].
   */
  mayPublish(client: Client | null, packet: PublishPacket): client is Client {
    if (client === null) return false;
    const principal = this.principals.get(client);
    return principal !== undefined && packet.topic === requestTopicOf(principal);
  }

  /**
   * The subscription to grant, or null for a refusal (SUBACK 0x80) [MQTT-3.9.3-1]: at QoS 0 (see DELIVERY_QOS). A
   * connection holds at most `maxSubscriptions` filters besides its own inbox and replies topic, which it may always
   * have; a filter it holds already is granted again. Grants are counted here, as they are made, so the count is exact
   * even while the broker has not yet recorded the filters of a persistent session's SUBSCRIBE (it stores them first).
   * Each filter also costs what `mayTake` says (the request rate limits), but for the first subscription to each of
   * the connection's own topics: one it refuses is refused too, so a SUBSCRIBE repeated to replay the retained
   * presence, or the inbox's catch-up, cannot run unchecked.
   */
  grantSubscription(client: Client, sub: Subscription, mayTake: (principal: Principal) => boolean = () => true): Subscription | null {
    const principal = this.principals.get(client);
    if (!principal || !this.mayRead(principal, sub.topic)) return null;
    const own = isOwnTopic(principal, sub.topic);
    let held = this.granted.get(client);
    if (!held) this.granted.set(client, (held = new Set()));
    const isNew = !held.has(sub.topic);
    if (isNew && !own) {
      const max = this.limits?.maxSubscriptions;
      // The connection's own topics are held but not counted. (Counted from the set's size, not by walking it: one
      // SUBSCRIBE may carry a thousand filters.)
      let counted = held.size;
      if (held.has(inboxTopicOf(principal))) counted--;
      if (principal.kind === 'user' && held.has(topics.replies(principal.user))) counted--;
      if (max !== undefined && counted >= max) return null;
    }
    // Past the cap, it costs a request: but for the own topics' first subscription, so a device is never shut out of its
    // inbox by its user's other connections' requests (each one after it costs, as it starts a catch-up again).
    let once = this.subscribedOnce.get(client);
    if (!once) this.subscribedOnce.set(client, (once = new Set()));
    if ((!own || once.has(sub.topic)) && !mayTake(principal)) return null;
    if (own) once.add(sub.topic);
    if (isNew) held.add(sub.topic);
    return { ...sub, qos: DELIVERY_QOS };
  }

  /** Whether the connection was granted this filter (and has not let it go since). */
  holds(client: Client, topic: string): boolean {
    return this.granted.get(client)?.has(topic) ?? false;
  }

  /** How many filters the connection holds (its own topics too): what its persistent session keeps once it ends. */
  filtersHeld(client: Client): number {
    return this.granted.get(client)?.size ?? 0;
  }

  /** The connection unsubscribed from these filters: room for as many others. */
  released(client: Client, filters: readonly string[]): void {
    const held = this.granted.get(client);
    if (held) for (const filter of filters) held.delete(filter);
  }

  /**
   * Checks every packet again on its way out, so a subscription restored from
   * an earlier session, a retained message or a queued replay can never carry
   * what the connection may not read.
   */
  mayReceive(client: Client, topic: string): boolean {
    const principal = this.principals.get(client);
    return principal !== undefined && this.mayRead(principal, topic);
  }

  private mayRead(principal: Principal, filter: string): boolean {
    if (isOwnTopic(principal, filter)) return true;
    if (principal.kind !== 'user' || !filter.startsWith(PRESENCE_PREFIX)) return false;
    const who = filter.slice(PRESENCE_PREFIX.length);
    return who === '+' || USERNAME_PATTERN.test(who);
  }
}

/** Whether a topic is one a connection always may hold, uncounted: its inbox, or a user's replies topic. */
function isOwnTopic(principal: Principal, topic: string): boolean {
  return topic === inboxTopicOf(principal) || (principal.kind === 'user' && topic === topics.replies(principal.user));
}

/** Open connections per key (a user, an address), forgetting a key whose count is back to zero. */
export class OpenCounts {
  private readonly counts = new Map<string, number>();

  of(key: string): number {
    return this.counts.get(key) ?? 0;
  }

  add(key: string): void {
    this.counts.set(key, this.of(key) + 1);
  }

  remove(key: string): void {
    const n = this.of(key) - 1;
    if (n > 0) this.counts.set(key, n);
    else this.counts.delete(key);
  }
}

/** A connection that closed while its login ran is over already: it is not counted at all. */
function isOver(client: Client): boolean {
  return client.closed || (client.conn as { destroyed?: boolean }).destroyed === true;
}
