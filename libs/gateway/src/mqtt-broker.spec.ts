import type { ConnectPacket } from 'aedes';
import { describe, expect, it } from 'vitest';
import { keepWillApart } from './mqtt-broker.js';

describe('keepWillApart', () => {
  // The broker keeps the CONNECT packet for the connection's life: a will payload that is a view of the client's bytes
  // would keep all of them, its password's among them.
  it("gives a will a payload of its own, with the same bytes, instead of a view of the client's CONNECT bytes", () => {
    const read = Buffer.from('\u0010\u0030....MQTT....alice/phone..parley/v1/users/alice/requests..gone for now..alice..secret');
    const payload = read.subarray(read.indexOf('gone'), read.indexOf('gone') + 12);
    const packet = {
      cmd: 'connect',
      clientId: 'alice/phone',
      will: { topic: 'parley/v1/users/alice/requests', payload, qos: 0, retain: false },
    } as ConnectPacket;
    keepWillApart(packet);
    const kept = packet.will!.payload as Buffer;
    expect(kept.toString()).toBe('gone for now');
    expect(kept.buffer.byteLength).toBe(kept.length);
    expect(kept.buffer).not.toBe(read.buffer);
  });

  it('leaves a packet without a will, or with an empty one, as it is', () => {
    const bare = { cmd: 'connect', clientId: 'alice/phone' } as ConnectPacket;
    keepWillApart(bare);
    expect(bare.will).toBeUndefined();
    const empty = Buffer.alloc(0);
    const packet = { cmd: 'connect', clientId: 'alice/phone', will: { topic: 't', payload: empty, qos: 0, retain: false } } as ConnectPacket;
    keepWillApart(packet);
    expect(packet.will!.payload).toBe(empty);
  });
});
