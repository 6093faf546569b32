import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { relayRecord } from './broker-backplane.js';

describe('relayRecord', () => {
  it('is byte for byte what msgpackr writes for {topic, payload}, at every length boundary of both', () => {
    const packr = new Packr({ useRecords: false });
    const topics = ['parley/v1/x', 'parley/v1/users/a-thirty-two-character-username/inbox', `parley/v1/anon/${'n'.repeat(250)}/inbox`];
    for (const topic of [...topics, 't'.repeat(31), 't'.repeat(32), 't'.repeat(255), 't'.repeat(256), 'zoë/☃'])
      for (const size of [0, 1, 255, 256, 65_535, 65_536, 70_000]) {
        const payload = Buffer.alloc(size, 0x61);
        const record = relayRecord(topic, payload);
        expect(record.equals(packr.pack({ topic, payload })), `${topic.length} ${size}`).toBe(true);
        expect(packr.unpack(record)).toEqual({ topic, payload });
      }
  });
});
