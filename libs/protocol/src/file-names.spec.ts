import { describe, expect, it } from 'vitest';
import { isSafeContentType, isSafeFileName, MAX_FILE_NAME_BYTES, numberedFileName, sanitizeFileName } from './file-names.js';

describe('sanitizeFileName', () => {
  it('keeps ordinary names as they are', () => {
    for (const name of ['notes.txt', 'Photo 2026-11-24.jpeg', 'résumé.pdf', 'a.b.tar.gz', '日本語.md']) {
      expect(sanitizeFileName(name)).toBe(name);
      expect(isSafeFileName(name)).toBe(true);
    }
  });

  it('removes every path separator, so a name never leaves the chosen directory', () => {
    expect(sanitizeFileName('../../etc/passwd')).toBe('____etc_passwd');
    expect(sanitizeFileName('..\\..\\boot.ini')).toBe('____boot.ini');
    expect(sanitizeFileName('/abs/path.txt')).toBe('_abs_path.txt');
    expect(isSafeFileName('../x')).toBe(false);
    expect(isSafeFileName('a/b')).toBe(false);
  });

  it('keeps the extension after a run of dots: `report..pdf` is still a PDF', () => {
    expect(sanitizeFileName('report..pdf')).toBe('report_.pdf');
    expect(sanitizeFileName('wait...txt')).toBe('wait_.txt');
    expect(sanitizeFileName('Wait... what.txt')).toBe('Wait_ what.txt');
    expect(isSafeFileName('report_.pdf')).toBe(true);
    expect(isSafeFileName('report..pdf')).toBe(false);
  });

  it('never yields ., .. or a hidden name', () => {
    expect(sanitizeFileName('..')).toBe('_');
    expect(sanitizeFileName('a..b')).toBe('a_.b');
    expect(sanitizeFileName('a..b.c')).toBe('a_b.c');
    expect(sanitizeFileName('a..')).toBe('a_');
    expect(sanitizeFileName('.')).toBe('_');
    expect(sanitizeFileName('.bashrc')).toBe('_bashrc');
    expect(isSafeFileName('..')).toBe(false);
  });

  it('makes a name of nothing a person could see (zero-width spaces, a blank Braille cell) `file`, as group names and messages need visible text', () => {
    for (const name of ['\u200b', '\u200b\u200c\u200d', '\u2800', '\u3164', '\u00ad\ufe0f', '\uffff', '\ufdd0\u{10fffe}'])
      expect([sanitizeFileName(name), isSafeFileName(name)], JSON.stringify(name)).toEqual(['file', false]);
    // Invisible characters next to visible ones are the name's own business.
    expect(isSafeFileName('a\u200bb.txt')).toBe(true);
  });

  it('drops control characters (terminal escapes, NUL, newlines)', () => {
    expect(sanitizeFileName('evil\u001b[31m.txt')).toBe('evil[31m.txt');
    expect(sanitizeFileName('a\u0000b\nc.txt')).toBe('abc.txt');
    expect(isSafeFileName('a\tb')).toBe(false);
  });

  it('drops bidirectional overrides and isolates, which make a name display as another (invoice, U+202E, gpj.exe shows as invoiceexe.jpg)', () => {
    expect(sanitizeFileName('invoice\u202egpj.exe')).toBe('invoicegpj.exe');
    for (const c of ['\u202a', '\u202b', '\u202c', '\u202d', '\u202e', '\u2066', '\u2067', '\u2068', '\u2069']) {
      expect(isSafeFileName(`a${c}b.txt`), JSON.stringify(c)).toBe(false);
      expect(sanitizeFileName(`a${c}b.txt`)).toBe('ab.txt');
    }
    // Right-to-left text itself is a name like any other.
    expect(isSafeFileName('מסמך.pdf')).toBe(true);
  });

  it('tells whether a content type is free of control characters and bidirectional controls', () => {
    for (const type of ['text/plain', 'text/html; charset=utf-8', 'application/vnd.ms-excel']) expect(isSafeContentType(type), type).toBe(true);
    for (const type of ['text/html\u001b[31m', 'text/plain\n', 'a\u0000b', 'text/\u009bx', 'text/plain\u202e', 'text/\ud800', 'x\udc00'])
      expect(isSafeContentType(type), type).toBe(false);
  });

  it('names an empty result "file"', () => {
    expect(sanitizeFileName('')).toBe('file');
    expect(sanitizeFileName('\u0001\u0002')).toBe('file');
    expect(sanitizeFileName('   ')).toBe('file');
  });

  it('shortens over-long names to fit file systems, keeping the extension', () => {
    const long = `${'x'.repeat(400)}.txt`;
    const clean = sanitizeFileName(long);
    expect(Buffer.byteLength(clean)).toBeLessThanOrEqual(MAX_FILE_NAME_BYTES);
    expect(clean.endsWith('.txt')).toBe(true);
    const wide = sanitizeFileName('é'.repeat(300));
    expect(Buffer.byteLength(wide)).toBeLessThanOrEqual(MAX_FILE_NAME_BYTES);
  });
});

describe('numberedFileName', () => {
  it('numbers before the extension', () => {
    expect(numberedFileName('notes.txt', 1)).toBe('notes (1).txt');
    expect(numberedFileName('archive.tar.gz', 2)).toBe('archive.tar (2).gz');
    expect(numberedFileName('README', 3)).toBe('README (3)');
  });

  it('shortens the stem of a name at the byte limit so that the numbered name fits too, keeping the extension', () => {
    const long = `${'L'.repeat(251)}.txt`;
    expect(isSafeFileName(long)).toBe(true);
    const first = numberedFileName(long, 1);
    expect(first).toBe(`${'L'.repeat(247)} (1).txt`);
    expect(Buffer.byteLength(first)).toBe(MAX_FILE_NAME_BYTES);
    expect(Buffer.byteLength(numberedFileName(long, 9999))).toBe(MAX_FILE_NAME_BYTES);
    expect(numberedFileName(long, 9999).endsWith(' (9999).txt')).toBe(true);
  });

  it('cuts by bytes between characters, never inside one', () => {
    // 2-, 3- and 4-byte characters: whatever the cut, the result is whole characters only.
    for (const char of ['é', '日', '😀']) {
      for (let pad = 0; pad < 4; pad++) {
        const stem = 'x'.repeat(pad) + char.repeat(Math.floor((MAX_FILE_NAME_BYTES - 4 - pad) / Buffer.byteLength(char)));
        const name = `${stem}.txt`;
        const numbered = numberedFileName(name, 12);
        expect(Buffer.byteLength(numbered), numbered).toBeLessThanOrEqual(MAX_FILE_NAME_BYTES);
        expect(numbered).not.toContain('\ufffd');
        expect(numbered.endsWith(' (12).txt')).toBe(true);
        expect(stem.startsWith(numbered.slice(0, -' (12).txt'.length))).toBe(true);
      }
    }
  });

  it('gives way at the end of the name when its extension leaves no room for a stem', () => {
    const name = `a.${'e'.repeat(252)}`;
    expect(isSafeFileName(name)).toBe(true);
    const numbered = numberedFileName(name, 3);
    expect(Buffer.byteLength(numbered)).toBeLessThanOrEqual(MAX_FILE_NAME_BYTES);
    expect(numbered.startsWith('a.eee')).toBe(true);
    expect(numbered.endsWith(' (3)')).toBe(true);
  });
});
