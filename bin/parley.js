#!/usr/bin/env node
// The parley CLI: runs the compiled client (npm run build makes dist/).
import '../dist/apps/cli/src/main.js';
