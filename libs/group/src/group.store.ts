import type { GroupState } from './group-state.js';

/** Storage port for groups' current state (the log itself is the conversation log). */
export interface GroupStore {
  /** The group's state, or undefined when no such group was ever written. */
  get(id: string): Promise<GroupState | undefined>;

  /** Replaces the group's state; durable when it resolves. */
  save(state: GroupState): Promise<void>;
}
