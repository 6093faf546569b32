import { Duplex } from 'node:stream';
import { isRequestTopicOf, type Principal } from '#libs/protocol';
import {
  capSubscribeQos,
  expandSuback,
  inspectConnect,
  inspectFirstByte,
  inspectPacket,
  PacketType,
  pubackPacket,
  readFixedHeader,
  readPublish,
  repeatedFilters,
  type PublishInfo,
  type Violation,
} from './mqtt-frame.js';

export interface GuardLimits {
  /** A CONNECT must arrive complete within this time, and login finish. */
  connectTimeoutMs: number;
  /** Largest CONNECT accepted: the byte cap before login. */
  maxConnectBytes: number;
  /** Largest packet accepted after login. */
  maxPacketBytes: number;
  /**
   * The longest keep-alive (seconds) a client may have: one that asks for none, or for a longer one, is dropped after
   * 1.5 times this of silence. The broker watches a keep-alive within the limit itself (1.5 times it, [MQTT-3.1.2-24]).
   */
  maxKeepAliveS: number;
  /** Bytes waiting to be written to a client beyond this drop it: it is not reading. */
  maxOutboundBytes: number;
  /** A client whose socket does not take written bytes for this long is dropped. */
  writeStallMs: number;
  /** The highest QoS a SUBSCRIBE may ask for: higher requests are lowered to it before the broker reads them. */
  maxSubscribeQos?: 0 | 1 | 2;
}

/**
 * Where a guard hands the requests it takes off the broker's path (see `GuardedConnection.openRequests`): one function
 * for every guard, which it passes itself to. False when the request is not taken (the connection is closing): it then
 * goes to the broker as any packet.
 */
export type RequestLane = (guard: GuardedConnection, payload: Buffer) => boolean;

/** Why a guard ended a connection, for logs and metrics. */
export interface GuardDrop {
  reason: string;
  clause?: string;
  /** Bytes read from the client before the drop. */
  bytesRead: number;
}

/**
 * A connection as the broker sees it: the client's stream, with every packet
 * checked before Aedes parses it. Aedes 1.2 buffers a declared remaining
 * length of any size before it authenticates anyone, accepts packets MQTT
 * 3.1.1 calls malformed, and lets one client that stops reading hold up
 * deliveries to everyone. Here:
 *
 * - before login only one CONNECT is read, of at most `maxConnectBytes`, within
 *   `connectTimeoutMs`; nothing more is read until the broker has answered it;
 * - after login a packet declaring more than `maxPacketBytes` ends the
 *   connection as soon as its header arrives, so memory never follows a claim;
 * - packets that break a MUST of the spec end the connection (or get the
 *   CONNACK code the spec asks for) before the broker sees them;
 * - writes never wait on the client: the broker's delivery to others goes on
 *   while a frozen client's bytes pile up, up to `maxOutboundBytes` or
 *   `writeStallMs`, after which the client is dropped;
 * - silence longer than the keep-alive rules allow ends the connection.
 *
 * It is also the fast lane of a logged-in connection's traffic (`openRequests`, `writePacket`): a request published
 * to the connection's own requests topic is answered with its PUBACK and handed to the gateway here, and inbox events
 * are written here as whole packets, so neither is parsed, routed or encoded again by the broker.
 *
 * A gateway holds one guard per connected device, most of them idle: a guard
 * keeps no timer, closure or buffer of its own that it does not need now
 * (the stream handlers and the write flush are shared by all guards).
 */
export class GuardedConnection extends Duplex {
  private pending: Buffer = EMPTY;
  /**
   * While a packet whose header has been read is incomplete: its size, and the buffer its bytes gather in (`pending`
   * is its start), which doubles when full. Joined to `pending` anew as each piece came, a packet sent a few bytes at
   * a time cost copying the square of its size: 130 KB in pieces of 10 bytes took seconds of CPU, from a client
   * sending under 10 KB/s.
   */
  private awaited = 0;
  private gathering: Buffer | undefined;
  private phase: 'connect' | 'login' | 'open' = 'connect';
  private bytesRead = 0;
  /** Runs until the broker has answered the CONNECT, then is let go. */
  private connectTimer: NodeJS.Timeout | undefined;
  /** Only for a client whose keep-alive the broker does not watch (none asked for, or over the limit). */
  private idleTimer: NodeJS.Timeout | undefined;
  /** Only while bytes wait in the socket after a flush. */
  private stallTimer: NodeJS.Timeout | undefined;
  /** Set once a drop reason is known, so the first reason wins. */
  private dropped: GuardDrop | undefined;
  /** When a client dropped for its silence was last heard from (its last seen is then, not when the drop came). */
  heardLastAt: number | undefined;
  /** Who the broker logged in on this connection: its requests go to the request lane (see `openRequests`). */
  private principal: Principal | undefined;
  /** What the gateway knows this connection by (the broker's client). */
  owner: unknown;
  /**
   * True while the broker has read and dispatched every packet passed to it (it asked for more and got none): only then
   * can a request skip it and still reach the dispatcher after every request the client sent before it. (The broker
   * hands a request over while it parses it, and sets up a clean session's subscription then too.)
   */
  private brokerIdle = false;
  /** While packets read wait in `pending` for a later turn (see `PACKETS_PER_TURN`): the socket is paused meanwhile. */
  private deferred = false;

