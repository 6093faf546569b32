import { describe, expect, it } from 'vitest';
import { terminalWidth } from './terminal-width.js';

describe('terminalWidth', () => {
  it('counts the columns a terminal draws, not UTF-16 code units', () => {
    expect(terminalWidth('message A ✓✓')).toBe(12);
    // CJK ideographs and Hangul take two columns each.
    expect(terminalWidth('漢字')).toBe(4);
    expect(terminalWidth('한국어')).toBe(6);
    // A letter and its combining accent are one; so is a direction mark nothing.
    expect(terminalWidth('cafe\u0301')).toBe(4);
    expect(terminalWidth('a\u200fb')).toBe(2);
    // Emoji are two, however many code points they are made of.
    expect(terminalWidth('👍')).toBe(2);
    expect(terminalWidth('👨‍👩‍👧')).toBe(2);
    expect(terminalWidth('🇫🇷')).toBe(2);
    // A symbol with a text form is one, unless asked to be shown as emoji.
    expect(terminalWidth('©')).toBe(1);
    expect(terminalWidth('❤\ufe0f')).toBe(2);
  });
});
