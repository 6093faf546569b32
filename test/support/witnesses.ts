import { expect } from 'vitest';
import type { MqttUser } from './mqtt-user.js';

/**
 * Bystanders of a hostile test: a pair of users that keeps chatting, and the
 * stored state they can see. Every hostile case owes them two things: they are
 * still served, and nothing stored has changed.
 */
export class Witnesses {
  private probes = 0;

  constructor(
    private readonly sender: MqttUser,
    private readonly receiver: MqttUser,
    /** The requests (and who makes them) whose answers are the stored state to watch. */
    private readonly queries: () => [MqttUser, Record<string, unknown>][],
  ) {}

  /** The sender's message still reaches the receiver. */
  async stillServing(): Promise<void> {
    const text = `still here ${++this.probes}`;
    expect(await this.sender.request({ op: 'send', to: this.receiver.user, text })).toMatchObject({ ok: true });
    await this.receiver.waitFor((e) => e.type === 'message' && e.text === text, 15_000, text);
  }

  /** The answers to the watched requests, without the ids requests and replies carry. */
  async storedState(): Promise<unknown> {
    const answers: unknown[] = [];
    for (const [who, query] of this.queries()) answers.push(await who.request(query));
    return JSON.parse(JSON.stringify(answers, (k, v: unknown) => (k === 'id' ? undefined : v))) as unknown;
  }

  /** Runs a hostile case between two probes, and checks that the stored state did not move. */
  async hostile(run: () => Promise<void>): Promise<void> {
    await this.stillServing();
    const before = await this.storedState();
    await run();
    expect(await this.storedState()).toEqual(before);
    await this.stillServing();
  }

  /** The number of probe messages sent so far (to name things uniquely). */
  get probeCount(): number {
    return this.probes;
  }
}
