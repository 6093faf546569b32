/**
 * A character that shows something on its own: not white space, a control, a format character (zero-width space,
 * joiners, direction marks), a combining mark (an accent with nothing under it), a code point Unicode says to show as
 * nothing (variation selectors, the Hangul fillers U+115F, U+1160, U+3164, U+FFA0, the grapheme joiner), the blank
 * Braille cell U+2800, which renders as a blank, nor a noncharacter (U+FFFF, U+FDD0…U+FDEF: code points Unicode keeps
 * out of text, which fonts draw as nothing or a box).
 */
const VISIBLE = /[^\s\p{Cc}\p{Cf}\p{M}\p{Default_Ignorable_Code_Point}\p{Noncharacter_Code_Point}\u2800]/u;

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
 * Letters of other scripts drawn as a Latin letter in common fonts (`LOOKALIKES_FROM`, Cyrillic then Greek), and that
 * letter (`LOOKALIKES_TO`, at the same place): those Unicode's confusables data (UTS #39) gives a single Latin letter
 * for. Only letters of other scripts: Latin ones that a font may draw alike (`l`, `I`, `1`) are told apart by people
 * who type them.
 */
const LOOKALIKES_FROM = 'АВЕКМНОРСТХУҮЅІЈԚԜӀаеорсуүхѕіјԁһԛԝӏ' + 'ΑΒΕΖΗΙΚΜΝΟΡΤΥΧοναρυϲϳι';
const LOOKALIKES_TO = 'ABEKMHOPCTXYYSIJQWIaeopcyyxsijdhqwl' + 'ABEZHIKMNOPTYXovapucji';
const LOOKALIKE = new RegExp(`[${LOOKALIKES_FROM}]`, 'gu');
/** Full-width forms of ASCII (U+FF01–U+FF5E), as East Asian input methods type them: the same letters, drawn wider. */
const FULL_WIDTH = /[\uff01-\uff5e]/gu;

/**
 * How a name looks, to tell whether two names can be told apart on screen: composed (NFC), without what shows as
 * nothing, each run of white space (a no-break space, two spaces) as one space, and none at its ends, and each letter of
 * another script that is drawn as a Latin one (Cyrillic `а`, Greek `Ο`), or a full-width one, as that letter. `Team`
 * and `Team` followed by a zero-width space are one name to a person, and so are `lunch crew` and `lunch` no-break
 * space `crew`, and `Team` and `Тeаm` (with a Cyrillic Т and а). Names of one script that only share some letters with Latin
 * (`Сад`) stay apart from every Latin name.
 */
export function nameLooks(name: string): string {
  return name
    .normalize('NFC')
    .replace(SHOWN_AS_NOTHING, '')
    .replace(LOOKALIKE, (c) => LOOKALIKES_TO[LOOKALIKES_FROM.indexOf(c)]!)
    .replace(FULL_WIDTH, (c) => String.fromCharCode(c.charCodeAt(0) - 0xfee0))
    .replace(/\s+/gu, ' ')
    .trim();
}
