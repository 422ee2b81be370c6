/**
 * Installs the matrix's PostgreSQL and Node.js binaries from the npm registry
 * into a cache directory of their own, outside the project's dependencies:
 * one npm prefix per version (`<cache>/pg13`, `<cache>/node24`), so adding
 * one never prunes another. A prefix is reinstalled only when its spec changes.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/** The platform suffix the registry's binary packages use (`linux-x64`). */
export const PLATFORM = `${process.platform === 'win32' ? 'windows' : process.platform}-${process.arch}`;

/**
 * Makes sure `<cache>/<slot>/node_modules/<slot>` holds `pkg@version` (an npm
 * alias, so several versions of one package live side by side) and returns
 * that package directory.
 */
export function ensurePackage(cache: string, slot: string, pkg: string, version: string): string {
  const prefix = path.join(cache, slot);
  const dir = path.join(prefix, 'node_modules', slot);
  const spec = `${slot}@npm:${pkg}@${version}`;
  const marker = path.join(prefix, 'installed-spec');
  if (fs.existsSync(path.join(dir, 'package.json')) && readText(marker) === spec) return dir;
  fs.mkdirSync(prefix, { recursive: true });
  process.stdout.write(`installing ${pkg}@${version} into ${prefix}\n`);
  execFileSync('npm', ['install', '--no-save', '--no-package-lock', '--no-audit', '--no-fund', '--ignore-scripts', '--prefix', prefix, spec], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  // The PostgreSQL packages restore their library symlinks in a postinstall
  // script (idempotent); it is the only install script these packages have.
  const hydrate = path.join(dir, 'scripts', 'hydrate-symlinks.js');
  if (fs.existsSync(hydrate)) execFileSync(process.execPath, [hydrate], { cwd: dir, stdio: 'inherit' });
  fs.writeFileSync(marker, spec);
  return dir;
}

/**
 * Embedded PostgreSQL started by root runs as the `postgres` user, which must
 * be able to reach the binaries: fails with a clear message when a directory
 * on the way to `dir` is closed to other users (as /root is).
 */
export function assertReachableByOthers(dir: string): void {
  if (process.getuid?.() !== 0) return;
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    if (fs.existsSync(d) && (fs.statSync(d).mode & 0o001) === 0) {
      throw new Error(
        `the matrix cache ${dir} is inside ${d}, which other users cannot enter; the embedded PostgreSQL runs as ` +
          `the postgres user and could not reach its binaries. Pass --cache with a directory outside it.`,
      );
    }
    if (d === path.dirname(d)) return;
  }
}

function readText(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}