  constructor(
    private readonly stream: Duplex,
    /** The client's address (for login throttling and logs). */
    readonly remoteAddress: string,
    private readonly limits: GuardLimits,
    private readonly onDrop: (drop: GuardDrop, guard: GuardedConnection) => void = ignoreDrop,
    private readonly requestLane?: RequestLane,
    /** Told once the connection is over, however it ended (shared by all guards, like `onDrop`). */
    private readonly onClosed?: (guard: GuardedConnection) => void,
  ) {
    // The guard never makes the broker wait (see `forward`), so it never asks for a 'drain': the broker waits for one
    // only after a write returns false, and a wait that is never answered holds a delivery slot of the broker forever.
    super({ allowHalfOpen: false, writableHighWaterMark: limits.maxOutboundBytes });
    (stream as GuardedStream)[GUARD] = this;
    stream.on('data', onStreamData);
    stream.on('end', onStreamEnd);
    stream.on('error', onStreamError);
    stream.on('close', onStreamClose);
    this.connectTimer = setTimeout(onConnectTimeout, limits.connectTimeoutMs, this);
  }

  /** How long a client whose keep-alive the guard watches may stay silent. */
  get silenceLimitMs(): number {
    return this.limits.maxKeepAliveS * 1500;
  }

  /**
   * Whether the broker has accepted the CONNECT. Until then no packet of the client's but the CONNECT has reached the
   * broker: a subscription authorized before it is the broker restoring a persistent session's own.
   */
  get admitted(): boolean {
    return this.phase === 'open';
  }

  /** Bytes read from the client so far (for the log line of a connection the broker ends itself). */
  get bytesReceived(): number {
    return this.bytesRead;
  }

  /** The broker answered the CONNECT: from now on the client may send anything a logged-in client may. */
  admit(accepted: boolean): void {
    clearTimeout(this.connectTimer);
    this.connectTimer = undefined;
    if (!accepted || this.phase !== 'login') return;
    this.phase = 'open';
    this.scan();
    // Unless the scan left packets for a later turn (see PACKETS_PER_TURN): that turn reads the socket again.
    if (!this.deferred) this.stream.resume();
  }

  /**
   * From now on, a PUBLISH to the principal's requests topic at QoS 0 or 1 is answered with its PUBACK here
   * and handed to the request lane instead of the broker, whenever the broker has handled everything before it. The
   * broker would do nothing more with it (a request is never routed, nor retained), and its parsing and routing of
   * each request was a tenth of the gateway's work per message. A QoS 2 request still goes to the broker, whose
   * PUBREC/PUBREL exchange it keeps.
   */
  openRequests(principal: Principal): void {
    this.principal = principal;
  }

