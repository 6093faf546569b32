/**
 * A character that shows something on its own: not white space, a control, a format character (zero-width space,
 * joiners, direction marks), a combining mark (an accent with nothing under it), a code point Unicode says to show as
 * nothing (variation selectors, the Hangul fillers U+115F, U+1160, U+3164, U+FFA0, the grapheme joiner), nor the blank
 * Braille cell U+2800, which renders as a blank.
 */
const VISIBLE = /[^\s\p{Cc}\p{Cf}\p{M}\p{Default_Ignorable_Code_Point}\u2800]/u;

/** Whether a string has anything a person could see: what a message, a group name and a file name each need. */
export function hasVisibleText(text: string): boolean {
  return VISIBLE.test(text);
}
