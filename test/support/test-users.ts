import type { IClientOptions } from 'mqtt';
import { randomBytes } from 'node:crypto';
import { expect } from 'vitest';
import { MqttUser, registerUser } from './mqtt-user.js';

/**
 * Users of one end-to-end spec: unique names per test, logins spread over the
 * server's addresses (IPv4 and IPv6), and every connection closed after each test.
 */
export class TestUsers {
  private open: MqttUser[] = [];
  private turn = 0;

  constructor(
    private readonly urls: () => string[],
    readonly password = 'end to end password',
  ) {}

  /** Registers a new user named `base` plus a random suffix, and returns the name. */
  async fresh(base: string): Promise<string> {
    const name = `${base}${randomBytes(3).toString('hex')}`;
    expect(await registerUser(this.urls()[0]!, name, this.password)).toMatchObject({ ok: true });
    return name;
  }

  /** Logs in (subscribed to the inbox), alternating between the server's addresses unless one is given; `opts` go to MQTT.js. */
  async login(name: string, url?: string, opts: IClientOptions = {}): Promise<MqttUser> {
    const urls = this.urls();
    const u = await MqttUser.connect(url ?? urls[this.turn++ % urls.length]!, name, this.password, opts);
    this.open.push(u);
    return u;
  }

  async logout(u: MqttUser): Promise<void> {
    this.open = this.open.filter((x) => x !== u);
    await u.close();
  }

  async closeAll(): Promise<void> {
    const all = this.open;
    this.open = [];
    await Promise.all(all.map((u) => u.close()));
  }
}
