import { Logger } from '@nestjs/common';
import type { FileOfferApi, FileOutcome, OfferTarget } from '#libs/file-offer';
import type { GroupApi } from '#libs/group';
import { DomainError, topics, type FileOfferRequest, type OkReply, type Request } from '#libs/protocol';
import { LogThrottle } from '#libs/runtime';
import { noteRelay, type InboxPublisher, type RelayNote } from './inbox-publisher.js';

export type FileRequest = Extract<Request, { op: `file.${string}` }>;

/**
 * The `file.*` requests: resolves whom an offer goes to (a user, or the other
 * members of one of the caller's groups), calls the file-offer service, and
 * publishes what it asks to (the offer to its receivers once uploaded, each
 * decision to the sender) before the reply goes out.
 */
export class FileRequests {
  private readonly logger = new Logger('FileRequests');
  /** Failures to record an announcement come together when the file-offer service is away: one line per 10 s says so. */
  private readonly failureLog = new LogThrottle(10_000, undefined, 1, (error, n) =>
    this.logger.warn({ event: 'log_left_out', of: 'announcement_not_recorded', error, alikeLeftOut: n }),
  );

  constructor(
    private readonly files: FileOfferApi,
    private readonly groups: GroupApi,
    private readonly inbox: InboxPublisher,
  ) {}

  /** Carries out a request; the relay of what it publishes is noted in `note`, for its answer to wait for. */
  async execute(user: string, req: FileRequest, note: RelayNote): Promise<OkReply['result']> {
    switch (req.op) {
      case 'file.offer':
        return this.published(
          note,
          this.files.offer(user, req.id, await this.targetOf(user, req), { name: req.name, size: req.size, type: req.type, sha256: req.sha256 }),
        );
      case 'file.chunk':
        return this.published(note, this.files.putChunk(user, req.offer, req.index, req.data));
      case 'file.accept':
        return this.published(note, this.files.accept(user, req.offer));
      case 'file.decline':
        return this.published(note, this.files.decline(user, req.offer));
      case 'file.received':
        return this.published(note, this.files.confirm(user, req.offer));
      case 'file.cancel':
        return this.published(note, this.files.cancel(user, req.offer));
      case 'file.seen':
        return this.published(note, this.files.seen(user, req.offer, req.states));
      case 'file.fetch':
        return this.files.fetch(user, req.offer, req.index);
      case 'file.list':
        return { offers: await this.files.list(user) };
    }
  }

  private async targetOf(user: string, req: FileOfferRequest): Promise<OfferTarget> {
    if ((req.to === undefined) === (req.group === undefined)) throw new DomainError('bad_request', 'give exactly one of "to" and "group"');
    if (req.to !== undefined) return { to: req.to };
    const group = await this.groups.info(user, req.group!);
    return { group: { id: group.id, name: group.name }, members: group.members };
  }

  private async published<R>(note: RelayNote, pending: Promise<FileOutcome<R>>): Promise<R> {
    const { result, notify, announces } = await pending;
    if (!notify) return result;
    const relayed = this.inbox.publishToAll(
      [...new Set(notify.to)].map((u) => topics.inbox(u)),
      notify.event,
    );
    // Once the announcement has left this gateway (standalone: at once), the last chunk sent again need not announce it
    // again; a relay that failed leaves that to the sender's next try. It is recorded before the answer goes: a repeat
    // sent after the answer (a retry, `file send` again) then finds it, where one that overtook the record announced the
    // offer a second time to receivers that had it. Should recording it fail, the offer may be announced once more. The
    // wait is the answer's own (RELAY_WAIT_MS): a Redis that never answers held this answer, and every later one of the
    // connection, for good; past it the relay is not known to have left, and nothing is recorded.
    const left = announces !== undefined && relayed ? relayed.catch(() => false) : relayed;
    noteRelay(note, left);
    if (announces !== undefined && (await (left ?? true))) await this.files.announced(announces).catch((e: unknown) => this.recordFailed(e));
    return result;
  }

  /** The offer may be announced once more (its last chunk again): said, not thrown, as the upload itself is done. */
  private recordFailed(e: unknown): void {
    const error = String(e);
    const fields = this.failureLog.logFields(error);
    if (fields) this.logger.warn({ event: 'announcement_not_recorded', error, ...fields });
  }
}
