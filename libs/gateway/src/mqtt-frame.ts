/**
 * MQTT 3.1.1 framing and the checks Aedes 1.2 leaves out. Pure functions over
 * bytes, used by the connection guard before Aedes sees a packet: each check
 * cites the clause of the specification it enforces.
 */

/** The packet types a client may send (section 2.2.1); the rest are server-to-client or reserved. */
export const PacketType = {
  CONNECT: 1,
  PUBLISH: 3,
  PUBACK: 4,
  PUBREC: 5,
  PUBREL: 6,
  PUBCOMP: 7,
  SUBSCRIBE: 8,
  UNSUBSCRIBE: 10,
  PINGREQ: 12,
  DISCONNECT: 14,
} as const;

/** Largest remaining length the encoding can express (section 2.2.3). */
export const MAX_REMAINING_LENGTH = 268_435_455;

export type FixedHeader = { type: number; flags: number; remainingLength: number; headerLength: number };

/** A protocol violation: the connection must be closed [MQTT-4.8.0-1], except where `connack` says what to answer first. */
export interface Violation {
  reason: string;
  /** The clause that makes this a violation. */
  clause: string;
  /** A CONNACK return code to send before closing (3.2.2.3), when the spec asks for one. */
  connack?: number;
}

/**
 * Reads a fixed header from the start of `buf`. Returns `incomplete` when more
 * bytes are needed, or a violation when the remaining length is malformed.
 */
