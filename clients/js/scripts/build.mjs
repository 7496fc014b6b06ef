// Builds the SDK: tsc compiles src/ (type-checked) to build/lib and writes
// the declarations to dist/lib; esbuild then joins the compiled modules into
// one ES module, dist/switchboard.js, for browsers and Node alike. `ws` stays
// an import that only runs where there is no global WebSocket. The output
// depends only on the sources and the pinned tool versions.
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
rmSync(join(root, 'build'), { recursive: true, force: true });
rmSync(join(root, 'dist'), { recursive: true, force: true });
execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(root, 'tsconfig.json')], {
  stdio: 'inherit',
});
await build({
  absWorkingDir: root,
  entryPoints: [join(root, 'build/lib/index.js')],
  outfile: join(root, 'dist/switchboard.js'),
  bundle: true,
  format: 'esm',
  platform: 'neutral',
  target: 'es2020',
  external: ['ws'],
  legalComments: 'none',
  charset: 'utf8',
  logLevel: 'warning',
  banner: { js: '// Switchboard client SDK, built from clients/js/src by `npm run build`: do not edit.' },
});
