import { hasVisibleText } from './visible-text.js';

/** The longest file name, in UTF-8 bytes, that common file systems accept. */
export const MAX_FILE_NAME_BYTES = 255;

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/g;
/**
 * Bidirectional embeddings and overrides (U+202A–U+202E) and isolates (U+2066–U+2069): they reorder what follows
 * them on screen, so that `invoice\u202egpj.exe` shows as "invoiceexe.jpg".
 */
const BIDI_CONTROL = /[\u202a-\u202e\u2066-\u2069]/g;
const SEPARATORS = /[/\\]/g;
/** Half of a surrogate pair on its own: no character at all (UTF-8 cannot carry it, so it would be stored as U+FFFD). */
const LONE_SURROGATE = /\p{Cs}/gu;
/** Two dots or more, then an extension (letters and digits, up to ten) that ends the name. */
const DOTS_BEFORE_EXTENSION = /\.{2,}(?=[\p{L}\p{N}]{1,10}$)/u;

/**
 * A file name safe to create in a directory of the receiver's choosing and
 * to show: no path separator (`/`, `\`), no control character, no
 * bidirectional override or isolate, no `..` anywhere, never empty, no
 * leading dot (no hidden files), at most 255 UTF-8 bytes (the extension
 * kept), well-formed Unicode in its composed form (NFC), something visible in
 * it. What cannot be kept becomes `_` (separators, `..`), U+FFFD (half of a
 * surrogate pair) or goes (controls), but for a run of dots before the
 * extension, which becomes `_.`; a name with nothing left, or nothing a
 * person could see (only zero-width spaces, say), is `file`.
 */
export function sanitizeFileName(name: string): string {
  let clean = name
    .replace(LONE_SURROGATE, '\ufffd')
    .normalize('NFC')
    .replace(CONTROL, '')
    .replace(BIDI_CONTROL, '')
    .replace(SEPARATORS, '_')
    // A run of dots just before the extension keeps one dot for it: `report..pdf` is `report_.pdf`, still a PDF.
    .replace(DOTS_BEFORE_EXTENSION, '_.')
    .replace(/\.{2,}/g, '_')
    .trim();
  clean = clean.replace(/^\./, '_');
  if (!hasVisibleText(clean)) clean = 'file';
  if (Buffer.byteLength(clean) > MAX_FILE_NAME_BYTES) clean = truncateKeepingExtension(clean);
  return clean;
}

/** True when a name needs no change to be safe (what the server asks of every offered name). */
export function isSafeFileName(name: string): boolean {
  return name.length > 0 && sanitizeFileName(name) === name;
}

/**
 * True when a label holds no control character, no bidirectional control and no half of a surrogate pair: what the
 * server asks of an offer's `type` and of a group's name, which are shown to other people as they are.
 */
export function isPlainLabel(label: string): boolean {
  return label.replace(CONTROL, '').replace(BIDI_CONTROL, '').replace(LONE_SURROGATE, '') === label;
}

/** True when a content type is a plain label (what the server asks of an offer's `type`). */
export function isSafeContentType(type: string): boolean {
  return isPlainLabel(type);
}

/**
 * `notes.txt` → `notes (1).txt`, `notes (2).txt`, …; `archive` → `archive (1)`. Never over 255 UTF-8 bytes: when the
 * number would not fit, the stem gives way (cut between characters, the extension kept), or, when the extension
 * leaves no room for a stem, the end of the name.
 */
export function numberedFileName(name: string, n: number): string {
  const dot = name.lastIndexOf('.');
  const [stem, ext] = dot > 0 ? [name.slice(0, dot), name.slice(dot)] : [name, ''];
  const suffix = ` (${n})`;
  const room = MAX_FILE_NAME_BYTES - Buffer.byteLength(suffix + ext);
  const shortStem = room > 0 ? truncateToBytes(stem, room) : '';
  if (shortStem !== '') return `${shortStem}${suffix}${ext}`;
  return `${truncateToBytes(name, MAX_FILE_NAME_BYTES - Buffer.byteLength(suffix))}${suffix}`;
}

function truncateKeepingExtension(name: string): string {
  const dot = name.lastIndexOf('.');
  const ext = dot > 0 && name.length - dot <= 16 ? name.slice(dot) : '';
  const stem = ext ? name.slice(0, dot) : name;
  // Leave room for a " (n)" suffix when the name is taken.
  return truncateToBytes(stem, MAX_FILE_NAME_BYTES - 8 - Buffer.byteLength(ext)) + ext;
}

/** The longest start of `text` of at most `max` UTF-8 bytes, cut between characters (never inside one). */
function truncateToBytes(text: string, max: number): string {
  const bytes = Buffer.from(text);
  if (bytes.length <= max) return text;
  let cut = Math.max(0, max);
  // A byte 10xxxxxx continues the character before it: the cut goes before that character's first byte.
  while (cut > 0 && (bytes[cut]! & 0xc0) === 0x80) cut--;
  return bytes.subarray(0, cut).toString('utf8');
}
