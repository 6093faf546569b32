import { OfferId } from '#libs/protocol';
/** What a line typed in `parley chat` asks for. */
export type ChatCommand =
  | { kind: 'direct'; to: string; text: string }
  | { kind: 'group'; group: string; text: string }
  | { kind: 'reply'; text: string }
  | { kind: 'info'; group: string; seq?: number }
  | { kind: 'who'; user: string }
  | { kind: 'file'; to: string; path: string }
  | { kind: 'accept'; offer: string }
  | { kind: 'decline'; offer: string }
  | { kind: 'cancel'; offer: string }
  | { kind: 'help' }
  | { kind: 'quit' }
  | { kind: 'nothing' }
  | { kind: 'invalid'; message: string };

/** /help, each line narrower than 80 columns (a longer one would wrap mid-word on a common terminal). */
export const CHAT_HELP = [
  '/msg USER [text]    send a message to USER; plain text goes to USER from now on',
  '/g GROUP [text]     send a message to a group (its id, its name, or "a name',
  '                    with spaces"); plain text goes there from now on',
  '/info GROUP [SEQ]   who has received and read message SEQ of a group (without',
  '                    SEQ: your latest message there)',
  '/who USER           whether USER is online, or when last seen',
  '/file USER PATH     offer a file to USER (uploaded now; they accept or decline)',
  '/accept ID          accept an offered file (saved in the current directory)',
  '/decline ID         decline a file offered to you',
  '/cancel ID          withdraw a file you offered (its receivers are told)',
  'text                send to the conversation the prompt names (until you choose',
  '                    one: the newest to write to you)',
  '//text              the same, with text that starts with a slash ("/text")',
  '/help               this list',
  '/quit               leave (Ctrl-D too; Ctrl-C clears a typed line, and leaves',
  '                    on an empty one)',
];

/** Splits off the first word — or a "quoted name with spaces" — and returns it with the rest. */
function firstWord(s: string): [string, string] {
  const quoted = /^"([^"]+)"\s*([\s\S]*)$/.exec(s);
  if (quoted) return [quoted[1]!, quoted[2]!];
  const m = /^(\S+)\s*([\s\S]*)$/.exec(s);
  return m ? [m[1]!, m[2]!] : ['', ''];
}

const QUOTED_NAME = 'a group name with spaces goes in quotes, as in';

/**
 * What to add to a refusal of `/g GROUP text` whose group the server does not know: a name typed without quotes is its
 * first word only (`/g lunch club hi` names "lunch"), so a name with spaces may be why. Empty when that cannot be it.
 */
export function unknownGroupHint(group: string, text: string): string {
  const [next] = firstWord(text);
  return /\s/.test(group) || !next ? '' : `; ${QUOTED_NAME} /g "${group} ${next}" …`;
}

export function parseChatLine(line: string): ChatCommand {
  const trimmed = line.trim();
  if (trimmed === '') return { kind: 'nothing' };
  if (!trimmed.startsWith('/')) return { kind: 'reply', text: trimmed };
  // A doubled slash is a reply whose text starts with one (`//etc/hosts is the file` sends "/etc/hosts is the file").
  if (trimmed.startsWith('//')) return { kind: 'reply', text: trimmed.slice(1) };
  const [command, rest] = firstWord(trimmed);
  switch (command) {
    case '/msg':
    case '/m': {
      const [to, text] = firstWord(rest);
      if (!to) return { kind: 'invalid', message: 'usage: /msg USER [text]' };
      return { kind: 'direct', to: to.toLowerCase(), text: text.trim() };
    }
    case '/g': {
      const [group, text] = firstWord(rest);
      if (!group) return { kind: 'invalid', message: 'usage: /g GROUP [text]' };
      return { kind: 'group', group, text: text.trim() };
    }
    case '/info': {
      const [group, seqText] = firstWord(rest);
      // Without a SEQ: the latest of your messages in the group (chat shows no seqs).
      if (group && seqText.trim() === '') return { kind: 'info', group };
      const seq = Number(seqText.trim());
      // `/info lunch club 6`: a name with spaces, not in quotes, leaves words before the number.
      const spaced = /\S\s+\d+$/.test(seqText.trim()) ? ` (${QUOTED_NAME} /info "lunch club" 6)` : '';
      if (!group || !Number.isInteger(seq) || seq < 1) return { kind: 'invalid', message: `usage: /info GROUP [SEQ]${spaced}` };
      return { kind: 'info', group, seq };
    }
    case '/who': {
      const [user] = firstWord(rest);
      return user ? { kind: 'who', user: user.toLowerCase() } : { kind: 'invalid', message: 'usage: /who USER' };
    }
    case '/file': {
      const [to, path] = firstWord(rest);
      const clean = path.trim().replace(/^"(.*)"$/, '$1');
      if (!to || !clean) return { kind: 'invalid', message: 'usage: /file USER PATH' };
      return { kind: 'file', to: to.toLowerCase(), path: clean };
    }
    case '/accept':
    case '/decline':
    case '/cancel': {
      const [offer] = firstWord(rest);
      if (!offer) return { kind: 'invalid', message: `usage: ${command} ID` };
      if (!OfferId.safeParse(offer).success)
        return { kind: 'invalid', message: `"${offer}" is no file offer id (an id starts with f, as in the line that showed the offer)` };
      return { kind: command === '/accept' ? 'accept' : command === '/decline' ? 'decline' : 'cancel', offer };
    }
    case '/help':
    case '/?':
      return { kind: 'help' };
    case '/quit':
    case '/exit':
    case '/q':
      return { kind: 'quit' };
    default:
      return { kind: 'invalid', message: `unknown command ${command}; /help lists them` };
  }
}
