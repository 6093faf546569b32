import { resolve } from 'node:path';
import type { FileOffer } from '#libs/protocol';
import type { CommandContext } from './commands.js';
import { fileLabel, offerLine } from './file-output.js';
import { TransferProgress } from './file-progress.js';
import { downloadFile, uploadFile, type FileTarget } from './file-transfer.js';
import type { ParleyClient } from './parley-client.js';
import type { Printer } from './output.js';
import { UsageError } from './settings.js';

/** Offers and uploads a file, with progress; resolves with the offer once the server holds it all. */
export async function offerFile(client: ParleyClient, printer: Printer, target: FileTarget, path: string): Promise<FileOffer> {
  let progress: TransferProgress | undefined;
  try {
    return await uploadFile(client, target, path, (offer, bytes) => {
      progress ??= new TransferProgress(printer, 'upload', offer.id, offer.name, offer.size);
      progress.update(bytes);
    });
  } finally {
    progress?.done();
  }
}

/** Accepts an offer and downloads it into `dir`, with progress; resolves with the offer and where the file is. */
export async function acceptFile(client: ParleyClient, printer: Printer, id: string, dir: string): Promise<{ offer: FileOffer; path: string }> {
  const { offer } = await client.request('file.accept', { offer: id });
  const progress = new TransferProgress(printer, 'download', offer.id, offer.name, offer.size);
  try {
    return { offer, path: await downloadFile(client, offer, dir, DOWNLOAD_WINDOW, (bytes) => progress.update(bytes)) };
  } finally {
    progress.done();
  }
}

/** Fetch requests a receiver keeps outstanding at once. */
const DOWNLOAD_WINDOW = 8;

export function offeredText(offer: FileOffer): string {
  const to = offer.group ? offer.group.name : Object.keys(offer.recipients).join(', ');
  return `offered ${fileLabel(offer)} to ${to}: ${offer.id}`;
}

async function withClient(ctx: CommandContext, work: (c: ParleyClient) => Promise<void>): Promise<void> {
  const client = await ctx.login();
  try {
    await work(client);
  } finally {
    await client.close();
  }
}

/** `parley file …` */
export const fileCommands = {
  async send(ctx: CommandContext, user: string | undefined, path: string, opts: { group?: string }): Promise<void> {
    if (user !== undefined && opts.group !== undefined) throw new UsageError('give a user or --group, not both');
    const target: FileTarget = opts.group !== undefined ? { group: opts.group } : user !== undefined ? { to: user } : usage('give a user, or --group NAME');
    await withClient(ctx, async (client) => {
      const offer = await offerFile(client, ctx.printer, target, path);
      ctx.printer.emit(offeredText(offer), { type: 'offered', offer });
    });
  },
  async list(ctx: CommandContext): Promise<void> {
    await withClient(ctx, async (client) => {
      const { offers } = await client.request('file.list');
      for (const offer of offers) ctx.printer.emit(offerLine(offer, client.user!), { type: 'offer', offer });
      if (offers.length === 0) ctx.printer.note('no file offers');
    });
  },
  async accept(ctx: CommandContext, id: string, opts: { to?: string }): Promise<void> {
    await withClient(ctx, async (client) => {
      const { offer, path } = await acceptFile(client, ctx.printer, id, resolve(opts.to ?? '.'));
      ctx.printer.emit(`received ${fileLabel(offer)} from ${offer.from}: ${path}`, { type: 'received', offer, path });
    });
  },
  async decline(ctx: CommandContext, id: string): Promise<void> {
    await withClient(ctx, async (client) => {
      const { offer } = await client.request('file.decline', { offer: id });
      ctx.printer.emit(`declined ${fileLabel(offer)} from ${offer.from}`, { type: 'declined', offer });
    });
  },
};

function usage(message: string): never {
  throw new UsageError(message);
}
