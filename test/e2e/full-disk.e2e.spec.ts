import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import request from 'supertest';
import { afterAll, describe, expect, it } from 'vitest';
import { startParley, type ParleyServer } from '../support/parley-server.js';
import { mountSmallDisk } from '../support/small-disk.js';
import { TestUsers } from '../support/test-users.js';

/**
 * The standalone server on a disk that fills: every request that would write is refused (`unavailable`), the server
 * stays up and says it is not ready, and it takes writes again once the disk has room. A file offer refused so ended
 * the process (lmdb-js left promises of its own to reject unhandled).
 */
describe('standalone, on a full disk', () => {
  const disk = mountSmallDisk('24m');
  let server: ParleyServer | undefined;
  afterAll(async () => {
    await server?.dispose();
    disk?.unmount();
  });

  it.skipIf(disk === null)('refuses writes of every kind without going down, and takes them again once the disk has room', { timeout: 90_000 }, async () => {
    server = await startParley({ dataDir: join(disk!.dir, 'data'), env: { PARLEY_MAX_PENDING_OFFERS: '1000' } });
    const users = new TestUsers(() => [server!.mqttUrl], 'full disk password');
    const [a, b] = [await users.fresh('alice'), await users.fresh('bob')];
    const alice = await users.login(a);
    expect(await alice.request({ op: 'send', to: b, text: 'before' })).toMatchObject({ ok: true });

    // Everything the disk has left goes to ballast, then messages until one is refused.
    const ballast: string[] = [];
    for (let i = 0; i < 1000; i++) {
      const path = join(disk!.dir, `ballast-${i}`);
      try {
        writeFileSync(path, Buffer.alloc(256 * 1024));
        ballast.push(path);
      } catch {
        rmSync(path, { force: true });
        break;
      }
    }
    let refused: { ok: boolean; error?: { code: string } } | undefined;
    for (let i = 0; i < 2000 && !refused; i++) {
      const r = (await alice.request({ op: 'send', to: b, text: 'x'.repeat(1000) })) as { ok: boolean; error?: { code: string } };
      if (!r.ok) refused = r;
    }
    expect(refused).toMatchObject({ ok: false, error: { code: 'unavailable' } });

    // Writes through lmdb-js's own commits: file offers, until one is refused (LMDB may still have a free page or two).
    const offer = (i: number) => ({ op: 'file.offer', to: b, name: `notes-${i}.txt`, size: 50, type: 'text/plain', sha256: 'a'.repeat(64) });
    let offerRefused: { ok: boolean; error?: { code: string } } | undefined;
    for (let i = 0; i < 500 && !offerRefused; i++) {
      const r = (await alice.request(offer(i))) as { ok: boolean; error?: { code: string } };
      if (!r.ok) offerRefused = r;
    }
    expect(offerRefused).toMatchObject({ ok: false, error: { code: 'unavailable' } });
    // Still up, and answering.
    expect(await alice.request({ op: 'who', user: b })).toMatchObject({ ok: true });
    expect(server.process.exitCode).toBeNull();
    await request(server.httpUrl).get('/healthz').expect(200);
    await request(server.httpUrl).get('/readyz').expect(503);

    for (const path of ballast) rmSync(path);
    await expect.poll(async () => (await request(server!.httpUrl).get('/readyz')).status, { timeout: 10_000, interval: 250 }).toBe(200);
    expect(await alice.request({ op: 'send', to: b, text: 'after' })).toMatchObject({ ok: true });
    expect(await alice.request(offer(1000))).toMatchObject({ ok: true });
    await users.closeAll();
  });
});
