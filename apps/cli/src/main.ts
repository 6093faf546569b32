import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Command, CommanderError } from 'commander';
import { MAX_HISTORY_LIMIT, OfferId, RequestId } from '#libs/protocol';
import * as commands from './commands.js';
import { groupCommands, SendUnsettled } from './commands.js';
import { fileCommands } from './file-commands.js';
import { TransferError } from './file-transfer.js';
import { ConnectError, RequestError } from './parley-client.js';
import { Printer } from './output.js';
import { DEFAULT_SERVER, UsageError } from './settings.js';

/**
 * `parley`: the command-line client. Each action gets its context from the
 * global flags and environment; every failure ends as one clear line and a
 * non-zero exit code (1: the server said no or could not be reached; 2: usage).
 */
/** The version of the package the CLI comes in: the nearest package.json above it (the repository, or /app in the image). */
function packageVersion(): string {
  for (let dir = import.meta.dirname; ; dir = dirname(dir)) {
    const file = join(dir, 'package.json');
    if (existsSync(file)) return (JSON.parse(readFileSync(file, 'utf8')) as { version?: string }).version ?? 'unknown';
    if (dirname(dir) === dir) return 'unknown';
  }
}

/** The examples block of a command's help: a newcomer learns a command fastest from one that works. */
function examples(...lines: string[]): string {
  return `\nExamples:\n${lines.map((l) => `  $ ${l}`).join('\n')}`;
}

const program = new Command('parley')
  .description('Parley: instant messaging over MQTT')
  .version(packageVersion(), '-V, --version', 'print the version of parley')
  .option('--server <url>', `server: mqtt://, mqtts://, ws:// or wss://, e.g. mqtt://[::1]:1883 (env PARLEY_SERVER; default ${DEFAULT_SERVER})`)
  .option('--ca <file>', 'trust this CA certificate (PEM) for mqtts:// and wss:// (env PARLEY_CA)')
  .option('--user <name>', 'your user name (env PARLEY_USER)')
  .option('--password <password>', 'your password (env PARLEY_PASSWORD)')
  .option('--device <name>', 'chat and listen keep a session as this device, which catches up from where it stood itself (env PARLEY_DEVICE)')
  .option('--json', 'one JSON object per line, each with a "type"')
  // Each command's help lists these too: `parley send --help` is where a newcomer looks for how to say who they are.
  .configureHelp({ showGlobalOptions: true })
  .addHelpText(
    'after',
    examples(
      `export PARLEY_SERVER=mqtt://localhost:1883 PARLEY_USER=alice PARLEY_PASSWORD='correct horse'`,
      'parley register',
      'parley send bob "hello"',
      'parley chat',
    ) +
      "\n\nExit status: 0 done, 1 the server said no or could not be reached, 2 a usage mistake, 130 a one-shot command\nstopped by Ctrl-C, 141 the output closed early (`parley … | head`). A command's own flags and examples:\n`parley COMMAND --help`.",
  )
  .showHelpAfterError()
  // With --json a script reads stdout: a usage error is one JSON line there too (the help that follows stays on stderr).
  .configureOutput({
    outputError: (said, write) => {
      const text = withDashHint(said);
      if (!process.argv.includes('--json')) return write(text);
      new Printer(true).error('usage', text.trim().replace(/^error: /, ''));
    },
  })
  .exitOverride();

// Whoever reads the output stopped (`parley … | head`): there is no one left to tell anything, so leave quietly, with
// the status of a program ended by SIGPIPE (128 + 13), as the work may be cut short.
// Any other failure to write (`> /dev/full`, a redirect into a full disk) loses the output: one line on stderr says so, if
// stderr is not what failed, with status 1, instead of a stack trace.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(141);
    if (stream === process.stdout) process.stderr.write(`error: cannot write the output: ${e.message}\n`);
    process.exit(1);
  });
}

/** Wraps an action: builds its context, maps every error to one line and an exit code. */
function run<A extends unknown[]>(action: (ctx: commands.CommandContext, ...args: A) => Promise<void>) {
  return async (...args: unknown[]) => {
    const cmd = args[args.length - 1] as Command;
    const ctx = commands.contextOf(cmd);
    try {
      await action(ctx, ...(args.slice(0, -1) as A));
    } catch (e) {
      report(ctx.printer, e);
    }
  };
}

