/** Storage port: which conversations each user takes part in, so a reconnecting user can be brought up to date. */
export interface ConversationIndexStore {
  /** Records that the user takes part in the conversation; idempotent, durable when it resolves. */
  add(user: string, conv: string): Promise<void>;

  /** Every conversation the user takes part in, in no particular order. */
  list(user: string): Promise<string[]>;

  /**
   * Changes whenever the store may have lost entries it had acknowledged (Redis reconnected, see
   * `RedisConnection.generation`); an entry known to be there is known only within one generation.
   */
  generation(): number;
}
