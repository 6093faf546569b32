import { z } from 'zod';
import { ErrorReply, InboxEvent, OkReply, PresenceEvent, RESULT_SCHEMAS, type RequestOp, type ResultOf } from './payloads.js';

/**
 * Reading what a server sends, as a client: the payload schemas describe it
 * exactly, and the server is held to them (its tests parse what it sends with
 * them, strictly). A client must not be: a newer server may add a field to an
 * event or a result, and an older client that rejected the whole payload for it
 * would drop a message, or wait out the timeout of a request that was answered.
 * So a client reads with the same schemas loosened: a field it does not know
 * is left out, one it needs must still be there and of its type.
 */
export function lenient<T extends z.ZodType>(schema: T): z.ZodType<z.output<T>> {
  return loosen(schema) as z.ZodType<z.output<T>>;
}

/** Schemas with nothing inside them that could gain a field. */
const LEAVES = new Set(['string', 'number', 'int', 'boolean', 'bigint', 'enum', 'literal', 'null', 'undefined', 'unknown', 'any', 'date', 'nan']);

function loosen(schema: z.ZodType): z.ZodType {
  const def = (schema as unknown as { _zod: { def: SchemaDef } })._zod.def;
  if (LEAVES.has(def.type)) return schema;
  // A rebuilt composite would lose its refinements without a word: a payload that has one needs thought here first.
  if (def.checks !== undefined && def.checks.length > 0) throw new Error(`lenient: a ${def.type} with refinements cannot be loosened as it is`);
  switch (def.type) {
    case 'object':
      return z.object(Object.fromEntries(Object.entries(def.shape!).map(([key, field]) => [key, loosen(field)])));
    case 'array':
      return z.array(loosen(def.element!));
    case 'optional':
      return loosen(def.innerType!).optional();
    case 'nullable':
      return loosen(def.innerType!).nullable();
    case 'record':
      return z.record(def.keyType as z.ZodString, loosen(def.valueType!));
    case 'union': {
      const options = def.options!.map(loosen);
      // A plain union of loosened objects could match the wrong one (every field it needs is there, the rest dropped):
      // only discriminated unions, and unions whose options differ in a literal (the inbox events' `type`), are loosened.
      return def.discriminator !== undefined
        ? z.discriminatedUnion(def.discriminator, options as [z.ZodObject, ...z.ZodObject[]])
        : z.union(options as [z.ZodType, ...z.ZodType[]]);
    }
    default:
      // A pipe, lazy, tuple, intersection… might hide a strict object: loosening it needs a case above.
      throw new Error(`lenient: no way to loosen a ${def.type} schema`);
  }
}

interface SchemaDef {
  type: string;
  shape?: Record<string, z.ZodType>;
  element?: z.ZodType;
  innerType?: z.ZodType;
  keyType?: z.ZodType;
  valueType?: z.ZodType;
  options?: z.ZodType[];
  discriminator?: string;
  checks?: unknown[];
}

const LENIENT_RESULTS = Object.fromEntries(Object.entries(RESULT_SCHEMAS).map(([op, schema]) => [op, lenient(schema)])) as {
  [Op in RequestOp]: z.ZodType<ResultOf[Op]>;
};

/**
 * A reply as a client reads it: the result is left unread (the union of every result could match the wrong one once
 * loosened) until `readResult` reads it for the op the client asked; an error's code may be one this client does not
 * know yet (it is shown with its message).
 */
const ClientReply = z.union([
  z.object({ ...OkReply.shape, result: z.unknown() }),
  z.object({ ...ErrorReply.shape, error: z.object({ code: z.string(), message: z.string() }) }),
]);
const ClientInboxEvent = z.union([ClientReply, ...(InboxEvent.options.filter((o) => o !== OkReply && o !== ErrorReply).map(lenient) as z.ZodType[])]);

/** What an inbox brings besides replies. */
export type ServerEvent = Exclude<InboxEvent, OkReply | ErrorReply>;
export type ClientEvent = ServerEvent | z.output<typeof ClientReply>;

/** An inbox payload (parsed JSON) as a client reads it, or undefined when it is none this client knows. */
export function readInboxEvent(raw: unknown): ClientEvent | undefined {
  const parsed = ClientInboxEvent.safeParse(raw);
  return parsed.success ? (parsed.data as ClientEvent) : undefined;
}

const ClientPresenceEvent = lenient(PresenceEvent);

/** A presence payload as a client reads it, or undefined. */
export function readPresenceEvent(raw: unknown): PresenceEvent | undefined {
  const parsed = ClientPresenceEvent.safeParse(raw);
  return parsed.success ? parsed.data : undefined;
}

/** A reply's result read for the op that was asked; throws when it is not that op's result. */
export function readResult<Op extends RequestOp>(op: Op, result: unknown): ResultOf[Op] {
  const parsed = LENIENT_RESULTS[op].safeParse(result);
  if (!parsed.success)
    throw new Error(`the server's answer to ${op} is not one this version of parley understands: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
  return parsed.data;
}