function report(printer: Printer, e: unknown): void {
  if (e instanceof RequestError) {
    printer.error(e.code, e.message);
    process.exitCode = 1;
  } else if (e instanceof SendUnsettled) {
    printer.error(e.code, e.message, { id: e.id });
    process.exitCode = 1;
  } else if (e instanceof UsageError) {
    printer.error('usage', e.message);
    process.exitCode = 2;
  } else if (e instanceof TransferError) {
    printer.error(e.code, e.message);
    process.exitCode = e.code === 'usage' ? 2 : 1;
  } else if (e instanceof ConnectError) {
    printer.error('connect', e.message);
    process.exitCode = 1;
  } else {
    printer.error('failed', e instanceof Error ? e.message : String(e));
    process.exitCode = 1;
  }
}

/** A message read from stdin (`parley send bob -`): all of it, without the new line that ends its last line. */
async function textFromStdin(printer: Printer): Promise<string> {
  // Typed at a terminal, it would otherwise wait without a word: say how to end the message.
  if (process.stdin.isTTY) printer.note('type the message; Ctrl-D on a line of its own sends it');
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  const text = Buffer.concat(chunks)
    .toString('utf8')
    .replace(/\r?\n$/, '');
  if (text === '') throw new UsageError('nothing to send: stdin was empty');
  return text;
}

/**
 * Commander's "unknown option" for what is no option but text that starts with a dash (`parley send bob "-1 for me"`):
 * says how to send such text.
 */
function withDashHint(text: string): string {
  const m = /^error: unknown option '(-[^']*)'/.exec(text);
  if (!m || !/^-(\d|-?\S*\s)/.test(m[1]!)) return text;
  return text.replace(/\n?$/, ` (text that starts with a dash goes after --: parley send bob -- "${m[1]}")\n`);
}

/** A file offer's id as typed: one that cannot be one is a usage mistake, said before connecting. */
function offerId(id: string): string {
  if (!OfferId.safeParse(id).success) throw new UsageError(`"${id}" is no file offer id (an id starts with f; parley file list shows them)`);
  return id;
}

/** A message id as typed (`send --id`): one the server would refuse is a usage mistake, said before connecting. */
function messageId(id: string | undefined): string | undefined {
  if (id !== undefined && !RequestId.safeParse(id).success)
    throw new UsageError(`--id must be 1–64 characters of A-Z a-z 0-9 _ . : - (got ${JSON.stringify(id)})`);
  return id;
}

/** User names are lower case: `Bob` and `BOB` can only mean `bob`. */
function userName<T extends string | undefined>(name: T): T {
  return name?.toLowerCase() as T;
}

/** `USER THING` or `--group NAME THING`: with --group the single positional argument is the thing. */
function userOrGroup(a: string | undefined, b: string | undefined, opts: { group?: string }, thing: string, usage: string): [string | undefined, string] {
  if (opts.group !== undefined) {
    if (b !== undefined) throw new UsageError(`with --group, give only ${thing}`);
    if (a === undefined) throw new UsageError(`with --group, give ${thing} too`);
    return [undefined, a];
  }
  if (a === undefined || b === undefined) throw new UsageError(usage);
  return [a, b];
}

program
  .command('register')
  .description('create the account given by --user and --password')
  .addHelpText('after', examples("parley register --user alice --password 'correct horse'"))
  .action(run(commands.register));
program
  .command('send')
  .description('send one message to USER (or --group NAME); exits 0 when the server accepted it')
  .argument('[user]', 'recipient (or, with --group, the text)')
  .argument('[text]', 'the message; - reads it from stdin (all of it, one message)')
  .option('--group <name>', 'send to a group (its name or id) instead of a user')
  .option('--id <id>', "the message's id (default: a new one); sent again with the same id, a message is stored once")
  .usage('USER "text" | --group NAME "text" | USER - < file')
  .addHelpText(
    'after',
    examples(
      'parley send bob "lunch at noon?"',
      'parley send --group "lunch crew" "on my way"',
      'uptime | parley send bob -',
      'parley send bob -- "-1 is the text"',
      'parley send bob "lunch at noon?" --id lunch-2024-06-01',
    ),
  )
  .action(
    run(async (ctx, a: string | undefined, b: string | undefined, opts: { group?: string; id?: string }) => {
      const [user, text] = userOrGroup(a, b, opts, 'the text', 'usage: parley send USER "text"');
      const sendOpts = { group: opts.group, id: messageId(opts.id) };
      if (text !== '-') return commands.send(ctx, userName(user), text, sendOpts);
      // Both typed at the terminal: the password first, as the message ends stdin.
      await ctx.askPassword();
      return commands.send(ctx, userName(user), await textFromStdin(ctx.printer), sendOpts);
    }),
  );
