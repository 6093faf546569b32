import { describe, expect, it } from 'vitest';
import {
  capSubscribeQos,
  decodeMqttString,
  expandSuback,
  repeatedFilters,
  inspectConnect,
  inspectPacket,
  isValidTopicFilter,
  publishPacket,
  pubackPacket,
  readFixedHeader,
  readPublish,
  type FixedHeader,
} from './mqtt-frame.js';

const str = (s: string | Buffer) => {
  const b = typeof s === 'string' ? Buffer.from(s) : s;
  return Buffer.concat([Buffer.from([b.length >> 8, b.length & 0xff]), b]);
};
const connectBody = (opts: { level?: number; flags?: number; clientId?: string | Buffer; rest?: Buffer[] } = {}) =>
  Buffer.concat([str('MQTT'), Buffer.from([opts.level ?? 4, opts.flags ?? 0x02, 0, 60]), str(opts.clientId ?? 'alice'), ...(opts.rest ?? [])]);

describe('readFixedHeader', () => {
  it('reads one- to four-byte remaining lengths, waits for more bytes, and refuses a fifth', () => {
    expect(readFixedHeader(Buffer.from([0x30, 0x00]))).toEqual({ type: 3, flags: 0, remainingLength: 0, headerLength: 2 });
    expect(readFixedHeader(Buffer.from([0x10, 0xff, 0xff, 0xff, 0x7f]))).toMatchObject({ remainingLength: 268_435_455, headerLength: 5 });
    expect(readFixedHeader(Buffer.from([0x10, 0x80]))).toBe('incomplete');
    expect(readFixedHeader(Buffer.from([0x10, 0x80, 0x80, 0x80, 0x80, 0x01]))).toMatchObject({ clause: 'MQTT-2.2.3' });
  });
});

describe('decodeMqttString', () => {
  it('refuses ill-formed UTF-8, encoded surrogates and U+0000', () => {
    expect(decodeMqttString(Buffer.from('héllo'))).toBe('héllo');
    expect(decodeMqttString(Buffer.from([0xc3, 0x28]))).toBeNull();
    expect(decodeMqttString(Buffer.from([0xed, 0xa0, 0x80]))).toBeNull();
    expect(decodeMqttString(Buffer.from('a\u0000b'))).toBeNull();
  });
});

describe('isValidTopicFilter', () => {
  it('allows + and # only as whole levels, # only last', () => {
    for (const ok of ['#', '+', 'a/+/b', 'a/#', '+/+/inbox', '$SYS/#']) expect(isValidTopicFilter(ok), ok).toBe(true);
    for (const bad of ['', 'a+', '##', 'a/#/b', '+a', 'a/b#']) expect(isValidTopicFilter(bad), bad).toBe(false);
  });
});

describe('inspectConnect', () => {
  it('accepts a plain 3.1.1 CONNECT', () => {
    expect(inspectConnect(0, connectBody())).toEqual({ clientId: 'alice', clean: true, keepAlive: 60, username: undefined });
  });
  it('answers an unsupported level with CONNACK 0x01 and an empty id without clean session with 0x02', () => {
    expect(inspectConnect(0, connectBody({ level: 5 }))).toMatchObject({ connack: 1, clause: 'MQTT-3.1.2-2' });
    expect(inspectConnect(0, connectBody({ flags: 0x00, clientId: '' }))).toMatchObject({ connack: 2, clause: 'MQTT-3.1.3-8' });
  });
  it('refuses Will QoS 3, reserved flags, a password without a user name, and trailing bytes', () => {
    expect(inspectConnect(0, connectBody({ flags: 0x02 | 0x04 | 0x18, rest: [str('a/b'), str('x')] }))).toMatchObject({ clause: 'MQTT-3.1.2-14' });
    expect(inspectConnect(0, connectBody({ flags: 0x03 }))).toMatchObject({ clause: 'MQTT-3.1.2-3' });
    expect(inspectConnect(0, connectBody({ flags: 0x42, rest: [str('pw')] }))).toMatchObject({ clause: 'MQTT-3.1.2-22' });
    expect(inspectConnect(0, connectBody({ rest: [Buffer.from([1])] }))).toMatchObject({ clause: 'MQTT-3.1.3-1' });
    expect(inspectConnect(1, connectBody())).toMatchObject({ clause: 'MQTT-2.2.2-2' });
  });
  it('names the missing will fields as a possible cause when a CONNECT with the Will flag ends early', () => {
    // Will flag, user name and password flags, then only the user name and password: they are read as the will's fields.
    expect(inspectConnect(0, connectBody({ flags: 0xc6, rest: [str('alice'), str('secret')] }))).toEqual({
      reason: 'truncated user name (or the will topic and message the Will flag announces are missing)',
      clause: 'MQTT-3.1.3-11',
    });
    expect(inspectConnect(0, connectBody({ flags: 0xc2, rest: [str('alice')] }))).toEqual({ reason: 'truncated password', clause: 'MQTT-3.1.2-21' });
  });
  it('refuses U+0000 or bad UTF-8 in the client id or user name', () => {
    expect(inspectConnect(0, connectBody({ clientId: 'a\u0000' }))).toMatchObject({ clause: 'MQTT-1.5.3-1' });
    expect(inspectConnect(0, connectBody({ flags: 0x82, rest: [str(Buffer.from([0xff]))] }))).toMatchObject({ clause: 'MQTT-3.1.3-11' });
  });
});

