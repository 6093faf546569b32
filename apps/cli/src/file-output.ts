import { formatBytes, type FileEvent, type FileOffer, type FileRecipientState, type FilesEvent } from '#libs/protocol';
import { displayLabel } from './output.js';

/** `notes.txt (1.2 KiB)` */
export function fileLabel(offer: FileOffer): string {
  return `${offer.name} (${formatBytes(offer.size)})`;
}

/**
 * What withdrawing one of my offers did: `withdrew notes.txt (10 B)`, naming those who had received it already (they
 * keep it); when every receiver had received or declined it, nothing was left to withdraw, and that is what it says.
 */
export function withdrewText(offer: FileOffer): string {
  const states = Object.entries(offer.recipients);
  if (!states.some(([, s]) => s === 'withdrawn')) return `nothing to withdraw: every receiver of ${fileLabel(offer)} has received or declined it`;
  const had = states.filter(([, s]) => s === 'received').map(([u]) => u);
  return had.length === 0 ? `withdrew ${fileLabel(offer)}` : `withdrew ${fileLabel(offer)} (${had.join(', ')} had received it already)`;
}

function receiversText(offer: FileOffer, me: string): string {
  return offer.group
    ? `[${displayLabel(offer.group.name)}]`
    : Object.keys(offer.recipients)
        .map((r) => (r === me ? 'you' : r))
        .join(', ');
}

/** One line of `parley file list`: incoming offers with my state, mine with each receiver's. */
export function offerLine(offer: FileOffer, me: string): string {
  if (offer.from === me) {
    const states = Object.entries(offer.recipients)
      .map(([u, s]) => `${u}: ${s}`)
      .join(', ');
    const upload = offer.uploaded < offer.chunks ? `, uploaded ${offer.uploaded}/${offer.chunks} chunks` : '';
    return `${offer.id}  you → ${receiversText(offer, me)}  ${fileLabel(offer)}  ${states}${upload}`;
  }
  const via = offer.group ? ` [${displayLabel(offer.group.name)}]` : '';
  return `${offer.id}  ${offer.from}${via} → you  ${fileLabel(offer)}  ${offer.recipients[me] ?? '?'}`;
}

/** How an incoming offer is announced: sender, name and size, and what to do. */
export function offeredLine(offer: FileOffer, how: { accept: string; decline: string }): string {
  const via = offer.group ? ` in [${displayLabel(offer.group.name)}]` : '';
  return `* ${offer.from}${via} offers ${fileLabel(offer)} — ${how.accept} ${offer.id} or ${how.decline} ${offer.id}`;
}

/** What a session may do to a file offer itself. */
export type OwnAction = 'accepted' | 'declined' | 'received' | 'withdrawn';

/** Tells the server which receivers' decisions on an offer of mine have been shown (`file.seen`). */
export type SeenReporter = (offer: string, states: Record<string, FileRecipientState>) => void;

/**
 * Turns file events and the `files` sync into lines, each once per session:
 * offers made to me (while I still have to decide), decisions on mine, and
 * what I did on another device (accepted, declined, received, withdrew) —
 * not what this session did itself (`doing`): its command printed that.
 * A decision is shown once, ever: the sync skips those the server says I
 * have seen, and each one shown is reported as seen. An offer still waiting
 * for my decision is shown again in each new session, as a reminder, and so
 * is one I accepted and have not received yet (a download cut short).
 */
export class FileNotices {
  /** What this session has printed: offers and decisions, by key. */
  private readonly shown = new Set<string>();

  constructor(
    private readonly me: string,
    private readonly how: { accept: string; decline: string },
    private readonly report: SeenReporter = () => undefined,
  ) {}

  /** The lines to print for an event (none when it was printed before, or is my own doing). */
  linesFor(e: FileEvent | FilesEvent): string[] {
    if (e.type === 'files') return e.offers.flatMap((o) => this.offerLines(o));
    if (e.event === 'offered') return this.offerLines(e.offer);
    if (e.event === 'withdrawn') {
      if (!this.once(`${e.offer.id}:withdrawn`)) return [];
      return [`* ${e.offer.from === this.me ? 'you' : e.offer.from} withdrew ${fileLabel(e.offer)}`];
    }
    if (e.user === this.me) return this.once(`${e.offer.id}:${e.user}:${e.event}`) ? [`* you ${e.event} ${fileLabel(e.offer)} from ${e.offer.from}`] : [];
    if (e.user === undefined || e.offer.from !== this.me) return [];
    return this.decisionLines(e.offer, [[e.user, e.event]]);
  }

  /**
   * This session is about to do `what` to an offer itself, and prints its own line for it: the event the server
   * sends every device of mine about it is not news here. Called before the request, as the event may come first.
   */
  doing(offerId: string, what: OwnAction): void {
    this.shown.add(this.ownKey(offerId, what));
  }

  /** What this session set out to do failed: should it be done elsewhere, that is news here again. */
  undoing(offerId: string, what: OwnAction): void {
    this.shown.delete(this.ownKey(offerId, what));
  }

  private ownKey(offerId: string, what: OwnAction): string {
    return what === 'withdrawn' ? `${offerId}:withdrawn` : `${offerId}:${this.me}:${what}`;
  }

  private offerLines(offer: FileOffer): string[] {
    if (offer.from === this.me) {
      const news = Object.entries(offer.recipients).filter(([u, s]) => s !== 'pending' && s !== 'withdrawn' && offer.seen?.[u] !== s);
      return this.decisionLines(offer, news);
    }
    const mine = offer.recipients[this.me];
    // Accepted and not received (in the sync): a download cut short, here or on another device, or running there.
    // Shown once a session as a reminder too, unless this session took it on itself.
    if (mine === 'accepted') {
      if (this.shown.has(this.ownKey(offer.id, 'accepted')) || !this.once(`${offer.id}:unfinished`)) return [];
      return [`* ${fileLabel(offer)} from ${offer.from} is accepted but not yet received — ${this.how.accept} ${offer.id} downloads it here`];
    }
    if (mine !== 'pending' || !this.once(`${offer.id}:offered`)) return [];
    return [offeredLine(offer, this.how)];
  }

  private decisionLines(offer: FileOffer, decisions: [string, FileRecipientState][]): string[] {
    const shown = decisions.filter(([u, s]) => this.once(`${offer.id}:${u}:${s}`));
    if (shown.length > 0) this.report(offer.id, Object.fromEntries(shown));
    return shown.map(([u, s]) => `* ${u} ${s} ${fileLabel(offer)}`);
  }

  private once(key: string): boolean {
    if (this.shown.has(key)) return false;
    this.shown.add(key);
    return true;
  }
}
