import { connect, type Socket } from 'node:net';

/**
 * MQTT 3.1.1 packets as bytes, built by hand so tests can send exactly what a
 * hostile client would — including what no well-behaved library can produce.
 */

export function remainingLength(n: number): Buffer {
  const out: number[] = [];
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    out.push(byte);
  } while (n > 0);
  return Buffer.from(out);
}

/** A length-prefixed field (section 1.5.3) from a string (UTF-8) or raw bytes. */
export function str(s: string | Buffer): Buffer {
  const bytes = typeof s === 'string' ? Buffer.from(s, 'utf8') : s;
  const len = Buffer.alloc(2);
  len.writeUInt16BE(bytes.length);
  return Buffer.concat([len, bytes]);
}

export function packet(firstByte: number, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from([firstByte]), remainingLength(body.length), body]);
}

export interface ConnectFields {
  clientId: string | Buffer;
  username?: string | Buffer;
  password?: string | Buffer;
  clean?: boolean;
  keepAlive?: number;
  level?: number;
  protocol?: string;
  will?: { topic: string | Buffer; payload: string; qos: number; retain?: boolean };
}

export function connectPacket(f: ConnectFields): Buffer {
  let flags = f.clean === false ? 0 : 0x02;
  if (f.will) flags |= 0x04 | ((f.will.qos & 3) << 3) | (f.will.retain ? 0x20 : 0);
  if (f.username !== undefined) flags |= 0x80;
  if (f.password !== undefined) flags |= 0x40;
  const keepAlive = Buffer.alloc(2);
  keepAlive.writeUInt16BE(f.keepAlive ?? 60);
  const parts = [str(f.protocol ?? 'MQTT'), Buffer.from([f.level ?? 4, flags]), keepAlive, str(f.clientId)];
  if (f.will) parts.push(str(f.will.topic), str(f.will.payload));
  if (f.username !== undefined) parts.push(str(f.username));
  if (f.password !== undefined) parts.push(str(f.password));
  return packet(0x10, Buffer.concat(parts));
}

export function publishPacket(topic: string | Buffer, payload: string | Buffer, opts: { qos?: number; id?: number; retain?: boolean } = {}): Buffer {
  const qos = opts.qos ?? 1;
  const parts = [str(topic)];
  if (qos > 0) {
    const id = Buffer.alloc(2);
    id.writeUInt16BE(opts.id ?? 1);
    parts.push(id);
  }
  parts.push(typeof payload === 'string' ? Buffer.from(payload) : payload);
  return packet(0x30 | (qos << 1) | (opts.retain ? 1 : 0), Buffer.concat(parts));
}

export function subscribePacket(filters: (string | Buffer)[], opts: { id?: number; qos?: number } = {}): Buffer {
  const id = Buffer.alloc(2);
  id.writeUInt16BE(opts.id ?? 1);
  return packet(0x82, Buffer.concat([id, ...filters.flatMap((f) => [str(f), Buffer.from([opts.qos ?? 1])])]));
}

export function unsubscribePacket(filters: string[], id = 1): Buffer {
  const pid = Buffer.alloc(2);
  pid.writeUInt16BE(id);
  return packet(0xa2, Buffer.concat([pid, ...filters.map((f) => str(f))]));
}

export const PINGREQ = Buffer.from([0xc0, 0x00]);
export const DISCONNECT = Buffer.from([0xe0, 0x00]);

export interface ServerPacket {
  type: number;
  body: Buffer;
}

/** The whole packets at the start of `buf` (by their fixed headers, section 2.2), and the bytes after them. */
export function splitPackets(buf: Buffer): { packets: ServerPacket[]; rest: Buffer } {
  const packets: ServerPacket[] = [];
  for (;;) {
    if (buf.length < 2) return { packets, rest: buf };
    let len = 0;
    let mult = 1;
    let i = 1;
    for (; i <= 4; i++) {
      if (i >= buf.length) return { packets, rest: buf };
      len += (buf[i]! & 0x7f) * mult;
      mult *= 128;
      if ((buf[i]! & 0x80) === 0) break;
    }
    const size = i + 1 + len;
    if (buf.length < size) return { packets, rest: buf };
    packets.push({ type: buf[0]! >> 4, body: buf.subarray(i + 1, size) });
    buf = buf.subarray(size);
  }
}

/**
 * A TCP connection that sends raw bytes and records what the server sends
 * back, packet by packet, and whether (and when) it closed the connection.
 */
export class RawClient {
  readonly packets: ServerPacket[] = [];
  closed = false;
  private buf: Buffer = Buffer.alloc(0);
  private waiters: (() => void)[] = [];

  private constructor(readonly socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.split();
      this.wake();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
  }

  static open(port: number, host = '127.0.0.1'): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = connect({ port, host }, () => {
        socket.off('error', reject);
        resolve(new RawClient(socket));
      });
      socket.once('error', reject);
    });
  }

  send(bytes: Buffer): void {
    if (!this.socket.destroyed) this.socket.write(bytes);
  }

  /** Resolves when `cond` holds; rejects after the timeout. */
  until(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!cond()) return;
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== check);
        resolve();
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== check);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; got ${JSON.stringify(this.packets.map((p) => p.type))}, closed=${this.closed}`));
      }, timeoutMs);
      this.waiters.push(check);
      check();
    });
  }

  /** Waits for the server to close the connection. */
  waitClosed(timeoutMs = 10_000): Promise<void> {
    return this.until(() => this.closed, timeoutMs, 'the server to close the connection');
  }

  /** Waits for a packet of a type (2 CONNACK, 3 PUBLISH, 4 PUBACK, 9 SUBACK, 13 PINGRESP) and returns it. */
  async waitFor(type: number, timeoutMs = 10_000): Promise<ServerPacket> {
    await this.until(() => this.packets.some((p) => p.type === type) || this.closed, timeoutMs, `packet type ${type}`);
    const found = this.packets.find((p) => p.type === type);
    if (!found) throw new Error(`connection closed before a packet of type ${type} arrived`);
    return found;
  }

  /** The CONNACK return code, or 'closed' when the server closed without one. */
  async connackCode(timeoutMs = 10_000): Promise<number | 'closed'> {
    await this.until(() => this.packets.some((p) => p.type === 2) || this.closed, timeoutMs, 'CONNACK or close');
    const connack = this.packets.find((p) => p.type === 2);
    return connack ? connack.body[1]! : 'closed';
  }

  close(): void {
    this.socket.destroy();
  }

  private split(): void {
    const { packets, rest } = splitPackets(this.buf);
    this.packets.push(...packets);
    this.buf = rest;
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }
}

/** Logs in over a raw connection and waits for CONNACK 0. */
export async function rawLogin(port: number, user: string, password: string, clientId = `${user}/raw`, host = '127.0.0.1'): Promise<RawClient> {
  const c = await RawClient.open(port, host);
  c.send(connectPacket({ clientId, username: user, password }));
  const code = await c.connackCode();
  if (code !== 0) throw new Error(`raw login of ${user} refused: ${code}`);
  return c;
}
