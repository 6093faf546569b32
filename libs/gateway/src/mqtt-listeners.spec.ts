import { connect } from 'node:net';
import type { Duplex } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { openListener, type ListenerKind, type OpenListener } from './mqtt-listeners.js';

describe('openListener on :: (dual-stack)', () => {
  const open: OpenListener[] = [];
  afterEach(async () => {
    await Promise.all(open.splice(0).map((l) => l.close()));
  });

  /** The address a listener of this kind on `::` hands on for a client that connects from `from`. */
  async function addressSeen(kind: ListenerKind, from: '127.0.0.1' | '::1'): Promise<string> {
    let seen!: (address: string) => void;
    const address = new Promise<string>((resolve) => (seen = resolve));
    const listener = await openListener(
      kind,
      '::',
      0,
      (stream: Duplex, remoteAddress: string) => {
        seen(remoteAddress);
        stream.destroy();
      },
      { maxPacketBytes: 1024, connectTimeoutMs: 5000 },
    );
    open.push(listener);
    const port = listener.address.port;
    if (kind === 'ws') {
      const ws = new WebSocket(`ws://${from === '::1' ? '[::1]' : from}:${port}`, 'mqtt');
      ws.on('error', () => undefined);
      const result = await address;
      ws.terminate();
      return result;
    }
    const socket = connect(port, from);
    socket.on('error', () => undefined);
    const result = await address;
    socket.destroy();
    return result;
  }

  it('knows an IPv4 client by its IPv4 address, as a PROXY header names one, not by its IPv4-mapped form (::ffff:a.b.c.d)', async () => {
    for (const kind of ['mqtt', 'ws'] as const) {
      expect(await addressSeen(kind, '127.0.0.1'), kind).toBe('127.0.0.1');
      expect(await addressSeen(kind, '::1'), kind).toBe('::1');
    }
  });
});
