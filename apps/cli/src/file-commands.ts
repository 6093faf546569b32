import { resolve } from 'node:path';
import { target, withClient, type CommandContext } from './commands.js';
import { fileLabel, offerLine, withdrewText } from './file-output.js';
import { reportConnection } from './output.js';
import { acceptFile, cancelInCliWords, offeredRecord, offeredText, offerFile, offlineReceiver } from './file-actions.js';

/** `parley file …` */
export const fileCommands = {
  async send(ctx: CommandContext, user: string | undefined, path: string, opts: { group?: string }): Promise<void> {
    const to = target(user, opts.group);
    await withClient(
      ctx,
      async (client) => {
        reportConnection(client, (text, record) => ctx.printer.emit(text, record));
        const sent = await offerFile(client, ctx.printer, to, path);
        ctx.printer.emit(offeredText(sent), offeredRecord(sent));
        // On stderr for a person (stdout is the offer's line), as a line of its own for a script.
        const away = await offlineReceiver(client, sent.offer);
        if (away) {
          ctx.printer.emit(null, away.record);
          ctx.printer.note(away.text);
        }
      },
      { reconnect: true },
    );
  },
  async list(ctx: CommandContext): Promise<void> {
    await withClient(ctx, async (client) => {
      const { offers } = await client.request('file.list');
      for (const offer of offers) ctx.printer.emit(offerLine(offer, client.user!), { type: 'offer', offer });
      if (offers.length === 0) ctx.printer.note('no file offers');
    });
  },
  async accept(ctx: CommandContext, id: string, opts: { to?: string }): Promise<void> {
    await withClient(
      ctx,
      async (client) => {
        reportConnection(client, (text, record) => ctx.printer.emit(text, record));
        const { offer, path } = await acceptFile(client, ctx.printer, id, resolve(opts.to ?? '.'));
        ctx.printer.emit(`received ${fileLabel(offer)} from ${offer.from}: ${path}`, { type: 'received', offer, path });
      },
      { reconnect: true },
    );
  },
  async cancel(ctx: CommandContext, id: string): Promise<void> {
    await withClient(ctx, async (client) => {
      const { offer } = await client.request('file.cancel', { offer: id }).catch((e: unknown) => {
        throw cancelInCliWords(e, `parley file decline ${id}`);
      });
      ctx.printer.emit(withdrewText(offer), { type: 'withdrawn', offer });
    });
  },
  async decline(ctx: CommandContext, id: string): Promise<void> {
    await withClient(ctx, async (client) => {
      const { offer } = await client.request('file.decline', { offer: id });
      ctx.printer.emit(`declined ${fileLabel(offer)} from ${offer.from}`, { type: 'declined', offer });
    });
  },
};