describe('inspectPacket', () => {
  const publish = (topic: string | Buffer, id?: number) =>
    Buffer.concat([str(topic), id === undefined ? Buffer.alloc(0) : Buffer.from([id >> 8, id & 0xff]), Buffer.from('{}')]);
  it('lets well-formed packets through', () => {
    expect(inspectPacket(3, 0x02, publish('a/b', 1))).toBeNull();
    expect(inspectPacket(8, 0x02, Buffer.concat([Buffer.from([0, 1]), str('a/+'), Buffer.from([1])]))).toBeNull();
    expect(inspectPacket(12, 0, Buffer.alloc(0))).toBeNull();
  });
  it('refuses what the spec calls malformed', () => {
    expect(inspectPacket(3, 0x02, publish('a/+', 1))).toMatchObject({ clause: 'MQTT-3.3.2-2' });
    expect(inspectPacket(3, 0x02, publish('a/b', 0))).toMatchObject({ clause: 'MQTT-2.3.1-1' });
    expect(inspectPacket(3, 0x06, publish('a/b', 1))).toMatchObject({ clause: 'MQTT-3.3.1-4' });
    expect(inspectPacket(3, 0x08, publish('a/b'))).toMatchObject({ clause: 'MQTT-3.3.1-2' });
    expect(inspectPacket(8, 0x02, Buffer.concat([Buffer.from([0, 0]), str('a'), Buffer.from([1])]))).toMatchObject({ clause: 'MQTT-2.3.1-1' });
    expect(inspectPacket(8, 0x02, Buffer.concat([Buffer.from([0, 1]), str('a'), Buffer.from([3])]))).toMatchObject({ clause: 'MQTT-3-8.3-4' });
    expect(inspectPacket(8, 0x02, Buffer.from([0, 1]))).toMatchObject({ clause: 'MQTT-3.8.3-3' });
    expect(inspectPacket(8, 0x00, Buffer.concat([Buffer.from([0, 1]), str('a'), Buffer.from([1])]))).toMatchObject({ clause: 'MQTT-3.8.1-1' });
    expect(inspectPacket(1, 0, Buffer.alloc(0))).toMatchObject({ clause: 'MQTT-3.1.0-2' });
    expect(inspectPacket(2, 0, Buffer.from([0, 0]))).toMatchObject({ clause: 'MQTT-2.2.1' });
  });
});

describe('repeatedFilters and expandSuback', () => {
  const subscribe = (...filters: string[]) => Buffer.concat([Buffer.from([0, 9]), ...filters.flatMap((f) => [str(f), Buffer.from([0])])]);
  const suback = (id: number, codes: number[]) => Buffer.from([0x90, 2 + codes.length, id >> 8, id & 0xff, ...codes]);

  it('says nothing of a SUBSCRIBE whose filters are all distinct', () => {
    expect(repeatedFilters(subscribe('a', 'b', 'a/b'))).toBeNull();
  });

  it('gives one return code per filter listed, a repeated one the code of its distinct filter (MQTT-3.9.3-1)', () => {
    // The broker answers each distinct filter once, in the order each first appears: p, then inbox.
    const positions = repeatedFilters(subscribe('p', 'inbox', 'p'))!;
    expect(positions).toEqual([0, 1, 0]);
    expect(expandSuback(suback(9, [0, 0x80]), 9, positions)).toEqual(suback(9, [0, 0x80, 0]));
    // Among other packets of the same write, before and after it; another packet id's SUBACK is left alone.
    const publish = publishPacket('t', Buffer.from('x'));
    expect(expandSuback(Buffer.concat([publish, suback(9, [0, 1]), publish]), 9, positions)).toEqual(Buffer.concat([publish, suback(9, [0, 1, 0]), publish]));
    expect(expandSuback(suback(8, [0, 1]), 9, positions)).toBeNull();
    // Part of a packet: not this write's to change.
    expect(expandSuback(suback(9, [0, 1]).subarray(0, 4), 9, positions)).toBeNull();
  });
});

