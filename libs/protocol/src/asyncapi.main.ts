import { writeFileSync } from 'node:fs';
import { buildAsyncApiDocument } from './asyncapi.js';

/** Writes docs/asyncapi.json (run from the repository root: `npm run docs`). */
writeFileSync('docs/asyncapi.json', JSON.stringify(buildAsyncApiDocument(), null, 2) + '\n');
process.stdout.write('wrote docs/asyncapi.json\n');
