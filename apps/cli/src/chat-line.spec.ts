import { describe, expect, it } from 'vitest';
import { CHAT_HELP, parseChatLine, unknownGroupHint } from './chat-line.js';
import { terminalWidth } from './terminal-width.js';

describe('parseChatLine', () => {
  it('reads the chat commands', () => {
    expect(parseChatLine('/msg bob hello  there')).toEqual({ kind: 'direct', to: 'bob', text: 'hello  there' });
    expect(parseChatLine('/g class5b see you')).toEqual({ kind: 'group', group: 'class5b', text: 'see you' });
    expect(parseChatLine('/g "class 5b" see you')).toEqual({ kind: 'group', group: 'class 5b', text: 'see you' });
    expect(parseChatLine('/info class5b 12')).toEqual({ kind: 'info', group: 'class5b', seq: 12 });
    // Without a seq: the latest of your messages there.
    expect(parseChatLine('/info class5b')).toEqual({ kind: 'info', group: 'class5b' });
    expect(parseChatLine('/info "class 5b"')).toEqual({ kind: 'info', group: 'class 5b' });
    expect(parseChatLine('/who bob')).toEqual({ kind: 'who', user: 'bob' });
    expect(parseChatLine('  just text ')).toEqual({ kind: 'reply', text: 'just text' });
    // A doubled slash escapes a reply that starts with one; a lone one is still a command.
    expect(parseChatLine('//etc/hosts is the file')).toEqual({ kind: 'reply', text: '/etc/hosts is the file' });
    expect(parseChatLine('//')).toEqual({ kind: 'reply', text: '/' });
    expect(parseChatLine('/file bob ./notes.txt')).toEqual({ kind: 'file', to: 'bob', path: './notes.txt' });
    expect(parseChatLine('/file bob "my notes.txt"')).toEqual({ kind: 'file', to: 'bob', path: 'my notes.txt' });
    expect(parseChatLine('/accept fAbc')).toEqual({ kind: 'accept', offer: 'fAbc' });
    expect(parseChatLine('/decline fAbc')).toEqual({ kind: 'decline', offer: 'fAbc' });
    expect(parseChatLine('/cancel fAbc')).toEqual({ kind: 'cancel', offer: 'fAbc' });
    expect(parseChatLine('/cancel')).toEqual({ kind: 'invalid', message: 'usage: /cancel ID' });
    expect(parseChatLine('/quit')).toEqual({ kind: 'quit' });
    expect(parseChatLine('/help')).toEqual({ kind: 'help' });
    expect(parseChatLine('   ')).toEqual({ kind: 'nothing' });
    // User names are lower case: Bob can only mean bob.
    expect(parseChatLine('/msg Bob Hello')).toEqual({ kind: 'direct', to: 'bob', text: 'Hello' });
    expect(parseChatLine('/who BOB')).toEqual({ kind: 'who', user: 'bob' });
    // A name alone turns plain text to that conversation, sending nothing.
    expect(parseChatLine('/msg bob')).toEqual({ kind: 'direct', to: 'bob', text: '' });
    expect(parseChatLine('/g "team x"')).toEqual({ kind: 'group', group: 'team x', text: '' });
    expect(parseChatLine('/file Bob a.txt')).toEqual({ kind: 'file', to: 'bob', path: 'a.txt' });
  });

  it('hints at quotes when the group of /g is unknown and may be the first word of a name with spaces', () => {
    expect(unknownGroupHint('Lunch', 'crew hello everyone')).toBe('; a group name with spaces goes in quotes, as in /g "Lunch crew" …');
    // Quoted already, or nothing after the name: quotes are not what is missing.
    expect(unknownGroupHint('Lunch crew', 'hello')).toBe('');
    expect(unknownGroupHint('lunch', '')).toBe('');
  });

  it('explains what is wrong with a bad command', () => {
    expect(parseChatLine('/msg')).toMatchObject({ kind: 'invalid', message: 'usage: /msg USER [text]' });
    expect(parseChatLine('/g')).toMatchObject({ kind: 'invalid', message: 'usage: /g GROUP [text]' });
    expect(parseChatLine('/info g x')).toEqual({ kind: 'invalid', message: 'usage: /info GROUP [SEQ]' });
    expect(parseChatLine('/info')).toEqual({ kind: 'invalid', message: 'usage: /info GROUP [SEQ]' });
    // A name with spaces typed without quotes: the words before the number say so.
    expect(parseChatLine('/info lunch club 6')).toEqual({
      kind: 'invalid',
      message: 'usage: /info GROUP [SEQ] (a group name with spaces goes in quotes, as in /info "lunch club" 6)',
    });
    expect(parseChatLine('/file bob')).toMatchObject({ kind: 'invalid', message: 'usage: /file USER PATH' });
    expect(parseChatLine('/accept')).toMatchObject({ kind: 'invalid', message: 'usage: /accept ID' });
    expect(parseChatLine('/decline bad!')).toMatchObject({
      kind: 'invalid',
      message: '"bad!" is no file offer id (an id starts with f, as in the line that showed the offer)',
    });
    expect(parseChatLine('/teleport')).toMatchObject({ kind: 'invalid', message: expect.stringContaining('/help') });
  });
});

describe('CHAT_HELP', () => {
  it('fits an 80-column terminal, so /help never wraps mid-word there', () => {
    for (const line of CHAT_HELP) expect(terminalWidth(line), line).toBeLessThan(80);
  });
});
