import type { INestApplication, Logger } from '@nestjs/common';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '#libs/config';
import { describeListenError, routeConsoleToLog, stopOnSignals } from './runtime.js';

describe('routeConsoleToLog', () => {
  const saved = { ...console };
  afterEach(() => {
    Object.assign(console, saved);
    vi.restoreAllMocks();
  });

  it('makes what a library prints with console JSON log lines on stdout, a trace with where it was called from', () => {
    const written: string[] = [];
    vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => (written.push(String(chunk)), true));
    routeConsoleToLog(loadConfig({}));
    console.error('Write error:', new Error('No space left on device'));
    console.trace('where from');
    const lines = written
      .join('')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { level: string; message: Record<string, string> });
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatchObject({ level: 'error', message: { event: 'library_output', console: 'error' } });
    expect(lines[0]!.message.text).toMatch(/^Write error: Error: No space left on device\n\s+at /);
    expect(lines[1]).toMatchObject({ level: 'error', message: { event: 'library_output', console: 'trace', text: 'where from' } });
    expect(lines[1]!.message.stack).toMatch(/runtime\.spec\.ts/);
  });
});

describe('stopOnSignals', () => {
  const before = { SIGTERM: process.listeners('SIGTERM'), SIGINT: process.listeners('SIGINT'), SIGHUP: process.listeners('SIGHUP') };
  afterEach(() => {
    for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
      for (const l of process.listeners(signal)) if (!before[signal].includes(l)) process.off(signal, l);
    }
    vi.useRealTimers();
    vi.restoreAllMocks();
  });

  it('stops once, and keeps handling the signal while stopping: a second one logs and does not end the stop', async () => {
    let closed!: () => void;
    const close = vi.fn(() => new Promise<void>((resolve) => (closed = resolve)));
    const logged: unknown[] = [];
    const logger = { log: (m: unknown) => logged.push(m) } as unknown as Logger;
    const exit = vi.spyOn(process, 'exit').mockImplementation((() => undefined) as never);
    // The stop's 15 s backstop, which would end the test run, never fires: it goes with the fake timers.
    vi.useFakeTimers({ toFake: ['setTimeout'] });
    let told = 0;
    stopOnSignals({ close } as unknown as INestApplication, logger, () => told++);
    // A closed terminal's SIGHUP stops it as SIGTERM does (Node's default would end it at once, with no stop).
    process.emit('SIGHUP', 'SIGHUP');
    expect(told).toBe(1);
    // Were the handler gone, the real signal would now kill the process with its default action (exit 143), mid-stop.
    expect(process.listeners('SIGTERM').length).toBeGreaterThan(before.SIGTERM.length);
    process.emit('SIGTERM', 'SIGTERM');
    process.emit('SIGINT', 'SIGINT');
    expect(close).toHaveBeenCalledTimes(1);
    expect(told).toBe(1);
    expect(logged).toEqual([
      { event: 'stopping', signal: 'SIGHUP' },
      { event: 'stopping_already', signal: 'SIGTERM' },
      { event: 'stopping_already', signal: 'SIGINT' },
    ]);
    expect(exit).not.toHaveBeenCalled();
    closed();
    await new Promise((resolve) => setImmediate(resolve));
    expect(exit).toHaveBeenCalledWith(0);
  });
});

describe('describeListenError', () => {
  const error = (code: string, message: string) => Object.assign(new Error(message), { code });

  it('says a host name was not found, quoting it (a stray space shows), rather than pass on getaddrinfo’s words', () => {
    expect(describeListenError(error('ENOTFOUND', 'getaddrinfo ENOTFOUND  ::'), ' ::', 1883, 'MQTT')).toBe(
      'cannot listen for MQTT on [ ::]:1883: no address found for the host name " ::"',
    );
    expect(describeListenError(error('ENOTFOUND', 'getaddrinfo ENOTFOUND mqtt.example'), 'mqtt.example', 8080, 'HTTP')).toBe(
      'cannot listen for HTTP on mqtt.example:8080: no address found for the host name "mqtt.example"',
    );
    expect(describeListenError(error('EAI_AGAIN', 'getaddrinfo EAI_AGAIN mqtt.example'), 'mqtt.example', 8080, 'HTTP')).toBe(
      'cannot listen for HTTP on mqtt.example:8080: the host name "mqtt.example" could not be looked up (no answer from DNS)',
    );
  });

  it('says a machine without IPv6 cannot listen on ::, and what to listen on instead', () => {
    expect(describeListenError(error('EAFNOSUPPORT', 'listen EAFNOSUPPORT: address family not supported :::1883'), '::', 1883, 'MQTT')).toBe(
      'cannot listen for MQTT on [::]:1883: this machine has no IPv6; listen on an IPv4 address (0.0.0.0 for all of them)',
    );
  });
});
