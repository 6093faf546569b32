import { Logger } from '@nestjs/common';
import { describe, expect, it, vi } from 'vitest';
import type { FileOfferApi, FileOutcome } from '#libs/file-offer';
import type { GroupApi } from '#libs/group';
import type { FileEvent } from '#libs/protocol';
import { FileRequests } from './file-requests.js';
import { InboxPublisher, RELAY_WAIT_MS, type RelayNote } from './inbox-publisher.js';
import type { MqttBroker } from './mqtt-broker.js';
import { deferred } from './deferred.js';

const offered = { type: 'file', event: 'offered', offer: { id: 'f1' }, ts: 1 } as unknown as FileEvent;

/** A file service whose chunk answers `outcome`, and records what it is told has been announced. */
function files(outcome: FileOutcome<unknown>) {
  const announced: string[] = [];
  const api = {
    putChunk: () => Promise.resolve(outcome),
    announced: (id: string) => (announced.push(id), Promise.resolve()),
  } as unknown as FileOfferApi;
  return { api, announced };
}

/** An inbox publisher whose relay settles when the test says (undefined: standalone, nothing to relay). */
function inbox(relay?: Promise<boolean>) {
  const published: string[][] = [];
  const publisher = {
    publishToAll: (topics: readonly string[]) => (published.push([...topics]), relay),
  } as unknown as InboxPublisher;
  return { publisher, published };
}

const chunk = { op: 'file.chunk', id: 'r1', offer: 'f1', index: 2, data: '' } as const;

describe('FileRequests', () => {
  it('records an upload as announced once the announcement has left the gateway, before answering, and not when its relay failed', async () => {
    const outcome = { result: { complete: true }, notify: { to: ['bob', 'bob'], event: offered }, announces: 'f1' };
    for (const relayed of [true, false]) {
      const relay = deferred<boolean>();
      const service = files(outcome);
      const out = inbox(relay.promise);
      const note: RelayNote = {};
      let answered = false;
      const answer = new FileRequests(service.api, {} as GroupApi, out.publisher).execute('ann', chunk, note).then(() => (answered = true));
      await new Promise<void>((resolve) => setImmediate(resolve));
      expect(out.published).toEqual([['parley/v1/users/bob/inbox']]);
      expect(note.relayed).toBeDefined();
      expect([service.announced, answered]).toEqual([[], false]);
      relay.resolve(relayed);
      await answer;
      // Recorded by the time the answer goes: a repeat of the last chunk sent after it announces nothing again.
      expect(service.announced).toEqual(relayed ? ['f1'] : []);
    }
    // Standalone (nothing to relay): at once.
    const service = files(outcome);
    await new FileRequests(service.api, {} as GroupApi, inbox().publisher).execute('ann', chunk, {});
    expect(service.announced).toEqual(['f1']);
    // An event that announces nothing (a decision, say) records nothing.
    const decision = files({ result: {}, notify: { to: ['ann'], event: offered } });
    await new FileRequests(decision.api, {} as GroupApi, inbox().publisher).execute('ann', chunk, {});
    expect(decision.announced).toEqual([]);
  });

  it('answers the completing chunk RELAY_WAIT_MS after its relay, should Redis never answer, and records nothing', async () => {
    vi.useFakeTimers();
    try {
      const outcome = { result: { complete: true }, notify: { to: ['bob'], event: offered }, announces: 'f1' };
      const service = files(outcome);
      const note: RelayNote = {};
      let answered = false;
      // The real publisher, on a broker whose relay Redis never answers: the bound is the relay's own.
      const broker = { inboxes: { write: () => undefined }, relay: () => undefined, relayed: () => new Promise<boolean>(() => undefined) };
      const answer = new FileRequests(service.api, {} as GroupApi, new InboxPublisher(broker as unknown as MqttBroker))
        .execute('ann', chunk, note)
        .then(() => (answered = true));
      await vi.advanceTimersByTimeAsync(RELAY_WAIT_MS - 1);
      expect(answered).toBe(false);
      await vi.advanceTimersByTimeAsync(1);
      expect(answered).toBe(true);
      await answer;
      expect(service.announced).toEqual([]);
      // The answer's own wait for the relay (the dispatcher's) is over too.
      expect(await note.relayed).toBe(false);
    } finally {
      vi.useRealTimers();
    }
  });

  it('answers the completing chunk when the announcement cannot be recorded, and says so in one line per 10 s', async () => {
    const warn = vi.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined);
    try {
      const outcome = { result: { complete: true }, notify: { to: ['bob'], event: offered }, announces: 'f1' };
      const api = {
        putChunk: () => Promise.resolve(outcome),
        announced: () => Promise.reject(new Error('file-offer did not answer')),
      } as unknown as FileOfferApi;
      const requests = new FileRequests(api, {} as GroupApi, inbox().publisher);
      for (let i = 0; i < 3; i++) expect(await requests.execute('ann', chunk, {})).toEqual({ complete: true });
      expect(warn.mock.calls.map(([fields]) => fields as object)).toEqual([{ event: 'announcement_not_recorded', error: 'Error: file-offer did not answer' }]);
    } finally {
      warn.mockRestore();
    }
  });
});
