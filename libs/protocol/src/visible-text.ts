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

/**
 * What shows as nothing, as `VISIBLE` has it, but for combining marks (which change the letter they sit on): format
 * characters, code points Unicode says to show as nothing (zero-width space and joiners, soft hyphen, word joiner,
 * Hangul fillers…), and the blank Braille cell.
 */
const SHOWN_AS_NOTHING = /[\p{Cf}\p{Default_Ignorable_Code_Point}\u2800]/gu;

/**
 * How a name looks, to tell whether two names can be told apart on screen: composed (NFC), without what shows as
 * nothing, each run of white space (a no-break space, two spaces) as one space, and none at its ends. `Team` and `Team`
 * followed by a zero-width space are one name to a person, and so are `lunch crew` and `lunch` no-break space `crew`.
 */
export function nameLooks(name: string): string {
  return name.normalize('NFC').replace(SHOWN_AS_NOTHING, '').replace(/\s+/gu, ' ').trim();
}
