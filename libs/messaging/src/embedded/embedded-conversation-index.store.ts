import type { Database } from 'lmdb';
import type { EmbeddedDatabase } from '#libs/storage';
import type { ConversationIndexStore } from '../conversation-index.store.js';

/** Sub-database `conv-index` keyed [user, conv] (value unused), so a user's list is one range read. */
export class EmbeddedConversationIndexStore implements ConversationIndexStore {
  private readonly index: Database<true, [string, string]>;

  constructor(db: EmbeddedDatabase) {
    this.index = db.open('conv-index');
  }

  async add(user: string, conv: string): Promise<void> {
    if (this.index.get([user, conv]) === undefined) await this.index.put([user, conv], true);
  }

  list(user: string): Promise<string[]> {
    const out: string[] = [];
    for (const key of this.index.getKeys({ start: [user, ''], end: [user, '\uffff'] })) out.push(key[1]);
    return Promise.resolve(out);
  }

  /** The embedded store loses nothing it acknowledged while the process lives. */
  generation(): number {
    return 0;
  }
}