program
  .command('listen')
  .description('print what arrives until interrupted')
  .addHelpText('after', examples('parley listen', 'parley --json --device laptop listen'))
  .action(run(commands.listen));
program
  .command('chat')
  .description('interactive session: /msg USER text, /g GROUP text, plain text to the conversation the prompt names, /help')
  .addHelpText('after', examples('parley chat', 'parley --device phone chat'))
  .action(run(commands.chat));
program
  .command('history')
  .description('the conversation with USER (or --group NAME), with the state of each of your messages')
  .argument('[user]', 'the other person')
  .option('--group <name>', "a group's conversation instead (its name or id)")
  .option('--limit <n>', `how many messages (default 50, at most ${MAX_HISTORY_LIMIT})`)
  .option('--before <seq>', 'only messages before this seq (to page back)')
  .addHelpText('after', examples('parley history bob', 'parley history bob --limit 10 --before 42', 'parley history --group "lunch crew"'))
  .action(run((ctx, user: string | undefined, opts: { group?: string; limit?: string; before?: string }) => commands.history(ctx, userName(user), opts)));
program
  .command('read')
  .description('mark everything from USER (or in --group NAME) as read')
  .argument('[user]', 'the other person')
  .option('--group <name>', 'mark a group read instead (its name or id)')
  .addHelpText('after', examples('parley read bob', 'parley read --group "lunch crew"'))
  .action(run((ctx, user: string | undefined, opts: { group?: string }) => commands.read(ctx, userName(user), opts)));
program
  .command('who')
  .description('whether USER is online, or when last seen')
  .argument('<user>', 'the person')
  .addHelpText('after', examples('parley who bob'))
  .action(run((ctx, user: string) => commands.who(ctx, userName(user))));
program
  .command('info')
  .description('who has received and read message SEQ of a group')
  .argument('<group>', 'the group (its name or id)')
  .argument('<seq>', 'the message (its #, as listen and history show it)')
  .addHelpText('after', examples('parley info "lunch crew" 7'))
  .action(run((ctx, group: string, seq: string) => commands.info(ctx, group, seq)));

const group = program
  .command('group')
  .description('create and manage groups')
  .addHelpText('after', examples('parley group create "lunch crew" bob carol', 'parley group list', 'parley group create --help'));
group
  .command('create')
  .description('create a group that you own, with these members')
  .addHelpText('after', examples('parley group create "lunch crew" bob carol'))
  .argument('<name>', "the group's name")
  .argument('[members...]', 'the other members')
  .action(run((ctx, name: string, members: string[]) => groupCommands.create(ctx, name, members.map(userName))));
group
  .command('rename')
  .description('rename a group you own')
  .addHelpText('after', examples('parley group rename lunch "lunch crew"'))
  .argument('<group>', 'the group (its name or id)')
  .argument('<name>', 'its new name')
  .action(run((ctx, g: string, name: string) => groupCommands.rename(ctx, g, name)));
group
  .command('add')
  .description('add members to a group you own (they see what is said from then on)')
  .addHelpText('after', examples('parley group add "lunch crew" dave erin'))
  .argument('<group>', 'the group (its name or id)')
  .argument('<users...>', 'who to add')
  .action(run((ctx, g: string, users: string[]) => groupCommands.add(ctx, g, users.map(userName))));
group
  .command('remove')
  .description('remove members from a group you own')
  .addHelpText('after', examples('parley group remove "lunch crew" dave'))
  .argument('<group>', 'the group (its name or id)')
  .argument('<users...>', 'who to remove')
  .action(run((ctx, g: string, users: string[]) => groupCommands.remove(ctx, g, users.map(userName))));
group
  .command('owner')
  .description('hand the group over to another member')
  .addHelpText('after', examples('parley group owner "lunch crew" bob'))
  .argument('<group>', 'the group (its name or id)')
  .argument('<user>', 'the new owner')
  .action(run((ctx, g: string, user: string) => groupCommands.owner(ctx, g, userName(user))));
group
  .command('leave')
  .description('leave a group (an owner who leaves hands it to the longest-standing member; the last one deletes it)')
  .addHelpText('after', examples('parley group leave "lunch crew"'))
  .argument('<group>', 'the group (its name or id)')
  .action(run((ctx, g: string) => groupCommands.leave(ctx, g)));
group
  .command('delete')
  .description('delete a group you own, for everyone')
  .addHelpText('after', examples('parley group delete "lunch crew"'))
  .argument('<group>', 'the group (its name or id)')
  .action(run((ctx, g: string) => groupCommands.delete(ctx, g)));
