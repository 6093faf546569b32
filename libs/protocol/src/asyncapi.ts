import { z } from 'zod';
import { ERROR_CODES } from './errors.js';
import * as P from './payloads.js';
import { TOPIC_ROOT } from './topics.js';

type Json = Record<string, unknown>;

/** A zod schema as a JSON Schema (draft 7, which AsyncAPI schemas extend), without its `$schema` key. */
function schemaOf(schema: z.ZodType): Json {
  const { $schema: _drop, ...rest } = z.toJSONSchema(schema, { target: 'draft-7', unrepresentable: 'any' }) as Json;
  return rest;
}

const REQUESTS: [string, z.ZodType, string][] = [
  ['RegisterRequest', P.RegisterRequest, 'Create an account (anonymous connections only).'],
  [
    'SendRequest',
    P.SendRequest,
    'Send a message to a user (`to`) or a group (`group`). The `id` is the message id: a retry with the same id gets the same answer and stores nothing twice.',
  ],
  ['HistoryRequest', P.HistoryRequest, 'A page of a conversation with a user (`with`) or of a group (`group`).'],
  ['WhoRequest', P.WhoRequest, 'Whether a user is online, or when it was last seen.'],
  ['ReceiptRequest', P.ReceiptRequest, 'Move your own delivered or read cursor in a conversation (forward only).'],
  ['GroupCreateRequest', P.GroupCreateRequest, 'Create a group; you own it.'],
  ['GroupRenameRequest', P.GroupRenameRequest, 'Rename a group (owner only).'],
  ['GroupAddRequest', P.GroupAddRequest, 'Add members (owner only).'],
  ['GroupRemoveRequest', P.GroupRemoveRequest, 'Remove members (owner only).'],
  ['GroupLeaveRequest', P.GroupLeaveRequest, 'Leave a group. An owner who leaves hands it to the longest-standing member; the last member leaving deletes it.'],
  ['GroupOwnerRequest', P.GroupOwnerRequest, 'Hand the group over to another member (owner only).'],
  ['GroupDeleteRequest', P.GroupDeleteRequest, 'Delete a group (owner only).'],
  ['GroupListRequest', P.GroupListRequest, 'The groups you are a member of.'],
  ['GroupMembersRequest', P.GroupMembersRequest, 'A group’s owner and members (members only).'],
  ['InfoRequest', P.InfoRequest, 'Who of a group has received and read message `seq`, and when.'],
  [
    'FileOfferRequest',
    P.FileOfferRequest,
    'Offer a file to a user (`to`) or to the other members of a group (`group`); upload it at once with `file.chunk`. The same `id` again returns the same offer and how far its upload got.',
  ],
  ['FileChunkRequest', P.FileChunkRequest, 'Upload chunk `index` (base64) of your offer; chunks go in order, each is acknowledged by its reply.'],
  ['FileAcceptRequest', P.FileAcceptRequest, 'Accept a file offered to you; then fetch its chunks.'],
  ['FileDeclineRequest', P.FileDeclineRequest, 'Decline a file offered to you; its data is deleted once no receiver needs it.'],
  [
    'FileFetchRequest',
    P.FileFetchRequest,
    'Fetch chunk `index` (base64) of a file you accepted. Its reply goes to the fetching connection only, on its replies topic or its inbox topic (to the inbox as usual when that connection is subscribed to neither, or has gone).',
  ],
  ['FileReceivedRequest', P.FileReceivedRequest, 'Tell the server (and the sender) that you have the whole file and its SHA-256 checks out.'],
  [
    'FileCancelRequest',
    P.FileCancelRequest,
    'Withdraw your offer: its data is deleted, and receivers who had not received or declined it are told (`withdrawn`).',
  ],
  ['FileListRequest', P.FileListRequest, 'The file offers you made, and those made to you that are still open.'],
  [
    'FileSeenRequest',
    P.FileSeenRequest,
    'Say which receivers’ decisions on your offer you have been shown (each receiver’s state as shown), so a later sync no longer presents them as news. A state that is no longer current is ignored.',
  ],
];

const EVENTS: [string, z.ZodType, string][] = [
  ['MessageEvent', P.MessageEvent, 'A message, with the server-stamped sender, seq and time.'],
  ['GroupEvent', P.GroupEvent, 'A change to a group, in order with its messages.'],
  ['OkReply', P.OkReply, 'The answer to a request that succeeded (same `id`).'],
  [
    'ErrorReply',
    P.ErrorReply,
    'The answer to a request that failed (same `id`, or null when it could not be read: a request too large to parse has its `id` read back only from its first 256 bytes); nothing was changed, but for an `unavailable` the server stopped waiting on, whose retry with the same `id` completes what was begun (docs/topics.md).',
  ],
  [
    'ReceiptEvent',
    P.ReceiptEvent,
    'A member moved a cursor: everything up to `seq` was delivered to / read by `user`; `user` is you when one of your devices read it.',
  ],
  ['SyncEvent', P.SyncEvent, 'Sent when you subscribe to your inbox: where each conversation stands; the backlog follows.'],
  ['SyncedEvent', P.SyncedEvent, 'The backlog announced by `sync` has been sent.'],
  [
    'SyncDelayedEvent',
    P.SyncDelayedEvent,
    'The catch-up could not be run yet (a service or the store did not answer); the server tries again after `retryInMs`, and `sync` and the backlog follow then.',
  ],
  [
    'FileEvent',
    P.FileEvent,
    'A file offer for you (once uploaded), a receiver accepted, declined or received one of yours, or its sender withdrew one offered to you; each also goes to every device of whoever acted, the acting one included.',
  ],
  ['FilesEvent', P.FilesEvent, 'Sent with the inbox sync (before `synced`) when you have live file offers: yours and those still open for you.'],
];

