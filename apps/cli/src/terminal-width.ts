const graphemes = new Intl.Segmenter(undefined, { granularity: 'grapheme' });

/** What takes no column of its own: combining marks, format characters (joiners, direction marks), ignorables. */
const ZERO_WIDTH = /^[\p{M}\p{Cf}\p{Default_Ignorable_Code_Point}]*$/u;
/**
 * What takes two columns: East Asian wide and full-width characters (CJK ideographs, kana, Hangul syllables, full-width
 * forms) and emoji shown as emoji (by default, or asked for with U+FE0F).
 */
const WIDE =
  /[\u1100-\u115f\u2e80-\u303e\u3041-\u33ff\u3400-\u4dbf\u4e00-\u9fff\ua000-\ua4cf\ua960-\ua97f\uac00-\ud7a3\uf900-\ufaff\ufe10-\ufe19\ufe30-\ufe6f\uff00-\uff60\uffe0-\uffe6\u{1f200}-\u{1f2ff}\u{20000}-\u{3fffd}]|\p{Emoji_Presentation}|\ufe0f/u;

/**
 * How many columns a line of text takes on a terminal, counted by what a person sees (a character and its accents are
 * one; a family emoji of several code points is two), as terminals draw it.
 */
export function terminalWidth(text: string): number {
  let width = 0;
  for (const { segment } of graphemes.segment(text)) {
    if (ZERO_WIDTH.test(segment)) continue;
    width += WIDE.test(segment) ? 2 : 1;
  }
  return width;
}

/** `text` cut to `columns` columns at most, by whole characters, with `…` where it was cut (`…` alone when nothing fits). */
export function shortened(text: string, columns: number): string {
  if (terminalWidth(text) <= columns) return text;
  let out = '';
  let width = 0;
  for (const { segment } of graphemes.segment(text)) {
    const w = terminalWidth(segment);
    if (width + w + 1 > columns) break;
    out += segment;
    width += w;
  }
  return `${out}…`;
}