  /** Resolves once bytes written so far have mostly reached the client (or it is gone): paces bulk sends such as a backlog. */
  settled(): Promise<void> {
    if (this.stream.writableLength <= this.limits.maxOutboundBytes / 4 || this.destroyed) return Promise.resolve();
    // A socket says 'drain' only once it has asked for one (its buffer reached its high-water mark, 16 KiB): below that,
    // as under a small PARLEY_MAX_OUTBOUND_BYTES, a wait for it lasted until the connection's next large write or its
    // end, and a catch-up stopped halfway without a word. The backlog's next writes bring on a 'drain' to wait for.
    if (!this.stream.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.stream.off('drain', done);
        this.off('close', done);
        resolve();
      };
      this.stream.once('drain', done);
      this.once('close', done);
    });
  }

  override _read(): void {
    if (this.phase !== 'login' && !this.deferred) this.stream.resume();
  }

  /** The broker reads with `read()` once it has handled all it read before; `read(0)` is the stream's own look ahead. */
  override read(size?: number): unknown {
    const chunk: unknown = super.read(size);
    if (size !== 0 && chunk === null) this.brokerIdle = true;
    return chunk;
  }

  override push(chunk: unknown, encoding?: BufferEncoding): boolean {
    this.brokerIdle = false;
    return super.push(chunk, encoding);
  }

  /** Writes a whole packet the gateway built itself (an inbox event), after whatever the broker wrote before it. */
  writePacket(packet: Buffer): void {
    if (this.destroyed || this.writableEnded) return;
    // The broker's own writes may still be corked in this stream (it writes a packet in pieces): this one goes behind them.
    if (this.writableLength > 0 || this.writableCorked > 0) this.write(packet);
    else this.forward(packet, ignoreDone);
  }

  /**
   * A connection that is gone takes writes and drops them. A write to a destroyed stream would return false, and the
   * broker would wait for a 'drain' that never comes: Aedes can still deliver to a client for a moment after its socket
   * closed, and each such wait held one of the broker's delivery slots until its drain timeout. Once all of them were
   * held, no live message reached anyone on the gateway.
   */
  override write(chunk: unknown, encoding?: BufferEncoding | ((error?: Error | null) => void), cb?: (error?: Error | null) => void): boolean {
    if (this.destroyed || this.writableEnded) {
      const done = typeof encoding === 'function' ? encoding : cb;
      if (done) process.nextTick(done);
      return true;
    }
    return typeof encoding === 'function' ? super.write(chunk, encoding) : super.write(chunk, encoding as BufferEncoding, cb);
  }

  /** A packet the broker wrote in pieces (it corks the stream) goes out in one write, so it is not split into small segments. */
  override _writev(chunks: { chunk: Buffer }[], done: (err?: Error | null) => void): void {
    this.forward(this.fromBroker(chunks.length === 1 ? chunks[0]!.chunk : Buffer.concat(chunks.map((c) => c.chunk))), done);
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    this.forward(this.fromBroker(chunk), done);
  }

  /**
   * The SUBSCRIBEs in flight that named a filter more than once, by packet id: what each listed, for its SUBACK. Aedes
   * answers such a SUBSCRIBE with one return code per distinct filter; [MQTT-3.9.3-1] asks for one per filter listed,
   * and a client (MQTT.js) takes a shorter SUBACK for an error. Rare: unset until a SUBSCRIBE repeats a filter.
   */
  private repeatedSubscribes: Map<number, number[]> | undefined;

  /** What the broker writes, with the SUBACK of a SUBSCRIBE that repeated a filter given a return code per filter listed. */
  private fromBroker(chunk: Buffer): Buffer {
    if (!this.repeatedSubscribes?.size) return chunk;
    for (const [packetId, positions] of this.repeatedSubscribes) {
      const expanded = expandSuback(chunk, packetId, positions);
      if (expanded) {
        this.repeatedSubscribes.delete(packetId);
        return expanded;
      }
    }
    return chunk;
  }

  private forward(chunk: Buffer, done: (err?: Error | null) => void): void {
    if (this.stream.destroyed) return done();
    if (this.stream.writableLength === 0) this.lastFlush = Date.now();
    // What the broker writes to one client in one turn of the event loop (the messages of one commit, a reply and the
    // message it answers) leaves in one system call instead of one per packet: on loopback under load the writes were
    // the gateway's largest cost. One immediate flushes every guard written to in the turn.
    if (!this.corked) {
      this.corked = true;
      this.stream.cork();
      if (toFlush.push(this) === 1) setImmediate(flushAll);
    }
    this.stream.write(chunk, this.moved);
    // The broker is told at once that the write is done: it never waits on a client that does not read.
    done();
    if (this.stream.writableLength > this.limits.maxOutboundBytes) {
      this.cut({ reason: `client is not reading: over ${this.limits.maxOutboundBytes} bytes waiting` });
    }
  }

  /** When the bytes last moved to the client. */
  private lastFlush = Date.now();
  private corked = false;
  private readonly moved = (): void => {
    this.lastFlush = Date.now();
  };

  /** @internal Sends what was corked in this turn (the shared flush calls this). */
  flushWrites(): void {
    if (!this.corked) return;
    this.corked = false;
    this.stream.uncork();
    // What the socket could not take at once is watched: a client that takes none of it for `writeStallMs` is dropped.
    if (this.stream.writableLength > 0 && !this.stallTimer && !this.destroyed) this.stallTimer = setTimeout(onStallCheck, this.limits.writeStallMs, this);
  }

  /** @internal A stall check is due (shared timer callback). */
  checkStall(): void {
    this.stallTimer = undefined;
    if (this.stream.writableLength === 0 || this.destroyed) return;
    const still = Date.now() - this.lastFlush;
    if (still >= this.limits.writeStallMs) return this.cut({ reason: `client took no bytes for ${still} ms` });
    this.stallTimer = setTimeout(onStallCheck, this.limits.writeStallMs - still, this);
  }

  override _final(done: (err?: Error | null) => void): void {
    this.flushWrites();
    this.stream.end();
    done();
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    this.onClosed?.(this);
    clearTimeout(this.connectTimer);
    clearTimeout(this.idleTimer);
    this.clearStall();
    // The last packets (a CONNACK that refuses a login, say) still go out before the socket closes.
    this.flushWrites();
    this.stream.destroy();
    done(err);
  }

  private clearStall(): void {
    clearTimeout(this.stallTimer);
    this.stallTimer = undefined;
  }

  /** @internal Bytes from the client (the shared 'data' listener calls this). */
  onData(chunk: Buffer): void {
    this.bytesRead += chunk.length;
    this.idleTimer?.refresh();
    if (this.awaited > 0) {
      const have = this.pending.length;
      const need = have + chunk.length;
      if (!this.gathering || need > this.gathering.length) {
        // Room for what came, and as much again: never more than the packet (or what came, when it holds more).
        const room = Buffer.allocUnsafe(Math.max(need, Math.min(2 * need, this.awaited)));
        this.pending.copy(room);
        this.gathering = room;
      }
      chunk.copy(this.gathering, have);
      this.pending = this.gathering.subarray(0, need);
      if (need < this.awaited) return;
      this.gathering = undefined;
      this.awaited = 0;
    } else this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    this.scan();
  }

  /** @internal The turn after `scan` stopped at its budget: goes on with what is left, then reads the socket again. */
  scanDeferred(): void {
    this.deferred = false;
    this.scan();
    if (!this.deferred && !this.dropped && this.phase !== 'login') this.stream.resume();
  }

  /** Passes on every complete packet that may go to the broker now, at most `PACKETS_PER_TURN` in this turn. */
  private scan(): void {
    let budget = PACKETS_PER_TURN;
    while (!this.dropped && this.phase !== 'login') {
      // One read of a socket holds up to 64 KiB: 32,768 PINGREQs, which the broker handled in one go, holding up
      // everyone else for a quarter of a second. The rest waits for the next turn, the socket paused meanwhile.
      if (budget-- === 0) {
        if (this.pending.length === 0) break;
        if (!this.deferred) setImmediate(onDeferredScan, this);
        this.deferred = true;
        this.stream.pause();
        break;
      }
      // The first byte tells: anything but a CONNECT's (an HTTP request, a TLS hello, another packet) is refused at once,
      // not held until the connect timeout waiting for the length it seems to claim.
      if (this.phase === 'connect' && this.pending.length > 0) {
        const violation = inspectFirstByte(this.pending[0]!);
        if (violation) return this.refuse(violation);
      }
      const header = readFixedHeader(this.pending);
      if (header === 'incomplete') break;
      if ('reason' in header) return this.refuse(header);
      const limit = this.phase === 'connect' ? this.limits.maxConnectBytes : this.limits.maxPacketBytes;
      // The claim is judged before a byte of the body is kept.
      if (header.remainingLength > limit)
        return this.refuse({ reason: `packet of ${header.remainingLength} bytes is over the ${limit} byte limit`, clause: 'size limit' });
      const size = header.headerLength + header.remainingLength;
      if (this.pending.length < size) {
        this.awaited = size;
        break;
      }
      const packet = this.pending.subarray(0, size);
      const body = packet.subarray(header.headerLength);
      // A fully read chunk is let go (a view of it would keep it alive while the connection idles).
      this.pending = size === this.pending.length ? EMPTY : this.pending.subarray(size);
      if (this.phase === 'connect') {
        const info = inspectConnect(header.flags, body);
        if ('reason' in info) return this.refuse(info);
        this.phase = 'login';
        this.watchSilence(info.keepAlive);
        // Nothing more is read until the broker has answered this CONNECT.
        this.stream.pause();
      } else if (header.type === PacketType.PUBLISH) {
        const publish = readPublish(header.flags, body);
        if ('reason' in publish) return this.refuse(publish);
        if (this.takeRequest(publish, body)) continue;
      } else {
        const violation = inspectPacket(header.type, header.flags, body);
        if (violation) return this.refuse(violation);
        if (header.type === PacketType.SUBSCRIBE) {
          if (this.limits.maxSubscribeQos !== undefined) capSubscribeQos(body, this.limits.maxSubscribeQos);
          const positions = repeatedFilters(body);
          if (positions) (this.repeatedSubscribes ??= new Map()).set(body.readUInt16BE(0), positions);
        }
      }
      if (!this.push(packet)) this.stream.pause();
    }
  }

  /** Hands a request to the lane (see `openRequests`) when it may skip the broker; false when the broker should have it. */
  private takeRequest(publish: PublishInfo, body: Buffer): boolean {
    if (!this.requestLane || !this.principal || publish.qos === 2 || !this.brokerIdle || !isRequestTopicOf(this.principal, publish.topic)) return false;
    if (!this.requestLane(this, body.subarray(publish.payloadAt))) return false;
    // [MQTT-4.3.2-2] A QoS 1 PUBLISH is answered with a PUBACK carrying its packet identifier, as the broker would. (Its
    // reply is not written before a later turn: the dispatcher answers asynchronously.)
    if (publish.qos === 1) this.writePacket(pubackPacket(publish.packetId));
    return true;
  }

  /**
   * The broker's own keep-alive check covers a keep-alive up to the limit (it drops a client silent for 1.5 times it,
   * [MQTT-3.1.2-24]); a client that asks for none, or for a longer one, gets the limit, watched here.
   */
  private watchSilence(keepAliveS: number): void {
    if (keepAliveS > 0 && keepAliveS <= this.limits.maxKeepAliveS) return;
    this.idleTimer = setTimeout(onSilence, this.silenceLimitMs, this);
  }

  private refuse(v: Violation): void {
    if (v.connack !== undefined && !this.stream.destroyed) {
      // CONNACK: type 2, remaining length 2, session present 0, return code.
      this.stream.write(Buffer.from([0x20, 0x02, 0x00, v.connack]));
      this.cut({ reason: v.reason, clause: v.clause }, true);
      return;
    }
    this.cut({ reason: v.reason, clause: v.clause });
  }

  /** @internal Ends the connection for this reason (the shared timer callbacks call this too). */
  cut(d: Omit<GuardDrop, 'bytesRead'>, flushFirst = false): void {
    if (this.dropped) return;
    this.dropped = { ...d, bytesRead: this.bytesRead };
    this.pending = EMPTY;
    this.gathering = undefined;
    this.awaited = 0;
    this.stream.pause();
    this.onDrop(this.dropped, this);
    if (!flushFirst) return void this.destroy();
    this.stream.end(() => this.destroy());
    setTimeout(() => this.destroy(), 2000).unref();
  }
}

