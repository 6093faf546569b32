import type { RedisConnection } from '#libs/storage';
import type { FileBlobStore } from '../file-offer.store.js';

/** How long after its offer's expiry Redis itself drops a chunk, should no sweep have deleted it. */
const EXPIRY_GRACE_MS = 60_000;
const DELETE_BATCH = 500;

/**
 * One key per chunk, `{prefix}file:blob:{id}:{index}`, each with an absolute
 * expiry (PEXPIREAT) just after its offer's: the data goes even if nothing
 * ever deletes it.
 */
export class RedisFileBlobStore implements FileBlobStore {
  constructor(private readonly redis: RedisConnection) {}

  private chunkKey(id: string, index: number): string {
    return this.redis.key('file', 'blob', id, index);
  }

  async put(id: string, index: number, data: Buffer, expiresAt: number): Promise<void> {
    await this.redis.client.set(this.chunkKey(id, index), data, 'PXAT', expiresAt + EXPIRY_GRACE_MS);
  }

  get(id: string, index: number): Promise<Buffer | null> {
    return this.redis.client.getBuffer(this.chunkKey(id, index));
  }

  async delete(id: string, chunks: number): Promise<void> {
    for (let start = 0; start < chunks; start += DELETE_BATCH) {
      const keys: string[] = [];
      for (let i = start; i < Math.min(chunks, start + DELETE_BATCH); i++) keys.push(this.chunkKey(id, i));
      await this.redis.client.unlink(...keys);
    }
  }
}