group
  .command('list')
  .description('the groups you are in')
  .addHelpText('after', examples('parley group list'))
  .action(run((ctx) => groupCommands.list(ctx)));
group
  .command('members')
  .description("a group's members and owner")
  .addHelpText('after', examples('parley group members "lunch crew"', 'parley group members gxYH6HWhjS6bDSY'))
  .argument('<group>', 'the group (its name or id)')
  .action(run((ctx, g: string) => groupCommands.members(ctx, g)));

const file = program
  .command('file')
  .description('offer files, and accept or decline those offered to you')
  .addHelpText('after', examples('parley file send bob ./notes.txt', 'parley file list', 'parley file accept ID --to ~/Downloads'));
file
  .command('send')
  .description('offer a file to USER (or --group NAME) and upload it; the receiver accepts or declines')
  .addHelpText('after', examples('parley file send bob ./notes.txt', 'parley file send --group "lunch crew" ./menu.pdf'))
  .argument('[user]', 'receiver (or, with --group, the file)')
  .argument('[path]', 'the file')
  .option('--group <name>', 'offer to every other member of a group')
  .usage('USER PATH | --group NAME PATH')
  .action(
    run(async (ctx, a: string | undefined, b: string | undefined, opts: { group?: string }) => {
      const [user, path] = userOrGroup(a, b, opts, 'the file', 'usage: parley file send USER PATH');
      return fileCommands.send(ctx, userName(user), path, opts);
    }),
  );
file
  .command('list')
  .description('offers made to you and by you')
  .addHelpText('after', examples('parley file list'))
  .action(run((ctx) => fileCommands.list(ctx)));
file
  .command('accept')
  .description('accept an offer and download the file (into --to DIR, the current directory by default)')
  .addHelpText('after', examples('parley file accept fpHM--ZChYx3 --to ~/Downloads'))
  .argument('<id>', "the offer's id (parley file list shows it)")
  .option('--to <dir>', 'where to put the file')
  .action(run((ctx, id: string, opts: { to?: string }) => fileCommands.accept(ctx, offerId(id), opts)));
file
  .command('decline')
  .description('decline an offer: the server deletes its copy, and the sender is told')
  .addHelpText('after', examples('parley file decline fpHM--ZChYx3'))
  .argument('<id>', "the offer's id (parley file list shows it)")
  .action(run((ctx, id: string) => fileCommands.decline(ctx, offerId(id))));
file
  .command('cancel')
  .description('withdraw a file you offered: the server deletes it, and receivers who had not taken it are told')
  .addHelpText('after', examples('parley file cancel fpHM--ZChYx3'))
  .argument('<id>', "the offer's id (parley file list shows it)")
  .action(run((ctx, id: string) => fileCommands.cancel(ctx, offerId(id))));

// `parley help COMMAND [SUBCOMMAND]`, and `parley group help SUBCOMMAND` alike. Commander's own help command, given a name
// it did not know, showed the help as an error without saying what was wrong (with --json: "give a subcommand"); this
// one names it, as `parley bogus` does, and goes down to a subcommand (`parley help group create`).
for (const parent of [program, group, file]) {
  parent.helpCommand(false);
  parent
    .command('help')
    .description('display help for command')
    .argument('[command...]', 'the command, and its subcommand, to explain')
    .action((names: string[]) => {
      let shown: Command = parent;
      for (const name of names) {
        const sub = shown.commands.find((c) => c.name() === name || c.aliases().includes(name));
        if (!sub) shown.error(`error: unknown command '${name}'`, { code: 'commander.unknownCommand', exitCode: 1 });
        shown = sub;
      }
      shown.help();
    });
}

// Whatever a command waits for is held by a connection, a timer or input. Should all of them end with the command still
// waiting (a connection that stopped trying without saying so), Node would leave with status 13 and not a word: say so.
let finished = false;
process.once('beforeExit', () => {
  if (finished) return;
  report(new Printer(process.argv.includes('--json')), new Error('stopped: nothing left to wait for (the connection to the server ended)'));
  process.exit(1);
});

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (!(e instanceof CommanderError)) report(new Printer(process.argv.includes('--json')), e);
  else {
    process.exitCode = e.exitCode === 0 ? 0 : 2;
    // `parley group` without a subcommand: commander shows the help (stderr) as the error; a script gets its error line.
    if (e.code === 'commander.help' && e.exitCode !== 0 && process.argv.includes('--json'))
      new Printer(true).error('usage', 'give a subcommand (see the help)');
  }
}
finished = true;