const userParam = { description: 'A user name: 2–32 characters, a lowercase letter, then lowercase letters, digits, _ or -.' };

/**
 * The error reply's schema with its `code` open: the server may add codes (docs/topics.md), so a client generated from
 * a closed enum would reject a reply it must show. The current codes stay, as examples.
 */
function withOpenErrorCodes(reply: Json): Json {
  const error = (reply.properties as Record<string, Json>).error!;
  const properties = error.properties as Record<string, Json>;
  const code: Json = {
    type: 'string',
    description: `What went wrong, for a client to match on. The current codes are listed in \`examples\`; a later server may add others, which a client must accept (showing the reply's \`message\`).`,
    examples: [...ERROR_CODES],
  };
  return { ...reply, properties: { ...reply.properties!, error: { ...error, properties: { ...properties, code } } } };
}

/** Each op's result schema, by the name the protocol lib exports it under (`SendResult`, `GroupInfo`, …). */
const RESULTS: [string, z.ZodType][] = Object.entries(P).filter(([, s]) => (Object.values(P.RESULT_SCHEMAS) as unknown[]).includes(s)) as [string, z.ZodType][];

/**
 * The ok reply's schema as one alternative per op, each with the result that op answers with (a component schema of
 * its own), rather than any op with any result: a client, or a check of live traffic, can tell a `send` answered with a
 * group from one answered as it should be.
 */
function okReplyByOp(reply: Json): Json {
  const { properties, ...rest } = reply as { properties: Record<string, Json> };
  const nameOf = (schema: z.ZodType) => RESULTS.find(([, s]) => s === schema)![0];
  return {
    type: 'object',
    oneOf: P.REQUEST_OPS.map((op) => ({
      title: op,
      type: 'object',
      properties: { ...properties, op: { type: 'string', const: op }, result: { $ref: `#/components/schemas/${nameOf(P.RESULT_SCHEMAS[op])}` } },
      ...rest,
    })),
  };
}