const EMPTY = Buffer.alloc(0);
/**
 * Packets one connection passes on in one turn of the event loop. Enough for any client's burst of requests to go in a
 * few turns; few enough that a client sending small packets as fast as it can delays the others by a turn of this many.
 */
const PACKETS_PER_TURN = 64;
/** Guards whose writes are corked in this turn: one immediate flushes them all. */
const toFlush: GuardedConnection[] = [];
function flushAll(): void {
  // One at a time, each on its own: a guard that fails to flush is ended, and the others are still flushed.
  for (let g = toFlush.shift(); g; g = toFlush.shift()) {
    try {
      g.flushWrites();
    } catch (e) {
      g.destroy(e instanceof Error ? e : new Error(String(e)));
    }
  }
}

// Listeners and timer callbacks shared by every guard, instead of closures of each one's own: a stream's listeners
// find their guard on the stream, a timer gets it as its argument.
const GUARD = Symbol('guard');
type GuardedStream = Duplex & { [GUARD]: GuardedConnection };
function onStreamData(this: GuardedStream, chunk: Buffer): void {
  this[GUARD].onData(chunk);
}
function onStreamEnd(this: GuardedStream): void {
  this[GUARD].push(null);
}
function onStreamError(this: GuardedStream, err: Error): void {
  this[GUARD].destroy(err);
}
function onStreamClose(this: GuardedStream): void {
  this[GUARD].destroy();
}
function onConnectTimeout(g: GuardedConnection): void {
  g.cut({ reason: 'no complete login in time' });
}
function onSilence(g: GuardedConnection): void {
  g.heardLastAt = Date.now() - g.silenceLimitMs;
  g.cut({ reason: `silent for ${g.silenceLimitMs} ms` });
}
function onDeferredScan(g: GuardedConnection): void {
  g.scanDeferred();
}
function onStallCheck(g: GuardedConnection): void {
  g.checkStall();
}
function ignoreDrop(): void {}
function ignoreDone(): void {}

/** The guard of a broker connection, if it has one. */
export function guardOf(conn: unknown): GuardedConnection | undefined {
  return conn instanceof GuardedConnection ? conn : undefined;
}
