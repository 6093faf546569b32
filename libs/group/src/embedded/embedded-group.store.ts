import type { Database } from 'lmdb';
import type { EmbeddedDatabase } from '#libs/storage';
import type { GroupState } from '../group-state.js';
import type { GroupStore } from '../group.store.js';

/** Sub-database `groups` keyed by group id. */
export class EmbeddedGroupStore implements GroupStore {
  private readonly groups: Database<GroupState, string>;

  constructor(db: EmbeddedDatabase) {
    this.groups = db.open('groups');
  }

  get(id: string): Promise<GroupState | undefined> {
    return Promise.resolve(this.groups.get(id));
  }

  async save(state: GroupState): Promise<void> {
    await this.groups.put(state.id, state);
  }
}