export function readFixedHeader(buf: Buffer): FixedHeader | 'incomplete' | Violation {
  if (buf.length < 2) return 'incomplete';
  const first = buf[0]!;
  let multiplier = 1;
  let value = 0;
  for (let i = 1; i <= 4; i++) {
    if (i >= buf.length) return 'incomplete';
    const byte = buf[i]!;
    value += (byte & 0x7f) * multiplier;
    if ((byte & 0x80) === 0) return { type: first >> 4, flags: first & 0x0f, remainingLength: value, headerLength: i + 1 };
    multiplier *= 128;
  }
  // [MQTT-2.2.3] The remaining length is at most four bytes.
  return { reason: 'malformed remaining length', clause: 'MQTT-2.2.3' };
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Decodes an MQTT UTF-8 string: well-formed UTF-8 with no encoded surrogates
 * [MQTT-1.5.3-1] and no U+0000 [MQTT-1.5.3-2]. Returns null when it is neither.
 */
export function decodeMqttString(bytes: Buffer): string | null {
  let s: string;
  try {
    // A fatal decoder refuses ill-formed sequences, surrogate code points (ED A0..BF xx) included.
    s = utf8.decode(bytes);
  } catch {
    return null;
  }
  return s.includes('\u0000') ? null : s;
}

/** Reads a length-prefixed field at `at` (section 1.5.3); null when it runs past the end. */
function field(body: Buffer, at: number): { bytes: Buffer; next: number } | null {
  if (at + 2 > body.length) return null;
  const len = body.readUInt16BE(at);
  if (at + 2 + len > body.length) return null;
  return { bytes: body.subarray(at + 2, at + 2 + len), next: at + 2 + len };
}

/** True when a topic filter places its wildcards where section 4.7.1 allows them. */
export function isValidTopicFilter(filter: string): boolean {
  if (filter.length === 0) return false; // [MQTT-4.7.3-1]
  const levels = filter.split('/');
  return levels.every((level, i) => {
    if (level.includes('#')) return level === '#' && i === levels.length - 1; // [MQTT-4.7.1-2]
    if (level.includes('+')) return level === '+'; // [MQTT-4.7.1-3]
    return true;
  });
}

export interface ConnectInfo {
  clientId: string;
  clean: boolean;
  /** Seconds; 0 means the client asked for no keep-alive. */
  keepAlive: number;
  username: string | undefined;
}

const bad = (reason: string, clause: string, connack?: number): Violation => (connack === undefined ? { reason, clause } : { reason, clause, connack });

/**
 * Checks the first byte a client sends, before anything else of it has come: null when it starts a CONNECT. A client's
 * first packet must be CONNECT [MQTT-3.1.0-1], with its reserved flags 0 [MQTT-2.2.2-2], and its first byte says both.
 */
export function inspectFirstByte(byte: number): Violation | null {
  if (byte >> 4 !== PacketType.CONNECT) return bad('first packet is not CONNECT', 'MQTT-3.1.0-1');
  return (byte & 0x0f) === 0 ? null : bad('reserved flags set in CONNECT', 'MQTT-2.2.2-2');
}

/** Checks a whole CONNECT packet (`body` is everything after the fixed header). */
export function inspectConnect(flags: number, body: Buffer): ConnectInfo | Violation {
  if (flags !== 0) return bad('reserved flags set in CONNECT', 'MQTT-2.2.2-2');
  const name = field(body, 0);
  if (!name) return bad('truncated CONNECT', 'MQTT-3.1.2-1');
  const protocol = name.bytes.toString('latin1');
  // [MQTT-3.1.2-1] A protocol name other than "MQTT" may be closed without a CONNACK.
  if (protocol !== 'MQTT' && protocol !== 'MQIsdp') return bad(`unknown protocol name "${protocol.slice(0, 16)}"`, 'MQTT-3.1.2-1');
  if (name.next + 4 > body.length) return bad('truncated CONNECT', 'MQTT-3.1.2-1');
  const level = body[name.next]!;
  // [MQTT-3.1.2-2] An unsupported protocol level is answered with CONNACK 0x01, then the connection is closed.
  if (protocol !== 'MQTT' || level !== 4) return bad(`unsupported protocol level ${level}`, 'MQTT-3.1.2-2', 0x01);
  const connectFlags = body[name.next + 1]!;
  const keepAlive = body.readUInt16BE(name.next + 2);
  if (connectFlags & 0x01) return bad('reserved connect flag set', 'MQTT-3.1.2-3');
  const clean = (connectFlags & 0x02) !== 0;
  const willFlag = (connectFlags & 0x04) !== 0;
  const willQos = (connectFlags >> 3) & 0x03;
  const willRetain = (connectFlags & 0x20) !== 0;
  const hasPassword = (connectFlags & 0x40) !== 0;
  const hasUsername = (connectFlags & 0x80) !== 0;
  if (willQos === 3) return bad('will QoS 3', 'MQTT-3.1.2-14');
  if (!willFlag && (willQos !== 0 || willRetain)) return bad('will QoS or retain without a will', 'MQTT-3.1.2-13');
  if (hasPassword && !hasUsername) return bad('password without user name', 'MQTT-3.1.2-22');

  let at = name.next + 4;
  const id = field(body, at);
  if (!id) return bad('truncated client id', 'MQTT-3.1.3-3');
  const clientId = decodeMqttString(id.bytes);
  if (clientId === null) return bad('client id is not valid UTF-8 without U+0000', 'MQTT-1.5.3-1');
  // [MQTT-3.1.3-8] An empty client id with clean session off is answered with CONNACK 0x02, then closed.
  if (clientId === '' && !clean) return bad('empty client id with clean session off', 'MQTT-3.1.3-8', 0x02);
  at = id.next;
  if (willFlag) {
    const topic = field(body, at);
    if (!topic) return bad('truncated will topic', 'MQTT-3.1.3-10');
    const willTopic = decodeMqttString(topic.bytes);
    if (willTopic === null) return bad('will topic is not valid UTF-8 without U+0000', 'MQTT-1.5.3-1');
    if (willTopic === '' || /[+#]/.test(willTopic)) return bad('will topic is empty or has a wildcard', 'MQTT-3.3.2-2');
    const message = field(body, topic.next);
    if (!message) return bad('truncated will message', 'MQTT-3.1.3-10');
    at = message.next;
  }
  // A client that sets the Will flag without writing the will's fields has its user name read as the will topic and its
  // password as the will message: the payload then ends early, at a field that is there.
  const orWill = willFlag ? ' (or the will topic and message the Will flag announces are missing)' : '';
  let username: string | undefined;
  if (hasUsername) {
    const user = field(body, at);
    if (!user) return bad(`truncated user name${orWill}`, 'MQTT-3.1.3-11');
    const decoded = decodeMqttString(user.bytes);
    if (decoded === null) return bad('user name is not valid UTF-8 without U+0000', 'MQTT-3.1.3-11');
    username = decoded;
    at = user.next;
  }
  if (hasPassword) {
    const password = field(body, at);
    if (!password) return bad(`truncated password${orWill}`, 'MQTT-3.1.2-21');
    at = password.next;
  }
  if (at !== body.length) return bad('bytes after the CONNECT payload', 'MQTT-3.1.3-1');
  return { clientId, clean, keepAlive, username };
}

/** Checks a packet after CONNECT; null when it may go on to the broker. */
export function inspectPacket(type: number, flags: number, body: Buffer): Violation | null {
  switch (type) {
    case PacketType.CONNECT:
      return bad('second CONNECT', 'MQTT-3.1.0-2');
    case PacketType.PUBLISH:
      return inspectPublish(flags, body);
    case PacketType.PUBACK:
    case PacketType.PUBREC:
    case PacketType.PUBCOMP:
    case PacketType.PUBREL: {
      const expectedFlags = type === PacketType.PUBREL ? 0x2 : 0x0;
      if (flags !== expectedFlags) return bad('wrong fixed header flags', 'MQTT-2.2.2-2');
      if (body.length !== 2) return bad('acknowledgement of the wrong length', 'MQTT-2.3.1-1');
      if (body.readUInt16BE(0) === 0) return bad('packet identifier 0', 'MQTT-2.3.1-1');
      return null;
    }
    case PacketType.SUBSCRIBE:
    case PacketType.UNSUBSCRIBE:
      return inspectSubscribe(type, flags, body);
    case PacketType.PINGREQ:
    case PacketType.DISCONNECT:
      if (flags !== 0) return bad('wrong fixed header flags', 'MQTT-2.2.2-2');
      return body.length === 0 ? null : bad('PINGREQ or DISCONNECT with a body', 'MQTT-2.2.2-2');
    default:
      // Reserved types (0, 15) and packets only a server sends.
      return bad(`packet type ${type} is not one a client may send`, 'MQTT-2.2.1');
  }
}

/** What a PUBLISH from a client carries (section 3.3), read by `readPublish`. */
export interface PublishInfo {
  topic: string;
  qos: 0 | 1 | 2;
  /** The packet identifier; 0 at QoS 0, which has none. */
  packetId: number;
  /** Where the application message starts in the body. */
  payloadAt: number;
}

function inspectPublish(flags: number, body: Buffer): Violation | null {
  const info = readPublish(flags, body);
  return 'reason' in info ? info : null;
}

/** Checks a PUBLISH body and reads what it carries; the violation when it breaks a MUST of the spec. */
export function readPublish(flags: number, body: Buffer): PublishInfo | Violation {
  const qos = ((flags >> 1) & 0x03) as 0 | 1 | 2 | 3;
  if (qos === 3) return bad('PUBLISH with QoS 3', 'MQTT-3.3.1-4');
  if (qos === 0 && flags & 0x08) return bad('DUP set on a QoS 0 PUBLISH', 'MQTT-3.3.1-2');
  const topicField = field(body, 0);
  if (!topicField) return bad('truncated PUBLISH topic', 'MQTT-3.3.2-1');
  const topic = decodeMqttString(topicField.bytes);
  if (topic === null) return bad('PUBLISH topic is not valid UTF-8 without U+0000', 'MQTT-1.5.3-1');
  if (topic === '') return bad('empty PUBLISH topic', 'MQTT-4.7.3-1');
  if (/[+#]/.test(topic)) return bad('wildcard in a PUBLISH topic', 'MQTT-3.3.2-2');
  if (qos === 0) return { topic, qos, packetId: 0, payloadAt: topicField.next };
  if (topicField.next + 2 > body.length) return bad('truncated packet identifier', 'MQTT-2.3.1-1');
  const packetId = body.readUInt16BE(topicField.next);
  if (packetId === 0) return bad('packet identifier 0', 'MQTT-2.3.1-1');
  return { topic, qos, packetId, payloadAt: topicField.next + 2 };
}

/**
 * A whole QoS 0 PUBLISH packet of `payload` on `topic`, not retained (section 3.3): at QoS 0 it carries no packet
 * identifier, so the same bytes serve every connection subscribed to the topic.
 */
export function publishPacket(topic: string, payload: Buffer): Buffer {
  const topicBytes = Buffer.byteLength(topic);
  const remaining = 2 + topicBytes + payload.length;
  if (remaining > MAX_REMAINING_LENGTH) throw new RangeError(`a PUBLISH of ${remaining} bytes is over the MQTT limit`);
  // QoS 0, no DUP, no RETAIN.
  const packet = packetWithHeader(PacketType.PUBLISH << 4, remaining);
  let at = packet.length - remaining;
  packet.writeUInt16BE(topicBytes, at);
  at += 2 + packet.write(topic, at + 2, 'utf8');
  payload.copy(packet, at);
  return packet;
}

/** A packet of `remaining` bytes after its fixed header, the header written; its body starts at `length - remaining`. */
function packetWithHeader(firstByte: number, remaining: number): Buffer {
  let lengthBytes = 1;
  for (let n = remaining; n >= 128; n = Math.floor(n / 128)) lengthBytes++;
  const packet = Buffer.allocUnsafe(1 + lengthBytes + remaining);
  packet[0] = firstByte;
  let at = 1;
  // [MQTT-2.2.3] Seven bits a byte, least significant first; the top bit says another byte follows.
  for (let n = remaining; ;) {
    const digit = n % 128;
    n = Math.floor(n / 128);
    packet[at++] = n > 0 ? digit | 0x80 : digit;
    if (n === 0) break;
  }
  return packet;
}

/** A PUBACK for a QoS 1 PUBLISH's packet identifier (section 3.4). */
export function pubackPacket(packetId: number): Buffer {
  return Buffer.from([PacketType.PUBACK << 4, 2, packetId >> 8, packetId & 0xff]);
}

/**
 * For a SUBSCRIBE that names one filter more than once: for each filter as the client listed it, the position of its
 * return code among those of the distinct filters, in the order each first appears. Null when every filter is
 * distinct (nearly always). Aedes subscribes each distinct filter once and answers one return code for each, in that
 * order; [MQTT-3.9.3-1] asks for one per filter listed, which `expandSuback` restores.
 */
export function repeatedFilters(body: Buffer): number[] | null {
  const first = new Map<string, number>();
  const positions: number[] = [];
  let at = 2;
  while (at < body.length) {
    const f = field(body, at)!;
    const filter = f.bytes.toString('latin1');
    let position = first.get(filter);
    if (position === undefined) first.set(filter, (position = first.size));
    positions.push(position);
    at = f.next + 1;
  }
  return first.size === positions.length ? null : positions;
}

/**
 * Rewrites the SUBACK of packet `packetId` among the whole packets of `bytes` (a write of the broker's) so it has one
 * return code per filter listed (`positions`, see `repeatedFilters`). Null when `bytes` holds no such SUBACK, or is
 * not whole packets.
 */
export function expandSuback(bytes: Buffer, packetId: number, positions: number[]): Buffer | null {
  for (let at = 0; at < bytes.length;) {
    const header = readFixedHeader(bytes.subarray(at));
    if (header === 'incomplete' || 'reason' in header) return null;
    const start = at + header.headerLength;
    const end = start + header.remainingLength;
    if (bytes.length < end) return null;
    if (header.type === SUBACK && header.remainingLength >= 2 && bytes.readUInt16BE(start) === packetId) {
      const codes = bytes.subarray(start + 2, end);
      if (positions.some((p) => p >= codes.length)) return null;
      const suback = packetWithHeader(SUBACK << 4, 2 + positions.length);
      const bodyAt = suback.length - 2 - positions.length;
      suback.writeUInt16BE(packetId, bodyAt);
      positions.forEach((p, i) => (suback[bodyAt + 2 + i] = codes[p]!));
      return Buffer.concat([bytes.subarray(0, at), suback, bytes.subarray(end)]);
    }
    at = end;
  }
  return null;
}

/** The SUBACK packet type (server to client). */
const SUBACK = 9;

/**
 * Lowers every requested QoS of a SUBSCRIBE body (one `inspectPacket` passed) to at most `max`, in place. The broker
 * then grants, and its SUBACK reports, what the server delivers at: Aedes reports the QoS a client asked for even when
 * its subscription authorizer granted a lower one [MQTT-3.9.3-1].
 */
export function capSubscribeQos(body: Buffer, max: number): void {
  let at = 2;
  while (at < body.length) {
    at = field(body, at)!.next;
    if (body[at]! > max) body[at] = max;
    at += 1;
  }
}

function inspectSubscribe(type: number, flags: number, body: Buffer): Violation | null {
  const subscribe = type === PacketType.SUBSCRIBE;
  if (flags !== 0x2) return bad('wrong fixed header flags', subscribe ? 'MQTT-3.8.1-1' : 'MQTT-3.10.1-1');
  if (body.length < 2) return bad('truncated packet identifier', 'MQTT-2.3.1-1');
  if (body.readUInt16BE(0) === 0) return bad('packet identifier 0', 'MQTT-2.3.1-1');
  let at = 2;
  let count = 0;
  while (at < body.length) {
    const f = field(body, at);
    if (!f) return bad('truncated topic filter', subscribe ? 'MQTT-3.8.3-1' : 'MQTT-3.10.3-1');
    const filter = decodeMqttString(f.bytes);
    if (filter === null) return bad('topic filter is not valid UTF-8 without U+0000', 'MQTT-1.5.3-1');
    if (!isValidTopicFilter(filter)) return bad('invalid topic filter', 'MQTT-4.7.1-2');
    at = f.next;
    if (subscribe) {
      if (at >= body.length) return bad('missing requested QoS', 'MQTT-3.8.3-1');
      // [MQTT-3-8.3-4] Reserved bits must be 0 and the QoS at most 2.
      if ((body[at]! & 0xfc) !== 0 || (body[at]! & 0x03) === 3) return bad('bad requested QoS', 'MQTT-3-8.3-4');
      at += 1;
    }
    count++;
  }
  // [MQTT-3.8.3-3] [MQTT-3.10.3-2] At least one topic filter.
  if (count === 0) return bad('no topic filter', subscribe ? 'MQTT-3.8.3-3' : 'MQTT-3.10.3-2');
  return null;
}
