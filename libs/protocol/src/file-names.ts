/** The longest file name, in UTF-8 bytes, that common file systems accept. */
export const MAX_FILE_NAME_BYTES = 255;

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/g;
const SEPARATORS = /[/\\]/g;

/**
 * A file name safe to create in a directory of the receiver's choosing: no
 * path separator (`/`, `\`), no control character, no `..` anywhere, never
 * empty, no leading dot (no hidden files), at most 255 UTF-8 bytes
 * (the extension kept). What cannot be kept becomes `_`; a name with nothing
 * left is `file`.
 */
export function sanitizeFileName(name: string): string {
  let clean = name
    .normalize('NFC')
    .replace(CONTROL, '')
    .replace(SEPARATORS, '_')
    .replace(/\.{2,}/g, '_')
    .trim();
  clean = clean.replace(/^\./, '_');
  if (clean === '') clean = 'file';
  if (Buffer.byteLength(clean) > MAX_FILE_NAME_BYTES) clean = truncateKeepingExtension(clean);
  return clean;
}

/** True when a name needs no change to be safe (what the server asks of every offered name). */
export function isSafeFileName(name: string): boolean {
  return name.length > 0 && sanitizeFileName(name) === name;
}

/** `notes.txt` → `notes (1).txt`, `notes (2).txt`, …; `archive` → `archive (1)`. */
export function numberedFileName(name: string, n: number): string {
  const dot = name.lastIndexOf('.');
  const [stem, ext] = dot > 0 ? [name.slice(0, dot), name.slice(dot)] : [name, ''];
  return `${stem} (${n})${ext}`;
}

function truncateKeepingExtension(name: string): string {
  const dot = name.lastIndexOf('.');
  const ext = dot > 0 && name.length - dot <= 16 ? name.slice(dot) : '';
  let stem = ext ? name.slice(0, dot) : name;
  // Leave room for a " (n)" suffix when the name is taken.
  while (Buffer.byteLength(stem + ext) > MAX_FILE_NAME_BYTES - 8) stem = [...stem].slice(0, -1).join('');
  return stem + ext;
}
