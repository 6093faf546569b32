/**
 * The MQTT topic map. Every topic Parley uses is built and parsed here, so the
 * server, the CLI, the tests and the docs agree on one spelling.
 */
export const TOPIC_ROOT = 'parley/v1';

/** Lowercase, starts with a letter, 2–32 characters of `a-z 0-9 _ -`. No MQTT wildcard, `/`, `.` or control character can ever be part of a user name. */
export const USERNAME_PATTERN = /^[a-z][a-z0-9_-]{1,31}$/;
/** `USERNAME_PATTERN` as people read it: what the server and the CLI say of a name that does not fit it. */
export const USERNAME_RULE = 'a user name is 2–32 characters: a lowercase letter, then lowercase letters, digits, _ or -';
/** The part after `user/` in a client id: one device name per connection of the same user. */
export const DEVICE_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/;
/**
 * A device name that starts with `.` marks a quiet connection (a one-shot command, a script, a bot): it works like any
 * other, but presence does not count it, so it neither makes its user online nor moves the user's last-seen time.
 */
export function isQuietDevice(device: string | null): boolean {
  return device !== null && device.startsWith('.');
}
/**
 * The QoS the server grants every subscription and delivers at: 0. Delivery is acknowledged by the client's `receipt`
 * requests, which move its delivered cursor, and the catch-up at its next subscription sends every log entry after
 * that cursor again, with everyone's cursors and the open file offers. With a clean session, a QoS 1 packet still
 * unacknowledged when the connection drops is dropped with the session, so a PUBACK confirmed nothing a receipt does
 * not, and it cost the server a packet to read and a packet id to keep for every event to every device. A persistent
 * session (clean session off) keeps its subscriptions but no queue: the broker keeping QoS 1 packets for sessions
 * that are away had no bound, was kept by one gateway only, and a persistent session was disconnected by a QoS 1
 * packet that came from another gateway.
 */
export const DELIVERY_QOS = 0;

/** Client ids of anonymous (not logged-in) connections, which may only register: `anon.<nonce>`. */
export const ANON_CLIENT_PREFIX = 'anon.';
export const ANON_NONCE_PATTERN = /^[A-Za-z0-9_-]{8,64}$/;

export const topics = {
  /** Everything the server delivers to a user: messages, replies, events. Only that user may subscribe. */
  inbox: (user: string): string => `${TOPIC_ROOT}/users/${user}/inbox`,
  /**
   * Replies to the requests a connection makes, to that connection only, and nothing else: no catch-up, no messages
   * (for a tool that asks and goes, which the inbox's catch-up would send the whole unread backlog each time). Only
   * that user may subscribe.
   */
  replies: (user: string): string => `${TOPIC_ROOT}/users/${user}/replies`,
  /** Requests from a user to the server. Only that user may publish. */
  requests: (user: string): string => `${TOPIC_ROOT}/users/${user}/requests`,
  /** Retained presence of a user (`{state, lastSeen}`), readable by any logged-in user. */
  presence: (user: string): string => `${TOPIC_ROOT}/presence/${user}`,
  /** Replies to an anonymous connection (registration only). */
  anonInbox: (nonce: string): string => `${TOPIC_ROOT}/anon/${nonce}/inbox`,
  /** Requests of an anonymous connection (registration only). */
  anonRequests: (nonce: string): string => `${TOPIC_ROOT}/anon/${nonce}/requests`,
} as const;

/** Who is on the other end of a connection, derived from its CONNECT packet. */
export type Principal = { kind: 'user'; user: string; device: string | null } | { kind: 'anonymous'; nonce: string };

/**
 * Decides which principal a client id may stand for. A logged-in user may use
 * exactly its user name or `user/<device>`; anything else is someone else's id.
 * Returns null when the id is not acceptable for that user.
 */
export function principalFor(clientId: string, username: string | undefined): Principal | null {
  if (username === undefined || username === '') {
    if (!clientId.startsWith(ANON_CLIENT_PREFIX)) return null;
    const nonce = clientId.slice(ANON_CLIENT_PREFIX.length);
    return ANON_NONCE_PATTERN.test(nonce) ? { kind: 'anonymous', nonce } : null;
  }
  if (!USERNAME_PATTERN.test(username)) return null;
  if (clientId === username) return { kind: 'user', user: username, device: null };
  if (!clientId.startsWith(`${username}/`)) return null;
  const device = clientId.slice(username.length + 1);
  return DEVICE_PATTERN.test(device) ? { kind: 'user', user: username, device } : null;
}

/** The topic a principal publishes its requests to. */
export function requestTopicOf(p: Principal): string {
  return p.kind === 'user' ? topics.requests(p.user) : topics.anonRequests(p.nonce);
}

/** Whether `topic` is the topic a principal publishes its requests to, without building that topic. */
export function isRequestTopicOf(p: Principal, topic: string): boolean {
  const [head, name] = p.kind === 'user' ? [USERS_HEAD, p.user] : [ANON_HEAD, p.nonce];
  return (
    topic.length === head.length + name.length + REQUESTS_TAIL.length &&
    topic.startsWith(head) &&
    topic.startsWith(name, head.length) &&
    topic.endsWith(REQUESTS_TAIL)
  );
}
const USERS_HEAD = `${TOPIC_ROOT}/users/`;
const ANON_HEAD = `${TOPIC_ROOT}/anon/`;
const REQUESTS_TAIL = '/requests';

/** The topic a principal receives its inbox on. */
export function inboxTopicOf(p: Principal): string {
  return p.kind === 'user' ? topics.inbox(p.user) : topics.anonInbox(p.nonce);
}

/** Conversation ids. A direct conversation is named by its two members in sorted order, so both sides use the same id. */
export function directConversationId(a: string, b: string): string {
  return a <= b ? `dm:${a}:${b}` : `dm:${b}:${a}`;
}

/** The other member of a direct conversation, seen from `me`; null if `me` is not a member or the id is not a direct conversation. */
export function directPeer(conv: string, me: string): string | null {
  const m = /^dm:([^:]+):([^:]+)$/.exec(conv);
  if (!m) return null;
  const [, a, b] = m;
  if (a === me) return b ?? null;
  if (b === me) return a ?? null;
  return null;
}
