import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, normalize } from 'node:path';
import { Parser } from '@asyncapi/parser';
import { describe, expect, it } from 'vitest';
import type { z } from 'zod';
import { ConfigSchema } from '#libs/config';
import * as P from '#libs/protocol';
import { buildAsyncApiDocument } from '#libs/protocol';
import { REPO_ROOT } from '../support/parley-server.js';

const read = (path: string) => readFileSync(join(REPO_ROOT, path), 'utf8');

describe('docs/asyncapi.json', () => {
  it('is a valid AsyncAPI document (validated offline)', async () => {
    const diagnostics = await new Parser().validate(read('docs/asyncapi.json'));
    const errors = diagnostics.filter((d) => Number(d.severity) === 0 /* DiagnosticSeverity.Error */).map((d) => `${d.path.join('.')}: ${d.message}`);
    expect(errors).toEqual([]);
  });

  it('matches the schemas the server validates with (run `npm run docs` after changing them)', () => {
    expect(JSON.parse(read('docs/asyncapi.json'))).toEqual(JSON.parse(JSON.stringify(buildAsyncApiDocument())));
  });

  it('names a server for each listener the server can open, the optional ones marked so', () => {
    const servers = Object.values((JSON.parse(read('docs/asyncapi.json')) as { servers: Record<string, { protocol: string; description: string }> }).servers);
    const listeners = { PARLEY_MQTT_PORT: 'mqtt', PARLEY_MQTTS_PORT: 'secure-mqtt', PARLEY_WS_PORT: 'ws', PARLEY_WSS_PORT: 'wss' };
    for (const [setting, protocol] of Object.entries(listeners)) {
      const server = servers.find((s) => s.description.includes(`\`${setting}\``));
      expect(server?.protocol, setting).toBe(protocol);
      if (setting !== 'PARLEY_MQTT_PORT') expect(server?.description, setting).toMatch(/^Optional:/);
    }
  });

  it('has the payload schema of every request op', () => {
    const doc = JSON.parse(read('docs/asyncapi.json')) as { components: { schemas: Record<string, { properties?: { op?: { const?: string } } }> } };
    const ops = Object.values(doc.components.schemas).flatMap((schema) => schema.properties?.op?.const ?? []);
    expect(new Set(ops)).toEqual(new Set(P.REQUEST_OPS));
  });
});

describe('README.md', () => {
  it('documents every setting the server reads', () => {
    const readme = read('README.md');
    for (const key of Object.keys(ConfigSchema.shape)) expect(readme, key).toContain(`\`${key}\``);
  });
});

describe('docs/topics.md', () => {
  const doc = read('docs/topics.md');
  const examples = [...doc.matchAll(/<!-- schema: (\w+) -->\s*```json\n([\s\S]*?)```/g)].map((m) => ({ schema: m[1]!, json: m[2]! }));

  it('has an example of every request op and every inbox event type', () => {
    const names = new Set(examples.map((e) => e.schema));
    for (const n of [
      'SendRequest',
      'ReceiptRequest',
      'HistoryRequest',
      'WhoRequest',
      'RegisterRequest',
      'MessageEvent',
      'GroupEvent',
      'ReceiptEvent',
      'SyncEvent',
      'OkReply',
    ])
      expect(names).toContain(n);
    for (const op of P.REQUEST_OPS) expect(doc).toContain(op);
    for (const code of P.ERROR_CODES) expect(doc).toContain(`\`${code}\``);
  });

  it.each(examples.map((e) => [e.schema, e.json] as const))('example %s parses with its schema', (schema, json) => {
    const zod = (P as unknown as Record<string, z.ZodType>)[schema];
    expect(zod, `no schema named ${schema}`).toBeDefined();
    const result = zod!.safeParse(JSON.parse(json));
    expect(result.success, JSON.stringify(result.error?.issues)).toBe(true);
  });
});

describe('links between the docs', () => {
  const files = [
    'README.md',
    'SECURITY.md',
    'docs/architecture.md',
    'docs/cli.md',
    'docs/cli-json.md',
    'docs/performance.md',
    'docs/topics.md',
    'docs/walkthrough.md',
  ];
  /** A heading's anchor as GitHub makes it: lower case, punctuation but `-` and `_` dropped, spaces as `-`, a repeat numbered. */
  const anchorsOf = (text: string): Set<string> => {
    const seen = new Map<string, number>();
    const anchors = new Set<string>();
    for (const [, heading] of text.replace(/```[\s\S]*?```/g, '').matchAll(/^#{1,6} (.+)$/gm)) {
      const slug = heading!
        .trim()
        .toLowerCase()
        .replace(/[^\p{L}\p{N} _-]/gu, '')
        .replace(/ /g, '-');
      const n = seen.get(slug) ?? 0;
      seen.set(slug, n + 1);
      anchors.add(n === 0 ? slug : `${slug}-${n}`);
    }
    return anchors;
  };

  it.each(files)('%s links only to files and headings that exist', (file) => {
    const text = read(file);
    const broken: string[] = [];
    for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      if (/^[a-z]+:/.test(target!)) continue;
      const [path, anchor] = target!.split('#');
      const resolved = path ? normalize(join(dirname(file), path)) : file;
      if (!existsSync(join(REPO_ROOT, resolved))) broken.push(`${target}: no file ${resolved}`);
      else if (anchor && resolved.endsWith('.md') && !anchorsOf(read(resolved)).has(anchor)) broken.push(`${target}: no heading #${anchor} in ${resolved}`);
    }
    expect(broken).toEqual([]);
  });
});