/** The AsyncAPI 3 document of Parley's MQTT interface, built from the same schemas the server validates with. */
export function buildAsyncApiDocument(): Json {
  const schemas: Json = {};
  const messages: Json = {};
  for (const [name, schema, description] of [...REQUESTS, ...EVENTS, ['PresenceEvent', P.PresenceEvent, 'Retained presence of a user.'] as const]) {
    schemas[name] = name === 'ErrorReply' ? withOpenErrorCodes(schemaOf(schema)) : name === 'OkReply' ? okReplyByOp(schemaOf(schema)) : schemaOf(schema);
    messages[name] = { name, title: name, summary: description, contentType: 'application/json', payload: { $ref: `#/components/schemas/${name}` } };
  }
  for (const [name, schema] of RESULTS) schemas[name] = schemaOf(schema);
  const ref = (name: string) => ({ $ref: `#/components/messages/${name}` });
  const refs = (list: [string, ...unknown[]][]) => Object.fromEntries(list.map(([name]) => [name, ref(name)]));
  return {
    asyncapi: '3.0.0',
    info: {
      title: 'Parley',
      version: '1.0.0',
      description: [
        'Instant messaging over plain MQTT 3.1.1. Log in with the CONNECT user name and password; the client id must be your user name or `user/<device>`.',
        'Publish JSON requests `{op, id, ...}` to your requests topic; every request gets exactly one reply with the same `id` on your inbox.',
        'An anonymous connection (no user name, client id `anon.<nonce>`) may only register.',
        `Error codes are stable; these are the current ones, and a later server may add others (a client shows one it does not know with its \`message\`): ${ERROR_CODES.join(', ')}.`,
      ].join('\n\n'),
    },
    defaultContentType: 'application/json',
    servers: {
      parley: {
        host: 'localhost:1883',
        protocol: 'mqtt',
        protocolVersion: '3.1.1',
        description: 'Plain MQTT (`PARLEY_MQTT_PORT`, 1883 by default), always open. One dual-stack listener: IPv4 and IPv6 clients reach the same port.',
        security: [{ $ref: '#/components/securitySchemes/login' }],
      },
      // The optional listeners: the same protocol and topics over TLS and WebSocket. They have no default port; the
      // ones shown are those the README and SECURITY.md use.
      'parley-tls': {
        host: 'localhost:8883',
        protocol: 'secure-mqtt',
        protocolVersion: '3.1.1',
        description:
          'Optional: MQTT over TLS, open only when `PARLEY_MQTTS_PORT` is set (no default; 8883 is the usual port), with `PARLEY_TLS_CERT` and `PARLEY_TLS_KEY`.',
        security: [{ $ref: '#/components/securitySchemes/login' }],
      },
      'parley-ws': {
        host: 'localhost:8083',
        protocol: 'ws',
        description:
          'Optional: MQTT 3.1.1 over WebSocket (subprotocol `mqtt`, any path), open only when `PARLEY_WS_PORT` is set (no default; 8083 here). Plain: for behind a TLS-terminating proxy.',
        security: [{ $ref: '#/components/securitySchemes/login' }],
      },
      'parley-wss': {
        host: 'localhost:8884',
        protocol: 'wss',
        description:
          'Optional: MQTT 3.1.1 over WebSocket over TLS (subprotocol `mqtt`, any path), open only when `PARLEY_WSS_PORT` is set (no default; 8884 here), with `PARLEY_TLS_CERT` and `PARLEY_TLS_KEY`.',
        security: [{ $ref: '#/components/securitySchemes/login' }],
      },
    },
    channels: {
      inbox: {
        address: `${TOPIC_ROOT}/users/{user}/inbox`,
        description:
          'Everything the server delivers to a user. Only that user may subscribe. Granted and delivered at QoS 0, persistent sessions included: delivery is acknowledged by `receipt` requests, and the catch-up at the next subscription sends again every log entry after the delivered cursor.',
        parameters: { user: userParam },
        messages: refs(EVENTS),
      },
      replies: {
        address: `${TOPIC_ROOT}/users/{user}/replies`,
        description:
          'Replies to the requests this connection makes, and nothing else: no catch-up, no messages (for a tool that asks and leaves). Only that user may subscribe. Replies also go on the inbox, for the user’s other devices; subscribe to one or the other.',
        parameters: { user: userParam },
        messages: { OkReply: ref('OkReply'), ErrorReply: ref('ErrorReply') },
      },
      requests: {
        address: `${TOPIC_ROOT}/users/{user}/requests`,
        description: 'Requests from a user. Only that user may publish; publishing anywhere else closes the connection.',
        parameters: { user: userParam },
        messages: refs(REQUESTS.filter(([n]) => n !== 'RegisterRequest')),
      },
      presence: {
        address: `${TOPIC_ROOT}/presence/{user}`,
        description: 'Retained presence of a user; any logged-in user may subscribe (also to `parley/v1/presence/+`).',
        parameters: { user: userParam },
        messages: { PresenceEvent: ref('PresenceEvent') },
      },
      anonInbox: {
        address: `${TOPIC_ROOT}/anon/{nonce}/inbox`,
        description: 'Replies to an anonymous connection whose client id is `anon.<nonce>`.',
        parameters: { nonce: { description: '8–64 characters of A-Z a-z 0-9 _ -, from the client id' } },
        messages: { OkReply: ref('OkReply'), ErrorReply: ref('ErrorReply') },
      },
      anonRequests: {
        address: `${TOPIC_ROOT}/anon/{nonce}/requests`,
        description: 'Registration requests of an anonymous connection.',
        parameters: { nonce: { description: '8–64 characters of A-Z a-z 0-9 _ -, from the client id' } },
        messages: { RegisterRequest: ref('RegisterRequest') },
      },
    },
    operations: {
      sendRequest: {
        action: 'send',
        channel: { $ref: '#/channels/requests' },
        summary: 'Ask the server to do something; the reply comes on the inbox.',
        messages: REQUESTS.filter(([n]) => n !== 'RegisterRequest').map(([n]) => ({ $ref: `#/channels/requests/messages/${n}` })),
      },
      receiveInbox: {
        action: 'receive',
        channel: { $ref: '#/channels/inbox' },
        summary: 'Messages, replies, receipts, group changes and sync events.',
        messages: EVENTS.map(([n]) => ({ $ref: `#/channels/inbox/messages/${n}` })),
      },
      receiveReplies: {
        action: 'receive',
        channel: { $ref: '#/channels/replies' },
        summary: 'The replies to this connection’s own requests, without the inbox’s catch-up.',
        messages: [{ $ref: '#/channels/replies/messages/OkReply' }, { $ref: '#/channels/replies/messages/ErrorReply' }],
      },
      receivePresence: {
        action: 'receive',
        channel: { $ref: '#/channels/presence' },
        messages: [{ $ref: '#/channels/presence/messages/PresenceEvent' }],
      },
      register: {
        action: 'send',
        channel: { $ref: '#/channels/anonRequests' },
        messages: [{ $ref: '#/channels/anonRequests/messages/RegisterRequest' }],
      },
      receiveRegistration: {
        action: 'receive',
        channel: { $ref: '#/channels/anonInbox' },
        messages: [{ $ref: '#/channels/anonInbox/messages/OkReply' }, { $ref: '#/channels/anonInbox/messages/ErrorReply' }],
      },
    },
    components: {
      schemas,
      messages,
      securitySchemes: { login: { type: 'userPassword', description: 'MQTT CONNECT user name and password.' } },
    },
  };
}