describe('capSubscribeQos', () => {
  it('lowers every requested QoS above the cap, and leaves the filters and lower requests alone', () => {
    const body = Buffer.concat([Buffer.from([0, 7]), str('a/b'), Buffer.from([2]), str('c'), Buffer.from([0]), str('d/#'), Buffer.from([1])]);
    const before = Buffer.from(body);
    expect(inspectPacket(8, 0x2, body)).toBeNull();
    capSubscribeQos(body, 0);
    expect(body).toEqual(Buffer.concat([Buffer.from([0, 7]), str('a/b'), Buffer.from([0]), str('c'), Buffer.from([0]), str('d/#'), Buffer.from([0])]));
    capSubscribeQos(before, 1);
    expect([...before].filter((_, i) => [7, 11, 17].includes(i))).toEqual([1, 0, 1]);
  });
});

describe('readPublish', () => {
  it('reads topic, QoS, packet identifier and where the payload starts', () => {
    expect(readPublish(0x00, Buffer.concat([str('a/b'), Buffer.from('hi')]))).toEqual({ topic: 'a/b', qos: 0, packetId: 0, payloadAt: 5 });
    expect(readPublish(0x02, Buffer.concat([str('a/b'), Buffer.from([0x01, 0x02]), Buffer.from('hi')]))).toEqual({
      topic: 'a/b',
      qos: 1,
      packetId: 258,
      payloadAt: 7,
    });
    expect(readPublish(0x0c, Buffer.concat([str('a'), Buffer.from([0, 9])]))).toEqual({ topic: 'a', qos: 2, packetId: 9, payloadAt: 5 });
  });
  it('refuses what inspectPacket refuses', () => {
    expect(readPublish(0x06, str('a'))).toMatchObject({ clause: 'MQTT-3.3.1-4' });
    expect(readPublish(0x02, Buffer.concat([str('a'), Buffer.from([0, 0])]))).toMatchObject({ clause: 'MQTT-2.3.1-1' });
    expect(readPublish(0x00, str('a/+'))).toMatchObject({ clause: 'MQTT-3.3.2-2' });
  });
});

describe('publishPacket and pubackPacket', () => {
  it('builds a QoS 0 PUBLISH that reads back whole, with one- to three-byte remaining lengths', () => {
    expect(publishPacket('a/b', Buffer.from('hi'))).toEqual(Buffer.from([0x30, 7, 0, 3, 0x61, 0x2f, 0x62, 0x68, 0x69]));
    // The topic takes 28 bytes of the remaining length: 99 and 16,355 bytes of payload are the last of one and two length bytes.
    for (const size of [0, 99, 100, 16_355, 16_356, 70_000]) {
      const topic = 'parley/v1/users/zoë/inbox';
      const payload = Buffer.alloc(size, 0x7a);
      const packet = publishPacket(topic, payload);
      const header = readFixedHeader(packet) as FixedHeader;
      expect(header).toMatchObject({ type: 3, flags: 0, remainingLength: packet.length - header.headerLength });
      const body = packet.subarray(header.headerLength);
      const info = readPublish(header.flags, body);
      expect(info).toMatchObject({ topic, qos: 0 });
      expect(body.subarray((info as { payloadAt: number }).payloadAt)).toEqual(payload);
    }
  });
  it('acknowledges a packet identifier', () => {
    expect(pubackPacket(0x1234)).toEqual(Buffer.from([0x40, 2, 0x12, 0x34]));
    expect(inspectPacket(4, 0, pubackPacket(65_535).subarray(2))).toBeNull();
  });
});
