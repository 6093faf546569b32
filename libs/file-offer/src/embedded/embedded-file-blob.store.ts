import { randomUUID } from 'node:crypto';
import { mkdir, readFile, rename, rm, open } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { EmbeddedDatabase } from '#libs/storage';
import type { FileBlobStore } from '../file-offer.store.js';

/** Makes a directory's entries (a file renamed or made in it) durable. */
async function syncDirectory(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Chunks as plain files in the data directory: `files/{offerId}/{index}`.
 * Each chunk is written to a temporary name, flushed and renamed, and its
 * directory flushed, so a crash leaves a whole chunk or none, and a power loss
 * no chunk the offer counts as uploaded without its name. Offer ids are server-made (`f` and base64url),
 * never a path. Expiry is the offer service's sweep. A chunk that would take
 * the disk under the store's floor of free space is refused, as by a full disk.
 */
export class EmbeddedFileBlobStore implements FileBlobStore {
  private readonly root: string;

  constructor(private readonly db: EmbeddedDatabase) {
    this.root = join(db.dataDir, 'files');
  }

  private dirOf(id: string): string {
    if (!/^f[A-Za-z0-9_-]+$/.test(id)) throw new Error(`not an offer id: ${id}`);
    return join(this.root, id);
  }

  async put(id: string, index: number, data: Buffer): Promise<void> {
    const dir = this.dirOf(id);
    // Not into the room the store keeps free for messages (refused as a full disk is: the upload goes on once there is room).
    this.db.checkRoomFor(data.length);
    // Directories made now (the offer's, and the first time the files root) are made durable in their parents too, as
    // each chunk's name is in its directory below.
    const made = await mkdir(dir, { recursive: true });
    if (made !== undefined) for (const parent of new Set([dirname(made), dirname(dir)])) await syncDirectory(parent);
    const final = join(dir, String(index));
    // A name of its own, so that no other write of this chunk can take it from under this one.
    const temp = `${final}.${randomUUID()}.tmp`;
    const handle = await open(temp, 'w');
    try {
      try {
        await handle.writeFile(data);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(temp, final);
      // The rename is in the directory, not the file: synced, the chunk is there after a power loss as the offer's count
      // of uploaded chunks (synced in the store after this) says it is.
      await syncDirectory(dir);
    } catch (e) {
      // A write that failed (a full disk, say) leaves no part of itself behind: its retry writes a temp file of its own.
      await rm(temp, { force: true });
      throw e;
    }
  }

  async get(id: string, index: number): Promise<Buffer | null> {
    try {
      return await readFile(join(this.dirOf(id), String(index)));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
  }

  async delete(id: string): Promise<void> {
    await rm(this.dirOf(id), { recursive: true, force: true });
  }
}
